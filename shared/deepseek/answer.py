"""One streamed answer from DeepSeek, recorded as it arrives however it ends.

Executions and chat both stream an answer to a caller and must keep what came back even when
the upstream fails or the caller goes away; this is that shared piece.
"""

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from shared.deepseek.client import get_deepseek
from shared.deepseek.events import DoneData, ErrorData
from shared.deepseek.models import ChatCall, Delta, Finish, UpstreamChunk, Usage, UsageHook
from shared.errors import AppError
from shared.settings import get_settings

logger = logging.getLogger("better_assistant")

AnswerStatus = Literal["running", "ok", "error", "cancelled"]
# DeepSeek's rule of thumb for English text; used only for calls cut off before their usage.
CHARACTERS_PER_TOKEN = 4


@dataclass
class Answer:
    call: ChatCall
    output: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    # The functions the model called, each's arguments joined from its deltas (relayed calls).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish: Finish | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    status: AnswerStatus = "running"
    error: ErrorData | None = None
    # Records what the call cost once its final usage is in (the project's usage ledger).
    on_usage: UsageHook | None = None

    @property
    def text(self) -> str:
        return "".join(self.output)

    def failed_unexpectedly(self) -> None:
        """Mark the answer as failed by a bug (here or in whoever reads it), not by DeepSeek."""
        self.status = "error"
        self.error = ErrorData(code="internal_error", message="The answer failed unexpectedly.")

    @property
    def reasoning_text(self) -> str | None:
        return "".join(self.reasoning) or None

    @property
    def cost(self) -> float | None:
        """USD from the usage and the configured price of the model (None if unpriced)."""
        if self.finish is None:
            return None
        return self.cost_of(self.finish.usage, self.finish.model)

    def cost_of(self, usage: Usage, reported_model: str | None = None) -> float | None:
        """USD for `usage` at the price of the model called (None if unpriced)."""
        prices = get_settings().deepseek_prices
        price = prices.get(self.call.model) or prices.get(reported_model or "")
        return usage.cost(price) if price else None

    def estimated_usage(self) -> Usage:
        """What a call cut off before DeepSeek's final usage chunk used, from the characters
        sent and received; every prompt token counts as a cache miss, the dearer side."""
        sent = sum(len(message.get("content") or "") for message in self.call.messages)
        received = len(self.text) + len(self.reasoning_text or "")
        prompt = math.ceil(sent / CHARACTERS_PER_TOKEN)
        completion = math.ceil(received / CHARACTERS_PER_TOKEN)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_cache_miss_tokens=prompt,
        )

    def done(self) -> DoneData:
        return DoneData(
            finish_reason=self.finish.finish_reason if self.finish else None,
            usage=self.finish.usage if self.finish else None,
            cost=self.cost,
            ttft_ms=self.ttft_ms,
            latency_ms=self.latency_ms,
        )


def stream_answer(answer: Answer) -> AsyncIterator[Delta]:
    """The answer's deltas as they arrive, recorded into `answer`; failures are re-raised."""
    return _recorded(answer, get_deepseek().stream(answer.call), _take_delta)


def relay_answer(answer: Answer) -> AsyncIterator[UpstreamChunk]:
    """DeepSeek's chunks as they arrive, whole, recorded into `answer` as `stream_answer` does;
    tool calls included."""
    return _recorded(answer, get_deepseek().relay(answer.call), _take_chunk)


def _take_delta(answer: Answer, delta: Delta) -> bool:
    (answer.output if delta.kind == "content" else answer.reasoning).append(delta.text)
    return True


def _take_chunk(answer: Answer, chunk: UpstreamChunk) -> bool:
    """Record what the chunk says; whether it said anything of the answer (its first token)."""
    said = False
    for choice in chunk.data.get("choices") or ():
        delta = choice.get("delta") or {}
        if content := delta.get("content"):
            answer.output.append(content)
            said = True
        if reasoning := delta.get("reasoning_content"):
            answer.reasoning.append(reasoning)
            said = True
        for call in delta.get("tool_calls") or ():
            _add_tool_call_delta(answer.tool_calls, call)
            said = True
    return said


def _add_tool_call_delta(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    """A tool call's delta merged into the calls so far: the first names it, the next ones
    carry pieces of its arguments."""
    index = delta.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    call = calls[index]
    call["id"] = delta.get("id") or call["id"]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


async def _recorded(
    answer: Answer,
    items: AsyncIterator[Any],
    take: Callable[[Answer, Any], bool],
) -> AsyncIterator[Any]:
    """The items of the call as they arrive, each recorded into `answer` by `take`; failures are
    re-raised.

    Every DeepSeek call goes through here, so this is where a finished call's usage is metered.
    """
    started = time.perf_counter()
    try:
        async for item in items:
            if isinstance(item, Finish):
                answer.finish = item
                continue
            if take(answer, item) and answer.ttft_ms is None:
                answer.ttft_ms = round((time.perf_counter() - started) * 1000, 3)
            yield item
    except AppError as exc:
        answer.status = "error"
        answer.error = ErrorData(code=exc.code, message=exc.message, retry_after=exc.retry_after)
        await _record_cut_off(answer)
        raise
    except BaseException as exc:
        if isinstance(exc, (GeneratorExit, anyio.get_cancelled_exc_class())):
            answer.status = "cancelled"
            answer.error = ErrorData(code="cancelled", message="The client went away.")
        else:
            answer.failed_unexpectedly()
        await _record_cut_off(answer)
        raise
    finally:
        answer.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    answer.status = "ok"
    if answer.on_usage is not None and answer.finish is not None:
        await _record_usage(answer.on_usage, answer.finish.usage, answer.cost)


async def _record_cut_off(answer: Answer) -> None:
    """A call that streamed tokens and was cut off before its final usage chunk (the caller
    left, the stream broke) is still billed by DeepSeek: count its estimated usage."""
    if answer.on_usage is None or answer.finish is not None or answer.ttft_ms is None:
        return
    usage = answer.estimated_usage()
    await _record_usage(answer.on_usage, usage, answer.cost_of(usage))


async def _record_usage(on_usage: UsageHook, usage: Usage, cost: float | None) -> None:
    """Shielded, so a caller going away now still leaves the cost in the ledger; a failure to
    record is logged and never turns the answer into an error."""
    with anyio.CancelScope(shield=True):
        try:
            await on_usage(usage, cost)
        except Exception:
            logger.exception("the usage of a finished call was not recorded")


async def answer_events(
    answer: Answer, meta: dict[str, Any], on_end: Callable[[Answer], Awaitable[None]]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Stream events: `meta`, the deltas, then `done` or `error`.

    `on_end` (storing or publishing what came back) runs however the answer ended — even when
    the caller went away — and before the last event, so what that event reports is stored.
    """
    yield "meta", meta
    try:
        # Closed here, not left to the garbage collector, when these events are closed between
        # two of them (their client left while one was being sent): the upstream call is cut
        # and the answer known as cancelled before `on_end` stores it.
        async with contextlib.aclosing(stream_answer(answer)) as deltas:
            async for delta in deltas:
                yield delta.kind, {"delta": delta.text}
    except Exception:
        if answer.error is None or answer.error.code == "internal_error":
            logger.exception("streamed answer failed")
    finally:
        with anyio.CancelScope(shield=True):
            await on_end(answer)
    if answer.status == "ok":
        yield "done", answer.done().model_dump()
    else:
        error = answer.error or ErrorData(code="internal_error", message="The answer failed.")
        yield "error", error.model_dump(exclude_none=True)
