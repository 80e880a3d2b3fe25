"""Fake DeepSeek (OpenAI-compatible) HTTP server for tests, local dev and benchmarks.

Behaviour is driven by a `Scenario`: the server's `default_scenario`, or a per-request directive
`#fake{...json Scenario fields...}` written in a (non-assistant) message's content. Like a model,
it stops at the request's `max_tokens` (finish reason `length`), and without a directive it
answers a grading request (the judge's, asking for `{"pass": ..., "reason": ...}`) with a strict
verdict: a pass for a complete answer, a fail for one that is empty or stops mid-sentence.
Run standalone with `python -m devtools.fake_deepseek --port 8090`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar, get_origin, get_type_hints

T = TypeVar("T")

DIRECTIVE = "#fake{"
FINGERPRINT = "fp_fake_deepseek"
MODELS = ("deepseek-chat", "deepseek-reasoner")
REASONING_IN_INPUT = (
    "The reasoning_content is an intermediate result for display purposes only and will not be "
    "included in the context for inference. Please remove the reasoning_content from your input "
    "messages."
)
# status -> (error type, default message), after DeepSeek's documented error codes.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid Format: invalid request body format"),
    401: ("authentication_error", "Authentication Fails, Your api key is invalid"),
    402: ("unknown_error", "Insufficient Balance"),
    404: ("invalid_request_error", "Not Found"),
    422: ("invalid_request_error", "Invalid Parameters"),
    429: ("rate_limit_error", "Rate Limit Reached"),
    500: ("api_error", "Server Error"),
    503: ("api_error", "Server Overloaded"),
}
KEEPALIVE = b"e\r\n: keep-alive\n\n\r\n"  # pre-encoded chunked frames
DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
DISCONNECT_POLL_S = 0.05
_PIECE = re.compile(r"\S+\s*|\s+")
# What the judge's instructions ask for, and where its request puts the answer to grade.
VERDICT_REQUEST = '{"pass": true or false'
_GRADED_ANSWER = re.compile(r"<<<ANSWER TO GRADE>>>\n(.*)\n<<<END ANSWER TO GRADE>>>", re.S)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")


@dataclass
class Scenario:
    """How the fake answers a request."""

    reply: str = "Hello from the fake DeepSeek."
    reasoning: str | None = "Thinking it over briefly."
    tokens: int | None = None
    first_token_delay_s: float = 0.0
    token_interval_s: float = 0.0
    keepalive_interval_s: float | None = None
    status: int | None = None
    retry_after: int | None = None
    error_message: str | None = None
    fail_times: int | None = None
    cut_after_chunks: int | None = None
    finish_reason: str = "stop"
    cache_hit_tokens: int = 0
    echo: bool = False
    # Functions the model calls instead of answering: [{"name": ..., "arguments": "<json>"}].
    tool_calls: list[dict[str, str]] | None = None


@dataclass
class RequestRecord:
    """One request as received; `completed`/`disconnected` are updated while it is served."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    started_at: float = field(default_factory=time.time)
    completed: bool = False
    disconnected: bool = False


HINTS: dict[str, Any] = get_type_hints(Scenario)


class DirectiveError(ValueError):
    """A `#fake{...}` directive that cannot be turned into a Scenario."""


