"""Handing events to the queue of their channel, never losing one.

The settings choose, per channel: `local` (an in-process queue: each event consumed by a task on
the running event loop, so `make dev` needs nothing else), `cloudevents` (a binary-mode CloudEvent
to a Knative broker or sink), `openfaas` (OpenFaaS's async route of the consuming function) or
`sqs`. Whatever the queue, `publish` retries with backoff, then consumes the event in this process,
then logs it as JSON for replay: it never raises and never drops an event silently.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import count

import anyio
import httpx
from pydantic import BaseModel

from shared.clients import loop_client
from shared.queues.channel import Channel, Consumer
from shared.queues.cloudevents import binary_headers
from shared.queues.signatures import SIGNATURE_HEADER, NoSigningKey, sign
from shared.queues.sqs import send_event
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.queues")


class PublishFailed(Exception):
    """The queue did not take the event."""


@dataclass
class _LoopState:
    """What publishing holds on one event loop: events not yet settled, and their tasks."""

    pending: dict[int, BaseModel] = field(default_factory=dict)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def hold(self, event: BaseModel) -> int:
        token = next(_tokens)
        self.pending[token] = event
        self.settled.clear()
        return token

    def release(self, token: int) -> None:
        self.pending.pop(token, None)
        if not self.pending:
            self.settled.set()

    def spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run `work` as a task of its own, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


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
            logger.warning("%s failed (attempt %d), retrying: %r", what, attempt + 1, exc)
            await asyncio.sleep(settings.history_publish_backoff_s * 2**attempt)


def _describe(channel: Channel, event: BaseModel) -> str:
    return f"{channel.name}: {channel.noun} {channel.event_id(event)}"


async def consume_here(channel: Channel, consume: Consumer, event: BaseModel) -> None:
    """Consume an event in this process, with retries; if it still fails, log the event as JSON
    so it can be replayed. Never raises."""
    try:
        await _retrying(lambda: consume(event), f"{_describe(channel, event)}: handling it here")
    except Exception:
        logger.exception(
            "%s could not be handled; replay this event (POST it with ce-signature: %s): %s",
            _describe(channel, event),
            _replay_signature(event),
            event.model_dump_json(),
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
        """Publish an event, retrying with backoff, else consume it here, else log it for replay.

        Never raises. The delivery runs as its own task, so a caller cancelled meanwhile (a
        client that went away) does not cancel it.
        """
        state = _loop_state()
        token = state.hold(event)
        await asyncio.shield(state.spawn(self._deliver(event, token, state)))

    async def _deliver(self, event: BaseModel, token: int, state: _LoopState) -> None:
        what = _describe(self.channel, event)
        try:
            # Signed once for every attempt; without a key no attempt could succeed.
            signature = sign(event, get_settings().event_signing_keys)
            await _retrying(lambda: self.send(event, signature), f"{what}: publishing")
        except Exception as exc:
            logger.warning("%s: publishing failed (%r); handling it here", what, exc)
            await consume_here(self.channel, self.consume, event)
        finally:
            state.release(token)

    async def send(self, event: BaseModel, signature: str) -> None:
        """One attempt at handing the signed event to the queue; raises when the queue did not
        take it."""
        raise NotImplementedError


class LocalQueuePublisher(Publisher):
    """An in-process queue: each event consumed by its own task on the running event loop."""

    async def publish(self, event: BaseModel) -> None:
        """Queue the event for a background task; returns at once and never raises."""
        state = _loop_state()
        token = state.hold(event)
        state.spawn(self._consume(event, token, state))

    async def _consume(self, event: BaseModel, token: int, state: _LoopState) -> None:
        try:
            await consume_here(self.channel, self.consume, event)
        finally:
            state.release(token)


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
    consumed); for tests and shutdown. On timeout, logs each unsettled event for replay and
    returns False."""
    state = _loop_state()
    try:
        await asyncio.wait_for(state.settled.wait(), timeout)
    except TimeoutError:
        for event in list(state.pending.values()):
            logger.error(
                "an event was not settled after %ss; if the process stops now, replay: %s",
                timeout,
                event.model_dump_json(),
            )
        return False
    return True
