"""What mutation testing (``make mutate``) found the other tests of the machine's budget let
through: the Retry-After pause and the throttle on the shared ledger, the permits of a
process that died, what opening the file keeps and drops, which processes live (zombies,
reused ids, odd command names, no ``/proc``), the claims' edges and waits, the log line
of an unusable file, and the URLs that choose a team's budget."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from amptools import budget
from amptools.budget import BudgetStore, BudgetWarning, Claims, SharedBudget, budget_url, open_budget
from amptools.errors import ConfigurationError
from amptools.ratelimit import LocalLedger
from test_budget import FakeClock, warm

LIMIT, PERIOD = 600, 60.0


@contextmanager
def as_an_earlier_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What is written inside is written as by a process that had this process's id before
    it (another start time): a dead process whose id was reused."""
    with monkeypatch.context() as patch:
        patch.setattr(budget, "_ME", (os.getpid(), "1"))
        yield


def rows(store: BudgetStore, table: str) -> int:
    with store.transaction() as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- the pause and the throttle on the shared ledger ----------------------------------------------
def test_a_pause_holds_every_client_of_the_scope_back(tmp_path: Path) -> None:
    """Issue 24, item 1, on the ledger itself: after pause(5.0) the next grant of any client
    of the scope waits the 5 s, a shorter pause never shortens it, and the counts say when."""
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", LIMIT / PERIOD, clock.now)
    one, other = SharedBudget(store, "s"), SharedBudget(store, "s")
    start = clock.now
    one.pause(start, 5.0)
    one.pause(start, 1.0)
    assert other.try_grant(start, LIMIT, PERIOD)[0] == pytest.approx(5.0)
    assert other.try_grant(start + 4.9, LIMIT, PERIOD)[0] == pytest.approx(0.1)
    assert other.counts(start, LIMIT, PERIOD).not_before == start + 5.0
    assert SharedBudget(store, "another scope").try_grant(start, LIMIT, PERIOD)[0] <= 0
    assert other.try_grant(start + 5.0, LIMIT, PERIOD)[0] <= 0


def test_a_throttle_of_a_request_sent_before_the_last_decrease_does_not_decrease_again(tmp_path: Path) -> None:
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", LIMIT / PERIOD, clock.now)
    ledger = SharedBudget(store, "s")
    sent = clock.now
    assert ledger.try_grant(sent, LIMIT, PERIOD)[0] <= 0
    assert ledger.throttled(sent + 1.0, sent, LIMIT, PERIOD)
    pace = ledger.counts(sent + 1.0, LIMIT, PERIOD).pace
    assert not ledger.throttled(sent + 1.5, sent, LIMIT, PERIOD)  # sent at the old pace
    assert ledger.counts(sent + 1.5, LIMIT, PERIOD).pace == pace


def test_a_throttle_after_a_slow_answer_decreases_the_pace_as_alone(tmp_path: Path) -> None:
    """The only client's answer came after more than ACTIVE seconds (no client is active
    when the throttle arrives): the pace falls as a client alone would have it fall."""
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    shared, alone = SharedBudget(store, "s"), LocalLedger()
    sent = clock.now
    answered = sent + budget.ACTIVE + 2.0
    for ledger in (shared, alone):
        assert ledger.try_grant(sent, LIMIT, PERIOD)[0] <= 0
        assert ledger.throttled(answered, sent, LIMIT, PERIOD)
    assert shared.counts(answered, LIMIT, PERIOD).pace == alone.counts(answered, LIMIT, PERIOD).pace
    assert shared.counts(answered, LIMIT, PERIOD).pace < 0.5 * LIMIT / PERIOD


# -- the permits of a process that died ---------------------------------------------------------------
def test_permits_of_a_dead_process_count_one_more_period_from_when_it_is_seen_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit, period = 2, 1.0
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", limit / period, clock.now)
    with as_an_earlier_process(monkeypatch):
        dead = SharedBudget(store, "s")
        taken = 0
        while taken < limit:  # in flight when it died, never answered
            wait, _ = dead.try_grant(clock.now, limit, period)
            taken += wait <= 0
            clock.sleep(wait)
    ledger = SharedBudget(store, "s")
    seen_dead = clock.now
    assert ledger.try_grant(seen_dead, limit, period)[0] == pytest.approx(period)
    assert ledger.try_grant(seen_dead + period, limit, period)[0] <= 0  # not after the lease
    assert ledger.counts(seen_dead + period, limit, period).in_window == 1


