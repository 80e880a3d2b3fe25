"""Server-sent events on the wire: `event: <name>` and one line of JSON `data:` per event."""

import asyncio
from collections.abc import AsyncIterator
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


async def started(chunks: AsyncIterator[bytes], wait_s: float) -> AsyncIterator[bytes]:
    """`chunks` once its first chunk has come, or `wait_s` has passed without one.

    A failure before the first chunk is raised here, so the request can still be answered with
    the failure's own status rather than a stream that has already said 200.
    """
    iterator = aiter(chunks)
    first = asyncio.ensure_future(anext(iterator))
    await asyncio.wait({first}, timeout=wait_s)
    if first.done() and first.exception() is not None:
        if isinstance(first.exception(), StopAsyncIteration):
            return _after(None, iterator)
        first.result()
    return _after(first, iterator)


async def _after(
    first: "asyncio.Future[bytes] | None", rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    if first is not None:
        yield await first
    async for chunk in rest:
        yield chunk
