"""The `projects` function: create, list, read, update and delete projects."""

from shared.http.flask_adapter import flask_function
from shared.http.routing import Router
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

router = Router("projects")


@router.get("/")
def list_projects(query: ProjectListParams) -> Page[Project]:
    """List projects, newest first."""
    return ProjectService().search(query)


@router.post("/", status=201)
def create_project(body: ProjectCreate) -> Project:
    """Create a project."""
    return ProjectService().create(body)


@router.get("/{project_id}")
def get_project(project_id: str) -> Project:
    """Get one project."""
    return ProjectService().get(project_id)


@router.put("/{project_id}")
def update_project(project_id: str, body: ProjectUpdate) -> Project:
    """Update a project's given fields."""
    return ProjectService().update(project_id, body)


@router.delete("/{project_id}")
def delete_project(project_id: str, query: ProjectDeleteParams) -> None:
    """Delete a project; `cascade=true` also deletes its prompts."""
    delete_with_contents(project_id, query)


handle = flask_function(router)