# -- what opening the file keeps and drops ------------------------------------------------------------
def a_scope_in_use(store: BudgetStore, clock: FakeClock, *, claim_ttl: float = 60.0) -> SharedBudget:
    """A client of scope "s" with a permit in flight, a throttled pace, and a claim."""
    warm(store, "s", LIMIT / PERIOD, clock.now)
    client = SharedBudget(store, "s")
    assert client.try_grant(clock.now, LIMIT, PERIOD)[0] <= 0
    assert client.throttled(clock.now, None, LIMIT, PERIOD)
    assert Claims(store).claim("user_id:u1", "run", ttl=claim_ttl)
    return client


def test_what_is_current_survives_another_process_opening_the_file(tmp_path: Path) -> None:
    clock = FakeClock()
    first = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    a_scope_in_use(first, clock)
    before = SharedBudget(first, "s").counts(clock.now, LIMIT, PERIOD)
    first.close()
    reopened = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    after = SharedBudget(reopened, "s").counts(clock.now, LIMIT, PERIOD)
    assert after == before and after.in_window == 1 and after.clients == 2
    assert Claims(reopened).is_claimed("user_id:u1")


def test_rows_from_before_a_reboot_are_dropped_on_opening(tmp_path: Path) -> None:
    """The clock went back (a reboot): rows dated more than a second ahead are forgotten."""
    clock = FakeClock(5000.0)
    first = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    a_scope_in_use(first, clock)
    first.close()
    clock.now -= 1.5
    fresh = SharedBudget(BudgetStore(tmp_path / "fresh.sqlite", clock=clock), "s").counts(clock.now, LIMIT, PERIOD)
    reopened = SharedBudget(BudgetStore(tmp_path / "b.sqlite", clock=clock), "s").counts(clock.now, LIMIT, PERIOD)
    assert reopened == fresh and reopened.in_window == 0 and reopened.clients == 1


@pytest.mark.parametrize(("hours", "kept"), [(9.5, True), (10.5, False)])
def test_a_claim_dated_more_than_ten_hours_ahead_is_from_before_a_reboot(tmp_path: Path, hours: float,
                                                                        kept: bool) -> None:
    clock = FakeClock()
    assert Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock)).claim("k", "a", ttl=hours * 3600)
    assert Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock)).is_claimed("k") == kept


def test_rows_of_a_process_whose_id_was_reused_are_removed_from_disk(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims hold user ids: a dead process's rows leave the file when it is next opened."""
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    with as_an_earlier_process(monkeypatch):
        assert store.claims("s").claim("user_id:u1", "dead run", ttl=60)
        assert SharedBudget(store, "s").try_grant(clock.now, LIMIT, PERIOD)[0] <= 0
    assert store.claims("s").claim("user_id:u2", "live run", ttl=60)
    assert (rows(store, "claims"), rows(store, "clients")) == (2, 1)
    store.close()
    reopened = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    assert (rows(reopened, "claims"), rows(reopened, "clients")) == (1, 0)


def test_a_client_of_a_dead_process_takes_no_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its row stays until the file is tidied, but its share is free at once: a live client
    of the scope is alone, and paces at the whole limit."""
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    with as_an_earlier_process(monkeypatch):
        assert SharedBudget(store, "s").try_grant(clock.now, LIMIT, PERIOD)[0] <= 0
    live = SharedBudget(store, "s")
    assert SharedBudget(store, "s").counts(clock.now, LIMIT, PERIOD).clients == 1  # the dead one is not counted
    assert live.try_grant(clock.now, LIMIT, PERIOD)[0] <= 0
    assert live.counts(clock.now, LIMIT, PERIOD).clients == 1
    assert rows(store, "clients") == 2  # the dead one's row is kept until the file is tidied, not counted


def test_a_deleted_or_replaced_file_is_seen_within_check_file_seconds_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Looked at once every CHECK_FILE seconds (not on every grant): a deleted file, or
    another one put in its place, is reopened and said in the log with what happened."""
    clock = FakeClock()
    path = tmp_path / "b.sqlite"
    store = BudgetStore(path, clock=clock)
    ledger = SharedBudget(store, "s")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="amptools"):
        ledger.counts(clock.now, LIMIT, PERIOD)
        path.unlink()
        clock.now += budget.CHECK_FILE - 0.5
        ledger.counts(clock.now, LIMIT, PERIOD)
        assert said() == [] and not path.exists()  # not looked at yet
        clock.now += 0.5  # CHECK_FILE since it was opened, to the second
        ledger.counts(clock.now, LIMIT, PERIOD)
        assert said() == [f"the shared request budget {path} was deleted; reopening it"] and path.exists()
        other = tmp_path / "other.sqlite"
        BudgetStore(other, clock=clock).close()
        os.replace(other, path)
        clock.now += budget.CHECK_FILE
        ledger.counts(clock.now, LIMIT, PERIOD)
    assert said()[1:] == [f"the shared request budget {path} was replaced by another file; reopening it"]


