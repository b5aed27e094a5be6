"""One request limiter shared by every thread of a client (and, through a budget, every client).

An org may make 600 requests a minute across all its endpoints, and Braze campaigns
draw on the same quota while they send. A sliding-window limiter shows a client nothing
but its throttles, and what a client sent stays in the window for a whole period. So:

1. **The sliding window** (the hard guarantee): no window of ``period`` seconds holds
   more of the scope's requests than the pace allows (never more than the client's
   ``limit``), *as the server sees them*: a request counts from its grant until
   ``period`` seconds after it completes. Retries take a permit like any other request.
2. **Smooth pacing** (a GCRA, the "virtual scheduling" form of a token bucket): each
   client's requests are spaced ``1 / pace`` apart, with at most :data:`BURST_SHARE` of
   its pace per period let through back to back.
3. **Slow start** (as TCP's): a fresh run spends its first window at
   :data:`START_SHARE` of its ceiling, because nothing it sends in its first window
   leaves the window before the window ends — a throttle then would cost others a
   whole period. After :data:`PROBE` of a period without a throttle it doubles its pace
   every :data:`DOUBLING` of a period up to the ceiling (the full pace within a minute
   at the 60-second window).
4. **Yielding** (AIMD, tuned to a sliding window): a throttle means the window is full.
   The scope's own count in the window is then the room the others left: the pace drops
   to :data:`DECREASE` of it, holds for :data:`HOLD` periods (its requests leave the
   window meanwhile), climbs back by :data:`INCREASE` of the ceiling per period up to the
   room it had, then doubles every :data:`BEYOND` of a period (the others stopped?).
   A throttle also pauses every client for the answer's ``Retry-After``.
5. **Memory**: a run that starts within :data:`MEMORY` periods of a throttle begins at
   the room that throttle left, not from the start; a run that starts after an idle
   spell begins at its last pace halved per idle period (never below the start).
6. **Fair shares**: clients of one scope (several notebooks, a notebook and the CLI)
   split the scope's pace max-min fairly by their ceilings, so a cautious client is
   never starved; the scope never exceeds the largest ceiling among its active clients.

Where the counts live is a *ledger*: :class:`LocalLedger` keeps them in this process;
:class:`amptools.budget.SharedBudget` in a SQLite file every process of the machine
shares. Both use the same arithmetic (:class:`PaceState`, :class:`ClientPace`,
:func:`fair_shares`). A shared ledger that fails (a locked or deleted file) never costs
an answer: the limiter paces alone until it is usable again.

The clock and sleep are injectable so tests can check a 600-per-minute limit in
milliseconds. ``docs/quota.md`` explains the choices for users.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from .errors import ConfigurationError, FetchCancelled, whole_number
from .query import ORG_REQUESTS_PER_MINUTE

__all__ = [
    "BEYOND",
    "BURST_SHARE",
    "DECREASE",
    "DOUBLING",
    "HOLD",
    "INCREASE",
    "MEMORY",
    "MIN_SHARE",
    "ORG_LIMIT",
    "POLL",
    "PROBE",
    "START_SHARE",
    "ClientPace",
    "Counts",
    "LocalLedger",
    "PaceState",
    "Quota",
    "RateLimiter",
    "fair_shares",
    "most_in_window",
]

log = logging.getLogger("amptools")

#: The requests a minute an Amplitude org may make across all its endpoints (one name for it:
#: :data:`amptools.query.ORG_REQUESTS_PER_MINUTE`).
ORG_LIMIT = ORG_REQUESTS_PER_MINUTE

#: How long a waiting thread sleeps at most before it looks again: a released permit or
#: a cancel must not wait for a long computed delay to run out.
POLL = 0.05

# The most requests sent back to back, as a share of a client's pace per period (and a
# fresh run's first burst, of its ceiling). A twentieth keeps any tenth of the period
# under a fifth of the limit (1/20 burst + 1/10 steady = 0.15), with room for the jitter
# between our grant and the server's arrival.
BURST_SHARE = 1 / 20
# A fresh run's pace, as a share of its ceiling, for its first PROBE of a period: what a
# campaign leaving a fifth of the org's quota can absorb in one window.
START_SHARE = 0.2
PROBE = 0.75
# Then the pace doubles every DOUBLING of a period: from the start to the ceiling in
# about ten seconds at the 60-second window (97% of the ceiling within the first minute).
DOUBLING = 1 / 15
# On a throttle the pace drops to this share of the scope's own requests in the window.
DECREASE = 0.85
# ...never under a twentieth of the ceiling, so a long run still progresses (and
# notices when the quota is free again) while a campaign uses the rest...
MIN_SHARE = 0.05
# ...holds for a whole window, while its requests leave it...
HOLD = 1.0
# ...climbs back slowly (a share of the ceiling per period) up to the room it had, where
# the next throttle would be...
INCREASE = 0.03
# ...and beyond that room doubles every half period: the others have stopped.
BEYOND = 0.5
# A throttle is remembered this many periods: a run starting meanwhile starts at its room.
MEMORY = 10.0
# A scope without any grant (or pause) for two periods is idle: its next run restarts (see
# PaceState). Two, so that a client whose ceiling is one request a period is never idle.
IDLE = 2.0
# A permit of a ledger in this process needs no number: its finish() only counts.
_UNNUMBERED = 0
# When nothing has ever been decreased, the "last decrease" is far in the past.
_NEVER = -1e18

_K = TypeVar("_K", bound=Hashable)


def fair_shares(total: float, ceilings: Mapping[_K, float]) -> dict[_K, float]:
    """Max-min fair shares of ``total`` among clients capped at their ``ceilings``.

    Water-filling: every client gets an equal share, a client whose ceiling is lower
    keeps its ceiling, and what it leaves is shared by the others again.

    >>> fair_shares(540, {"a": 540, "b": 300, "c": 60})
    {'a': 240.0, 'b': 240.0, 'c': 60}
    """
    shares: dict[_K, float] = {}
    left = max(0.0, total)
    waiting = sorted(ceilings, key=lambda client: ceilings[client])
    while waiting:
        equal = left / len(waiting)
        client = waiting[0]
        if ceilings[client] <= equal:  # pragma: no mutate — mutmut: < is the same (a ceiling equal to the share is the share)
            shares[client] = ceilings[client]
            left -= ceilings[client]
            waiting.pop(0)
            continue
        for client in waiting:
            shares[client] = equal
        break
    return {client: shares[client] for client in ceilings}


@dataclass
class PaceState:
    """The pace of one scope (every client of one org on a ledger): plain numbers.

    The pace is evaluated lazily from the moment it was last set, so a state written by
    one process is read right by another. Rates are requests per second.

    Attributes
    ----------
    rate : float
        The scope's pace when last set (0: never set — a fresh start).
    updated : float
        Clock time ``rate`` was set; the climb is counted from here.
    probe_until : float
        End of the slow start's first stretch at :data:`START_SHARE` (no climb before).
    peak : float
        The room the last throttle showed (the scope's requests per second in its
        window then); 0 when none is remembered.
    decreased : float
        Clock time of the last decrease: throttles of requests granted before it were
        caused by the old pace and do not decrease it again.
    not_before : float
        No request before this clock time (a throttle's pause).
    active : float
        Clock time of the scope's last grant (an idle scope restarts).
    """

    rate: float = 0.0
    updated: float = 0.0
    probe_until: float = 0.0
    peak: float = 0.0
    decreased: float = _NEVER
    not_before: float = 0.0
    active: float = _NEVER

    def _remembers(self, now: float, period: float) -> bool:
        return self.peak > 0 and now - self.decreased < MEMORY * period

    def restart(self, now: float, ceiling: float, period: float) -> None:
        """Begin a run: fresh, after an idle spell, or where a recent throttle left off."""
        start = START_SHARE * ceiling
        if self._remembers(now, period):
            # The room a campaign left a moment ago: start there, climb slowly.
            self.rate = max(MIN_SHARE * ceiling, min(ceiling, DECREASE * self.peak))
            self.probe_until = now
        else:
            self.peak = 0.0
            idle = max(0.0, now - max(self.active, self.not_before)) / period
            self.rate = max(start, min(ceiling, self.rate * math.exp2(-idle)))  # halves every idle period
            # Only a true start (nothing recent to go on) spends its first stretch at the start pace.
            self.probe_until = now + PROBE * period if self.rate <= start else now
        self.updated = now

    def _fresh(self, now: float, period: float) -> bool:
        return self.rate <= 0 or now - max(self.active, self.not_before) > IDLE * period

    def starts_fresh(self, now: float, period: float) -> bool:
        """Whether a grant now begins a run from the start (no recent throttle to go on)."""
        return self._fresh(now, period) and not self._remembers(now, period)

    def current(self, now: float, ceiling: float, period: float) -> float:
        """The scope's pace now, requests per second (``ceiling``: the largest ceiling of
        its active clients)."""
        if self._fresh(now, period):
            probe = replace(self)  # what a grant now would restart from, left unchanged
            probe.restart(now, ceiling, period)
            return probe._climbed(now, ceiling, period)
        return self._climbed(now, ceiling, period)

    def _climbed(self, now: float, ceiling: float, period: float) -> float:
        rate, since = self.rate, self.updated
        if not self._remembers(now, period):
            # Slow start: nothing before the probe's end, then doubling — never under the
            # start pace of the largest ceiling now active (a cautious client may have
            # started the scope before a larger one joined).
            rate = max(rate, START_SHARE * ceiling)
            grow = max(now, self.probe_until) - max(since, self.probe_until)
            return min(ceiling, rate * math.exp2(max(0.0, grow) / (DOUBLING * period)))
        rate = max(rate, MIN_SHARE * ceiling)
        start = max(since, self.decreased + HOLD * period)
        if now <= start:
            return min(ceiling, rate)
        elapsed = now - start
        if rate < self.peak:  # pragma: no mutate — mutmut: <= is the same (at the peak the climb takes 0 s)
            step = INCREASE * ceiling / period  # per second
            needed = (self.peak - rate) / step
            # (mutmut: < is the same: at `needed` the climb is at the peak, doubling from 2**0.)
            if elapsed <= needed:  # pragma: no mutate
                return min(ceiling, rate + step * elapsed)
            rate, elapsed = self.peak, elapsed - needed
        return min(ceiling, rate * math.exp2(elapsed / (BEYOND * period)))

    def grant(self, now: float, ceiling: float, period: float) -> None:
        """Account for one request of the scope granted at ``now``."""
        if self._fresh(now, period):
            self.restart(now, ceiling, period)
        self.rate = self._climbed(now, ceiling, period)
        self.updated = self.active = now

    def pause(self, now: float, seconds: float) -> None:
        """Hold every request back for ``seconds``; a shorter pause never shortens a longer one."""
        self.not_before = max(self.not_before, now + max(0.0, seconds))

    def throttled(self, now: float, granted_at: float | None, in_window: int, ceiling: float,
                  period: float) -> bool:
        """Yield after a throttle answer; True when the pace was decreased.

        ``in_window`` is the scope's own requests in the window now: the window is full,
        so that is the room the others left. Only a request granted after the last
        decrease decreases the pace again: the others were sent at the old pace, which
        has already been corrected.
        """
        if granted_at is not None and granted_at <= self.decreased:
            return False
        floor = MIN_SHARE * ceiling
        self.peak = max(floor, in_window / period)
        self.rate = max(floor, DECREASE * self.peak)
        self.updated = self.decreased = self.probe_until = now
        return True


@dataclass
class ClientPace:
    """One client's GCRA: its requests spaced by its share of the scope's pace, with at
    most :data:`BURST_SHARE` of that pace per period back to back."""

    tat: float = 0.0
    seen_decrease: float = _NEVER
    credit: int = 0  # requests that may go at once, beyond the pace

    @staticmethod
    def burst(share: float, period: float) -> int:
        """Requests a client may send back to back at ``share`` requests per second."""
        return max(1, int(share * period * BURST_SHARE))

    def wait(self, now: float, share: float, period: float) -> float:
        """Seconds until this client's pace lets its next request go (≤ 0: now)."""
        if self.credit > 0:
            return 0.0
        return self.tat - (self.burst(share, period) - 1) / share - now

    def grant(self, now: float, share: float) -> None:
        if self.credit > 0:
            self.credit -= 1
            return
        self.tat = max(self.tat, now) + 1.0 / share

    def give_credit(self, requests: int) -> None:
        """Let ``requests`` more go at once (a fresh run's first burst: a small fetch is
        over at once, while a large one still spends its first window slowly)."""
        self.credit = max(self.credit, requests)

    def after_decrease(self, state: PaceState, share: float, period: float) -> None:
        """No saved-up burst after a throttle (nor after its pause): the next requests
        come one by one at the new pace."""
        if state.decreased > self.seen_decrease:
            self.seen_decrease = state.decreased
            self.credit = 0
            saved = (self.burst(share, period) - 1) / share
            self.tat = max(self.tat, state.not_before + saved, state.decreased + saved)


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
class Counts:
    """What a ledger knows of its scope now (for :meth:`RateLimiter.quota`)."""

    in_window: int
    used_last_minute: int
    pace: float  # this client's share, requests per second
    not_before: float
    clients: int = 1


