"""Datasets: named sets of test cases in a project, each case one input to run a prompt on."""

from datetime import datetime
from typing import Annotated

import bson
from bson.errors import InvalidDocument
from pydantic import Field, model_validator

from shared.assertions.models import Assertions, AssertionSpec
from shared.bounds import StoredJson
from shared.executions.inputs import History, HistoryTurn, UserInput, WithVariables
from shared.models import Description, InputModel, Model, Name
from shared.pagination import PageParams
from shared.prompts.models import Tag

MAX_CASES_PER_REQUEST = 10_000
Tags = Annotated[list[Tag], Field(max_length=20)]


class CaseCreate(WithVariables):
    """A case as a request gives it; every value must be one MongoDB can store."""

    input: UserInput | None = None
    history: History = Field(default_factory=list)
    expected: UserInput | None = None
    assertions: Assertions = Field(default_factory=list)
    tags: Tags = Field(default_factory=list)

    @model_validator(mode="after")
    def _storable(self) -> "CaseCreate":
        try:
            bson.encode({"case": self.model_dump()})
        except (InvalidDocument, OverflowError, UnicodeEncodeError):
            raise ValueError(
                "a value cannot be stored: integers must fit in 64 bits, text must be valid "
                "Unicode and keys may not contain NUL"
            ) from None
        return self


class CaseUpdate(CaseCreate):
    """The given fields replace the stored ones; `input` or `expected` null removes them."""


class Case(Model):
    id: str
    dataset_id: str
    variables: StoredJson
    input: str | None
    history: list[HistoryTurn]
    expected: str | None
    assertions: list[AssertionSpec]
    tags: list[str]
    created_at: datetime


class DatasetCreate(InputModel):
    project_id: str
    name: Name
    description: Description = ""
    cases: Annotated[list[CaseCreate], Field(max_length=MAX_CASES_PER_REQUEST)] = Field(
        default_factory=list
    )


class DatasetUpdate(InputModel):
    name: Name | None = None
    description: Description | None = None


class Dataset(Model):
    id: str
    project_id: str
    name: str
    description: str
    case_count: int
    created_at: datetime
    updated_at: datetime


class DatasetListParams(PageParams):
    project_id: str


class CasePageParams(Model):
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class DatasetWithCases(Dataset):
    cases: list[Case]
    next_cursor: str | None


class CasesAdded(Model):
    items: list[Case]
    case_count: int
