"""Storage of prompts (metadata), their immutable, gap-free numbered versions, and the history of
their labels.

A label change and its history record are written without a transaction (SecantusDB has none):
the change itself `$push`es the record onto the prompt's `pending_label_moves` in the same
single-document update, so a move that happened always carries its record. The record is then
copied into `label_moves` under its own `_id` (a second copy is a duplicate key, ignored) and
pulled from the prompt. A process that dies in between leaves the record pending, and the next
change or history read of that prompt copies it: no move is lost and none is recorded twice.
"""

import contextlib
import re
import threading
from collections import OrderedDict
from typing import Any, ClassVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.access.models import Actor
from shared.db import indexed_collection, owning_project, to_object_id, utc_now, within_projects
from shared.errors import Conflict
from shared.pagination import PageParams, find_page
from shared.prompts.models import (
    LATEST_LABEL,
    LabelChange,
    PromptContent,
    PromptCreate,
    PromptListParams,
    PromptRecord,
    PromptVersion,
)


def _record(document: dict[str, Any]) -> PromptRecord:
    return PromptRecord(
        id=str(document["_id"]),
        project_id=str(document["project_id"]),
        name=document["name"],
        category=document.get("category"),
        tags=document.get("tags", []),
        labels={**document.get("labels", {}), LATEST_LABEL: document["latest_version"]},
        latest_version=document["latest_version"],
        created_at=document["created_at"],
        updated_at=document["updated_at"],
        created_by=document.get("created_by"),
    )


def _version(document: dict[str, Any]) -> PromptVersion:
    return PromptVersion(**{k: v for k, v in document.items() if k not in ("_id", "prompt_id")})


# Versions already read, by (database, prompt id, number), least recently used first: versions
# are immutable and prompt ids never reused. Bounded, as a version can hold a long template;
# shared by the threads serving requests.
_VERSIONS_KEPT = 256
_versions_read: OrderedDict[tuple[str, str, int], PromptVersion] = OrderedDict()
_versions_lock = threading.Lock()


def _label_move(
    prompt_id: ObjectId, label: str, before: int | None, after: int | None, by: Actor
) -> dict[str, Any]:
    """A label change as stored; its `_id` is chosen here so copying it twice is harmless."""
    return {
        "_id": ObjectId(),
        "prompt_id": prompt_id,
        "label": label,
        "from_version": before,
        "to_version": after,
        "by": by.model_dump(),
        "at": utc_now(),
    }


def _label_change(document: dict[str, Any]) -> LabelChange:
    return LabelChange(**{k: v for k, v in document.items() if k not in ("_id", "prompt_id")})


def _name_taken(name: str) -> Conflict:
    return Conflict(f"This project already has a prompt named {name!r}.", code="name_taken")


