"""Server-sent events on the wire: `event: <name>` and one line of JSON `data:` per event."""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import anyio
import orjson

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Proxies (nginx, the OpenFaaS gateway) must pass each event on at once, never buffer.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
KEEPALIVE = b": keep-alive\n\n"
# Events sent before the model's first token; until one of something else arrives, idle
# stretches are filled with keep-alive comments.
_PREAMBLE = b"event: meta\n"


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """One event; the data as compact JSON (UTF-8 as is, datetimes and the like as `str`)."""
    payload = orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return b"event: %b\ndata: %b\n\n" % (name.encode(), payload)


def encode_stream(
    events: AsyncIterator[tuple[str, dict[str, Any]]], keepalive_s: float
) -> AsyncIterator[bytes]:
    """The events as SSE bytes, with a comment every `keepalive_s` until the answer starts."""
    encoded = (encode_event(name, data) async for name, data in events)
    return keep_alive(encoded, keepalive_s, preamble=_PREAMBLE)


async def keep_alive(
    chunks: AsyncIterator[bytes], keepalive_s: float, preamble: bytes | None = None
) -> AsyncIterator[bytes]:
    """The chunks, with a comment every `keepalive_s` until one arrives that does not start
    with `preamble` (any chunk, without one).

    DeepSeek may hold a request for minutes before its first token; without traffic a proxy or
    browser would cut the connection. Once tokens flow, chunks pass straight through.
    """
    iterator = aiter(chunks)
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(iterator))
            while not (await asyncio.wait({pending}, timeout=keepalive_s))[0]:
                yield KEEPALIVE
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield chunk
            if preamble is None or not chunk.startswith(preamble):
                break
        async for chunk in iterator:
            yield chunk
    finally:
        if pending is not None:
            # The caller went away while the answer had not started: stop it, and let it
            # finish its own clean-up (recording what happened) before this stream closes.
            pending.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({pending})


async def started(chunks: AsyncIterator[bytes], keepalive_s: float) -> AsyncIterator[bytes]:
    """`chunks` once its first chunk has come, or after `keepalive_s` without one, when the
    stream starts with keep-alive comments until it comes.

    A failure before the first chunk is raised here, so the request can still be answered with
    the failure's own status rather than a stream that has already said 200.
    """
    iterator = aiter(chunks)
    first = asyncio.ensure_future(anext(iterator))
    await asyncio.wait({first}, timeout=keepalive_s)
    if not first.done():
        return keep_alive(_Resumed(first, iterator), keepalive_s)
    if isinstance(first.exception(), StopAsyncIteration):
        return iterator
    first.result()
    return _Resumed(first, iterator)


class _Resumed:
    """A stream whose first chunk was taken ahead: that chunk, then the rest handed over
    straight from the stream, with no layer of its own per chunk."""

    def __init__(self, first: "asyncio.Future[bytes]", rest: AsyncIterator[bytes]) -> None:
        self._first: asyncio.Future[bytes] | None = first
        self._rest = rest

    def __aiter__(self) -> "_Resumed":
        return self

    def __anext__(self) -> Awaitable[bytes]:
        if self._first is None:
            return self._rest.__anext__()
        first, self._first = self._first, None
        return first
