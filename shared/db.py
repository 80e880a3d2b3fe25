"""The MongoDB connection: one client per process, built on first use, never at import."""

import threading
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from shared.clients import process_client
from shared.settings import get_settings

# Raised by the driver when MongoDB cannot be reached; the HTTP layer answers them with 503.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (ConnectionFailure,)

_indexed: set[tuple[str, str, str]] = set()
_indexed_lock = threading.Lock()


def _build_client(uri: str, timeout_ms: int) -> MongoClient:
    return MongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 10, 30_000),
        appname="better-assistant",
    )


def get_database() -> Database:
    """The configured database on the process-wide client."""
    settings = get_settings()
    uri, timeout_ms = settings.mongodb_uri, settings.mongodb_timeout_ms
    client = process_client("mongodb", (uri, timeout_ms), lambda: _build_client(uri, timeout_ms))
    return client[settings.mongodb_db]


def ping_database() -> None:
    """One round trip to MongoDB; raises a driver connection error when it is unreachable."""
    get_database().command("ping")


def indexed_collection(name: str, indexes: list[IndexModel]) -> Collection:
    """The named collection, with its indexes created once per process and database."""
    collection = get_database()[name]
    key = (get_settings().mongodb_uri, collection.database.name, name)
    if key not in _indexed:
        with _indexed_lock:
            if key not in _indexed:
                collection.create_indexes(indexes)
                _indexed.add(key)
    return collection


def to_object_id(value: str) -> ObjectId | None:
    """The ObjectId behind a wire id, or None when the text cannot be one."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


def utc_now() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so values round-trip unchanged."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def id_conditions(**ids: str | None) -> list[dict[str, Any]] | None:
    """A `{field: ObjectId}` condition per id given (None values are skipped); None when one of
    them cannot be an id, so that nothing can match."""
    conditions = []
    for field, value in ids.items():
        if value is None:
            continue
        object_id = to_object_id(value)
        if object_id is None:
            return None
        conditions.append({field: object_id})
    return conditions


def within_projects(project_ids: list[str] | None, field: str = "project_id") -> dict[str, Any]:
    """A filter keeping the given projects' documents; None keeps every project's."""
    if project_ids is None:
        return {}
    object_ids = [object_id for value in project_ids if (object_id := to_object_id(value))]
    return {field: {"$in": object_ids}}


# A resource never moves between projects, so which project owns it is cached for the process.
_owners: dict[tuple[str, str, str], str] = {}
_OWNERS_LIMIT = 100_000


def owning_project(collection_name: str, resource_id: str) -> str | None:
    """The id of the project a document belongs to; None when there is no such document."""
    key = (get_settings().mongodb_db, collection_name, resource_id)
    project_id = _owners.get(key)
    if project_id is not None:
        return project_id
    object_id = to_object_id(resource_id)
    if object_id is None:
        return None
    document = get_database()[collection_name].find_one({"_id": object_id}, {"project_id": 1})
    if document is None:
        return None
    if len(_owners) >= _OWNERS_LIMIT:
        _owners.clear()
    project_id = _owners[key] = str(document["project_id"])
    return project_id
