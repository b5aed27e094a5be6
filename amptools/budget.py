"""The org's request budget shared by every client, and claims on work: one interface,
two back ends.

A :class:`Budget` keeps the counts of :mod:`amptools.ratelimit` where every client of a
scope finds them, and claims on ids. By default it is :class:`BudgetStore`, a small
SQLite file every process of this machine shares (below); a Redis URL (``budget=`` on
the client, or ``$AMPTOOLS_BUDGET_URL``) chooses :class:`amptools.redis_budget.RedisStore`,
which every machine of a team shares (:func:`open_budget` chooses by the URL).

The machine's budget: one request budget per org on one machine, in a small SQLite file.

Every :class:`~amptools.client.ProfileClient` of the same scope (base URL and key
fingerprint, never the key) on this machine shares one budget by default: the sliding
window, the pace (slow start, yielding, the memory of recent throttles) and the fair
shares of :mod:`amptools.ratelimit` are kept in ``budget.sqlite`` under the user cache
directory, so two notebooks (or a notebook and ``amptools fetch``) take the org's quota
once between them, a throttle seen by one slows them all, and a cautious client is never
starved by a greedy one.

The file lives in ``$AMPTOOLS_CACHE_DIR`` when that is set, else in the platform's user
cache directory (``~/.cache/amptools`` on Linux, ``~/Library/Caches/amptools`` on macOS,
``%LOCALAPPDATA%\\amptools\\Cache`` on Windows). It is created readable by its owner only
(its claims hold user ids), runs in WAL mode, and every change is one short
``BEGIN IMMEDIATE`` transaction, so processes never see a half-made grant.

Nothing left behind by the dead: in-flight permits, clients and claims carry their
process's id *and start time* (so neither a zombie nor a reused process id passes for a
live process); a permit counts as completed when its process is gone or its lease ran
out, a client stops sharing the pace when it is not heard from for :data:`ACTIVE`
seconds, a claim is free once its process is gone or its expiry passed — and the rows of
dead processes are deleted.

The file is only a cache of counts: a file deleted or replaced while clients run is
noticed within seconds (they reopen it, and say so once in the log); a file locked by
another program, or damaged, never costs an answer — the limiter paces alone meanwhile
(:class:`~amptools.ratelimit.RateLimiter`), and a damaged file is named once in a
:class:`BudgetWarning` with what to do.

Read the file only through this module while a process uses it: opening and closing
it with anything else (``open()``, a copy) drops that process's SQLite locks, since
POSIX file locks belong to the process, not to the connection.

Clock times are ``time.monotonic()``, which counts from boot for every process of the
machine; rows dated in the future (a reboot reset the clock) are dropped on opening.
"""

from __future__ import annotations

import abc
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AmptoolsWarning, ConfigurationError, warn
from .ratelimit import POLL, ClientPace, Counts, Ledger, PaceState, fair_shares, grant_wait
from .stores import create_private, journal_wal

if TYPE_CHECKING:
    from .transport import Secret

__all__ = [
    "ACTIVE",
    "BUDGET_URL_VARIABLE",
    "CACHE_DIR_VARIABLE",
    "REDIS_SCHEMES",
    "Budget",
    "BudgetStore",
    "BudgetWarning",
    "ClaimStore",
    "Claims",
    "SharedBudget",
    "budget_path",
    "budget_url",
    "claim",
    "is_claimed",
    "open_budget",
    "open_store",
    "release",
    "release_owner",
    "wait_claimed",
]

log = logging.getLogger("amptools")