@dataclass(frozen=True)
class Quota:
    """What a client used of its rate limit and what it is allowed now (plain data).

    Attributes
    ----------
    used_last_minute : int
        Requests granted in the last 60 seconds: by every client of the scope on the
        ledger when ``shared``, else by this client.
    allowed_now : int
        This client's pace now, requests per minute: lower than ``limit`` while a run
        starts, after throttles, or while other clients of the org share the budget.
    limit : int
        The ceiling in requests per minute (``rate_limit`` scaled to a minute).
    throttles : int
        Throttle answers this client met.
    shared : bool
        Whether the budget is shared with the org's other clients on the ledger.
    clients : int
        Clients of the org active on the ledger now (this one included).
    budget : str
        Where the budget lives: ``"this client"``, ``"this machine"``, or a team's
        budget (a Redis URL without its password); ``"… (alone: …)"`` while the shared
        budget is unusable and the client paces alone.
    """

    used_last_minute: int
    allowed_now: int
    limit: int
    throttles: int
    shared: bool
    clients: int = 1
    budget: str = ""

    def __str__(self) -> str:
        pace = (f"pace {self.allowed_now}/min of {self.limit}/min" if self.allowed_now < self.limit
                else f"pace {self.limit}/min")
        throttles = f"{self.throttles} throttle{'s' if self.throttles != 1 else ''}"
        where = self.budget or ("this machine" if self.shared else "this client")
        budget = f"budget of {where}" if where == "this client" else f"budget shared on {where}"
        if self.clients > 1:
            budget += f" by {self.clients} clients"
        return f"quota: {self.used_last_minute} requests in the last minute, {pace}, {throttles}, {budget}"


