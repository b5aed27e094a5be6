"""What mutation testing (``make mutate``) found the other tests of the limiter let through:
the words of ``Quota``, the stand-in a failing shared ledger hands over, pauses while a
client paces alone, and the quota at periods other than a minute."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from amptools.ratelimit import (
    DECREASE,
    MIN_SHARE,
    LocalLedger,
    PaceState,
    Quota,
    RateLimiter,
    _expired,
    most_in_window,
)
from test_ratelimit import Broken, FakeClock, grants


@pytest.mark.parametrize(("quota", "said"), [
    (Quota(used_last_minute=3, allowed_now=120, limit=540, throttles=0, shared=False),
     "quota: 3 requests in the last minute, pace 120/min of 540/min, 0 throttles, budget of this client"),
    (Quota(used_last_minute=540, allowed_now=540, limit=540, throttles=1, shared=True),
     "quota: 540 requests in the last minute, pace 540/min, 1 throttle, budget shared on this machine"),
    (Quota(used_last_minute=0, allowed_now=600, limit=540, throttles=2, shared=True, clients=2),
     "quota: 0 requests in the last minute, pace 540/min, 2 throttles, budget shared on this machine by 2 clients"),
    (Quota(used_last_minute=9, allowed_now=60, limit=540, throttles=0, shared=True, clients=3,
           budget="redis://cache:6379/0"),
     "quota: 9 requests in the last minute, pace 60/min of 540/min, 0 throttles, "
     "budget shared on redis://cache:6379/0 by 3 clients"),
    (Quota(used_last_minute=1, allowed_now=1, limit=1, throttles=0, shared=False, budget="this client"),
     "quota: 1 requests in the last minute, pace 1/min, 0 throttles, budget of this client"),
])
def test_a_quota_says_what_it_holds_in_words(quota: Quota, said: str) -> None:
    assert str(quota) == said


def test_counts_carry_the_pause() -> None:
    ledger = LocalLedger()
    ledger.pause(10.0, 5.0)
    assert ledger.counts(10.0, 600, 60.0).not_before == 15.0


class WithStandIn(Broken):
    """A failing shared ledger that says how to pace alone (as a team's budget does)."""

    def __init__(self) -> None:
        super().__init__()
        self.stand_in_ledger = LocalLedger()

    def stand_in(self) -> LocalLedger:
        return self.stand_in_ledger


def test_a_failing_ledger_hands_over_to_its_own_stand_in() -> None:
    clock = FakeClock()
    broken = WithStandIn()
    limiter = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=broken, retry_shared=5.0)
    grants(limiter, clock, 3)
    assert len(broken.stand_in_ledger._granted) == 3  # the ledger's stand-in paced them
    limiter.pause(7.0)  # while alone, a pause holds the stand-in back
    assert broken.stand_in_ledger.state.not_before == clock.now + 7.0


def test_an_outage_is_said_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    broken = Broken()
    limiter = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=broken)  # the default retry: 5 s
    caplog.set_level(logging.INFO, logger="amptools")
    grants(limiter, clock, 2)
    clock.now += 6.0
    grants(limiter, clock, 2)  # the retry fails again: nothing new to say
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the shared request budget (this machine) is unusable (OSError: database is locked); "
                    "this client paces alone and tries it again every 5 s"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    broken.fixed = True
    clock.now += 6.0
    grants(limiter, clock, 1)
    assert caplog.records[-1].getMessage() == ("the shared request budget (this machine) is usable again; "
                                               "this client shares it")
    broken.fixed = False
    clock.now += 1.0
    grants(limiter, clock, 1)  # a new outage is said again
    assert sum("unusable" in r.getMessage() for r in caplog.records) == 2


def test_the_quota_is_per_minute_at_any_period() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, 30.0, clock=clock, sleep=clock.sleep)  # 40 a minute
    ledger = limiter.ledger
    assert isinstance(ledger, LocalLedger)
    ledger.state.rate = 20 / 30.0
    ledger.state.active = ledger.state.updated = 0.0
    quota = limiter.quota()
    assert (quota.limit, quota.allowed_now) == (40, 40)


