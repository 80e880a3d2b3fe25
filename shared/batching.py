"""Items that arrive while a batch is being handled go together into the next one.

Nothing ever waits for a batch to fill: an item arriving when no batch runs starts one at once,
so a quiet process handles each item as it comes. Under load, one batch (a few database round
trips) serves every item that arrived meanwhile, instead of a few round trips for each.
"""

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Waiting(Generic[ItemT, ResultT]):
    items: list[ItemT] = field(default_factory=list)
    futures: list[asyncio.Future[ResultT]] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None


class Batcher(Generic[ItemT, ResultT]):
    """Hands items to `handle_many` (synchronous: it runs in a worker thread), one batch at a
    time per event loop and at most `max_batch` items per batch; `handle_many` returns one
    result per item, in order, or raises for the whole batch."""

    def __init__(self, handle_many: Callable[[list[ItemT]], list[ResultT]], max_batch: int) -> None:
        self.handle_many = handle_many
        self.max_batch = max_batch
        self._waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _Waiting[ItemT, ResultT]
        ] = weakref.WeakKeyDictionary()

    async def submit(self, item: ItemT) -> ResultT:
        """The item's result, once the batch it went into is handled."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = _Waiting()
        future: asyncio.Future[ResultT] = loop.create_future()
        waiting.items.append(item)
        waiting.futures.append(future)
        if waiting.drain is None:
            waiting.drain = loop.create_task(self._drain(waiting))
        return await future

    async def _drain(self, waiting: _Waiting[ItemT, ResultT]) -> None:
        futures: list[asyncio.Future[ResultT]] = []
        try:
            while waiting.items:
                items, futures = waiting.items[: self.max_batch], waiting.futures[: self.max_batch]
                del waiting.items[: self.max_batch], waiting.futures[: self.max_batch]
                try:
                    results = await anyio.to_thread.run_sync(self.handle_many, items)
                    answered = list(zip(futures, results, strict=True))
                except Exception as exc:
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future, result in answered:
                    if not future.done():
                        future.set_result(result)
        finally:
            waiting.drain = None
            # Only a loop shutting down cancels the drain: nobody is left to wait for a result.
            for future in [*futures, *waiting.futures]:
                future.cancel()
            waiting.items.clear()
            waiting.futures.clear()