CACHE_DIR_VARIABLE = "AMPTOOLS_CACHE_DIR"
#: A team's budget for every client that is not given ``budget=``: a Redis URL.
BUDGET_URL_VARIABLE = "AMPTOOLS_BUDGET_URL"
#: The URL schemes that choose a Redis budget (redis-py's: TCP, TLS, a Unix socket).
REDIS_SCHEMES = ("redis", "rediss", "unix")
FILE_NAME = "budget.sqlite"
# An in-flight permit whose answer never came (a hung process) stops counting as in
# flight after this long, and then counts one more period as a completed request.
# Longer than any request can take (connect + read timeouts, 35 s by default).
LEASE = 300.0
#: Seconds a client may go without asking for a permit and still share its scope's pace.
ACTIVE = 10.0
# used_last_minute needs the grants of the last minute, whatever the period.
_MINUTE = 60.0
# Rows this old (or this far in the future, after a reboot) are dropped on opening.
_STALE = 3600.0
# A locked file is waited for this long before the client paces alone (SQLite's own
# transactions take microseconds; a program holding the file for seconds is a fault).
BUSY_TIMEOUT = 1.0
# How often a store looks whether the file on disk is still the one it has open.
CHECK_FILE = 2.0
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS permits (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    client TEXT NOT NULL,
    pid INTEGER NOT NULL,
    proc TEXT NOT NULL,
    granted REAL NOT NULL,
    done REAL,
    lease REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS permits_scope ON permits (scope, granted);
CREATE TABLE IF NOT EXISTS pace (
    scope TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    updated REAL NOT NULL,
    probe_until REAL NOT NULL,
    peak REAL NOT NULL,
    decreased REAL NOT NULL,
    not_before REAL NOT NULL,
    active REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    scope TEXT NOT NULL,
    client TEXT NOT NULL,
    pid INTEGER NOT NULL,
    proc TEXT NOT NULL,
    ceiling REAL NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (scope, client)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    proc TEXT NOT NULL,
    expires REAL NOT NULL
);
"""
_TABLES = ("permits", "pace", "clients", "claims")
# A scope's permits in the window: done + period > now, written as in LocalLedger so the
# float edge agrees, and counted until both ways of writing "expired" agree (see
# ratelimit._expired).
_IN_WINDOW = ("SELECT count(*) FROM permits WHERE scope = ? AND (done IS NULL OR done + ? > ? "
              "OR done > ? - ?)")
# SQL ignores case, so mutmut's changes of its case (make mutate) cannot be told apart:
# a statement's text sits on a line of its own marked "# pragma: no mutate", and the
# values beside it are still mutated.


class ClaimStore(abc.ABC):
    """Claims on work: two processes sharing a profile cache never fetch one id at once.

    A claim carries its owner (a run), its process and an expiry; a claim whose process
    died or whose expiry passed is free.
    """

    @abc.abstractmethod
    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Claim ``key`` for ``owner`` for ``ttl`` seconds; False when someone else holds it.

        A claim of the same owner is renewed. A claim whose process died or whose
        expiry passed is free.
        """

    @abc.abstractmethod
    def release(self, key: str, owner: str | None = None) -> None:
        """Give ``key`` up (only ``owner``'s claim when given)."""

    @abc.abstractmethod
    def release_owner(self, owner: str) -> int:
        """Give up every claim of ``owner`` (a run that ends); returns how many there were."""

    @abc.abstractmethod
    def is_claimed(self, key: str) -> bool:
        """Whether a live claim holds ``key``."""

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


class Budget(abc.ABC):
    """Where the org's request budget and the claims on ids live: the machine's SQLite
    file (:class:`BudgetStore`) or a team's Redis (:class:`amptools.redis_budget.RedisStore`).

    Attributes
    ----------
    where : str
        Said in :meth:`ProfileClient.quota() <amptools.client.ProfileClient.quota>`:
        ``"this machine"``, or ``"the team's Redis redis://host:6379/0"`` (never a password).
    """

    where: str

    @abc.abstractmethod
    def ledger(self, scope: str) -> Ledger:
        """A new client's ledger of ``scope`` in this budget (see :class:`~amptools.ratelimit.Ledger`)."""

    @abc.abstractmethod
    def claims(self, scope: str) -> ClaimStore:
        """The claims on ids of clients of ``scope`` (the machine's file keeps every scope's together)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the file or connection (a later use opens it again)."""


class BudgetWarning(AmptoolsWarning):
    """The shared budget file is unusable (damaged, or not a database): every client
    paces alone until it is fixed."""


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


# -- which processes live --------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no such process,
    or no /proc here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold anything (")", spaces, bytes that are not
    # text): the fields follow its last ")" and are ASCII.
    return stat[stat.rfind(b")") + 2:].decode().split()


def process_start(pid: int | None = None) -> str:
    """When process ``pid`` (this one by default) started, as text ("" when it cannot be
    told): with the id, it names one process, never one that reused the id later."""
    fields = _stat_fields(os.getpid() if pid is None else pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


_ME = (os.getpid(), process_start())


def _me() -> tuple[int, str]:
    global _ME
    if _ME[0] != os.getpid():  # a forked child is another process
        _ME = (os.getpid(), process_start())
    return _ME


def process_alive(pid: int, started: str = "") -> bool:
    """Whether process ``pid`` (started at ``started``, when known) still runs.

    A zombie (exited, not yet reaped) is dead; a process with the same id that started at
    another time is another process. Where neither can be read (no ``/proc``), a signal
    0 answers, and on Windows nothing does: True, and the lease decides.
    """
    if pid == os.getpid():
        return not started or started == _me()[1]
    fields = _stat_fields(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        return not started or len(fields) <= 19 or fields[19] == started
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but another user's
    return True


class BudgetStore(Budget):
    """The SQLite file behind every shared budget and claim of this process.

    One connection per process (re-opened after a fork, or when the file on disk was
    deleted or replaced), used under a lock: each operation is one short transaction,
    so threads queue for microseconds.

    Parameters
    ----------
    path : str or Path
        The database file (``~`` expanded); it and its directory are created when missing.
    clock : callable
        ``time.monotonic`` (the only clock every process of the machine shares).
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path).expanduser()
        self._clock = clock
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._connect()

    # Set by _connect (__init__ connects, or raises): the process that opened the
    # connection, the file it opened (device, inode), and when that was last checked.
    _pid: int
    _identity: tuple[int, int]
    _checked: float

    where = "this machine"

    def __repr__(self) -> str:
        return f"<amptools.budget.BudgetStore {self.path}>"

    def ledger(self, scope: str) -> SharedBudget:
        return SharedBudget(self, scope)

    def claims(self, scope: str = "") -> Claims:  # pragma: no mutate — mutmut: scope is unused, the file keeps every scope's claims together
        return Claims(self)

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        create_private(self.path)  # its claims hold user ids: the owner's only
        # isolation_level=None: we write BEGIN IMMEDIATE ourselves, so the write lock is
        # taken before reading and two processes cannot both see a free slot.
        # (mutmut: without isolation_level=None sqlite3 would begin a transaction before a write
        # outside one; every write here is inside our BEGIN IMMEDIATE, so none is begun.)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False,
                             isolation_level=None)  # pragma: no mutate
        try:
            journal_wal(db, BUSY_TIMEOUT)  # a new file another process sets up: waited for
            db.execute("PRAGMA synchronous=NORMAL")  # pragma: no mutate — mutmut: SQL ignores case
            with self._transaction(db):
                version = db.execute("PRAGMA user_version").fetchone()[0]  # pragma: no mutate — mutmut: SQL ignores case
                if version != SCHEMA_VERSION:
                    # Only counts of the last hour live here: an older layout is dropped.
                    for table in _TABLES:
                        db.execute(f"DROP TABLE IF EXISTS {table}")
                    for statement in filter(str.strip, _SCHEMA.split(";")):  # pragma: no mutate — mutmut: SQLite runs a blank statement as nothing
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._tidy(db, self._clock())
        except BaseException:
            db.close()  # a file that is not a budget: the next client tries afresh, nothing leaks
            raise
        stat = os.stat(self.path)
        self._db, self._pid, self._identity = db, os.getpid(), (stat.st_dev, stat.st_ino)
        self._checked = self._clock()
        return db

    @staticmethod
    def _tidy(db: sqlite3.Connection, now: float) -> None:
        """Drop what is stale, dated in the future (a reboot), or left by dead processes."""
        db.execute(
            "DELETE FROM permits WHERE granted < ? OR granted > ?",  # pragma: no mutate — mutmut: SQL ignores case
            (now - _STALE, now + 1.0))
        db.execute(
            "DELETE FROM pace WHERE updated > ? OR active < ?",  # pragma: no mutate — mutmut: SQL ignores case
            (now + 1.0, now - _STALE))
        db.execute(
            "DELETE FROM clients WHERE seen < ? OR seen > ?",  # pragma: no mutate — mutmut: SQL ignores case
            (now - ACTIVE, now + 1.0))
        db.execute(
            "DELETE FROM claims WHERE expires < ? OR expires > ?",  # pragma: no mutate — mutmut: SQL ignores case
            (now, now + 10 * _STALE))
        for table in ("claims", "clients"):  # pragma: no mutate — mutmut: SQL ignores case
            for pid, proc in db.execute(f"SELECT DISTINCT pid, proc FROM {table}").fetchall():
                if not process_alive(pid, proc):
                    db.execute(f"DELETE FROM {table} WHERE pid = ? AND proc = ?", (pid, proc))

    @staticmethod
    @contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")  # pragma: no mutate — mutmut: SQL ignores case
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # pragma: no mutate — mutmut: SQL ignores case
            raise
        db.execute("COMMIT")  # pragma: no mutate — mutmut: SQL ignores case

    def _still_the_file(self) -> None:
        """Reopen when the file on disk is no longer the one open (deleted, replaced)."""
        now = self._clock()
        if self._db is None or now - self._checked < CHECK_FILE:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
            identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            identity = None
        if identity == self._identity:
            return
        what = "was deleted" if identity is None else "was replaced by another file"
        log.warning("the shared request budget %s %s; reopening it", self.path, what)
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``) on this process's connection."""
        with self._lock:
            self._still_the_file()
            db = self._connect()
            with self._transaction(db):
                yield db

    def close(self) -> None:
        """Close the connection (a later use opens it again)."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None


class Claims(ClaimStore):
    """Claims on work in a :class:`BudgetStore` (see :class:`ClaimStore`): the machine's."""

    def __init__(self, store: BudgetStore) -> None:
        self.store = store

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Claim ``key`` for ``owner`` for ``ttl`` seconds; False when someone else holds it.

        A claim of the same owner is renewed. A claim whose process died or whose
        expiry passed is free.
        """
        now = self.store._clock()
        pid, proc = _me()
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT owner, pid, proc, expires FROM claims WHERE key = ?",  # pragma: no mutate — mutmut: SQL ignores case
                (key,)).fetchone()
            if row is not None and row[0] != owner and row[3] > now and process_alive(row[1], row[2]):
                return False
            db.execute(
                "INSERT OR REPLACE INTO claims (key, owner, pid, proc, expires) VALUES (?, ?, ?, ?, ?)",  # pragma: no mutate — mutmut: SQL ignores case
                (key, owner, pid, proc, now + ttl))
            return True

    def release(self, key: str, owner: str | None = None) -> None:
        """Give ``key`` up (only ``owner``'s claim when given)."""
        with self.store.transaction() as db:
            if owner is None:
                db.execute(
                    "DELETE FROM claims WHERE key = ?",  # pragma: no mutate — mutmut: SQL ignores case
                    (key,))
            else:
                db.execute(
                    "DELETE FROM claims WHERE key = ? AND owner = ?",  # pragma: no mutate — mutmut: SQL ignores case
                    (key, owner))

    def release_owner(self, owner: str) -> int:
        """Give up every claim of ``owner`` (a run that ends); returns how many there were."""
        with self.store.transaction() as db:
            return db.execute(
                "DELETE FROM claims WHERE owner = ?",  # pragma: no mutate — mutmut: SQL ignores case
                (owner,)).rowcount

    def is_claimed(self, key: str) -> bool:
        """Whether a live claim holds ``key``."""
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT pid, proc, expires FROM claims WHERE key = ?",  # pragma: no mutate — mutmut: SQL ignores case
                (key,)).fetchone()
        return row is not None and row[2] > self.store._clock() and process_alive(row[0], row[1])


class SharedBudget:
    """One client's ledger kept in a :class:`BudgetStore`, shared by every client of its scope.

    Each grant is one transaction: note this client as active (with its ceiling), take
    the scope's pace (:class:`~amptools.ratelimit.PaceState`, one row per scope) and this
    client's max-min fair share of it among the active clients
    (:func:`~amptools.ratelimit.fair_shares`), check the client's own pace, the scope's
    window and the client's ceiling (:func:`~amptools.ratelimit.grant_wait`), and record
    the permit.

    Parameters
    ----------
    store : BudgetStore
        The file.
    scope : str
        Whose budget: clients of the same scope share it (never holds the key).
    """

    shared = True
    where = "this machine"

    def __init__(self, store: BudgetStore, scope: str) -> None:
        self.store = store
        self.scope = scope
        self.client = uuid.uuid4().hex
        self.pace = ClientPace()

    def __repr__(self) -> str:
        return f"<amptools.budget.SharedBudget {self.scope!r}>"

    # -- the scope's rows -------------------------------------------------------------------
    def _state(self, db: sqlite3.Connection) -> PaceState:
        row = db.execute("SELECT rate, updated, probe_until, peak, decreased, not_before, active "  # pragma: no mutate — mutmut: SQL ignores case
                         "FROM pace WHERE scope = ?",  # pragma: no mutate — mutmut: SQL ignores case
                         (self.scope,)).fetchone()
        return PaceState(*row) if row is not None else PaceState()

    def _save(self, db: sqlite3.Connection, state: PaceState) -> None:
        db.execute("INSERT OR REPLACE INTO pace (scope, rate, updated, probe_until, peak, decreased, "  # pragma: no mutate — mutmut: SQL ignores case
                   "not_before, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # pragma: no mutate — mutmut: SQL ignores case
                   (self.scope, state.rate, state.updated, state.probe_until, state.peak,
                    state.decreased, state.not_before, state.active))

    def _active(self, db: sqlite3.Connection, now: float, ceiling: float | None) -> dict[str, float]:
        """The scope's active clients and their ceilings (this one noted as active when
        ``ceiling`` is given)."""
        if ceiling is not None:
            pid, proc = _me()
            db.execute("INSERT OR REPLACE INTO clients (scope, client, pid, proc, ceiling, seen) "  # pragma: no mutate — mutmut: SQL ignores case
                       "VALUES (?, ?, ?, ?, ?, ?)",  # pragma: no mutate — mutmut: SQL ignores case
                       (self.scope, self.client, pid, proc, ceiling, now))
        rows = db.execute("SELECT client, ceiling, pid, proc FROM clients WHERE scope = ? AND seen > ?",  # pragma: no mutate — mutmut: SQL ignores case
                          (self.scope, now - ACTIVE)).fetchall()
        return {client: value for client, value, pid, proc in rows
                if client == self.client or process_alive(pid, proc)}

    def _in_window(self, db: sqlite3.Connection, now: float, period: float, *, mine: bool = False) -> int:
        sql = _IN_WINDOW
        params: tuple[object, ...] = (self.scope, period, now, now, period)
        if mine:
            sql += " AND client = ?"  # pragma: no mutate — mutmut: SQL ignores case
            params += (self.client,)
        return int(db.execute(sql, params).fetchone()[0])

    def _reap(self, db: sqlite3.Connection, now: float) -> None:
        # A permit whose lease ran out completed at the lease's end, as far as we know.
        db.execute(
            "UPDATE permits SET done = lease WHERE scope = ? AND done IS NULL AND lease < ?",  # pragma: no mutate — mutmut: SQL ignores case
            (self.scope, now))
        for pid, proc in db.execute(
                "SELECT DISTINCT pid, proc FROM permits WHERE scope = ? AND done IS NULL",  # pragma: no mutate — mutmut: SQL ignores case
                (self.scope,)).fetchall():
            if not process_alive(pid, proc):
                # Its connections closed when it died, so the server has seen its
                # requests by now: they count one more period from now.
                db.execute(
                    "UPDATE permits SET done = ? WHERE scope = ? AND done IS NULL AND pid = ? "  # pragma: no mutate — mutmut: SQL ignores case
                    "AND proc = ?",  # pragma: no mutate — mutmut: SQL ignores case
                    (now, self.scope, pid, proc))

    def _share(self, state: PaceState, clients: dict[str, float], now: float, period: float) -> tuple[float, float]:
        """``(this client's share, the largest ceiling)``, requests per second."""
        ceiling = max(clients.values())
        shares = fair_shares(state.current(now, ceiling, period), clients)
        return shares[self.client], ceiling

    # -- the ledger ----------------------------------------------------------------------------
    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        with self.store.transaction() as db:
            state = self._state(db)
            clients = self._active(db, now, limit / period)
            share, ceiling = self._share(state, clients, now, period)
            in_window = self._in_window(db, now, period)

            def oldest() -> float | None:
                self._reap(db, now)
                (first,) = db.execute("SELECT min(done) FROM permits WHERE scope = ? AND (done + ? > ? "  # pragma: no mutate — mutmut: SQL ignores case
                                      "OR done > ? - ?)",  # pragma: no mutate — mutmut: SQL ignores case
                                      (self.scope, period, now, now, period)).fetchone()
                return float(first) if first is not None else None

            wait = grant_wait(state, self.pace, now=now, share=share, period=period, in_window=in_window,
                              mine=self._in_window(db, now, period, mine=True), limit=limit, ceiling=ceiling,
                              oldest=oldest)
            if wait > 0:
                return wait, 0  # pragma: no mutate — mutmut: a refused grant's number is never read
            state.grant(now, ceiling, period)
            self.pace.grant(now, share)
            self._save(db, state)
            pid, proc = _me()
            cursor = db.execute(
                "INSERT INTO permits (scope, client, pid, proc, granted, done, lease) "  # pragma: no mutate — mutmut: SQL ignores case
                "VALUES (?, ?, ?, ?, ?, NULL, ?)",  # pragma: no mutate — mutmut: SQL ignores case
                (self.scope, self.client, pid, proc, now, now + LEASE))
            db.execute("DELETE FROM permits WHERE scope = ? AND granted < ? AND done + ? <= ?",  # pragma: no mutate — mutmut: SQL ignores case
                       (self.scope, now - max(period, _MINUTE) - LEASE, period, now))
            return 0.0, int(cursor.lastrowid or 0)  # pragma: no mutate — mutmut: an INSERT always sets lastrowid

    def finish(self, token: int, now: float) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE permits SET done = ? WHERE id = ? AND done IS NULL",  # pragma: no mutate — mutmut: SQL ignores case
                       (now, token))

    def pause(self, now: float, seconds: float) -> None:
        with self.store.transaction() as db:
            state = self._state(db)
            state.pause(now, seconds)
            self._save(db, state)

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        with self.store.transaction() as db:
            state = self._state(db)
            ceiling = max(self._active(db, now, None).values(), default=limit / period)
            decreased = state.throttled(now, granted_at, self._in_window(db, now, period), ceiling, period)
            self._save(db, state)
            return decreased

    def counts(self, now: float, limit: int, period: float) -> Counts:
        with self.store.transaction() as db:
            state = self._state(db)
            clients = self._active(db, now, None)
            clients.setdefault(self.client, limit / period)
            share, _ = self._share(state, clients, now, period)
            in_window = self._in_window(db, now, period)
            (used,) = db.execute(
                "SELECT count(*) FROM permits WHERE scope = ? AND granted > ?",  # pragma: no mutate — mutmut: SQL ignores case
                (self.scope, now - _MINUTE)).fetchone()
        return Counts(in_window, int(used), share, state.not_before, len(clients))

    def close(self) -> None:
        """This client leaves its scope: the others share the pace without it at once."""
        with self.store.transaction() as db:
            db.execute(
                "DELETE FROM clients WHERE scope = ? AND client = ?",  # pragma: no mutate — mutmut: SQL ignores case
                (self.scope, self.client))


_stores: dict[tuple[Path, int], BudgetStore] = {}
_stores_lock = threading.Lock()
_warned: set[Path] = set()


def open_store(path: str | os.PathLike[str] | None = None) -> BudgetStore:
    """The process's :class:`BudgetStore` for ``path`` (:func:`budget_path` by default)."""
    resolved = (Path(path) if path is not None else budget_path()).expanduser().absolute()
    key = (resolved, os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = BudgetStore(resolved)
        return store


def unusable(path: Path, error: BaseException) -> None:
    """Say once per file that a budget cannot be used, with what to do."""
    log.warning("the shared request budget %s is unusable (%s: %s); clients pace alone",
                path, type(error).__name__, error)
    if path in _warned:
        return
    _warned.add(path)
    damaged = isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError)
    if damaged:
        warn(f"the shared request budget {str(path)!r} is damaged ({error}): every client of this "
             "machine paces alone, so two notebooks may together exceed the org's quota. Delete the "
             "file (it holds only the last hour's request counts and claims); amptools makes a new one.",
             BudgetWarning)


def claim(key: str, owner: str, ttl: float) -> bool:
    """Claim ``key`` machine-wide for ``ttl`` seconds (see :meth:`Claims.claim`).

    For example, ``claim(f"{scope} user_id:{id}", owner=run_id, ttl=120)`` before fetching
    an id two processes sharing a profile cache might both fetch.
    """
    return Claims(open_store()).claim(key, owner, ttl)


def release(key: str, owner: str | None = None) -> None:
    """Give a claim up (see :meth:`Claims.release`)."""
    Claims(open_store()).release(key, owner)


def release_owner(owner: str) -> int:
    """Give up every claim of ``owner`` (see :meth:`Claims.release_owner`)."""
    return Claims(open_store()).release_owner(owner)


def is_claimed(key: str) -> bool:
    """Whether a live claim holds ``key`` (see :meth:`Claims.is_claimed`)."""
    return Claims(open_store()).is_claimed(key)


def wait_claimed(key: str, *, timeout: float | None = None,
                 cancel: threading.Event | None = None, poll: float = POLL * 2) -> bool:
    """Wait while ``key`` is claimed (see :meth:`Claims.wait_claimed`)."""
    return Claims(open_store()).wait_claimed(key, timeout=timeout, cancel=cancel, poll=poll)


# -- choosing the back end -------------------------------------------------------------------
def _secret(url: object, what: str) -> Secret:
    from .transport import Secret

    if isinstance(url, Secret):
        return url
    if not isinstance(url, str):
        raise ConfigurationError(f"{what} takes a Redis URL as text (redis://host:6379/0), "
                                 f"got {type(url).__name__}.")
    return Secret(url.strip())


def budget_url() -> Secret | None:
    """``$AMPTOOLS_BUDGET_URL`` as a :class:`~amptools.transport.Secret` (it may hold a
    password), or None when it is not set or blank."""
    from .transport import Secret

    value = os.environ.get(BUDGET_URL_VARIABLE, "").strip()
    return Secret(value) if value else None


def _scheme(url: Secret) -> str:
    """The URL's scheme in lower case ("" when it has none); never more of the URL."""
    head, found, _ = url.reveal().partition("://")
    return head.lower() if found and head.isascii() and head.isalnum() else ""


def open_budget(url: str | Secret | None = None, *, what: str = "budget=") -> Budget:
    """The budget a URL names: a team's Redis for a ``redis://``, ``rediss://`` or
    ``unix://`` URL; None means ``$AMPTOOLS_BUDGET_URL``, else this machine's file.

    Parameters
    ----------
    url : str, optional
        ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` with TLS,
        ``unix:///path/redis.sock?db=0`` for a socket). The password is held as a
        :class:`~amptools.transport.Secret` and never shown.
    what : str
        How the URL was given, for the errors (``"budget="``, ``"--budget"``).

    Raises
    ------
    ConfigurationError
        For a URL that is not a Redis URL, or a Redis URL without the ``redis`` package
        (``pip install 'amptools[team]'``).
    """
    if url is None:
        what = BUDGET_URL_VARIABLE
    secret = _secret(url, what) if url is not None else budget_url()
    if secret is None:
        return open_store()
    scheme = _scheme(secret)
    if scheme not in REDIS_SCHEMES:
        given = f"a URL of scheme {scheme!r}" if scheme else "text that is not a URL"
        raise ConfigurationError(
            f"{what} takes a Redis URL — redis://[:password@]host[:port][/db], rediss:// for TLS, or "
            f"unix:///path/redis.sock — and got {given}; leave it out to share the budget on this "
            "machine only.")
    from .redis_budget import open_redis

    return open_redis(secret, what=what)
