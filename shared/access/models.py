"""Who calls us and what they may do: roles, permissions, callers, project API keys, members."""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from shared.models import InputModel, Model, Name


class Role(StrEnum):
    VIEWER = "viewer"
    RUNNER = "runner"
    EDITOR = "editor"
    OWNER = "owner"


class Permission(StrEnum):
    READ = "read"
    FETCH_PROMPTS = "fetch_prompts"
    READ_DIALOGS = "read_dialogs"
    RUN = "run"
    MANAGE_DIALOGS = "manage_dialogs"
    EDIT = "edit"
    OWN = "own"


# A runner is what an app in production needs, so it is not a viewer: it fetches prompts, runs
# them and keeps its dialogs, but does not browse the project's executions or datasets.
ROLES_WITH: dict[Permission, frozenset[Role]] = {
    Permission.READ: frozenset({Role.VIEWER, Role.EDITOR, Role.OWNER}),
    Permission.FETCH_PROMPTS: frozenset(Role),
    Permission.READ_DIALOGS: frozenset(Role),
    Permission.RUN: frozenset({Role.RUNNER, Role.EDITOR, Role.OWNER}),
    Permission.MANAGE_DIALOGS: frozenset({Role.RUNNER, Role.EDITOR, Role.OWNER}),
    Permission.EDIT: frozenset({Role.EDITOR, Role.OWNER}),
    Permission.OWN: frozenset({Role.OWNER}),
}

CallerKind = Literal["admin", "key", "user"]


class Actor(Model):
    """Who did something, as records show it: never a secret, a key only by its id and name."""

    kind: CallerKind
    id: str
    name: str | None = None


class ApiKeyCreate(InputModel):
    name: Name
    role: Role
    # With its time zone (`Z` or an offset), so it names one instant.
    expires_at: AwareDatetime | None = None


class ApiKey(Model):
    id: str
    name: str
    role: Role
    prefix: str = Field(description="The key's first characters, to recognise it; never the key")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    created_by: Actor | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret: shown this once, stored only as its SHA-256")


class ApiKeyList(Model):
    items: list[ApiKey]


class StoredKey(Model):
    """What authentication needs of a key, found by its hash."""

    id: str
    project_id: str
    name: str
    role: Role
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None


class MemberSet(InputModel):
    role: Role


class Member(Model):
    user_id: str = Field(description="The user's `sub` at the configured OpenID Connect issuer")
    role: Role
    name: str | None = None
    email: str | None = None
    added_at: datetime
    updated_at: datetime


class MemberList(Model):
    items: list[Member]
