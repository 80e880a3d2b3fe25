"""Dialogs and their messages."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.bounds import StoredJson
from shared.deepseek.models import Usage
from shared.executions.inputs import Variables, WithVariables
from shared.models import InputModel, Model, Name
from shared.pagination import PageParams
from shared.prompts.models import LabelName, VersionChoice, VersionNumber

MessageRole = Literal["user", "assistant"]
MessageStatus = Literal["ok", "error", "cancelled"]


class PromptBinding(VersionChoice):
    """The prompt a dialog runs, at a version or label (default: production, else latest)."""

    prompt_id: str | None = None

    @model_validator(mode="after")
    def _selector_needs_prompt(self) -> "PromptBinding":
        if self.prompt_id is None and (self.version is not None or self.label is not None):
            raise ValueError("a version or label needs a prompt_id")
        return self


class DialogCreate(PromptBinding, WithVariables):
    """A new dialog; its `variables` fill the prompt's templates at every turn."""

    project_id: str
    title: Name | None = None


class DialogUpdate(InputModel):
    """Change the title, the bound prompt (`prompt_id: null` unbinds it) and/or the saved
    variables (replaced as a whole)."""

    title: Name | None = None
    variables: Variables | None = None
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
    variables: StoredJson
    message_count: int
    created_at: datetime
    updated_at: datetime


class MessageContent(Model):
    """What a stored message says, shared by the rendered `Message` and the writer's draft."""

    turn_id: str
    role: MessageRole
    content: str
    reasoning: str | None = None
    status: MessageStatus
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


class MessageDraft(MessageContent):
    """A message as the history writer stores it, before it has an id."""

    # The assistant's run (model, finish reason, error, cost, timings), kept for analysis; not
    # part of the rendered `Message`.
    run: dict[str, Any] | None = None
