"""RateLimiter: a 600-a-minute limit checked in milliseconds with an injected clock."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amptools.errors import ConfigurationError, FetchCancelled
from amptools.ratelimit import RateLimiter


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
    assert time.perf_counter() - started < 1.0  # simulated: three minutes of pacing in well under a second
    assert grants[:600] == [0.0] * 600
    assert grants[600] == pytest.approx(60.0)  # the 601st waits a full window
    assert grants[1200] == pytest.approx(120.0)
    assert max_in_window([(g, g) for g in grants], 60.0) == 600
    assert limiter.granted == 1800


def test_completion_time_counts_not_send_time() -> None:
    # A request counts until `period` after it completes: a slow answer delays the next.
    limiter, clock = make(1, 60.0)
    limiter.acquire()
    clock.now = 10.0  # the answer takes 10 s
    limiter.release()
    limiter.acquire()
    assert clock.now == pytest.approx(70.0)


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
    assert limiter._in_flight == 0
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
    limiter.acquire()
    clock.now = 0.2
    limiter.release()
    limiter.acquire()
    assert clock.now == pytest.approx(1.2)
    limiter.release()
    limiter.acquire()
    assert clock.now == pytest.approx(2.2)
