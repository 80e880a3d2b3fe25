"""Storage of dead letters: one document per event (by type and id), however often it dies."""

import json
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.db import indexed_collection, to_object_id, utc_now
from shared.pagination import find_page
from shared.workflows.dead_letters.models import (
    DeadEvent,
    DeadLetter,
    DeadLetterListParams,
    DeadLetterSummary,
    Replay,
)

# The data is kept as the JSON text it was published as: MongoDB need not be able to store
# every key or depth an event's JSON may have, and a replay reads back exactly what was sent.
_DATA = "data_json"


def _fields(document: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(document["_id"]), **{k: v for k, v in document.items() if k != "_id"}}


def _summary(document: dict[str, Any]) -> DeadLetterSummary:
    return DeadLetterSummary.model_validate(_fields(document))


def _dead_letter(document: dict[str, Any]) -> DeadLetter:
    return DeadLetter.model_validate(_fields(document) | {"data": json.loads(document[_DATA])})


class DeadLetterRepository:
    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("event_type", ASCENDING), ("event_id", ASCENDING)], unique=True, name="event"),
        IndexModel([("received_at", DESCENDING), ("_id", DESCENDING)], name="newest_first"),
    ]

    def __init__(self) -> None:
        self.collection: Collection = indexed_collection("dead_letters", self.INDEXES)

    def keep(self, event: DeadEvent) -> tuple[DeadLetter, bool]:
        """Store the event once; a redelivery only counts. The dead letter, and whether it was
        already kept."""
        now = utc_now()
        fields = event.model_dump(exclude={"data"})
        new = {**fields, _DATA: json.dumps(event.data), "status": "dead", "replay": None}
        try:
            document = self._upsert(event, new, now)
        except DuplicateKeyError:
            # Two deliveries inserted at once: the other one's document is there now.
            document = self._upsert(event, new, now)
        return _dead_letter(document), document["deliveries"] > 1

    def _upsert(self, event: DeadEvent, new: dict[str, Any], now: object) -> dict[str, Any]:
        return self.collection.find_one_and_update(
            {"event_type": event.event_type, "event_id": event.event_id},
            {
                "$setOnInsert": {**new, "received_at": now},
                "$set": {"last_received_at": now},
                "$inc": {"deliveries": 1},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    def get(self, dead_letter_id: str) -> DeadLetter | None:
        object_id = to_object_id(dead_letter_id)
        document = object_id and self.collection.find_one({"_id": object_id})
        return _dead_letter(document) if document else None

    def search(
        self, params: DeadLetterListParams
    ) -> tuple[list[DeadLetterSummary], str | None, int]:
        """A page of dead letters, newest first, of one type and status when given."""
        query = {
            field: value
            for field, value in (("event_type", params.type), ("status", params.status))
            if value is not None
        }
        documents, next_cursor, total = find_page(
            self.collection, query, params, sort_field="received_at"
        )
        return [_summary(document) for document in documents], next_cursor, total

    def record_replay(self, dead_letter_id: str, replay: Replay) -> DeadLetter | None:
        """Keep a replay's outcome: a dead letter whose consumer took it is `replayed`."""
        object_id = to_object_id(dead_letter_id)
        changes: dict[str, Any] = {"replay": replay.model_dump()}
        if replay.taken:
            changes["status"] = "replayed"
        document = object_id and self.collection.find_one_and_update(
            {"_id": object_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        return _dead_letter(document) if document else None

    def delete(self, dead_letter_id: str) -> bool:
        object_id = to_object_id(dead_letter_id)
        return bool(object_id and self.collection.delete_one({"_id": object_id}).deleted_count)
