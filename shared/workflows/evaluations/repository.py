"""Storage of evaluation runs (`evaluations`) and their cells (`evaluation_cells`).

A cell moves pending -> dispatched -> running -> done (or cancelled) by conditional updates, so
two deliveries of the same cell never both run it, and a run's counters move once per cell.
"""

import json
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument

from shared.assertions.models import AssertionOutcome
from shared.db import id_conditions, owning_project, to_object_id, utc_now, within_projects
from shared.executions.models import ExecutionError
from shared.pagination import find_page
from shared.workflows.evaluations.models import (
    Cell,
    CellDraft,
    CellFigures,
    CellRun,
    Evaluation,
    EvaluationDraft,
    EvaluationListParams,
    Progress,
)
from shared.workflows.evaluations.outcomes import RunOutcomeRepository, TargetResult

_COUNTERS = ("done", "passed", "failed", "errors", "cancelled")
IN_FLIGHT = ("dispatched", "running")


def _evaluation(document: dict[str, Any]) -> Evaluation:
    counts = document["counts"]
    total = document["total"]
    finished = counts["done"] + counts["cancelled"]
    progress = Progress(
        total=total,
        **counts,
        percent=round(100 * finished / total, 2) if total else 100.0,
    )
    return Evaluation(
        **{
            **document,
            "assertions": json.loads(document["assertions"]),
            "id": str(document["_id"]),
            "project_id": str(document["project_id"]),
            "prompt_id": str(document["prompt_id"]),
            "dataset_id": str(document["dataset_id"]),
            "progress": progress,
        }
    )


def _cell(document: dict[str, Any]) -> Cell:
    return Cell(
        **{
            **document,
            "id": str(document["_id"]),
            "evaluation_id": str(document["evaluation_id"]),
        }
    )


def _figures_projection() -> dict[str, int]:
    """The fields of a cell `CellFigures` reads, its assertions' results cut to type and verdict."""
    fields = [name for name in CellFigures.model_fields if name != "assertions"]
    assertion_fields = [f"assertions.{name}" for name in AssertionOutcome.model_fields]
    return {"_id": 0, **dict.fromkeys([*fields, *assertion_fields], 1)}


