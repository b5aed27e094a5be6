"""A SQLite store of raw Profile API responses and of each id's last outcome.

Why a cache matters here: an org may make 600 requests a minute, so 100,000 users
take hours, and every recommendation request logs an exposure event in Amplitude.
A run that stops (Ctrl-C, a lost laptop lid, ``kill -9``) must be resumable without
asking the service again for anything it already answered.

Schema (version 2)
------------------
Every row carries a ``scope``: which API and project answered. A bulk fetch uses
its client's ``scope`` (:func:`amptools.client.api_scope`) — the base URL plus a
fingerprint of the secret key (the first 16 hex digits of SHA-256 over a fixed salt
and the key; the key itself is never stored and cannot be recovered from it). One
file can therefore serve several projects, or the sample org and the real API,
without mixing their answers. This module takes scopes as plain strings (it knows
nothing of clients or HTTP); direct calls use the scope ``""`` unless given one.

``responses`` — key ``(scope, id_type, id, part)``
    One raw body per request: ``part`` is the :meth:`ProfileQuery.canonical` of one
    of ``ProfileQuery.parts()`` (the query itself when it is not split), ``payload``
    the JSON body, ``fetched_at`` (Unix seconds), ``attempts`` (requests it took)
    and ``error`` (NULL, or why the body could not be read as a profile). Each part
    is stored as soon as it arrives, so a split query whose second request fails,
    or a run cancelled between the two, keeps the first answer, and the next run
    asks only for the part that is missing.
``outcomes`` — key ``(scope, id_type, id, query)``
    The outcomes: the last outcome of each id for the whole query (``ok``,
    ``not_found`` or ``failed``), with the HTTP status, the attempts, the error
    text and ``recorded_at``.
``rejected``
    Bodies the service sent with HTTP 200 that could not be read, kept when a
    later fetch replaces them (nothing the service sent is thrown away).
``meta``
    ``schema_version`` (2).
``computation_names`` — key ``(scope, name, kind)``
    The names an org's answers use for computations (``kind`` ``computation``) and
    properties (``property``), learned by bulk fetches, with when (``seen_at``) and how
    (``how``) each was last seen; they tell the two apart in a merged answer (one request
    per user, see :mod:`amptools.names`). Added to schema 2 files when opened.

Whether an id is answered is decided by one pure function, :func:`decide`, over what
:meth:`ProfileCache.stored` read: an id is taken from the cache when every part has a
body younger than ``max_age``, or when it has a ``not_found`` outcome newer than those
bodies; ``failed`` outcomes are never reused, so those ids are asked again — but only
for the parts the cache does not hold.

A body that came back with HTTP 200 but could not be read (a ``ResponseFormatError``)
is stored too, with its error. A rerun does not fetch such a part again when it
asks for recommendations (each fetch would log another exposure event): the id
stays ``failed`` with the error, until ``max_age`` makes the body stale or it is
removed with :meth:`ProfileCache.forget`. A part without recommendations is fetched
again (it has no side effect); the unreadable body moves to ``rejected``.

Files of schema 1 (amptools before scoping) are upgraded when opened: their rows
are kept under the scope ``"legacy:v1"``, which no client uses because nobody knows
which project answered them; :meth:`ProfileCache.adopt_legacy` hands them to a
client whose project they are known to come from. A file written by a newer
amptools is refused with a message.

The secret key is never stored: only the ids, the scope fingerprint, the canonical
query and the bodies.

Durability and concurrency: the database runs in WAL mode with
``synchronous=NORMAL`` and every write commits at once, so a process killed with
SIGKILL loses nothing it wrote (WAL with NORMAL only risks the last commits on an
operating-system crash or power loss). One connection is shared by the threads of
a process behind a lock; several processes may share the file (SQLite's own
locking, with a busy timeout).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import stores
from .errors import AmptoolsWarning, CacheError, ConfigurationError, InvalidQueryError, warn
from .models import ComputationNames, narrowed, read_error
from .query import STATUSES, ProfileQuery

__all__ = ["CacheWarning", "Decision", "ProfileCache", "StoredBody", "StoredParts", "decide", "open_cache"]

SCHEMA_VERSION = 2
OUTCOMES = STATUSES  # an outcome recorded here is a bulk fetch's status
LEGACY_SCOPE = "legacy:v1"

_NAMES_TABLE = """CREATE TABLE IF NOT EXISTS computation_names (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('computation', 'property')),
        seen_at REAL NOT NULL,
        how TEXT,
        PRIMARY KEY (scope, name, kind)
    )"""
_TABLES = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS responses (
        scope TEXT NOT NULL,
        id_type TEXT NOT NULL,
        id TEXT NOT NULL,
        part TEXT NOT NULL,
        payload TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        error TEXT,
        PRIMARY KEY (scope, id_type, id, part)
    )""",
    """CREATE TABLE IF NOT EXISTS outcomes (
        scope TEXT NOT NULL,
        id_type TEXT NOT NULL,
        id TEXT NOT NULL,
        query TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'not_found', 'failed')),
        http_status INTEGER,
        attempts INTEGER NOT NULL,
        error TEXT,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (scope, id_type, id, query)
    )""",
    _NAMES_TABLE,
    """CREATE TABLE IF NOT EXISTS rejected (
        scope TEXT NOT NULL,
        id_type TEXT NOT NULL,
        id TEXT NOT NULL,
        part TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT,
        fetched_at REAL NOT NULL
    )""",
)

