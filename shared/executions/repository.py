"""Storage of execution records."""

import contextlib
from datetime import datetime
from typing import Any, ClassVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

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


# What `finish` writes over a running record: the outcome and the end time.
_FINISHED_FIELDS = (*ExecutionOutcome.model_fields, "finished_at")


def _document(record: Execution) -> dict[str, Any]:
    document = record.model_dump(exclude={"id"})
    document["_id"] = to_object_id(record.id)
    document["project_id"] = to_object_id(record.project_id)
    document["prompt_id"] = record.prompt_id and to_object_id(record.prompt_id)
    return document


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

    @staticmethod
    def new_record(draft: ExecutionDraft) -> Execution:
        """The record of a run about to start, with its id, not stored yet (`insert`)."""
        return Execution(
            **draft.model_dump(),
            **dict(ExecutionOutcome.not_yet()),
            id=str(ObjectId()),
            created_at=utc_now(),
            finished_at=None,
        )

    def insert(self, record: Execution) -> None:
        """Store a run that has started, as running; a run whose `finish` came first (a call
        that failed at once) is stored already and kept as it is."""
        with contextlib.suppress(DuplicateKeyError):
            self.collection.insert_one(_document(record))

    def finish(self, record: Execution) -> None:
        """Store a finished run's outcome and end time, and the run itself when its start was
        not stored (`insert` has not landed yet, or failed)."""
        document = _document(record)
        outcome = {name: document.pop(name) for name in _FINISHED_FIELDS}
        self.collection.update_one(
            {"_id": document.pop("_id")},
            {"$set": outcome, "$setOnInsert": document},
            upsert=True,
        )

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
