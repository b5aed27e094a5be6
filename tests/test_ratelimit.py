"""RateLimiter: a 600-a-minute limit checked in milliseconds with an injected clock."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amptools.errors import ConfigurationError, FetchCancelled
from amptools.ratelimit import DECREASE, INCREASE, MIN_SHARE, Quota, RateLimiter, burst, most_in_window
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


def make(limit: int, period: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(limit, period, clock=clock, sleep=clock.sleep), clock


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


def test_600_a_minute_in_milliseconds() -> None:
    limiter, clock = make(600, 60.0)
    grants = []
    started = time.perf_counter()
    for _ in range(1800):
        with limiter.permit():
            grants.append(clock.now)
    assert time.perf_counter() - started < 2.0  # simulated: three minutes of pacing in well under a second
    assert grants[:30] == pytest.approx([0.0] * 30)  # a burst of a twentieth of the limit
    assert grants[30] == pytest.approx(0.1)  # then one every tenth of a second
    assert most_in_window(grants, 6.0) <= 120  # any tenth of the period: at most a fifth of the limit
    assert max_in_window([(g, g) for g in grants], 60.0) == 600
    assert 1799 / (grants[-1] - grants[0]) >= 0.97 * 10  # a long run keeps the pace of the limit
    assert limiter.granted == 1800


class Simulation:
    """``workers`` threads, simulated in one: each holds a permit ``latency`` seconds.

    The fake sleep fires the releases that fall due while a worker waits, in time
    order, so the limiter sees in-flight requests complete exactly when they would.
    """

    def __init__(self, limiter: RateLimiter, clock: FakeClock, latency: float) -> None:
        self.limiter, self.clock, self.latency = limiter, clock, latency
        self.pending: list[tuple[float, int, float]] = []  # (release time, token, grant time)
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
    limiter, clock = make(limit, period)
    intervals = Simulation(limiter, clock, latency * period).run(workers, 3000)
    grants = sorted(grant for grant, _ in intervals)
    assert len(grants) == 3000
    assert max_in_window(intervals, period) <= limit
    assert most_in_window(grants, period / 10) <= limit // 5
    # One worker waiting 0.6 s for each answer cannot keep the pace; eight can.
    if workers >= latency * limit:
        assert 2999 / (grants[-1] - grants[0]) >= 0.97 * limit / period


def next_grant_after_release(limiter: RateLimiter, clock: FakeClock, released_at: float) -> float:
    """Take a permit, give it back at ``released_at``, take another: when that one is granted."""
    limiter.acquire()
    clock.now = released_at
    limiter.release()
    limiter.acquire()
    return clock.now


def test_completion_time_counts_not_send_time() -> None:
    # A request counts until `period` after it completes: a slow answer delays the next.
    limiter, clock = make(1, 60.0)
    assert next_grant_after_release(limiter, clock, 10.0) == pytest.approx(70.0)  # the answer took 10 s


def test_in_flight_requests_count() -> None:
    limiter, clock = make(2, 1.0)
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
    limiter, clock = make(100, 1.0)
    limiter.pause(5.0)
    limiter.acquire()
    assert clock.now == pytest.approx(5.0)
    limiter.release()
    limiter.pause(0.0)  # a shorter pause never shortens a longer one in force
    limiter.acquire()
    assert clock.now == pytest.approx(5.0)


def test_cancel_while_waiting() -> None:
    limiter, clock = make(1, 60.0)
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
    limiter, _ = make(3, 1.0)
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


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 6),
    steps=st.lists(
        st.tuples(st.sampled_from(["acquire", "release", "advance"]), st.floats(0.0, 1.5)),
        max_size=80,
    ),
)
def test_no_window_holds_more_than_the_limit(limit: int, steps: list[tuple[str, float]]) -> None:
    """Any interleaving of grants, completions and time: no window of the server exceeds the limit."""
    period = 1.0
    limiter, clock = make(limit, period)
    in_flight: list[float] = []
    intervals: list[tuple[float, float]] = []
    for action, amount in steps:
        if action == "acquire" and len(in_flight) < limit:
            limiter.acquire()
            in_flight.append(clock.now)
        elif action == "release" and in_flight:
            limiter.release()
            intervals.append((in_flight.pop(0), clock.now))
        else:
            clock.now += amount
    for grant in in_flight:  # still in flight: treat them as answered now
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
        thread.join(10)
    elapsed = time.monotonic() - started
    assert len(intervals) == 36
    assert max_in_window(intervals, period) <= limit
    # 36 requests at 10 per 0.3 s need at least three full windows of waiting.
    assert elapsed >= 3 * period
    assert elapsed < 3 * period + 1.0


def test_float_edge_of_the_window_regression() -> None:
    # Found by the property test: release at 0.2, period 1.0. 0.2 <= 1.2 - 1.0 is False in
    # floats while 0.2 + 1.0 - 1.2 == 0.0, so the expired entry stayed counted and a
    # second request was granted at 1.2 in the same window as the first.
    limiter, clock = make(1, 1.0)
    assert next_grant_after_release(limiter, clock, 0.2) == pytest.approx(1.2)
    limiter.release()
    limiter.acquire()
    assert clock.now == pytest.approx(2.2)


# -- yielding ---------------------------------------------------------------------------
def test_a_throttle_halves_the_pace_and_it_climbs_back() -> None:
    limiter, clock = make(600, 60.0)
    limiter.acquire()
    clock.now = 1.0
    limiter.release()
    assert limiter.pace == 600
    assert limiter.throttled(0.0) is True
    assert limiter.pace == pytest.approx(600 * DECREASE)
    # The same request's second answer, or another sent at the old pace: no second cut.
    assert limiter.throttled(0.0) is False
    assert limiter.pace == pytest.approx(600 * DECREASE)
    for _ in range(10):  # throttles of requests sent at the new pace keep halving it...
        with limiter.permit():
            pass
        clock.now += 1e-6
        limiter.throttled(0.0)
    assert limiter.pace == pytest.approx(600 * MIN_SHARE, rel=1e-3)  # ...down to the floor
    assert limiter.throttles == 12
    # It climbs back by a tenth of the limit per period, and the limit stays the ceiling.
    start = clock.now
    clock.now = start + 60.0
    assert limiter.pace == pytest.approx(600 * (MIN_SHARE + INCREASE), rel=1e-3)
    clock.now = start + 60.0 * (1 - MIN_SHARE) / INCREASE + 1.0
    assert limiter.pace == 600
    clock.now += 3600.0
    assert limiter.pace == 600


def test_after_a_throttle_requests_come_at_the_new_pace_without_a_burst() -> None:
    limiter, clock = make(600, 60.0)
    for _ in range(5):
        with limiter.permit():
            pass
    limiter.throttled(1.0)  # Retry-After: 1 s
    grants = []
    for _ in range(20):
        with limiter.permit():
            grants.append(clock.now)
    assert grants[0] >= 1.0  # the pause holds
    gaps = [b - a for a, b in zip(grants, grants[1:])]
    # 300 a minute: 0.2 s apart (a little less as the pace climbs back), never back to back.
    assert 0.19 < min(gaps) and max(gaps) < 0.21


def test_quota_is_plain_data() -> None:
    limiter, clock = make(120, 60.0)
    for _ in range(10):
        with limiter.permit():
            pass
    quota = limiter.quota()
    assert quota == Quota(used_last_minute=10, allowed_now=120, limit=120, throttles=0, shared=False)
    limiter.throttled(0.0)
    quota = limiter.quota()
    assert (quota.allowed_now, quota.throttles) == (60, 1)
    assert str(quota) == ("quota: 10 requests in the last minute, pace 60/min of 120/min, "
                          "1 throttle, budget of this client")
    clock.now += 61.0
    assert limiter.quota().used_last_minute == 0
    # A two-second period is shown per minute, as the service counts.
    assert make(10, 2.0)[0].quota().limit == 300


# -- against the sample server ----------------------------------------------------------------
FAST = {"backoff_base": 0.001, "backoff_cap": 0.01, "retry_after_cap": 0.01}


@pytest.mark.parametrize("workers", [1, 8, 32])
def test_burst_bound_against_the_server(workers: int) -> None:
    limit, period = 100, 2.0
    with SampleServer(rate_limit=limit, window=period) as srv:
        client = srv.client(rate_limit=limit, rate_period=period, **FAST)
        ps = client.get_profiles(srv.org.user_ids[1:81], workers=workers, progress=False)
        arrivals = srv.arrivals
    times = [a.time for a in arrivals]
    assert ps.counts["ok"] == 80 and len(arrivals) == 80
    assert [a.status for a in arrivals].count(429) == 0
    assert most_in_window(times, period) <= limit
    assert most_in_window(times, period / 10) <= limit // 5


@pytest.mark.slow
def test_a_scripted_burst_of_throttles_slows_the_client_then_it_recovers() -> None:
    limit, period = 40, 1.0
    with SampleServer(rate_limit=100_000, window=period) as srv:
        client = srv.client(rate_limit=limit, rate_period=period, max_retries=10, **FAST)

        def script() -> None:
            # Throttle everything from the 30th request until three throttles went out.
            while len(srv.arrivals) < 30:
                time.sleep(0.005)
            srv.faults = Faults(throttle=1.0)
            while sum(a.status == 429 for a in srv.arrivals) < 3:
                time.sleep(0.001)
            srv.faults = None

        scripter = threading.Thread(target=script)
        scripter.start()
        ps = client.get_profiles(srv.org.user_ids[1:161], workers=8, progress=False)
        scripter.join(10)
        arrivals = srv.arrivals
    quota = client.quota()
    throttled = [a.time for a in arrivals if a.status == 429]
    assert ps.counts["ok"] == 160  # nothing lost
    assert len(throttled) >= 3 and quota.throttles == len(throttled)
    last, end = max(throttled), max(a.time for a in arrivals)
    assert end - last > 2 * period  # the run went on long enough to see the climb
    just_after = sum(last < a.time <= last + period for a in arrivals)
    at_the_end = sum(end - period < a.time <= end for a in arrivals)
    # Yielded: at most the halved pace (plus one period's climb and a burst) right after...
    assert just_after <= math.ceil(limit * (DECREASE + INCREASE)) + burst(limit)
    # ...and climbing back, never above the ceiling.
    assert at_the_end > just_after
    assert most_in_window([a.time for a in arrivals], period) <= limit
