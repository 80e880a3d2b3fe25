"""The OpenAI-compatible API over managed prompts: a call names a prompt as its `model`, is
rendered from it, sent to DeepSeek, streamed back in OpenAI's wire format and recorded as an
execution, under the project's budget and rate limits.

Precedence, from weakest to strongest: the deployment's default model, the prompt version's
stored config, then every parameter the caller sets explicitly. The prompt's messages open the
conversation (its system messages first), the caller's messages follow.
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError

from shared.access.models import Actor
from shared.caching import ExpiringCache
from shared.deepseek.answer import relay_answer
from shared.deepseek.models import ChatCall
from shared.errors import AppError, NotFound
from shared.executions.models import ExecutionDraft, RenderedMessage
from shared.executions.planning import default_run_label
from shared.executions.service import ExecutionService, Run
from shared.metering.service import bounded_params
from shared.projects.service import ProjectService
from shared.prompts.models import PromptRecord, PromptVersion
from shared.prompts.rendering import render_messages
from shared.prompts.service import PromptService
from shared.settings import get_settings
from shared.workflows.openai_api import wire
from shared.workflows.openai_api.errors import model_not_found, unsupported
from shared.workflows.openai_api.models import (
    CallerMessage,
    ChatCompletionRequest,
    ContentPart,
    InputItem,
    ModelEntry,
    ModelList,
    ResponseRequest,
)

logger = logging.getLogger("better_assistant")
SOURCE = "openai"
# Every answer names its execution record, failures included.
EXECUTION_HEADER = "X-Execution-Id"
# More prompts than anyone lists as models; the list stays one bounded read.
MAX_LISTED_PROMPTS = 5000
# A label moved or a prompt deleted reaches this API's calls within this, on every replica (as a
# revoked key or a project's new limits do): the hot path then reads no prompt from MongoDB.
RECENT_TARGET_S = 5.0
# Version numbers stay below 2**31.
_MAX_VERSION_DIGITS = 9
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
# OpenAI's parameters asking for what DeepSeek cannot do, with what to tell the caller.
_UNSUPPORTED = {
    "audio": "Audio output is not supported.",
    "prediction": "Predicted outputs are not supported.",
    "logit_bias": "logit_bias is not supported by DeepSeek.",
    "web_search_options": "Web search is not supported.",
    "reasoning_effort": "reasoning_effort is not supported; DeepSeek takes `thinking`.",
}
# Parameters passed on as the caller set them (after the prompt's config).
_CHAT_PARAMETERS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "user",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "thinking",
)


@dataclass(frozen=True)
class Target:
    """What a call's `model` names: a version of a prompt, or a plain model id."""

    record: PromptRecord | None = None
    version: PromptVersion | None = None
    label: str | None = None
    model: str | None = None


