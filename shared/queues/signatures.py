"""Queue events signed with HMAC-SHA256, so a queue-triggered function takes only our events.

The signature covers the event's data (which holds its id) as canonical JSON (keys sorted, no
spaces), so it holds whichever way the event travels: a binary-mode CloudEvent (`ce-signature`
header), a structured one (`signature` attribute), OpenFaaS's plain JSON body (`ce-signature`
header), or an SQS message (`signature` attribute). It is checked on the data as received,
before the data is read as an event: a caller without the key learns nothing of the event's shape,
and a field a newer publisher adds does not break an older consumer's check.
"""

import hashlib
import hmac
import json
import re
from typing import Any

from pydantic import BaseModel, SecretStr

from shared.errors import ServiceUnavailable, Unauthenticated

SIGNATURE_HEADER = "ce-signature"
SIGNATURE_ATTRIBUTE = "signature"
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class NoSigningKey(Exception):
    """EVENT_SIGNING_KEY is not set: an event cannot be signed."""


def _signature(key: SecretStr, data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Received data may hold half a surrogate pair (JSON allows it): it is signed as any text,
    # so such an event is refused by its signature or its model, not by an encoding error.
    message = canonical.encode("utf-8", "surrogatepass")
    digest = hmac.new(key.get_secret_value().encode(), message, hashlib.sha256)
    return digest.hexdigest()


def sign(event: BaseModel, keys: list[SecretStr]) -> str:
    """The event's signature with the first key."""
    return sign_data(event.model_dump(mode="json"), keys)


def sign_data(data: Any, keys: list[SecretStr]) -> str:
    """The signature of event data (any JSON value) with the first key."""
    if not keys:
        raise NoSigningKey("EVENT_SIGNING_KEY is not set: queue events cannot be signed")
    return _signature(keys[0], data)


def verify(data: Any, signature: object, keys: list[SecretStr]) -> None:
    """Refuse (401) event data without a signature, or whose signature no key gives; 503 when
    no key is configured, so the queue keeps the event until one is."""
    if not keys:
        raise ServiceUnavailable(
            "EVENT_SIGNING_KEY is not set: queue events cannot be checked.",
            code="signing_not_configured",
        )
    if not signature:
        raise Unauthenticated("The event is not signed.", code="unsigned_event")
    valid = isinstance(signature, str) and _SIGNATURE.fullmatch(signature) is not None
    if not valid or not any(hmac.compare_digest(_signature(key, data), signature) for key in keys):
        raise Unauthenticated("The event's signature is not valid.", code="invalid_signature")
