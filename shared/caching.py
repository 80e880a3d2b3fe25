"""Values read from MongoDB and kept for a few seconds per process, so that a hot path (every
request's key, every call's project limits) reads them rarely and a change still reaches every
replica within a bound."""

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

KeyT = TypeVar("KeyT", bound=Hashable)
ValueT = TypeVar("ValueT")


class ExpiringCache(Generic[KeyT, ValueT]):
    """Each value kept at most `max_age_s` seconds; past `max_entries`, all are dropped at once
    (the values are cheap to read again, the bound only keeps memory flat)."""

    def __init__(self, max_age_s: float, max_entries: int = 10_000) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._entries: dict[KeyT, tuple[float, ValueT]] = {}
        self._lock = threading.Lock()

    def get(self, key: KeyT, load: Callable[[], ValueT]) -> ValueT:
        """The value kept for `key` if it is recent enough, else `load()`, kept from now on; a
        `load` that raises keeps nothing."""
        now = time.monotonic()
        kept = self._entries.get(key)
        if kept is not None and now - kept[0] <= self.max_age_s:
            return kept[1]
        value = load()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value

    def forget(self, key: KeyT) -> None:
        """Read `key` again next time (this process changed it)."""
        with self._lock:
            self._entries.pop(key, None)
