"""What a project's owners do about access: its API keys and its members."""

import secrets

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


class AccessService:
    def __init__(self) -> None:
        self.keys = ApiKeyRepository()
        self.members = MemberRepository()

    def create_key(self, project_id: str, data: ApiKeyCreate, caller: Caller) -> ApiKeyCreated:
        """A new key of the project; its secret is in this answer and nowhere else."""
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
        return ApiKeyList(items=self.keys.live_in(project_id))

    def revoke_key(self, project_id: str, key_id: str) -> None:
        if not self.keys.revoke(project_id, key_id):
            raise not_found("key", key_id)

    def list_members(self, project_id: str) -> MemberList:
        issuer = get_settings().oidc_issuer
        return MemberList(items=self.members.members(project_id, issuer) if issuer else [])

    def add_owner(self, project_id: str, caller: Caller) -> None:
        """Make a user who created a project its first owner."""
        if caller.user is not None:
            self.members.put(project_id, caller.user.issuer, caller.user.user_id, Role.OWNER)

    def set_member(self, project_id: str, user_id: str, role: Role) -> Member:
        issuer = _issuer()
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise ValidationFailed(
                f"A user id is at most {MAX_USER_ID_LENGTH} characters.",
                details=[{"loc": ["path", "user_id"], "msg": "too long"}],
            )
        if role != Role.OWNER:
            self._keep_an_owner(project_id, issuer, user_id)
        return self.members.put(project_id, issuer, user_id, role)

    def remove_member(self, project_id: str, user_id: str) -> None:
        issuer = _issuer()
        self._keep_an_owner(project_id, issuer, user_id)
        if not self.members.remove(project_id, issuer, user_id):
            raise not_found("member", user_id)

    def _keep_an_owner(self, project_id: str, issuer: str, user_id: str) -> None:
        if (
            self.members.role(project_id, issuer, user_id) == Role.OWNER
            and self.members.owners(project_id, issuer) <= 1
        ):
            raise Conflict(
                "A project keeps at least one owner; make another member owner first.",
                code="last_owner",
            )

    def delete_project(self, project_id: str) -> None:
        """Forget a deleted project's keys and members."""
        self.keys.delete_project(project_id)
        self.members.delete_project(project_id)
