"""A finished chat turn as the history queue carries it, and what writing it gave."""

from typing import Literal

from pydantic import ConfigDict, Field

from shared.deepseek.models import Usage
from shared.dialogs.models import MessageStatus
from shared.models import Model, Moment


class TurnError(Model):
    code: str
    message: str


class TurnEvent(Model):
    """One finished chat turn, as published to the history queue; `turn_id` is its idempotency key.

    Written whatever the outcome: the user message always, the assistant message with the text
    received so far (empty when nothing came back).
    """

    turn_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    dialog_id: str = Field(min_length=1, max_length=64)
    project_id: str = Field(min_length=1, max_length=64)
    prompt_id: str | None = None
    prompt_version: int | None = None
    model: str | None = None
    user_content: str
    user_at: Moment
    assistant_content: str
    assistant_reasoning: str | None = None
    assistant_at: Moment
    status: MessageStatus
    error: TurnError | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None

    model_config = ConfigDict(extra="ignore")


class TurnWritten(Model):
    """The outcome of writing one turn: each is final, so the queue acknowledges every one."""

    turn_id: str
    dialog_id: str
    written: bool  # the turn's messages are in the history (now, or from an earlier delivery)
    duplicate: bool  # an earlier delivery had already written every message of the turn
    reason: Literal["dialog_not_found"] | None = None