# SQLite's default limit on host parameters is 999 in old builds; stay well below.
_CHUNK = 400


class CacheWarning(AmptoolsWarning):
    """Something about the cache the user should know (an upgrade, a failed write)."""


@dataclass(frozen=True)
class StoredBody:
    """One stored body: the answer to one of ``ProfileQuery.parts()``."""

    part: str
    payload: Any
    at: float
    attempts: int = 1
    error: str | None = None


@dataclass(frozen=True)
class StoredParts:
    """Everything fresh the cache holds for one id and query: bodies by part, and a
    ``not_found`` outcome ``(recorded_at, http_status, attempts)`` when there is one."""

    id: str
    parts: dict[str, StoredBody] = field(default_factory=dict)
    not_found: tuple[float, int | None, int] | None = None

    @property
    def newest(self) -> float | None:
        return max((p.at for p in self.parts.values()), default=None)

    @property
    def is_not_found(self) -> bool:
        """The ``not_found`` outcome is newer than every stored body."""
        if self.not_found is None:
            return False
        newest = self.newest
        return newest is None or self.not_found[0] > newest


@dataclass(frozen=True)
class Decision:
    """What the cache holds for one id and one way of asking it (see :func:`decide`).

    ``status`` is ``ok`` (``payloads`` holds one body per part, in order),
    ``not_found``, ``failed`` (an unreadable answer to recommendations, kept and not
    asked again) or ``missing`` (``have`` holds the usable bodies, by part key; the
    other parts must be fetched).
    """

    status: str
    payloads: list[Any] = field(default_factory=list)
    have: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None
    attempts: int = 0
    error: str | None = None


# The names before issue 23 (one class was called Answer in three modules; "part" meant a
# sub-query and a body): kept for code that imported them.
Answer = Decision
PartHit = StoredBody

NOT_FOUND_CACHED = "User id and device id not seen before (cached)"


