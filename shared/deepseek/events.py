"""The events a streamed answer is made of, shared by executions and chat.

On the wire each is `event: <event>` and `data: <data as JSON>`; these models describe them.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from shared.deepseek.models import Usage
from shared.models import Model


class DeltaData(Model):
    delta: str


class DoneData(Model):
    finish_reason: str | None
    usage: Usage | None
    cost: float | None
    ttft_ms: float | None
    latency_ms: float | None


class ErrorData(Model):
    code: str
    message: str
    # Advice to the stream's caller only: the stored record and turn keep code and message.
    retry_after: int | None = Field(
        default=None,
        description="Seconds to wait before trying again, when DeepSeek said (rate limited, "
        "unavailable); absent otherwise.",
    )


class ReasoningEvent(Model):
    event: Literal["reasoning"]
    data: DeltaData


class ContentEvent(Model):
    event: Literal["content"]
    data: DeltaData


class DoneEvent(Model):
    event: Literal["done"]
    data: DoneData


class ErrorEvent(Model):
    event: Literal["error"]
    data: ErrorData


def answer_stream_events(meta: type[Model]) -> Any:
    """The events of one streamed answer: a `meta` event carrying `meta` first, then the
    reasoning and content deltas, and `done` or `error` last (for the OpenAPI document)."""
    meta_event = create_model(
        f"{meta.__name__}Event", __base__=Model, event=(Literal["meta"], ...), data=(meta, ...)
    )
    return Annotated[
        meta_event | ReasoningEvent | ContentEvent | DoneEvent | ErrorEvent,
        Field(discriminator="event"),
    ]