def message_text(message: Any) -> str:
    """Text of a message's content, whether a string or a list of content parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def find_directive(messages: list[Any]) -> tuple[str, Scenario] | None:
    """Return the last directive (raw JSON, Scenario) in non-assistant messages, if any.

    Assistant turns are skipped so that echoed history never re-triggers an old directive.
    """
    found: tuple[str, Scenario] | None = None
    decoder = json.JSONDecoder()
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            continue
        text = message_text(message)
        pos = text.find(DIRECTIVE)
        while pos >= 0:
            start = pos + len(DIRECTIVE) - 1
            try:
                spec, end = decoder.raw_decode(text, start)
            except ValueError as exc:
                raise DirectiveError(f"Malformed #fake directive JSON: {exc}") from exc
            unknown = set(spec) - set(HINTS)
            if unknown:
                raise DirectiveError(f"Unknown #fake directive fields: {sorted(unknown)}")
            for name, value in spec.items():
                hint = HINTS[name]
                allowed = tuple(
                    get_origin(kind) or kind for kind in getattr(hint, "__args__", (hint,))
                )
                if not isinstance(value, allowed) and not (float in allowed and type(value) is int):
                    raise DirectiveError(f"#fake directive field {name!r} must be {hint}")
            found = (text[start:end], Scenario(**spec))
            pos = text.find(DIRECTIVE, end)
    return found


def _verdict(messages: list[Any]) -> str | None:
    """A strict verdict for a grading request, else None: the answer to grade passes when it
    is a complete sentence (not empty, not cut off mid-sentence by a token limit)."""
    if not any(VERDICT_REQUEST in message_text(message) for message in messages):
        return None
    graded = _GRADED_ANSWER.search(message_text(messages[-1]))
    if graded is not None and _SENTENCE_END.search(graded.group(1)):
        return json.dumps({"pass": True, "reason": "The answer is complete."})
    return json.dumps({"pass": False, "reason": "The answer is empty or stops mid-sentence."})


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = _head(
    200,
    [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("transfer-encoding", "chunked"),
    ],
)


class FakeDeepSeek:
    """DeepSeek-compatible server on asyncio streams, running in a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default_scenario: Scenario | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.default_scenario = default_scenario or Scenario()
        self.requests: list[RequestRecord] = []
        self._fail_counts: dict[str | None, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._startup_error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeDeepSeek:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeDeepSeek:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, limit=1 << 20)
            )
        except OSError as exc:
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        for task in self._tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        loop.run_until_complete(asyncio.sleep(0))  # let transports finish closing
        loop.close()

    # -- introspection -----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget recorded requests and `fail_times` counters."""
        with self._lock:
            self.requests.clear()
            self._fail_counts.clear()

    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in list(self.requests) if r.path == "/chat/completions"]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll `predicate` until it returns a truthy value; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout:.1f}s")
            time.sleep(0.01)

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown; re-raising makes 3.11's stream callback log a spurious traceback
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection can be reused."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0].rstrip("/")
        path = path.removeprefix("/v1")
        record = RequestRecord(method, path, headers)
        with self._lock:
            self.requests.append(record)
        keep_alive = headers.get("connection", "").lower() != "close"

        if headers.get("authorization", "") in ("", "Bearer", "Bearer invalid-key"):
            ok = await self._error(record, writer, 401)
        elif method == "GET" and path == "/models":
            data = [{"id": m, "object": "model", "owned_by": "deepseek"} for m in MODELS]
            ok = await self._json(record, writer, 200, {"object": "list", "data": data})
        elif method == "POST" and path == "/chat/completions":
            try:
                record.body = json.loads(raw) if raw else None
            except ValueError:
                ok = await self._error(
                    record, writer, 400, "Invalid Format: request body is not JSON"
                )
            else:
                ok = await self._chat(record, reader, writer)
        else:
            ok = await self._error(record, writer, 404, f"Not Found: {method} {target}")
        return ok and keep_alive

    async def _json(
        self,
        record: RequestRecord,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        extra: list[tuple[str, str]] | None = None,
    ) -> bool:
        body = json.dumps(payload).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        # Mark first: the client may read the response before drain() returns here.
        record.completed = True
        writer.write(_head(status, headers + (extra or [])) + body)
        await writer.drain()
        return True

    async def _error(
        self,
        record: RequestRecord,
        writer: asyncio.StreamWriter,
        status: int,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> bool:
        kind, default = ERRORS.get(status, ("api_error", "Error"))
        error = {"message": message or default, "type": kind, "param": None, "code": kind}
        extra = []
        if status == 429 or retry_after is not None:
            extra.append(("retry-after", str(1 if retry_after is None else retry_after)))
        return await self._json(record, writer, status, {"error": error}, extra)

    @staticmethod
    async def _sleep_until(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
        keepalive_s: float | None = None,
    ) -> None:
        """Sleep until loop time `deadline`, sending keep-alive comments if asked.

        Raises ConnectionError if the client left.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_ping = now + keepalive_s if keepalive_s else float("inf")
        while True:
            if reader.at_eof() or reader.exception() is not None or writer.is_closing():
                raise ConnectionResetError("client disconnected")
            if now >= deadline:
                return
            if now >= next_ping:
                writer.write(KEEPALIVE)
                await writer.drain()
                next_ping += keepalive_s or 0
            # Sleep in short slices so a client disconnect is noticed quickly.
            await asyncio.sleep(min(deadline, next_ping, now + DISCONNECT_POLL_S) - now)
            now = loop.time()

    # -- chat completions --------------------------------------------------------------------

    def _pick_scenario(self, messages: list[Any]) -> tuple[Scenario, bool]:
        """Return the scenario for these messages and whether its error status applies."""
        found = find_directive(messages)
        key, scenario = found if found else (None, self.default_scenario)
        if scenario.status is None:
            return scenario, False
        with self._lock:
            count = self._fail_counts[key] = self._fail_counts.get(key, 0) + 1
        return scenario, scenario.fail_times is None or count <= scenario.fail_times

    async def _chat(
        self, record: RequestRecord, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        body = record.body
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return await self._error(
                record, writer, 400, "Invalid Format: `messages` must be a list"
            )
        if any(isinstance(m, dict) and "reasoning_content" in m for m in messages):
            return await self._error(record, writer, 400, REASONING_IN_INPUT)
        try:
            scenario, failing = self._pick_scenario(messages)
        except DirectiveError as exc:
            return await self._error(record, writer, 400, str(exc))
        if failing and scenario.status is not None:
            msg, retry = scenario.error_message, scenario.retry_after
            return await self._error(record, writer, scenario.status, msg, retry)

        model = str(body.get("model", "deepseek-chat"))
        thinking = body.get("thinking")
        reasons = model == "deepseek-reasoner" or (
            isinstance(thinking, dict) and thinking.get("type") == "enabled"
        )
        verdict = None if scenario is not self.default_scenario else _verdict(messages)
        if verdict is not None:
            reply = verdict
        elif scenario.echo:
            reply = json.dumps(messages, ensure_ascii=False)
        elif scenario.tokens is not None:
            reply = " ".join(f"tok{i}" for i in range(scenario.tokens))
        else:
            reply = scenario.reply
        thoughts = _PIECE.findall(scenario.reasoning or "") if reasons else []
        pieces = _PIECE.findall(reply)
        finish_reason = scenario.finish_reason
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
            pieces, finish_reason = pieces[:max_tokens], "length"
            reply = "".join(pieces)
        prompt = max(1, sum(len(message_text(m)) for m in messages) // 4)
        hit = min(scenario.cache_hit_tokens, prompt)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(thoughts) + len(pieces),
            "total_tokens": prompt + len(thoughts) + len(pieces),
            "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt - hit,
            "completion_tokens_details": {"reasoning_tokens": len(thoughts)},
        }
        meta = {
            "id": str(uuid.uuid4()),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        if body.get("stream"):
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            if scenario.tool_calls:
                frames, tail = self._tool_call_frames(meta, scenario.tool_calls)
            else:
                frames, tail = self._frames(meta, thoughts, pieces, finish_reason)
            if with_usage:
                final = {**meta, "choices": [], "usage": usage}
                tail += _chunk(b"data: %s\n\n" % json.dumps(final).encode())
            tail += DONE
            return await self._stream(record, reader, writer, scenario, frames, tail)

        total = scenario.first_token_delay_s + scenario.token_interval_s * len(pieces + thoughts)
        try:
            await self._sleep_until(reader, writer, asyncio.get_running_loop().time() + total)
        except ConnectionError:
            record.disconnected = True
            return False
        if scenario.cut_after_chunks is not None:
            return False
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if scenario.tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": _calls(scenario)}
            finish_reason = "tool_calls"
        if reasons:
            message["reasoning_content"] = scenario.reasoning
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        payload = {**meta, "object": "chat.completion", "choices": [choice], "usage": usage}
        return await self._json(record, writer, 200, payload)

    @staticmethod
    def _frames(
        meta: dict[str, Any], thoughts: list[str], pieces: list[str], finish_reason: str
    ) -> tuple[list[bytes], bytes]:
        """Pre-encode every token chunk, plus the finish chunk, so streaming only writes bytes."""
        head = json.dumps(meta, separators=(",", ":"))
        prefix = "data: " + head[:-1] + ',"choices":[{"index":0,"delta":{'
        deltas = [f'"content":null,"reasoning_content":{json.dumps(t)}' for t in thoughts]
        deltas += [f'"content":{json.dumps(p)},"reasoning_content":null' for p in pieces]
        if not deltas:
            deltas = ['"content":"","reasoning_content":null']
        deltas[0] = '"role":"assistant",' + deltas[0]
        end = '},"logprobs":null,"finish_reason":%s}]}\n\n'
        frames = [_chunk(f"{prefix}{d}{end % 'null'}".encode()) for d in deltas]
        last = f'{prefix}"content":"","reasoning_content":null{end % json.dumps(finish_reason)}'
        return frames, _chunk(last.encode())

    @staticmethod
    def _tool_call_frames(
        meta: dict[str, Any], calls: list[dict[str, str]]
    ) -> tuple[list[bytes], bytes]:
        """A call of each function: its id and name first, then its arguments in two pieces."""
        frames = []
        for index, call in enumerate(calls):
            arguments = call.get("arguments", "{}")
            half = len(arguments) // 2
            opening = {
                "index": index,
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            pieces = [opening] + [
                {"index": index, "function": {"arguments": piece}}
                for piece in (arguments[:half], arguments[half:])
            ]
            for piece in pieces:
                delta: dict[str, Any] = {"content": None, "tool_calls": [piece]}
                if not frames:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                frames.append(_event_frame({**meta, "choices": [choice]}))
        last = {"index": 0, "delta": {"content": None}, "logprobs": None}
        tail = _event_frame({**meta, "choices": [{**last, "finish_reason": "tool_calls"}]})
        return frames, tail

    async def _stream(
        self,
        record: RequestRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        scenario: Scenario,
        frames: list[bytes],
        tail: bytes,
    ) -> bool:
        """Send the pre-encoded frames; False if the stream was cut or the client left."""
        interval, cut = scenario.token_interval_s, scenario.cut_after_chunks
        writer.write(STREAM_HEAD)
        # Token times are absolute (first token + i * interval) so sleeps do not accumulate drift.
        start = asyncio.get_running_loop().time() + scenario.first_token_delay_s
        try:
            await writer.drain()
            await self._sleep_until(reader, writer, start, scenario.keepalive_interval_s)
            for i, frame in enumerate(frames[:cut]):
                if i and interval:
                    await self._sleep_until(reader, writer, start + i * interval)
                writer.write(frame)
                await writer.drain()
            if cut is not None:
                return False  # the caller closes the socket: no finish chunk, no [DONE]
            record.completed = True
            writer.write(tail)
            await writer.drain()
        except ConnectionError:
            record.completed, record.disconnected = False, True
            return False
        return True


def _event_frame(data: dict[str, Any]) -> bytes:
    return _chunk(b"data: %s\n\n" % json.dumps(data).encode())


def _calls(scenario: Scenario) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": call["name"], "arguments": call.get("arguments", "{}")},
        }
        for index, call in enumerate(scenario.tool_calls or ())
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake DeepSeek API until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--keepalive-ms", type=float, default=None)
    parser.add_argument("--cache-hit-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    scenario = Scenario(
        tokens=args.tokens,
        first_token_delay_s=args.first_token_ms / 1000,
        token_interval_s=args.token_interval_ms / 1000,
        keepalive_interval_s=args.keepalive_ms / 1000 if args.keepalive_ms else None,
        cache_hit_tokens=args.cache_hit_tokens,
    )
    server = FakeDeepSeek(args.host, args.port, scenario).start()
    print(f"fake DeepSeek listening on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
