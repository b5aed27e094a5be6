"""RateLimiter: the window, the pace, slow start, yielding, memory and fair shares, checked
with an injected clock (minutes of pacing in milliseconds), and against the sample server."""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amptools import budget, ratelimit
from amptools.budget import BudgetStore, SharedBudget
from amptools.errors import ConfigurationError, FetchCancelled
from amptools.ratelimit import (
    BEYOND,
    DECREASE,
    DOUBLING,
    HOLD,
    INCREASE,
    MIN_SHARE,
    PROBE,
    START_SHARE,
    ClientPace,
    LocalLedger,
    PaceState,
    Quota,
    RateLimiter,
    fair_shares,
    most_in_window,
)
from amptools.sample import Faults, SampleServer


class FakeClock:
    """A clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)


def make(limit: int, period: float, *, warm: bool = False) -> tuple[RateLimiter, FakeClock]:
    """A limiter on a fake clock; ``warm``: already at its full pace (a run under way), for
    tests of the window itself."""
    clock = FakeClock()
    limiter = RateLimiter(limit, period, clock=clock, sleep=clock.sleep)
    if warm:
        ledger = limiter.ledger
        assert isinstance(ledger, LocalLedger)
        ledger.state = PaceState(rate=limit / period, updated=0.0, probe_until=0.0, active=0.0)
    return limiter, clock


def max_in_window(intervals: list[tuple[float, float]], period: float) -> int:
    """The most requests whose [grant, release] touches one half-open window [a, a + period).

    The server sees each request at some moment between grant and release, so this is
    the worst case the server could count. The maximum is reached with a window that
    starts at some request's release.
    """
    best = 0
    for start in {release for _, release in intervals}:
        count = sum(1 for grant, release in intervals if release >= start and grant < start + period)
        best = max(best, count)
    return best


def grants(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        with limiter.permit():
            out.append(clock.now)
    return out


# -- the pace of a run alone ---------------------------------------------------------------------------
def test_a_fresh_run_probes_then_reaches_its_ceiling_within_a_minute() -> None:
    limiter, clock = make(600, 60.0)
    times = grants(limiter, clock, 1500)
    burst = ClientPace.burst(10.0, 60.0)  # a fresh run's first burst: of its ceiling
    assert times[:burst] == [0.0] * burst  # a small burst at once
    probe = [t for t in times if t < PROBE * 60.0]
    # The first stretch at a fifth of the ceiling: about 120 a minute.
    assert len(probe) == pytest.approx(burst + START_SHARE * 10 * PROBE * 60.0, abs=3)
    # Then doubling: full pace (97%) before the minute is over, and kept.
    full = next(t for t in times if limiter.pace >= 0.97 * 600 or t == times[-1])
    assert limiter.pace == 600
    second_minute = [t for t in times if 60.0 <= t < 120.0]
    assert len(second_minute) >= 0.97 * 600
    assert most_in_window(times, 60.0) <= 600  # the window, never more
    assert most_in_window(times, 6.0) <= 120  # any tenth of the period: at most a fifth of the limit
    assert full <= 60.0
    assert limiter.granted == 1500


def test_the_slow_start_doubles_every_doubling_period() -> None:
    state = PaceState()
    state.grant(0.0, 10.0, 60.0)
    start = PROBE * 60.0
    assert state.current(start - 1.0, 10.0, 60.0) == pytest.approx(START_SHARE * 10.0)
    assert state.current(start + DOUBLING * 60.0, 10.0, 60.0) == pytest.approx(2 * START_SHARE * 10.0)
    assert state.current(start + 2 * DOUBLING * 60.0, 10.0, 60.0) == pytest.approx(4 * START_SHARE * 10.0)
    state.grant(start + 2 * DOUBLING * 60.0, 10.0, 60.0)
    assert state.current(start + 10 * DOUBLING * 60.0, 10.0, 60.0) == 10.0  # the ceiling stays


class Simulation:
    """``workers`` threads, simulated in one: each holds a permit ``latency`` seconds.

    The fake sleep fires the releases that fall due while a worker waits, in time
    order, so the limiter sees in-flight requests complete exactly when they would.
    """

    def __init__(self, limiter: RateLimiter, clock: FakeClock, latency: float) -> None:
        self.limiter, self.clock, self.latency = limiter, clock, latency
        self.pending: list[tuple[float, tuple[int, int], float]] = []  # (release time, token, grant time)
        self.intervals: list[tuple[float, float]] = []
        limiter._sleep = self.sleep

    def fire(self, until: float) -> None:
        self.pending.sort()
        while self.pending and self.pending[0][0] <= until:
            release, token, grant = self.pending.pop(0)
            now = self.clock.now
            self.clock.now = release
            self.limiter.release(token)
            self.clock.now = max(now, release)
            self.intervals.append((grant, release))

    def sleep(self, seconds: float) -> None:
        target = self.clock.now + max(seconds, 0.0)
        self.fire(target)
        self.clock.now = target

    def run(self, workers: int, requests: int) -> list[tuple[float, float]]:
        for _ in range(requests):
            if len(self.pending) >= workers:  # every worker busy: wait for the first answer
                self.sleep(min(p[0] for p in self.pending) - self.clock.now)
            token = self.limiter.acquire()
            self.pending.append((self.clock.now + self.latency, token, self.clock.now))
        self.sleep(self.latency)
        return self.intervals


@pytest.mark.parametrize("workers", [1, 8, 32])
@pytest.mark.parametrize("latency", [0.0, 0.01])
def test_burst_bound_and_pace_for_any_number_of_workers(workers: int, latency: float) -> None:
    limit, period = 600, 60.0
    limiter, clock = make(limit, period, warm=True)
    intervals = Simulation(limiter, clock, latency * period).run(workers, 3000)
    times = sorted(grant for grant, _ in intervals)
    assert len(times) == 3000
    assert max_in_window(intervals, period) <= limit
    assert most_in_window(times, period / 10) <= limit // 5
    # One worker waiting 0.6 s for each answer cannot keep the pace; eight can.
    if workers >= latency * limit:
        assert 2999 / (times[-1] - times[0]) >= 0.97 * limit / period


def next_grant_after_release(limiter: RateLimiter, clock: FakeClock, released_at: float) -> float:
    """Take a permit, give it back at ``released_at``, take another: when that one is granted."""
    limiter.acquire()
    clock.now = released_at
    limiter.release()
    limiter.acquire()
    return clock.now


def test_completion_time_counts_not_send_time() -> None:
    # A request counts until `period` after it completes: a slow answer delays the next.
    limiter, clock = make(1, 60.0, warm=True)
    assert next_grant_after_release(limiter, clock, 10.0) == pytest.approx(70.0)  # the answer took 10 s


def test_in_flight_requests_count() -> None:
    limiter, clock = make(2, 1.0, warm=True)
    limiter.acquire()
    limiter.acquire()
    assert limiter.in_window() == 2

    def sleep_then_release(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 5:  # nothing released yet: the third request must wait
            assert limiter.in_window() == 2
            limiter.release()

    limiter._sleep = sleep_then_release
    limiter.acquire()
    assert len(clock.sleeps) >= 5  # it polled while both were in flight
    assert clock.now >= 1.0  # and then waited out the released one's window


def test_pause_holds_everyone_back() -> None:
    limiter, clock = make(100, 1.0, warm=True)
    limiter.pause(5.0)
    limiter.acquire()
    assert clock.now == pytest.approx(5.0)
    limiter.release()
    limiter.pause(0.0)  # a shorter pause never shortens a longer one in force
    limiter.acquire()
    assert clock.now == pytest.approx(5.0)


def test_cancel_while_waiting() -> None:
    limiter, clock = make(1, 60.0, warm=True)
    limiter.acquire()
    limiter.release()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(FetchCancelled):
        limiter.acquire(cancel)
    with pytest.raises(FetchCancelled):
        with limiter.permit(cancel):
            pass  # pragma: no cover
    assert limiter.granted == 1


def test_permit_releases_on_error() -> None:
    limiter, _ = make(3, 1.0, warm=True)
    with pytest.raises(RuntimeError):
        with limiter.permit():
            raise RuntimeError("boom")
    assert limiter.ledger._in_flight == 0  # type: ignore[attr-defined]
    assert limiter.in_window() == 1  # it still counts for its window


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_bad_limits_refused(limit: object) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(limit)  # type: ignore[arg-type]


def test_bad_period_refused() -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(10, 0)


def shared_limiter(limit: int, period: float, store: BudgetStore, *,
                   warm: bool = False) -> tuple[RateLimiter, FakeClock]:
    """A limiter on the shared budget of ``store`` (its clock is the limiter's fake one)."""
    clock = FakeClock()
    store._clock = clock
    ledger = SharedBudget(store, "scope")
    if warm:
        with store.transaction() as db:
            ledger._save(db, PaceState(rate=limit / period, updated=0.0, probe_until=0.0, active=0.0))
    return RateLimiter(limit, period, clock=clock, sleep=clock.sleep, ledger=ledger), clock


# Any period on the local ledger; short ones on the shared budget, whose limiter looks at the
# file every POLL seconds while it waits (a 60-second pause would be 1,200 transactions).
PERIODS = st.sampled_from([0.5, 1.0, 7.0, 60.0]) | st.floats(0.05, 120.0)
SHARED_PERIODS = st.sampled_from([0.5, 1.0]) | st.floats(0.05, 2.0)
LEDGERS_AND_PERIODS = st.booleans().flatmap(
    lambda shared: st.tuples(st.just(shared), SHARED_PERIODS if shared else PERIODS))
STEP = st.tuples(st.sampled_from(["acquire", "acquire", "release", "advance", "pause", "throttle"]),
                 st.floats(0.0, 1.5))


@settings(max_examples=250, deadline=None)
@given(limit=st.integers(1, 400), ledger_and_period=LEDGERS_AND_PERIODS, warm=st.booleans(),
       steps=st.lists(STEP, max_size=120))
def test_no_window_holds_more_than_the_limit(limit: int, ledger_and_period: tuple[bool, float], warm: bool,
                                             steps: list[tuple[str, float]]) -> None:
    """Any interleaving of grants, completions, time, pauses and throttles, with bursts of
    several requests (large limits), any period, fresh or under way, on this client's own
    ledger or the shared budget: no window of the server ever holds more than the limit,
    and no request is granted inside a pause (a throttle's Retry-After)."""
    check_the_window(limit, ledger_and_period, warm, steps)


@settings(max_examples=250, deadline=None)
@given(limit=st.integers(1, 3), ledger_and_period=LEDGERS_AND_PERIODS, steps=st.lists(STEP, max_size=16))
def test_no_window_of_a_small_limit_holds_one_request_too_many(
        limit: int, ledger_and_period: tuple[bool, float], steps: list[tuple[str, float]]) -> None:
    """The same with one to three requests a period, at full pace (no slow start to hide
    behind) and short stories, where a window counted a little short shows at once."""
    check_the_window(limit, ledger_and_period, True, steps)


def check_the_window(limit: int, ledger_and_period: tuple[bool, float], warm: bool,
                     steps: list[tuple[str, float]]) -> None:
    """Play ``steps`` on a limiter on a fake clock; check every grant against the pauses
    and, at the end, every window of the server against the limit."""
    shared, period = ledger_and_period
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.object(budget, "LEASE", math.inf):  # nothing hangs here (leases: test_budget)
        if shared:
            limiter, clock = shared_limiter(limit, period, BudgetStore(Path(folder) / "b.sqlite"), warm=warm)
        else:
            limiter, clock = make(limit, period, warm=warm)
        in_flight: list[tuple[float, tuple[int, int]]] = []  # (grant time, token), oldest first
        intervals: list[tuple[float, float]] = []
        paused_until = 0.0

        def answer_oldest() -> None:
            grant, token = in_flight.pop(0)
            limiter.release(token)
            intervals.append((grant, clock.now))

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            # Only answers could let the client go on (its window holds nothing but requests
            # in flight, and a pace that fell while it waited allows no more): the server
            # answers the oldest now, as it would some time.
            if in_flight and limiter.in_window() == len(in_flight) >= max(1.0, limiter.pace):
                answer_oldest()

        limiter._sleep = sleep
        for action, amount in steps:
            # At most what the pace allows in flight (the hook above answers when the pace
            # falls while the client waits).
            if action == "acquire" and len(in_flight) < min(limit, max(1, math.floor(limiter.pace))):
                token = limiter.acquire()
                assert clock.now >= paused_until - 1e-9 * max(1.0, paused_until)  # never inside a pause
                in_flight.append((clock.now, token))
            elif action == "release" and in_flight:
                answer_oldest()
            elif action == "pause":
                limiter.pause(amount * period)
                paused_until = max(paused_until, clock.now + amount * period)
            elif action == "throttle" and in_flight:
                limiter.throttled(amount * period)
                paused_until = max(paused_until, clock.now + amount * period)
            else:
                clock.now += amount * period
        for grant, _ in in_flight:  # still in flight: treat them as answered now
            intervals.append((grant, clock.now))
        assert max_in_window(intervals, period) <= limit


def test_real_threads_share_one_window() -> None:
    limit, period = 10, 0.3
    limiter = RateLimiter(limit, period)
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(3):
            with limiter.permit():
                granted = time.monotonic()
                time.sleep(0.005)
                released = time.monotonic()
            with lock:
                intervals.append((granted, released))

    threads = [threading.Thread(target=work) for _ in range(12)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    elapsed = time.monotonic() - started
    assert len(intervals) == 36
    assert max_in_window(intervals, period) <= limit
    # 36 requests at 10 per 0.3 s need at least three full windows of waiting (more for
    # the slow start), and the threads shared one window rather than taking one each.
    assert elapsed >= 3 * period


def test_float_edge_of_the_window_regression() -> None:
    # Found by the property test: release at 0.2, period 1.0. 0.2 <= 1.2 - 1.0 is False in
    # floats while 0.2 + 1.0 - 1.2 == 0.0, so the expired entry stayed counted and a
    # second request was granted at 1.2 in the same window as the first.
    limiter, clock = make(1, 1.0, warm=True)
    assert next_grant_after_release(limiter, clock, 0.2) == pytest.approx(1.2)
    limiter.release()
    limiter.acquire()
    assert clock.now == pytest.approx(2.2)


# -- yielding ---------------------------------------------------------------------------
def test_a_throttle_drops_the_pace_to_the_room_the_window_showed() -> None:
    limiter, clock = make(600, 60.0, warm=True)
    grants(limiter, clock, 100)  # 100 of ours in the window when the service says "full"
    assert limiter.throttled(0.0) is True
    assert limiter.pace == pytest.approx(DECREASE * 100)
    # The same request's second answer, or another sent at the old pace: no second cut.
    assert limiter.throttled(0.0) is False
    assert limiter.throttles == 2 and limiter.pace == pytest.approx(DECREASE * 100)


def test_after_a_throttle_the_pace_holds_climbs_to_the_room_then_doubles() -> None:
    state, ceiling = PaceState(rate=10.0, updated=0.0, probe_until=0.0, active=0.0), 10.0
    state.throttled(10.0, 9.0, 100, ceiling, 60.0)  # room: 100 a minute
    cut = DECREASE * 100 / 60.0

    def pace(at: float) -> float:
        state.grant(at, ceiling, 60.0)  # a run under way grants all along
        return state.current(at, ceiling, 60.0) * 60.0

    # It holds for a window while its requests leave it...
    assert pace(10.0 + HOLD * 60.0) == pytest.approx(cut * 60.0)
    # ...climbs slowly back to the room it had...
    assert pace(10.0 + HOLD * 60.0 + 30.0) == pytest.approx(cut * 60.0 + INCREASE * 600 / 2)
    needed = (100.0 / 60.0 - cut) / (INCREASE * ceiling / 60.0)
    assert pace(10.0 + HOLD * 60.0 + needed) == pytest.approx(100.0)
    # ...then doubles (the others stopped?), and the ceiling stays.
    assert pace(10.0 + HOLD * 60.0 + needed + BEYOND * 60.0) == pytest.approx(200.0)
    for minute in range(1, 6):
        last = pace(10.0 + HOLD * 60.0 + needed + BEYOND * 60.0 + minute * 60.0)
    assert last == 600.0


def test_the_pace_never_drops_under_the_floor() -> None:
    limiter, clock = make(600, 60.0, warm=True)
    for _ in range(10):  # throttles of requests sent at each new pace
        with limiter.permit():
            pass
        clock.now += 1e-6
        limiter.throttled(0.0)
    assert limiter.pace == pytest.approx(600 * MIN_SHARE)


def test_after_a_throttle_requests_come_at_the_new_pace_without_a_burst() -> None:
    limiter, clock = make(600, 60.0, warm=True)
    grants_before = grants(limiter, clock, 120)
    limiter.throttled(1.0)  # Retry-After: 1 s; 120 in the window: the room is 120 a minute
    throttled_at = clock.now
    after = grants(limiter, clock, 40)
    # The pause holds, and then the window: the room was 120, so nothing more goes until
    # the scope's requests in the window are under 102 (85% of it): when the first burst
    # (30 at 0 s) leaves it.
    assert after[0] >= throttled_at + 1.0 and after[0] == pytest.approx(60.0)
    burst = ClientPace.burst(DECREASE * 2.0, 60.0)
    gaps = [b - a for a, b in zip(after[burst:], after[burst + 1:])]
    expected = 60.0 / (DECREASE * 120)  # 102 a minute: 0.59 s apart
    # (a little less as the pace climbs back once the hold is over)
    assert min(gaps) == pytest.approx(expected, rel=0.03) and max(gaps) == pytest.approx(expected, rel=0.01)
    assert most_in_window([*grants_before, *after], 60.0) <= 120


def test_a_run_that_starts_soon_after_a_throttle_begins_at_the_room_it_left() -> None:
    """The budget's memory: no slow start from scratch (its first window would hurt the
    campaign that throttled the last run), no full pace either."""
    state = PaceState()
    state.grant(0.0, 9.0, 60.0)
    state.throttled(100.0, 99.0, 150, 9.0, 60.0)  # 150 in the window: room 2.5/s
    later = 100.0 + 5 * 60.0  # the next run, five idle minutes later
    assert state.current(later, 9.0, 60.0) == pytest.approx(DECREASE * 2.5)
    state.grant(later, 9.0, 60.0)
    assert state.current(later + 30.0, 9.0, 60.0) > DECREASE * 2.5  # climbing, no hold, no probe
    # Long forgotten: a fresh slow start.
    forgotten = PaceState(**{**state.__dict__})
    assert forgotten.current(later + 3600.0, 9.0, 60.0) == pytest.approx(START_SHARE * 9.0)


def test_an_idle_spell_halves_the_pace_per_period_never_under_the_start() -> None:
    state = PaceState(rate=9.0, updated=0.0, probe_until=0.0, active=0.0)
    assert state.current(100.0, 9.0, 60.0) == 9.0  # not idle yet (two periods)
    assert state.current(130.0, 9.0, 60.0) == pytest.approx(9.0 * 2 ** (-130 / 60))  # idle: halved per period
    assert state.current(600.0, 9.0, 60.0) == pytest.approx(START_SHARE * 9.0)


def test_quota_is_plain_data() -> None:
    limiter, clock = make(120, 60.0, warm=True)
    grants(limiter, clock, 10)
    quota = limiter.quota()
    assert quota == Quota(used_last_minute=10, allowed_now=120, limit=120, throttles=0, shared=False,
                          clients=1, budget="this client")
    limiter.throttled(0.0)
    quota = limiter.quota()
    assert (quota.allowed_now, quota.throttles) == (round(DECREASE * 10), 1)
    assert str(quota) == (f"quota: 10 requests in the last minute, pace {round(DECREASE * 10)}/min of "
                          "120/min, 1 throttle, budget of this client")
    clock.now += 61.0
    assert limiter.quota().used_last_minute == 0
    # A two-second period is shown per minute, as the service counts.
    assert make(10, 2.0)[0].quota().limit == 300


# -- fair shares ---------------------------------------------------------------------------
def test_fair_shares_of_540_300_and_60() -> None:
    assert fair_shares(540, {"a": 540, "b": 300, "c": 60}) == {"a": 240, "b": 240, "c": 60}
    assert fair_shares(100, {"a": 540, "b": 300, "c": 60}) == pytest.approx({"a": 100 / 3, "b": 100 / 3,
                                                                            "c": 100 / 3})
    assert fair_shares(540, {"only": 300}) == {"only": 300}
    assert fair_shares(0, {"a": 1}) == {"a": 0}


@given(total=st.floats(0, 2000), ceilings=st.dictionaries(st.text(max_size=3), st.floats(0.1, 600),
                                                          min_size=1, max_size=8))
def test_fair_shares_are_max_min_fair(total: float, ceilings: dict[str, float]) -> None:
    shares = fair_shares(total, ceilings)
    assert set(shares) == set(ceilings)
    assert all(0 <= shares[c] <= ceilings[c] * (1 + 1e-9) for c in ceilings)
    assert sum(shares.values()) <= max(total, 0) * (1 + 1e-9) + 1e-9
    # Nobody below its ceiling gets less than anyone else: no share could grow without
    # taking from a smaller one.
    capped = [c for c in ceilings if shares[c] < ceilings[c] * (1 - 1e-9)]
    if capped:
        top = max(shares.values())
        assert all(shares[c] == pytest.approx(top) for c in capped)
        assert sum(shares.values()) == pytest.approx(min(total, sum(ceilings.values())), rel=1e-6)


# -- a shared ledger that fails ---------------------------------------------------------------------
class Broken(LocalLedger):
    """A shared ledger whose file is locked: every call fails until ``fixed``."""

    shared = True
    where = "this machine"

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False

    def _check(self) -> None:
        if not self.fixed:
            raise OSError("database is locked")

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        self._check()
        return super().try_grant(now, limit, period)

    def finish(self, token: int, now: float) -> None:
        self._check()
        super().finish(token, now)


def test_a_failing_shared_ledger_never_stops_the_client(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    broken = Broken()
    limiter = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=broken, retry_shared=5.0)
    caplog.set_level("WARNING", logger="amptools")
    times = grants(limiter, clock, 30)
    assert len(times) == 30  # granted by the stand-in: the client paces alone
    assert limiter.quota().budget.startswith("this machine (alone: OSError: database is locked")
    assert not limiter.quota().shared
    said = [r for r in caplog.records if "paces alone" in r.getMessage()]
    assert len(said) == len({int(t // 5.0) for t in times}) >= 1  # once per spell, not per request
    broken.fixed = True
    clock.now += 5.0
    token = limiter.acquire()
    assert token[0] == 0 and limiter.quota().shared  # back on the shared ledger
    limiter.release(token)


# -- against the sample server ----------------------------------------------------------------
FAST = {"backoff_base": 0.001, "backoff_cap": 0.01, "retry_after_cap": 0.01}


@pytest.mark.parametrize("workers", [1, 8, 32])
def test_burst_bound_against_the_server(workers: int) -> None:
    limit, period = 100, 2.0
    with SampleServer(rate_limit=limit, window=period) as srv:
        client = srv.client(rate_limit=limit, rate_period=period, **FAST)
        ps = client.get_profiles(srv.org.user_ids[1:101], workers=workers, progress=False)
        arrivals = srv.arrivals
    times = [a.time for a in arrivals]
    assert ps.counts["ok"] == 100 and len(arrivals) == 100
    assert [a.status for a in arrivals].count(429) == 0
    assert most_in_window(times, period) <= limit
    assert most_in_window(times, period / 10) <= limit // 5


@pytest.mark.parametrize("faults", [Faults(server_error=0.3, seed=1), Faults(reset=0.2, throttle=0.1, seed=2)])
def test_retries_take_permits_too(faults: Faults) -> None:
    """``docs/reliability.md``: retries included. With faults on, the window at the server
    (every attempt counted, retries too) still never holds more than the limit."""
    limit, period = 20, 1.0
    with SampleServer(rate_limit=100_000, window=period, faults=faults) as srv:
        client = srv.client(rate_limit=limit, rate_period=period, max_retries=20, **FAST)
        ps = client.get_profiles(srv.org.user_ids[1:71], workers=16, progress=False)
        arrivals = srv.arrivals
    assert ps.counts["ok"] == 70
    assert len(arrivals) > 80  # retries happened
    assert client.limiter.granted == len(arrivals)  # one permit for every request sent
    assert most_in_window([a.time for a in arrivals], period) <= limit


@pytest.mark.slow
def test_a_scripted_burst_of_throttles_slows_the_client_then_it_recovers() -> None:
    limit, period = 40, 1.0
    with SampleServer(rate_limit=100_000, window=period) as srv:
        client = srv.client(rate_limit=limit, rate_period=period, max_retries=10, **FAST)

        def script() -> None:
            # Throttle everything from the 60th request until three throttles went out.
            while len(srv.arrivals) < 60:
                time.sleep(0.005)
            srv.faults = Faults(throttle=1.0)
            while sum(a.status == 429 for a in srv.arrivals) < 3:
                time.sleep(0.001)
            srv.faults = None

        scripter = threading.Thread(target=script)
        scripter.start()
        ps = client.get_profiles(srv.org.user_ids[1:241], workers=8, progress=False)
        scripter.join(10)
        arrivals = srv.arrivals
    quota = client.quota()
    throttled = [a.time for a in arrivals if a.status == 429]
    assert ps.counts["ok"] == 240  # nothing lost
    assert len(throttled) >= 3 and quota.throttles == len(throttled)
    first, last, end = min(throttled), max(throttled), max(a.time for a in arrivals)
    assert end - last > (HOLD + 1) * period  # the run went on long enough to see the climb
    before = sum(first - period < a.time <= first for a in arrivals)
    just_after = sum(last < a.time <= last + period for a in arrivals)
    at_the_end = sum(end - period < a.time <= end for a in arrivals)
    # Yielded: at most the room the window showed, cut (plus a burst) right after...
    assert just_after <= math.ceil(DECREASE * before) + ClientPace.burst(limit / period, period)
    # ...and climbing back, never above the ceiling.
    assert at_the_end > just_after
    assert most_in_window([a.time for a in arrivals], period) <= limit


def test_module_constants_say_what_the_docs_say() -> None:
    # docs/quota.md states these in words; a change of one must change the page too.
    assert (START_SHARE, PROBE, DOUBLING, DECREASE, HOLD, INCREASE, BEYOND, MIN_SHARE) == \
        (0.2, 0.75, 1 / 15, 0.85, 1.0, 0.03, 0.5, 0.05)
    assert ratelimit.ORG_LIMIT == 600 and ratelimit.MEMORY == 10.0
