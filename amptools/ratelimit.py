"""One request limiter shared by every thread of a client (and, through a budget, every process).

Three layers decide when a request may go:

1. **The sliding window** (the hard guarantee): no window of ``period`` seconds ever
   holds more than ``limit`` requests *as the server sees them*. The server sees a
   request at some moment between our send and the response, so a request counts from
   the moment it is granted until ``period`` seconds after it *completes*; in flight it
   always counts. Retries take a permit like any other request.
2. **Smooth pacing** (a GCRA, the "virtual scheduling" form of a token bucket): requests
   are spaced ``period / pace`` apart, with at most :data:`BURST_SHARE` of the limit let
   through back to back. Any tenth of the period then holds at most
   ``limit / 20 + limit / 10`` requests, under the fifth of the limit that a service
   sharing the quota can tolerate, while a long run still reaches the full pace.
3. **Yielding** (AIMD, as TCP does): a throttle answer means someone else is using the
   org's quota, so the pace drops to :data:`DECREASE` of what it was (never under
   :data:`MIN_SHARE` of the limit) and climbs back by :data:`INCREASE` of the limit per
   period. The configured ``limit`` stays the ceiling. A throttle also pauses every
   thread for the answer's ``Retry-After`` (:meth:`RateLimiter.pause`).

Where the counts live is a *ledger*: :class:`LocalLedger` keeps them in this process;
:class:`amptools.budget.SharedBudget` keeps them in a SQLite file every process of the
machine shares. Both use the same arithmetic (:class:`PaceState` and its functions).

The clock and sleep are injectable so tests can check a 600-per-minute limit in
milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from .errors import ConfigurationError, FetchCancelled

__all__ = [
    "BURST_SHARE",
    "DECREASE",
    "INCREASE",
    "MIN_SHARE",
    "LocalLedger",
    "PaceState",
    "Quota",
    "RateLimiter",
    "most_in_window",
]

# How long a waiting thread sleeps at most before it looks again: a released
# permit or a cancel must not wait for a long computed delay to run out.
_POLL = 0.05

# The most requests sent back to back, as a share of the limit. A twentieth keeps any
# tenth of the period under a fifth of the limit (1/20 burst + 1/10 steady = 0.15) with
# room for the scheduling jitter between our grant and the server's arrival.
BURST_SHARE = 1 / 20
# On a throttle the pace halves: the classic multiplicative decrease, which lets the
# other senders (Braze campaigns) have their share back within a request or two.
DECREASE = 0.5
# The pace never drops under a twentieth of the limit, so a long run still progresses
# (and probes whether the quota is free again) while a campaign uses the rest.
MIN_SHARE = 0.05
# The pace climbs back by a tenth of the limit per period: from half to full in five
# periods (five minutes at 600 a minute). Slow enough that a campaign still sending is
# throttled only at the rare top of each climb, fast enough that a run gets its full
# pace back within minutes once the campaign ends.
INCREASE = 0.1
# When nothing has ever been decreased, the "last decrease" is far in the past.
_NEVER = -1e18


@dataclass
class PaceState:
    """The pacing and yielding state of one budget.

    Attributes
    ----------
    share : float
        The pace as a share of the limit when last set (``MIN_SHARE`` to 1).
    updated : float
        Clock time ``share`` was set; the additive climb is counted from here.
    tat : float
        The GCRA's theoretical arrival time of the next request.
    not_before : float
        No request before this clock time (a throttle's pause).
    decreased : float
        Clock time of the last decrease: throttles of requests granted before it were
        caused by the old pace and do not decrease it again.
    """

    share: float = 1.0
    updated: float = 0.0
    tat: float = 0.0
    not_before: float = 0.0
    decreased: float = _NEVER

    def current_share(self, now: float, period: float) -> float:
        """The pace now, as a share of the limit (the climb is counted lazily)."""
        return min(1.0, self.share + INCREASE * max(0.0, now - self.updated) / period)

    def wait(self, now: float, limit: int, period: float) -> float:
        """Seconds until the pace lets the next request go (≤ 0: now)."""
        interval = period / (limit * self.current_share(now, period))
        tolerance = (burst(limit) - 1) * interval
        return max(self.not_before - now, self.tat - tolerance - now)

    def grant(self, now: float, limit: int, period: float) -> None:
        """Account for one request granted at ``now``."""
        self.share = self.current_share(now, period)
        self.updated = now
        self.tat = max(self.tat, now) + period / (limit * self.share)

    def pause(self, now: float, seconds: float) -> None:
        """Hold every request back for ``seconds``; a shorter pause never shortens a longer one."""
        self.not_before = max(self.not_before, now + max(0.0, seconds))

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        """Yield after a throttle answer; True when the pace was decreased.

        Only a request granted after the last decrease decreases the pace again: the
        others were sent at the old pace, which has already been corrected.
        """
        if granted_at is not None and granted_at < self.decreased:
            return False
        self.share = max(MIN_SHARE, self.current_share(now, period) * DECREASE)
        self.updated = self.decreased = now
        # No saved-up burst after a throttle (nor after its pause): the next requests
        # come one by one at the new pace.
        interval = period / (limit * self.share)
        self.tat = max(self.tat, max(now, self.not_before) + (burst(limit) - 1) * interval)
        return True


def burst(limit: int) -> int:
    """How many requests may go back to back under ``limit`` (at least one)."""
    return max(1, int(limit * BURST_SHARE))


def most_in_window(times: Iterable[float], window: float) -> int:
    """The most moments in any half-open window ``[t, t + window)``: what a sliding-window
    limit of ``window`` seconds counts at its fullest.

    Check a log of request times against a limit, ``most_in_window(times, 60.0) <= 600``,
    or its smoothness, with a tenth of the window.

    Parameters
    ----------
    times : iterable of float
        The moments, in seconds, in any order.
    window : float
        The window's length in seconds.

    Returns
    -------
    int
        The largest count; 0 for no moments.
    """
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(frozen=True)
class Quota:
    """What a client used of its rate limit and what it is allowed now (plain data).

    Attributes
    ----------
    used_last_minute : int
        Requests granted in the last 60 seconds: by every client of the scope on this
        machine when ``shared``, else by this client.
    allowed_now : int
        The current pace in requests per minute (lower than ``limit`` after throttles).
    limit : int
        The ceiling in requests per minute (``rate_limit`` scaled to a minute).
    throttles : int
        Throttle answers this client met.
    shared : bool
        Whether the budget is shared with the other processes of the machine.
    """

    used_last_minute: int
    allowed_now: int
    limit: int
    throttles: int
    shared: bool

    def __str__(self) -> str:
        pace = (f"pace {self.allowed_now}/min of {self.limit}/min" if self.allowed_now < self.limit
                else f"pace {self.limit}/min")
        throttles = f"{self.throttles} throttle{'s' if self.throttles != 1 else ''}"
        budget = "budget shared on this machine" if self.shared else "budget of this client"
        return f"quota: {self.used_last_minute} requests in the last minute, {pace}, {throttles}, {budget}"


class Ledger(Protocol):
    """Where a limiter keeps its counts: this process (LocalLedger) or a shared file."""

    shared: bool

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        """``(wait, token)``: granted when ``wait <= 0``, else seconds to wait."""

    def finish(self, token: int, now: float) -> None:
        """The request of ``token`` completed (answered, failed or abandoned)."""

    def pause(self, now: float, seconds: float) -> None:
        """Hold every request back for ``seconds``."""

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        """Yield after a throttle answer (see :meth:`PaceState.throttled`)."""

    def counts(self, now: float, period: float) -> tuple[int, int, float, float]:
        """``(in_window, used_last_minute, share, not_before)``."""


class LocalLedger:
    """The counts of one process: a deque of completion times and a :class:`PaceState`."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: deque[float] = deque()  # completion times, ascending
        self._granted: deque[float] = deque()  # grant times of the last minute
        self._in_flight = 0
        self._tokens = 0
        self.state = PaceState()

    def _expire(self, now: float, period: float) -> None:
        # Same arithmetic as the wait below, so a float edge cannot leave an expired entry
        # counted while the wait says it expired (that let two grants share a window).
        while self._done and self._done[0] + period <= now:
            self._done.popleft()
        while self._granted and self._granted[0] <= now - 60.0:
            self._granted.popleft()

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        with self._lock:
            self._expire(now, period)
            wait = self.state.wait(now, limit, period)
            if self._in_flight + len(self._done) >= limit:
                wait = max(wait, self._done[0] + period - now if self._done else _POLL)
            if wait > 0:
                return wait, 0
            self.state.grant(now, limit, period)
            self._in_flight += 1
            self._granted.append(now)
            self._tokens += 1
            return 0.0, self._tokens

    def finish(self, token: int, now: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._done.append(now)

    def pause(self, now: float, seconds: float) -> None:
        with self._lock:
            self.state.pause(now, seconds)

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        with self._lock:
            return self.state.throttled(now, granted_at, limit, period)

    def counts(self, now: float, period: float) -> tuple[int, int, float, float]:
        with self._lock:
            self._expire(now, period)
            return (self._in_flight + len(self._done), len(self._granted),
                    self.state.current_share(now, period), self.state.not_before)


class RateLimiter:
    """Sliding window, smooth pacing and yielding: at most ``limit`` requests per ``period`` seconds.

    Parameters
    ----------
    limit : int
        Requests allowed in any window of ``period`` seconds: the ceiling of the pace.
    period : float
        The window length in seconds (60 for a per-minute limit).
    clock, sleep : callables
        ``time.monotonic`` and ``time.sleep`` unless a test injects others.
    ledger : Ledger, optional
        Where the counts live; a :class:`LocalLedger` of this limiter's own by default,
        :class:`amptools.budget.SharedBudget` to share them across processes.
    """

    def __init__(
        self,
        limit: int,
        period: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        ledger: Ledger | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"rate limit must be a whole number of requests ≥ 1, got {limit!r}.")
        if not period > 0:
            raise ConfigurationError(f"rate-limit period must be positive seconds, got {period!r}.")
        self.limit = limit
        self.period = float(period)
        self._clock = clock
        self._sleep = sleep
        self.ledger: Ledger = ledger if ledger is not None else LocalLedger()
        # One waiting thread at a time asks the ledger (the others queue here): a shared
        # ledger is a file, and a herd of threads polling it would only add contention.
        self._turn = threading.Lock()
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.granted = 0
        self.throttles = 0

    def __repr__(self) -> str:
        return f"<RateLimiter {self.limit} per {self.period:g}s>"

    def _take_turn(self, cancel: threading.Event | None) -> None:
        if cancel is None:
            self._turn.acquire()
            return
        while not self._turn.acquire(timeout=_POLL):
            if cancel.is_set():
                raise FetchCancelled("cancelled while waiting for the rate limit")

    def acquire(self, cancel: threading.Event | None = None) -> int:
        """Block until a request may be sent; raise FetchCancelled if ``cancel`` is set.

        Returns
        -------
        int
            The permit's token, for :meth:`release` (a thread may also release without it).
        """
        if cancel is not None and cancel.is_set():
            raise FetchCancelled("cancelled while waiting for the rate limit")
        self._take_turn(cancel)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise FetchCancelled("cancelled while waiting for the rate limit")
                now = self._clock()
                wait, token = self.ledger.try_grant(now, self.limit, self.period)
                if wait <= 0:
                    with self._count_lock:
                        self.granted += 1
                    self._local.granted_at = now
                    self._local.__dict__.setdefault("tokens", []).append(token)
                    return token
                if cancel is not None:
                    cancel.wait(min(wait, _POLL))
                else:
                    self._sleep(wait)
        finally:
            self._turn.release()

    def release(self, token: int | None = None) -> None:
        """Mark a granted request as completed (answered, failed or abandoned)."""
        tokens = self._local.__dict__.setdefault("tokens", [])
        if token is None:
            token = tokens.pop() if tokens else 0
        elif token in tokens:
            tokens.remove(token)
        self.ledger.finish(token, self._clock())

    @contextmanager
    def permit(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """``with limiter.permit(): send()`` — acquire, and release however it ends."""
        token = self.acquire(cancel)
        try:
            yield
        finally:
            self.release(token)

    def pause(self, seconds: float) -> None:
        """Hold back every thread for ``seconds``."""
        self.ledger.pause(self._clock(), seconds)

    def throttled(self, seconds: float) -> bool:
        """The service throttled this thread's last request: pause ``seconds`` and slow down.

        Returns
        -------
        bool
            True when the pace was decreased (False when an earlier throttle already
            corrected the pace this request was sent at).
        """
        now = self._clock()
        with self._count_lock:
            self.throttles += 1
        self.ledger.pause(now, seconds)
        return self.ledger.throttled(now, getattr(self._local, "granted_at", None),
                                     self.limit, self.period)

    def in_window(self) -> int:
        """Requests that currently count against the limit (in flight or recent)."""
        return self.ledger.counts(self._clock(), self.period)[0]

    @property
    def pace(self) -> float:
        """The current pace in requests per ``period`` (the limit unless throttled)."""
        return self.limit * self.ledger.counts(self._clock(), self.period)[2]

    @property
    def _not_before(self) -> float:
        return self.ledger.counts(self._clock(), self.period)[3]

    def quota(self) -> Quota:
        """What was used in the last minute, the pace allowed now and the throttles met."""
        _, used, share, _ = self.ledger.counts(self._clock(), self.period)
        per_minute = 60.0 / self.period
        return Quota(used_last_minute=used, allowed_now=round(self.limit * share * per_minute),
                     limit=round(self.limit * per_minute), throttles=self.throttles,
                     shared=self.ledger.shared)
