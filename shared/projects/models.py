"""Projects: the top-level container of prompts."""

from datetime import datetime
from typing import Protocol

from shared.models import Description, InputModel, Model, Name
from shared.pagination import PageParams


class ProjectCreate(InputModel):
    name: Name
    description: Description = ""


class ProjectUpdate(InputModel):
    name: Name | None = None
    description: Description | None = None


class Project(Model):
    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


class ProjectListParams(PageParams):
    pass


class ProjectDeleteParams(Model):
    cascade: bool = False


class ProjectLookup(Protocol):
    """What other domains ask of projects: one by id, a 404 when it does not exist."""

    def get(self, project_id: str) -> Project: ...