def test_the_last_minute_s_requests_are_kept_for_the_quota_however_short_the_window(tmp_path: Path) -> None:
    """Completed permits leave the file a minute (and a lease) after they were granted, not
    when they leave a shorter window: ``quota().used_last_minute`` counts them."""
    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", 10.0, clock.now)
    ledger = SharedBudget(store, "s")
    for _ in range(3):
        wait, token = ledger.try_grant(clock.now, 10, 1.0)
        assert wait <= 0
        ledger.finish(token, clock.now)
        clock.now += 5.0  # each out of the 1-second window before the next is granted
    assert ledger.counts(clock.now, 10, 1.0).used_last_minute == 3


def test_a_small_client_beside_a_large_one_never_exceeds_its_own_limit(tmp_path: Path) -> None:
    """The scope's window is the large client's; the small one's own limit holds in every
    window of its period, the burst its pace allows included (its permits complete at once)."""
    from amptools.ratelimit import most_in_window

    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", 660.0, clock.now)
    small, large = SharedBudget(store, "s"), SharedBudget(store, "s")
    granted: list[float] = []
    end = clock.now + 3.0
    while clock.now < end:
        large.try_grant(clock.now, 600, 1.0)  # active, with the larger ceiling (finished or not)
        wait, token = small.try_grant(clock.now, 60, 1.0)
        if wait <= 0:
            small.finish(token, clock.now)
            granted.append(clock.now)
        else:
            clock.now += min(wait, 0.01)
    assert len(granted) > 120  # it went at its pace
    assert most_in_window(granted, 1.0) <= 60


def test_close_lets_go_of_the_file_at_once(tmp_path: Path) -> None:
    """Not when the garbage collector gets to it: the last connection gone, SQLite folds its
    -wal file back into the file and removes it and the -shm file."""
    store = BudgetStore(tmp_path / "b.sqlite")
    assert store.claims().claim("k", "a", ttl=60)
    assert (tmp_path / "b.sqlite-wal").exists()
    gc.disable()  # a connection merely dropped would be closed by a collection
    try:
        store.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite"]
    finally:
        gc.enable()


def test_the_file_and_its_directories_are_made_when_missing(tmp_path: Path) -> None:
    store = BudgetStore(tmp_path / "new" / "cache" / "budget.sqlite")
    assert store.claims().claim("k", "a", ttl=60)
    store.close()
    store.close()  # closing twice is harmless; a later use opens it again
    assert store.claims().is_claimed("k")


# -- which processes live -----------------------------------------------------------------------------
NAMED_CHILD = """
import sys
with open("/proc/self/comm", "w", encoding="utf-8") as comm:
    comm.write(sys.argv[1])
print("named", flush=True)
sys.stdin.readline()
"""


def stat_of(pid: int) -> list[bytes]:
    """proc(5): the fields after the command name; the state first, the start time 20th."""
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()


