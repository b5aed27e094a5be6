"""The team budget on a real Redis: the same semantics as one machine's, across machines.

Every test here runs against Debian's redis-server (tests/redis_server.py), started once
per session on a free loopback port; no fake Redis.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amptools.budget_lua import CONSTANTS
from amptools.ratelimit import (
    DECREASE,
    START_SHARE,
    ClientPace,
    PaceState,
    RateLimiter,
    fair_shares,
    grant_wait,
    most_in_window,
)
from amptools.client import key_fingerprint
from amptools.redis_budget import RedisStore, namespace
from redis_server import RedisServer
from test_budget import FakeClock, check_claims

ROOT = Path(__file__).resolve().parent.parent
NEVER = PaceState().decreased
FIELDS = [field.name for field in dataclasses.fields(PaceState)]


@pytest.fixture
def store(redis_server):
    made = RedisStore(redis_server.url)
    yield made
    made.close()


def scope() -> str:
    """A scope of the test's own, so tests never share a budget."""
    return f"https://example.test key:{uuid.uuid4().hex[:16]}"


# -- the arithmetic: Lua and Python agree -----------------------------------------------------------
def probe_state(store: RedisStore, state: PaceState, what: str, now: float, ceiling: float, period: float,
                *extra: str) -> list[str]:
    values = [repr(float(getattr(state, name))) for name in FIELDS]
    return store.call("probe", "probe_state", *values, what, repr(now), repr(ceiling), repr(period), *extra)


def as_state(reply: list[str]) -> PaceState:
    return PaceState(*(float(value) for value in reply[:len(FIELDS)]))


def same_state(lua: PaceState, python: PaceState) -> None:
    for name in FIELDS:
        a, b = getattr(lua, name), getattr(python, name)
        if name in ("rate", "peak"):  # through 2**x: Lua's pow against Python's exp2
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), (name, a, b)
        else:
            assert a == b, (name, a, b)


@st.composite
def moments(draw):
    """A time, a period, a ceiling and a pace state around that time, as runs leave them."""
    base = draw(st.sampled_from([0.0, 1000.0, 86_400.0 * 365 * 54]))  # a test clock, a monotonic one, Unix time
    now = base + draw(st.floats(0, 1000))
    period = draw(st.sampled_from([0.3, 1.0, 60.0]) | st.floats(0.05, 600))
    limit = draw(st.integers(1, 100_000))
    ceiling = limit / period
    near = lambda low, high: st.floats(low * period, high * period)  # noqa: E731
    state = PaceState(
        rate=draw(st.just(0.0) | st.floats(0, 3 * ceiling)),
        updated=now - draw(near(0, 20)),
        probe_until=now + draw(near(-5, 2)),
        peak=draw(st.just(0.0) | st.floats(0, 3 * ceiling)),
        decreased=draw(st.just(NEVER) | near(0, 20).map(lambda x: now - x)),
        not_before=draw(st.just(0.0) | near(-3, 3).map(lambda x: now + x)),
        active=draw(st.just(NEVER) | near(0, 5).map(lambda x: now - x)),
    )
    return now, period, limit, ceiling, state


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(moments(), st.sampled_from(["current", "grant", "restart"]))
def test_the_pace_in_lua_is_the_pace_in_python(store, moment, what):
    now, period, _, ceiling, state = moment
    reply = probe_state(store, state, what, now, ceiling, period)
    python = dataclasses.replace(state)
    if what == "current":
        got, want = float(reply[len(FIELDS)]), python.current(now, ceiling, period)
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), (got, want)
    else:
        getattr(python, what)(now, ceiling, period)
    same_state(as_state(reply), python)


@PROPERTY
@given(moments(), st.floats(-5, 100), st.integers(0, 2000), st.none() | st.floats(0, 200))
def test_pauses_and_throttles_in_lua_are_python_s(store, moment, seconds, in_window, granted_ago):
    now, period, _, ceiling, state = moment
    python = dataclasses.replace(state)
    python.pause(now, seconds)
    same_state(as_state(probe_state(store, state, "pause", now, seconds, period)), python)
    granted_at = None if granted_ago is None else now - granted_ago * period
    reply = probe_state(store, state, "throttled", now, ceiling, period,
                        "" if granted_at is None else repr(granted_at), str(in_window))
    python = dataclasses.replace(state)
    decreased = python.throttled(now, granted_at, in_window, ceiling, period)
    assert reply[len(FIELDS)] == ("1" if decreased else "0")
    same_state(as_state(reply), python)


