"""One request budget per org on one machine, and claims on work, in a small SQLite file.

Every :class:`~amptools.client.ProfileClient` of the same scope (base URL and key
fingerprint, never the key) on this machine shares one budget by default: the sliding
window, the smooth pace and the yielding of :mod:`amptools.ratelimit` are counted in
``budget.sqlite`` under the user cache directory, so two notebooks (or a notebook and
``amptools fetch``) take the org's quota once between them, and a throttle seen by one
slows them all.

The file lives in ``$AMPTOOLS_CACHE_DIR`` when that is set, else in the platform's user
cache directory (``~/.cache/amptools`` on Linux, ``~/Library/Caches/amptools`` on macOS,
``%LOCALAPPDATA%\\amptools\\Cache`` on Windows). It runs in WAL mode, and every change is
one short ``BEGIN IMMEDIATE`` transaction, so processes never see a half-made grant.

A process that dies leaves nothing behind: an in-flight permit carries its process id
and a lease, and counts as completed when its process is gone or its lease ran out; a
claim carries its process id and an expiry, and is free once either is past.

Read the file only through this module while a process uses it: opening and closing
it with anything else (``open()``, a copy) drops that process's SQLite locks, since
POSIX file locks belong to the process, not to the connection.

Clock times are ``time.monotonic()``, which counts from boot for every process of the
machine; rows dated in the future (a reboot reset the clock) are dropped on opening.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .ratelimit import _POLL, PaceState

__all__ = [
    "CACHE_DIR_VARIABLE",
    "BudgetStore",
    "SharedBudget",
    "budget_path",
    "claim",
    "is_claimed",
    "open_store",
    "release",
    "release_owner",
    "wait_claimed",
]

CACHE_DIR_VARIABLE = "AMPTOOLS_CACHE_DIR"
FILE_NAME = "budget.sqlite"
# An in-flight permit whose answer never came (a hung process) stops counting as in
# flight after this long, and then counts one more period as a completed request.
# Longer than any request can take (connect + read timeouts, 35 s by default).
LEASE = 300.0
# used_last_minute needs the grants of the last minute, whatever the period.
_MINUTE = 60.0
# Rows this old (or this far in the future, after a reboot) are dropped on opening.
_STALE = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS permits (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    pid INTEGER NOT NULL,
    granted REAL NOT NULL,
    done REAL,
    lease REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS permits_scope ON permits (scope, granted);
CREATE TABLE IF NOT EXISTS pace (
    scope TEXT PRIMARY KEY,
    share REAL NOT NULL,
    updated REAL NOT NULL,
    tat REAL NOT NULL,
    not_before REAL NOT NULL,
    decreased REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
);
"""


def budget_path() -> Path:
    """The budget file: ``$AMPTOOLS_CACHE_DIR/budget.sqlite``, else under the user cache dir."""
    override = os.environ.get(CACHE_DIR_VARIABLE, "").strip()
    if override:
        return Path(override).expanduser() / FILE_NAME
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "amptools" / "Cache"
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches" / "amptools"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "amptools"
    return base / FILE_NAME


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (True when it cannot be told: the lease decides)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but another user's
    return True


