"""The history channel: finished chat turns, addressed to the `history-writer` function."""

from shared.queues.channel import Channel
from shared.workflows.history.models import TurnEvent


def _turn_id(turn: TurnEvent) -> str:
    return turn.turn_id


def _dialog_id(turn: TurnEvent) -> str:
    return turn.dialog_id


TURNS: Channel[TurnEvent] = Channel(
    name="history",
    function="history-writer",
    event_type="com.better-assistant.turn.completed",
    source="/chat",
    noun="turn",
    model=TurnEvent,
    event_id=_turn_id,
    subject=_dialog_id,
)
