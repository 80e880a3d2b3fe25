"""Storage of dialogs and their messages: one document per message, keyed by dialog and turn."""

from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from shared.db import indexed_collection, owning_project, to_object_id, utc_now
from shared.dialogs.models import (
    Dialog,
    DialogCreate,
    DialogListParams,
    Message,
    MessageDraft,
    MessagePageParams,
)
from shared.pagination import PageParams, find_page

_DUPLICATE_KEY = 11000
RecordT = TypeVar("RecordT", covariant=True)


class JoinedRecords(Protocol[RecordT]):
    """Another domain's records joined into a dialog's read, so one round trip brings both:
    the stage that joins them, and the record read from what it joined."""

    def record_lookup(self, local_field: str, into: str) -> dict[str, Any]: ...

    def joined_record(self, joined: list[dict[str, Any]]) -> RecordT | None: ...


def _dialog(document: dict[str, Any]) -> Dialog:
    prompt_id = document.get("prompt_id")
    return Dialog(
        id=str(document["_id"]),
        project_id=str(document["project_id"]),
        prompt_id=str(prompt_id) if prompt_id else None,
        version=document.get("version"),
        label=document.get("label"),
        title=document.get("title"),
        variables=document.get("variables") or {},
        message_count=document.get("message_count", 0),
        created_at=document["created_at"],
        updated_at=document["updated_at"],
    )


def _message(document: dict[str, Any]) -> Message:
    return Message(
        **{
            **document,
            "id": str(document["_id"]),
            "dialog_id": str(document["dialog_id"]),
        }
    )


def stored_time(moment: datetime) -> datetime:
    """UTC at the millisecond precision MongoDB keeps; a time without a zone is taken as UTC."""
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _binding(fields: dict[str, Any]) -> dict[str, Any]:
    """Binding fields as stored: the prompt id as an ObjectId."""
    if "prompt_id" in fields:
        fields = {**fields, "prompt_id": to_object_id(fields["prompt_id"] or "")}
    return fields