@PROPERTY
@given(st.floats(0, 1e5), st.lists(st.sampled_from([1.0, 5.0, 9.0]) | st.floats(0.01, 1e4), min_size=1, max_size=7))
def test_fair_shares_in_lua_are_python_s(store, total, ceilings):
    reply = store.call("probe", "probe_fair_shares", repr(total), str(len(ceilings)), *map(repr, ceilings))
    want = fair_shares(total, dict(enumerate(ceilings)))
    assert [float(value) for value in reply] == [want[i] for i in range(len(ceilings))]


@PROPERTY
@given(moments(), st.data())
def test_the_grant_decision_in_lua_is_python_s(store, moment, data):
    now, period, limit, ceiling, state = moment
    share = data.draw(st.floats(0.01, 1.0)) * ceiling
    pace = ClientPace(tat=now + data.draw(st.floats(-3, 3)) * period,
                      seen_decrease=data.draw(st.just(NEVER) | st.just(state.decreased)),
                      credit=data.draw(st.integers(0, 40)))
    in_window = data.draw(st.integers(0, limit + 5))
    mine = data.draw(st.integers(0, in_window))
    leaves = data.draw(st.none() | st.floats(-1, 0).map(lambda x: now + x * period))
    asked = []
    python_pace = dataclasses.replace(pace)
    want = grant_wait(dataclasses.replace(state), python_pace, now=now, share=share, period=period,
                      in_window=in_window, mine=mine, limit=limit, ceiling=ceiling,
                      oldest=lambda: asked.append(1) or leaves)
    values = [repr(float(getattr(state, name))) for name in FIELDS]
    wait, tat, seen, credit, lua_asked = store.call(
        "probe", "probe_grant_wait", *values, repr(pace.tat), repr(pace.seen_decrease), str(pace.credit),
        repr(now), repr(share), repr(period), str(in_window), str(mine), str(limit), repr(ceiling),
        "" if leaves is None else repr(leaves))
    assert float(wait) == want
    assert (float(tat), float(seen), int(credit)) == (python_pace.tat, python_pace.seen_decrease, python_pace.credit)
    assert int(lua_asked) == len(asked)


def test_the_constants_reach_the_script_from_python(store):
    # One source: a different constant passed in changes what the script computes.
    state = PaceState()
    fresh = float(probe_state(store, state, "current", 100.0, 10.0, 60.0)[len(FIELDS)])
    assert fresh == pytest.approx(START_SHARE * 10.0)
    names = [name for name, _ in CONSTANTS]
    assert "START_SHARE" in names and "DECREASE" in names and len(set(names)) == len(names)


@PROPERTY
@given(st.floats(0, 1e5), st.floats(0.01, 1e4), st.floats(0.05, 600), st.integers(0, 40), st.floats(-10, 10))
def test_a_client_s_gcra_in_lua_is_python_s(store, now, share, period, credit, ahead):
    pace = ClientPace(tat=now + ahead, credit=credit)
    tat, left, burst = store.call("probe", "probe_pace", repr(pace.tat), repr(pace.seen_decrease), str(credit),
                                  repr(now), repr(share), repr(period))
    pace.grant(now, share)
    assert (float(tat), int(left), int(burst)) == (pace.tat, pace.credit, ClientPace.burst(share, period))


# -- the whole grant: the same decisions as the machine's budget ------------------------------------
def machine_limiters(tmp_path: Path, limits: list[int], period: float):
    from amptools.budget import BudgetStore

    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    return [RateLimiter(limit, period, clock=clock, sleep=clock.sleep, ledger=store.ledger("s"))
            for limit in limits], clock


def warm(redis_server, name: str, rate: float, now: float) -> None:
    """The scope's pace as a run under way has it (no slow start), for tests of the window."""
    state = PaceState(rate=rate, updated=now, probe_until=now, active=now)
    redis_server.client().hset(f"{namespace(name)}:pace", mapping={f: repr(getattr(state, f)) for f in FIELDS})


def team_limiters(redis_server, limits: list[int], period: float, name: str | None = None, *,
                  warmed: bool = False):
    clock = FakeClock()
    store = RedisStore(redis_server.url, clock=clock)
    where = name or scope()
    if warmed:
        warm(redis_server, where, max(limits) / period, clock.now)
    return [RateLimiter(limit, period, clock=clock, sleep=clock.sleep, ledger=store.ledger(where))
            for limit in limits], clock


