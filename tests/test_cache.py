"""ProfileCache: raw responses and the outcome ledger in SQLite."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import warnings
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from amptools.cache import (
    LEGACY_SCOPE,
    SCHEMA_VERSION,
    Decision,
    CacheWarning,
    ProfileCache,
    decide,
    open_cache,
)
from amptools.client import api_scope
from amptools.errors import CacheError, ConfigurationError
from amptools.query import ProfileQuery
from amptools.sample import SampleServer

Q = ProfileQuery(recs=("testRecId",))
BODY = {"userData": {"user_id": "u1", "device_id": None, "recommendations": None}}


# The cache has one write API (save) and one read API (stored); whether an id is
# answered is decide()'s to say, as in a bulk fetch. These helpers spell the common
# cases the way the tests read best.
def _query(query: ProfileQuery | str) -> ProfileQuery:
    return query if isinstance(query, ProfileQuery) else ProfileQuery(**json.loads(query))


def put(cache: ProfileCache, id_type: str, id_: str, query: ProfileQuery | str, bodies: list,
        *, attempts: int = 1, scope: str = "") -> None:
    keys = [part.canonical() for part in _query(query).parts()]
    parts = [(key, body, max(1, attempts - (len(keys) - 1)) if i == 0 else 1, None)
             for i, (key, body) in enumerate(zip(keys, bodies))]
    cache.save(id_type, id_, query, scope=scope, parts=parts, status="ok", http_status=200, attempts=attempts)


def record(cache: ProfileCache, id_type: str, id_: str, query: ProfileQuery | str, status: str,
           *, http_status: int | None = None, attempts: int = 0, error: str | None = None,
           scope: str = "") -> None:
    cache.save(id_type, id_, query, scope=scope, status=status, http_status=http_status,
               attempts=attempts, error=error)


def lookup(cache: ProfileCache, id_type: str, ids: list[str], query: ProfileQuery | str, *,
           max_age: object = None, scope: str = "") -> dict[str, Decision]:
    stored = cache.stored(id_type, ids, query, scope=scope, max_age=max_age)
    answers = {id_: decide(entry, _query(query).parts()) for id_, entry in stored.items()}
    return {id_: answer for id_, answer in answers.items() if answer.status != "missing"}


def get(cache: ProfileCache, id_type: str, id_: str, query: ProfileQuery | str, **options: object) -> Decision | None:
    return lookup(cache, id_type, [id_], query, **options).get(id_)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_put_and_lookup_round_trip(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        put(cache, "user_id", "u1", Q, [BODY], attempts=2)
        hit = get(cache, "user_id", "u1", Q)
        assert hit is not None and hit.status == "ok"
        assert hit.payloads == [BODY]
        assert hit.attempts == 2
        # Keyed by id type and canonical query too.
        assert get(cache, "device_id", "u1", Q) is None
        assert get(cache, "user_id", "u1", ProfileQuery(cohort_ids=True)) is None  # never asked
        assert get(cache, "user_id", "u1", ProfileQuery()).status == "ok"  # a narrower query
        assert get(cache, "user_id", "u1", Q.canonical()) is not None
        assert len(cache) == 1
        assert list(cache) == [("user_id", "u1", Q.canonical())]


def test_two_part_payloads_and_unicode_ids(tmp_path: Path) -> None:
    query = ProfileQuery(amp_props=True, computations=True, split_computations=True)
    bodies = [{"userData": {"amp_props": {"a": 1}}}, {"userData": {"amp_props": {"c": "2"}}}]
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        put(cache, "user_id", "Zoë & Łukasz 🚀", query, bodies)
        assert get(cache, "user_id", "Zoë & Łukasz 🚀", query).payloads == bodies


def test_not_found_is_cached_failed_is_not(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        record(cache, "user_id", "ghost", Q, "not_found", http_status=400, attempts=1, error="unknown")
        record(cache, "user_id", "flaky", Q, "failed", http_status=503, attempts=5, error="5xx")
        hits = lookup(cache, "user_id", ["ghost", "flaky", "never"], Q)
        assert set(hits) == {"ghost"}
        assert hits["ghost"].status == "not_found" and hits["ghost"].http_status == 400
        ledger = cache.outcomes()
        assert list(ledger.columns) == ["id_type", "id", "query", "status", "http_status",
                                        "attempts", "error", "recorded_at"]
        assert dict(zip(ledger["id"], ledger["status"])) == {"ghost": "not_found", "flaky": "failed"}
        assert cache.ids("user_id", Q, "failed") == {"flaky"}


def test_failed_refresh_keeps_the_old_response(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        put(cache, "user_id", "u1", Q, [BODY])
        record(cache, "user_id", "u1", Q, "failed", http_status=500, attempts=5)
        assert get(cache, "user_id", "u1", Q).status == "ok"


def test_newer_of_response_and_not_found_wins(tmp_path: Path) -> None:
    clock = Clock()
    with ProfileCache(tmp_path / "c.sqlite", clock=clock) as cache:
        put(cache, "user_id", "u1", Q, [BODY])
        clock.now += 10
        record(cache, "user_id", "u1", Q, "not_found", http_status=400)
        assert get(cache, "user_id", "u1", Q).status == "not_found"
        clock.now += 10
        put(cache, "user_id", "u1", Q, [BODY])
        assert get(cache, "user_id", "u1", Q).status == "ok"


def test_max_age(tmp_path: Path) -> None:
    clock = Clock()
    with ProfileCache(tmp_path / "c.sqlite", clock=clock) as cache:
        put(cache, "user_id", "u1", Q, [BODY])
        record(cache, "user_id", "ghost", Q, "not_found")
        clock.now += 100
        assert set(lookup(cache, "user_id", ["u1", "ghost"], Q, max_age=101)) == {"u1", "ghost"}
        assert lookup(cache, "user_id", ["u1", "ghost"], Q, max_age=99) == {}
        assert lookup(cache, "user_id", ["u1"], Q, max_age=timedelta(minutes=1)) == {}
        assert set(lookup(cache, "user_id", ["u1"], Q, max_age=None)) == {"u1"}
        with pytest.raises(ConfigurationError):
            lookup(cache, "user_id", ["u1"], Q, max_age=-1)


def test_lookup_many_ids_in_chunks(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        for i in range(1200):
            put(cache, "user_id", f"u{i}", Q, [BODY])
        hits = lookup(cache, "user_id", [f"u{i}" for i in range(0, 2400, 2)], Q)
        assert len(hits) == 600


def test_persists_and_never_stores_a_key(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with ProfileCache(path) as cache:
        put(cache, "user_id", "u1", Q, [BODY])
    with ProfileCache(path) as cache:
        assert get(cache, "user_id", "u1", Q) is not None
    raw = sqlite3.connect(path)
    columns = {row[1] for table in ("responses", "outcomes", "rejected", "meta")
               for row in raw.execute(f"PRAGMA table_info({table})")}
    raw.close()
    assert not any("key" in column for column in columns - {"key"})  # meta's own key column

    # The real thing: fetch through a client holding a canary key, then look for the
    # canary (and its plain SHA-256) in every byte of the database, WAL and shm files.
    canary = "CANARY-" + secrets.token_hex(12)
    fetched = tmp_path / "fetched.sqlite"
    with SampleServer(secret_key=canary) as srv, ProfileCache(fetched) as cache:
        ps = srv.client().get_profiles(srv.org.user_ids[:5], cache=cache, progress=False,
                                       amp_props=True, computations=True, split_computations=True)
        assert ps.ok == 5 and len(cache) == 10
        files = [Path(f"{fetched}{suffix}") for suffix in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)  # checked while the WAL is still there
        needles = [canary.encode(), canary.encode("utf-16-le"),
                   hashlib.sha256(canary.encode()).hexdigest().encode()]
        for f in files:
            data = f.read_bytes()
            assert not any(needle in data for needle in needles), f.name
    data = fetched.read_bytes()  # after close and checkpoint
    assert canary.encode() not in data and b"key:" in data  # scoped by a fingerprint only


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ProfileCache(path)
    other = ProfileCache(path)  # a second connection, as another process would hold

    def write(target: ProfileCache, start: int) -> None:
        for i in range(start, start + 100):
            put(target, "user_id", f"u{i}", Q, [BODY])

    threads = [threading.Thread(target=write, args=(c, n * 100))
               for n, c in enumerate([cache, cache, other, other, cache, other])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 600
    # Schema 2 stores one body per request part (the column was a list of bodies).
    assert json.loads(sqlite3.connect(path).execute(
        "SELECT payload FROM responses LIMIT 1").fetchone()[0]) == BODY
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
        put(cache, "user_id", "u1", Q, [BODY])
        cache._conn.execute("UPDATE responses SET payload = '{not json'")  # schema 2 name
        assert get(cache, "user_id", "u1", Q) is None


def test_memory_cache_and_clear() -> None:
    with ProfileCache(":memory:") as cache:
        put(cache, "user_id", "u1", Q, [BODY])
        assert len(cache) == 1
        cache.clear()
        assert len(cache) == 0
        assert "ProfileCache" in repr(cache)


# -- schema 2: scopes, parts, unreadable bodies, upgrades ------------------------------------
def test_scopes_keep_projects_apart(tmp_path: Path) -> None:
    a = api_scope("https://profile-api.amplitude.com", "key-a")
    b = api_scope("https://profile-api.amplitude.com", "key-b")
    c = api_scope("http://127.0.0.1:9", "key-a")
    assert len({a, b, c}) == 3 and "key-a" not in a
    assert a == api_scope("https://profile-api.amplitude.com/", "key-a")
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        put(cache, "user_id", "u1", Q, [BODY], scope=a)
        record(cache, "user_id", "ghost", Q, "not_found", scope=a)
        assert set(lookup(cache, "user_id", ["u1", "ghost"], Q, scope=a)) == {"u1", "ghost"}
        assert lookup(cache, "user_id", ["u1", "ghost"], Q, scope=b) == {}
        assert lookup(cache, "user_id", ["u1", "ghost"], Q) == {}
        assert cache.scopes() == [a]
        assert cache.ids("user_id", Q) == {"u1"} and cache.ids("user_id", Q, scope=b) == set()


def test_parts_are_stored_one_by_one(tmp_path: Path) -> None:
    query = ProfileQuery(recs=("r",), amp_props=True, computations=True, split_computations=True)
    main, comps = (p.canonical() for p in query.parts())
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.save("user_id", "u1", query, parts=[(main, BODY, 1, None)])
        assert get(cache, "user_id", "u1", query) is None  # one part is not a profile yet
        stored = cache.stored("user_id", ["u1"], query)["u1"]
        assert set(stored.parts) == {main} and stored.parts[main].payload == BODY
        cache.save("user_id", "u1", query, parts=[(comps, BODY, 2, None)], status="ok",
                   attempts=2, http_status=200)
        hit = get(cache, "user_id", "u1", query)
        assert hit.status == "ok" and hit.payloads == [BODY, BODY] and hit.attempts == 3


def test_an_unreadable_body_is_never_thrown_away(tmp_path: Path) -> None:
    bad = {"userData": {"recommendations": "oops"}}
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.save("user_id", "u1", Q, parts=[(Q.canonical(), bad, 1, "bad recommendations")],
                   status="failed", http_status=200, attempts=1, error="bad recommendations")
        assert cache.stored("user_id", ["u1"], Q)["u1"].parts[Q.canonical()].error
        put(cache, "user_id", "u1", Q, [BODY])  # a later fetch replaces it ...
        rejected = cache._conn.execute("SELECT payload, error FROM rejected").fetchall()
        assert [(json.loads(p), e) for p, e in rejected] == [(bad, "bad recommendations")]
        assert get(cache, "user_id", "u1", Q).payloads == [BODY]  # ... and is served


def make_schema_1(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE responses (id_type TEXT NOT NULL, id TEXT NOT NULL, query TEXT NOT NULL,
            payloads TEXT NOT NULL, fetched_at REAL NOT NULL, PRIMARY KEY (id_type, id, query));
        CREATE TABLE outcomes (id_type TEXT NOT NULL, id TEXT NOT NULL, query TEXT NOT NULL,
            status TEXT NOT NULL, http_status INTEGER, attempts INTEGER NOT NULL, error TEXT,
            recorded_at REAL NOT NULL, PRIMARY KEY (id_type, id, query));
        INSERT INTO meta VALUES ('schema_version', '1');
    """)
    two = ProfileQuery(amp_props=True, computations=True, split_computations=True)
    raw.execute("INSERT INTO responses VALUES ('user_id', 'u1', ?, ?, 5.0)",
                (Q.canonical(), json.dumps([BODY])))
    raw.execute("INSERT INTO responses VALUES ('user_id', 'u2', ?, ?, 5.0)",
                (two.canonical(), json.dumps([BODY, BODY])))
    raw.execute("INSERT INTO outcomes VALUES ('user_id', 'u1', ?, 'ok', 200, 3, NULL, 5.0)",
                (Q.canonical(),))
    raw.execute("INSERT INTO outcomes VALUES ('user_id', 'g', ?, 'not_found', 400, 1, 'x', 5.0)",
                (Q.canonical(),))
    raw.commit()
    raw.close()


