"""Handing events to the queue of their channel, never losing one.

The settings choose, per channel: `local` (an in-process queue: each event consumed by a task on
the running event loop, so `make dev` needs nothing else), `cloudevents` (a binary-mode CloudEvent
to a Knative broker or sink), `openfaas` (OpenFaaS's async route of the consuming function) or
`sqs`. Whatever the queue, `publish` retries with backoff, then consumes the event in this process,
retrying that whatever the failure (every consumer is idempotent by event id) with a backoff capped
at EVENT_RETRY_MAX_BACKOFF_S, for as long as the process lives, in the background once the first
attempt here has failed. An event still failing after
EVENT_SPOOL_AFTER_S, or when its event loop or the process ends first, is kept on local disk
(`shared.queues.spool`) and replayed by the next process (`replay_spooled`). Publishing never
raises and never drops an event; events are logged by channel, id and size, never by content.
"""

import asyncio
import atexit
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import count
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import httpx
from pydantic import BaseModel

from shared.clients import loop_client
from shared.queues.channel import Channel, Consumer
from shared.queues.cloudevents import binary_headers
from shared.queues.signatures import SIGNATURE_HEADER, NoSigningKey, sign
from shared.queues.spool import (
    remove_spool_file,
    spool_dir,
    spool_path,
    spooled_events,
    write_spool_file,
)
from shared.queues.sqs import send_event
from shared.settings import Settings, get_settings

logger = logging.getLogger("better_assistant.queues")

# Retrying for as long as the process lives must not spin, whatever HISTORY_PUBLISH_BACKOFF_S is.
_MIN_RETRY_DELAY_S = 0.05


class PublishFailed(Exception):
    """The queue did not take the event."""


@dataclass(eq=False)
class _Held:
    """An event on its way, and its file once it is kept on disk."""

    channel: Channel[Any]
    event: BaseModel
    spool: Path | None = None
    # Set once the queue took the event, or once handling it here succeeded or failed a first
    # time: what a publisher's caller waits for; the retries go on without it.
    passed_on: asyncio.Event = field(default_factory=asyncio.Event)

    def __str__(self) -> str:
        channel = self.channel
        return f"{channel.name}: {channel.noun} {channel.event_id(self.event)}"

    @property
    def size(self) -> int:
        return len(self.event.model_dump_json())


@dataclass
class _LoopState:
    """What publishing holds on one event loop: events not yet settled, and their tasks."""

    pending: set[_Held] = field(default_factory=set)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def hold(self, held: _Held) -> None:
        with _lock:
            self.pending.add(held)
        self.settled.clear()

    def release(self, held: _Held) -> None:
        with _lock:
            self.pending.discard(held)
        if not self.pending:
            self.settled.set()

    def spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run `work` as a task of its own, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


_states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
# Loops run on several threads (a server's, a test's), and the process exit reads them all;
# reentrant, as a stop signal may interrupt the main thread while it holds the lock.
_lock = threading.RLock()
# Set once the process is told to stop: from then on, an event is kept on disk at its first
# failure, as the process may be gone before the next attempt.
_stopping = threading.Event()