def take_turns(made: list[RateLimiter], clock: FakeClock, seconds: float,
               events: dict[float, object] | None = None) -> dict[int, list[float]]:
    """Each limiter asks for a permit in turn for ``seconds`` (as in tests/test_budget.py);
    ``events`` run once the clock passes their time. Completed permits are told at once."""
    times: dict[int, list[float]] = {i: [] for i in range(len(made))}
    pending = sorted((events or {}).items())
    end = clock.now + seconds
    start = clock.now
    while clock.now < end:
        while pending and clock.now - start >= pending[0][0]:
            pending.pop(0)[1]()
        waits = []
        for i, limiter in enumerate(made):
            wait, token = limiter.ledger.try_grant(clock.now, limiter.limit, limiter.period)
            if wait <= 0:
                limiter.ledger.finish(token, clock.now)
                flush = getattr(limiter.ledger, "flush", None)
                if flush is not None:
                    flush(clock.now)
                times[i].append(clock.now)
            waits.append(wait)
        if min(waits) > 0:
            clock.now += min(waits)
    return times


def scenario(made: list[RateLimiter], clock: FakeClock) -> dict[int, list[float]]:
    """Three clients of one org from a fresh start: slow start, fair shares, a throttle and
    its pause at 70 s, the smallest client leaving at 100 s; 150 s in all."""
    def throttle() -> None:
        with made[0].permit():
            pass
        made[0].throttled(5.0)

    def leave() -> None:
        made[2].ledger.close()  # type: ignore[attr-defined]
        made.pop(2)

    times = take_turns(made, clock, 150.0, {70.0: throttle, 100.0: leave})
    return times


def test_the_team_budget_grants_exactly_what_the_machine_s_grants(tmp_path, redis_server, monkeypatch):
    """The whole grant (the Lua's keys, window and fair shares, not the arithmetic alone),
    against the SQLite budget on the same fake clock: the same permits at the same times.
    A heartbeat thread on real time would tell the fake clock's time at moments the test
    does not choose (this failed once under load): it beats every millisecond here, so that
    a store with a fake clock that ran one would show it in every run."""
    import amptools.redis_budget as redis_budget

    monkeypatch.setattr(redis_budget, "FLUSH", 0.001)
    machine, machine_clock = machine_limiters(tmp_path, [540, 300, 60], 60.0)
    team, team_clock = team_limiters(redis_server, [540, 300, 60], 60.0)
    on_machine, on_team = scenario(machine, machine_clock), scenario(team, team_clock)
    assert sum(len(t) for t in on_machine.values()) > 400  # the scenario did something
    assert on_team == on_machine


def test_a_request_told_late_still_completed_when_it_did(redis_server):
    """Completed requests are told with the next call (no round trip of their own): the
    window still counts each from when it completed, not from when it was told."""
    (limiter,), clock = team_limiters(redis_server, [2], 1.0, warmed=True)
    first = limiter.acquire()
    finished_at = clock.now
    limiter.release(first)
    clock.now += 0.5  # told half a period later
    limiter.ledger.flush(clock.now)  # type: ignore[attr-defined]
    clock.now = finished_at + 0.999
    assert limiter.in_window() == 1
    clock.now = finished_at + 1.0
    assert limiter.in_window() == 0


def test_a_hung_permit_stops_counting_after_its_lease(redis_server):
    from amptools.budget_lua import LEASE

    (limiter,), clock = team_limiters(redis_server, [2], 1.0, warmed=True)
    start = clock.now
    limiter.acquire()
    limiter.acquire()  # two in flight, never answered (this process lives on)
    limiter.acquire()
    assert clock.now >= start + LEASE + 1.0  # waited out the lease, then a period
    assert clock.now < start + LEASE + 2.0


def test_fair_shares_on_the_team_budget_and_a_client_that_leaves(redis_server):
    made, clock = team_limiters(redis_server, [540, 300, 60], 60.0)
    times = take_turns(made, clock, 120.0)
    fair = fair_shares(540, {0: 540, 1: 300, 2: 60})
    second = {i: sum(1 for t in ts if t >= 1060.0) for i, ts in times.items()}  # after the slow start
    assert all(second[i] >= 0.8 * fair[i] for i in second), (second, fair)
    assert most_in_window(sorted(t for ts in times.values() for t in ts), 60.0) <= 540
    assert made[2].quota().clients == 3 and made[2].quota().allowed_now == 60
    made[1].ledger.close()  # type: ignore[attr-defined]
    assert made[0].quota().clients == 2 and made[0].quota().allowed_now == 480


