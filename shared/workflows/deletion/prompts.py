"""Deleting a prompt with the release gates and evaluation runs that belong to it."""

from shared.projects.service import ProjectService
from shared.prompts.service import PromptService
from shared.workflows.evaluations.outcomes import RunOutcomeRepository
from shared.workflows.gates.repository import GateRepository


def delete_with_gates_and_runs(prompt_id: str) -> None:
    """Delete a prompt with its versions, gates and evaluation runs."""
    PromptService(ProjectService()).delete(prompt_id)
    GateRepository().delete_for_prompt(prompt_id)
    RunOutcomeRepository().delete_for_prompt(prompt_id)
