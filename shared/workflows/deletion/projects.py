"""Deleting a project, with everything in it when asked to cascade."""

from shared.access.service import AccessService
from shared.datasets.repository import DatasetRepository
from shared.dialogs.repository import DialogRepository
from shared.errors import Conflict, not_found
from shared.metering.repository import UsageLedger
from shared.projects.models import ProjectDeleteParams
from shared.projects.repository import ProjectRepository
from shared.projects.service import ProjectService
from shared.prompts.repository import PromptRepository
from shared.workflows.evaluations.outcomes import RunOutcomeRepository
from shared.workflows.gates.repository import GateRepository


def delete_with_contents(project_id: str, params: ProjectDeleteParams) -> None:
    """Delete a project; one that still has prompts, dialogs or datasets needs `cascade`,
    which deletes them too (with their versions, messages, cases, gates and runs)."""
    projects, prompts = ProjectRepository(), PromptRepository()
    dialogs, datasets = DialogRepository(), DatasetRepository()
    ProjectService().get(project_id)
    contents = {
        "prompts": prompts.count_in_project(project_id),
        "dialogs": dialogs.count_in_project(project_id),
        "datasets": datasets.count_in_project(project_id),
    }
    remaining = {kind: count for kind, count in contents.items() if count}
    if remaining and not params.cascade:
        listed = " and ".join(f"{n} {kind[:-1]}(s)" for kind, n in remaining.items())
        raise Conflict(
            f"The project still has {listed}; delete them or pass cascade=true.",
            code="project_not_empty",
            details=remaining,
        )
    RunOutcomeRepository().delete_project_evaluations(project_id)
    GateRepository().delete_project_gates(project_id)
    datasets.delete_project_datasets(project_id)
    dialogs.delete_project_dialogs(project_id)
    prompts.delete_project_prompts(project_id)
    if not projects.delete(project_id):
        raise not_found("project", project_id)
    AccessService(ProjectService()).delete_project(project_id)
    UsageLedger().delete_project(project_id)