def test_schema_1_file_is_upgraded_and_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    make_schema_1(path)
    with pytest.warns(CacheWarning, match="older amptools"):
        cache = ProfileCache(path)
    two = ProfileQuery(amp_props=True, computations=True, split_computations=True)
    with cache:
        version = cache._conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION == 2
        assert len(cache) == 3 and cache.scopes() == [LEGACY_SCOPE]
        assert lookup(cache, "user_id", ["u1", "u2", "g"], Q) == {}  # nobody's answers
        legacy = lookup(cache, "user_id", ["u1", "g"], Q, scope=LEGACY_SCOPE)
        assert legacy["u1"].payloads == [BODY] and legacy["u1"].attempts == 3
        assert legacy["g"].status == "not_found"
        assert get(cache, "user_id", "u2", two, scope=LEGACY_SCOPE).payloads == [BODY, BODY]
    with SampleServer() as srv, warnings.catch_warnings(record=True):
        client = srv.client()
        with ProfileCache(path) as cache:
            assert cache.adopt_legacy(client) == 3
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # adopted: no more warning
            with ProfileCache(path) as cache:
                ps = client.get_profiles(["u1", "g"], Q, cache=cache, progress=False)
        assert ps.from_cache == 2 and srv.arrivals == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    ProfileCache(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(CacheError, match="newer amptools"):
        ProfileCache(path)


def test_the_cache_imports_no_http_and_no_client() -> None:
    # The arrows point one way: the SQLite layer knows nothing of requests or clients.
    import subprocess
    import sys

    code = ("import sys, amptools.cache, amptools.models, amptools.query\n"
            "print(sorted(m for m in ('requests', 'urllib3', 'amptools.client', 'amptools.bulk') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_decide_is_the_one_hit_rule() -> None:
    from amptools.cache import StoredBody, StoredParts

    split = ProfileQuery(recs=("r",), amp_props=True, computations=True, split_computations=True)
    main, comps = split.parts()
    good = {"userData": {"recommendations": [{"rec_id": "r", "items": ["a"]}], "amp_props": {}}}
    unreadable = {"userData": {"recommendations": "oops"}}
    parts = lambda **bodies: {q.canonical(): StoredBody(q.canonical(), body, 5.0, 2)  # noqa: E731
                              for q, body in ((main, bodies.get("main")), (comps, bodies.get("comps")))
                              if body is not None}
    assert decide(None, split.parts()).status == "missing"
    ok = decide(StoredParts("u", parts(main=good, comps=BODY)), split.parts())
    assert ok.status == "ok" and ok.payloads == [good, BODY] and ok.attempts == 4
    half = decide(StoredParts("u", parts(main=good)), split.parts())
    assert half.status == "missing" and half.have == {main.canonical(): good}
    # An unreadable answer to recommendations is kept, not asked again (exposure events).
    kept = decide(StoredParts("u", parts(main=unreadable, comps=BODY)), split.parts())
    assert kept.status == "failed" and "not fetched again" in kept.error
    # Without recommendations it is simply asked again.
    again = decide(StoredParts("u", parts(main=good, comps=unreadable)), split.parts())
    assert again.status == "missing" and list(again.have) == [main.canonical()]
    newer_not_found = StoredParts("u", parts(main=good, comps=BODY), (6.0, 400, 1))
    assert decide(newer_not_found, split.parts()).status == "not_found"
    older_not_found = StoredParts("u", parts(main=good, comps=BODY), (4.0, 400, 1))
    assert decide(older_not_found, split.parts()).status == "ok"


def test_a_new_cache_another_process_is_setting_up_is_waited_for(tmp_path: Path, write_lock_held) -> None:
    """Two processes opening one new cache together: SQLite answers the second one's
    ``PRAGMA journal_mode=WAL`` "database is locked" at once, without its busy timeout
    (one of two processes in the shared-cache test went on without the cache)."""
    path = tmp_path / "new.sqlite"
    with write_lock_held(path, 0.3):
        cache = ProfileCache(path)  # waits for the lock, up to its timeout
    assert cache._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()
    with write_lock_held(tmp_path / "other.sqlite", 2.0):
        with pytest.raises(CacheError, match="locked"):
            ProfileCache(tmp_path / "other.sqlite", timeout=0.1)  # but no longer
