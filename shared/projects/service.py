"""What a team does with projects."""

from shared.datasets.repository import DatasetRepository
from shared.dialogs.repository import DialogRepository
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
from shared.workflows.evaluations.repository import EvaluationRepository
from shared.workflows.gates.repository import GateRepository


class ProjectService:
    def __init__(self) -> None:
        self.projects = ProjectRepository()
        self.prompts = PromptRepository()
        self.dialogs = DialogRepository()
        self.datasets = DatasetRepository()

    def create(self, data: ProjectCreate) -> Project:
        return self.projects.create(data)

    def search(self, params: ProjectListParams) -> Page[Project]:
        return Page.of(self.projects.search(params), params)

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
        """Delete a project; one that still has prompts, dialogs or datasets needs `cascade`,
        which deletes them too (with their versions, messages and cases)."""
        self.get(project_id)
        contents = {
            "prompts": self.prompts.count_in_project(project_id),
            "dialogs": self.dialogs.count_in_project(project_id),
            "datasets": self.datasets.count_in_project(project_id),
        }
        remaining = {kind: count for kind, count in contents.items() if count}
        if remaining and not params.cascade:
            listed = " and ".join(f"{n} {kind[:-1]}(s)" for kind, n in remaining.items())
            raise Conflict(
                f"The project still has {listed}; delete them or pass cascade=true.",
                code="project_not_empty",
                details=remaining,
            )
        EvaluationRepository().delete_project_evaluations(project_id)
        GateRepository().delete_project_gates(project_id)
        self.datasets.delete_project_datasets(project_id)
        self.dialogs.delete_project_dialogs(project_id)
        self.prompts.delete_project_prompts(project_id)
        if not self.projects.delete(project_id):
            raise not_found("project", project_id)
