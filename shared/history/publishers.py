"""Publishing finished chat turns to the history queue the deployment uses, never losing one.

`HISTORY_QUEUE` chooses how: `local` (an in-process queue drained by a background task on the
running event loop), `cloudevents` (a binary-mode CloudEvent to a Knative broker or sink),
`openfaas` (OpenFaaS's async queue for the `history-writer` function) or `sqs`. Whatever the
queue, `publish` retries with backoff, then writes the turn itself, then logs the event as JSON
for replay: it never raises and never drops a turn silently.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import count

import anyio
import httpx

from shared.dialogs.models import TurnEvent
from shared.history.cloudevents import binary_headers
from shared.history.writer import HistoryWriter
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.history")

OPENFAAS_ASYNC_PATH = "/async-function/history-writer"


class PublishFailed(Exception):
    """The queue did not take the turn."""


@dataclass
class _LoopState:
    """What publishing holds on one event loop: turns not yet settled, the local queue, a client."""

    pending: dict[int, TurnEvent] = field(default_factory=dict)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    queue: asyncio.Queue[tuple[int, TurnEvent]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    client: httpx.AsyncClient | None = None

    def hold(self, turn: TurnEvent) -> int:
        token = next(_tokens)
        self.pending[token] = turn
        self.settled.clear()
        return token

    def release(self, token: int) -> None:
        self.pending.pop(token, None)
        if not self.pending:
            self.settled.set()

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient()
        return self.client


_tokens = count()
_states: dict[asyncio.AbstractEventLoop, _LoopState] = {}


def _loop_state() -> _LoopState:
    """The running loop's state, made on first use; states of closed loops are dropped."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        for closed in [known for known in _states if known.is_closed()]:
            _states.pop(closed, None)
        state = _states[loop] = _LoopState()
        state.settled.set()
    return state


async def _retrying(operation: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `operation`, retrying failures with exponential backoff; raises the last failure."""
    settings = get_settings()
    for attempt in range(settings.history_publish_retries + 1):
        try:
            await operation()
            return
        except Exception as exc:
            if attempt == settings.history_publish_retries:
                raise
            logger.warning("history: %s failed (attempt %d), retrying: %r", what, attempt + 1, exc)
            await asyncio.sleep(settings.history_publish_backoff_s * 2**attempt)


def _write(turn: TurnEvent) -> None:
    # Built at write time: the writer uses the settings (and database) current when it runs.
    HistoryWriter().write_turn(turn)


async def write_directly(turn: TurnEvent) -> None:
    """Write a turn with HistoryWriter in a worker thread, with retries; if it still fails, log
    the event as JSON so it can be replayed. Never raises."""
    try:
        await _retrying(
            lambda: anyio.to_thread.run_sync(_write, turn), f"writing turn {turn.turn_id}"
        )
    except Exception:
        logger.exception(
            "history: turn %s could not be written; replay this event: %s",
            turn.turn_id,
            turn.model_dump_json(),
        )


class HistoryPublisher:
    """Hands finished turns over to be written to the history."""

    async def publish(self, turn: TurnEvent) -> None:
        """Publish a turn, retrying with backoff, else write it directly, else log it for replay.

        Never raises. The delivery runs as its own task, so a caller cancelled meanwhile (a
        client that went away) does not cancel it.
        """
        state = _loop_state()
        token = state.hold(turn)
        task = asyncio.get_running_loop().create_task(self._deliver(turn, token, state))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        await asyncio.shield(task)

    async def _deliver(self, turn: TurnEvent, token: int, state: _LoopState) -> None:
        try:
            await _retrying(lambda: self.send(turn), f"publishing turn {turn.turn_id}")
        except Exception as exc:
            logger.warning(
                "history: publishing turn %s failed (%r); writing it directly", turn.turn_id, exc
            )
            await write_directly(turn)
        finally:
            state.release(token)

    async def send(self, turn: TurnEvent) -> None:
        """One attempt at handing the turn to the queue; raises when the queue did not take it."""
        raise NotImplementedError


class LocalQueuePublisher(HistoryPublisher):
    """An in-process queue, drained by one background task per event loop: nothing to deploy."""

    async def publish(self, turn: TurnEvent) -> None:
        """Queue the turn for the background writer; returns at once and never raises."""
        state = _loop_state()
        state.queue.put_nowait((state.hold(turn), turn))
        if state.worker is None or state.worker.done():
            state.worker = asyncio.get_running_loop().create_task(_drain_local(state))


async def _drain_local(state: _LoopState) -> None:
    """Write queued turns one by one; a failure is retried and logged, never ends the loop."""
    while True:
        token, turn = await state.queue.get()
        try:
            await write_directly(turn)
        finally:
            state.release(token)
            state.queue.task_done()


class CloudEventsPublisher(HistoryPublisher):
    """A binary-mode CloudEvent POSTed to a Knative broker or sink (K_SINK)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, turn: TurnEvent) -> None:
        await _post(self.url, turn, binary_headers(turn))


class OpenFaaSPublisher(HistoryPublisher):
    """The turn's JSON POSTed to OpenFaaS's async route; the queue-worker calls history-writer."""

    def __init__(self, gateway_url: str) -> None:
        self.url = gateway_url.rstrip("/") + OPENFAAS_ASYNC_PATH

    async def send(self, turn: TurnEvent) -> None:
        await _post(self.url, turn, {"content-type": "application/json"})


class SqsPublisher(HistoryPublisher):
    """`send_message` to an SQS queue (FIFO queues deduplicate by turn id), in a worker thread."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url

    async def send(self, turn: TurnEvent) -> None:
        # Imported here: boto3 is a heavy import that only SQS deployments should pay for.
        from shared.history.sqs import send_turn

        await anyio.to_thread.run_sync(send_turn, self.queue_url, turn)


async def _post(url: str, turn: TurnEvent, headers: dict[str, str]) -> None:
    response = (
        await _loop_state()
        .http()
        .post(
            url,
            content=turn.model_dump_json(),
            headers=headers,
            timeout=get_settings().history_publish_timeout_s,
        )
    )
    if not response.is_success:
        raise PublishFailed(f"{url} answered {response.status_code}")


def get_publisher() -> HistoryPublisher:
    """The publisher the settings choose, built on first use and then reused."""
    settings = get_settings()
    return _publisher(settings.history_queue or "local", settings.history_queue_url)


@cache
def _publisher(kind: str, url: str | None) -> HistoryPublisher:
    if kind != "local" and not url:
        logger.error("history: HISTORY_QUEUE=%s needs HISTORY_QUEUE_URL; using `local`", kind)
        kind = "local"
    match kind:
        case "cloudevents":
            return CloudEventsPublisher(url or "")
        case "openfaas":
            return OpenFaaSPublisher(url or "")
        case "sqs":
            return SqsPublisher(url or "")
        case _:
            return LocalQueuePublisher()


async def wait_until_drained(timeout: float) -> bool:
    """Wait until every turn published on this event loop is settled (handed to the queue or
    written); for tests and shutdown. On timeout, logs each unsettled turn for replay and
    returns False."""
    state = _loop_state()
    try:
        await asyncio.wait_for(state.settled.wait(), timeout)
    except TimeoutError:
        for turn in list(state.pending.values()):
            logger.error(
                "history: turn %s not written after %ss; if the process stops now, replay: %s",
                turn.turn_id,
                timeout,
                turn.model_dump_json(),
            )
        return False
    return True
