"""Authentication: the caller behind a request's bearer credential, and what they may do where."""

import hashlib
import hmac
from dataclasses import dataclass, field

from shared.access.models import ROLES_WITH, Actor, Permission, Role, StoredKey
from shared.access.repository import ApiKeyRepository, MemberRepository
from shared.access.tokens import VerifiedUser, invalid_token, token_verifier
from shared.caching import ExpiringCache
from shared.db import utc_now
from shared.errors import Unauthenticated
from shared.settings import get_settings

API_KEY_PREFIX = "ba_"
# A revoked key stops working on every replica within this; it bounds how stale a cached key is.
KEY_CACHE_S = 5.0
# Past this many, the users this process remembers are forgotten at once (memory stays flat).
_REMEMBERED_USERS = 10_000


@dataclass
class Caller:
    """Who is calling: an operator (admin key), a project API key or a signed-in user."""

    actor: Actor
    key: StoredKey | None = None
    user: VerifiedUser | None = None
    _roles: dict[str, Role | None] = field(default_factory=dict, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.actor.kind == "admin"

    @property
    def own_project(self) -> str | None:
        """The one project the credential is bound to (a project API key's); None for the admin
        key and users, who may be in many."""
        return self.key.project_id if self.key is not None else None

    @property
    def key_project(self) -> str:
        """The project of the calling project key: asked only by routes no other caller passes."""
        assert self.key is not None, "a route for project keys let another caller through"
        return self.key.project_id

    def role_in(self, project_id: str) -> Role | None:
        """The caller's role in the project; None when they are not in it."""
        if self.is_admin:
            return Role.OWNER
        if self.key is not None:
            return self.key.role if self.key.project_id == project_id else None
        if project_id not in self._roles:
            assert self.user is not None
            self._roles[project_id] = MemberRepository().role(
                project_id, self.user.issuer, self.user.user_id
            )
        return self._roles[project_id]

    def may(self, permission: Permission, project_id: str) -> bool:
        role = self.role_in(project_id)
        return role is not None and role in ROLES_WITH[permission]

    def projects_with(self, permission: Permission) -> list[str] | None:
        """The projects where the caller has `permission`; None means every project."""
        if self.is_admin:
            return None
        roles = ROLES_WITH[permission]
        if self.key is not None:
            return [self.key.project_id] if self.key.role in roles else []
        assert self.user is not None
        return MemberRepository().projects_of(self.user.issuer, self.user.user_id, roles)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def unauthenticated() -> Unauthenticated:
    error = Unauthenticated("Send a project API key or an access token as a Bearer credential.")
    error.headers["WWW-Authenticate"] = "Bearer"
    return error


def authenticate(authorization: str | None) -> Caller:
    """The caller an `Authorization: Bearer ...` header names; 401 when it names none."""
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise unauthenticated()
    credential_hash = hash_key(credential)
    if _is_admin_key(credential_hash):
        return Caller(Actor(kind="admin", id="admin", name="admin key"))
    if credential.startswith(API_KEY_PREFIX):
        key = _valid_key(credential_hash)
        return Caller(Actor(kind="key", id=key.id, name=key.name), key=key)
    settings = get_settings()
    if credential.count(".") == 2 and settings.oidc_issuer and settings.oidc_audience:
        verifier = token_verifier(
            settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url
        )
        user = verifier.verify(credential)
        _USERS.remember(user)
        return Caller(Actor(kind="user", id=user.user_id, name=user.name or user.email), user=user)
    raise invalid_token("The credential is not a key or token this deployment accepts.")


def _is_admin_key(credential_hash: str) -> bool:
    # Comparing hashes of equal length keeps the comparison's time independent of the key.
    return any(
        hmac.compare_digest(credential_hash, hash_key(key.get_secret_value()))
        for key in get_settings().admin_api_keys
    )


def _valid_key(key_hash: str) -> StoredKey:
    """The key with this hash, re-read from MongoDB at most every KEY_CACHE_S seconds per
    process; 401 when it is unknown, revoked or expired."""
    key = _KEYS.get(key_hash, lambda: _read_key(key_hash))
    if key.revoked:
        raise invalid_token("The API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= utc_now():
        raise invalid_token("The API key has expired.")
    return key


def _read_key(key_hash: str) -> StoredKey:
    repository = ApiKeyRepository()
    key = repository.by_hash(key_hash)
    if key is None:
        # Not kept: a key created a moment ago on another replica must work at once.
        raise invalid_token("The API key is not valid.")
    if not key.revoked:
        repository.mark_used(key.id)
    return key


class _SeenUsers:
    """Users whose display claims were stored by this process, so a sign-in writes once."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, VerifiedUser]] = set()

    def remember(self, user: VerifiedUser) -> None:
        seen = (get_settings().mongodb_db, user)
        if seen in self._seen:
            return
        MemberRepository().remember_user(user.issuer, user.user_id, user.name, user.email)
        if len(self._seen) >= _REMEMBERED_USERS:
            self._seen.clear()
        self._seen.add(seen)


_KEYS: ExpiringCache[str, StoredKey] = ExpiringCache(KEY_CACHE_S)
_USERS = _SeenUsers()
