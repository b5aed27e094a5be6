"""One request limiter shared by every thread of a client.

The guarantee: no sliding window of ``period`` seconds ever holds more than
``limit`` requests *as the server sees them*. The server sees a request at some
moment between our send and the response, so a request counts from the moment
it is granted until ``period`` seconds after it *completes*; in flight it always
counts. Retries take a permit like any other request. A throttle answer calls
:meth:`RateLimiter.pause`, which holds back every thread of the client, not one.

The clock and sleep are injectable so tests can check a 600-per-minute limit in
milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import ConfigurationError, FetchCancelled

__all__ = ["RateLimiter"]

# How long a waiting thread sleeps at most before it looks again: a released
# permit or a cancel must not wait for a long computed delay to run out.
_POLL = 0.05


class RateLimiter:
    """A sliding-window limiter: at most ``limit`` requests per ``period`` seconds.

    Parameters
    ----------
    limit : int
        Requests allowed in any window of ``period`` seconds.
    period : float
        The window length in seconds (60 for a per-minute limit).
    clock, sleep : callables
        ``time.monotonic`` and ``time.sleep`` unless a test injects others.
    """

    def __init__(
        self,
        limit: int,
        period: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"rate limit must be a whole number of requests ≥ 1, got {limit!r}.")
        if not period > 0:
            raise ConfigurationError(f"rate-limit period must be positive seconds, got {period!r}.")
        self.limit = limit
        self.period = float(period)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._done: deque[float] = deque()  # completion times, ascending
        self._in_flight = 0
        self._not_before = 0.0
        self.granted = 0

    def __repr__(self) -> str:
        return f"<RateLimiter {self.limit} per {self.period:g}s>"

    def _wait_needed(self, now: float) -> float:
        # Same arithmetic as the wait below, so a float edge cannot leave an expired entry
        # counted while the wait says it expired (that let two grants share a window).
        while self._done and self._done[0] + self.period <= now:
            self._done.popleft()
        wait = self._not_before - now
        if self._in_flight + len(self._done) >= self.limit:
            wait = max(wait, self._done[0] + self.period - now if self._done else _POLL)
        return wait

    def acquire(self, cancel: threading.Event | None = None) -> None:
        """Block until a request may be sent; raise FetchCancelled if ``cancel`` is set."""
        while True:
            if cancel is not None and cancel.is_set():
                raise FetchCancelled("cancelled while waiting for the rate limit")
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._in_flight += 1
                    self.granted += 1
                    return
            if cancel is not None:
                cancel.wait(min(wait, _POLL))
            else:
                self._sleep(wait)

    def release(self) -> None:
        """Mark a granted request as completed (answered, failed or abandoned)."""
        with self._lock:
            self._in_flight -= 1
            self._done.append(self._clock())

    @contextmanager
    def permit(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """``with limiter.permit(): send()`` — acquire, and release however it ends."""
        self.acquire(cancel)
        try:
            yield
        finally:
            self.release()

    def pause(self, seconds: float) -> None:
        """Hold back every thread for ``seconds`` (after a throttle answer)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + max(0.0, seconds))

    def in_window(self) -> int:
        """Requests that currently count against the limit (in flight or recent)."""
        with self._lock:
            self._wait_needed(self._clock())
            return self._in_flight + len(self._done)
