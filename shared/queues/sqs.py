"""Queues on Amazon SQS: sending a channel's events, and draining them into its consumer.

boto3 takes its usual configuration from the environment (AWS_REGION or AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_SQS, credentials). Only SQS deployments import this module, so nothing else
pays for importing boto3. Run a channel's consumer as a CronJob or a KEDA-scaled job:

    python -m shared.queues.sqs history --max-messages 1000 --wait-seconds 20
"""

import argparse
import asyncio
import logging
import threading
from functools import cache, partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import boto3
from botocore.config import Config
from pydantic import BaseModel, ValidationError

from shared.queues.channel import Channel
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.queues")

_MAX_BATCH = 10  # SQS hands out at most 10 messages per receive
_MAX_WAIT_S = 20  # and long-polls at most 20 s
_client_lock = threading.Lock()


def _region(queue_url: str) -> str | None:
    """The region an AWS queue URL names (`https://sqs.<region>.amazonaws.com/...`), if any."""
    labels = (urlsplit(queue_url).hostname or "").split(".")
    return labels[1] if len(labels) >= 4 and labels[0] == "sqs" else None


@cache
def _client(queue_url: str, timeout_s: float) -> Any:
    # We retry ourselves; the read timeout leaves room for a long poll.
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s + _MAX_WAIT_S,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    with _client_lock:  # creating boto3 clients is not thread-safe
        session = boto3.session.Session()
        return session.client("sqs", region_name=_region(queue_url), config=config)


def sqs_client(queue_url: str) -> Any:
    """The client for a queue, in the queue's region (else the configured one), built once per
    process and timeout and shared by threads."""
    return _client(queue_url, get_settings().history_publish_timeout_s)


def send_event(queue_url: str, channel: Channel, event: BaseModel) -> None:
    """Send one event; on a FIFO queue its subject orders it and its id deduplicates it."""
    event_id, subject = channel.event_id(event), channel.subject(event)
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": event.model_dump_json(),
        "MessageAttributes": {
            "id": {"DataType": "String", "StringValue": event_id},
            "subject": {"DataType": "String", "StringValue": subject},
            "type": {"DataType": "String", "StringValue": channel.event_type},
        },
    }
    if queue_url.endswith(".fifo"):
        message["MessageGroupId"] = subject
        message["MessageDeduplicationId"] = event_id
    sqs_client(queue_url).send_message(**message)


def drain_sqs(channel: Channel, max_messages: int = 100, wait_seconds: int = 0) -> int:
    """Receive up to `max_messages` events from the channel's queue and consume each; the number
    consumed.

    A message is deleted only once its event is consumed. A malformed one is logged and deleted.
    When consuming fails (the database is down), the message stays for redelivery and the drain
    stops: the next messages would fail the same way.
    """
    return asyncio.run(_drain_on_own_loop(channel, max_messages, wait_seconds))


async def _drain_on_own_loop(channel: Channel, max_messages: int, wait_seconds: int) -> int:
    try:
        return await _drain(channel, max_messages, wait_seconds)
    finally:
        # Consuming may have opened a DeepSeek client (evaluation cells) on this loop, which
        # ends here: its connections close with it. Imported here, as the channels are.
        from shared.deepseek.client import close_deepseek_clients

        await close_deepseek_clients()


async def _drain(channel: Channel, max_messages: int, wait_seconds: int) -> int:
    queue_url = channel.queue(get_settings())[1]
    if not queue_url:
        raise RuntimeError(f"{channel.name.upper()}_QUEUE_URL names no SQS queue")
    client = sqs_client(queue_url)
    received = consumed = 0
    while received < max_messages:
        request = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": min(_MAX_BATCH, max_messages - received),
            "WaitTimeSeconds": max(0, min(wait_seconds, _MAX_WAIT_S)),
            "MessageAttributeNames": ["All"],
        }
        response = await anyio.to_thread.run_sync(partial(client.receive_message, **request))
        batch = response.get("Messages", [])
        if not batch:
            break
        received += len(batch)
        for message in batch:
            try:
                event = channel.model.model_validate_json(message["Body"])
            except ValidationError as exc:
                logger.error(
                    "%s: deleting malformed SQS message %s: %s",
                    channel.name,
                    message["MessageId"],
                    exc.errors(include_url=False, include_input=False),
                )
                await _delete(client, queue_url, message)
                continue
            try:
                await channel.consume(event)
            except Exception:
                logger.warning(
                    "%s: %s %s not handled; left on the queue for redelivery",
                    channel.name,
                    channel.noun,
                    channel.event_id(event),
                    exc_info=True,
                )
                return consumed
            await _delete(client, queue_url, message)
            consumed += 1
    return consumed


async def _delete(client: Any, queue_url: str, message: dict[str, Any]) -> None:
    await anyio.to_thread.run_sync(
        lambda: client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    )


def _channels() -> dict[str, Channel]:
    # Imported on use: each channel brings its consumer's code.
    from shared.workflows.evaluations.worker import CELLS
    from shared.workflows.history.channel import TURNS

    return {TURNS.name: TURNS, CELLS.name: CELLS}


def main() -> None:
    channels = _channels()
    parser = argparse.ArgumentParser(description="Consume a channel's events queued on SQS.")
    parser.add_argument("channel", choices=sorted(channels))
    parser.add_argument("--max-messages", type=int, default=1000)
    parser.add_argument("--wait-seconds", type=int, default=_MAX_WAIT_S)
    arguments = parser.parse_args()
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(name)s %(message)s")
    channel = channels[arguments.channel]
    consumed = drain_sqs(channel, arguments.max_messages, arguments.wait_seconds)
    logger.info("%s: %d events consumed from SQS", channel.name, consumed)


if __name__ == "__main__":
    main()