def test_a_throttle_on_one_machine_pauses_and_slows_the_others(redis_server):
    name = scope()
    (a,), clock = team_limiters(redis_server, [600], 60.0, name, warmed=True)
    other_machine = RedisStore(redis_server.url, clock=clock)  # another process's store, same Redis
    b = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=other_machine.ledger(name))
    take_turns([a, b], clock, 1.0)
    clock.now += 58.0  # those requests leave the window a second from now, before the pause ends
    in_window = a.in_window()
    with a.permit():
        pass
    throttled_at = clock.now
    assert a.throttled(5.0)
    assert a.pace == pytest.approx(DECREASE * (in_window + 1))  # b has not asked for 58 s: a alone shares it
    b.acquire()
    assert throttled_at + 5.0 <= clock.now < throttled_at + 6.0
    later = RateLimiter(600, 60.0, clock=clock, sleep=clock.sleep, ledger=other_machine.ledger(name))
    clock.now += 5 * 60.0  # the budget's memory: a run five minutes later starts at the room left
    assert later.quota().allowed_now == round(DECREASE * (in_window + 1))
    other_machine.close()


def test_another_scope_is_another_budget(redis_server):
    (a,), clock = team_limiters(redis_server, [20], 1.0)
    (b,), _ = team_limiters(redis_server, [20], 1.0)
    take_turns([a], clock, 1.0)
    assert a.in_window() > 0 and b.in_window() == 0


def test_permits_are_taken_a_few_at_a_time_when_the_pace_allows(redis_server):
    """A client behind its pace by a round trip takes what it may send back to back in one
    call; the stash is given back (never used) when a throttle pauses the scope."""
    (limiter,), clock = team_limiters(redis_server, [600], 60.0)
    ledger = limiter.ledger
    ledger.store.rtt = 0.5  # type: ignore[attr-defined] - a Redis half a second away
    wait, token = ledger.try_grant(clock.now, 600, 60.0)
    assert wait <= 0 and len(ledger._stash) == 5  # type: ignore[attr-defined] - 1 + 10/s × 0.5 s, one used
    calls = []
    real_call = ledger.store.call  # type: ignore[attr-defined]
    ledger.store.call = lambda *a: calls.append(a) or real_call(*a)  # type: ignore[attr-defined]
    assert ledger.try_grant(clock.now, 600, 60.0)[0] <= 0 and not calls  # from the stash, no round trip
    ledger.pause(clock.now, 1.0)
    assert not ledger._stash and limiter.in_window() == 2  # type: ignore[attr-defined] - four given back


# -- claims ----------------------------------------------------------------------------------------
def test_claims_on_the_team_budget(store):
    claims = store.claims(scope())
    check_claims(claims, lambda: time.sleep(0.3), ttl=0.2)  # expiring on Redis's clock
    assert not store.claims(scope()).is_claimed("k3")  # another org's claims are apart


