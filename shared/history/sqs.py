"""The history queue on Amazon SQS: sending turns, and draining them into MongoDB.

boto3 takes its usual configuration from the environment (AWS_REGION or AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_SQS, credentials). Only SQS deployments import this module, so nothing else
pays for importing boto3. Run the consumer as a CronJob or a KEDA-scaled job:

    python -m shared.history.sqs --max-messages 1000 --wait-seconds 20
"""

import argparse
import logging
import threading
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from pydantic import ValidationError

from shared.dialogs.models import TurnEvent
from shared.history.cloudevents import TURN_COMPLETED
from shared.history.writer import HistoryWriter
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.history")

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


def send_turn(queue_url: str, turn: TurnEvent) -> None:
    """Send one turn; on a FIFO queue the dialog orders it and the turn id deduplicates it."""
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": turn.model_dump_json(),
        "MessageAttributes": {
            "turn_id": {"DataType": "String", "StringValue": turn.turn_id},
            "dialog_id": {"DataType": "String", "StringValue": turn.dialog_id},
            "type": {"DataType": "String", "StringValue": TURN_COMPLETED},
        },
    }
    if queue_url.endswith(".fifo"):
        message["MessageGroupId"] = turn.dialog_id
        message["MessageDeduplicationId"] = turn.turn_id
    sqs_client(queue_url).send_message(**message)


def drain_sqs(max_messages: int = 100, wait_seconds: int = 0) -> int:
    """Receive up to `max_messages` turns from HISTORY_QUEUE_URL and write each; the number written.

    A message is deleted only once its turn is written (or its dialog is gone). A malformed one
    is logged and deleted. When the database fails, the message stays for redelivery and the
    drain stops: the next messages would fail the same way.
    """
    queue_url = get_settings().history_queue_url
    if not queue_url:
        raise RuntimeError("HISTORY_QUEUE_URL names no SQS queue")
    client = sqs_client(queue_url)
    received = written = 0
    while received < max_messages:
        batch = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(_MAX_BATCH, max_messages - received),
            WaitTimeSeconds=max(0, min(wait_seconds, _MAX_WAIT_S)),
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        received += len(batch)
        for message in batch:
            try:
                turn = TurnEvent.model_validate_json(message["Body"])
            except ValidationError as exc:
                logger.error(
                    "history: deleting malformed SQS message %s: %s",
                    message["MessageId"],
                    exc.errors(include_url=False, include_input=False),
                )
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                continue
            try:
                result = HistoryWriter().write_turn(turn)
            except Exception:
                logger.warning(
                    "history: turn %s not written; left on the queue for redelivery",
                    turn.turn_id,
                    exc_info=True,
                )
                return written
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            written += result.written
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Write chat turns queued on SQS into MongoDB.")
    parser.add_argument("--max-messages", type=int, default=1000)
    parser.add_argument("--wait-seconds", type=int, default=_MAX_WAIT_S)
    arguments = parser.parse_args()
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(name)s %(message)s")
    written = drain_sqs(arguments.max_messages, arguments.wait_seconds)
    logger.info("history: %d turns written from %s", written, get_settings().history_queue_url)


if __name__ == "__main__":
    main()
