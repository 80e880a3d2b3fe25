"""Events not delivered yet, kept on local disk so that a process stopping does not lose them.

One file per event, named by its channel and id (`history.<turn id>.json`), holding the event's
JSON as the queue-triggered function takes it: keeping an event twice writes one file, and
replaying one that was delivered meanwhile changes nothing (every consumer is idempotent by event
id). A file is written whole or not at all (a temporary file renamed over it), readable by this
user only: a turn holds what the user wrote. A file that cannot be read back as an event of its
channel is set aside as `<name>.corrupt`, for an operator to look at.
"""

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from pydantic import BaseModel, ValidationError

from shared.queues.channel import Channel, EventT
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.queues")

_SUFFIX = ".json"
CORRUPT_SUFFIX = ".corrupt"
# An id used as it is in a file name; any other is hashed, so no id can name a path elsewhere.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def spool_dir() -> Path:
    return get_settings().event_spool_dir


def spool_path(channel: Channel[EventT], event: EventT) -> Path:
    """Where the event is kept: one name per channel and event id."""
    event_id = channel.event_id(event)
    if not _PLAIN_ID.fullmatch(event_id):
        event_id = hashlib.sha256(event_id.encode()).hexdigest()
    return spool_dir() / f"{channel.name}.{event_id}{_SUFFIX}"


def write_spool_file(path: Path, event: BaseModel) -> int:
    """Write the event's JSON to `path` atomically and durably; the number of bytes written."""
    data = event.model_dump_json().encode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself survives a crash only once the folder is on disk too.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return len(data)


def remove_spool_file(path: Path) -> None:
    """Forget a kept event once it is delivered (another process may have done it first)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        # Harmless: replaying a delivered event changes nothing.
        logger.warning("spool: %s was delivered but not removed (%s)", path, type(exc).__name__)


def spooled_events(channel: Channel[EventT]) -> list[tuple[Path, EventT]]:
    """The channel's kept events, oldest file first; unreadable files are set aside."""
    folder = spool_dir()
    try:
        paths = sorted(folder.glob(f"{channel.name}.*{_SUFFIX}"), key=_modified)
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            found.append((path, channel.model.model_validate_json(path.read_bytes())))
        except FileNotFoundError:  # delivered by another process meanwhile
            continue
        except (OSError, ValidationError):
            _set_aside(path)
    return found


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _set_aside(path: Path) -> None:
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        size = path.stat().st_size
        os.replace(path, aside)
    except OSError as exc:
        logger.error("spool: %s cannot be read nor set aside (%s)", path, type(exc).__name__)
        return
    logger.error(
        "spool: %s (%d bytes) is not a readable event; set aside as %s", path, size, aside.name
    )