HOLDER = """
import sys, time
from amptools.ratelimit import RateLimiter
from amptools.redis_budget import RedisStore
store = RedisStore(sys.argv[1])
limiter = RateLimiter(5, 1.0, ledger=store.ledger(sys.argv[2]))
for _ in range(5):
    limiter.acquire()  # never released: in flight when the process dies
assert store.claims(sys.argv[2]).claim("user_id:u1", owner="holder", ttl=3600)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_machine_leaves_no_permit_or_claim_behind(redis_server, store):
    """A process that dies (kill -9, a pod evicted, a laptop gone) stops saying it lives:
    within ALIVE seconds its permits complete and its claims are free."""
    import signal
    import subprocess
    import sys

    from amptools.budget_lua import ALIVE

    name = scope()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_server.url, name], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        limiter = RateLimiter(5, 1.0, ledger=store.ledger(name))
        claims = store.claims(name)
        assert limiter.in_window() == 5 and claims.is_claimed("user_id:u1")
        time.sleep(ALIVE + 1)  # it lives (its heartbeat says so): still held
        assert limiter.in_window() == 5 and not claims.claim("user_id:u1", owner="me", ttl=60)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    killed = time.monotonic()
    while claims.is_claimed("user_id:u1"):
        assert time.monotonic() - killed < ALIVE + 2
        time.sleep(0.2)
    assert claims.claim("user_id:u1", owner="me", ttl=60)
    with limiter.permit():  # its permits completed when it was found dead, and leave the window
        pass
    assert limiter.in_window() <= 5


# -- what Redis holds --------------------------------------------------------------------------------
def test_keys_are_the_scope_s_fingerprint_and_expire(redis_server, store):
    from amptools.budget_lua import KEEP
    from amptools.client import api_scope

    key = "very-secret-key-123"
    name = api_scope("https://profile-api.amplitude.com", key)
    limiter = RateLimiter(600, 60.0, ledger=store.ledger(name))
    with limiter.permit():
        pass
    store.claims(name).claim(f"{name}|user_id|alice@example.com", "run", ttl=60)
    limiter.quota()
    redis = redis_server.client()
    keys = [k for k in redis.keys("*") if k.startswith(namespace(name))]
    assert len(keys) >= 8
    stored = " ".join(keys)
    for k in keys:
        assert 0 < redis.pttl(k) <= KEEP * 1000, k  # nothing grows forever
        kind = redis.type(k)
        stored += repr({"hash": redis.hgetall, "zset": lambda k: redis.zrange(k, 0, -1), "string": redis.get,
                        "set": redis.smembers}[kind](k))
    for secret in (key, "alice", "profile-api.amplitude.com", key_fingerprint(key)):
        assert secret not in stored


# -- choosing the budget: budget=, $AMPTOOLS_BUDGET_URL, --budget ------------------------------------
def test_a_client_on_the_team_budget_says_so_and_shares_it(redis_server, monkeypatch):
    import amptools as amp
    from amptools.sample import SampleServer

    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        one = srv.client(budget=redis_server.url)
        monkeypatch.setenv("AMPTOOLS_BUDGET_URL", redis_server.url)
        two = srv.client()  # from the environment
        on_machine = srv.client(budget=None, shared_budget=True)
        monkeypatch.delenv("AMPTOOLS_BUDGET_URL")
        machine = srv.client()
        assert isinstance(one.budget, RedisStore) and one.budget is two.budget
        assert machine.budget is not None and machine.budget.where == "this machine"
        one.get_profile("testUser")
        quota = two.quota()
        where = f"the team's Redis redis://127.0.0.1:{redis_server.port}/0"
        assert quota.budget == where and quota.shared and quota.used_last_minute == 1
        assert str(quota).endswith(f"budget shared on {where} by 2 clients") or str(quota).endswith(
            f"budget shared on {where}")
        assert machine.quota().used_last_minute == 0  # the machine's budget is another
        assert on_machine.budget is two.budget  # the variable was set when it was made
        with pytest.raises(amp.ConfigurationError, match="shared_budget=False"):
            srv.client(budget=redis_server.url, shared_budget=False)
        assert amp.connect(sample=True, budget=redis_server.url).budget is one.budget


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:6379/0", "scheme 'http'"),
    ("127.0.0.1:6379", "scheme '127.0.0.1'|not a URL"),
    ("localhost", "not a URL"),
    ("redis://127.0.0.1:notaport/0", "port"),
    ("redis:///0", "no host"),
    ("redis://127.0.0.1:6379/zero", "database"),
])
def test_a_budget_that_is_not_a_redis_url_is_refused(url, says):
    import amptools as amp

    with pytest.raises(amp.ConfigurationError, match=says):
        amp.ProfileClient("key-123", base_url="http://127.0.0.1:9", budget=url)


def test_without_redis_py_a_redis_url_says_what_to_install(monkeypatch, redis_server):
    import sys

    import amptools as amp

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis fails, as when it is not installed
    with pytest.raises(amp.ConfigurationError, match=r"pip install 'amptools\[team\]'"):
        amp.ProfileClient("key-123", base_url="http://127.0.0.1:9", budget=f"redis://127.0.0.1:{redis_server.port}/9")
    assert "redis>=" in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]


def test_the_cli_fetches_on_the_team_budget(redis_server, tmp_path):
    import io

    from amptools.cli import main

    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["fetch", str(ids), "--sample", "--props", "--no-progress", "--out", str(tmp_path / "out"),
                 "--budget", redis_server.url], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert f"budget shared on the team's Redis redis://127.0.0.1:{redis_server.port}/0" in err.getvalue()
    err = io.StringIO()
    assert main(["fetch", str(ids), "--sample", "--budget", "ftp://x"], stdout=io.StringIO(), stderr=err) == 2
    assert "--budget takes a Redis URL" in err.getvalue()


# -- the password: never shown ------------------------------------------------------------------------
PASSWORD = "CANARYpw-5e1f0a9b77"


BAD_URLS = ("redis://:{}@127.0.0.1:notaport/0", "http://:{}@127.0.0.1/0", "redis://:{}@[::1/0",
            "redis://:{}@/0", "redis://:{}@127.0.0.1:99999/0")


def bad_url(n: int) -> str:
    return BAD_URLS[n].format(PASSWORD)


def with_locals(error: BaseException) -> str:
    """The traceback as verbose tools show it, with every frame's locals, chained ones too."""
    import traceback

    text = "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            text += repr(tb.tb_frame.f_locals)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return text


