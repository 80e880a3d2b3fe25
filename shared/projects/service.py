"""What a team does with projects."""

from shared.errors import Conflict, not_found
from shared.pagination import Page
from shared.projects.models import (
    Project,
    ProjectCreate,
    ProjectDeleteParams,
    ProjectListParams,
    ProjectUpdate,
)
from shared.projects.repository import ProjectRepository
from shared.prompts.repository import PromptRepository


class ProjectService:
    def __init__(self) -> None:
        self.projects = ProjectRepository()
        self.prompts = PromptRepository()

    def create(self, data: ProjectCreate) -> Project:
        return self.projects.create(data)

    def search(self, params: ProjectListParams) -> Page[Project]:
        items, next_cursor, total = self.projects.search(params)
        return Page(
            items=items, next_cursor=next_cursor, total=total, limit=params.limit, page=params.page
        )

    def get(self, project_id: str) -> Project:
        project = self.projects.get(project_id)
        if project is None:
            raise not_found("project", project_id)
        return project

    def update(self, project_id: str, changes: ProjectUpdate) -> Project:
        project = self.projects.update(project_id, changes)
        if project is None:
            raise not_found("project", project_id)
        return project

    def delete(self, project_id: str, params: ProjectDeleteParams) -> None:
        """Delete a project; one that still has prompts needs `cascade`, which deletes them too."""
        self.get(project_id)
        prompt_count = self.prompts.count_in_project(project_id)
        if prompt_count and not params.cascade:
            raise Conflict(
                f"The project still has {prompt_count} prompt(s); "
                "delete them or pass cascade=true.",
                code="project_not_empty",
                details={"prompts": prompt_count},
            )
        self.prompts.delete_project_prompts(project_id)
        if not self.projects.delete(project_id):
            raise not_found("project", project_id)
