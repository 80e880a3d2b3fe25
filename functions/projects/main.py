"""The `projects` function: projects, their members and API keys."""

from shared.access.callers import Caller
from shared.access.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    Member,
    MemberList,
    MemberSet,
    Permission,
)
from shared.access.policy import SIGNED_IN, in_project, project
from shared.access.service import AccessService
from shared.http.flask_adapter import flask_function
from shared.http.routing import Router
from shared.metering.models import UsageParams, UsageReport
from shared.pagination import Page
from shared.projects.models import (
    Project,
    ProjectCreate,
    ProjectDeleteParams,
    ProjectListParams,
    ProjectUpdate,
)
from shared.projects.service import ProjectService
from shared.workflows.deletion.projects import delete_with_contents
from shared.workflows.ownership import create_owned_project

router = Router("projects")
READ = in_project(Permission.READ, project())
OWN = in_project(Permission.OWN, project())


def access() -> AccessService:
    return AccessService(ProjectService())


@router.get("/", access=SIGNED_IN)
def list_projects(query: ProjectListParams, caller: Caller) -> Page[Project]:
    """List the projects you can read, newest first."""
    return ProjectService().search(query, caller.projects_with(Permission.READ))


@router.post("/", status=201, access=SIGNED_IN)
def create_project(body: ProjectCreate, caller: Caller) -> Project:
    """Create a project; a signed-in user who creates it becomes its owner."""
    return create_owned_project(body, caller)


@router.get("/{project_id}", access=READ)
def get_project(project_id: str) -> Project:
    """Get one project."""
    return ProjectService().get(project_id)


@router.put("/{project_id}", access=OWN)
def update_project(project_id: str, body: ProjectUpdate) -> Project:
    """Update a project's given fields."""
    return ProjectService().update(project_id, body)


@router.delete("/{project_id}", access=OWN)
def delete_project(project_id: str, query: ProjectDeleteParams) -> None:
    """Delete a project; `cascade=true` also deletes its prompts."""
    delete_with_contents(project_id, query)


@router.get("/{project_id}/usage", access=READ)
def project_usage(project_id: str, query: UsageParams) -> UsageReport:
    """Spend, tokens (cache hits apart) and calls over UTC days (`since`..`until`, at most 366),
    by day and by key or user, and what is left of this month's budget."""
    return ProjectService().usage(project_id, query)


@router.get("/{project_id}/members", access=READ)
def list_members(project_id: str) -> MemberList:
    """The project's members and their roles, in the order they were added."""
    return access().list_members(project_id)


@router.put("/{project_id}/members/{user_id}", access=OWN)
def set_member(project_id: str, user_id: str, body: MemberSet) -> Member:
    """Add a user (their OpenID Connect `sub`) to the project, or change their role."""
    return access().set_member(project_id, user_id, body.role)


@router.delete("/{project_id}/members/{user_id}", access=OWN)
def remove_member(project_id: str, user_id: str) -> None:
    """Remove a member; the last owner stays."""
    access().remove_member(project_id, user_id)


@router.post("/{project_id}/keys", status=201, access=OWN)
def create_key(project_id: str, body: ApiKeyCreate, caller: Caller) -> ApiKeyCreated:
    """Create an API key with a role in the project; its secret `key` is shown only here."""
    return access().create_key(project_id, body, caller)


@router.get("/{project_id}/keys", access=OWN)
def list_keys(project_id: str) -> ApiKeyList:
    """The project's live keys, without their secrets."""
    return access().list_keys(project_id)


@router.delete("/{project_id}/keys/{key_id}", access=OWN)
def revoke_key(project_id: str, key_id: str) -> None:
    """Revoke a key: refused everywhere within seconds."""
    access().revoke_key(project_id, key_id)


handle = flask_function(router)
