"""The DeepSeek client: the official `openai` SDK pointed at DeepSeek's (or any compatible) URL.

The SDK holds the configuration (auth, base URL, timeouts, its aiohttp transport), sends each call
through its public `post` verb and turns error statuses into its typed exceptions. Answers are
always streamed and read as raw SSE bytes, each event parsed once — the cheapest way through, and
it gives every call a time to first token. Retries happen only before the first token, and only for
errors worth retrying.
"""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import httpx2
import openai
import orjson

from shared.clients import loop_client
from shared.deepseek import errors
from shared.deepseek.models import ChatCall, Delta, Finish, UpstreamChunk, Usage
from shared.settings import Settings, get_settings

_REQUEST_PARAMETERS = (
    "thinking",
    "temperature",
    "top_p",
    "max_tokens",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "response_format",
    # What an OpenAI-compatible caller may set besides (`shared.workflows.openai_api`); the
    # upstream judges.
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "seed",
    "logprobs",
    "top_logprobs",
    "user",
)
# A Retry-After longer than this is not waited out inside a request; the caller gets the 429.
_MAX_RETRY_WAIT_S = 20.0
# Added to the SDK's own headers (auth, user agent, JSON content type) on every chat call.
_STREAM_HEADERS = {
    "Accept": "text/event-stream",
    # Events are small and come one by one: compressing them gains nothing, and an uncompressed
    # body is read as it arrives, without two layers of decoding per chunk.
    "Accept-Encoding": "identity",
}


# What a streamed answer is read as: deltas of text, or DeepSeek's chunks whole.
Item = TypeVar("Item", Delta, UpstreamChunk)


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _failure_reason(exc: Exception) -> str:
    """What the log says of a failed call: a transport error's own words, else the failure's
    type (`errors` keeps both from the caller).

    The SDK's connection errors say only "Connection error."; the transport's words are its cause.
    """
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    if isinstance(exc, httpx2.TransportError) and str(exc):
        return str(exc)
    return type(exc).__name__


def _status_error(exc: openai.APIStatusError) -> errors.UpstreamError:
    body = exc.body if isinstance(exc.body, dict) else {}
    upstream = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    message = upstream.get("message") or exc.message
    return errors.from_status(exc.status_code, str(message), _retry_after(exc.response))


class DeepSeekClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        key = settings.deepseek_api_key
        self.configured = key is not None
        # Reads are bounded by the stream's own watchdog (first token, then idle time): a
        # transport read timeout would start and cancel a timer for every chunk as well.
        timeout = openai.Timeout(
            connect=settings.deepseek_connect_timeout_s,
            read=None,
            write=30,
            pool=settings.deepseek_first_token_timeout_s,
        )
        self._sdk = openai.AsyncOpenAI(
            api_key=key.get_secret_value() if key else "not-configured",
            base_url=settings.deepseek_base_url,
            # Retries are ours: only before the first token, by the rules of `_retry_wait`.
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
            timeout=timeout,
        )

    async def close(self) -> None:
        await self._sdk.close()

    def stream(self, call: ChatCall) -> AsyncIterator[Delta | Finish]:
        """Deltas as they arrive, then one Finish; raises UpstreamError on any failure."""
        return self._read(call, _StreamedAnswer)

    def relay(self, call: ChatCall) -> AsyncIterator[UpstreamChunk | Finish]:
        """Every chunk as DeepSeek sent it (its JSON text and parsed), then one Finish: for
        callers that pass DeepSeek's own wire format on; raises UpstreamError on any failure."""
        return self._read(call, _RelayedAnswer)

    async def _read(
        self, call: ChatCall, reader: "type[_StreamedAnswer[Item]]"
    ) -> AsyncIterator[Item | Finish]:
        """The items `reader` makes of the answer, then one Finish.

        Retries happen only before the first item, so reading and retrying share one loop;
        each chunk costs a read of the body, one parse and a watchdog update.
        """
        if not self.configured:
            raise errors.not_configured()
        loop = asyncio.get_running_loop()
        first_token_s = self.settings.deepseek_first_token_timeout_s
        idle_s = self.settings.deepseek_idle_timeout_s
        attempt = 0
        while True:
            got_token = False
            answer = reader(call.model)
            deadline = loop.time() + first_token_s
            watchdog = _Watchdog(loop)
            try:
                watchdog.watch(deadline)
                response = await self._send(call)
                watchdog.rest()
                try:
                    read = _body_reader(response)
                    while not answer.done:
                        watchdog.watch(deadline)
                        chunk = await read()
                        watchdog.rest()
                        if not chunk:
                            break
                        for item in answer.feed(chunk):
                            got_token = True
                            yield item
                        if got_token:
                            deadline = loop.time() + idle_s
                finally:
                    await response.aclose()
            except asyncio.CancelledError as exc:
                if not watchdog.expired():
                    raise
                error = self._timed_out(got_token)
                error.__cause__ = exc
            except openai.APIStatusError as exc:
                error = _status_error(exc)
                error.__cause__ = exc
            except openai.APIConnectionError as exc:  # a timeout to connect included
                error = errors.unreachable(_failure_reason(exc))
                error.__cause__ = exc
            except (httpx2.HTTPError, ValueError) as exc:
                reason = _failure_reason(exc)
                error = errors.stream_broken(reason) if got_token else errors.unreachable(reason)
                error.__cause__ = exc
            else:
                if not answer.complete:
                    raise errors.stream_broken("the stream ended before the answer was complete")
                yield answer.finish()
                return
            finally:
                watchdog.close()
            # Only a call that has not answered yet is tried again: a retry after the first
            # token would send the caller the start of a second, different answer.
            wait = None if got_token else self._retry_wait(error, attempt)
            if wait is None:
                raise error
            attempt += 1
            await asyncio.sleep(wait)

    def _timed_out(self, got_token: bool) -> errors.UpstreamError:
        if got_token:
            return errors.timed_out(
                f"DeepSeek sent nothing for {self.settings.deepseek_idle_timeout_s:g} s "
                "in the middle of the answer."
            )
        return errors.timed_out(
            "DeepSeek sent no first token within "
            f"{self.settings.deepseek_first_token_timeout_s:g} s."
        )

    def _retry_wait(self, error: errors.UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when it should not be retried."""
        if not error.retryable or attempt >= self.settings.deepseek_max_retries:
            return None
        if error.retry_after_s is not None and error.retry_after_s > _MAX_RETRY_WAIT_S:
            return None
        backoff = self.settings.deepseek_retry_backoff_s * 2**attempt
        return max(error.retry_after_s or 0.0, backoff * random.uniform(0.8, 1.2))

    async def _send(self, call: ChatCall) -> httpx2.Response:
        """The response to one call, its body not read yet.

        An error status raises the SDK's typed `APIStatusError`, a failure to connect its
        `APIConnectionError` (`APITimeoutError` for a timeout).
        """
        return await self._sdk.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            content=orjson.dumps(request_body(call)),
            stream=True,
            options={"headers": _STREAM_HEADERS},
        )


def _body_reader(response: httpx2.Response) -> Callable[[], Awaitable[bytes]]:
    """What reads the body's next bytes as they arrive (b"" at its end).

    The body asked for uncompressed is read raw, without a pass through a decoder per chunk; a
    server that compresses it anyway is decoded.
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    chunks = response.aiter_raw() if encoding == "identity" else response.aiter_bytes()
    return lambda: anext(chunks, b"")


class _StreamedAnswer(Generic[Item]):
    """What a streamed answer has said so far, fed the body's bytes as they arrive: each SSE
    `data:` line parsed once, and the deltas of its content and reasoning made of it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.done = False  # `data: [DONE]` came
        self._pending = b""

    @property
    def complete(self) -> bool:
        return self.done or self.finish_reason is not None

    def feed(self, chunk: bytes) -> list[Item]:
        """The items the chunk completes; raises ValueError for a line that is not JSON."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        items: list[Item] = []
        for line in lines:
            # Blank separators and ": keep-alive" comments carry no data.
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            data = orjson.loads(payload)
            for choice in data.get("choices") or ():
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if data.get("usage"):
                self.usage = Usage.from_upstream(data["usage"])
            self.model = data.get("model") or self.model
            self._collect(payload, data, items)
        return items

    def _collect(self, payload: bytes, data: dict[str, Any], items: list[Item]) -> None:
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if reasoning := delta.get("reasoning_content"):
                items.append(Delta("reasoning", reasoning))
            if content := delta.get("content"):
                items.append(Delta("content", content))

    def finish(self) -> Finish:
        return Finish(self.finish_reason, self.usage, self.model)


class _RelayedAnswer(_StreamedAnswer[UpstreamChunk]):
    """As `_StreamedAnswer`, every chunk kept whole: its JSON text to pass on, and parsed."""

    def _collect(self, payload: bytes, data: dict[str, Any], items: list[UpstreamChunk]) -> None:
        items.append(UpstreamChunk(payload, data))


class _Watchdog:
    """Cancels a read from DeepSeek that is still waiting once its deadline has passed.

    One timer serves the whole answer: moving the deadline later, once per chunk, is an
    assignment rather than a timer started and cancelled, and the timer re-arms itself when it
    fires early. A deadline moved earlier (the idle timeout once the first token is in, shorter
    than the first-token one) re-arms it at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline = 0.0
        self._reader: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False

    def watch(self, deadline: float) -> None:
        """The current task now waits for DeepSeek, until `deadline` at the latest."""
        self._deadline = deadline
        self._reader = asyncio.current_task()
        if self._timer is None or deadline < self._timer.when():
            self.close()
            self._timer = self._loop.call_at(deadline, self._check)

    def rest(self) -> None:
        """DeepSeek answered; what the caller does with it is not DeepSeek's time."""
        self._reader = None

    def expired(self) -> bool:
        """Whether the cancellation being handled is this watchdog's own, which it takes back;
        a cancellation from elsewhere arriving as well still stands."""
        if not self._fired or self._reader is None:
            return False
        return self._reader.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._reader is None:
            return  # nobody waits: the next `watch` arms the timer again
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._fired = True
        self._reader.cancel()


def request_body(call: ChatCall) -> dict[str, Any]:
    """The chat completion request, sent as is: the SDK's per-field transform costs more than
    the whole rest of a streamed call, and the body needs none."""
    body: dict[str, Any] = {
        "model": call.model,
        "messages": call.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update((name, call.params[name]) for name in _REQUEST_PARAMETERS if name in call.params)
    return body


def get_deepseek() -> DeepSeekClient:
    """The client for the current settings and event loop, built on first use and then reused:
    the SDK's connection pool belongs to one event loop, and a process serving requests has one."""
    settings = get_settings()
    return loop_client("deepseek", settings, lambda: DeepSeekClient(settings))
