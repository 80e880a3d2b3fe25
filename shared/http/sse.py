"""Server-sent events on the wire: `event: <name>` and one line of JSON `data:` per event."""

import json
from collections.abc import AsyncIterator
from typing import Any

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Proxies (nginx, the OpenFaaS gateway) must pass each event on at once, never buffer.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()


async def encode_stream(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[bytes]:
    async for name, data in events:
        yield encode_event(name, data)
