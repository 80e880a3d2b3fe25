"""Creating a project: who may, and who owns it afterwards."""

from shared.access.callers import Caller
from shared.access.service import AccessService
from shared.errors import Forbidden
from shared.projects.models import Project, ProjectCreate
from shared.projects.service import ProjectService
from shared.settings import get_settings


def create_owned_project(data: ProjectCreate, caller: Caller) -> Project:
    """A new project; a user who creates it becomes its owner. Project keys work inside their
    project, so they cannot create one; PROJECT_CREATORS, when set, names the users who may."""
    if caller.key is not None:
        raise Forbidden("A project API key cannot create projects; use the admin key or sign in.")
    creators = get_settings().project_creators
    if caller.user is not None and creators and caller.user.user_id not in creators:
        raise Forbidden("Creating projects is restricted to the users PROJECT_CREATORS names.")
    project = ProjectService().create(data)
    AccessService(ProjectService()).add_owner(project.id, caller)
    return project
