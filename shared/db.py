"""The MongoDB connection: one client per process, built on first use, never at import.

Each client has a circuit breaker (`shared.breaker`): once MongoDB is found unreachable, every
`get_database()` raises `DatabaseUnreachable` at once, without waiting on the driver's server
selection, until a background ping gets an answer again.
"""

import threading
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WaitQueueTimeoutError,
    WTimeoutError,
)
from pymongo.monitoring import (
    ServerHeartbeatFailedEvent,
    ServerHeartbeatListener,
    ServerHeartbeatStartedEvent,
    ServerHeartbeatSucceededEvent,
)

from shared.breaker import Breaker
from shared.clients import process_client
from shared.settings import get_settings

# The longest a probe or a readiness ping waits for MongoDB: a database that does not answer
# within it is as good as down for a request, and the probe tries again right after.
PING_TIMEOUT_S = 0.5
# What a refused request tells its caller to wait: about one probe.
RETRY_AFTER_S = 1

# Server errors that say "this member cannot serve now, another will shortly" (elections,
# shutdowns, network trouble between members): the codes the drivers' retryable-writes
# specification lists, and the write concern timeout.
_TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        64,  # WriteConcernFailed (wtimeout)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")

_indexed: set[tuple[str, str, str]] = set()
_indexed_lock = threading.Lock()


class DatabaseUnreachable(ConnectionFailure):
    """Raised instead of calling the driver while the breaker is open. A `ConnectionFailure`, so
    whatever handles the driver's own connection errors handles it too."""


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether the error says MongoDB cannot serve now but may shortly (503, worth a retry)
    rather than that the request or the code is wrong (500)."""
    if not isinstance(exc, PyMongoError):
        return False
    if isinstance(exc, ConnectionFailure | WTimeoutError):
        return True
    if any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        concern_errors = details.get("writeConcernErrors") or []
        return not details.get("writeErrors") and any(
            error.get("code") in _TRANSIENT_CODES for error in concern_errors
        )
    return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES


def _means_unreachable(exc: BaseException) -> bool:
    """A failure that opens the breaker: the driver could not reach a usable server. (Not the
    breaker's own refusal, which would keep it open for ever, nor a full connection pool.)"""
    return isinstance(exc, ConnectionFailure) and not isinstance(
        exc, DatabaseUnreachable | WaitQueueTimeoutError
    )


class _Connection(ServerHeartbeatListener):
    """The process's client for one configuration and its breaker. It listens to the driver's
    monitor, so the breaker opens the moment the monitor finds the server it writes to gone:
    after a network error the driver checks the server at once, often before the failing
    request has returned."""

    def __init__(self, uri: str, timeout_ms: int) -> None:
        self.breaker = Breaker("mongodb", lambda: _ping(self.client))
        self.client: MongoClient = MongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 10, 30_000),
            appname="better-assistant",
            # A write is acknowledged once it is in the journal: a 2xx is never lost to a crash
            # of the database (with w=1 it could be, by up to the journal's commit interval).
            # Replica sets' default, w=majority, journals already.
            journal=True,
            event_listeners=[self],
            # Not before `self.client` is set: the monitor's first heartbeat comes to `failed`.
            connect=False,
        )

    def started(self, event: ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: ServerHeartbeatSucceededEvent) -> None:
        pass

    def failed(self, event: ServerHeartbeatFailedEvent) -> None:
        # Unless another server could take the writes: a secondary (or one mongos of several)
        # going away leaves the database available.
        servers = self.client.topology_description.server_descriptions()
        others = (server for address, server in servers.items() if address != event.connection_id)
        if not any(server.is_writable for server in others):
            self.breaker.trip(event.reply)


def _ping(client: MongoClient) -> None:
    """One round trip, waiting at most PING_TIMEOUT_S for a server (not the selection timeout)."""
    with pymongo.timeout(PING_TIMEOUT_S):
        client.admin.command("ping")


def _connection() -> _Connection:
    settings = get_settings()
    uri, timeout_ms = settings.mongodb_uri, settings.mongodb_timeout_ms
    return process_client("mongodb", (uri, timeout_ms), lambda: _Connection(uri, timeout_ms))


def _available() -> _Connection:
    connection = _connection()
    if connection.breaker.is_open:
        raise DatabaseUnreachable("MongoDB is unreachable (circuit breaker open)")
    return connection


def get_database() -> Database:
    """The configured database on the process-wide client; `DatabaseUnreachable` at once while
    MongoDB is known to be unreachable."""
    return _available().client[get_settings().mongodb_db]


def database_failed(exc: BaseException) -> None:
    """Report a driver error: one that means MongoDB is unreachable opens the breaker."""
    if _means_unreachable(exc):
        _connection().breaker.trip(exc)


def ping_database() -> None:
    """One short round trip to MongoDB (readiness); raises a driver error when it cannot answer,
    `DatabaseUnreachable` at once while the breaker is open."""
    _ping(_available().client)


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