def never_shown(*texts: str) -> None:
    for text in texts:  # checked at once: a list of them in a frame would show in the next traceback
        assert PASSWORD not in text


def test_the_password_never_shows(caplog, capfd, monkeypatch, tmp_path):
    import io
    import logging

    import amptools as amp
    from amptools.cli import main
    from amptools.sample import SampleServer

    caplog.set_level(logging.DEBUG)
    with RedisServer(password=PASSWORD) as guarded, SampleServer(rate_limit=100_000, window=1.0) as srv:
        client = srv.client(budget=guarded.url)
        client.get_profile("testUser")
        assert client.quota().shared  # the password worked
        ledger = client.limiter.ledger
        never_shown(repr(client), repr(client.budget), repr(ledger), repr(vars(client.budget)), repr(vars(ledger)),
                    str(client.quota()), repr(client.quota()), repr(client.limiter))
        wrong = srv.client(budget=guarded.url.replace(PASSWORD, PASSWORD + "x"))
        wrong.get_profile("testUser")  # refused by Redis: paces alone, answers all the same
        assert not wrong.quota().shared and "alone" in wrong.quota().budget
        never_shown(str(wrong.quota()), repr(wrong.quota()))
        # The URLs are made inside the calls: no frame of this test holds one.
        for n in range(len(BAD_URLS)):
            for make in (lambda n: amp.ProfileClient("key-123", base_url="http://127.0.0.1:9", budget=bad_url(n)),
                         lambda n: amp.connect(sample=True, budget=bad_url(n))):
                with pytest.raises(amp.ConfigurationError) as caught:
                    make(n)
                never_shown(with_locals(caught.value))
        monkeypatch.setenv("AMPTOOLS_BUDGET_URL", bad_url(0))
        with pytest.raises(amp.ConfigurationError) as caught:
            srv.client()
        never_shown(with_locals(caught.value))
        monkeypatch.delenv("AMPTOOLS_BUDGET_URL")
        err = io.StringIO()
        ids = tmp_path / "ids.txt"
        ids.write_text("testUser\n")
        assert main(["fetch", str(ids), "--sample", "--budget", bad_url(0)], stdout=io.StringIO(), stderr=err) == 2
        never_shown(err.getvalue())
    out, err_ = capfd.readouterr()
    never_shown(out, err_, caplog.text)
    assert "alone" in caplog.text  # the logs were captured


# -- faults -------------------------------------------------------------------------------------------
def redis_time(server: RedisServer) -> float:
    seconds, micros = server.client().time()
    return float(seconds) + micros / 1e6


def test_redis_unreachable_at_start_paces_alone_at_a_cautious_share_and_says_so_once(caplog):
    import logging

    from amptools.redis_budget import ALONE_SHARE
    from amptools.sample import SampleServer
    from redis_server import free_port

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with SampleServer(rate_limit=100_000, window=1.0) as srv, caplog.at_level(logging.INFO, logger="amptools"):
        client = srv.client(budget=nowhere, rate_limit=600, rate_period=1.0)
        client.limiter._retry_shared = 0.2  # tries Redis again often: each failure must not be said again
        started = time.monotonic()
        ps = client.get_profiles(srv.org.user_ids[1:61], workers=4, progress=False)
        spent = time.monotonic() - started
        quota = client.quota()
        asked = [a.params["user_id"] for a in srv.arrivals]
    assert ps.counts["ok"] == 60 and len(asked) == len(set(asked)) == 60  # no answer lost, none asked twice
    assert not quota.shared and "alone: ConnectionError" in quota.budget and nowhere in quota.budget
    assert quota.allowed_now <= ALONE_SHARE * 600 * 60  # per minute: half its ceiling at most
    said = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert spent > 3 * 0.2 and len(said) == 1, (spent, said)  # retries failed again; said once