class PromptRepository:
    PROMPT_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("project_id", ASCENDING), ("name", ASCENDING)], unique=True, name="unique_name"
        ),
        IndexModel(
            [("project_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="project_newest_first",
        ),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest_first"),
        IndexModel([("project_id", ASCENDING), ("tags", ASCENDING)], name="project_tags"),
        IndexModel([("project_id", ASCENDING), ("category", ASCENDING)], name="project_category"),
    ]
    VERSION_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [("prompt_id", ASCENDING), ("version", DESCENDING)], unique=True, name="unique_version"
        ),
    ]
    LABEL_MOVE_INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel(
            [
                ("prompt_id", ASCENDING),
                ("label", ASCENDING),
                ("at", DESCENDING),
                ("_id", DESCENDING),
            ],
            name="label_newest_first",
        ),
    ]

    def __init__(self) -> None:
        self.prompts: Collection = indexed_collection("prompts", self.PROMPT_INDEXES)
        self.versions: Collection = indexed_collection("prompt_versions", self.VERSION_INDEXES)
        self.label_moves: Collection = indexed_collection("label_moves", self.LABEL_MOVE_INDEXES)
        # Prompts this repository (one per request) has found: their versions may come from
        # memory. A prompt deleted since cannot be served: its record would be read again first.
        self._records_read: set[str] = set()

    def create(self, data: PromptCreate, by: Actor) -> tuple[PromptRecord, PromptVersion]:
        """Insert a prompt with version 1 and the history of the labels it starts with; a name
        taken in the project is a conflict."""
        now = utc_now()
        prompt_id = ObjectId()
        moves = [_label_move(prompt_id, label, None, 1, by) for label in data.labels]
        document = {
            "_id": prompt_id,
            "project_id": to_object_id(data.project_id),
            "name": data.name,
            "category": data.category,
            "tags": data.tags,
            "labels": dict.fromkeys(data.labels, 1),
            "latest_version": 1,
            "created_at": now,
            "updated_at": now,
            "created_by": by.model_dump(),
            "pending_label_moves": moves,
        }
        try:
            self.prompts.insert_one(document)
        except DuplicateKeyError as exc:
            raise _name_taken(data.name) from exc
        version = {
            "prompt_id": document["_id"],
            "version": 1,
            **data.stored(),
            "variables": data.variables(),
            "commit_message": data.commit_message,
            "created_at": now,
            "created_by": by.model_dump(),
        }
        try:
            self.versions.insert_one(version)
        except Exception:
            self.prompts.delete_one({"_id": document["_id"]})
            raise
        self._copy_label_moves(prompt_id, moves)
        return _record(document), _version(version)

    def get(self, prompt_id: str) -> PromptRecord | None:
        object_id = to_object_id(prompt_id)
        return self._read(object_id and {"_id": object_id})

    def get_by_name(self, project_id: str, name: str) -> PromptRecord | None:
        """The project's prompt of that name: one read of the unique (project, name) index."""
        object_id = to_object_id(project_id)
        return self._read(object_id and {"project_id": object_id, "name": name})

    def in_project(self, project_id: str, limit: int) -> list[PromptRecord]:
        """The project's prompts by name, at most `limit`."""
        object_id = to_object_id(project_id)
        documents = self.prompts.find({"project_id": object_id}).sort("name", 1).limit(limit)
        return [_record(document) for document in documents]

    def _read(self, query: dict[str, Any] | None) -> PromptRecord | None:
        """The one prompt `query` finds (None for a query an id made impossible)."""
        document = query and self.prompts.find_one(query)
        if not document:
            return None
        record = _record(document)
        self._records_read.add(record.id)
        return record

    def record_lookup(self, local_field: str, into: str) -> dict[str, Any]:
        """A `$lookup` stage that joins the prompt named by `local_field` as `into`: another
        collection's read brings the prompt's record in the same round trip."""
        return {
            "$lookup": {
                "from": self.prompts.name,
                "localField": local_field,
                "foreignField": "_id",
                "as": into,
            }
        }

    def joined_record(self, joined: list[dict[str, Any]]) -> PromptRecord | None:
        """The record a `record_lookup` stage found, read as by `get`."""
        if not joined:
            return None
        self._records_read.add(str(joined[0]["_id"]))
        return _record(joined[0])

    def get_version(self, prompt_id: str, version: int) -> PromptVersion | None:
        """One version. Stored versions never change, so one already read is served from memory
        when this repository has just read its prompt's record (so the prompt still exists)."""
        key = (self.versions.database.name, prompt_id, version)
        if prompt_id in self._records_read:
            with _versions_lock:
                cached = _versions_read.get(key)
                if cached is not None:
                    _versions_read.move_to_end(key)
                    return cached
        object_id = to_object_id(prompt_id)
        document = object_id and self.versions.find_one(
            {"prompt_id": object_id, "version": version}
        )
        if not document:
            # Never remembered: the prompt's next version may be created after this miss.
            return None
        found = _version(document)
        with _versions_lock:
            _versions_read[key] = found
            if len(_versions_read) > _VERSIONS_KEPT:
                _versions_read.popitem(last=False)
        return found

    def search(
        self, params: PromptListParams, within: list[str] | None
    ) -> tuple[list[PromptRecord], str | None, int] | None:
        """A page of prompts of the `within` projects (None: any) matching the filters; None when
        the project id cannot exist."""
        conditions: list[dict[str, Any]] = [within_projects(within)] if within is not None else []
        if params.project_id is not None:
            project_id = to_object_id(params.project_id)
            if project_id is None:
                return None
            conditions.append({"project_id": project_id})
        for field, value in (
            ("name", params.name),
            ("category", params.category),
            ("tags", params.tag),
        ):
            if value is not None:
                conditions.append({field: value})
        if params.label is not None and params.label != LATEST_LABEL:
            conditions.append({f"labels.{params.label}": {"$exists": True}})
        if params.q:
            conditions.append({"name": {"$regex": re.escape(params.q), "$options": "i"}})
        query = (
            {"$and": conditions} if len(conditions) > 1 else (conditions[0] if conditions else {})
        )
        documents, next_cursor, total = find_page(self.prompts, query, params)
        return [_record(document) for document in documents], next_cursor, total

    def list_versions(
        self, prompt_id: str, limit: int, older_than: int | None
    ) -> list[PromptVersion]:
        """Versions newest first, at most `limit + 1` so callers can tell if more exist."""
        query: dict[str, Any] = {"prompt_id": to_object_id(prompt_id)}
        if older_than is not None:
            query["version"] = {"$lt": older_than}
        cursor = self.versions.find(query).sort("version", DESCENDING).limit(limit + 1)
        return [_version(document) for document in cursor]

    def add_version(
        self, prompt_id: str, content: PromptContent, commit_message: str | None, by: Actor
    ) -> tuple[PromptVersion, bool]:
        """Append a version unless the content equals the newest one; (version, created).

        The number is the newest existing version plus one, claimed by the unique
        (prompt_id, version) index: concurrent writers retry on a duplicate, so numbers
        stay consecutive even if a writer dies between its two writes.
        """
        object_id = to_object_id(prompt_id)
        stored = content.stored()
        while True:
            newest = self.versions.find_one(
                {"prompt_id": object_id}, sort=[("version", DESCENDING)]
            )
            if newest is None:
                raise LookupError(f"prompt {prompt_id} has no versions")
            if {key: newest.get(key) for key in stored} == stored:
                return _version(newest), False
            document = {
                "prompt_id": object_id,
                "version": newest["version"] + 1,
                **stored,
                "variables": content.variables(),
                "commit_message": commit_message,
                "created_at": utc_now(),
                "created_by": by.model_dump(),
            }
            try:
                self.versions.insert_one(document)
            except DuplicateKeyError:
                continue
            self.prompts.update_one(
                {"_id": object_id},
                {
                    "$max": {"latest_version": document["version"]},
                    "$set": {"updated_at": utc_now()},
                },
            )
            return _version(document), True

    def update_metadata(self, prompt_id: str, fields: dict[str, Any]) -> PromptRecord | None:
        object_id = to_object_id(prompt_id)
        try:
            document = object_id and self.prompts.find_one_and_update(
                {"_id": object_id},
                {"$set": {**fields, "updated_at": utc_now()}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise _name_taken(fields["name"]) from exc
        return _record(document) if document else None

    def change_label(
        self, prompt_id: str, label: str, version: int | None, by: Actor
    ) -> tuple[PromptRecord, int | None] | None:
        """Point a label at `version` (None: remove it), recording who did it; the record after
        and where the label pointed before (a label already there is left alone, unrecorded);
        None when the prompt does not exist.

        Each attempt reads the prompt and writes only if no other label change was written
        since (the `label_changes` counter), else reads again. So a record's `from_version` is
        exact and its `at` later than every earlier change's, even when a label goes back and
        forth while a writer waits: comparing the label's value alone would let that writer
        through with a stale `at`, out of order in the history.
        """
        object_id = to_object_id(prompt_id)
        field = f"labels.{label}"
        while True:
            document = object_id and self.prompts.find_one({"_id": object_id})
            if not document:
                return None
            before = document.get("labels", {}).get(label)
            if before == version:
                return _record(document), before
            changes = document.get("label_changes")
            unchanged = {"$exists": False} if changes is None else changes
            move = _label_move(object_id, label, before, version, by)
            change: dict[str, Any] = {
                "$set": {"updated_at": move["at"]},
                "$inc": {"label_changes": 1},
                "$push": {"pending_label_moves": move},
            }
            if version is None:
                change["$unset"] = {field: ""}
            else:
                change["$set"][field] = version
            document = self.prompts.find_one_and_update(
                # A prompt has no counter until its first label change.
                {"_id": object_id, "label_changes": unchanged},
                change,
                return_document=ReturnDocument.AFTER,
            )
            if document is not None:
                self._copy_label_moves(object_id, document["pending_label_moves"])
                return _record(document), before

    def _copy_label_moves(self, prompt_id: ObjectId, moves: list[dict[str, Any]]) -> None:
        """Copy pending label moves into the history, then drop them from the prompt."""
        if not moves:
            return
        for move in moves:
            # A duplicate was copied already: by a writer that died before pulling it, or by a
            # concurrent history read.
            with contextlib.suppress(DuplicateKeyError):
                self.label_moves.insert_one(move)
        self.prompts.update_one(
            {"_id": prompt_id},
            {"$pull": {"pending_label_moves": {"_id": {"$in": [m["_id"] for m in moves]}}}},
        )

    def label_history(
        self, prompt_id: str, label: str, params: PageParams
    ) -> tuple[list[LabelChange], str | None, int] | None:
        """A page of a label's changes, newest first; None when the prompt does not exist."""
        object_id = to_object_id(prompt_id)
        document = object_id and self.prompts.find_one(
            {"_id": object_id}, {"pending_label_moves": 1}
        )
        if not document:
            return None
        # A change whose writer died before copying it is copied now, so the page shows it.
        self._copy_label_moves(object_id, document.get("pending_label_moves", []))
        documents, next_cursor, total = find_page(
            self.label_moves, {"prompt_id": object_id, "label": label}, params, sort_field="at"
        )
        return [_label_change(document) for document in documents], next_cursor, total

    def delete(self, prompt_id: str) -> bool:
        """Delete a prompt, then its versions and label history (a crash in between leaves no
        visible prompt)."""
        object_id = to_object_id(prompt_id)
        if object_id is None or not self.prompts.delete_one({"_id": object_id}).deleted_count:
            return False
        self.versions.delete_many({"prompt_id": object_id})
        self.label_moves.delete_many({"prompt_id": object_id})
        return True

    def count_in_project(self, project_id: str) -> int:
        object_id = to_object_id(project_id)
        return self.prompts.count_documents({"project_id": object_id}) if object_id else 0

    def delete_project_prompts(self, project_id: str) -> int:
        """Delete every prompt of a project with its versions and label history; the number of
        prompts removed."""
        object_id = to_object_id(project_id)
        prompt_ids = [
            doc["_id"] for doc in self.prompts.find({"project_id": object_id}, {"_id": 1})
        ]
        if not prompt_ids:
            return 0
        deleted = self.prompts.delete_many({"_id": {"$in": prompt_ids}}).deleted_count
        self.versions.delete_many({"prompt_id": {"$in": prompt_ids}})
        self.label_moves.delete_many({"prompt_id": {"$in": prompt_ids}})
        return deleted


def prompt_project(prompt_id: str) -> str | None:
    """The project the prompt belongs to; None when it does not exist."""
    return owning_project("prompts", prompt_id)