def test_without_a_start_time_the_id_decides() -> None:
    assert budget.process_alive(os.getpid()) and budget.process_alive(1)
    assert not budget.process_alive(os.getpid(), "1")  # this id, another start: an earlier process


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="names a process through /proc")
def test_a_process_named_with_odd_characters_is_told_alive_then_dead() -> None:
    """A command name may hold anything — non-ASCII, ")" and spaces — and /proc shows it raw."""
    child = subprocess.Popen([sys.executable, "-c", NAMED_CHILD, "ü) Z 1 2"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "named"
        started = budget.process_start(child.pid)
        assert started == stat_of(child.pid)[19].decode() and budget.process_alive(child.pid, started)
        child.stdin.close()
        assert child.stdout.read() == ""  # it exited; not reaped yet: a zombie
        for _ in range(1000):
            if stat_of(child.pid)[0] == b"Z":
                break
            threading.Event().wait(0.01)
        assert not budget.process_alive(child.pid, started)
    finally:
        child.wait(10)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_process_that_cannot_be_found_has_no_start_time() -> None:
    assert budget.process_start(999_999_999) == ""
    assert not budget.process_alive(999_999_999) and not budget.process_alive(999_999_999, "")


def my_stat(changes: dict[int, str] | None = None, length: int | None = None) -> list[str]:
    """This process's /proc stat fields, changed at some positions or cut short."""
    fields = list(MY_STAT)
    for index, value in (changes or {}).items():
        fields[index] = value
    return fields[:length]


MY_STAT = budget._stat_fields(os.getpid()) or []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(("fields", "alive", "start"), [
    ({0: "X"}, False, None),  # dead, the last state before it vanishes
    ({0: "Z"}, False, None),  # a zombie
    ({0: "S", 19: "1"}, False, "1"),  # another start: the id was reused
    ({0: "R"}, True, None),
])
def test_what_proc_says_of_a_process(monkeypatch: pytest.MonkeyPatch, fields: dict[int, str], alive: bool,
                                     start: str | None) -> None:
    me = my_stat()
    monkeypatch.setattr(budget, "_stat_fields", lambda pid: my_stat(fields))
    assert budget.process_alive(12345, me[19]) == alive
    assert budget.process_start(12345) == (start or me[19])


@pytest.mark.parametrize("length", [19, 20])
def test_a_stat_line_without_the_start_time_leaves_the_id_to_decide(monkeypatch: pytest.MonkeyPatch,
                                                                     length: int) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads /proc")
    monkeypatch.setattr(budget, "_stat_fields", lambda pid: my_stat({19: "1"}, length))
    assert budget.process_start(12345) == ("" if length == 19 else "1")
    assert budget.process_alive(12345, "2") == (length == 19)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_without_proc_a_signal_0_tells_and_harms_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on macOS: no /proc, so os.kill(pid, 0) answers (another user's process is alive)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE)
    assert child.stdin is not None
    try:
        monkeypatch.setattr(budget, "_stat_fields", lambda pid: None)
        assert budget.process_alive(child.pid, "any start")
        assert budget.process_alive(1)  # init: another user's process unless we are root
        assert not budget.process_alive(999_999_999)

        def refused(pid: int, signal: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        with monkeypatch.context() as patch:  # as a user who is not root is answered for init
            patch.setattr(budget.os, "kill", refused)
            assert budget.process_alive(1)
        with monkeypatch.context() as patch:
            patch.setattr(budget.os, "name", "nt")  # Windows: no signal 0 to ask; the lease decides
            assert budget.process_alive(999_999_999)
    finally:
        child.stdin.close()
        assert child.wait(10) == 0  # no signal reached it


# -- claims: their edges and waits -------------------------------------------------------------------
def test_a_claim_ends_exactly_when_its_time_is_up(tmp_path: Path) -> None:
    clock = FakeClock()
    claims = Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock))
    assert claims.claim("k", "a", ttl=10.0)
    clock.now += 10.0
    assert not claims.is_claimed("k")
    assert claims.claim("k", "b", ttl=10.0)


def test_a_claim_of_a_process_whose_id_was_reused_is_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    claims = Claims(BudgetStore(tmp_path / "c.sqlite", clock=FakeClock()))
    with as_an_earlier_process(monkeypatch):
        assert claims.claim("k", "dead run", ttl=60)
    assert not claims.is_claimed("k")
    assert claims.claim("k", "live run", ttl=60)


class FakeTime:
    """``time`` for the waits of claims: sleeping moves the fake clock, and a wait that would
    never end fails instead of hanging."""

    def __init__(self, clock: FakeClock, longest: float = 100.0) -> None:
        self.clock, self.end = clock, clock.now + longest

    def monotonic(self) -> float:
        return self.clock.now

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        assert self.clock.now < self.end, "waits for ever"


class FakeCancel(threading.Event):
    def __init__(self, time: FakeTime) -> None:
        super().__init__()
        self.time = time

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "waits for ever"
        self.time.sleep(timeout)
        return self.is_set()


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeClock()
    fake = FakeTime(clock)
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def test_a_wait_sees_a_claim_run_out_within_a_tenth_of_a_second(tmp_path: Path, fake_time: FakeTime) -> None:
    clock = fake_time.clock
    claims = Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock))
    assert claims.claim("k", "a", ttl=10.0)
    expires = clock.now + 10.0
    assert claims.wait_claimed("k")
    assert expires <= clock.now <= expires + 0.1 + 1e-9


