"""Writing finished chat turns into dialogs: once per turn, whatever the delivery order or count."""

import logging
from datetime import datetime

from bson import ObjectId

from shared.batching import Batcher
from shared.db import to_object_id
from shared.dialogs.models import MessageDraft
from shared.dialogs.repository import DialogRepository, stored_time
from shared.workflows.history.models import TurnEvent, TurnWritten

logger = logging.getLogger("better_assistant.history")

# What the assistant message keeps of the run, for analysis (not rendered in `Message`).
_RUN_FIELDS = {
    "prompt_id",
    "prompt_version",
    "model",
    "error",
    "finish_reason",
    "cost",
    "ttft_ms",
    "latency_ms",
}


def turn_messages(event: TurnEvent) -> list[MessageDraft]:
    """The user message and the assistant message (the text received so far) of a turn."""
    user = MessageDraft(
        turn_id=event.turn_id,
        role="user",
        content=event.user_content,
        status="ok",
        created_at=event.user_at,
    )
    assistant = MessageDraft(
        turn_id=event.turn_id,
        role="assistant",
        content=event.assistant_content,
        reasoning=event.assistant_reasoning,
        status=event.status,
        created_at=event.assistant_at,
        usage=event.usage,
        run=event.model_dump(include=_RUN_FIELDS, exclude_none=True),
    )
    return [user, assistant]


class HistoryWriter:
    def __init__(self) -> None:
        self.dialogs = DialogRepository()

    def write_turn(self, event: TurnEvent) -> TurnWritten:
        return self.write_turns([event])[0]

    def write_turns(self, events: list[TurnEvent]) -> list[TurnWritten]:
        """Store each turn's two messages once and refresh its dialog's count and activity time.

        Idempotent by turn id: a redelivery inserts nothing and leaves the summary as it was;
        turns arriving out of order still read back in time order. A turn for a dialog that no
        longer exists is not written (and not an error: retrying cannot help). Three round trips
        however many turns: the dialogs' existence is learnt from the summary update, and turns
        written for a dialog that is gone (rare) are taken back, rather than checked first.
        """
        dialog_ids = [to_object_id(event.dialog_id) for event in events]
        writable = [index for index, dialog_id in enumerate(dialog_ids) if dialog_id is not None]
        # Messages inserted per writable turn, by its place in `events`: a turn delivered twice
        # in one batch is new once and a duplicate once.
        inserted = dict(
            zip(
                writable,
                self.dialogs.add_turns(
                    [(dialog_ids[index], turn_messages(events[index])) for index in writable]
                ),
                strict=True,
            )
        )
        latest: dict[ObjectId, datetime] = {}
        for index in writable:
            event, dialog_id = events[index], dialog_ids[index]
            at = max(stored_time(event.user_at), stored_time(event.assistant_at))
            latest[dialog_id] = max(at, latest.get(dialog_id, at))
        gone = self.dialogs.record_activity(latest) if latest else set()
        self.dialogs.delete_turns(
            [(dialog_ids[i], events[i].turn_id) for i in writable if dialog_ids[i] in gone]
        )
        return [
            _written(event, duplicate=inserted[index] == 0)
            if index in inserted and dialog_ids[index] not in gone
            else _not_written(event)
            for index, event in enumerate(events)
        ]


def _written(event: TurnEvent, duplicate: bool) -> TurnWritten:
    return TurnWritten(
        turn_id=event.turn_id, dialog_id=event.dialog_id, written=True, duplicate=duplicate
    )


def _not_written(event: TurnEvent) -> TurnWritten:
    logger.info("history: dialog %s is gone; turn %s not written", event.dialog_id, event.turn_id)
    return TurnWritten(
        turn_id=event.turn_id,
        dialog_id=event.dialog_id,
        written=False,
        duplicate=False,
        reason="dialog_not_found",
    )


# Turns are written in a worker thread (the history writer is synchronous pymongo), together
# with the turns that finished meanwhile: the same few round trips serve them all. The writer is
# built for each batch, so it uses the settings (and database) current when it runs.
_turns: Batcher[TurnEvent, TurnWritten] = Batcher(
    lambda turns: HistoryWriter().write_turns(turns), max_batch=100
)


async def consume_turn(event: TurnEvent) -> TurnWritten:
    """Write a turn from an event loop: what consuming the history channel means there (the
    local queue, a publisher's fallback, the SQS drain)."""
    return await _turns.submit(event)
