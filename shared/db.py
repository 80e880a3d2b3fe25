"""The MongoDB connection: one client per process, built on first use, never at import."""

import threading
from datetime import UTC, datetime

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
