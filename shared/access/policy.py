"""What each route declares about who may call it, and the check the HTTP layer runs on it.

A route is open (health), triggered by the queue (its events carry their own signature), open to
any authenticated caller (the project list, creating a project), kept for operators (the admin
key: dead letters, which hold events of every project), kept for apps (a project API key in its
own project: the OpenAI-compatible API), or scoped to one project: the
project is located from the request (a path resource, a body or query field) and the caller
must hold the route's permission there. A resource of a project the caller is not in is
answered exactly as one that does not exist.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.access.callers import Caller
from shared.access.models import ROLES_WITH, Permission
from shared.errors import Forbidden, not_found

AccessKind = Literal["public", "signed_event", "signed_in", "admin", "project", "project_key"]


@dataclass(frozen=True)
class Target:
    """The resource a request is about and the project it belongs to (None: it does not exist)."""

    kind: str
    id: str
    project_id: str | None


# From the handler's parsed arguments to the resource the request touches; None when the request
# names no single project (a list across the caller's projects).
Locate = Callable[[Mapping[str, Any]], Target | None]


@dataclass(frozen=True)
class Access:
    kind: AccessKind
    permission: Permission | None = None
    locate: Locate | None = None

    @property
    def needs_caller(self) -> bool:
        return self.kind in ("signed_in", "admin", "project", "project_key")

    def check(self, caller: Caller | None, arguments: Mapping[str, Any]) -> None:
        """Refuse the call (404 or 403) unless the caller may make it on its target."""
        if self.kind == "admin":
            assert caller is not None
            if not caller.is_admin:
                raise Forbidden("Only an operator's admin key may do this.")
            return
        if self.kind == "project_key":
            assert caller is not None
            if caller.key is None:
                raise Forbidden(
                    "Only a project API key may call this; an app should never hold an "
                    "operator's admin key, and a user's token names no single project."
                )
        elif self.kind != "project":
            return
        assert caller is not None and self.permission is not None and self.locate is not None
        target = self.locate(arguments)
        if target is None:
            return
        role = None if target.project_id is None else caller.role_in(target.project_id)
        if role is None:
            if caller.is_admin:
                return  # the handler answers the missing resource in its own words
            raise not_found(target.kind, target.id)
        if role not in ROLES_WITH[self.permission]:
            raise Forbidden(
                f"Your role in this project ({role}) does not allow this.",
                details={"role": role.value, "permission": self.permission.value},
            )


PUBLIC = Access("public")
# Queue-triggered: the handler verifies the event's signature instead of a caller.
SIGNED_EVENT = Access("signed_event")
SIGNED_IN = Access("signed_in")
ADMIN = Access("admin")


def in_project(permission: Permission, locate: Locate) -> Access:
    return Access("project", permission, locate)


def resource(
    kind: str,
    field: str,
    project_of: Callable[[str], str | None],
    source: Literal["path", "body", "query"] = "path",
) -> Locate:
    """The resource whose id is in a path parameter (or a body or query field), its project found
    by `project_of`; a body or query without the field names no resource."""

    def locate(arguments: Mapping[str, Any]) -> Target | None:
        value = arguments[field] if source == "path" else getattr(arguments[source], field)
        if value is None:
            return None
        return Target(kind, str(value), project_of(str(value)))

    return locate


def _itself(project_id: str) -> str:
    return project_id


def project(source: Literal["path", "body", "query"] = "path") -> Locate:
    """The project named by `project_id` in the path, the body or the query."""
    return resource("project", "project_id", _itself, source)


def callers_project(arguments: Mapping[str, Any]) -> Target | None:
    """The project the caller's credential is bound to (a project key's), None for others: with
    `first_of`, a project the request may leave implicit. The handler takes `caller`."""
    own = arguments["caller"].own_project
    return None if own is None else Target("project", own, own)


def project_key(permission: Permission) -> Access:
    """For apps: a project API key with `permission`, acting in its own project; every other
    credential is refused (403)."""
    return Access("project_key", permission, callers_project)


def first_of(*locators: Locate) -> Locate:
    """The first target any of the locators finds (a body that names a dialog or a project)."""

    def locate(arguments: Mapping[str, Any]) -> Target | None:
        for locator in locators:
            target = locator(arguments)
            if target is not None:
                return target
        return None

    return locate
