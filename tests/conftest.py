"""Shared fixtures: the documented sample payloads and a running sample org."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"

# The six documented responses of PROFILE_API.md, by file stem, with the query
# string that produces each one.
DOCUMENTED_QUERIES: dict[str, dict[str, str]] = {
    "one_rec": {"get_recs": "true", "rec_id": "testRecId"},
    "two_recs": {"get_recs": "true", "rec_id": "testRecId,testRecId2"},
    "user_properties": {"get_amp_props": "true"},
    "cohort_ids": {"get_cohort_ids": "true"},
    "one_computation": {"comp_id": "computed-prop-2"},
    "all_computations": {"get_computations": "true"},
}


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal or a notebook, in every session.

    A process started in the background of a script (``cmd &``, a CI step, mutmut's
    workers) inherits SIGINT ignored, and Python then installs no handler: the tests that
    press Ctrl-C (``signal.pthread_kill``, ``_thread.interrupt_main``) would fail for a
    reason that is not the code's.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def isolated_budget(tmp_path_factory):
    """The shared request budget (and claims) of this test session only.

    Clients of one scope share a budget file under the user cache directory, and the
    sample org's key is derived from its seed, so without this two test sessions (or a
    test and a notebook the user runs) would pace each other. Subprocesses and notebook
    kernels inherit the variable.
    """
    from amptools.budget import CACHE_DIR_VARIABLE

    previous = os.environ.get(CACHE_DIR_VARIABLE)
    os.environ[CACHE_DIR_VARIABLE] = str(tmp_path_factory.mktemp("amptools-cache"))
    yield os.environ[CACHE_DIR_VARIABLE]
    if previous is None:
        os.environ.pop(CACHE_DIR_VARIABLE, None)
    else:
        os.environ[CACHE_DIR_VARIABLE] = previous


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server on a free loopback port for the session (tests/redis_server.py):
    skips without redis-server, fails instead when AMPTOOLS_REQUIRE_REDIS=1 (CI)."""
    from redis_server import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture
def hostile():
    """A raw HTTP server on loopback whose every answer the test writes (tests/test_hardening.py's
    ``Hostile``): the hostile answers a real org or a proxy may give."""
    from test_hardening import Hostile

    server = Hostile()
    yield server
    server.close()


@pytest.fixture
def write_lock_held():
    """``with write_lock_held(path, seconds):`` — a new SQLite file whose write lock another
    connection holds for ``seconds`` from the start, as a process setting the file up does
    (SQLite answers ``PRAGMA journal_mode=WAL`` "database is locked" at once then)."""
    import sqlite3
    import threading
    from contextlib import contextmanager

    @contextmanager
    def held(path: Path, seconds: float):
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(seconds, holder.execute, ("COMMIT",))
        release.start()
        try:
            yield
        finally:
            release.join()
            holder.close()

    return held


def load_sample(name: str) -> dict[str, Any]:
    """One documented response from data/samples/<name>.json."""
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sample_server():
    """One embedded sample org for the session (tests must not change its faults)."""
    from amptools.sample import SampleServer

    with SampleServer() as server:
        yield server


@pytest.fixture
def fresh_server():
    """A sample org of the test's own, free to fault and throttle."""
    from amptools.sample import SampleServer

    with SampleServer() as server:
        yield server


@pytest.fixture
def umask_022():
    """The common umask 022 for the test, so a file's mode shows what amptools chose."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say in one line when the browser test was skipped and why (``make test`` hides skip reasons)."""
    reasons = {report.longrepr[2].removeprefix("Skipped: ")
               for report in terminalreporter.stats.get("skipped", [])
               if report.nodeid.split("::")[0].endswith("test_browser.py")
               and isinstance(report.longrepr, tuple)}
    if reasons:
        terminalreporter.write_line(f"browser test skipped: {'; '.join(sorted(reasons))}",
                                    yellow=True, bold=True)
