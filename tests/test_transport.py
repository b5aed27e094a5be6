"""The one HTTP transport (issue 23): one module imports requests, one retry loop, one way
to check settings and open stores, and the error tree both Amplitude APIs share."""

from __future__ import annotations

import ast
import pickle
import random
import sqlite3
import stat
from pathlib import Path

import pytest

import amptools as amp
from amptools import stores
from amptools.errors import (
    AmplitudeAPIError,
    CacheError,
    CohortsAPIError,
    ConfigurationError,
    ProfileAPIError,
    ServerError,
    ThrottledError,
)
from amptools.transport import RetryPolicy, call_with_retries
from test_hardening import CANARY, cohort_api, send

PACKAGE = Path(amp.__file__).parent
HTTP_LIBRARIES = {"requests", "urllib3", "http.client"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_transport_imports_an_http_library():
    importers = {path.relative_to(PACKAGE).as_posix()
                 for path in PACKAGE.rglob("*.py")
                 if any(name.split(".")[0] in {"requests", "urllib3"} or name in HTTP_LIBRARIES
                        for name in imported_modules(path))}
    assert importers == {"transport.py"}


def test_query_encoding_lives_in_query():
    from amptools import client, query

    params = {"user_id": "a,b &c", "rec_id": "r 1,r2", "get_recs": "true"}
    assert query.encode_params(params) == "user_id=a%2Cb%20%26c&rec_id=r%201,r2&get_recs=true"
    assert not hasattr(client, "_encode_query")  # one home: query.py


# -- one retry loop ------------------------------------------------------------------------
def test_call_with_retries_honours_the_policy_and_counts_attempts():
    answers = iter([ServerError("boom"), ThrottledError("slow", retry_after=100.0), "done"])
    waits: list[float] = []
    told: list[tuple[str, int]] = []
    result, attempts = call_with_retries(
        lambda: next(answers), RetryPolicy(max_retries=3, backoff_base=8, backoff_cap=0.2, retry_after_cap=1.5),
        sleep=waits.append, rng=random.Random(1),
        before_wait=lambda error, attempt, delay: told.append((type(error).__name__, attempt)))
    assert (result, attempts) == ("done", 3)
    assert 0.1 <= waits[0] <= 0.2 and waits[1] == 1.5  # the backoff cap, then Retry-After's cap
    assert told == [("ServerError", 1), ("ThrottledError", 2)]
    with pytest.raises(ServerError) as caught:
        call_with_retries(lambda: ServerError("down"), RetryPolicy(max_retries=2, backoff_base=0), sleep=waits.append)
    assert caught.value.attempts == 3


def test_the_cohort_client_retries_with_its_backoff_caps(hostile):
    cohort_api(hostile, listing=lambda h: send(h, 503, {"error": "busy"}))
    waits: list[float] = []
    client = hostile.cohort_client(max_retries=3, backoff_base=10.0, backoff_cap=0.05, sleep=waits.append)
    with pytest.raises(ServerError) as caught:
        client.list_cohorts()
    assert caught.value.attempts == 4 and len(waits) == 3 and max(waits) <= 0.05
    assert isinstance(caught.value, CohortsAPIError)


@pytest.mark.parametrize("setting", [
    {"timeout": float("inf")}, {"timeout": True}, {"timeout": (5, float("nan"))}, {"timeout": (0, 5)},
    {"deadline": float("inf")}, {"download_deadline": 0}, {"max_response_bytes": 10},
    {"backoff_cap": -1}, {"retry_after_cap": float("nan")}, {"max_retries": True}, {"poll_base": float("inf")},
])
def test_bad_cohort_client_settings_are_refused_as_the_profile_clients_are(setting):
    from amptools.cohorts import CohortClient

    with pytest.raises(ConfigurationError, match=next(iter(setting))):
        CohortClient("api-key", CANARY, base_url="http://127.0.0.1:9", **setting)


# -- one error tree for both APIs -----------------------------------------------------------------
def test_cohort_errors_are_cohort_api_errors_of_their_kind_and_still_profile_api_errors(hostile):
    cohort_api(hostile, listing=lambda h: send(h, 401, {"error": "Invalid API key"}))
    with pytest.raises(CohortsAPIError) as caught:
        hostile.cohort_client().list_cohorts()
    error = caught.value
    assert isinstance(error, amp.AuthenticationError) and isinstance(error, AmplitudeAPIError)
    assert isinstance(error, ProfileAPIError)  # deprecated, but what `except ProfileAPIError` caught before
    assert type(error).__name__ == "AuthenticationError" and error.status == 401
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and again.status == 401 and str(again) == str(error)
    profile_error = ServerError("the Profile API failed")
    assert isinstance(profile_error, AmplitudeAPIError) and not isinstance(profile_error, CohortsAPIError)
    assert {"AmplitudeAPIError", "CohortsAPIError"} <= set(amp.__all__)


def test_the_org_limit_is_one_named_constant():
    from amptools import client, query

    assert query.ORG_REQUESTS_PER_MINUTE == 600
    throttled = client.map_response(429, "", {}, "u")
    assert f"{query.ORG_REQUESTS_PER_MINUTE} a minute" in str(throttled)


# -- one way to open a SQLite file ------------------------------------------------------------------
def test_stores_open_private_files_with_their_wal_and_map_errors(tmp_path, monkeypatch, umask_022):
    monkeypatch.setenv("HOME", str(tmp_path))
    conn = stores.connect("~/deep/er/store.sqlite")
    with conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    path = tmp_path / "deep" / "er" / "store.sqlite"
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(f.exists() for f in files)
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    conn.close()
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(CacheError, match=r"the budget '.*folder.sqlite' is a folder"):
        stores.connect(tmp_path / "folder.sqlite", what="the budget")
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database" * 400)
    with pytest.raises(CacheError, match="is not an amptools cache"):
        stores.connect(tmp_path / "garbage.sqlite", prepare=lambda c: c.execute("SELECT * FROM sqlite_master"))
    with pytest.raises(CacheError, match="lies under a file"):
        stores.connect(tmp_path / "garbage.sqlite" / "inner.sqlite")
    assert isinstance(stores.connect(":memory:"), sqlite3.Connection)
