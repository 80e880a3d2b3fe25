"""Writing finished chat turns into dialogs: once per turn, whatever the delivery order or count."""

import logging

from shared.batching import Batcher
from shared.dialogs.models import MessageDraft
from shared.dialogs.repository import DialogRepository
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
        turns arriving out of order still read back in time order. A turn for a dialog that does
        not exist, or not in the project the event names, is not written (and not an error:
        retrying cannot help). Four round trips however many turns: the dialogs' projects are
        read first; a dialog deleted meanwhile is learnt from the summary update, and its turns
        (rare) are taken back.
        """
        owners = self.dialogs.owners(list({event.dialog_id for event in events}))
        writable = [
            index
            for index, event in enumerate(events)
            if owners.get(event.dialog_id) == event.project_id
        ]
        # Messages inserted per writable turn, by its place in `events`: a turn delivered twice
        # in one batch is new once and a duplicate once.
        inserted = dict(
            zip(
                writable,
                self.dialogs.add_turns(
                    [(events[index].dialog_id, turn_messages(events[index])) for index in writable]
                ),
                strict=True,
            )
        )
        activity = [
            (events[index].dialog_id, moment)
            for index in writable
            for moment in (events[index].user_at, events[index].assistant_at)
        ]
        gone = self.dialogs.record_activity(activity) if activity else set()
        self.dialogs.delete_turns(
            [
                (events[i].dialog_id, events[i].turn_id)
                for i in writable
                if events[i].dialog_id in gone
            ]
        )
        return [
            _written(event, duplicate=inserted[index] == 0)
            if index in inserted and event.dialog_id not in gone
            else _not_written(event)
            for index, event in enumerate(events)
        ]


def _written(event: TurnEvent, duplicate: bool) -> TurnWritten:
    return TurnWritten(
        turn_id=event.turn_id, dialog_id=event.dialog_id, written=True, duplicate=duplicate
    )


def _not_written(event: TurnEvent) -> TurnWritten:
    logger.info(
        "history: dialog %s is not in project %s (or gone); turn %s not written",
        event.dialog_id,
        event.project_id,
        event.turn_id,
    )
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