class BudgetStore:
    """The SQLite file behind every shared budget and claim of this process.

    One connection per process (re-opened after a fork), used under a lock: each
    operation is one short transaction, so threads queue for microseconds.

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created when missing.
    clock : callable
        ``time.monotonic`` (the only clock every process of the machine shares).
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._pid = -1
        self._db: sqlite3.Connection | None = None
        self._connect()

    def __repr__(self) -> str:
        return f"<amptools.budget.BudgetStore {self.path}>"

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        # isolation_level=None: we write BEGIN IMMEDIATE ourselves, so the write lock is
        # taken before reading and two processes cannot both see a free slot.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            now = self._clock()
            with self._transaction(db):
                db.execute("DELETE FROM permits WHERE granted < ? OR granted > ?", (now - _STALE, now + 1.0))
                db.execute("DELETE FROM pace WHERE updated > ?", (now + 1.0,))
                db.execute("DELETE FROM claims WHERE expires < ? OR expires > ?", (now, now + 10 * _STALE))
        except BaseException:
            db.close()  # a file that is not a budget: the next client tries afresh, nothing leaks
            raise
        self._db, self._pid = db, os.getpid()
        return db

    @staticmethod
    @contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``) on this process's connection."""
        with self._lock:
            db = self._connect()
            with self._transaction(db):
                yield db

    def close(self) -> None:
        """Close the connection (a later use opens it again)."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    # -- claims ------------------------------------------------------------------
    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Claim ``key`` for ``owner`` for ``ttl`` seconds; False when someone else holds it.

        A claim of the same owner is renewed. A claim whose process died or whose
        expiry passed is free.
        """
        now = self._clock()
        with self.transaction() as db:
            row = db.execute("SELECT owner, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] != owner and row[2] > now and _pid_alive(row[1]):
                return False
            db.execute("INSERT OR REPLACE INTO claims (key, owner, pid, expires) VALUES (?, ?, ?, ?)",
                       (key, owner, os.getpid(), now + ttl))
            return True

    def release(self, key: str, owner: str | None = None) -> None:
        """Give ``key`` up (only ``owner``'s claim when given)."""
        with self.transaction() as db:
            if owner is None:
                db.execute("DELETE FROM claims WHERE key = ?", (key,))
            else:
                db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    def release_owner(self, owner: str) -> int:
        """Give up every claim of ``owner`` (a run that ends); returns how many there were."""
        with self.transaction() as db:
            return db.execute("DELETE FROM claims WHERE owner = ?", (owner,)).rowcount

    def is_claimed(self, key: str) -> bool:
        """Whether a live claim holds ``key``."""
        with self._lock:
            row = self._connect().execute(
                "SELECT pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
        return row is not None and row[1] > self._clock() and _pid_alive(row[0])

    def wait_claimed(self, key: str, *, timeout: float | None = None,
                     cancel: threading.Event | None = None, poll: float = 0.1) -> bool:
        """Wait while ``key`` is claimed; True once it is free, False on timeout or cancel."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_claimed(key):
            if cancel is not None and cancel.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if cancel is not None:
                cancel.wait(poll)
            else:
                time.sleep(poll)
        return True


class SharedBudget:
    """A rate limiter's ledger kept in a :class:`BudgetStore`, shared by every process.

    Each grant is one transaction: reap the permits of dead processes and ran-out
    leases, check the pace (:class:`~amptools.ratelimit.PaceState`, one row per scope)
    and the sliding window (the scope's permits), and record the permit. Each client
    keeps to its own ``limit`` and ``period`` against the scope's shared counts; the
    pace is stored as a share of the limit so clients with different limits yield together.

    Parameters
    ----------
    store : BudgetStore
        The file.
    scope : str
        Whose budget: clients of the same scope share it (never holds the key).
    """

    shared = True

    def __init__(self, store: BudgetStore, scope: str) -> None:
        self.store = store
        self.scope = scope

    def __repr__(self) -> str:
        return f"<amptools.budget.SharedBudget {self.scope!r}>"

    def _state(self, db: sqlite3.Connection) -> PaceState:
        row = db.execute("SELECT share, updated, tat, not_before, decreased FROM pace WHERE scope = ?",
                         (self.scope,)).fetchone()
        return PaceState(*row) if row is not None else PaceState()

    def _save(self, db: sqlite3.Connection, state: PaceState) -> None:
        db.execute("INSERT OR REPLACE INTO pace (scope, share, updated, tat, not_before, decreased) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (self.scope, state.share, state.updated, state.tat, state.not_before, state.decreased))

    def _reap(self, db: sqlite3.Connection, now: float) -> None:
        # A permit whose lease ran out completed at the lease's end, as far as we know.
        db.execute("UPDATE permits SET done = lease WHERE scope = ? AND done IS NULL AND lease < ?",
                   (self.scope, now))
        pids = [pid for (pid,) in db.execute(
            "SELECT DISTINCT pid FROM permits WHERE scope = ? AND done IS NULL", (self.scope,))]
        for pid in pids:
            if not _pid_alive(pid):
                # Its connections closed when it died, so the server has seen its
                # requests by now: they count one more period from now.
                db.execute("UPDATE permits SET done = ? WHERE scope = ? AND done IS NULL AND pid = ?",
                           (now, self.scope, pid))

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        with self.store.transaction() as db:
            state = self._state(db)
            wait = state.wait(now, limit, period)
            if wait > 0:
                return wait, 0
            # done + period > now, written as in LocalLedger so the float edge agrees.
            counted = "scope = ? AND (done IS NULL OR done + ? > ?)"
            (in_window,) = db.execute(f"SELECT count(*) FROM permits WHERE {counted}",
                                      (self.scope, period, now)).fetchone()
            if in_window >= limit:
                self._reap(db, now)
                (in_window,) = db.execute(f"SELECT count(*) FROM permits WHERE {counted}",
                                          (self.scope, period, now)).fetchone()
            if in_window >= limit:
                (oldest,) = db.execute(
                    "SELECT min(done) FROM permits WHERE scope = ? AND done + ? > ?",
                    (self.scope, period, now)).fetchone()
                return (oldest + period - now if oldest is not None else _POLL), 0
            state.grant(now, limit, period)
            self._save(db, state)
            cursor = db.execute(
                "INSERT INTO permits (scope, pid, granted, done, lease) VALUES (?, ?, ?, NULL, ?)",
                (self.scope, os.getpid(), now, now + LEASE))
            db.execute("DELETE FROM permits WHERE scope = ? AND granted < ? AND done + ? <= ?",
                       (self.scope, now - max(period, _MINUTE) - LEASE, period, now))
            return 0.0, int(cursor.lastrowid or 0)

    def finish(self, token: int, now: float) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE permits SET done = ? WHERE id = ? AND done IS NULL", (now, token))

    def pause(self, now: float, seconds: float) -> None:
        with self.store.transaction() as db:
            state = self._state(db)
            state.pause(now, seconds)
            self._save(db, state)

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        with self.store.transaction() as db:
            state = self._state(db)
            decreased = state.throttled(now, granted_at, limit, period)
            self._save(db, state)
            return decreased

    def counts(self, now: float, period: float) -> tuple[int, int, float, float]:
        with self.store.transaction() as db:
            (in_window,) = db.execute(
                "SELECT count(*) FROM permits WHERE scope = ? AND (done IS NULL OR done + ? > ?)",
                (self.scope, period, now)).fetchone()
            (used,) = db.execute("SELECT count(*) FROM permits WHERE scope = ? AND granted > ?",
                                 (self.scope, now - _MINUTE)).fetchone()
            state = self._state(db)
        return in_window, used, state.current_share(now, period), state.not_before


_stores: dict[tuple[Path, int], BudgetStore] = {}
_stores_lock = threading.Lock()


def open_store(path: str | os.PathLike[str] | None = None) -> BudgetStore:
    """The process's :class:`BudgetStore` for ``path`` (:func:`budget_path` by default)."""
    resolved = (Path(path) if path is not None else budget_path()).expanduser().absolute()
    key = (resolved, os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = BudgetStore(resolved)
        return store


def claim(key: str, owner: str, ttl: float) -> bool:
    """Claim ``key`` machine-wide for ``ttl`` seconds (see :meth:`BudgetStore.claim`).

    For example, ``claim(f"{scope} user_id:{id}", owner=run_id, ttl=120)`` before fetching
    an id two processes sharing a profile cache might both fetch.
    """
    return open_store().claim(key, owner, ttl)


def release(key: str, owner: str | None = None) -> None:
    """Give a claim up (see :meth:`BudgetStore.release`)."""
    open_store().release(key, owner)


def release_owner(owner: str) -> int:
    """Give up every claim of ``owner`` (see :meth:`BudgetStore.release_owner`)."""
    return open_store().release_owner(owner)


def is_claimed(key: str) -> bool:
    """Whether a live claim holds ``key`` (see :meth:`BudgetStore.is_claimed`)."""
    return open_store().is_claimed(key)


def wait_claimed(key: str, *, timeout: float | None = None,
                 cancel: threading.Event | None = None, poll: float = 0.1) -> bool:
    """Wait while ``key`` is claimed (see :meth:`BudgetStore.wait_claimed`)."""
    return open_store().wait_claimed(key, timeout=timeout, cancel=cancel, poll=poll)