@pytest.mark.parametrize("with_cancel", [False, True])
def test_a_wait_gives_up_at_its_timeout(tmp_path: Path, fake_time: FakeTime, with_cancel: bool) -> None:
    clock = fake_time.clock
    claims = Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock))
    assert claims.claim("k", "a", ttl=60.0)
    cancel = FakeCancel(fake_time) if with_cancel else None
    start = clock.now
    assert not claims.wait_claimed("k", timeout=0, cancel=cancel)
    assert clock.now == start  # a timeout of 0 asks once and never waits
    assert not claims.wait_claimed("k", timeout=5.0, cancel=cancel, poll=0.5)
    assert start + 5.0 <= clock.now <= start + 5.5


def test_a_cancelled_wait_returns_at_once(tmp_path: Path, fake_time: FakeTime) -> None:
    clock = fake_time.clock
    claims = Claims(BudgetStore(tmp_path / "c.sqlite", clock=clock))
    assert claims.claim("k", "a", ttl=60.0)
    cancel = FakeCancel(fake_time)
    cancel.set()
    assert not claims.wait_claimed("k", cancel=cancel)
    assert clock.now == 1000.0


def test_the_module_functions_pass_everything_on(fake_time: FakeTime) -> None:
    assert budget.claim("mod:k1", "run-1", ttl=60) and budget.claim("mod:k2", "run-1", ttl=60)
    budget.release("mod:k1", owner="run-2")  # not run-2's to release
    assert budget.is_claimed("mod:k1")
    assert not budget.wait_claimed("mod:k1", timeout=0)
    start = fake_time.clock.now
    assert not budget.wait_claimed("mod:k1", timeout=1.0, poll=0.3)
    assert fake_time.clock.now - start == pytest.approx(1.2)  # polls of 0.3 s: the poll is passed on
    cancel = FakeCancel(fake_time)
    cancel.set()
    assert not budget.wait_claimed("mod:k1", cancel=cancel)
    assert budget.release_owner("run-1") == 2
    assert not budget.is_claimed("mod:k1") and budget.wait_claimed("mod:k2", timeout=0)


