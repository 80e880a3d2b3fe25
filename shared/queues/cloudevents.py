"""Queue events over HTTP: CloudEvents 1.0 in binary or structured mode, or the bare JSON body.

A Knative Trigger delivers binary mode (`ce-*` headers, the event's data as the body);
structured mode carries the whole event as `application/cloudevents+json`; OpenFaaS's
queue-worker posts the JSON body it was given, with the headers it was given. The channel's
event id is the CloudEvent id; every event carries its signature (`shared.queues.signatures`).
"""

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from shared.bounds import JsonTooDeep, parse_json
from shared.errors import (
    AppError,
    UnsupportedMediaType,
    ValidationFailed,
    validation_failed,
)
from shared.http.messages import Request, parse_body
from shared.http.routing import BodyDoc
from shared.queues.channel import Channel, EventT
from shared.queues.signatures import SIGNATURE_ATTRIBUTE, SIGNATURE_HEADER, verify
from shared.settings import get_settings

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
# The members of a structured event that are not attributes of it.
_NOT_ATTRIBUTES = frozenset({"data", "data_base64", SIGNATURE_ATTRIBUTE})

logger = logging.getLogger("better_assistant.queues")

DataT = TypeVar("DataT")


# For the OpenAPI document only; a dataclass, not a model, so declaring it costs little at import
# and parametrizing it almost nothing.
@dataclass(repr=False, eq=False)
class StructuredEvent(Generic[DataT]):
    """A structured-mode CloudEvent: its attributes, its signature and the event as `data`."""

    specversion: str
    id: str
    type: str
    source: str
    signature: str
    data: DataT
    subject: str | None = None
    time: str | None = None


def event_body(channel: Channel[EventT]) -> BodyDoc:
    """What a queue-triggered route takes: one event of the channel, in any of its shapes."""
    noun = channel.noun
    return BodyDoc(
        {"application/json": channel.model, STRUCTURED: StructuredEvent[channel.model]},
        f"One {noun}: a binary-mode CloudEvent (`ce-specversion`, `ce-id`, `ce-type: "
        f"{channel.event_type}`, `ce-source` headers and the {noun} as JSON: what a Knative "
        f"Trigger delivers), the plain JSON {noun} OpenFaaS's queue-worker posts, both signed "
        f"in `ce-signature`, or a structured CloudEvent (the {noun} in `data`, signed in "
        "`signature`).",
    )


def binary_headers(channel: Channel, event: BaseModel, signature: str) -> dict[str, str]:
    """The HTTP headers of an event sent as a binary-mode CloudEvent; the body is its JSON."""
    return {
        SIGNATURE_HEADER: signature,
        "ce-specversion": "1.0",
        "ce-id": channel.event_id(event),
        "ce-type": channel.event_type,
        "ce-source": channel.source,
        "ce-subject": channel.subject(event),
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class ReceivedEvent:
    """A signed event as it was delivered, whatever its kind: its data, the signature it came
    with and its other CloudEvents attributes (`ce-*` headers, or a structured event's own)."""

    data: Any
    signature: str
    attributes: dict[str, str]


def event_from_request(request: Request, channel: Channel[EventT]) -> EventT:
    """The event a delivery carries, in any of the three shapes, once its signature is checked;
    a malformed one is refused with a 4xx (400, 415 or 422) and an unsigned or forged one with a
    401, so no queue retries them; without a signing key it is a 503, which the queue retries.
    Every refusal is logged."""
    try:
        return channel.model.model_validate(_signed_event(request).data)
    except ValidationError as exc:
        error: AppError = validation_failed(f"The event is not a {channel.noun}.", exc, "body")
    except AppError as exc:
        error = exc
    _log_refusal(channel.name, request, error)
    raise error


def received_event(request: Request, receiver: str) -> ReceivedEvent:
    """Any signed event a delivery carries, refused (and logged) as `event_from_request` refuses
    one, but for its kind: the receiver reads its attributes to learn what it is."""
    try:
        return _signed_event(request)
    except AppError as exc:
        _log_refusal(receiver, request, exc)
        raise


def _log_refusal(receiver: str, request: Request, error: AppError) -> None:
    logger.warning(
        "%s: refused an event ce-id=%.100s request_id=%s size=%d status=%d: %s %s",
        receiver,
        request.header("ce-id"),
        request.request_id,
        len(request.body),
        error.status,
        error.message,
        error.details or "",
    )


def _signed_event(request: Request) -> ReceivedEvent:
    data, signature, attributes = _event_data(request)
    verify(data, signature, get_settings().event_signing_keys)
    assert isinstance(signature, str)  # `verify` refuses any other
    return ReceivedEvent(data, signature, attributes)


def _event_data(request: Request) -> tuple[Any, object, dict[str, str]]:
    """The event's data, the signature it came with and its other attributes."""
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if not request.body:
        raise _malformed("The request carries no event.")
    if content_type == BATCH:
        raise UnsupportedMediaType(
            "Batched CloudEvents are not accepted; send one event per request.",
            details={"content_type": content_type},
        )
    if content_type != STRUCTURED:
        attributes = {
            name.removeprefix("ce-"): value
            for name, value in request.headers.items()
            if name.startswith("ce-") and name != SIGNATURE_HEADER
        }
        return request.json(), request.header(SIGNATURE_HEADER), attributes
    envelope = parse_body(request.body)
    if not isinstance(envelope, dict):
        raise _malformed("A structured CloudEvent is a JSON object.")
    signature = envelope.get(SIGNATURE_ATTRIBUTE)
    attributes = {
        name: str(value)
        for name, value in envelope.items()
        if name not in _NOT_ATTRIBUTES and isinstance(value, str | int | bool)
    }
    if "data_base64" in envelope:
        try:
            data = parse_json(base64.b64decode(envelope["data_base64"], validate=True))
        except JsonTooDeep as exc:
            raise _malformed(f"The event's data is {exc}.") from exc
        except (ValueError, TypeError, binascii.Error) as exc:
            raise _malformed("The event's data_base64 is not base64-encoded JSON.") from exc
        return data, signature, attributes
    if "data" not in envelope:
        raise _malformed("The CloudEvent carries no data.")
    return envelope["data"], signature, attributes


def _malformed(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="malformed_event")
