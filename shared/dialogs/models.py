"""Dialogs, their messages, and the turn events the history queue carries."""

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from shared.deepseek.models import Usage
from shared.models import InputModel, Model, Name
from shared.pagination import PageParams
from shared.prompts.models import LabelName, VersionChoice, VersionNumber

MessageRole = Literal["user", "assistant"]
TurnStatus = Literal["ok", "error", "cancelled"]


class PromptBinding(VersionChoice):
    """The prompt a dialog runs, at a version or label (default: production, else latest)."""

    prompt_id: str | None = None

    @model_validator(mode="after")
    def _selector_needs_prompt(self) -> "PromptBinding":
        if self.prompt_id is None and (self.version is not None or self.label is not None):
            raise ValueError("a version or label needs a prompt_id")
        return self


class DialogCreate(PromptBinding):
    project_id: str
    title: Name | None = None


class DialogUpdate(InputModel):
    """Change the title and/or the bound prompt (`prompt_id: null` unbinds it)."""

    title: Name | None = None
    prompt_id: str | None = None
    version: VersionNumber | None = None
    label: LabelName | None = None


class Dialog(Model):
    id: str
    project_id: str
    prompt_id: str | None
    version: int | None
    label: str | None
    title: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime


class MessageContent(Model):
    """What a stored message says, shared by the rendered `Message` and the writer's draft."""

    turn_id: str
    role: MessageRole
    content: str
    reasoning: str | None = None
    status: TurnStatus
    created_at: datetime
    usage: Usage | None = None


class Message(MessageContent):
    id: str
    dialog_id: str


class DialogListParams(PageParams):
    project_id: str


class MessagePageParams(Model):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = None


class DialogWithMessages(Dialog):
    messages: list[Message]
    next_cursor: str | None


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
    user_at: datetime
    assistant_content: str
    assistant_reasoning: str | None = None
    assistant_at: datetime
    status: TurnStatus
    error: TurnError | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None

    model_config = ConfigDict(extra="ignore")


class MessageDraft(MessageContent):
    """A message as the history writer stores it, before it has an id."""

    # The assistant's run (model, finish reason, error, cost, timings), kept for analysis; not
    # part of the rendered `Message`.
    run: dict[str, Any] | None = None