def decide(entry: StoredParts | None, parts: Sequence[ProfileQuery]) -> Decision:
    """The one rule for "is this id answered by the cache", for the requests ``parts``.

    - a ``not_found`` outcome newer than every stored body: ``not_found``;
    - every part has a readable body — its own, or one taken out of a stored answer to a
      wider request (:meth:`ProfileQuery.covers`: recommendations ``a, b`` with properties
      and cohorts answer recommendations ``a`` alone, properties alone, cohorts alone): ``ok``;
    - a stored answer to recommendations that cannot be read: ``failed``, and it is not
      asked again (each request for recommendations logs an exposure event) until
      ``max_age`` makes it stale or :meth:`ProfileCache.forget` removes it;
    - otherwise ``missing``, with the readable bodies in ``have`` (an unreadable body
      without recommendations is simply asked again).
    """
    if entry is None:
        return Decision("missing")
    if entry.is_not_found:
        _, http_status, attempts = entry.not_found  # type: ignore[misc]
        return Decision("not_found", http_status=http_status, attempts=attempts, error=NOT_FOUND_CACHED)
    keys = [part.canonical() for part in parts]
    have: dict[str, Any] = {}
    attempts = 0
    for part, key in zip(parts, keys):
        hit = entry.parts.get(key)
        if hit is not None:
            problem = read_error(hit.payload, part)
            if problem is None:
                have[key], attempts = hit.payload, attempts + hit.attempts
                continue
            if part.asks_recommendations:
                return Decision("failed", http_status=200, attempts=hit.attempts, error=(
                    f"{problem} (this body is kept in the cache and not fetched again, since "
                    "fetching recommendations logs an exposure event; pass max_age= or "
                    "cache.forget() to fetch it again)"))
        wider = _wider_answer(entry, part)
        if wider is not None:
            have[key] = wider
    if len(have) == len(keys):
        return Decision("ok", [have[k] for k in keys], http_status=200, attempts=attempts)
    return Decision("missing", have=have)


def _wider_answer(entry: StoredParts, part: ProfileQuery) -> dict[str, Any] | None:
    """``part``'s answer taken out of a readable stored answer to a wider request, or None."""
    own = part.canonical()
    for key, hit in sorted(entry.parts.items(), key=lambda item: -item[1].at):  # the newest first
        if key == own or hit.error is not None:
            continue
        try:
            wider = _as_query(key)
        except (ValueError, TypeError, InvalidQueryError):
            continue  # a part key this amptools does not read
        # Only an answer readable as what it answered: narrowing must not hide a broken one.
        if wider.covers(part) and read_error(hit.payload, wider) is None:
            answer = narrowed(hit.payload, part)
            if read_error(answer, part) is None:
                return answer
    return None


def _conn_path(conn: sqlite3.Connection) -> str:
    """The file behind a connection (for messages)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row and row[2] else ":memory:"


def _max_age_seconds(max_age: float | timedelta | None) -> float | None:
    if max_age is None:
        return None
    if isinstance(max_age, timedelta):
        max_age = max_age.total_seconds()
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age < 0:
        raise ConfigurationError(
            f"max_age must be seconds ≥ 0 or a datetime.timedelta (None: no limit), got {max_age!r}."
        )
    return float(max_age)


def _as_query(query: ProfileQuery | str) -> ProfileQuery:
    if isinstance(query, ProfileQuery):
        return query
    return ProfileQuery(**json.loads(query))


def _query_key(query: ProfileQuery | str) -> str:
    return query.canonical() if isinstance(query, ProfileQuery) else str(query)


def _part_keys(query: ProfileQuery | str) -> list[str]:
    return [part.canonical() for part in _as_query(query).parts()]


def _dump(payload: Any) -> str:
    """JSON text SQLite can store. Text that UTF-8 cannot encode (a lone surrogate, which
    is valid JSON) is kept as its ``\\uXXXX`` escape, so it is stored losslessly."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text


