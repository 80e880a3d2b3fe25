"""Writing finished chat turns into dialogs: once per turn, whatever the delivery order or count."""

import logging

from shared.dialogs.models import MessageDraft, TurnEvent
from shared.dialogs.repository import DialogRepository, stored_time
from shared.history.models import TurnWritten

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
        """Store a turn's two messages once and refresh the dialog's count and activity time.

        Idempotent by turn id: a redelivery inserts nothing and leaves the summary as it was;
        turns arriving out of order still read back in time order. A turn for a dialog that no
        longer exists is not written (and not an error: retrying cannot help).
        """
        # Three round trips: the dialog's existence is learnt from the summary update, and a
        # turn written for a dialog that is gone (rare) is taken back, rather than checked first.
        inserted = self.dialogs.add_messages(event.dialog_id, turn_messages(event))
        latest = max(stored_time(event.user_at), stored_time(event.assistant_at))
        if not self.dialogs.record_activity(event.dialog_id, latest):
            self.dialogs.delete_turn(event.dialog_id, event.turn_id)
            return _not_written(event)
        return TurnWritten(
            turn_id=event.turn_id, dialog_id=event.dialog_id, written=True, duplicate=inserted == 0
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
