"""Queues on Amazon SQS: sending a channel's events, and draining them into a consumer.

boto3 takes its usual configuration from the environment (AWS_REGION or AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_SQS, credentials). It is imported when the first SQS client is built, so only
SQS deployments pay for importing it. The drain runs as a CronJob or a KEDA-scaled job through
`shared.workflows.sqs_drain`, which attaches each channel's consumer.
"""

import logging
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
from pydantic import BaseModel, SecretStr, ValidationError

from shared.bounds import parse_json
from shared.clients import process_client
from shared.errors import Unauthenticated
from shared.queues.channel import Channel, Consumer, EventT
from shared.queues.signatures import SIGNATURE_ATTRIBUTE, verify
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.queues")

MAX_WAIT_S = 20  # SQS long-polls at most 20 s
_MAX_BATCH = 10  # and hands out at most 10 messages per receive


def _region(queue_url: str) -> str | None:
    """The region an AWS queue URL names (`https://sqs.<region>.amazonaws.com/...`), if any."""
    labels = (urlsplit(queue_url).hostname or "").split(".")
    return labels[1] if len(labels) >= 4 and labels[0] == "sqs" else None


def _build_client(region: str | None, timeout_s: float) -> Any:
    # Imported here: boto3 is a heavy import that only SQS deployments should pay for.
    import boto3
    from botocore.config import Config

    # We retry ourselves; the read timeout leaves room for a long poll.
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s + MAX_WAIT_S,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.session.Session().client("sqs", region_name=region, config=config)


def sqs_client(queue_url: str) -> Any:
    """The client for a queue, in the queue's region (else the configured one), built once per
    process and timeout and shared by threads."""
    region, timeout_s = _region(queue_url), get_settings().history_publish_timeout_s
    return process_client("sqs", (region, timeout_s), lambda: _build_client(region, timeout_s))


def send_event(queue_url: str, channel: Channel, event: BaseModel, signature: str) -> None:
    """Send one signed event; on a FIFO queue its subject orders it and its id deduplicates
    it."""
    event_id, subject = channel.event_id(event), channel.subject(event)
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": event.model_dump_json(),
        "MessageAttributes": {
            "id": {"DataType": "String", "StringValue": event_id},
            "subject": {"DataType": "String", "StringValue": subject},
            "type": {"DataType": "String", "StringValue": channel.event_type},
            SIGNATURE_ATTRIBUTE: {
                "DataType": "String",
                "StringValue": signature,
            },
        },
    }
    if queue_url.endswith(".fifo"):
        message["MessageGroupId"] = subject
        message["MessageDeduplicationId"] = event_id
    sqs_client(queue_url).send_message(**message)


async def drain_sqs(
    channel: Channel, consume: Consumer, max_messages: int = 100, wait_seconds: int = 0
) -> int:
    """Receive up to `max_messages` events from the channel's queue and `consume` each; the
    number consumed.

    A message is deleted only once its event is consumed. A malformed or unsigned one (or one
    whose signature is not ours) is logged and deleted; without EVENT_SIGNING_KEY nothing is
    drained.
    When consuming fails (the database is down), the message stays for redelivery and the drain
    stops: the next messages would fail the same way.
    """
    queue_url = channel.queue(get_settings())[1]
    if not queue_url:
        raise RuntimeError(f"{channel.name.upper()}_QUEUE_URL names no SQS queue")
    keys = get_settings().event_signing_keys
    if not keys:
        # Every message would look forged and be deleted: lose none, drain none.
        raise RuntimeError("EVENT_SIGNING_KEY is not set: queued events cannot be checked")
    client = sqs_client(queue_url)
    received = consumed = 0
    while received < max_messages:
        request = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": min(_MAX_BATCH, max_messages - received),
            "WaitTimeSeconds": max(0, min(wait_seconds, MAX_WAIT_S)),
            "MessageAttributeNames": ["All"],
        }
        response = await anyio.to_thread.run_sync(partial(client.receive_message, **request))
        batch = response.get("Messages", [])
        if not batch:
            break
        received += len(batch)
        for message in batch:
            event = _signed_event(channel, message, keys)
            if event is None:
                await _delete(client, queue_url, message)
                continue
            try:
                await consume(event)
            except Exception as exc:
                # The failure's type only: a driver's or a validator's message may quote it.
                logger.warning(
                    "%s: %s %s not handled (%s); left on the queue for redelivery",
                    channel.name,
                    channel.noun,
                    channel.event_id(event),
                    type(exc).__name__,
                )
                return consumed
            await _delete(client, queue_url, message)
            consumed += 1
    return consumed


def _signed_event(
    channel: Channel[EventT], message: dict[str, Any], keys: list[SecretStr]
) -> EventT | None:
    """The message's event, or None (logged) when it is not JSON, not signed by us, or not an
    event of the channel."""
    attributes = message.get("MessageAttributes", {})
    signature = attributes.get(SIGNATURE_ATTRIBUTE, {}).get("StringValue")
    try:
        data = parse_json(message["Body"])
        verify(data, signature, keys)
        return channel.model.model_validate(data)
    except ValueError as exc:  # malformed JSON, or a ValidationError
        reason: object = (
            exc.errors(include_url=False, include_input=False)
            if isinstance(exc, ValidationError)
            else "not JSON"
        )
    except Unauthenticated as exc:
        reason = exc.message
    logger.error(
        "%s: deleting SQS message %s, which is not a signed %s: %s",
        channel.name,
        message["MessageId"],
        channel.noun,
        reason,
    )
    return None


async def _delete(client: Any, queue_url: str, message: dict[str, Any]) -> None:
    await anyio.to_thread.run_sync(
        lambda: client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    )
