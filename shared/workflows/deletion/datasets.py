"""Deleting a dataset, refused while a release gate relies on it."""

from shared.datasets.service import DatasetService
from shared.errors import Conflict
from shared.projects.service import ProjectService
from shared.workflows.gates.repository import GateRepository


def delete_unless_gated(dataset_id: str) -> None:
    """Delete a dataset and its cases; refused (409) while a release gate relies on it."""
    gates = GateRepository().count_on_dataset(dataset_id)
    if gates:
        raise Conflict(
            f"{gates} release gate(s) rely on this dataset; remove them first.",
            code="dataset_in_use",
            details={"gates": gates},
        )
    DatasetService(ProjectService()).delete(dataset_id)