class OpenAIService:
    def __init__(self) -> None:
        self.projects = ProjectService()
        self.prompts = PromptService(self.projects)
        self.executions = ExecutionService(self.prompts, self.projects)

    @classmethod
    async def begin(cls, open_run: "Callable[[OpenAIService], Run]") -> "tuple[OpenAIService, Run]":
        """A service and the run `open_run` opens with it, both made off the event loop in one
        trip; the run's record is stored while its call goes out."""

        def build_and_open() -> tuple[OpenAIService, Run]:
            service = cls()
            return service, open_run(service)

        service, run = await anyio.to_thread.run_sync(build_and_open)
        service.executions.store_running(run)
        return service, run

    def models(self, project_id: str) -> ModelList:
        """Every prompt of the project as `name` and `name@label` for each of its labels, then
        the configured DeepSeek models."""
        entries: list[ModelEntry] = []
        for record in self.prompts.records_in_project(project_id, MAX_LISTED_PROMPTS):
            created = int(record.created_at.timestamp())
            names = [record.name, *(f"{record.name}@{label}" for label in sorted(record.labels))]
            entries += [ModelEntry(id=name, created=created, owned_by="prompt") for name in names]
        entries += [ModelEntry(id=model, created=0, owned_by="deepseek") for model in _models()]
        return ModelList(data=entries)

    def model(self, project_id: str, model: str) -> ModelEntry:
        """One entry of `models`; 404 `model_not_found` for any other name."""
        for entry in self.models(project_id).data:
            if entry.id == model:
                return entry
        raise model_not_found(model)

    def open_chat(self, body: ChatCompletionRequest, project_id: str, actor: Actor) -> Run:
        """Resolve, render, admit and record a Chat Completions call (before any model call)."""
        _refuse_unsupported(body)
        explicit = body.model_dump(include=set(_CHAT_PARAMETERS), exclude_none=True)
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is not None:
            explicit["max_tokens"] = max_tokens
        messages = [_sent_message(message, index) for index, message in enumerate(body.messages)]
        target = self._target(project_id, body.model)
        return self._open(project_id, actor, target, body.variables, messages, explicit)

    def open_response(self, body: ResponseRequest, project_id: str, actor: Actor) -> Run:
        """As `open_chat`, for a Responses API call (`prompt` or `model` names the prompt)."""
        _refuse_unsupported_response(body)
        explicit = body.model_dump(
            include={"temperature", "top_p", "frequency_penalty", "presence_penalty", "seed"},
            exclude_none=True,
        )
        if body.user is not None:
            explicit["user"] = body.user
        if body.max_output_tokens is not None:
            explicit["max_tokens"] = body.max_output_tokens
        if body.text is not None and body.text.format is not None:
            explicit["response_format"] = wire.chat_response_format(body.text.format.model_dump())
        variables = dict(body.variables)
        if body.prompt is not None:
            variables.update(body.prompt.variables)
            target = self._target(project_id, body.prompt.id, body.prompt.version)
        elif body.model is not None:
            target = self._target(project_id, body.model)
        else:
            raise unsupported("model", "Name a prompt as `model`, or pass `prompt`.")
        messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
        messages += _input_messages(body.input)
        if not messages and target.record is None:
            raise unsupported("input", "Send an `input` for the model to answer.")
        return self._open(project_id, actor, target, variables, messages, explicit)

    def _open(
        self,
        project_id: str,
        actor: Actor,
        target: Target,
        variables: dict[str, Any],
        callers: list[dict[str, Any]],
        explicit: dict[str, Any],
    ) -> Run:
        limits = self.projects.get_recent(project_id).limits
        opening: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        if target.version is not None:
            rendered = render_messages(target.version, variables, None)
            # The prompt's system messages first, then its others, as the call's opening.
            opening = [m for m in rendered if m["role"] == "system"]
            opening += [m for m in rendered if m["role"] != "system"]
            params = dict(target.version.config)
        params.update(explicit)
        model = target.model or params.pop("model", None) or get_settings().deepseek_model
        params.pop("model", None)
        call = ChatCall(model, [*opening, *callers], bounded_params(params, limits, ("body",)))
        last_user = next((m for m in reversed(callers) if m["role"] == "user"), None)
        draft = ExecutionDraft(
            project_id=project_id,
            prompt_id=target.record.id if target.record else None,
            prompt_version=target.version.version if target.version else None,
            label=target.label,
            model=model,
            params=call.params,
            messages=[_recorded_message(message) for message in call.messages],
            variables=variables,
            input=last_user["content"] if last_user else None,
            source=SOURCE,
            actor=actor,
        )
        return self.executions.open_run(draft, limits, call)

    def _target(self, project_id: str, reference: str, selector: str | None = None) -> Target:
        """The prompt version (or model) a call names: `name`, `name@label`, `name@<number>`, a
        prompt id (Responses' `prompt.id`), or a configured model id; else 404. Resolved at
        most RECENT_TARGET_S ago in this process."""
        key = (get_settings().mongodb_db, project_id, reference, selector)
        return _recent_targets.get(key, lambda: self._resolve(project_id, reference, selector))

    def _resolve(self, project_id: str, reference: str, selector: str | None) -> Target:
        name = reference
        record = self.prompts.record_by_name(project_id, name)
        if record is None and selector is None and "@" in reference:
            # Not a prompt's whole name (which may hold an `@`, as `models` lists it): a selector
            # follows the last `@`.
            name, _, selector = reference.rpartition("@")
            record = self.prompts.record_by_name(project_id, name)
        if record is None and selector is None and reference in _models():
            return Target(model=reference)
        if record is None:
            record = self._record_by_id(project_id, name)
        if record is None:
            raise model_not_found(reference)
        number, label = None, selector
        if selector is not None and selector.isascii() and selector.isdigit():
            if len(selector) > _MAX_VERSION_DIGITS:
                raise model_not_found(f"{name}@{selector}")
            number, label = int(selector), None
        try:
            version = self.prompts.version_of(record, number, label)
        except (NotFound, ValidationError):
            # A selector no version or label can have (`name@0`, `name@`, `name@a.b`) names
            # nothing, as an unknown label does.
            raise model_not_found(reference if selector is None else f"{name}@{selector}") from None
        if number is None and label is None:
            label = default_run_label(record, version.version)
        return Target(record=record, version=version, label=label)

    def _record_by_id(self, project_id: str, prompt_id: str) -> PromptRecord | None:
        try:
            record = self.prompts.get_record(prompt_id)
        except NotFound:
            return None
        return record if record.project_id == project_id else None

    async def complete(self, run: Run) -> Run:
        """Receive the whole answer and record it; a failure is raised after recording."""
        try:
            async for _ in relay_answer(run.answer):
                pass
        except AppError as exc:
            exc.headers[EXECUTION_HEADER] = run.record.id
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.executions.record_outcome(run)
        return run

    async def frames(self, run: Run, presenter: wire.Presenter) -> AsyncIterator[bytes]:
        """The answer as SSE frames, as `presenter` words them, its end once the record is
        stored. A failure before the first frame is raised (the caller can still answer with
        its status); after it, the presenter's failure frames end the stream."""
        sent = False
        failure: AppError | None = None
        try:
            # Closed here, not left to the garbage collector, when this stream is closed between
            # two frames (its client left while one was being sent): the upstream call is cut
            # and the answer known as cancelled before it is recorded.
            async with contextlib.aclosing(relay_answer(run.answer)) as chunks:
                async for chunk in chunks:
                    frame = presenter.chunk(chunk.data)
                    if frame is not None:
                        sent = True
                        yield frame
        except AppError as exc:
            failure = exc
        except Exception:
            logger.exception("streamed answer failed")
            # A failure of this stream's own (its presenter) closed the upstream call as if its
            # client had left: the record says what happened.
            run.answer.failed_unexpectedly()
            failure = AppError("The answer failed unexpectedly.")
        finally:
            with anyio.CancelScope(shield=True):
                await self.executions.record_outcome(run)
        if failure is not None and not sent:
            failure.headers[EXECUTION_HEADER] = run.record.id
            raise failure
        for frame in presenter.end(run) if failure is None else presenter.failure(failure):
            yield frame


