"""What other workflows need of evaluation runs: the completed runs a release gate weighs, and
removing the runs of a prompt or project being deleted.

Apart from `repository.py`, whose models (cases, assertions, executions) a function that only
moves labels or deletes would pay to import at every cold start.
"""

from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection

from shared.db import indexed_collection, to_object_id
from shared.models import Model


class TargetResult(Model):
    """What a completed run keeps of one target for release gates."""

    target: int
    version: int
    config_overridden: bool
    pass_rate: float | None


class CompletedRun(Model):
    """A completed run, as far as release gates read it."""

    id: str
    case_tags: list[str]
    created_at: datetime
    target_results: list[TargetResult]


class RunOutcomeRepository:
    """The evaluation collections (runs and cells), with the reads and removals other workflows
    make of them."""

    RUN_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("prompt_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="prompt_newest_first",
        ),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest_first"),
        IndexModel([("project_id", ASCENDING)], name="project"),
    ]
    CELL_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("evaluation_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="order"),
        IndexModel(
            [("evaluation_id", ASCENDING), ("state", ASCENDING), ("seq", ASCENDING)],
            name="state_in_order",
        ),
        # A page of the per-case table reads only its cases' cells.
        IndexModel(
            [("evaluation_id", ASCENDING), ("case_index", ASCENDING), ("seq", ASCENDING)],
            name="case_in_order",
        ),
    ]

    def __init__(self) -> None:
        self.runs: Collection = indexed_collection("evaluations", self.RUN_INDEXES)
        self.cells: Collection = indexed_collection("evaluation_cells", self.CELL_INDEXES)

    def completed_on(self, prompt_id: str, dataset_id: str, limit: int) -> list[CompletedRun]:
        """The newest completed runs of a prompt on a dataset, with their per-target results."""
        documents = (
            self.runs.find(
                {
                    "prompt_id": to_object_id(prompt_id),
                    "dataset_id": to_object_id(dataset_id),
                    "status": "completed",
                },
                {"target_results": 1, "case_tags": 1, "created_at": 1},
            )
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [
            CompletedRun(
                id=str(document["_id"]),
                case_tags=document["case_tags"],
                created_at=document["created_at"],
                target_results=document.get("target_results", []),
            )
            for document in documents
        ]

    def delete_for_prompt(self, prompt_id: str) -> None:
        """Delete a prompt's runs with their cells."""
        self._delete({"prompt_id": to_object_id(prompt_id)})

    def delete_project_evaluations(self, project_id: str) -> None:
        self._delete({"project_id": to_object_id(project_id)})

    def _delete(self, query: dict[str, Any]) -> None:
        run_ids = [document["_id"] for document in self.runs.find(query, {"_id": 1})]
        if run_ids:
            self.runs.delete_many({"_id": {"$in": run_ids}})
            self.cells.delete_many({"evaluation_id": {"$in": run_ids}})
