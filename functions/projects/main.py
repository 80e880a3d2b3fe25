"""The `projects` function: create, list, read, update and delete projects."""

from shared.http.flask_adapter import flask_function
from shared.http.messages import Request, Response, json_response, no_content
from shared.http.routing import Router
from shared.projects.models import (
    ProjectCreate,
    ProjectDeleteParams,
    ProjectListParams,
    ProjectUpdate,
)
from shared.projects.service import ProjectService

router = Router("projects")


@router.get("/")
def list_projects(request: Request) -> Response:
    return json_response(ProjectService().search(request.query_as(ProjectListParams)))


@router.post("/")
def create_project(request: Request) -> Response:
    return json_response(ProjectService().create(request.body_as(ProjectCreate)), 201)


@router.get("/{project_id}")
def get_project(request: Request, project_id: str) -> Response:
    return json_response(ProjectService().get(project_id))


@router.put("/{project_id}")
def update_project(request: Request, project_id: str) -> Response:
    return json_response(ProjectService().update(project_id, request.body_as(ProjectUpdate)))


@router.delete("/{project_id}")
def delete_project(request: Request, project_id: str) -> Response:
    ProjectService().delete(project_id, request.query_as(ProjectDeleteParams))
    return no_content()


handle = flask_function(router)
