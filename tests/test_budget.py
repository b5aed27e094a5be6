"""The shared budget: one SQLite file, every thread and process of a scope, nothing left by the dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amptools import budget
from amptools.budget import BudgetStore, BudgetWarning, Claims, ClaimStore, SharedBudget, budget_path, open_store
from amptools.errors import FetchCancelled
from amptools.ratelimit import (
    DECREASE,
    START_SHARE,
    Ledger,
    LocalLedger,
    PaceState,
    RateLimiter,
    fair_shares,
    most_in_window,
)
from amptools.sample import Arrival, SampleServer

ROOT = Path(__file__).resolve().parent.parent
FAST = {"backoff_base": 0.001, "backoff_cap": 0.01, "retry_after_cap": 0.01}


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


# -- where the file lives --------------------------------------------------------------------
def test_the_file_lives_under_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(tmp_path / "here"))
    assert budget_path() == tmp_path / "here" / "budget.sqlite"
    monkeypatch.delenv("AMPTOOLS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert budget_path() == tmp_path / "xdg" / "amptools" / "budget.sqlite"


def test_the_test_session_has_its_own_budget(isolated_budget: str) -> None:
    assert budget_path().parent == Path(isolated_budget)


# -- one budget per scope ---------------------------------------------------------------------
def warm(store: BudgetStore, scope: str, rate: float, now: float) -> None:
    """The scope's pace as a run under way has it (no slow start), for tests of the window."""
    with store.transaction() as db:
        SharedBudget(store, scope)._save(db, PaceState(rate=rate, updated=now, probe_until=now, active=now))


def limiters(tmp_path: Path, limits: list[int], period: float, scope: str = "s", *, warmed: bool = True):
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    if warmed:
        warm(store, scope, max(limits) / period, clock.now)
    made = [RateLimiter(limit, period, clock=clock, sleep=clock.sleep, ledger=SharedBudget(store, scope))
            for limit in limits]
    return made, store, clock


def take_turns(made: list[RateLimiter], clock: FakeClock, seconds: float) -> dict[int, list[float]]:
    """Each limiter asks for a permit in turn (as their threads would) for ``seconds``:
    the grant times of each. A limiter that must wait is passed over, so nobody blocks
    the others, as in separate processes."""
    times: dict[int, list[float]] = {i: [] for i in range(len(made))}
    end = clock.now + seconds
    while clock.now < end:
        waits = []
        for i, limiter in enumerate(made):
            wait, token = limiter.ledger.try_grant(clock.now, limiter.limit, limiter.period)
            if wait <= 0:
                limiter.ledger.finish(token, clock.now)
                times[i].append(clock.now)
            waits.append(wait)
        if min(waits) > 0:
            clock.now += min(waits)
    return times


def test_two_limiters_of_one_scope_share_window_and_pace(tmp_path: Path) -> None:
    (a, b), store, clock = limiters(tmp_path, [20, 20], 1.0)
    other = RateLimiter(20, 1.0, clock=clock, sleep=clock.sleep, ledger=SharedBudget(store, "s-other"))
    warm(store, "s-other", 20.0, clock.now)
    times = take_turns([a, b], clock, 10.0)
    together = sorted(times[0] + times[1])
    assert most_in_window(together, 1.0) <= 20  # one window between them, not 20 each
    assert len(together) / 10.0 >= 0.97 * 20  # and together the full pace, shared fairly
    assert abs(len(times[0]) - len(times[1])) <= 2
    assert a.in_window() == b.in_window() > 0 and a.quota().clients == 2
    assert other.in_window() == 0  # another scope is another budget
    # A throttle seen by one slows both; the other scope keeps its pace.
    in_window = a.in_window()
    with a.permit():
        pass
    warm(store, "s-other", 20.0, clock.now)
    a.throttled(0.0)
    assert b.pace + a.pace == pytest.approx(DECREASE * (in_window + 1))
    assert other.pace == 20
    assert a.quota().shared and a.quota().used_last_minute == len(together) + 1


def test_540_300_and_60_get_fair_shares_and_none_is_starved(tmp_path: Path) -> None:
    """Issue 17: three clients of one org with ceilings 540, 300 and 60 a minute. The org's
    total keeps to the largest ceiling; each gets at least 80% of its max-min fair share
    (240, 240, 60); none is starved (the old budget gave the last two nothing)."""
    made, _, clock = limiters(tmp_path, [540, 300, 60], 60.0)
    times = take_turns(made, clock, 60.0)
    fair = fair_shares(540, {0: 540, 1: 300, 2: 60})
    got = {i: len(t) for i, t in times.items()}
    assert all(got[i] >= 0.8 * fair[i] for i in got), (got, fair)
    everyone = sorted(t for ts in times.values() for t in ts)
    assert most_in_window(everyone, 60.0) <= 540
    assert made[2].quota().clients == 3 and made[2].quota().allowed_now == 60


