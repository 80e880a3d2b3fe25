"""Clients of outside services (MongoDB, DeepSeek, queues), built on first use and kept.

Never at import: scale-to-zero makes every import a user-visible cold start. A client is kept per
kind and configuration, so changed settings (tests, a rotated secret) get a new one. Synchronous
clients (pymongo, boto3) are safe to share between threads and live as long as the process;
asynchronous ones (the DeepSeek SDK, httpx) hold connections bound to one event loop and live
with it: `close_clients` is the one place that closes them, when the loop's server shuts down or
the loop ends. A synchronous client lives as long as its process: pools of other configurations
(a test's database, a rotated secret) stay open, idle, until then.
"""

import asyncio
import inspect
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

ClientT = TypeVar("ClientT")

_process_clients: dict[tuple[str, Hashable], Any] = {}
# Building some clients (boto3) is not thread-safe, and two threads must not build two pools.
_process_lock = threading.Lock()
# By loop object, not its id: a closed loop's id can be reused by the next one.
_loop_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[object, Any]]
] = weakref.WeakKeyDictionary()
# Tasks closing replaced clients, referenced until they end so none is collected midway.
_closing: set[asyncio.Task[None]] = set()


def process_client(kind: str, config: Hashable, build: Callable[[], ClientT]) -> ClientT:
    """The process-wide client of `kind` for `config`, built by `build` on first use."""
    key = (kind, config)
    client = _process_clients.get(key)
    if client is None:
        with _process_lock:
            client = _process_clients.get(key)
            if client is None:
                client = _process_clients[key] = build()
    return client


def loop_client(kind: str, config: object, build: Callable[[], ClientT]) -> ClientT:
    """The running event loop's client of `kind`, built by `build` on first use and kept while
    `config` compares equal. A client of the same kind left behind by another `config` is closed
    rather than leaked."""
    loop = asyncio.get_running_loop()
    clients = _loop_clients.setdefault(loop, {})
    kept = clients.get(kind)
    if kept is not None and kept[0] == config:
        return kept[1]
    if kept is not None:
        closing = loop.create_task(_close(kept[1]))
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
    client = build()
    clients[kind] = (config, client)
    return client


async def close_clients() -> None:
    """Close the running event loop's clients (a server shutting down, a loop ending)."""
    clients = _loop_clients.pop(asyncio.get_running_loop(), {})
    for _, client in clients.values():
        await _close(client)


async def _close(client: Any) -> None:
    close = getattr(client, "aclose", None) or client.close
    closed = close()
    if inspect.isawaitable(closed):
        await closed
