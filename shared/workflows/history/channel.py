"""The history channel: finished chat turns, consumed by the `history-writer` function."""

from shared.batching import Batcher
from shared.dialogs.models import TurnEvent
from shared.queues.channel import Channel
from shared.workflows.history.models import TurnWritten
from shared.workflows.history.writer import HistoryWriter


def _turn_id(turn: TurnEvent) -> str:
    return turn.turn_id


def _dialog_id(turn: TurnEvent) -> str:
    return turn.dialog_id


# Turns are written in a worker thread (the history writer is synchronous pymongo), together
# with the turns that finished meanwhile: the same few round trips serve them all. The writer is
# built for each batch, so it uses the settings (and database) current when it runs.
_turns: Batcher[TurnEvent, TurnWritten] = Batcher(
    lambda turns: HistoryWriter().write_turns(turns), max_batch=100
)


TURNS: Channel[TurnEvent] = Channel(
    name="history",
    consumer="history-writer",
    event_type="com.better-assistant.turn.completed",
    source="/chat",
    noun="turn",
    model=TurnEvent,
    event_id=_turn_id,
    subject=_dialog_id,
    consume=_turns.submit,
)
