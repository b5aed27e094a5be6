"""The shared budget: one SQLite file, every thread and process of a scope, nothing left by the dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amptools import budget
from amptools.budget import BudgetStore, SharedBudget, budget_path, open_store
from amptools.errors import FetchCancelled
from amptools.ratelimit import DECREASE, RateLimiter, most_in_window
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
def shared_pair(tmp_path: Path, limit: int, period: float, scope: str = "s"):
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    make = lambda sc: RateLimiter(limit, period, clock=clock, sleep=clock.sleep,  # noqa: E731
                                  ledger=SharedBudget(store, sc))
    return make(scope), make(scope), make(scope + "-other"), clock


def test_two_limiters_of_one_scope_share_window_and_pace(tmp_path: Path) -> None:
    a, b, other, clock = shared_pair(tmp_path, 20, 1.0)
    grants = []
    for i in range(200):
        limiter = a if i % 3 else b
        with limiter.permit():
            grants.append(clock.now)
    assert most_in_window(grants, 1.0) <= 20  # one window between them, not 20 each
    assert 199 / (grants[-1] - grants[0]) >= 0.97 * 20  # and together the full pace
    assert a.in_window() == b.in_window() > 0
    assert other.in_window() == 0  # another scope is another budget
    # A throttle seen by one slows both; the other scope keeps its pace.
    with a.permit():
        pass
    a.throttled(0.0)
    assert b.pace == pytest.approx(20 * DECREASE) and other.pace == 20
    assert a.quota().shared and a.quota().used_last_minute == 201


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
    assert most_in_window([a.time for a in arrivals], period / 10) <= limit // 5


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


def test_a_hung_permit_stops_counting_after_its_lease(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    limiter = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep, ledger=SharedBudget(store, "s"))
    start = clock.now
    limiter.acquire()
    limiter.acquire()  # two in flight, never answered (this process lives on)
    limiter.acquire()
    assert clock.now >= start + budget.LEASE + 1.0  # waited out the lease, then a period
    assert clock.now < start + budget.LEASE + 2.0


# -- claims ---------------------------------------------------------------------------------------------
def test_claims(tmp_path: Path) -> None:
    clock = FakeClock()
    store = BudgetStore(tmp_path / "c.sqlite", clock=clock)
    assert store.claim("k", "a", ttl=10)
    assert store.is_claimed("k")
    assert not store.claim("k", "b", ttl=10)  # someone else holds it
    assert store.claim("k", "a", ttl=10)  # the owner renews
    store.release("k", owner="b")  # not b's to release
    assert store.is_claimed("k")
    store.release("k", owner="a")
    assert not store.is_claimed("k")
    assert store.claim("k", "b", ttl=10)
    clock.now += 10.5  # expired: free for anyone
    assert not store.is_claimed("k")
    assert store.claim("k", "a", ttl=10)
    assert store.wait_claimed("free-key", timeout=0)
    assert not store.wait_claimed("k", timeout=0.05, poll=0.01)
    assert store.claim("k2", "a", ttl=10) and store.claim("k3", "b", ttl=10)
    assert store.release_owner("a") == 2  # a run that ends gives up all it held
    assert not store.is_claimed("k") and not store.is_claimed("k2") and store.is_claimed("k3")


def test_wait_claimed_returns_when_another_thread_releases(tmp_path: Path) -> None:
    store = BudgetStore(tmp_path / "c.sqlite")
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
    assert budget.is_claimed("mod-key") and open_store().is_claimed("mod-key")
    budget.release("mod-key")
    assert budget.wait_claimed("mod-key", timeout=0)


def test_a_client_works_without_a_writable_cache_dir(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(blocker / "sub"))
    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        client = srv.client()
        assert not client.quota().shared  # it paces itself alone, and says so in the log
        assert client.get_profile("testUser").user_id == "testUser"
