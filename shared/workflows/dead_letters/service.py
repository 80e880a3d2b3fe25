"""What operators do with dead letters: the sink keeps them, operators list, read, replay and
delete them.

A replay hands the stored event to the consumer its channel has everywhere else (the one the
queue-triggered function runs): consumers are idempotent by event, so replaying an event that
was written meanwhile, or replaying twice, changes nothing more.
"""

import base64
import binascii
import json
import logging
import re
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from shared.db import utc_now
from shared.errors import AppError, Conflict, ValidationFailed, not_found, validation_failed
from shared.pagination import Page
from shared.queues.channel import Channel, Consumer
from shared.queues.cloudevents import ReceivedEvent
from shared.workflows.dead_letters.models import (
    DeadEvent,
    DeadLetter,
    DeadLetterListParams,
    DeadLetterStored,
    DeadLetterSummary,
    Replay,
    ReplayError,
)
from shared.workflows.dead_letters.repository import DeadLetterRepository
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.worker import consume_cell
from shared.workflows.history.channel import TURNS
from shared.workflows.history.writer import consume_turn

logger = logging.getLogger("better_assistant.dead_letters")

# Every channel whose events can die, with its consumer, by event type.
CONSUMERS: dict[str, tuple[Channel[Any], Consumer[Any]]] = {
    TURNS.event_type: (TURNS, consume_turn),
    CELLS.event_type: (CELLS, consume_cell),
}
# What of the consumer's answer Knative passes on in `knativeerrordata` is kept, at most.
MAX_ERROR_DATA = 2000
_HTTP_STATUS = re.compile(r"[1-5][0-9]{2}")


def dead_event(received: ReceivedEvent) -> DeadEvent:
    """The dead letter a delivery makes: a CloudEvent needs an id and a type to be kept (422)."""
    attributes = received.attributes
    missing = [name for name in ("id", "type") if not attributes.get(name)]
    if missing:
        raise ValidationFailed(
            "A dead letter is a CloudEvent with an id and a type.",
            code="malformed_event",
            details=[{"loc": ["header", f"ce-{name}"], "msg": "missing"} for name in missing],
        )
    code = attributes.get("knativeerrorcode", "")
    try:
        return DeadEvent.model_validate(
            {
                "event_id": attributes["id"],
                "event_type": attributes["type"],
                "source": attributes.get("source"),
                "subject": attributes.get("subject"),
                "time": attributes.get("time"),
                "signature": received.signature,
                "data": received.data,
                "error_code": int(code) if _HTTP_STATUS.fullmatch(code) else None,
                "error_destination": attributes.get("knativeerrordest"),
                "error_data": _error_data(attributes.get("knativeerrordata")),
            }
        )
    except ValidationError as exc:
        raise validation_failed(
            "The dead event's attributes are not valid.", exc, "header"
        ) from exc


def _error_data(encoded: str | None) -> str | None:
    """Knative sends the consumer's answer base64-encoded; kept as text, its start only."""
    if not encoded:
        return None
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
    except (ValueError, binascii.Error):
        text = encoded
    return text[:MAX_ERROR_DATA]


class DeadLetterService:
    def __init__(self) -> None:
        self.dead_letters = DeadLetterRepository()

    def keep(self, received: ReceivedEvent) -> DeadLetterStored:
        """Keep a dead event once, however often the broker delivers it."""
        event = dead_event(received)
        letter, duplicate = self.dead_letters.keep(event)
        # Ids, type and size only: the data is a user's conversation or a test case.
        logger.warning(
            "dead letter %s: %s event %s (%d bytes) given up after status %s%s",
            letter.id,
            letter.event_type,
            letter.event_id,
            len(json.dumps(event.data).encode()),
            letter.error_code,
            " (again)" if duplicate else "",
        )
        return DeadLetterStored(
            id=letter.id,
            event_id=letter.event_id,
            event_type=letter.event_type,
            duplicate=duplicate,
        )

    def search(self, params: DeadLetterListParams) -> Page[DeadLetterSummary]:
        return Page.of(self.dead_letters.search(params), params)

    def get(self, dead_letter_id: str) -> DeadLetter:
        letter = self.dead_letters.get(dead_letter_id)
        if letter is None:
            raise not_found("dead letter", dead_letter_id)
        return letter

    async def replay(self, dead_letter_id: str) -> DeadLetter:
        """Hand the event to its channel's consumer and keep the outcome: taken (the letter is
        `replayed`, with the consumer's answer) or refused as the consumer refuses a bad event
        (it stays `dead`, with why). A failure that a retry may cure (a 5xx: the database is
        down) is the replay's own answer and records nothing."""
        letter = await anyio.to_thread.run_sync(self.get, dead_letter_id)
        if letter.event_type not in CONSUMERS:
            raise Conflict(
                f"No channel consumes events of type {letter.event_type!r}.",
                code="no_consumer",
                details={"event_type": letter.event_type},
            )
        channel, consume = CONSUMERS[letter.event_type]
        replay = await _replayed(channel, consume, letter.data)
        logger.info(
            "dead letter %s: replayed %s event %s: %s",
            letter.id,
            letter.event_type,
            letter.event_id,
            "taken" if replay.taken else replay.error and replay.error.code,
        )
        recorded = await anyio.to_thread.run_sync(
            self.dead_letters.record_replay, dead_letter_id, replay
        )
        if recorded is None:
            raise not_found("dead letter", dead_letter_id)
        return recorded

    def delete(self, dead_letter_id: str) -> None:
        if not self.dead_letters.delete(dead_letter_id):
            raise not_found("dead letter", dead_letter_id)


async def _replayed(channel: Channel[Any], consume: Consumer[Any], data: Any) -> Replay:
    try:
        event = channel.model.model_validate(data)
    except ValidationError:
        error = ReplayError(code="invalid_event", message=f"The event is not a {channel.noun}.")
        return Replay(at=utc_now(), taken=False, error=error)
    try:
        result = await consume(event)
    except AppError as exc:
        if exc.status >= 500:
            raise
        return Replay(
            at=utc_now(), taken=False, error=ReplayError(code=exc.code, message=exc.message)
        )
    answer = result.model_dump(mode="json") if isinstance(result, BaseModel) else None
    return Replay(at=utc_now(), taken=True, result=answer)
