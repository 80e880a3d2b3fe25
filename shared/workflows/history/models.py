"""What the history writer answers for each turn it is given."""

from typing import Literal

from shared.models import Model


class TurnWritten(Model):
    """The outcome of writing one turn: each is final, so the queue acknowledges every one."""

    turn_id: str
    dialog_id: str
    written: bool  # the turn's messages are in the history (now, or from an earlier delivery)
    duplicate: bool  # an earlier delivery had already written every message of the turn
    reason: Literal["dialog_not_found"] | None = None
