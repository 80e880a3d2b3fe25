"""A circuit breaker: after a dependency fails, callers are refused at once instead of waiting.

Waiting on a dead dependency is what hurts: every request holds a worker thread for the whole
driver timeout and the requests behind it (health checks included) queue. Once the breaker is
open, callers ask `is_open` (a lock-free read) and answer "unavailable" without touching the
dependency; one background thread probes it and closes the breaker as soon as it answers.
"""

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("better_assistant")


class Breaker:
    """Open from the first failure reported with `trip` until `probe` succeeds again.

    `probe` is a cheap round trip bounded by its own short timeout; it raises when the
    dependency does not answer. It runs on one daemon thread per breaker, only while open and
    asked about: a breaker nobody has asked about for `idle_s` (a configuration the process no
    longer uses) stops probing until it is asked again.
    """

    def __init__(
        self, name: str, probe: Callable[[], None], pause_s: float = 0.1, idle_s: float = 30.0
    ) -> None:
        self.name = name
        self._probe = probe
        self._pause_s = pause_s
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._open = False
        self._prober: threading.Thread | None = None
        self._asked_at = time.monotonic()
        # Counts trips, so that a probe that started before the latest trip does not close it.
        self._trips = 0

    @property
    def is_open(self) -> bool:
        """Whether callers should be refused; lock-free while closed."""
        if not self._open:
            return False
        self._asked_at = time.monotonic()
        if self._prober is None:
            with self._lock:
                self._start_probing()
        return self._open

    def trip(self, reason: BaseException | str) -> None:
        """Open the breaker (if it is not already) and make sure a probe is running."""
        with self._lock:
            self._trips += 1
            self._asked_at = time.monotonic()
            if not self._open:
                self._open = True
                logger.warning("%s breaker open: %s", self.name, _describe(reason))
            self._start_probing()

    def _start_probing(self) -> None:
        # Called with the lock held.
        if self._open and self._prober is None:
            self._prober = threading.Thread(
                target=self._probe_until_answered, name=f"{self.name}-probe", daemon=True
            )
            self._prober.start()

    def _probe_until_answered(self) -> None:
        opened = time.monotonic()
        while True:
            with self._lock:
                trips = self._trips
            try:
                self._probe()
            except Exception:
                with self._lock:
                    if time.monotonic() - self._asked_at > self._idle_s:
                        self._prober = None
                        return
                time.sleep(self._pause_s)
                continue
            with self._lock:
                # A failure reported while this probe ran may come from a request that began
                # before the dependency returned, or from a fresh outage: probe once more.
                if self._trips != trips:
                    continue
                self._open = False
                self._prober = None
            logger.warning(
                "%s breaker closed: answering again after %.1f s",
                self.name,
                time.monotonic() - opened,
            )
            return


def _describe(reason: BaseException | str) -> str:
    """The failure's type only: driver messages name hosts and topology details."""
    return reason if isinstance(reason, str) else type(reason).__name__