def test_a_client_that_leaves_frees_its_share(tmp_path: Path) -> None:
    (a, b), _, clock = limiters(tmp_path, [540, 540], 60.0)
    take_turns([a, b], clock, 1.0)
    assert a.quota().allowed_now == 270
    b.ledger.close()  # type: ignore[attr-defined]
    assert a.quota().allowed_now == 540 and a.quota().clients == 1
    (c, d), _, clock = limiters(tmp_path / "2", [540, 540], 60.0) if (tmp_path / "2").mkdir() is None else None
    take_turns([c, d], clock, 1.0)
    clock.now += budget.ACTIVE + 1.0  # d stops asking: after ACTIVE seconds it no longer shares
    take_turns([c], clock, 0.1)
    assert c.quota().allowed_now == 540


def test_a_throttle_pauses_every_client_of_the_scope(tmp_path: Path) -> None:
    """The Retry-After pause, through the shared budget: the next grant of another client of
    the scope waits the whole pause (issue 24: this was never checked)."""
    (a, b), _, clock = limiters(tmp_path, [600, 600], 60.0)
    take_turns([a, b], clock, 1.0)
    clock.now += 58.0  # those requests leave the window a second from now, before the pause ends
    with a.permit():
        pass
    throttled_at = clock.now
    a.throttled(5.0)
    b.acquire()
    assert clock.now >= throttled_at + 5.0
    assert clock.now < throttled_at + 5.0 + 1.0


@pytest.mark.parametrize("shared", [True, False], ids=["shared budget", "local ledger"])
def test_a_pause_holds_every_grant_of_the_scope_back_to_the_second(tmp_path: Path, shared: bool) -> None:
    """The ledgers themselves, at moments given explicitly: after ``pause(now, 5.0)`` the
    next grant, of this client or another of the scope, waits exactly what is left."""
    store = BudgetStore(tmp_path / "b.sqlite", clock=FakeClock())
    ledger: Ledger = SharedBudget(store, "s") if shared else LocalLedger()
    limit, period = 600, 60.0
    wait, token = ledger.try_grant(1000.0, limit, period)
    assert wait == 0.0
    ledger.finish(token, 1000.0)
    ledger.pause(1000.0, 5.0)  # a Retry-After of 5 s
    assert ledger.try_grant(1000.5, limit, period)[0] == pytest.approx(4.5)
    ledger.pause(1001.0, 1.0)  # a shorter pause never shortens a longer one
    assert ledger.try_grant(1001.0, limit, period)[0] == pytest.approx(4.0)
    assert 0 < ledger.try_grant(1004.99, limit, period)[0] <= 0.01 + 1e-9
    if shared:  # another client of the scope (another notebook) waits as long
        other = SharedBudget(store, "s")
        assert other.try_grant(1002.0, limit, period)[0] == pytest.approx(3.0)
        assert SharedBudget(store, "another scope").try_grant(1002.0, limit, period)[0] == 0.0
    assert ledger.try_grant(1005.0, limit, period)[0] == 0.0
    # The throttle path pauses too: a Retry-After of 2 s, with the pace's decrease.
    ledger.pause(1006.0, 2.0)
    ledger.throttled(1006.0, 1005.0, limit, period)
    assert ledger.try_grant(1007.0, limit, period)[0] >= 1.0 - 1e-9


def test_a_run_soon_after_a_throttle_starts_at_the_room_it_left(tmp_path: Path) -> None:
    """The budget's memory: a new client of the scope (the next run, in another process)
    that starts while the campaign still sends begins where the throttle left off."""
    (a,), store, clock = limiters(tmp_path, [540], 60.0)
    take_turns([a], clock, 20.0)
    in_window = a.in_window()
    with a.permit():
        pass
    a.throttled(1.0)
    clock.now += 5 * 60.0  # a run ends; five minutes later another starts
    later = RateLimiter(540, 60.0, clock=clock, sleep=clock.sleep, ledger=SharedBudget(store, "s"))
    assert later.quota().allowed_now == round(DECREASE * (in_window + 1))
    clock.now += 3600.0  # an hour later, forgotten: a fresh slow start
    assert later.quota().allowed_now == round(START_SHARE * 540)


