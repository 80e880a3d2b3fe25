"""What a project's owners do about access: its API keys and its members."""

import secrets
from typing import Protocol

from shared.access.callers import API_KEY_PREFIX, Caller, hash_key
from shared.access.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    Member,
    MemberList,
    Role,
)
from shared.access.repository import ApiKeyRepository, MemberRepository
from shared.db import utc_now
from shared.errors import Conflict, ValidationFailed, not_found
from shared.settings import get_settings

# 32 random bytes: a key is as hard to guess as a 256-bit secret, so one SHA-256 stores it safely.
_KEY_BYTES = 32
_PREFIX_LENGTH = len(API_KEY_PREFIX) + 6
MAX_USER_ID_LENGTH = 255


def _new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def _issuer() -> str:
    """Members are users of the configured OpenID Connect issuer."""
    issuer = get_settings().oidc_issuer
    if issuer is None:
        raise Conflict(
            "Members are users of an OpenID Connect provider; set OIDC_ISSUER to have any.",
            code="oidc_not_configured",
        )
    return issuer


def _last_owner() -> Conflict:
    return Conflict(
        "A project keeps at least one owner; make another member owner first.",
        code="last_owner",
    )


class Identified(Protocol):
    id: str


class ExistingProjects(Protocol):
    """How access finds a project: its canonical id, a 404 when it does not exist."""

    def get(self, project_id: str) -> Identified: ...


class AccessService:
    def __init__(self, projects: ExistingProjects) -> None:
        self.projects = projects
        self.keys = ApiKeyRepository()
        self.members = MemberRepository()

    def _existing(self, project_id: str) -> str:
        # The admin key passes the access check for any id; a key or member is only ever
        # stored under a project that exists, by its canonical id.
        return self.projects.get(project_id).id

    def create_key(self, project_id: str, data: ApiKeyCreate, caller: Caller) -> ApiKeyCreated:
        """A new key of the project; its secret is in this answer and nowhere else."""
        project_id = self._existing(project_id)
        if data.expires_at is not None and data.expires_at <= utc_now():
            raise ValidationFailed(
                "A key cannot expire in the past.",
                details=[{"loc": ["body", "expires_at"], "msg": "must be in the future"}],
            )
        secret = _new_key()
        key = self.keys.create(
            project_id,
            data.name,
            data.role,
            data.expires_at,
            hash_key(secret),
            secret[:_PREFIX_LENGTH],
            caller.actor,
        )
        return ApiKeyCreated(**key.model_dump(), key=secret)

    def list_keys(self, project_id: str) -> ApiKeyList:
        """The project's live keys, without their secrets."""
        return ApiKeyList(items=self.keys.live_in(self._existing(project_id)))

    def revoke_key(self, project_id: str, key_id: str) -> None:
        """Refuse the key from now on (every replica within KEY_CACHE_S)."""
        if not self.keys.revoke(self._existing(project_id), key_id):
            raise not_found("key", key_id)

    def list_members(self, project_id: str) -> MemberList:
        """The project's members, in the order they were added."""
        project_id = self._existing(project_id)
        issuer = get_settings().oidc_issuer
        return MemberList(items=self.members.members(project_id, issuer) if issuer else [])

    def add_owner(self, project_id: str, caller: Caller) -> None:
        """Make a user who created a project its first owner."""
        if caller.user is not None:
            self.members.put(project_id, caller.user.issuer, caller.user.user_id, Role.OWNER)

    def set_member(self, project_id: str, user_id: str, role: Role) -> Member:
        """Give a user a role in the project; 409 when that would leave it without an owner."""
        project_id = self._existing(project_id)
        issuer = _issuer()
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise ValidationFailed(
                f"A user id is at most {MAX_USER_ID_LENGTH} characters.",
                details=[{"loc": ["path", "user_id"], "msg": "too long"}],
            )
        if role == Role.OWNER:
            return self.members.put(project_id, issuer, user_id, role)
        was_owner = self._refuse_last_owner(project_id, issuer, user_id)
        member = self.members.put(project_id, issuer, user_id, role)
        if was_owner:
            self._restore_if_ownerless(project_id, issuer, user_id)
        return member

    def remove_member(self, project_id: str, user_id: str) -> None:
        """Take a user out of the project; the last owner stays (409)."""
        project_id = self._existing(project_id)
        issuer = _issuer()
        was_owner = self._refuse_last_owner(project_id, issuer, user_id)
        if not self.members.remove(project_id, issuer, user_id):
            raise not_found("member", user_id)
        if was_owner:
            self._restore_if_ownerless(project_id, issuer, user_id)

    def _refuse_last_owner(self, project_id: str, issuer: str, user_id: str) -> bool:
        """409 when the user is the project's only owner; whether they are an owner."""
        if self.members.role(project_id, issuer, user_id) != Role.OWNER:
            return False
        if self.members.owners(project_id, issuer) <= 1:
            raise _last_owner()
        return True

    def _restore_if_ownerless(self, project_id: str, issuer: str, user_id: str) -> None:
        """Undo a demotion or removal that left no owner: two owners demoting each other at
        once both pass the check before either writes. Both are undone (409) rather than
        neither, so a project never stays without an owner."""
        if self.members.owners(project_id, issuer) == 0:
            self.members.put(project_id, issuer, user_id, Role.OWNER)
            raise _last_owner()

    def delete_project(self, project_id: str) -> None:
        """Forget a deleted project's keys and members."""
        self.keys.delete_project(project_id)
        self.members.delete_project(project_id)