def test_a_completion_leaves_the_window_exactly_a_period_later() -> None:
    assert _expired(0.0, 60.0, 60.0) and not _expired(0.0, 60.0, 59.999)
    # Where the two ways of writing it differ in the last bit, it has not left yet (either
    # way a server may write it still counts it).
    assert 0.5315657418993336 <= 0.8315657418993335 - 0.3 and not 0.5315657418993336 + 0.3 <= 0.8315657418993335
    assert not _expired(0.5315657418993336, 0.3, 0.8315657418993335)
    assert 221.69166627303505 + 60.0 <= 281.691666273035 and not 221.69166627303505 <= 281.691666273035 - 60.0
    assert not _expired(221.69166627303505, 60.0, 281.691666273035)


def test_the_last_minute_ends_exactly_sixty_seconds_back() -> None:
    ledger = LocalLedger()
    assert ledger.try_grant(0.0, 600, 60.0)[0] <= 0
    ledger.finish(0, 0.5)
    assert ledger.counts(59.9, 600, 60.0).used_last_minute == 1
    assert ledger.counts(60.0, 600, 60.0).used_last_minute == 0


def test_a_throttle_with_nothing_in_the_window_drops_to_the_floor() -> None:
    state = PaceState(rate=10.0)
    assert state.throttled(10.0, None, 0, 10.0, 60.0)
    # The room is never taken as less than the floor, nor the pace set under it.
    assert state.peak == pytest.approx(MIN_SHARE * 10.0) and state.rate == pytest.approx(MIN_SHARE * 10.0)
    assert state.throttled(20.0, None, 60, 10.0, 60.0)  # a full window of 1 a second
    assert state.rate == pytest.approx(DECREASE * 1.0)


@pytest.mark.parametrize(("times", "window", "most"), [
    ([], 1.0, 0),
    ([0.0], 1.0, 1),
    ([0.0, 0.5, 1.0, 1.5, 2.0], 1.0, 2),
    ([3.0, 0.0, 0.0, 0.99, 5.0], 1.0, 3),
    ([0.0, 0.1, 0.2, 2.0, 2.05, 2.1, 2.15], 0.5, 4),
])
def test_most_in_window_counts_the_fullest_half_open_window(times: list[float], window: float, most: int) -> None:
    assert most_in_window(times, window) == most


def test_a_throttle_before_any_grant_and_while_alone_is_taken() -> None:
    clock = FakeClock()
    limiter = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep)
    assert limiter.throttled(3.0)  # this thread was never granted: nothing to compare with
    assert limiter._not_before == 3.0
    broken = WithStandIn()
    alone = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=broken, retry_shared=5.0)
    grants(alone, clock, 1)
    assert alone.throttled(4.0)
    assert broken.stand_in_ledger.state.not_before == clock.now + 4.0


def test_a_restart_is_exactly_what_the_slow_start_says() -> None:
    """PaceState.restart on fixed numbers: a true start, an idle spell's decay, and a
    throttle remembered (its room, never under MIN_SHARE of the ceiling)."""
    from amptools.ratelimit import DECREASE, MEMORY, MIN_SHARE, PROBE, START_SHARE, PaceState

    ceiling, period, now = 10.0, 60.0, 10_000.0
    fresh = PaceState(rate=0.0, updated=0.0, probe_until=0.0, peak=0.0, decreased=0.0, not_before=0.0, active=0.0)
    fresh.restart(now, ceiling, period)
    assert (fresh.rate, fresh.probe_until, fresh.peak, fresh.updated) == (START_SHARE * ceiling, now + PROBE * period,
                                                                          0.0, now)
    # Half a second idle after 8 a second, a throttle long forgotten: it halves every idle
    # period, and a pace above the start needs no probe.
    warm = PaceState(rate=8.0, updated=now - 1, probe_until=0.0, peak=3.0, decreased=now - 2 * MEMORY * period,
                     not_before=0.0, active=now - 0.5)
    warm.restart(now, ceiling, period)
    assert warm.rate == pytest.approx(8.0 * 2 ** (-0.5 / period), rel=1e-12)
    assert (warm.probe_until, warm.peak) == (now, 0.0)
    for peak, rate in ((0.2, MIN_SHARE * ceiling), (6.0, DECREASE * 6.0)):
        recent = PaceState(rate=1.0, updated=now - 5, probe_until=0.0, peak=peak, decreased=now - 1,
                           not_before=0.0, active=now - 5)
        recent.restart(now, ceiling, period)
        assert (recent.rate, recent.probe_until, recent.peak) == (pytest.approx(rate), now, peak)
    # No room remembered (peak 0), or a throttle exactly MEMORY periods ago: a true start.
    for peak, decreased in ((0.0, now - 1), (6.0, now - MEMORY * period)):
        forgotten = PaceState(rate=0.0, updated=0.0, probe_until=0.0, peak=peak, decreased=decreased,
                              not_before=0.0, active=0.0)
        forgotten.restart(now, ceiling, period)
        assert (forgotten.rate, forgotten.probe_until) == (START_SHARE * ceiling, now + PROBE * period)