def test_clients_of_one_scope_share_and_can_opt_out() -> None:
    with SampleServer(rate_limit=100_000, window=1.0) as first, \
            SampleServer(rate_limit=100_000, window=1.0) as second:
        one, two = first.client(), first.client()
        alone = first.client(shared_budget=False)
        elsewhere = second.client()  # same key (same seed), another port: another org
        assert one.scope == elsewhere.scope  # the cache scope drops the loopback port...
        one.get_profile("testUser")
        assert one.quota().shared and not alone.quota().shared
        assert two.quota().used_last_minute == 1
        assert alone.quota().used_last_minute == 0
        assert elsewhere.quota().used_last_minute == 0  # ...the budget does not
        assert repr(one) == repr(alone)  # repr unchanged


def test_the_budget_file_never_holds_the_key(tmp_path: Path) -> None:
    with SampleServer(rate_limit=100_000, window=1.0, secret_key="very-secret-key-123") as srv:
        srv.client().get_profile("testUser")
    # Read in another process: opening and closing the file here would drop this
    # process's SQLite locks on it (POSIX advisory locks are per process).
    read = ("import sys, pathlib; sys.stdout.buffer.write(b''.join("
            "p.read_bytes() for p in pathlib.Path(sys.argv[1]).glob('budget.sqlite*')))")
    text = subprocess.run([sys.executable, "-c", read, str(budget_path().parent)],
                          capture_output=True, check=True).stdout
    assert b"very-secret-key-123" not in text
    assert b"key:" in text  # the scope (with the key's fingerprint) is there


def test_an_injected_clock_keeps_its_own_limiter() -> None:
    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        assert not srv.client(clock=lambda: time.monotonic()).quota().shared


# -- two real processes ---------------------------------------------------------------------------
CHILD = """
import sys
from amptools.client import ProfileClient
limit, period, shared, first, last = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
client = ProfileClient.from_env(rate_limit=limit, rate_period=period, shared_budget=shared,
                                backoff_base=0.001, backoff_cap=0.01, retry_after_cap=0.05, max_retries=20)
from amptools.sample.dataset import SampleOrg
ids = list(SampleOrg().user_ids[first:last])
print("ready", flush=True)
sys.stdin.readline()
ps = client.get_profiles(ids, workers=8, progress=False)
print(ps.counts["ok"], client.quota().throttles, flush=True)
"""


def run_two_processes(srv: SampleServer, limit: int, period: float, shared: bool, each: int) -> list[str]:
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": srv.secret_key, "AMPLITUDE_PROFILE_API_URL": srv.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(limit), str(period), "1" if shared else "0",
                          str(1 + i * each), str(1 + (i + 1) * each)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    srv.reset_arrivals()
    for child in children:  # both start together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return [child.communicate(timeout=120)[0].strip() for child in children]


def two_processes_fetch_60_each(limit: int, period: float, *, shared: bool) -> list[Arrival]:
    """Two processes each fetch 60 profiles from one server limited to ``limit`` per
    ``period``; both get all 60 (retried to the end). Returns the server's arrivals."""
    with SampleServer(rate_limit=limit, window=period) as srv:
        outputs = run_two_processes(srv, limit, period, shared=shared, each=60)
        arrivals = srv.arrivals
    assert [line.split()[0] for line in outputs] == ["60", "60"]
    return arrivals


@pytest.mark.slow
def test_two_processes_never_exceed_a_shared_limit() -> None:
    limit, period = 40, 1.0
    arrivals = two_processes_fetch_60_each(limit, period, shared=True)
    assert len(arrivals) == 120
    assert sum(a.status == 429 for a in arrivals) == 0
    assert most_in_window([a.time for a in arrivals], period) <= limit
    # Paced, not a window's worth at once (an unpaced pair sends all 40 in the first few
    # milliseconds): at most twice the pace in any quarter window. A tenth of a window
    # (0.1 s) was within one scheduling stall of the server under the full suite's load.
    assert most_in_window([a.time for a in arrivals], period / 4) <= limit // 2


@pytest.mark.slow
def test_without_the_shared_budget_two_processes_are_throttled() -> None:
    # The control of the test above: the same run with each process on its own budget.
    arrivals = two_processes_fetch_60_each(40, 1.0, shared=False)
    assert sum(a.status == 429 for a in arrivals) > 0