def _loop_state() -> _LoopState:
    """The running loop's state, made on first use; states of closed loops are dropped, their
    unsettled events (a loop closed without ending its tasks) kept on disk first."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        with _lock:
            closed = [known for known in _states if known.is_closed()]
            left = [held for known in closed for held in _states.pop(known).pending]
            state = _states[loop] = _LoopState()
        for held in left:
            _keep_on_disk(held)
        state.settled.set()
    return state


def _unsettled() -> list[_Held]:
    with _lock:
        return [held for state in _states.values() for held in state.pending]


@atexit.register
def _keep_unsettled_on_disk() -> None:
    """The process is ending with events still on their way: keep them for the next one."""
    for held in _unsettled():
        _keep_on_disk(held)


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
            logger.warning("%s failed (attempt %d), retrying: %r", what, attempt + 1, exc)
            await asyncio.sleep(settings.history_publish_backoff_s * 2**attempt)


def _retry_delay(attempt: int, settings: Settings) -> float:
    """The wait after the `attempt`th failure (from 0): doubling, capped."""
    grown = settings.history_publish_backoff_s * 2 ** min(attempt, 32)
    return max(_MIN_RETRY_DELAY_S, min(settings.event_retry_max_backoff_s, grown))


async def _consume_until_done(consume: Consumer, held: _Held) -> None:
    """Consume the event here, retrying whatever the failure, until it succeeds; once it has
    failed for EVENT_SPOOL_AFTER_S it is also kept on disk, should the process stop."""
    failing_since = time.monotonic()
    for attempt in count():
        try:
            await consume(held.event)
        except Exception as exc:
            held.passed_on.set()
            settings = get_settings()
            failing_for = time.monotonic() - failing_since
            if held.spool is None and (
                _stopping.is_set() or failing_for >= settings.event_spool_after_s
            ):
                _keep_on_disk(held)
            delay = _retry_delay(attempt, settings)
            # The failure's type only: a driver's or a validator's message may quote the event.
            logger.warning(
                "%s (%d bytes): handling it here failed (attempt %d, %s), retrying in %.2fs",
                held,
                held.size,
                attempt + 1,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)
        else:
            if attempt:
                logger.info("%s: handled here at attempt %d", held, attempt + 1)
            return


def _keep_on_disk(held: _Held) -> None:
    """Write the event to the spool, unless its file is there already; say where, and how to
    replay it by hand."""
    if held.spool is not None and held.spool.exists():
        return
    path = spool_path(held.channel, held.event)
    try:
        size = write_spool_file(path, held.event)
    except OSError as exc:
        logger.error(
            "%s (%d bytes) could not be kept in %s (%s): lost if this process stops now",
            held,
            held.size,
            path.parent,
            type(exc).__name__,
        )
        return
    held.spool = path
    logger.warning(
        "%s (%d bytes) not delivered yet, kept in %s: the next start replays it, or POST that "
        "file to %s with ce-signature: %s",
        held,
        size,
        path,
        held.channel.function,
        _replay_signature(held.event),
    )


def _replay_signature(event: BaseModel) -> str:
    """What a replayed event is posted with: its signature opens that one event only."""
    try:
        return sign(event, get_settings().event_signing_keys)
    except NoSigningKey:
        return "none, EVENT_SIGNING_KEY is not set"


class Publisher:
    """Hands a channel's events to its queue; `consume` is what consuming one means, run in this
    process when the queue cannot take it."""

    def __init__(self, channel: Channel, consume: Consumer) -> None:
        self.channel = channel
        self.consume = consume

    async def publish(self, event: BaseModel) -> None:
        """Deliver the event (see the module's docstring); never raises. Returns once the queue
        took it, or once handling it here succeeded or failed a first time: the retries that
        follow (for as long as the database is down, say) go on in the background.

        The delivery runs as its own task, so a caller cancelled meanwhile (a client that went
        away) does not cancel it.
        """
        held = _Held(self.channel, event)
        self._start(held)
        await asyncio.shield(held.passed_on.wait())

    def replay(self, event: BaseModel, path: Path) -> None:
        """Deliver, in the background, an event kept on disk at `path`; the file is removed once
        the event is delivered."""
        self._start(_Held(self.channel, event, path))

    def _start(self, held: _Held) -> asyncio.Task[None]:
        state = _loop_state()
        state.hold(held)
        return state.spawn(self._settle(held, state))

    async def _settle(self, held: _Held, state: _LoopState) -> None:
        try:
            await self._deliver(held)
        except BaseException:
            # Callers are shielded from the delivery: only its event loop ending cancels it.
            _keep_on_disk(held)
            raise
        else:
            if held.spool is not None:
                remove_spool_file(held.spool)
        finally:
            held.passed_on.set()
            state.release(held)

    async def _deliver(self, held: _Held) -> None:
        """Hand the event to the queue, retrying with backoff; else consume it here."""
        try:
            # Signed once for every attempt; without a key no attempt could succeed.
            signature = sign(held.event, get_settings().event_signing_keys)
            await _retrying(lambda: self.send(held.event, signature), f"{held}: publishing")
            held.passed_on.set()
            return
        except Exception as exc:
            logger.warning("%s: publishing failed (%r); handling it here", held, exc)
        await _consume_until_done(self.consume, held)

    async def send(self, event: BaseModel, signature: str) -> None:
        """One attempt at handing the signed event to the queue; raises when the queue did not
        take it."""
        raise NotImplementedError


class LocalQueuePublisher(Publisher):
    """An in-process queue: each event consumed by its own task on the running event loop."""

    async def publish(self, event: BaseModel) -> None:
        """Queue the event for a background task; returns at once and never raises."""
        self._start(_Held(self.channel, event))

    async def _deliver(self, held: _Held) -> None:
        await _consume_until_done(self.consume, held)


class CloudEventsPublisher(Publisher):
    """A binary-mode CloudEvent POSTed to a Knative broker or sink (K_SINK)."""

    def __init__(self, channel: Channel, consume: Consumer, url: str) -> None:
        super().__init__(channel, consume)
        self.url = url

    async def send(self, event: BaseModel, signature: str) -> None:
        await _post(self.url, event, binary_headers(self.channel, event, signature))


class OpenFaaSPublisher(Publisher):
    """The event's JSON POSTed to OpenFaaS's async route; its queue-worker calls the consumer."""

    def __init__(self, channel: Channel, consume: Consumer, gateway_url: str) -> None:
        super().__init__(channel, consume)
        self.url = f"{gateway_url.rstrip('/')}/async-function/{channel.function}"

    async def send(self, event: BaseModel, signature: str) -> None:
        # OpenFaaS's queue-worker hands the function the headers it was given with the body.
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature}
        await _post(self.url, event, headers)


class SqsPublisher(Publisher):
    """`send_message` to an SQS queue (FIFO queues deduplicate by event id), in a worker thread."""

    def __init__(self, channel: Channel, consume: Consumer, queue_url: str) -> None:
        super().__init__(channel, consume)
        self.queue_url = queue_url

    async def send(self, event: BaseModel, signature: str) -> None:
        await anyio.to_thread.run_sync(send_event, self.queue_url, self.channel, event, signature)


async def _post(url: str, event: BaseModel, headers: dict[str, str]) -> None:
    client = loop_client("queue-http", None, httpx.AsyncClient)
    response = await client.post(
        url,
        content=event.model_dump_json(),
        headers=headers,
        timeout=get_settings().history_publish_timeout_s,
    )
    if not response.is_success:
        raise PublishFailed(f"{url} answered {response.status_code}")


def publisher_for(channel: Channel, consume: Consumer) -> Publisher:
    """The channel's publisher as the settings choose it; `consume` runs an event here (the
    local queue, or the fallback when the queue cannot be reached)."""
    kind, url = channel.queue(get_settings())
    if kind != "local" and not url:
        _report_missing_url(channel.name, kind)
        kind = "local"
    match kind:
        case "cloudevents":
            return CloudEventsPublisher(channel, consume, url or "")
        case "openfaas":
            return OpenFaaSPublisher(channel, consume, url or "")
        case "sqs":
            return SqsPublisher(channel, consume, url or "")
        case _:
            return LocalQueuePublisher(channel, consume)


@cache
def _report_missing_url(channel_name: str, kind: str) -> None:
    """Once per process: the misconfiguration does not change between events."""
    name = channel_name.upper()
    logger.error(
        "%s: %s_QUEUE=%s needs %s_QUEUE_URL; using `local`", channel_name, name, kind, name
    )


async def wait_until_drained(timeout: float) -> bool:
    """Wait until every event published on this event loop is settled (handed to its queue or
    consumed); for tests and shutdown. On timeout, logs each unsettled event and returns False:
    they stay on their way, kept on disk if the loop or the process ends first."""
    state = _loop_state()
    try:
        await asyncio.wait_for(state.settled.wait(), timeout)
    except TimeoutError:
        for held in list(state.pending):
            logger.warning(
                "%s (%d bytes) was not settled after %ss; still retrying, kept in %s if "
                "the process stops first",
                held,
                held.size,
                timeout,
                held.spool or spool_dir(),
            )
        return False
    return True


async def replay_spooled(channel: Channel, consume: Consumer) -> int:
    """Deliver again, in the background, the channel's events kept on disk by an earlier process
    (or an earlier event loop of this one); each file is removed once its event is delivered.
    The number of events replayed: those this process is delivering already are left to it."""
    found = await anyio.to_thread.run_sync(spooled_events, channel)
    here = {held.spool for held in _unsettled()}
    fresh = [(path, event) for path, event in found if path not in here]
    if fresh:
        logger.info(
            "%s: replaying %d %s(s) kept in %s", channel.name, len(fresh), channel.noun, spool_dir()
        )
        publisher = publisher_for(channel, consume)
        for path, event in fresh:
            publisher.replay(event, path)
    return len(fresh)


def durable_publishing(channel: Channel, consume: Consumer) -> Callable[[], None]:
    """What a function publishing to `channel` runs at its first request, on its event loop:
    replay the channel's kept events in the background, and keep unsettled events on disk as
    soon as the process is told to stop."""

    async def replay() -> None:
        try:
            await replay_spooled(channel, consume)
        except Exception:
            logger.exception("%s: replaying the kept events failed", channel.name)

    def start() -> None:
        _keep_on_disk_when_stopped()
        _loop_state().spawn(replay())

    return start


def _keep_on_disk_when_stopped() -> None:
    """Keep unsettled events on disk when a stop signal arrives (SIGTERM; SIGINT; SIGQUIT, which
    gunicorn sends its workers for a quick shutdown), then let the server's own handler run.

    Needed because uvicorn, once it has shut down, restores the handlers it found and raises the
    signal again: under gunicorn's uvicorn worker (functions-framework's production server) that
    is the default action, which ends the process there, without cancelling the loop's tasks or
    running `atexit`. Signals reach the main thread only; a loop on another thread (a test
    server) relies on its tasks being cancelled when it ends.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        server_handler = signal.getsignal(signum)
        if getattr(server_handler, "keeps_events", False):
            continue
        signal.signal(signum, _keeping_events(server_handler))


def _keeping_events(server_handler: Callable[[int, FrameType | None], Any] | int | None) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        _keep_unsettled_on_disk()
        if callable(server_handler):
            server_handler(signum, frame)
        elif server_handler != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    handler.keeps_events = True  # type: ignore[attr-defined]
    return handler