def test_on_its_own_ledger_a_release_without_a_token_completes_a_permit_from_any_thread() -> None:
    """``acquire``'s promise: a thread may release without the token. The client's own
    ledger counts permits, so the one another thread took completes."""
    from amptools.ratelimit import RateLimiter

    now = [1000.0]
    limiter = RateLimiter(10, 1.0, clock=lambda: now[0], sleep=lambda seconds: None)
    taker = threading.Thread(target=limiter.acquire)
    taker.start()
    taker.join()
    limiter.release()  # this thread took none
    now[0] += 2.0
    assert limiter.in_window() == 0


def test_a_scope_idle_exactly_idle_periods_is_still_running() -> None:
    """IDLE periods without a grant or pause: at exactly that idle spell the run goes on,
    a moment later its next grant starts afresh (the pace it reads is the start's)."""
    from amptools.ratelimit import IDLE, START_SHARE, PaceState

    ceiling, period = 10.0, 60.0
    for last_grant, last_pause in ((1_000.0, 0.0), (0.0, 1_000.0)):
        state = PaceState(rate=4.0, updated=last_grant, probe_until=0.0, peak=0.0, not_before=last_pause,
                          active=last_grant)
        edge = 1_000.0 + IDLE * period
        assert not state.starts_fresh(edge, period)
        assert state.starts_fresh(edge + 0.001, period)
        # Reading the pace after the idle spell changes nothing in the state it reads.
        before = PaceState(**vars(state))
        assert state.current(edge + 0.001, ceiling, period) == pytest.approx(START_SHARE * ceiling)
        assert state == before


def test_a_cancel_is_seen_before_while_and_after_waiting_for_a_turn() -> None:
    """A cancelled fetch waits for nothing: a cancel set before ``acquire``, set while another
    thread holds the turn (waiting for the pace), or set while this thread waits for the pace
    itself, raises FetchCancelled with the same words (each thread by its own event)."""
    from amptools.errors import FetchCancelled
    from amptools.ratelimit import RateLimiter

    words = "cancelled while waiting for the rate limit"
    limiter = RateLimiter(1, 60.0)  # one request a minute: the second waits a minute
    limiter.release(limiter.acquire())
    already = threading.Event()
    already.set()
    with pytest.raises(FetchCancelled, match=f"^{words}$"):
        limiter.acquire(already)
    holder_cancel, outcome = threading.Event(), {}

    def hold() -> None:  # takes the turn and waits for the pace (a minute)
        try:
            limiter.acquire(holder_cancel)
        except FetchCancelled as error:
            outcome["holder"] = str(error)

    holder = threading.Thread(target=hold)
    holder.start()
    for _ in range(500):  # until the holder has the turn
        if limiter._turn.locked():
            break
        time.sleep(0.01)
    assert limiter._turn.locked()
    mine = threading.Event()

    def wait_for_the_turn() -> None:  # the holder has it
        try:
            limiter.acquire(mine)
        except FetchCancelled as error:
            outcome["mine"] = str(error)

    waiter = threading.Thread(target=wait_for_the_turn)
    waiter.start()
    time.sleep(0.3)
    mine.set()
    waiter.join(10)
    stuck = waiter.is_alive()
    holder_cancel.set()  # ends both, whatever happened
    holder.join(10)
    waiter.join(10)
    assert not stuck, "a cancel while another thread holds the turn was seen only when the turn came"
    assert outcome == {"mine": words, "holder": words}


