"""Draining a channel's events queued on SQS into its consumer, as a CronJob or a KEDA job:

python -m shared.workflows.sqs_drain history --max-messages 1000 --wait-seconds 20
"""

import argparse
import asyncio
import logging

from pydantic import BaseModel

from shared.clients import close_clients
from shared.logs import apply_log_level, configure_logging
from shared.queues.channel import Channel, Consumer
from shared.queues.sqs import MAX_WAIT_S, drain_sqs
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.worker import consume_cell
from shared.workflows.history.channel import TURNS
from shared.workflows.history.writer import consume_turn

logger = logging.getLogger("better_assistant.queues")

CONSUMERS: dict[str, tuple[Channel, Consumer[BaseModel]]] = {
    TURNS.name: (TURNS, consume_turn),
    CELLS.name: (CELLS, consume_cell),
}


def drain(channel_name: str, max_messages: int = 100, wait_seconds: int = 0) -> int:
    """Consume up to `max_messages` events of the named channel from SQS on an event loop of its
    own, whose clients (DeepSeek, for evaluation cells) close with it; the number consumed."""
    channel, consume = CONSUMERS[channel_name]

    async def drain_and_close() -> int:
        try:
            return await drain_sqs(channel, consume, max_messages, wait_seconds)
        finally:
            await close_clients()

    return asyncio.run(drain_and_close())


def main() -> None:
    parser = argparse.ArgumentParser(description="Consume a channel's events queued on SQS.")
    parser.add_argument("channel", choices=sorted(CONSUMERS))
    parser.add_argument("--max-messages", type=int, default=1000)
    parser.add_argument("--wait-seconds", type=int, default=MAX_WAIT_S)
    arguments = parser.parse_args()
    configure_logging(f"sqs-drain-{arguments.channel}")
    apply_log_level()
    consumed = drain(arguments.channel, arguments.max_messages, arguments.wait_seconds)
    logger.info("%s: %d events consumed from SQS", arguments.channel, consumed)


if __name__ == "__main__":
    main()