class EvaluationRepository(RunOutcomeRepository):
    """Runs and cells as the evaluation workflow reads and moves them."""

    def create(self, run: EvaluationDraft, cells: list[CellDraft]) -> Evaluation:
        """Store a queued run and its pending cells (cells first: a visible run is complete)."""
        run_id = ObjectId()
        now = utc_now()
        assertions = [spec.model_dump(by_alias=True, mode="json") for spec in run.assertions]
        document = {
            "_id": run_id,
            **run.model_dump(exclude={"assertions"}),
            # As JSON text: a JSON Schema's keys (`$ref`, `$defs`) are not MongoDB field names.
            "assertions": json.dumps(assertions),
            "project_id": to_object_id(run.project_id),
            "prompt_id": to_object_id(run.prompt_id),
            "dataset_id": to_object_id(run.dataset_id),
            "status": "queued",
            "total": len(cells),
            "counts": dict.fromkeys(_COUNTERS, 0),
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
        if cells:
            self.cells.insert_many(
                [
                    {**cell.model_dump(), "evaluation_id": run_id, "seq": seq, "state": "pending"}
                    for seq, cell in enumerate(cells)
                ],
                ordered=False,
            )
        self.runs.insert_one(document)
        return _evaluation(document)

    def get(self, evaluation_id: str) -> Evaluation | None:
        object_id = to_object_id(evaluation_id)
        document = object_id and self.runs.find_one({"_id": object_id})
        return _evaluation(document) if document else None

    def search(
        self, params: EvaluationListParams, within: list[str] | None
    ) -> tuple[list[Evaluation], str | None, int] | None:
        """A page of runs of the `within` projects (None: any); None when an id cannot exist."""
        query: dict[str, Any] = within_projects(within)
        # Apart from `within`'s condition on the same field.
        conditions = id_conditions(
            project_id=params.project_id, prompt_id=params.prompt_id, dataset_id=params.dataset_id
        )
        if conditions is None:
            return None
        if conditions:
            query["$and"] = conditions
        if params.status is not None:
            query["status"] = params.status
        documents, next_cursor, total = find_page(self.runs, query, params)
        return [_evaluation(document) for document in documents], next_cursor, total

    def cells_of(self, evaluation_id: str, case_indexes: list[int]) -> list[Cell]:
        """The cells of a run's given cases, in dispatch order (so each case's repetitions in
        order)."""
        query = {"evaluation_id": to_object_id(evaluation_id), "case_index": {"$in": case_indexes}}
        return [_cell(document) for document in self.cells.find(query).sort("seq", ASCENDING)]

    def figures_of(self, evaluation_id: str) -> list[CellFigures]:
        """What the summary reads of every cell of a run, without reading their cases and
        outputs: completing a run of many cells stays cheap."""
        documents = self.cells.find(
            {"evaluation_id": to_object_id(evaluation_id)}, _figures_projection()
        ).sort("seq", ASCENDING)
        return [CellFigures.model_validate(document) for document in documents]

    def cell_state(self, cell_id: str) -> str | None:
        object_id = to_object_id(cell_id)
        document = object_id and self.cells.find_one({"_id": object_id}, {"state": 1})
        return document["state"] if document else None

    def dispatch_next(self, evaluation_id: str, lease_s: float) -> str | None:
        """Take the next pending cell of a run for the queue; its id, or None when none is left."""
        document = self.cells.find_one_and_update(
            {"evaluation_id": to_object_id(evaluation_id), "state": "pending"},
            {"$set": {"state": "dispatched", "lease_until": _lease(lease_s)}},
            sort=[("seq", ASCENDING)],
            projection={"_id": 1},
        )
        return str(document["_id"]) if document else None

    def expired_leases(self, evaluation_id: str) -> list[str]:
        """Cells handed out whose worker has not finished them in time: to be handed out again."""
        return [
            str(document["_id"])
            for document in self.cells.find(
                {
                    "evaluation_id": to_object_id(evaluation_id),
                    "state": {"$in": list(IN_FLIGHT)},
                    "lease_until": {"$lt": utc_now()},
                },
                {"_id": 1},
            )
        ]

    def renew_lease(self, cell_id: str, lease_s: float) -> None:
        self.cells.update_one(
            {"_id": to_object_id(cell_id), "state": {"$in": list(IN_FLIGHT)}},
            {"$set": {"lease_until": _lease(lease_s)}},
        )

    def in_flight(self, evaluation_id: str) -> int:
        """Cells handed out and still within their lease."""
        return self.cells.count_documents(
            {
                "evaluation_id": to_object_id(evaluation_id),
                "state": {"$in": list(IN_FLIGHT)},
                "lease_until": {"$gte": utc_now()},
            }
        )

    def claim(self, cell_id: str, claim: str, lease_s: float) -> Cell | None:
        """Take a dispatched cell (or one whose worker's lease ran out) to run it; None when the
        cell is done, cancelled, unknown or being run by another delivery."""
        object_id = to_object_id(cell_id)
        if object_id is None:
            return None
        now = utc_now()
        document = self.cells.find_one_and_update(
            {
                "_id": object_id,
                "$or": [
                    {"state": "dispatched"},
                    {"state": "running", "lease_until": {"$lt": now}},
                ],
            },
            {
                "$set": {
                    "state": "running",
                    "claim": claim,
                    "lease_until": _lease(lease_s),
                    "started_at": now,
                },
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _cell(document) if document else None

    def release(self, cell: Cell, claim: str) -> None:
        """Give back a claimed cell whose run failed midway: the next delivery may take it."""
        self.cells.update_one(
            {"_id": to_object_id(cell.id), "state": "running", "claim": claim},
            {"$set": {"state": "dispatched"}, "$unset": {"claim": ""}},
        )

    def finish_cell(self, cell: Cell, claim: str, result: CellRun) -> Evaluation | None:
        """Store a claimed cell's result and count it in its run; the run as counted, or None
        when the claim was lost to a later delivery."""
        # Only the fields the run set: a run that could not start stores no execution fields.
        fields = result.model_dump(include=result.model_fields_set)
        stored = self.cells.update_one(
            {"_id": to_object_id(cell.id), "state": "running", "claim": claim},
            {"$set": {**fields, "state": "done", "finished_at": utc_now()}},
        )
        if not stored.modified_count:
            return None
        return self._count(cell.evaluation_id, {"done": 1, result.counter: 1})

    def cancel_cell(self, cell: Cell, claim: str) -> Evaluation | None:
        """Mark a claimed cell of a cancelled run as cancelled and count it."""
        cancelled = self.cells.update_one(
            {"_id": to_object_id(cell.id), "state": "running", "claim": claim},
            {"$set": {"state": "cancelled", "finished_at": utc_now()}},
        )
        if not cancelled.modified_count:
            return None
        return self._count(cell.evaluation_id, {"cancelled": 1})

    def fail_remaining(self, evaluation_id: str, error: ExecutionError) -> Evaluation | None:
        """Record every cell of a run that no worker has taken yet as an error that never ran
        (the project's budget is spent), and count them; the run as counted."""
        object_id = to_object_id(evaluation_id)
        failed = self.cells.update_many(
            {"evaluation_id": object_id, "state": {"$in": ["pending", "dispatched"]}},
            {
                "$set": {
                    "state": "done",
                    "status": "error",
                    "passed": None,
                    "error": error.model_dump(),
                    "finished_at": utc_now(),
                }
            },
        ).modified_count
        return self._count(evaluation_id, {"done": failed, "errors": failed})

    def _count(self, evaluation_id: str, increments: dict[str, int]) -> Evaluation | None:
        document = self.runs.find_one_and_update(
            {"_id": to_object_id(evaluation_id)},
            {"$inc": {f"counts.{name}": value for name, value in increments.items()}},
            return_document=ReturnDocument.AFTER,
        )
        return _evaluation(document) if document else None

    def mark_running(self, evaluation_id: str) -> None:
        self.runs.update_one(
            {"_id": to_object_id(evaluation_id), "status": "queued"},
            {"$set": {"status": "running", "started_at": utc_now()}},
        )

    def complete(self, evaluation_id: str, target_results: list[TargetResult]) -> bool:
        """Mark a run completed with each target's version and pass rate (what gates read);
        False when it was cancelled or completed already."""
        completed = self.runs.update_one(
            {"_id": to_object_id(evaluation_id), "status": {"$in": ["queued", "running"]}},
            {
                "$set": {
                    "status": "completed",
                    "finished_at": utc_now(),
                    "target_results": [result.model_dump() for result in target_results],
                }
            },
        )
        return bool(completed.modified_count)

    def cancel(self, evaluation_id: str) -> Evaluation | None:
        """Stop a queued or running run: cells not yet taken by a worker are cancelled, running
        ones finish; None when the run was not queued or running."""
        object_id = to_object_id(evaluation_id)
        if object_id is None:
            return None
        document = self.runs.find_one_and_update(
            {"_id": object_id, "status": {"$in": ["queued", "running"]}},
            {"$set": {"status": "cancelled", "finished_at": utc_now()}},
        )
        if document is None:
            return None
        cancelled = self.cells.update_many(
            {"evaluation_id": object_id, "state": {"$in": ["pending", "dispatched"]}},
            {"$set": {"state": "cancelled", "finished_at": utc_now()}},
        ).modified_count
        return self._count(evaluation_id, {"cancelled": cancelled})


def _lease(seconds: float) -> datetime:
    return utc_now() + timedelta(seconds=seconds)


def evaluation_project(evaluation_id: str) -> str | None:
    """The project the evaluation belongs to; None when it does not exist."""
    return owning_project("evaluations", evaluation_id)
