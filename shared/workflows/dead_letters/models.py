"""A dead letter: an event the broker gave up delivering, as it came, and what replaying it gave."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.models import Model
from shared.pagination import PageParams

# `dead` until a replay hands the event to its consumer, which takes it (`replayed`).
DeadLetterStatus = Literal["dead", "replayed"]


class DeadEvent(Model):
    """What the sink keeps of a delivered event: its CloudEvents attributes, the signature it was
    published with and its data (the event itself), and why the broker gave it up."""

    event_id: str = Field(min_length=1, max_length=200)
    event_type: str = Field(min_length=1, max_length=200)
    source: str | None = Field(None, max_length=1000)
    subject: str | None = Field(None, max_length=1000)
    time: str | None = Field(None, max_length=100)
    signature: str
    data: Any
    # Knative's dead-letter extensions: the consumer's HTTP status, its URL and (the start of)
    # what it answered.
    error_code: int | None = None
    error_destination: str | None = Field(None, max_length=2000)
    error_data: str | None = None


class ReplayError(Model):
    code: str
    message: str


class Replay(Model):
    """One replay: the consumer took the event (with what it answered) or refused it (why)."""

    at: datetime
    taken: bool
    result: Any = None
    error: ReplayError | None = None


class DeadLetterSummary(Model):
    """A dead letter as lists show it: what the event is and where it stands, not its data."""

    id: str
    event_id: str
    event_type: str
    source: str | None
    subject: str | None
    error_code: int | None
    status: DeadLetterStatus
    # How often the broker handed this event to the sink (a redelivery stores nothing new).
    deliveries: int
    received_at: datetime
    last_received_at: datetime
    replay: Replay | None


class DeadLetter(DeadLetterSummary):
    """A dead letter with the event as it was published."""

    time: str | None
    signature: str
    data: Any
    error_destination: str | None
    error_data: str | None


class DeadLetterStored(Model):
    """What the sink answers the broker: the dead letter, new or already kept."""

    id: str
    event_id: str
    event_type: str
    duplicate: bool


class DeadLetterListParams(PageParams):
    type: str | None = Field(None, max_length=200, description="Only events of this type.")
    status: DeadLetterStatus | None = None