@pytest.mark.slow
def test_redis_lost_mid_run_goes_on_alone_within_a_second_and_rejoins(caplog):
    import logging

    from amptools.sample import SampleServer

    with RedisServer() as redis_box, SampleServer(rate_limit=100_000, window=1.0) as srv, \
            caplog.at_level(logging.INFO, logger="amptools"):
        client = srv.client(budget=redis_box.url, rate_limit=1200, rate_period=60.0)  # 20 a second
        client.limiter._retry_shared = 1.0
        done = threading.Event()
        result = {}
        fetch = threading.Thread(target=lambda: result.update(ps=client.get_profiles(
            srv.org.user_ids[1:401], workers=4, progress=False)) or done.set())
        fetch.start()
        time.sleep(4.0)  # under way, on Redis
        assert client.quota().shared
        before = len(srv.arrivals)
        redis_box.stop()
        stopped = time.monotonic()
        while len(srv.arrivals) == before:  # the next request goes within a second, alone
            assert time.monotonic() - stopped < 1.0
            time.sleep(0.01)
        alone = client.quota()
        time.sleep(2.0)
        redis_box.start()  # the same port
        restarted = time.monotonic()
        while not client.quota().shared:
            assert time.monotonic() - restarted < 3.0  # rejoins (tried again every second)
            time.sleep(0.1)
        fetch.join(120)
        asked = [a.params["user_id"] for a in srv.arrivals]
    assert not alone.shared and "alone" in alone.budget
    assert done.is_set() and result["ps"].counts["ok"] == 400
    assert len(asked) == len(set(asked)) == 400  # no answer lost, none asked twice
    said = [r.getMessage() for r in caplog.records if "shared request budget" in r.getMessage()]
    assert len(said) == 2 and "unusable" in said[0] and "usable again" in said[1], said


