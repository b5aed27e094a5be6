"""ProfileCache: raw responses and the outcome ledger in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from amptools.cache import ProfileCache, open_cache
from amptools.errors import ConfigurationError
from amptools.query import ProfileQuery

Q = ProfileQuery(recs=("testRecId",))
BODY = {"userData": {"user_id": "u1", "device_id": None, "recommendations": None}}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_put_and_lookup_round_trip(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.put("user_id", "u1", Q, [BODY], attempts=2)
        hit = cache.get("user_id", "u1", Q)
        assert hit is not None and hit.status == "ok"
        assert hit.payloads == [BODY]
        assert hit.attempts == 2
        # Keyed by id type and canonical query too.
        assert cache.get("device_id", "u1", Q) is None
        assert cache.get("user_id", "u1", ProfileQuery()) is None
        assert cache.get("user_id", "u1", Q.canonical()) is not None
        assert len(cache) == 1
        assert list(cache) == [("user_id", "u1", Q.canonical())]


def test_two_part_payloads_and_unicode_ids(tmp_path: Path) -> None:
    query = ProfileQuery(amp_props=True, computations=True)
    bodies = [{"userData": {"amp_props": {"a": 1}}}, {"userData": {"amp_props": {"c": "2"}}}]
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.put("user_id", "Zoë & Łukasz 🚀", query, bodies)
        assert cache.get("user_id", "Zoë & Łukasz 🚀", query).payloads == bodies


def test_not_found_is_cached_failed_is_not(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.record("user_id", "ghost", Q, "not_found", http_status=400, attempts=1, error="unknown")
        cache.record("user_id", "flaky", Q, "failed", http_status=503, attempts=5, error="5xx")
        hits = cache.lookup("user_id", ["ghost", "flaky", "never"], Q)
        assert set(hits) == {"ghost"}
        assert hits["ghost"].status == "not_found" and hits["ghost"].http_status == 400
        ledger = cache.outcomes()
        assert list(ledger.columns) == ["id_type", "id", "query", "status", "http_status",
                                        "attempts", "error", "recorded_at"]
        assert dict(zip(ledger["id"], ledger["status"])) == {"ghost": "not_found", "flaky": "failed"}
        assert cache.ids("user_id", Q, "failed") == {"flaky"}


def test_failed_refresh_keeps_the_old_response(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.put("user_id", "u1", Q, [BODY])
        cache.record("user_id", "u1", Q, "failed", http_status=500, attempts=5)
        assert cache.get("user_id", "u1", Q).status == "ok"


def test_newer_of_response_and_not_found_wins(tmp_path: Path) -> None:
    clock = Clock()
    with ProfileCache(tmp_path / "c.sqlite", clock=clock) as cache:
        cache.put("user_id", "u1", Q, [BODY])
        clock.now += 10
        cache.record("user_id", "u1", Q, "not_found", http_status=400)
        assert cache.get("user_id", "u1", Q).status == "not_found"
        clock.now += 10
        cache.put("user_id", "u1", Q, [BODY])
        assert cache.get("user_id", "u1", Q).status == "ok"


def test_max_age(tmp_path: Path) -> None:
    clock = Clock()
    with ProfileCache(tmp_path / "c.sqlite", clock=clock) as cache:
        cache.put("user_id", "u1", Q, [BODY])
        cache.record("user_id", "ghost", Q, "not_found")
        clock.now += 100
        assert set(cache.lookup("user_id", ["u1", "ghost"], Q, max_age=101)) == {"u1", "ghost"}
        assert cache.lookup("user_id", ["u1", "ghost"], Q, max_age=99) == {}
        assert cache.lookup("user_id", ["u1"], Q, max_age=timedelta(minutes=1)) == {}
        assert set(cache.lookup("user_id", ["u1"], Q, max_age=None)) == {"u1"}
        with pytest.raises(ConfigurationError):
            cache.lookup("user_id", ["u1"], Q, max_age=-1)


def test_lookup_many_ids_in_chunks(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        for i in range(1200):
            cache.put("user_id", f"u{i}", Q, [BODY])
        hits = cache.lookup("user_id", [f"u{i}" for i in range(0, 2400, 2)], Q)
        assert len(hits) == 600


def test_persists_and_never_stores_a_key(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with ProfileCache(path) as cache:
        cache.put("user_id", "u1", Q, [BODY])
    with ProfileCache(path) as cache:
        assert cache.get("user_id", "u1", Q) is not None
    raw = sqlite3.connect(path)
    columns = {row[1] for table in ("responses", "outcomes")
               for row in raw.execute(f"PRAGMA table_info({table})")}
    raw.close()
    assert not any("key" in column for column in columns)


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ProfileCache(path)
    other = ProfileCache(path)  # a second connection, as another process would hold

    def write(target: ProfileCache, start: int) -> None:
        for i in range(start, start + 100):
            target.put("user_id", f"u{i}", Q, [BODY])

    threads = [threading.Thread(target=write, args=(c, n * 100))
               for n, c in enumerate([cache, cache, other, other, cache, other])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 600
    assert json.loads(sqlite3.connect(path).execute(
        "SELECT payloads FROM responses LIMIT 1").fetchone()[0]) == [BODY]
    cache.close()
    other.close()


def test_open_cache_accepts_path_or_object(tmp_path: Path) -> None:
    cache, owned = open_cache(tmp_path / "sub" / "c.sqlite")
    assert owned and isinstance(cache, ProfileCache)
    same, owned_again = open_cache(cache)
    assert same is cache and not owned_again
    cache.close()
    assert cache.closed
    with pytest.raises(ConfigurationError):
        open_cache(cache)
    with pytest.raises(ConfigurationError):
        open_cache(42)  # type: ignore[arg-type]
    assert open_cache(None) == (None, False)


def test_damaged_row_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with ProfileCache(path) as cache:
        cache.put("user_id", "u1", Q, [BODY])
        cache._conn.execute("UPDATE responses SET payloads = '{not json'")
        assert cache.get("user_id", "u1", Q) is None


def test_memory_cache_and_clear() -> None:
    with ProfileCache(":memory:") as cache:
        cache.put("user_id", "u1", Q, [BODY])
        assert len(cache) == 1
        cache.clear()
        assert len(cache) == 0
        assert "ProfileCache" in repr(cache)
