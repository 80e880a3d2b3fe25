"""A chat turn: the dialog's prompt and recent history in, DeepSeek's answer streamed out, and
the finished turn published to the history queue (never written on the stream's path)."""

import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from shared.access.models import Actor
from shared.db import utc_now
from shared.deepseek.answer import Answer, answer_events
from shared.dialogs.models import Dialog, DialogCreate, Message
from shared.dialogs.service import DialogService, check_saved_variables
from shared.errors import not_found
from shared.metering.models import Payer
from shared.metering.service import Metering, bounded_call
from shared.projects.service import ProjectService
from shared.prompts.models import PromptRecord, PromptVersion
from shared.prompts.rendering import render_messages
from shared.prompts.service import PromptService
from shared.queues.publishers import publisher_for
from shared.settings import get_settings
from shared.workflows.chat.models import ChatMeta, ChatRequest
from shared.workflows.history.channel import TURNS
from shared.workflows.history.models import TurnEvent
from shared.workflows.history.writer import consume_turn

_CHARS_PER_TOKEN = 4
_TITLE_LENGTH = 60


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def history_window(messages: list[Message], max_tokens: int) -> list[dict[str, str]]:
    """The newest messages that fit the token budget, oldest first, as model messages.

    Only content goes back to the model — never reasoning (DeepSeek refuses it) — and an
    assistant message that produced no text is left out. The window starts at a user message,
    so the model never sees an answer without its question.
    """
    window: list[dict[str, str]] = []
    budget = max_tokens
    for message in reversed(messages):
        if message.role == "assistant" and not message.content:
            continue
        cost = estimated_tokens(message.content)
        if cost > budget:
            break
        budget -= cost
        window.append({"role": message.role, "content": message.content})
    window.reverse()
    while window and window[0]["role"] == "assistant":
        window.pop(0)
    return window


def compose_messages(
    version: PromptVersion | None,
    variables: dict[str, Any],
    history: list[dict[str, str]],
    user_input: str,
) -> list[dict[str, str]]:
    """The prompt's messages, then the history, then the turn (`shared.prompts.rendering`);
    without a prompt, the history and the input."""
    if version is None:
        return [*history, {"role": "user", "content": user_input}]
    return render_messages(version, variables, user_input, history)


@dataclass
class Turn:
    dialog: Dialog
    turn_id: str
    user_input: str
    user_at: datetime
    prompt_version: int | None
    answer: Answer


class ChatService:
    def __init__(self) -> None:
        self.projects = ProjectService()
        self.prompts = PromptService(self.projects)
        self.dialogs = DialogService(self.projects, self.prompts)
        self.metering = Metering()

    def prepare(self, request: ChatRequest, actor: Actor) -> Turn:
        """Open the dialog (or check a new one), load its prompt and history, admit the call
        against the project's limits, and only then store a new dialog and build the call."""
        settings = get_settings()
        recent: list[Message] = []
        binding: Dialog | DialogCreate
        if request.dialog_id is not None:
            # The prompt's record comes through the prompt service's repository, so the
            # version lookup that follows may be served from memory.
            binding, recent, record = self.dialogs.get_for_turn(
                request.dialog_id, settings.chat_history_max_messages, self.prompts.prompts
            )
            project = self.projects.get_recent(binding.project_id)
        else:
            binding = DialogCreate(
                project_id=request.project_id or "",
                prompt_id=request.prompt_id,
                version=request.version,
                label=request.label,
                title=request.title or request.input[:_TITLE_LENGTH].strip() or None,
                variables=request.variables if request.save_variables else {},
            )
            project, record = self.dialogs.check_new(binding)
        version = self._bound_version(binding, record)
        history = history_window(recent, settings.chat_history_max_tokens)
        variables = {**binding.variables, **request.variables}
        if request.save_variables and request.variables:
            check_saved_variables(variables)
        messages = compose_messages(version, variables, history, request.input)
        payer = Payer(project.id, actor)
        call = bounded_call(
            version.config if version else {}, request.config, project.limits, messages
        )
        self.metering.admit(payer, project.limits)
        # A new dialog is stored, and new variables saved, only once the turn is admitted.
        if isinstance(binding, Dialog):
            dialog = binding
            if request.save_variables:
                self.dialogs.remember_variables(dialog, request.variables)
        else:
            dialog = self.dialogs.insert_checked(binding)
        return Turn(
            dialog=dialog,
            turn_id=uuid.uuid4().hex,
            user_input=request.input,
            user_at=utc_now(),
            prompt_version=version.version if version else None,
            answer=Answer(call, on_usage=self.metering.recorder(payer)),
        )

    def _bound_version(
        self, binding: Dialog | DialogCreate, record: PromptRecord | None
    ) -> PromptVersion | None:
        """The version the dialog's prompt binding names right now (labels can move), from the
        prompt's record read with the dialog."""
        if binding.prompt_id is None:
            return None
        if record is None:  # the bound prompt was deleted
            raise not_found("prompt", binding.prompt_id)
        return self.prompts.version_of(record, binding.version, binding.label)

    async def start(self, request: ChatRequest, actor: Actor) -> Turn:
        """`prepare` off the event loop."""
        return await anyio.to_thread.run_sync(self.prepare, request, actor)

    def stream_events(self, turn: Turn) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        meta = ChatMeta(
            dialog_id=turn.dialog.id,
            turn_id=turn.turn_id,
            prompt_id=turn.dialog.prompt_id,
            prompt_version=turn.prompt_version,
            model=turn.answer.call.model,
        )
        return answer_events(turn.answer, meta.model_dump(), lambda _: publish_turn(turn))


async def publish_turn(turn: Turn) -> None:
    """Hand the finished turn to the history queue, whatever its outcome."""
    answer = turn.answer
    done = answer.done()
    event = TurnEvent(
        turn_id=turn.turn_id,
        dialog_id=turn.dialog.id,
        project_id=turn.dialog.project_id,
        prompt_id=turn.dialog.prompt_id,
        prompt_version=turn.prompt_version,
        model=answer.call.model,
        user_content=turn.user_input,
        user_at=turn.user_at,
        assistant_content=answer.text,
        assistant_reasoning=answer.reasoning_text,
        assistant_at=utc_now(),
        # A stream cancelled before the answer even started has no other status to report.
        status="cancelled" if answer.status == "running" else answer.status,
        error=answer.error.model_dump() if answer.error else None,
        finish_reason=done.finish_reason,
        usage=done.usage,
        cost=done.cost,
        ttft_ms=done.ttft_ms,
        latency_ms=done.latency_ms,
    )
    await publisher_for(TURNS, consume_turn).publish(event)
