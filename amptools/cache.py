"""A SQLite store of raw Profile API responses and of each id's last outcome.

Why a cache matters here: an org may make 600 requests a minute, so 100,000 users
take hours, and every recommendation request logs an exposure event in Amplitude.
A run that stops (Ctrl-C, a lost laptop lid, ``kill -9``) must be resumable without
asking the service again for anything it already answered.

Two tables, both keyed by ``(id_type, id, query)`` where ``query`` is
:meth:`ProfileQuery.canonical`:

``responses``
    The raw bodies of a successful fetch, as a JSON list (one body, or two when
    ``ProfileQuery.parts`` splits the query), and ``fetched_at`` (Unix seconds).
``outcomes``
    The ledger: the last outcome of each id (``ok``, ``not_found`` or ``failed``),
    with the HTTP status, the attempts made, the error text and ``recorded_at``.

A later run takes an id from the cache when it has a response, or a ``not_found``
outcome, younger than ``max_age`` (whichever of the two is newer); ``failed``
outcomes are never reused, so those ids are asked again.

The secret key is never stored: only the ids, the canonical query and the bodies.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .query import ProfileQuery

__all__ = ["CacheHit", "ProfileCache", "open_cache"]

SCHEMA_VERSION = 1
OUTCOMES = ("ok", "not_found", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    id_type TEXT NOT NULL,
    id TEXT NOT NULL,
    query TEXT NOT NULL,
    payloads TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (id_type, id, query)
);
CREATE TABLE IF NOT EXISTS outcomes (
    id_type TEXT NOT NULL,
    id TEXT NOT NULL,
    query TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'not_found', 'failed')),
    http_status INTEGER,
    attempts INTEGER NOT NULL,
    error TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (id_type, id, query)
);
"""

# SQLite's default limit on host parameters is 999 in old builds; stay well below.
_CHUNK = 500


@dataclass(frozen=True)
class CacheHit:
    """What the cache knows about one id, fresh enough to use.

    Attributes
    ----------
    id : str
        The user id or device id.
    status : {"ok", "not_found"}
        ``ok`` with ``payloads``; ``not_found`` when the service did not know the id.
    payloads : list of dict or None
        The raw response bodies (one per ``ProfileQuery.parts()``) for ``ok``.
    at : float
        Unix seconds when the response or outcome was recorded.
    http_status : int or None
        The HTTP status of a cached ``not_found`` answer.
    attempts : int
        Requests the original fetch took.
    """

    id: str
    status: str
    payloads: list[dict[str, Any]] | None
    at: float
    http_status: int | None = None
    attempts: int = 0


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


