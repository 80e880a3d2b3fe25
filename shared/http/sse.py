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
_PREAMBLE_EVENTS = frozenset({"meta"})


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """One event; the data as compact JSON (UTF-8 as is, datetimes and the like as `str`)."""
    payload = orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return b"event: %b\ndata: %b\n\n" % (name.encode(), payload)


async def encode_stream(
    events: AsyncIterator[tuple[str, dict[str, Any]]], keepalive_s: float
) -> AsyncIterator[bytes]:
    """The events as SSE bytes, with a comment every `keepalive_s` until the answer starts.

    DeepSeek may hold a request for minutes before its first token; without traffic a proxy or
    browser would cut the connection. Once tokens flow, events pass straight through.
    """
    iterator = aiter(events)
    pending: asyncio.Future[tuple[str, dict[str, Any]]] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(iterator))
            while not (await asyncio.wait({pending}, timeout=keepalive_s))[0]:
                yield KEEPALIVE
            try:
                name, data = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield encode_event(name, data)
            if name not in _PREAMBLE_EVENTS:
                break
        async for name, data in iterator:
            yield encode_event(name, data)
    finally:
        if pending is not None:
            # The caller went away while the answer had not started: stop it, and let it
            # finish its own clean-up (recording what happened) before this stream closes.
            pending.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({pending})