class Ledger(Protocol):
    """Where a limiter keeps its counts: this process (LocalLedger) or a shared budget.

    Each ledger object belongs to one client (one limiter) of one scope. A shared ledger
    may also have ``stand_in()``: the ledger its limiter paces with while it fails (a
    :class:`LocalLedger` when it has none).
    """

    shared: bool
    where: str

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        """``(wait, token)``: granted when ``wait <= 0``, else seconds to wait."""

    def finish(self, token: int, now: float) -> None:
        """The request of ``token`` completed (answered, failed or abandoned)."""

    def pause(self, now: float, seconds: float) -> None:
        """Hold every request of the scope back for ``seconds``."""

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        """Yield after a throttle answer (see :meth:`PaceState.throttled`)."""

    def counts(self, now: float, limit: int, period: float) -> Counts:
        """The scope's counts now."""


def _expired(done: float, period: float, now: float) -> bool:
    return done + period <= now and done <= now - period


def grant_wait(state: PaceState, pace: ClientPace, *, now: float, share: float, period: float,
               in_window: int, mine: int, limit: int, ceiling: float,
               oldest: Callable[[], float | None]) -> float:
    """Seconds until a client may send (≤ 0: now): the one decision every ledger makes.

    ``in_window`` and ``mine`` count the scope's and the client's requests in the window;
    ``oldest()`` gives when the earliest completed one leaves it (None: none completed).
    """
    if state.starts_fresh(now, period):
        # A fresh run's first burst is the one its ceiling allows: a small fetch is over at once.
        pace.give_credit(ClientPace.burst(limit / period, period) - ClientPace.burst(share, period))
    pace.after_decrease(state, share, period)
    wait = max(state.not_before - now, pace.wait(now, share, period))
    allowed = min(ceiling, state.current(now, ceiling, period)) * period
    if in_window >= max(1.0, allowed) or mine >= limit:
        leaves = oldest()
        # The float edge: a wait that leaves it not yet expired is a poll.
        wait = max(wait, max(leaves + period - now, 1e-9) if leaves is not None else POLL)
    return wait