def _query_key(query: ProfileQuery | str) -> str:
    return query.canonical() if isinstance(query, ProfileQuery) else str(query)


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
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._clock = clock
        self._lock = threading.RLock()
        # One connection shared by the threads of this process, always used under
        # self._lock; autocommit mode, with explicit transactions for writes.
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=timeout, check_same_thread=False, isolation_level=None
        )
        with self._lock:
            conn = self._connection
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the cache {self.path!r} was written by a newer amptools "
                    f"(schema {row[0]}); upgrade amptools or use another cache file."
                )

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
    def put(
        self,
        id_type: str,
        id: str,
        query: ProfileQuery | str,
        payloads: Sequence[Mapping[str, Any]],
        *,
        attempts: int = 1,
        http_status: int | None = 200,
        fetched_at: float | None = None,
    ) -> None:
        """Store a successful fetch (the raw bodies) and record ``ok``; commits at once."""
        at = self._clock() if fetched_at is None else fetched_at
        key = (id_type, id, _query_key(query))
        body = json.dumps(list(payloads), ensure_ascii=False, separators=(",", ":"))
        self._write([
            ("INSERT OR REPLACE INTO responses (id_type, id, query, payloads, fetched_at) "
             "VALUES (?, ?, ?, ?, ?)", (*key, body, at)),
            ("INSERT OR REPLACE INTO outcomes (id_type, id, query, status, http_status, "
             "attempts, error, recorded_at) VALUES (?, ?, ?, 'ok', ?, ?, NULL, ?)",
             (*key, http_status, attempts, at)),
        ])

    def record(
        self,
        id_type: str,
        id: str,
        query: ProfileQuery | str,
        status: str,
        *,
        http_status: int | None = None,
        attempts: int = 0,
        error: str | None = None,
        recorded_at: float | None = None,
    ) -> None:
        """Record a ``not_found`` or ``failed`` outcome in the ledger; commits at once.

        A stored response is kept: a failed refresh does not throw away older data.
        """
        if status not in OUTCOMES:
            raise ValueError(f"status must be one of {OUTCOMES}, got {status!r}")
        at = self._clock() if recorded_at is None else recorded_at
        self._write([
            ("INSERT OR REPLACE INTO outcomes (id_type, id, query, status, http_status, "
             "attempts, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
             (id_type, id, _query_key(query), status, http_status, attempts, error, at)),
        ])

    # -- reading ---------------------------------------------------------------------
    def get(
        self,
        id_type: str,
        id: str,
        query: ProfileQuery | str,
        *,
        max_age: float | timedelta | None = None,
    ) -> CacheHit | None:
        """What the cache holds for one id, or None when it must be fetched."""
        return self.lookup(id_type, [id], query, max_age=max_age).get(id)

    def lookup(
        self,
        id_type: str,
        ids: Iterable[str],
        query: ProfileQuery | str,
        *,
        max_age: float | timedelta | None = None,
    ) -> dict[str, CacheHit]:
        """The usable entries for many ids at once: ``{id: CacheHit}``.

        An id is usable when its stored response, or its ``not_found`` outcome, is
        at most ``max_age`` seconds old (any age when None); when both exist the
        newer wins. Ids with only a ``failed`` outcome, or nothing, are absent.
        """
        limit = _max_age_seconds(max_age)
        oldest = -float("inf") if limit is None else self._clock() - limit
        key = _query_key(query)
        ids = list(ids)
        hits: dict[str, CacheHit] = {}
        with self._lock:
            conn = self._conn
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for id_, payloads, at, attempts in conn.execute(
                    "SELECT r.id, r.payloads, r.fetched_at, o.attempts FROM responses r "
                    "LEFT JOIN outcomes o USING (id_type, id, query) "
                    f"WHERE r.id_type = ? AND r.query = ? AND r.id IN ({marks}) "
                    "AND r.fetched_at >= ?",
                    (id_type, key, *chunk, oldest),
                ):
                    try:
                        bodies = json.loads(payloads)
                    except ValueError:
                        continue  # a damaged row is fetched again
                    hits[id_] = CacheHit(id_, "ok", bodies, at, 200, attempts or 0)
                for id_, at, http_status, attempts in conn.execute(
                    "SELECT id, recorded_at, http_status, attempts FROM outcomes "
                    f"WHERE id_type = ? AND query = ? AND id IN ({marks}) "
                    "AND status = 'not_found' AND recorded_at >= ?",
                    (id_type, key, *chunk, oldest),
                ):
                    known = hits.get(id_)
                    if known is None or known.at < at:
                        hits[id_] = CacheHit(id_, "not_found", None, at, http_status, attempts)
        return hits

    def outcomes(self, id_type: str | None = None, query: ProfileQuery | str | None = None) -> Any:
        """The ledger as a DataFrame: id_type, id, query, status, http_status, attempts,
        error, recorded_at (Unix seconds)."""
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

    def ids(self, id_type: str, query: ProfileQuery | str, status: str = "ok") -> set[str]:
        """The ids whose last recorded outcome for this query is ``status``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM outcomes WHERE id_type = ? AND query = ? AND status = ?",
                (id_type, _query_key(query), status),
            ).fetchall()
        return {row[0] for row in rows}

    def __len__(self) -> int:
        """The number of stored responses."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        """The ``(id_type, id, canonical query)`` keys of the stored responses."""
        with self._lock:
            rows = self._conn.execute("SELECT id_type, id, query FROM responses").fetchall()
        return iter(rows)

    def clear(self) -> None:
        """Forget every response and outcome."""
        self._write([("DELETE FROM responses", ()), ("DELETE FROM outcomes", ())])


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