@pytest.mark.slow
def test_a_redis_50_ms_away_still_lets_a_client_reach_its_ceiling(redis_server):
    """50 ms each way (100 ms a round trip): one client at the org's whole 600 a minute
    still gets ≥ 95% of it (permits a few at a time, completions told with the next call)."""
    from redis_server import DelayProxy, grant_times

    proxy = DelayProxy(redis_server.port, 0.05)
    store = RedisStore(proxy.url())
    try:
        name = scope()
        warm(redis_server, name, 10.0, redis_time(redis_server))  # past the slow start
        times = grant_times(RateLimiter(600, 60.0, ledger=store.ledger(name)), 15.0)
    finally:
        store.close()
        proxy.close()
    burst = ClientPace.burst(10.0, 60.0)  # sent back to back at the start, beyond the pace
    rate = (len(times) - burst) / (times[-1] - times[0])
    assert rate >= 0.95 * 10.0, rate
    assert most_in_window(times, 60.0) <= 600


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGSTOP"), reason="SIGSTOP")
def test_a_frozen_redis_costs_under_a_second_and_its_late_grants_are_given_back():
    """Redis stops answering without closing (a frozen server, a network that drops
    packets): the call times out and the client goes on alone within a second. The grant
    Redis runs when it wakes was never heard: the next call gives its permits back."""
    import os
    import signal

    with RedisServer() as box:
        store = RedisStore(box.url)
        name = scope()
        warm(box, name, 10.0, redis_time(box))
        limiter = RateLimiter(600, 60.0, ledger=store.ledger(name), retry_shared=0.5)
        with limiter.permit():
            pass
        assert limiter.quota().shared and limiter.in_window() == 1
        os.kill(box.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with limiter.permit():
                pass
            assert time.monotonic() - started < 1.0
            assert not limiter.quota().shared
        finally:
            os.kill(box.process.pid, signal.SIGCONT)  # it runs the grants it was sent, unheard
        time.sleep(0.6)  # the limiter tries Redis again
        assert limiter.quota().shared
        assert limiter.in_window() == 1  # the unheard grants' permits were given back
        store.close()


# -- two machines and a campaign on one org ----------------------------------------------------------
MACHINE = """
import sys
from amptools.client import ProfileClient
from amptools.sample.dataset import SampleOrg
limit, cache, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
client = ProfileClient.from_env(rate_limit=limit, rate_period=1.0, backoff_base=0.001, backoff_cap=0.01,
                                retry_after_cap=0.05, max_retries=20)
ids = list(SampleOrg().user_ids[1:1 + count])
print("ready", flush=True)
sys.stdin.readline()
ps = client.get_profiles(ids, workers=8, progress=False, cache=cache)
print(ps.counts["ok"], client.quota().throttles, client.quota().budget, flush=True)
"""


def campaign(server, per_second: float, stop: threading.Event) -> None:
    """A Braze campaign's Connected Content calls: evenly spaced, never retried."""
    import requests

    with requests.Session() as session:
        moment = time.monotonic()
        while not stop.is_set():
            session.get(f"{server.url}/v1/userprofile", params={"user_id": "testUser"},
                        headers={"Authorization": f"Api-Key {server.secret_key}"}, timeout=10)
            moment += 1.0 / per_second
            time.sleep(max(0.0, moment - time.monotonic()))


def two_machines_and_a_campaign(tmp_path: Path, budget_url: str | None) -> tuple[list[str], list, list]:
    """Two processes with cache folders of their own (two machines) fetch the same 80 ids
    into one shared profile store at 27 a second each, while a campaign calls 10 a second;
    the org allows 40 a second. Returns their outputs, the server's arrivals and the ids asked."""
    import os
    import subprocess
    import sys

    from amptools.sample import SampleServer

    with SampleServer(rate_limit=40, window=1.0) as srv:
        env = {**os.environ, "AMPLITUDE_SECRET_KEY": srv.secret_key, "AMPLITUDE_PROFILE_API_URL": srv.url,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("AMPTOOLS_BUDGET_URL", None)
        machines = []
        for n in range(2):
            folder = tmp_path / f"machine-{n}"
            folder.mkdir()
            machine_env = {**env, "AMPTOOLS_CACHE_DIR": str(folder)}
            if budget_url is not None:
                machine_env["AMPTOOLS_BUDGET_URL"] = budget_url
            machines.append(subprocess.Popen([sys.executable, "-c", MACHINE, "27", str(tmp_path / "profiles.sqlite"),
                                              "80"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                             env=machine_env))
        for machine in machines:
            assert machine.stdout is not None and machine.stdout.readline().strip() == "ready"
        stop = threading.Event()
        calls = threading.Thread(target=campaign, args=(srv, 10.0, stop))
        calls.start()
        time.sleep(1.5)  # the campaign sends; then both machines start together
        for machine in machines:
            assert machine.stdin is not None
            machine.stdin.write("go\n")
            machine.stdin.flush()
        outputs = [machine.communicate(timeout=120)[0].strip() for machine in machines]
        time.sleep(1.0)
        stop.set()
        calls.join(10)
        arrivals = srv.arrivals
    asked = [a.params["user_id"] for a in arrivals if a.params.get("user_id") != "testUser"]
    return outputs, arrivals, asked


@pytest.mark.slow
def test_two_machines_on_one_redis_never_exceed_the_org_and_meet_no_throttle(tmp_path, redis_server):
    outputs, arrivals, asked = two_machines_and_a_campaign(tmp_path, redis_server.url)
    assert [line.split()[:2] for line in outputs] == [["80", "0"], ["80", "0"]], outputs
    assert all("the team's Redis" in line for line in outputs)
    assert sum(a.status == 429 for a in arrivals) == 0  # neither the machines nor the campaign
    assert most_in_window([a.time for a in arrivals], 1.0) <= 40
    assert sorted(asked) == sorted(set(asked)) and len(asked) == 80  # claims on Redis: no id asked twice


@pytest.mark.slow
def test_two_machines_each_on_its_own_budget_are_throttled(tmp_path):
    # The control of the test above (what amptools did before the team budget): each
    # machine takes its own 27 a second, and fetches every id itself.
    outputs, arrivals, asked = two_machines_and_a_campaign(tmp_path, None)
    assert [line.split()[0] for line in outputs] == ["80", "80"]
    assert sum(a.status == 429 for a in arrivals) > 0
    assert len(asked) > 80