class ProfileCache:
    """Raw responses and per-id outcomes in one SQLite file.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; created (with its folder) when missing. ``":memory:"``
        gives a private, non-persistent cache (handy in tests).
    timeout : float
        Seconds to wait for another process that holds the write lock.
    clock : callable
        Wall-clock seconds (``time.time``); injected by tests of ``max_age``.

    Every method takes ``scope=`` (a plain string); ``""`` by default. Bulk
    fetches pass their client's scope. In :meth:`ids`, :meth:`outcomes`, ``len`` and
    iteration, ``scope=None`` (the default there) means every scope.

    Examples
    --------
    >>> with ProfileCache("profiles.sqlite") as cache:      # doctest: +SKIP
    ...     ps = client.get_profiles(ids, cache=cache)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = stores.expand(path)
        self._clock = clock
        self._lock = threading.RLock()
        # One connection shared by the threads of this process, always used under
        # self._lock; autocommit mode, with explicit transactions for writes.
        self._connection: sqlite3.Connection | None = None
        with self._lock:
            self._connection = stores.connect(self.path, timeout=timeout, prepare=self._prepare,
                                              check_same_thread=False, isolation_level=None)

    # -- schema ------------------------------------------------------------------------
    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        """0 for a new file, 1 for the unscoped schema, else the recorded version."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
        has_meta = bool(conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone())
        recorded = None
        if has_meta:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                recorded = int(row[0]) if row is not None else None
            except ValueError:
                raise CacheError(
                    f"the cache {_conn_path(conn)!r} records a schema_version amptools does not know "
                    f"({str(row[0])[:20]!r}); it was not written by amptools, or was damaged: "
                    "use another cache file.") from None
        if recorded is not None and recorded > SCHEMA_VERSION:
            return recorded
        if not columns:
            return 0
        if "scope" not in columns:
            return 1
        return recorded or SCHEMA_VERSION

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = self._version(conn)
        if version == SCHEMA_VERSION:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'computation_names'").fetchone():
                conn.execute(_NAMES_TABLE)  # added to schema 2 later; older files lack it
            elif "how" not in {row[1] for row in conn.execute("PRAGMA table_info(computation_names)")}:
                conn.execute("ALTER TABLE computation_names ADD COLUMN how TEXT")  # how each was seen
            self._warn_legacy(conn)
            return
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"the cache {self.path!r} was written by a newer amptools "
                f"(schema {version}); upgrade amptools or use another cache file."
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version(conn)  # another process may have done it meanwhile
            if version == 1:
                self._upgrade_from_1(conn)
            elif version == 0:
                for statement in _TABLES:
                    conn.execute(statement)
            if version in (0, 1):
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(error, (sqlite3.DatabaseError, ValueError)) and not isinstance(
                    error, sqlite3.OperationalError):
                raise CacheError(
                    f"the cache {self.path!r} could not be upgraded to schema "
                    f"{SCHEMA_VERSION} ({type(error).__name__}: {error}); delete or rename the "
                    "file and run again."
                ) from None
            raise
        self._warn_legacy(conn)

    def _upgrade_from_1(self, conn: sqlite3.Connection) -> None:
        """Schema 1 (no scope, one row of all bodies per id): keep every row under
        LEGACY_SCOPE, one row per part."""
        conn.execute("ALTER TABLE responses RENAME TO responses_v1")
        conn.execute("ALTER TABLE outcomes RENAME TO outcomes_v1")
        for statement in _TABLES:
            conn.execute(statement)
        attempts_of = {
            (id_type, id_, query): attempts
            for id_type, id_, query, attempts in conn.execute(
                "SELECT id_type, id, query, attempts FROM outcomes_v1")
        }
        rows = conn.execute(
            "SELECT id_type, id, query, payloads, fetched_at FROM responses_v1").fetchall()
        for id_type, id_, query, payloads, fetched_at in rows:
            try:
                keys = _part_keys(query)
                bodies = json.loads(payloads)
            except Exception:
                keys, bodies = [query], None
            if not isinstance(bodies, list) or len(bodies) != len(keys):
                # Unreadable: kept as it was, never served.
                conn.execute(
                    "INSERT INTO rejected (scope, id_type, id, part, payload, error, fetched_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (LEGACY_SCOPE, id_type, id_, query, payloads,
                     "schema 1 row that could not be split into parts", fetched_at))
                continue
            total = int(attempts_of.get((id_type, id_, query)) or len(keys))
            for index, (key, body) in enumerate(zip(keys, bodies)):
                share = max(1, total - (len(keys) - 1)) if index == 0 else 1
                conn.execute(
                    "INSERT OR REPLACE INTO responses (scope, id_type, id, part, payload, "
                    "fetched_at, attempts, error) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    (LEGACY_SCOPE, id_type, id_, key, _dump(body), fetched_at, share))
        conn.execute(
            "INSERT OR REPLACE INTO outcomes (scope, id_type, id, query, status, http_status, "
            "attempts, error, recorded_at) SELECT ?, id_type, id, query, status, http_status, "
            "attempts, error, recorded_at FROM outcomes_v1", (LEGACY_SCOPE,))
        conn.execute("DROP TABLE responses_v1")
        conn.execute("DROP TABLE outcomes_v1")

    def _warn_legacy(self, conn: sqlite3.Connection) -> None:
        n = conn.execute("SELECT COUNT(*) FROM responses WHERE scope = ?",
                         (LEGACY_SCOPE,)).fetchone()[0]
        if n:
            warn(
                f"the cache {self.path!r} holds {n} responses written by an older amptools, "
                "which did not record which API or project answered them. They are kept but "
                "not used, so those users will be fetched again. If they came from the project "
                "you are fetching now, call ProfileCache(path).adopt_legacy(client) once to use "
                "them.", CacheWarning)

    def adopt_legacy(self, scope: str | Any) -> int:
        """Hand the rows of an upgraded schema-1 file to ``scope`` (a client's ``scope``, or
        the client itself); return how many responses moved. Do it only when they came
        from that client's project."""
        scope = scope if isinstance(scope, str) else str(scope.scope)
        with self._lock:
            n = self._conn.execute("SELECT COUNT(*) FROM responses WHERE scope = ?",
                                   (LEGACY_SCOPE,)).fetchone()[0]
        self._write([
            ("INSERT OR REPLACE INTO responses SELECT ?, id_type, id, part, payload, fetched_at, "
             "attempts, error FROM responses WHERE scope = ?", (scope, LEGACY_SCOPE)),
            ("DELETE FROM responses WHERE scope = ?", (LEGACY_SCOPE,)),
            ("INSERT OR REPLACE INTO outcomes SELECT ?, id_type, id, query, status, http_status, "
             "attempts, error, recorded_at FROM outcomes WHERE scope = ?", (scope, LEGACY_SCOPE)),
            ("DELETE FROM outcomes WHERE scope = ?", (LEGACY_SCOPE,)),
        ])
        return int(n)

    # -- life cycle ----------------------------------------------------------------------
    def __repr__(self) -> str:
        state = "closed" if self._connection is None else "open"
        return f"<amptools.ProfileCache {self.path!r} {state}>"

    def __enter__(self) -> ProfileCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; further use raises."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @property
    def closed(self) -> bool:
        return self._connection is None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ConfigurationError(f"the cache {self.path!r} is closed.")
        return self._connection

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            conn = self._conn
            if conn.in_transaction:
                # An earlier write was interrupted (Ctrl-C) between BEGIN and COMMIT.
                conn.execute("ROLLBACK")
            try:
                conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- writing ---------------------------------------------------------------------
    def save(
        self,
        id_type: str,
        id: str,
        query: ProfileQuery | str,
        *,
        scope: str = "",
        parts: Sequence[tuple[str, Any, int, str | None]] = (),
        status: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
        error: str | None = None,
        at: float | None = None,
    ) -> None:
        """Store bodies and, optionally, the id's outcome, in one transaction.

        ``parts`` holds ``(part key, body, attempts, read error or None)``; a stored body
        that could not be read is moved to ``rejected`` before being replaced.
        ``status`` (``ok``, ``not_found``, ``failed``) records the outcome for ``query``.
        """
        if status is not None and status not in OUTCOMES:
            raise ValueError(f"status must be one of {OUTCOMES}, got {status!r}")
        at = self._clock() if at is None else at
        statements: list[tuple[str, Sequence[Any]]] = []
        for key, body, part_attempts, part_error in parts:
            where = (scope, id_type, id, key)
            statements.append((
                "INSERT INTO rejected (scope, id_type, id, part, payload, error, fetched_at) "
                "SELECT scope, id_type, id, part, payload, error, fetched_at FROM responses "
                "WHERE scope = ? AND id_type = ? AND id = ? AND part = ? AND error IS NOT NULL",
                where))
            statements.append((
                "INSERT OR REPLACE INTO responses (scope, id_type, id, part, payload, fetched_at, "
                "attempts, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*where, _dump(body), at, part_attempts, part_error)))
        if status is not None:
            statements.append((
                "INSERT OR REPLACE INTO outcomes (scope, id_type, id, query, status, "
                "http_status, attempts, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, id_type, id, _query_key(query), status, http_status, attempts, error, at)))
        if statements:
            self._write(statements)

    def forget(self, id_type: str, ids: Iterable[str], *, scope: str | None = None) -> None:
        """Remove the stored bodies and outcomes of ``ids`` (every query; every scope
        when None), so the next run fetches them again."""
        ids = list(ids)
        statements: list[tuple[str, Sequence[Any]]] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            where = f"id_type = ? AND id IN ({marks})"
            params: list[Any] = [id_type, *chunk]
            if scope is not None:
                where += " AND scope = ?"
                params.append(scope)
            statements += [(f"DELETE FROM responses WHERE {where}", params),
                           (f"DELETE FROM outcomes WHERE {where}", params)]
        self._write(statements)

    # -- reading ---------------------------------------------------------------------
    def stored(
        self,
        id_type: str,
        ids: Iterable[str],
        query: ProfileQuery | str,
        *,
        scope: str = "",
        max_age: float | timedelta | None = None,
        also: ProfileQuery | None = None,
    ) -> dict[str, StoredParts]:
        """Every fresh body stored for these ids — of ``query``'s parts and of any other
        query, since an answer to a wider query answers a narrower one (see :func:`decide`)
        — and fresh ``not_found`` outcomes, by id (ids the cache knows nothing fresh about
        are absent). Bodies whose stored JSON is damaged are left out (they are fetched
        again). ``query`` and ``also`` (another form of it) are kept for callers; every
        part is read whatever they are."""
        limit = _max_age_seconds(max_age)
        oldest = -float("inf") if limit is None else self._clock() - limit
        ids = list(ids)
        found: dict[str, StoredParts] = {}
        with self._lock:
            conn = self._conn
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                # Every part of every query: an answer to a wider one answers a narrower one.
                for id_, part, payload, at, attempts, error in conn.execute(
                    "SELECT id, part, payload, fetched_at, attempts, error FROM responses "
                    f"WHERE scope = ? AND id_type = ? AND id IN ({marks}) AND fetched_at >= ?",
                    (scope, id_type, *chunk, oldest),
                ):
                    try:
                        body = json.loads(payload)
                    except (ValueError, RecursionError):
                        continue  # a damaged row is fetched again
                    entry = found.setdefault(id_, StoredParts(id_))
                    entry.parts[part] = StoredBody(part, body, at, attempts or 0, error)
                # An id the service did not know is unknown whatever was asked of it.
                for id_, at, http_status, attempts in conn.execute(
                    "SELECT id, MAX(recorded_at), http_status, attempts FROM outcomes "
                    f"WHERE scope = ? AND id_type = ? AND id IN ({marks}) "
                    "AND status = 'not_found' AND recorded_at >= ? GROUP BY id",
                    (scope, id_type, *chunk, oldest),
                ):
                    known = found.get(id_)
                    parts = known.parts if known is not None else {}
                    found[id_] = StoredParts(id_, parts, (at, http_status, attempts or 0))
        return found

    def names(self, scope: str = "") -> ComputationNames:
        """The computation and property names learned for ``scope``."""
        from .names import names_of

        return names_of(self.name_evidence(scope))

    def name_evidence(self, scope: str = "") -> dict[tuple[str, str], tuple[float, str]]:
        """``{(name, kind): (seen_at, how)}`` for ``scope`` (see :mod:`amptools.names`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, kind, seen_at, how FROM computation_names WHERE scope = ?", (scope,)).fetchall()
        return {(name, kind): (at, how or "learned") for name, kind, at, how in rows}

    def save_names(self, names: ComputationNames | dict[tuple[str, str], tuple[float, str]], *,
                   scope: str = "") -> None:
        """Remember computation and property names for ``scope`` (kept with the old ones);
        ``names`` may be evidence ``{(name, kind): (seen_at, how)}``."""
        from .names import evidence_of

        evidence = evidence_of(names, at=self._clock()) if isinstance(names, ComputationNames) else names
        sql = ("INSERT INTO computation_names (scope, name, kind, seen_at, how) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT (scope, name, kind) DO UPDATE SET seen_at = excluded.seen_at, how = excluded.how "
               "WHERE excluded.seen_at >= computation_names.seen_at")
        self._write([(sql, (scope, name, kind, at, how))
                     for (name, kind), (at, how) in sorted(evidence.items())])

    def outcomes(self, id_type: str | None = None, query: ProfileQuery | str | None = None,
                 *, scope: str | None = None) -> Any:
        """The outcomes table as a DataFrame: id_type, id, query, status, http_status, attempts,
        error, recorded_at (Unix seconds). Every scope unless ``scope`` is given."""
        import pandas as pd

        sql = ("SELECT id_type, id, query, status, http_status, attempts, error, recorded_at "
               "FROM outcomes")
        clauses, params = [], []
        if id_type is not None:
            clauses.append("id_type = ?")
            params.append(id_type)
        if query is not None:
            clauses.append("query = ?")
            params.append(_query_key(query))
        if scope is not None:
            clauses.append("scope = ?")
            params.append(scope)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY recorded_at", params).fetchall()
        columns = ["id_type", "id", "query", "status", "http_status", "attempts", "error",
                   "recorded_at"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({
            "id_type": "str", "id": "str", "query": "str", "status": "str",
            "http_status": "Int64", "attempts": "int64", "error": "str", "recorded_at": "float64",
        })

    def ids(self, id_type: str, query: ProfileQuery | str, status: str = "ok",
            *, scope: str | None = None) -> set[str]:
        """The ids whose last recorded outcome for this query is ``status`` (in ``scope``,
        or in any scope when None)."""
        sql = "SELECT id FROM outcomes WHERE id_type = ? AND query = ? AND status = ?"
        params: list[Any] = [id_type, _query_key(query), status]
        if scope is not None:
            sql += " AND scope = ?"
            params.append(scope)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return {row[0] for row in rows}

    def scopes(self) -> list[str]:
        """The scopes that hold responses or outcomes (base URL and key fingerprint)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT scope FROM responses UNION SELECT scope FROM outcomes ORDER BY 1").fetchall()
        return [row[0] for row in rows]

    def __len__(self) -> int:
        """The number of stored response bodies (one per request part), every scope."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        """The ``(id_type, id, canonical part query)`` keys of the stored bodies."""
        with self._lock:
            rows = self._conn.execute("SELECT id_type, id, part FROM responses").fetchall()
        return iter(rows)

    def clear(self) -> None:
        """Forget every response and outcome."""
        self._write([("DELETE FROM responses", ()), ("DELETE FROM outcomes", ()),
                     ("DELETE FROM rejected", ())])


def open_cache(cache: ProfileCache | str | os.PathLike[str] | None) -> tuple[ProfileCache | None, bool]:
    """``(cache, owned)``: open a path as a cache (owned: close it after use), or pass one through."""
    if cache is None:
        return None, False
    if isinstance(cache, ProfileCache):
        if cache.closed:
            raise ConfigurationError(f"the cache {cache.path!r} is closed.")
        return cache, False
    if isinstance(cache, (str, os.PathLike)):
        return ProfileCache(cache), True
    raise ConfigurationError(
        f"cache must be a file path or a ProfileCache, got {type(cache).__name__}."
    )