def test_a_client_s_burst_credit_and_catch_up_after_a_throttle_on_fixed_numbers() -> None:
    """ClientPace on numbers: the burst is a twentieth of a period's pace (one at least, so
    one a minute is never two back to back); credit goes at once and is spent one by one;
    after a throttle (or its pause) the credit is gone and the saved-up burst starts from
    the later of the two."""
    from amptools.ratelimit import ClientPace

    assert (ClientPace.burst(10.0, 60.0), ClientPace.burst(1 / 60, 60.0)) == (30, 1)
    assert ClientPace(tat=100.0, credit=1).wait(0.0, 1.0, 60.0) == 0.0  # one credit left: now
    assert ClientPace(tat=100.0).wait(0.0, 1.0, 60.0) == 98.0  # else the pace, burst of 3
    spending = ClientPace(tat=5.0, credit=2)
    spending.grant(10.0, 2.0)
    assert (spending.tat, spending.credit) == (5.0, 1)
    spending.credit = 0
    spending.grant(10.0, 2.0)
    assert (spending.tat, spending.credit) == (10.5, 0)
    # share 1/s at a 60 s period: a burst of 3, so 2 s of pace saved up.
    for not_before, tat in ((130.0, 132.0), (90.0, 102.0)):
        pace = ClientPace(tat=50.0, credit=5)
        pace.after_decrease(PaceState(decreased=100.0, not_before=not_before), 1.0, 60.0)
        assert (pace.tat, pace.credit, pace.seen_decrease) == (tat, 0, 100.0)
    late = ClientPace(tat=200.0, credit=5)
    late.after_decrease(PaceState(decreased=100.0, not_before=130.0), 1.0, 60.0)
    assert late.tat == 200.0


def test_a_pace_under_one_request_a_window_still_waits_for_the_window() -> None:
    """One request a minute at the start pace allows a fifth of a request per window: the
    window still holds one, so a client with one in it waits until it leaves."""
    from amptools.ratelimit import ClientPace, grant_wait

    now, ceiling = 1_000.0, 1 / 60
    wait = grant_wait(PaceState(), ClientPace(), now=now, share=ceiling, period=60.0, in_window=1, mine=1,
                      limit=5, ceiling=ceiling, oldest=lambda: 990.0)
    assert wait == pytest.approx(50.0)


def test_the_climb_after_a_throttle_on_fixed_numbers() -> None:
    """After a throttle: held a window, then 3% of the ceiling a period up to the room it
    had, then doubling every half period; never under MIN_SHARE of the ceiling now active."""
    t0, ceiling, period = 10_000.0, 10.0, 60.0
    state = PaceState(rate=5.1, updated=t0, probe_until=t0, peak=6.0, decreased=t0, active=t0)
    assert state._climbed(t0 + 30, ceiling, period) == pytest.approx(5.1)  # held
    assert state._climbed(t0 + 60 + 90, ceiling, period) == pytest.approx(5.1 + 0.005 * 90)  # 0.9 in 180 s
    assert state._climbed(t0 + 60 + 180 + 15, ceiling, period) == pytest.approx(6.0 * 2 ** 0.5)
    assert state._climbed(t0 + 60 + 180 + 90, ceiling, period) == ceiling
    # A throttle at a small ceiling, read when a larger client is active: its floor.
    small = PaceState(rate=0.1, updated=t0, probe_until=t0, peak=0.12, decreased=t0, active=t0)
    assert small._climbed(t0 + 10, ceiling, period) == pytest.approx(MIN_SHARE * ceiling)


def test_a_limiter_s_documented_defaults_and_words() -> None:
    """Per minute by default; a bad limit or period names itself."""
    from amptools.errors import ConfigurationError

    assert RateLimiter(600).period == 60.0
    with pytest.raises(ConfigurationError, match=r"^rate limit \(requests per period\) must be a whole number"):
        RateLimiter(0)
    with pytest.raises(ConfigurationError, match=r"^rate-limit period must be positive seconds, got 0\.$"):
        RateLimiter(5, 0)


@pytest.mark.parametrize("ledger", ["local", "shared", "failing"])
def test_a_shared_or_failing_ledger_is_asked_again_every_poll_a_local_one_is_slept_on(ledger: str) -> None:
    """A wait on a ledger other processes change (or one that failed and may come back) is
    slept in POLL steps, asking again after each; a wait on this process's own ledger is
    slept whole."""
    from amptools.ratelimit import POLL

    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.sleep(seconds)

    chosen = {"local": None, "shared": Broken(), "failing": Broken()}[ledger]
    if ledger == "shared":
        chosen.fixed = True
    limiter = RateLimiter(1, 60.0, clock=clock, sleep=sleep, ledger=chosen)
    limiter.release(limiter.acquire())
    limiter.release(limiter.acquire())  # one a minute: the second waits
    assert sum(slept) > 10
    if ledger == "local":
        assert max(slept) > 10
    else:
        assert max(slept) <= POLL
