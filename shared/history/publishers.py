"""Publishing finished chat turns to the history queue that `HISTORY_QUEUE` chooses.

How each queue works, and the retries and fallbacks that keep every turn, is in
`shared.queues.publishers`.
"""

from shared.history.channel import TURNS
from shared.queues.publishers import Publisher, publisher_for


def get_publisher() -> Publisher:
    """The history queue's publisher, built on first use and then reused."""
    return publisher_for(TURNS)