# -- a killed process leaves nothing behind ------------------------------------------------------------
HOLDER = """
import sys, time
from amptools.budget import SharedBudget, claim, open_store
from amptools.ratelimit import RateLimiter
limiter = RateLimiter(int(sys.argv[1]), float(sys.argv[2]), ledger=SharedBudget(open_store(), "killed-scope"))
for _ in range(int(sys.argv[1])):
    limiter.acquire()  # never released: in flight when the process dies
assert claim("user_id:u1", owner="holder", ttl=3600)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_killed_process_leaves_no_permit_or_claim_behind() -> None:
    limit, period = 5, 0.3
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(limit), str(period)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        limiter = RateLimiter(limit, period, ledger=SharedBudget(open_store(), "killed-scope"))
        assert limiter.in_window() == limit  # its permits are in flight...
        assert budget.is_claimed("user_id:u1")  # ...and its claim held
        assert not budget.claim("user_id:u1", owner="me", ttl=60)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        with pytest.raises(FetchCancelled):
            limiter.acquire(cancel)  # the window is full while it lives
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert not budget.is_claimed("user_id:u1")
    assert budget.claim("user_id:u1", owner="me", ttl=60)
    limiter.acquire()  # the dead process's permits count one more period, then expire
    limiter.release()
    assert limiter.in_window() <= limit


def test_a_hung_permit_stops_counting_after_its_lease(tmp_path: Path) -> None:
    (limiter,), _, clock = limiters(tmp_path, [2], 1.0)
    start = clock.now
    limiter.acquire()
    limiter.acquire()  # two in flight, never answered (this process lives on)
    limiter.acquire()
    assert clock.now >= start + budget.LEASE + 1.0  # waited out the lease, then a period
    assert clock.now < start + budget.LEASE + 2.0


# -- claims ---------------------------------------------------------------------------------------------
def check_claims(store: ClaimStore, expire: Callable[[], None], ttl: float = 10) -> None:
    """What any claim store does (the machine's here, the team's in test_team_budget.py);
    ``expire()`` lets a claim of ``ttl`` seconds run out."""
    assert store.claim("k", "a", ttl=10)
    assert store.is_claimed("k")
    assert not store.claim("k", "b", ttl=10)  # someone else holds it
    assert store.claim("k", "a", ttl=10)  # the owner renews
    store.release("k", owner="b")  # not b's to release
    assert store.is_claimed("k")
    store.release("k", owner="a")
    assert not store.is_claimed("k")
    assert store.claim("k", "b", ttl=ttl)
    expire()  # expired: free for anyone
    assert not store.is_claimed("k")
    assert store.claim("k", "a", ttl=10)
    assert store.wait_claimed("free-key", timeout=0)
    assert not store.wait_claimed("k", timeout=0.05, poll=0.01)
    assert store.claim("k2", "a", ttl=10) and store.claim("k3", "b", ttl=10)
    assert store.release_owner("a") == 2  # a run that ends gives up all it held
    assert not store.is_claimed("k") and not store.is_claimed("k2") and store.is_claimed("k3")


def test_claims(tmp_path: Path) -> None:
    clock = FakeClock()
    check_claims(Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock)),
                 lambda: setattr(clock, "now", clock.now + 10.5))


def test_wait_claimed_returns_when_another_thread_releases(tmp_path: Path) -> None:
    store = Claims(BudgetStore(tmp_path / "c.sqlite"))
    assert store.claim("k", "a", ttl=60)
    threading.Timer(0.1, store.release, args=("k",)).start()
    assert store.wait_claimed("k", timeout=10, poll=0.01)
    cancel = threading.Event()
    assert store.claim("k", "a", ttl=60)
    cancel.set()
    assert not store.wait_claimed("k", cancel=cancel)


def test_open_store_is_one_per_path() -> None:
    assert open_store() is open_store()
    assert open_store().path == budget_path()


def test_module_claims_use_the_default_store() -> None:
    assert budget.claim("mod-key", "a", ttl=60)
    assert budget.is_claimed("mod-key") and Claims(open_store()).is_claimed("mod-key")
    budget.release("mod-key")
    assert budget.wait_claimed("mod-key", timeout=0)


def test_a_client_works_without_a_writable_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(blocker / "sub"))
    with SampleServer(rate_limit=100_000, window=1.0) as srv, caplog.at_level("WARNING", logger="amptools"):
        client = srv.client()
        assert not client.quota().shared  # it paces itself alone, and says so in the log
        assert client.get_profile("testUser").user_id == "testUser"
    said = [r.getMessage() for r in caplog.records]
    assert any("shared request budget" in m and "pace alone" in m for m in said), said


# -- the file itself: private, noticed when it goes, never costing an answer -----------------------------
def test_the_budget_file_is_private(tmp_path: Path, umask_022: None) -> None:
    BudgetStore(tmp_path / "b.sqlite")
    for name in ("b.sqlite", "b.sqlite-wal", "b.sqlite-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_budget_file_deleted_or_replaced_is_noticed_and_reopened(tmp_path: Path, how: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    (limiter,), store, clock = limiters(tmp_path, [600], 60.0)
    take_turns([limiter], clock, 1.0)
    path = tmp_path / "b.sqlite"
    for name in ("b.sqlite", "b.sqlite-wal", "b.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    if how == "replaced":
        path.write_bytes(b"")  # an empty file: a new database
    with caplog.at_level("WARNING", logger="amptools"):
        clock.now += budget.CHECK_FILE  # within seconds
        with limiter.permit():
            pass
    said = [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0]
    assert path.exists() and limiter.quota().shared and limiter.in_window() == 1  # a new file, in use


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("free", flush=True)
sys.stdin.readline()
"""


