"""Projects: the top-level container of prompts."""

from datetime import datetime
from typing import Annotated, Protocol

from pydantic import Field

from shared.models import Description, InputModel, LabelName, Model, Name
from shared.pagination import PageParams

DEFAULT_PROTECTED_LABELS = ("production",)
DEFAULT_MAX_OUTPUT_TOKENS = 8192
ProtectedLabels = Annotated[list[LabelName], Field(max_length=20)]


class ProjectLimits(InputModel):
    """What a project may spend and ask of DeepSeek; unset means no limit (tokens: the default)."""

    monthly_budget_usd: float | None = Field(None, ge=0, le=1_000_000, allow_inf_nan=False)
    max_output_tokens: int = Field(DEFAULT_MAX_OUTPUT_TOKENS, ge=1, le=1_000_000)
    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)


class ProjectCreate(InputModel):
    name: Name
    description: Description = ""
    protected_labels: ProtectedLabels = Field(default_factory=lambda: [*DEFAULT_PROTECTED_LABELS])
    limits: ProjectLimits = Field(default_factory=ProjectLimits)


class ProjectUpdate(InputModel):
    name: Name | None = None
    description: Description | None = None
    # Moving or removing a protected label needs an owner.
    protected_labels: ProtectedLabels | None = None
    # Only the limits given change (null lifts one); only an owner may change them.
    limits: ProjectLimits | None = None


class Project(Model):
    id: str
    name: str
    description: str
    protected_labels: list[str] = Field(default_factory=lambda: [*DEFAULT_PROTECTED_LABELS])
    limits: ProjectLimits = Field(default_factory=ProjectLimits)
    created_at: datetime
    updated_at: datetime


class ProjectListParams(PageParams):
    pass


class ProjectDeleteParams(Model):
    cascade: bool = False


class ProjectLookup(Protocol):
    """What other domains ask of projects: one by id, a 404 when it does not exist."""

    def get(self, project_id: str) -> Project: ...

    def get_recent(self, project_id: str) -> Project:
        """As `get`, possibly as read a few seconds ago (for limits on every call's path)."""
        ...