# -- an unusable file, said in the log -------------------------------------------------------------------
def test_an_unusable_file_is_said_in_the_log_and_only_a_damaged_one_warns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "budget.sqlite"
    with caplog.at_level("WARNING", logger="amptools"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        budget.unusable(path, sqlite3.OperationalError("database is locked"))
        budget.unusable(tmp_path / "other.sqlite", PermissionError(13, "Permission denied"))
        assert caught == []  # locked, or a directory not writable: nothing to delete
        damaged = tmp_path / "damaged.sqlite"
        budget.unusable(damaged, sqlite3.DatabaseError("file is not a database"))
        budget.unusable(damaged, sqlite3.DatabaseError("file is not a database"))
    assert len(caught) == 1 and str(caught[0].message).startswith(
        f"the shared request budget {str(damaged)!r} is damaged (file is not a database): ")
    assert issubclass(caught[0].category, BudgetWarning)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said[0] == (f"the shared request budget {path} is unusable (OperationalError: database is locked); "
                       "clients pace alone")
    assert said[1] == (f"the shared request budget {tmp_path / 'other.sqlite'} is unusable "
                       "(PermissionError: [Errno 13] Permission denied); clients pace alone")
    assert len(said) == 4


# -- the URLs that choose a team's budget ---------------------------------------------------------------
@pytest.mark.parametrize(("url", "said"), [
    ("http://example.com/", "got a URL of scheme 'http'"),
    ("s3cretpassw0rd", "got text that is not a URL"),  # a password given by mistake is never echoed
    ("localhost:6379", "got text that is not a URL"),
    ("rédis://host", "got text that is not a URL"),
    ("my-redis://host", "got text that is not a URL"),
])
def test_a_url_that_is_not_redis_is_refused_without_showing_it(url: str, said: str) -> None:
    with pytest.raises(ConfigurationError, match=said) as refused:
        open_budget(url)
    assert "budget= takes a Redis URL" in str(refused.value)
    if "not a URL" in said:
        assert url not in str(refused.value)


def test_a_budget_url_must_be_text() -> None:
    with pytest.raises(ConfigurationError, match=r"budget= takes a Redis URL as text .*got int\."):
        open_budget(42)  # type: ignore[arg-type]


def test_a_redis_url_chooses_the_team_budget_whatever_its_case() -> None:
    pytest.importorskip("redis")
    for url in ("REDIS://localhost:1/0", " redis://localhost:1/0?password=pa://ss "):
        chosen = open_budget(url)
        assert chosen.where == "the team's Redis redis://localhost:1/0"
        assert "pa://ss" not in repr(chosen)


# -- which budget a URL names (open_budget, budget_url): no Redis needed ---------------------------
@pytest.mark.parametrize(("url", "given"), [
    ("http://example.com/x", "a URL of scheme 'http'"),
    ("not a url", "text that is not a URL"),
])
def test_a_budget_that_is_no_redis_url_is_refused_in_words(url: str, given: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_budget(url, what="--budget")
    assert str(info.value) == (
        "--budget takes a Redis URL — redis://[:password@]host[:port][/db], rediss:// for TLS, or "
        f"unix:///path/redis.sock — and got {given}; leave it out to share the budget on this machine only.")


def test_the_budget_url_variable_is_read_stripped_and_named_in_its_errors(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMPTOOLS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("AMPTOOLS_BUDGET_URL", "   ")
    assert budget_url() is None
    store = open_budget()
    assert isinstance(store, BudgetStore) and store.path == tmp_path / "budget.sqlite"
    store.close()
    monkeypatch.setenv("AMPTOOLS_BUDGET_URL", "  redis://:pw@127.0.0.1:1/0  ")
    secret = budget_url()
    assert secret is not None and secret.reveal() == "redis://:pw@127.0.0.1:1/0"
    monkeypatch.setenv("AMPTOOLS_BUDGET_URL", " ftp://example.com ")
    with pytest.raises(ConfigurationError, match="^AMPTOOLS_BUDGET_URL takes a Redis URL .* scheme 'ftp'"):
        open_budget(what="budget=")


def test_a_redis_url_opens_the_team_s_budget_and_its_errors_say_how_it_was_given() -> None:
    pytest.importorskip("redis")  # the [team] extra
    with pytest.raises(ConfigurationError) as info:
        open_budget("redis://127.0.0.1:1/notadb", what="--budget")
    assert str(info.value).startswith("--budget is not a Redis URL amptools can use")


# -- releasing permits: with a token, without one, from another thread ---------------------------------
def shared_limiter(tmp_path: Path):
    from amptools.ratelimit import RateLimiter

    clock = FakeClock()
    store = BudgetStore(tmp_path / "b.sqlite", clock=clock)
    warm(store, "s", 10.0, clock.now)
    return RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep, ledger=store.ledger("s")), clock


def test_a_release_without_a_token_is_the_thread_s_last_permit(tmp_path: Path) -> None:
    limiter, clock = shared_limiter(tmp_path)
    limiter.acquire()
    second = limiter.acquire()
    limiter.release(second)
    limiter.release()  # the first: the one this thread still holds
    clock.now += 2.0
    assert limiter.in_window() == 0  # both completed: none is left in flight
    limiter.release()  # none held: nothing to do, and no error


def test_a_permit_is_released_with_its_token_from_another_thread(tmp_path: Path) -> None:
    limiter, clock = shared_limiter(tmp_path)
    tokens: list[object] = []
    failed: list[BaseException] = []
    taker = threading.Thread(target=lambda: tokens.append(limiter.acquire()))
    taker.start()
    taker.join()

    def give_back() -> None:
        try:
            limiter.release(tokens[0])  # type: ignore[arg-type]
        except BaseException as error:  # noqa: BLE001 - told below
            failed.append(error)

    releaser = threading.Thread(target=give_back)  # a thread that never took a permit
    releaser.start()
    releaser.join()
    assert not failed, failed
    clock.now += 2.0
    assert limiter.in_window() == 0


def test_a_failed_release_is_said_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limiter, clock = shared_limiter(tmp_path)
    token = limiter.acquire()

    def broken(self: SharedBudget, token: int, now: float) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SharedBudget, "finish", broken)
    limiter.release(token)  # never raises: the permit's lease frees it
    assert limiter.quota().budget == "this machine (alone: OperationalError: disk I/O error)"


def test_a_budget_locked_past_its_busy_timeout_is_left_for_pacing_alone(tmp_path: Path) -> None:
    """BUSY_TIMEOUT (1 s), not SQLite's default 5 s: a lock held 2.5 s costs a client one
    second, then it paces alone."""
    from amptools.ratelimit import RateLimiter

    path = tmp_path / "b.sqlite"
    store = BudgetStore(path)
    assert not Claims(store).is_claimed("k")  # the file exists, in WAL mode
    store.close()  # opened again at the next grant, under the lock
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.5, holder.execute, ("COMMIT",))
    release.start()
    try:
        limiter = RateLimiter(10, 1.0, ledger=store.ledger("s"))
        limiter.release(limiter.acquire())
        assert not limiter.quota().shared and "alone: OperationalError: database is locked" in limiter.quota().budget
    finally:
        release.join()
        holder.close()


