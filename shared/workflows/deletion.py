"""Deleting what other domains' records depend on: cascades, and refusals while in use."""

from shared.datasets.repository import DatasetRepository
from shared.datasets.service import DatasetService
from shared.dialogs.repository import DialogRepository
from shared.errors import Conflict, not_found
from shared.projects.models import ProjectDeleteParams
from shared.projects.repository import ProjectRepository
from shared.projects.service import ProjectService
from shared.prompts.repository import PromptRepository
from shared.prompts.service import PromptService
from shared.workflows.evaluations.repository import EvaluationRepository
from shared.workflows.gates.repository import GateRepository


def delete_project(project_id: str, params: ProjectDeleteParams) -> None:
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
    EvaluationRepository().delete_project_evaluations(project_id)
    GateRepository().delete_project_gates(project_id)
    datasets.delete_project_datasets(project_id)
    dialogs.delete_project_dialogs(project_id)
    prompts.delete_project_prompts(project_id)
    if not projects.delete(project_id):
        raise not_found("project", project_id)


def delete_prompt(prompt_id: str) -> None:
    """Delete a prompt with its versions, gates and evaluation runs."""
    PromptService(ProjectService()).delete(prompt_id)
    GateRepository().delete_for_prompt(prompt_id)
    EvaluationRepository().delete_for_prompt(prompt_id)


def delete_dataset(dataset_id: str) -> None:
    """Delete a dataset and its cases; refused (409) while a release gate relies on it."""
    gates = GateRepository().count_on_dataset(dataset_id)
    if gates:
        raise Conflict(
            f"{gates} release gate(s) rely on this dataset; remove them first.",
            code="dataset_in_use",
            details={"gates": gates},
        )
    DatasetService(ProjectService()).delete(dataset_id)
