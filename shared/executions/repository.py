"""Storage of execution records."""

from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection

from shared.db import (
    id_conditions,
    indexed_collection,
    owning_project,
    to_object_id,
    utc_now,
    within_projects,
)
from shared.executions.models import (
    Execution,
    ExecutionDraft,
    ExecutionListParams,
    ExecutionOutcome,
    RunFigures,
)
from shared.pagination import find_page


def _execution(document: dict[str, Any]) -> Execution:
    prompt_id = document.get("prompt_id")
    return Execution(
        **{
            **document,
            "id": str(document["_id"]),
            "project_id": str(document["project_id"]),
            "prompt_id": None if prompt_id is None else str(prompt_id),
        }
    )


def _time_range(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    bounds = {"$gte": since} if since else {}
    if until:
        bounds["$lt"] = until
    return {"created_at": bounds} if bounds else {}


class ExecutionRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("prompt_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="prompt_newest_first",
        ),
        IndexModel(
            [("prompt_id", ASCENDING), ("prompt_version", ASCENDING), ("created_at", DESCENDING)],
            name="prompt_version_newest_first",
        ),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest_first"),
        IndexModel([("project_id", ASCENDING)], name="project"),
    ]

    def __init__(self) -> None:
        self.collection: Collection = indexed_collection("executions", self.INDEXES)

    def insert(self, draft: ExecutionDraft) -> Execution:
        """Store a new run as running."""
        document = {
            **draft.model_dump(),
            "project_id": to_object_id(draft.project_id),
            "prompt_id": draft.prompt_id and to_object_id(draft.prompt_id),
            # Nothing received yet: `finish` writes the outcome over these.
            **ExecutionOutcome.not_yet().model_dump(),
            "finished_at": None,
            "created_at": utc_now(),
        }
        self.collection.insert_one(document)
        return _execution(document)

    def finish(self, execution_id: str, outcome: ExecutionOutcome) -> Execution | None:
        """Write a run's outcome and end time."""
        document = self.collection.find_one_and_update(
            {"_id": to_object_id(execution_id)},
            {"$set": {**outcome.model_dump(), "finished_at": utc_now()}},
            return_document=ReturnDocument.AFTER,
        )
        return _execution(document) if document else None

    def get(self, execution_id: str) -> Execution | None:
        object_id = to_object_id(execution_id)
        document = object_id and self.collection.find_one({"_id": object_id})
        return _execution(document) if document else None

    def search(
        self, params: ExecutionListParams, within: list[str] | None
    ) -> tuple[list[Execution], str | None, int] | None:
        """A page of records of the `within` projects (None: any), newest first; None when the
        project or prompt id cannot exist."""
        query: dict[str, Any] = {
            **_time_range(params.since, params.until),
            **within_projects(within),
        }
        # Apart from `within`'s condition on the same field.
        conditions = id_conditions(project_id=params.project_id, prompt_id=params.prompt_id)
        if conditions is None:
            return None
        if conditions:
            query["$and"] = conditions
        if params.version is not None:
            query["prompt_version"] = params.version
        if params.status is not None:
            query["status"] = params.status
        documents, next_cursor, total = find_page(self.collection, query, params)
        return [_execution(document) for document in documents], next_cursor, total

    def outcomes(
        self, prompt_id: str, since: datetime | None, until: datetime | None
    ) -> list[RunFigures]:
        """The figures stats read, for every finished run of a prompt, in version order."""
        query = {
            "prompt_id": to_object_id(prompt_id),
            "status": {"$ne": "running"},
            **_time_range(since, until),
        }
        projection = {"_id": 0, **dict.fromkeys(RunFigures.model_fields, 1)}
        documents = self.collection.find(query, projection).sort("prompt_version", ASCENDING)
        return [RunFigures.model_validate(document) for document in documents]


def execution_project(execution_id: str) -> str | None:
    """The project the execution belongs to; None when it does not exist."""
    return owning_project("executions", execution_id)