_recent_targets: ExpiringCache[tuple[str, str, str, str | None], Target] = ExpiringCache(
    RECENT_TARGET_S
)


def _models() -> list[str]:
    """The DeepSeek models this deployment calls: its default and every priced one."""
    settings = get_settings()
    return list(dict.fromkeys([settings.deepseek_model, *settings.deepseek_prices]))


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.stream_options is not None and not body.stream:
        raise unsupported("stream_options", "stream_options is only allowed with stream: true.")
    if body.n not in (None, 1):
        raise unsupported("n", "Only one choice per request is supported (n=1).")
    if body.modalities not in (None, ["text"]):
        raise unsupported("modalities", "Only text output is supported.")
    for param, message in _UNSUPPORTED.items():
        if getattr(body, param) is not None:
            raise unsupported(param, message)


def _refuse_unsupported_response(body: ResponseRequest) -> None:
    if body.previous_response_id is not None:
        raise unsupported(
            "previous_response_id",
            "Responses are not stored for chaining; send the whole conversation as `input`.",
        )
    if body.tools:
        raise unsupported("tools", "The Responses API here gives text output only.")
    if body.background:
        raise unsupported("background", "Background responses are not supported.")


def _text(content: str | list[ContentPart] | None, param: str) -> str | None:
    """A message's content as the text DeepSeek takes: text parts joined, others refused."""
    if content is None or isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise unsupported(f"{param}[{index}]", "Only text content parts can be sent.")
        texts.append(part.text)
    return "\n".join(texts)


def _sent_message(message: CallerMessage, index: int) -> dict[str, Any]:
    """The caller's message as DeepSeek takes it: a developer message is a system message,
    content parts become text, fields the message does not carry are left out."""
    sent: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": _text(message.content, f"messages[{index}].content"),
    }
    if message.name is not None:
        sent["name"] = message.name
    if message.tool_calls:
        sent["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        sent["tool_call_id"] = message.tool_call_id
    return sent


def _input_messages(items: str | list[InputItem] | None) -> list[dict[str, Any]]:
    """The Responses API's `input` as chat messages (text messages only)."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages = []
    for index, item in enumerate(items):
        if item.type != "message" or item.role is None:
            raise unsupported(f"input[{index}]", "Only message items are supported in `input`.")
        role = "system" if item.role == "developer" else item.role
        messages.append({"role": role, "content": _text(item.content, f"input[{index}].content")})
    return messages


def _recorded_message(message: dict[str, Any]) -> RenderedMessage:
    return RenderedMessage(
        role=message["role"],
        content=message.get("content") or "",
        tool_calls=message.get("tool_calls"),
        tool_call_id=message.get("tool_call_id"),
    )
