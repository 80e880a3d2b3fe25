"""Release gates: a label that may only move to a version with a passing evaluation run."""

from datetime import datetime

from pydantic import Field

from shared.models import InputModel, Model


class GateSet(InputModel):
    dataset_id: str
    # The share of cases (0 to 1) a version's evaluation run must pass on the dataset.
    min_pass_rate: float = Field(ge=0, le=1, allow_inf_nan=False)


class Gate(Model):
    prompt_id: str
    label: str
    dataset_id: str
    min_pass_rate: float
    created_at: datetime
    updated_at: datetime


class GateList(Model):
    items: list[Gate]