class LocalLedger:
    """The counts of one client in this process: completion times and its pace."""

    shared = False
    where = "this client"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: deque[float] = deque()  # completion times, ascending
        self._granted: deque[float] = deque()  # grant times of the last minute
        self._in_flight = 0
        self.state = PaceState()
        self.pace = ClientPace()

    def _expire(self, now: float, period: float) -> None:
        # Expired only when both ways of writing it agree (``done + period <= now`` and
        # ``done <= now - period`` differ in the last bit), so a float edge can neither
        # keep an expired entry while the wait says it left (two grants in one window) nor
        # drop one a server writing the other form still counts.
        while self._done and _expired(self._done[0], period, now):
            self._done.popleft()
        while self._granted and self._granted[0] <= now - 60.0:
            self._granted.popleft()

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        ceiling = limit / period
        with self._lock:
            self._expire(now, period)
            in_window = self._in_flight + len(self._done)
            share = self.state.current(now, ceiling, period)
            wait = grant_wait(self.state, self.pace, now=now, share=share, period=period,
                              in_window=in_window, mine=in_window, limit=limit, ceiling=ceiling,
                              oldest=lambda: self._done[0] if self._done else None)
            if wait > 0:
                return wait, _UNNUMBERED
            self.state.grant(now, ceiling, period)
            self.pace.grant(now, share)
            self._in_flight += 1
            self._granted.append(now)
            return 0.0, _UNNUMBERED

    def finish(self, token: int, now: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._done.append(now)

    def pause(self, now: float, seconds: float) -> None:
        with self._lock:
            self.state.pause(now, seconds)

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        with self._lock:
            self._expire(now, period)
            return self.state.throttled(now, granted_at, self._in_flight + len(self._done),
                                        limit / period, period)

    def counts(self, now: float, limit: int, period: float) -> Counts:
        with self._lock:
            self._expire(now, period)
            return Counts(self._in_flight + len(self._done), len(self._granted),
                          self.state.current(now, limit / period, period), self.state.not_before)


_Token = tuple[int, int]  # (which ledger granted it: 0 the limiter's own, 1 its stand-in), its number


class RateLimiter:
    """Sliding window, smooth pacing, slow start and yielding: at most ``limit`` requests per
    ``period`` seconds.

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
    retry_shared : float
        Seconds a limiter paces alone after its shared ledger failed, before trying it
        again.
    """

    def __init__(
        self,
        limit: int,
        period: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        ledger: Ledger | None = None,
        retry_shared: float = 5.0,
    ) -> None:
        whole_number("rate limit (requests per period)", limit, minimum=1)
        if not period > 0:
            raise ConfigurationError(f"rate-limit period must be positive seconds, got {period!r}.")
        self.limit = limit
        self.period = float(period)
        self._clock = clock
        self._sleep = sleep
        self.ledger: Ledger = ledger if ledger is not None else LocalLedger()
        # A stand-in while a shared ledger fails: this client paces alone, from the start.
        self._alone: LocalLedger | None = None
        self._alone_until = 0.0
        # (mutmut: the reason is read only while alone, after _failed set it; the flag only as a
        # truth. The flag: the outage was said, once, until the shared ledger answers again.)
        self._alone_reason = ""  # pragma: no mutate
        self._alone_said = False  # pragma: no mutate
        self._retry_shared = retry_shared
        # One waiting thread at a time asks the ledger (the others queue here): a shared
        # ledger is a file or a server, and a herd of threads polling it only adds load.
        self._turn = threading.Lock()
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.granted = 0
        self.throttles = 0

    def __repr__(self) -> str:
        return f"<RateLimiter {self.limit} per {self.period:g}s>"

    # -- the ledger, or its stand-in -------------------------------------------------------
    def _ledgers(self, now: float) -> tuple[int, Ledger]:
        """The ledger to ask now: the shared one, unless it failed a moment ago."""
        if self._alone is not None and now < self._alone_until:
            return 1, self._alone
        return 0, self.ledger

    def _failed(self, error: BaseException, now: float) -> LocalLedger:
        """The shared ledger failed: pace alone for a while, and say so once per outage
        (a retry that fails again says nothing new)."""
        if self._alone is None:
            # A ledger may say how to pace alone (a team's budget: at a cautious share).
            stand_in = getattr(self.ledger, "stand_in", None)
            self._alone = stand_in() if stand_in is not None else LocalLedger()
        if now >= self._alone_until:
            self._alone_reason = f"{type(error).__name__}: {error}"
            if not self._alone_said:
                self._alone_said = True
                log.warning("the shared request budget (%s) is unusable (%s); this client paces alone "
                            "and tries it again every %g s", self.ledger.where, self._alone_reason,
                            self._retry_shared)
        self._alone_until = now + self._retry_shared
        return self._alone

    def _ask(self, what: Callable[[Ledger], Any], now: float) -> tuple[int, Any]:
        which, ledger = self._ledgers(now)
        if which == 1 or not self.ledger.shared:
            return which, what(ledger)
        try:
            answer = what(ledger)
        except Exception as error:  # noqa: BLE001 - a budget error must never cost an answer
            return 1, what(self._failed(error, now))
        if self._alone_said:
            self._alone_said = False  # pragma: no mutate — mutmut: read only as a truth (None is False)
            log.info("the shared request budget (%s) is usable again; this client shares it",
                     self.ledger.where)
        return 0, answer

    # -- permits -----------------------------------------------------------------------------
    def _take_turn(self, cancel: threading.Event | None) -> None:
        if cancel is None:
            self._turn.acquire()
            return
        while not self._turn.acquire(timeout=POLL):
            if cancel.is_set():
                raise FetchCancelled("cancelled while waiting for the rate limit")

    def acquire(self, cancel: threading.Event | None = None) -> _Token:
        """Block until a request may be sent; raise FetchCancelled if ``cancel`` is set.

        Returns
        -------
        tuple
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
                which, (wait, number) = self._ask(lambda ledger: ledger.try_grant(now, self.limit, self.period), now)
                if wait <= 0:
                    token = (which, number)
                    with self._count_lock:
                        self.granted += 1
                    self._local.granted_at = now
                    self._local.__dict__.setdefault("tokens", []).append(token)
                    return token
                if cancel is not None:
                    cancel.wait(min(wait, POLL))
                else:
                    self._sleep(min(wait, POLL) if self._alone is not None or self.ledger.shared else wait)
        finally:
            self._turn.release()

    def release(self, token: _Token | None = None) -> None:
        """Mark a granted request as completed (answered, failed or abandoned)."""
        tokens = self._local.__dict__.setdefault("tokens", [])
        if token is None:
            token = tokens.pop() if tokens else (0, 0)
        elif token in tokens:
            tokens.remove(token)
        which, number = token
        now = self._clock()
        ledger: Ledger | None = self.ledger if which == 0 else self._alone
        if ledger is None:
            return
        try:
            ledger.finish(number, now)
        except Exception as error:  # noqa: BLE001 - its lease frees the permit; never lose an answer
            self._failed(error, now)

    @contextmanager
    def permit(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """``with limiter.permit(): send()`` — acquire, and release however it ends."""
        token = self.acquire(cancel)
        try:
            yield
        finally:
            self.release(token)

    def pause(self, seconds: float) -> None:
        """Hold back every thread (every client of the scope, when shared) for ``seconds``."""
        now = self._clock()
        self._ask(lambda ledger: ledger.pause(now, seconds), now)

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
        granted_at = getattr(self._local, "granted_at", None)

        def yield_(ledger: Ledger) -> bool:
            ledger.pause(now, seconds)
            return ledger.throttled(now, granted_at, self.limit, self.period)

        return bool(self._ask(yield_, now)[1])

    # -- what it knows -------------------------------------------------------------------------
    def _counts(self) -> tuple[int, Counts]:
        now = self._clock()
        which, counts = self._ask(lambda ledger: ledger.counts(now, self.limit, self.period), now)
        return which, counts

    def in_window(self) -> int:
        """Requests of the scope that currently count against the limit (in flight or recent)."""
        return self._counts()[1].in_window

    @property
    def pace(self) -> float:
        """This client's pace now, in requests per ``period``."""
        return self._counts()[1].pace * self.period

    @property
    def _not_before(self) -> float:
        return self._counts()[1].not_before

    def quota(self) -> Quota:
        """What was used in the last minute, the pace allowed now and the throttles met."""
        which, counts = self._counts()
        per_minute = 60.0 / self.period
        where = self.ledger.where
        if which == 1:  # only a shared ledger has a stand-in
            where = f"{where} (alone: {self._alone_reason})"
        return Quota(used_last_minute=counts.used_last_minute,
                     allowed_now=round(counts.pace * self.period * per_minute),
                     limit=round(self.limit * per_minute), throttles=self.throttles,
                     shared=self.ledger.shared and which == 0, clients=counts.clients, budget=where)

