"""Events for queue-triggered functions: what each kind is called and how it is recognised.

Chat turns go to `history-writer`, evaluation cells to `evaluation-worker`; both travel the same
way (see `shared.queues.publishers`), chosen per channel by `<NAME>_QUEUE` and `<NAME>_QUEUE_URL`.
A channel only declares its events: what consumes them is attached where it runs (the consuming
function, the local queue and the in-process fallback of a publisher, the SQS drain).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.settings import QueueKind, Settings

EventT = TypeVar("EventT", bound=BaseModel)


@dataclass(frozen=True, eq=False)
class Channel(Generic[EventT]):
    """One kind of event, and the name of the queue-triggered function it is addressed to."""

    # Names the settings that choose the queue: `<name>_queue` and `<name>_queue_url`.
    name: str
    # The name of the function it is addressed to: OpenFaaS's `/async-function/<function>`, a
    # Trigger's subscriber.
    function: str
    event_type: str
    source: str
    # What one event is, for log lines and error messages ("turn", "cell").
    noun: str
    model: type[EventT]
    # The idempotency key: CloudEvents `id`, SQS deduplication id.
    event_id: Callable[[EventT], str]
    # What the event is about: CloudEvents `subject`, the SQS FIFO message group.
    subject: Callable[[EventT], str]

    def queue(self, settings: Settings) -> tuple[QueueKind, str | None]:
        """The queue kind and URL the settings choose for this channel."""
        kind: QueueKind | None = getattr(settings, f"{self.name}_queue")
        return kind or "local", getattr(settings, f"{self.name}_queue_url")


# What consuming one event means where it runs: the consuming function's work, also run in
# the publishing process by the local queue and when the queue cannot be reached.
Consumer = Callable[[EventT], Awaitable[object]]