class DialogRepository:
    DIALOG_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("project_id", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)],
            name="project_latest_activity",
        ),
    ]
    MESSAGE_INDEXES: ClassVar[list[IndexModel]] = [
        # The idempotency key of the history writer: one copy of each message, however delivered.
        IndexModel(
            [("dialog_id", ASCENDING), ("turn_id", ASCENDING), ("role", ASCENDING)],
            unique=True,
            name="unique_turn_role",
        ),
        IndexModel(
            [("dialog_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
            name="dialog_chronological",
        ),
    ]

    def __init__(self) -> None:
        self.dialogs: Collection = indexed_collection("dialogs", self.DIALOG_INDEXES)
        self.messages: Collection = indexed_collection("messages", self.MESSAGE_INDEXES)

    def create(self, data: DialogCreate) -> Dialog:
        """Insert an empty dialog."""
        now = utc_now()
        document = {
            "project_id": to_object_id(data.project_id),
            **_binding(data.model_dump(include={"prompt_id", "version", "label"})),
            "title": data.title,
            "variables": data.variables,
            "message_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        self.dialogs.insert_one(document)
        return _dialog(document)

    def get(self, dialog_id: str) -> Dialog | None:
        object_id = to_object_id(dialog_id)
        document = object_id and self.dialogs.find_one({"_id": object_id})
        return _dialog(document) if document else None

    def search(self, params: DialogListParams) -> tuple[list[Dialog], str | None, int] | None:
        """A page of a project's dialogs, latest activity first; None when the id cannot exist."""
        project_id = to_object_id(params.project_id)
        if project_id is None:
            return None
        documents, next_cursor, total = find_page(
            self.dialogs, {"project_id": project_id}, params, sort_field="updated_at"
        )
        return [_dialog(document) for document in documents], next_cursor, total

    def update(self, dialog_id: str, fields: dict[str, Any]) -> Dialog | None:
        """Set the given fields (title, prompt binding, variables); None when the dialog does
        not exist."""
        object_id = to_object_id(dialog_id)
        document = object_id and self.dialogs.find_one_and_update(
            {"_id": object_id},
            {"$set": {**_binding(fields), "updated_at": utc_now()}},
            return_document=ReturnDocument.AFTER,
        )
        return _dialog(document) if document else None

    def remember_variables(self, dialog_id: str, variables: dict[str, Any]) -> None:
        """Set these of the dialog's variables, keeping the others (a turn's new values)."""
        self.dialogs.update_one(
            {"_id": to_object_id(dialog_id)},
            {"$set": {f"variables.{name}": value for name, value in variables.items()}},
        )

    def delete(self, dialog_id: str) -> bool:
        """Delete a dialog, then its messages (a crash in between leaves no visible dialog)."""
        object_id = to_object_id(dialog_id)
        if object_id is None or not self.dialogs.delete_one({"_id": object_id}).deleted_count:
            return False
        self.messages.delete_many({"dialog_id": object_id})
        return True

    def count_in_project(self, project_id: str) -> int:
        object_id = to_object_id(project_id)
        return self.dialogs.count_documents({"project_id": object_id}) if object_id else 0

    def delete_project_dialogs(self, project_id: str) -> int:
        """Delete every dialog of a project with its messages; the number of dialogs removed."""
        object_id = to_object_id(project_id)
        dialog_ids = [
            document["_id"] for document in self.dialogs.find({"project_id": object_id}, {"_id": 1})
        ]
        if not dialog_ids:
            return 0
        deleted = self.dialogs.delete_many({"_id": {"$in": dialog_ids}}).deleted_count
        self.messages.delete_many({"dialog_id": {"$in": dialog_ids}})
        return deleted

    def message_page(
        self, dialog_id: str, params: MessagePageParams
    ) -> tuple[list[Message], str | None]:
        """A page of a dialog's messages, oldest first, and the next cursor."""
        # Message pages allow larger limits than PageParams validates; both are checked already.
        page = PageParams.model_construct(limit=params.limit, cursor=params.cursor, page=None)
        documents, next_cursor, _ = find_page(
            self.messages, {"dialog_id": to_object_id(dialog_id)}, page, ascending=True
        )
        return [_message(document) for document in documents], next_cursor

    def get_for_turn(
        self, dialog_id: str, limit: int, prompts: JoinedRecords[RecordT]
    ) -> tuple[Dialog, list[Message], RecordT | None] | None:
        """A dialog, its newest `limit` messages (oldest first) and its bound prompt's record,
        in one round trip: what a chat turn reads before it can call the model."""
        object_id = to_object_id(dialog_id)
        if object_id is None:
            return None
        stages: list[dict[str, Any]] = [{"$match": {"_id": object_id}}]
        if limit > 0:
            newest = [{"$sort": {"created_at": DESCENDING, "_id": DESCENDING}}, {"$limit": limit}]
            stages.append(
                {
                    "$lookup": {
                        "from": self.messages.name,
                        "localField": "_id",
                        "foreignField": "dialog_id",
                        "pipeline": newest,
                        "as": "recent",
                    }
                }
            )
        stages.append(prompts.record_lookup("prompt_id", "prompt"))
        found = list(self.dialogs.aggregate(stages))
        if not found:
            return None
        document = found[0]
        messages = [_message(message) for message in reversed(document.get("recent", []))]
        record = prompts.joined_record(document["prompt"]) if document.get("prompt_id") else None
        return _dialog(document), messages, record

    def owners(self, dialog_ids: list[str]) -> dict[str, str]:
        """The project of each dialog that exists, by dialog id."""
        object_ids = [object_id for object_id in map(to_object_id, dialog_ids) if object_id]
        found = self.dialogs.find({"_id": {"$in": object_ids}}, {"project_id": 1})
        return {str(document["_id"]): str(document["project_id"]) for document in found}

    def add_turns(self, turns: list[tuple[str, list[MessageDraft]]]) -> list[int]:
        """Insert each turn's messages unless its (dialog, turn, role) is stored: one insert for
        every turn given; the number of messages inserted per turn.

        Ids are made here, in list order, so messages of one turn with the same timestamp still
        read back in the order given (user before assistant). The unique (dialog, turn, role)
        index refuses a copy, however many deliveries race: plain inserts, cheaper than upserts.
        """
        documents: list[dict[str, Any]] = []
        owners: list[int] = []  # the index of the turn each document belongs to
        for index, (dialog_id, drafts) in enumerate(turns):
            for draft in drafts:
                documents.append(
                    {
                        **draft.model_dump(exclude_none=True),
                        "_id": ObjectId(),
                        "dialog_id": to_object_id(dialog_id),
                        "created_at": stored_time(draft.created_at),
                    }
                )
                owners.append(index)
        inserted = [len(drafts) for _, drafts in turns]
        if not documents:
            return inserted
        try:
            self.messages.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(error["code"] != _DUPLICATE_KEY for error in errors):
                raise
            for error in errors:
                inserted[owners[error["index"]]] -= 1
        return inserted

    def record_activity(self, activity: list[tuple[str, datetime]]) -> set[str]:
        """Recount each dialog's messages and move its activity time forward to the newest time
        `activity` gives it; the dialogs that are gone. Two round trips however many dialogs
        (three when one is gone).

        Both only ever grow, so `$max` keeps the newest values whatever order writers finish in.
        """
        stored: dict[ObjectId, datetime] = {}
        for dialog_id, moment in activity:
            object_id, at = ObjectId(dialog_id), stored_time(moment)
            stored[object_id] = max(at, stored.get(object_id, at))
        counted = self.messages.aggregate(
            [
                {"$match": {"dialog_id": {"$in": list(stored)}}},
                {"$group": {"_id": "$dialog_id", "count": {"$sum": 1}}},
            ]
        )
        counts = {group["_id"]: group["count"] for group in counted}
        updates = [
            UpdateOne(
                {"_id": dialog_id},
                {"$max": {"updated_at": at, "message_count": counts.get(dialog_id, 0)}},
            )
            for dialog_id, at in stored.items()
        ]
        if self.dialogs.bulk_write(updates, ordered=False).matched_count == len(updates):
            return set()
        present = self.dialogs.distinct("_id", {"_id": {"$in": list(stored)}})
        return {str(dialog_id) for dialog_id in stored} - {str(dialog_id) for dialog_id in present}

    def delete_turns(self, turns: list[tuple[str, str]]) -> None:
        """Remove turns' messages (written for a dialog deleted meanwhile)."""
        if turns:
            written = [
                {"dialog_id": to_object_id(dialog_id), "turn_id": turn_id}
                for dialog_id, turn_id in turns
            ]
            self.messages.delete_many({"$or": written})


def dialog_project(dialog_id: str) -> str | None:
    """The project the dialog belongs to; None when it does not exist."""
    return owning_project("dialogs", dialog_id)
