"""The history channel: finished chat turns, consumed by the `history-writer` function."""

import anyio

from shared.dialogs.models import TurnEvent
from shared.history.models import TurnWritten
from shared.history.writer import HistoryWriter
from shared.queues.channel import Channel


def _turn_id(turn: TurnEvent) -> str:
    return turn.turn_id


def _dialog_id(turn: TurnEvent) -> str:
    return turn.dialog_id


async def write_turn(turn: TurnEvent) -> TurnWritten:
    """Write a turn in a worker thread (the history writer is synchronous pymongo)."""
    # Built at write time: the writer uses the settings (and database) current when it runs.
    return await anyio.to_thread.run_sync(lambda: HistoryWriter().write_turn(turn))


TURNS: Channel[TurnEvent] = Channel(
    name="history",
    consumer="history-writer",
    event_type="com.better-assistant.turn.completed",
    source="/chat",
    noun="turn",
    model=TurnEvent,
    event_id=_turn_id,
    subject=_dialog_id,
    consume=write_turn,
)