def test_a_locked_budget_never_costs_an_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: another program holds the budget locked. Answers already received are kept,
    no id is asked twice, the client paces alone meanwhile and says so once."""
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(tmp_path))
    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        client = srv.client(rate_limit=300, rate_period=1.0)
        client.get_profile("testUser")  # the budget file exists, and is in use
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(budget_path())],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            srv.reset_arrivals()
            with caplog.at_level("WARNING", logger="amptools"):
                ps = client.get_profiles(srv.org.user_ids[1:41], workers=4, progress=False)
            alone = client.quota()
        finally:
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            holder.stdout.readline()
            holder.stdin.write("go\n")
            holder.stdin.flush()
            holder.wait(10)
        asked = [a.params["user_id"] for a in srv.arrivals]
    assert ps.counts["ok"] == 40 and len(asked) == len(set(asked)) == 40
    assert "alone" in alone.budget and not alone.shared
    said = [r.getMessage() for r in caplog.records if "paces alone" in r.getMessage()]
    assert 1 <= len(said) <= 3, said  # once per spell of a few seconds, not once per request


def test_a_damaged_budget_file_is_named_once_with_what_to_do(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(tmp_path / "damaged"))
    path = budget_path()
    path.parent.mkdir()
    path.write_bytes(b"this is not a database" * 100)
    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        with pytest.warns(BudgetWarning, match="Delete the file") as caught:
            first = srv.client()
            second = srv.client()
        assert not first.quota().shared and not second.quota().shared
        assert first.get_profile("testUser").user_id == "testUser"
    assert len(caught) == 1 and str(path) in str(caught[0].message)


# -- which processes live ---------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_zombie_or_a_reused_process_id_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = budget.process_start(child.pid)
    deadline = time.monotonic() + 10
    while budget._stat_fields(child.pid) is not None and budget._stat_fields(child.pid)[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert budget._stat_fields(child.pid) is not None  # a zombie: exited, not reaped yet
    assert not budget.process_alive(child.pid, started)  # os.kill(pid, 0) would say alive
    child.wait()
    me = budget.process_start()
    assert budget.process_alive(os.getpid(), me)
    assert not budget.process_alive(1, me)  # the same id started at another time: another process
    assert budget.process_alive(1, budget.process_start(1))


def test_claims_of_dead_processes_are_removed_from_disk(tmp_path: Path) -> None:
    store = BudgetStore(tmp_path / "c.sqlite")
    with store.transaction() as db:
        db.execute("INSERT INTO claims (key, owner, pid, proc, expires) VALUES ('k', 'dead', 999999999, 'x', ?)",
                   (time.monotonic() + 3600,))
    store.close()
    BudgetStore(tmp_path / "c.sqlite")  # opening tidies
    read = ("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
            "'SELECT count(*) FROM claims').fetchone()[0])")
    assert subprocess.run([sys.executable, "-c", read, str(tmp_path / "c.sqlite")],
                          capture_output=True, text=True, check=True).stdout.strip() == "0"


def test_a_cautious_client_starting_the_org_does_not_set_everyones_start(tmp_path: Path) -> None:
    """Found by bench_shared_budget: when the client with the smallest ceiling asked first,
    the org's start pace was a fifth of *its* ceiling for everyone (4 a minute each)."""
    (small, large), _, clock = limiters(tmp_path, [60, 540], 60.0, warmed=False)
    with small.permit():
        pass
    take_turns([small, large], clock, 1.0)
    assert small.quota().allowed_now + large.quota().allowed_now == round(START_SHARE * 540)


def test_a_new_budget_file_another_process_is_setting_up_is_waited_for(tmp_path: Path, write_lock_held) -> None:
    """Two processes starting together on a new budget file: the second waits for the
    first's write lock instead of pacing alone (SQLite answers ``journal_mode=WAL`` at once)."""
    path = tmp_path / "budget.sqlite"
    with write_lock_held(path, 0.3):
        store = BudgetStore(path)
        assert not Claims(store).is_claimed("k")  # opened, not unusable
    assert store._connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