def test_a_permit_granted_alone_is_released_to_the_ledger_that_granted_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    limiter, clock = shared_limiter(tmp_path)

    def broken(self: SharedBudget, now: float, limit: int, period: float) -> tuple[float, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SharedBudget, "try_grant", broken)
    for _ in range(5):
        limiter.release(limiter.acquire())
        clock.now += 0.2
    assert not limiter.quota().shared  # paced alone...
    clock.now += 2.0
    assert limiter.in_window() == 0  # ...and every permit it granted completed there


def test_a_release_without_a_token_never_completes_another_thread_s_permit(tmp_path: Path) -> None:
    limiter, clock = shared_limiter(tmp_path)
    holder = threading.Thread(target=limiter.acquire)  # takes the scope's first permit and keeps it
    holder.start()
    holder.join()
    limiter.release()  # this thread holds none
    clock.now += 2.0
    assert limiter.in_window() == 1  # still in flight (until its lease)


# -- where the file lives, on every platform -------------------------------------------------------
@pytest.mark.parametrize("platform, variables, expected", [
    ("linux", {}, "HOME/.cache/amptools"),
    ("linux", {"XDG_CACHE_HOME": "XDG"}, "XDG/amptools"),
    ("linux", {"XDG_CACHE_HOME": ""}, "HOME/.cache/amptools"),
    ("darwin", {"XDG_CACHE_HOME": "XDG"}, "HOME/Library/Caches/amptools"),
    ("win32", {}, "HOME/AppData/Local/amptools/Cache"),
    ("win32", {"LOCALAPPDATA": "LOCAL", "XDG_CACHE_HOME": "XDG"}, "LOCAL/amptools/Cache"),
    ("linux", {"AMPTOOLS_CACHE_DIR": "  ~/mine  ", "XDG_CACHE_HOME": "XDG"}, "HOME/mine"),
    ("win32", {"AMPTOOLS_CACHE_DIR": "HERE", "LOCALAPPDATA": "LOCAL"}, "HERE"),
    ("darwin", {"AMPTOOLS_CACHE_DIR": "   "}, "HOME/Library/Caches/amptools"),
])
def test_the_budget_file_is_where_each_platform_keeps_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              platform: str, variables: dict[str, str],
                                                              expected: str) -> None:
    """``$AMPTOOLS_CACHE_DIR`` (stripped, ``~`` expanded; blank is unset), else the
    platform's user cache folder: ``$XDG_CACHE_HOME`` or ``~/.cache``, ``~/Library/Caches``,
    ``%LOCALAPPDATA%`` or ``~/AppData/Local``, each with amptools' own folder."""
    places = {"HOME": tmp_path / "home", "XDG": tmp_path / "xdg", "LOCAL": tmp_path / "local",
              "HERE": tmp_path / "here"}
    monkeypatch.setenv("HOME", str(places["HOME"]))
    for name in ("AMPTOOLS_CACHE_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, str(places.get(value, value)))
    monkeypatch.setattr(sys, "platform", platform)
    first, _, rest = expected.partition("/")
    assert budget.budget_path() == places[first].joinpath(*rest.split("/") if rest else ()) / "budget.sqlite"


def test_open_store_opens_the_path_it_is_given_once_per_process(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    given = budget.open_store("~/team/b.sqlite")
    assert given.path == tmp_path / "team" / "b.sqlite" != budget.budget_path()
    assert budget.open_store(tmp_path / "team" / "b.sqlite") is given  # ~ or not, one file, one store
    assert budget.open_store() is not given and budget.open_store().path == budget.budget_path()
