"""Queue events signed with HMAC-SHA256, so a queue-triggered function takes only our events.

The signature covers the event's id and its data as canonical JSON (keys sorted, no spaces), so
it holds whichever way the event travels: a binary-mode CloudEvent (`ce-signature` header), a
structured one (`signature` attribute), OpenFaaS's plain JSON body (`ce-signature` header), or an
SQS message (`signature` attribute).
"""

import hashlib
import hmac
import json
from typing import Any

from pydantic import BaseModel, SecretStr

from shared.errors import Unauthenticated
from shared.queues.channel import Channel

SIGNATURE_HEADER = "ce-signature"
SIGNATURE_ATTRIBUTE = "signature"


class NoSigningKey(Exception):
    """EVENT_SIGNING_KEY is not set: an event cannot be signed."""


def _signature(key: SecretStr, event_id: str, data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = event_id.encode() + b"\n" + canonical.encode()
    return hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def sign(channel: Channel, event: BaseModel, keys: list[SecretStr]) -> str:
    """The event's signature with the first key."""
    if not keys:
        raise NoSigningKey("EVENT_SIGNING_KEY is not set: queue events cannot be signed")
    return _signature(keys[0], channel.event_id(event), event.model_dump(mode="json"))


def verify(
    channel: Channel, event: BaseModel, signature: str | None, keys: list[SecretStr]
) -> None:
    """Refuse (401) an event without a signature, or whose signature no key gives."""
    if not signature:
        raise Unauthenticated("The event is not signed.", code="unsigned_event")
    data = event.model_dump(mode="json")
    event_id = channel.event_id(event)
    if not any(hmac.compare_digest(_signature(key, event_id, data), signature) for key in keys):
        raise Unauthenticated("The event's signature is not valid.", code="invalid_signature")
