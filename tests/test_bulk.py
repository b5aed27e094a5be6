"""Bulk fetch against the real sample server: pacing, outcomes, stopping, cache, resume."""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amptools.bulk import (
    CANCELLED_ERROR,
    FAILURE_COLUMNS,
    OUTCOME_COLUMNS,
    IncompleteFetchWarning,
    ProfileSet,
    start_fetch,
)
from amptools.cache import CacheWarning, ProfileCache
from amptools.client import ExposureWarning, ProfileClient
from amptools.errors import AuthenticationError, ConfigurationError, InvalidQueryError
from amptools.query import ProfileQuery
from amptools.ratelimit import most_in_window
from amptools.sample import Faults, SampleServer

ROOT = Path(__file__).resolve().parent.parent
FAST = {"backoff_base": 0.001, "backoff_cap": 0.01, "retry_after_cap": 0.01}
UNLIMITED = {"rate_limit": 100_000, "rate_period": 1.0}


@pytest.fixture(scope="module")
def server():
    """A roomy sample org for this module; tests that fault it restore it."""
    with SampleServer(rate_limit=100_000, window=1.0) as srv:
        yield srv


@pytest.fixture
def srv(server: SampleServer):
    server.faults = None
    server.latency = 0.0
    server.reset_arrivals()
    yield server
    server.faults = None
    server.latency = 0.0


def asked(arrivals: list[Any], id_type: str = "user_id") -> Counter[str]:
    return Counter(a.params.get(id_type) for a in arrivals)


def check_invariant(ps: ProfileSet, unique: int) -> None:
    counts = ps.counts
    assert counts["ok"] + counts["not_found"] + counts["failed"] == unique
    assert len(ps.outcomes) == unique
    assert len(ps) == len(ps.profiles) == counts["ok"]
    assert len(ps.failures) == counts["not_found"] + counts["failed"]


# -- the basics ---------------------------------------------------------------------------
def test_order_duplicates_and_outcomes(srv: SampleServer) -> None:
    known = list(srv.org.user_ids[1:21])
    ids = [known[3], *known, "ghost-1", known[3], "ghost-1", 12345]
    client = srv.client(**UNLIMITED)
    ps = client.get_profiles(ids, progress=False)
    unique = list(dict.fromkeys([known[3], *known, "ghost-1", "12345"]))
    check_invariant(ps, len(unique))
    assert ps.counts == {"ok": 20, "not_found": 2, "failed": 0}
    assert [p.user_id for p in ps.profiles] == [i for i in unique if i in known]
    assert [p.user_id for p in ps] == [p.user_id for p in ps.profiles]
    assert ps.ids == unique
    # Each unique id asked exactly once.
    assert asked(srv.arrivals) == Counter(unique)
    assert repr(ps) == "<ProfileSet 20 ok, 2 not_found, 0 failed of 22 ids>"
    assert ps.query == ProfileQuery() and ps.id_type == "user_id" and not ps.cancelled
    assert ps.elapsed > 0

    failures = ps.failures
    assert tuple(failures.columns) == FAILURE_COLUMNS
    assert failures["user_id"].tolist() == ["ghost-1", "12345"]
    assert failures["device_id"].isna().all()
    assert set(failures["status"]) == {"not_found"}
    assert failures["http_status"].tolist() == [400, 400]
    assert str(failures["http_status"].dtype) == "Int64"
    assert str(failures["attempts"].dtype) == "int64"
    outcomes = ps.outcomes
    assert tuple(outcomes.columns) == OUTCOME_COLUMNS
    assert outcomes["id"].tolist() == unique
    assert not outcomes["from_cache"].any()
    assert str(outcomes["from_cache"].dtype) == "bool"


def test_empty_input_has_typed_frames(srv: SampleServer) -> None:
    ps = srv.client().get_profiles([], progress=False)
    assert ps.counts == {"ok": 0, "not_found": 0, "failed": 0}
    assert tuple(ps.failures.columns) == FAILURE_COLUMNS
    assert str(ps.failures["http_status"].dtype) == "Int64"
    assert tuple(ps.outcomes.columns) == OUTCOME_COLUMNS
    assert srv.arrivals == []


def test_any_iterable_of_ids(srv: SampleServer) -> None:
    known = list(srv.org.user_ids[1:6])
    client = srv.client(**UNLIMITED)
    for ids in (pd.Series(known), (i for i in known), np.array(known), tuple(known)):
        ps = client.get_profiles(ids, progress=False)
        assert [p.user_id for p in ps.profiles] == known
    ps = client.get_profiles(np.array([7, 8]), progress=False)  # numpy ints as text
    assert ps.ids == ["7", "8"]
    ps = client.get_profiles(known[0], progress=False)  # one id on its own
    assert ps.ids == [known[0]]


def test_invalid_ids_refused_before_any_request(srv: SampleServer) -> None:
    ids = ["ok-1", None, "ok-2", "  ", 3.0, float("nan"), "", pd.NA, None, True]
    with pytest.raises(InvalidQueryError) as caught:
        srv.client().get_profiles(ids, progress=False)
    message = str(caught.value)
    assert "8 user_ids are not valid" in message
    for position in ("position 1: None", "position 3: '  '", "position 4: 3.0", "position 5: nan",
                     "position 6: ''"):
        assert position in message
    assert "and 3 more" in message
    assert srv.arrivals == []
    with pytest.raises(InvalidQueryError):
        srv.client().get_profiles(pd.DataFrame({"user_id": ["a"]}), progress=False)
    with pytest.raises(InvalidQueryError):
        srv.client().get_profiles(["a"], id_type="email", progress=False)
    with pytest.raises(ConfigurationError):
        srv.client().get_profiles(["a"], workers=0, progress=False)
    with pytest.raises(InvalidQueryError):
        srv.client().get_profiles(["a"], progress=False, not_an_option=True)
    assert srv.arrivals == []


def test_device_id_mode(srv: SampleServer) -> None:
    devices = list(srv.org.device_ids[1:9])
    ps = srv.client(**UNLIMITED).get_profiles(devices + ["no-such-device"], id_type="device_id",
                                              progress=False)
    assert [p.device_id for p in ps.profiles] == devices
    assert all("user_id" not in a.params for a in srv.arrivals)
    assert asked(srv.arrivals, "device_id") == Counter(devices + ["no-such-device"])
    failures = ps.failures
    assert failures["device_id"].tolist() == ["no-such-device"]
    assert failures["user_id"].isna().all()
    assert ps.id_type == "device_id"


def test_two_part_queries_and_options(srv: SampleServer) -> None:
    ids = list(srv.org.user_ids[1:5])
    ps = srv.client(**UNLIMITED).get_profiles(ids, progress=False, amp_props=True,
                                              computations=True, split_computations=True)
    assert len(srv.arrivals) == 2 * len(ids)
    assert all(p.computations is not None and p.amp_props is not None for p in ps.profiles)
    assert set(ps.outcomes["attempts"]) == {2}


def test_progress_bar_and_hook(srv: SampleServer, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int, dict[str, int]]] = []
    ids = list(srv.org.user_ids[1:11]) + ["ghost"]
    srv.client(**UNLIMITED).get_profiles(
        ids, progress=True, on_progress=lambda d, t, c: calls.append((d, t, dict(c))))
    err = capsys.readouterr().err
    assert "11/11" in err and "1 not_found" in err  # stderr is piped here: lines, not a bar
    assert calls[0][0] == 0 and calls[-1] == (11, 11, {"ok": 10, "not_found": 1, "failed": 0})
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)
    srv.client(**UNLIMITED).get_profiles(ids, progress=False)
    assert capsys.readouterr().err == ""


def test_a_broken_progress_hook_does_not_lose_the_run(srv: SampleServer) -> None:
    def hook(done: int, total: int, counts: Any) -> None:
        raise RuntimeError("widget bug")

    ps = srv.client(**UNLIMITED).get_profiles(srv.org.user_ids[1:6], progress=False,
                                              on_progress=hook)
    assert ps.counts["ok"] == 5


# -- pacing -------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 8, 32])
def test_window_never_exceeded(workers: int) -> None:
    limit, window = 20, 0.5
    with SampleServer(rate_limit=limit, window=window) as srv:
        client = srv.client(rate_limit=limit, rate_period=window, **FAST)
        ids = list(srv.org.user_ids[1:51])
        ps = client.get_profiles(ids, workers=workers, progress=False)
        arrivals = srv.arrivals
    assert ps.counts["ok"] == 50
    assert len(arrivals) == 50  # no retries were needed
    assert [a.status for a in arrivals].count(429) == 0
    assert most_in_window([a.time for a in arrivals], window) <= limit


def test_throttle_answers_slow_the_whole_client(srv: SampleServer) -> None:
    """A 429 pauses every worker for its Retry-After (1 s, capped at 0.3 s) through the
    shared budget: within the pause the server sees only the requests that were already
    in flight, at most one per other worker, however fast the machine."""
    workers, pause = 8, 0.3
    client = srv.client(**UNLIMITED, backoff_base=0.001, retry_after_cap=pause, max_retries=8)
    assert client.quota().shared

    def throttle_once_mid_run() -> None:
        while len(srv.arrivals) < 20:
            time.sleep(0.002)
        srv.faults = Faults(throttle=1.0)
        while not any(a.status == 429 for a in srv.arrivals):
            time.sleep(0.001)
        srv.faults = None

    scripter = threading.Thread(target=throttle_once_mid_run)
    scripter.start()
    ps = client.get_profiles(srv.org.user_ids[1:101], workers=workers, progress=False)
    scripter.join(10)
    arrivals = srv.arrivals
    assert ps.counts["ok"] == 100
    throttled = [a.time for a in arrivals if a.status == 429]
    assert throttled and client.quota().throttles == len(throttled)
    # The pause ends `pause` seconds after the client heard the last 429 (its arrival at
    # the server came first), and the run went on after it.
    not_before = client.limiter._not_before
    assert not_before >= max(throttled) + pause
    assert any(a.time >= not_before for a in arrivals)
    during = [a for a in arrivals if not_before - pause < a.time < not_before]
    assert len(during) <= workers - 1  # granted before the pause; nothing was granted in it


# -- outcomes under faults ------------------------------------------------------------------
fault_rates = st.floats(0.0, 0.25)


# Nine dimensions: 50 examples (about 5 s; a stall costs its 0.2 s read timeout) rather than
# the 6 that saw barely one combination of faults each.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    server_error=fault_rates, throttle=fault_rates, reset=st.floats(0.0, 0.1),
    stall=st.floats(0.0, 0.05), truncate=st.floats(0.0, 0.1), seed=st.integers(0, 2**16),
    n_known=st.integers(0, 20), n_unknown=st.integers(0, 4), workers=st.integers(1, 6),
)
def test_every_id_ends_with_one_outcome(
    srv: SampleServer, server_error: float, throttle: float, reset: float, stall: float,
    truncate: float, seed: int, n_known: int, n_unknown: int, workers: int,
) -> None:
    srv.faults = Faults(server_error=server_error, throttle=throttle, reset=reset, stall=stall,
                        truncate=truncate, stall_seconds=0.4, seed=seed)
    srv.reset_arrivals()
    max_retries = 2
    client = srv.client(**UNLIMITED, **FAST, timeout=(1.0, 0.2), max_retries=max_retries)
    known = list(srv.org.user_ids[1 + seed % 100: 1 + seed % 100 + n_known])
    unknown = [f"ghost-{seed}-{i}" for i in range(n_unknown)]
    ids = known + unknown + known[:3]  # duplicates too
    ps = client.get_profiles(ids, workers=workers, progress=False)
    check_invariant(ps, len(known) + len(unknown))
    outcomes = ps.outcomes.set_index("id")
    assert set(outcomes.index[outcomes["status"] == "ok"]) <= set(known)
    assert set(outcomes.index[outcomes["status"] == "not_found"]) <= set(unknown)
    failed = outcomes[outcomes["status"] == "failed"]
    # A failure only after the retry budget ran out, with the error and last status kept.
    assert (failed["attempts"] == max_retries + 1).all()
    assert failed["error"].notna().all()
    per_id = asked(srv.arrivals)
    for id_, row in outcomes.iterrows():
        assert per_id[id_] == row["attempts"]  # attempts are what the server saw


# -- stopping -----------------------------------------------------------------------------
def test_wrong_key_stops_at_once(srv: SampleServer) -> None:
    srv.latency = 0.02
    client = ProfileClient("not-the-key", base_url=srv.url, **UNLIMITED)
    ids = list(srv.org.user_ids[1:101])
    with pytest.raises(AuthenticationError) as caught:
        client.get_profiles(ids, workers=4, progress=False)
    partial = caught.value.partial
    assert isinstance(partial, ProfileSet)
    check_invariant(partial, 100)
    assert partial.counts["failed"] == 100
    assert len(srv.arrivals) <= 4  # only the first requests, all in flight together
    assert set(partial.failures["http_status"].dropna()) == {401}
    assert "not-the-key" not in str(caught.value) and "not-the-key" not in repr(partial)


def test_key_revoked_mid_run_stops_new_requests(srv: SampleServer) -> None:
    srv.latency = 0.01
    key = srv.secret_key
    workers = 8
    revoked_at: list[float] = []

    def revoke(done: int, total: int, counts: Any) -> None:
        if done == 30:
            revoked_at.append(time.monotonic())  # the server's arrival clock
            srv.secret_key = "rotated"

    try:
        with pytest.raises(AuthenticationError) as caught:
            srv.client(**UNLIMITED).get_profiles(srv.org.user_ids[1:301], workers=workers,
                                                 progress=False, on_progress=revoke)
    finally:
        srv.secret_key = key
    after = [a for a in srv.arrivals if a.time > revoked_at[0]]
    # Every request checked from now on gets a 401, and the first 401 stops the run:
    # at most one more request per worker (the one each had in flight or already granted).
    assert len(after) <= workers
    partial = caught.value.partial
    check_invariant(partial, 300)
    assert partial.counts["ok"] >= 30
    assert partial.counts["ok"] + partial.counts["failed"] == 300
    assert (partial.outcomes["attempts"] == 0).sum() >= 200  # the rest was never asked


def test_cancel_from_another_thread_then_resume(srv: SampleServer, tmp_path: Path) -> None:
    srv.latency = 0.01
    cache = tmp_path / "c.sqlite"
    ids = list(srv.org.user_ids[1:201])
    seen: list[int] = []
    job = start_fetch(srv.client(**UNLIMITED), ids, workers=4, cache=cache,
                      on_progress=lambda d, t, c: seen.append(d))
    while job.progress[0] < 20:
        time.sleep(0.005)
    job.cancel()
    ps = job.result(timeout=10)
    assert job.done() and "done" in repr(job)
    assert ps.cancelled and "cancelled" in repr(ps)
    check_invariant(ps, 200)
    cancelled = ps.outcomes[ps.outcomes["error"] == CANCELLED_ERROR]
    assert len(cancelled) >= 100
    assert (cancelled["attempts"] == 0).all() and cancelled["http_status"].isna().all()
    # Nothing fetched was lost: every request that reached the server is an ok id.
    fetched = set(ps.outcomes.loc[ps.outcomes["status"] == "ok", "id"])
    assert set(asked(srv.arrivals)) == fetched

    srv.reset_arrivals()
    again = srv.client(**UNLIMITED).get_profiles(ids, cache=cache, progress=False)
    assert again.counts["ok"] == 200 and not again.cancelled
    assert Counter(asked(srv.arrivals)) == Counter(cancelled["id"].tolist())
    assert again.from_cache == len(fetched)


def test_cancel_event_and_pre_cancelled_run(srv: SampleServer) -> None:
    srv.latency = 0.01
    cancel = threading.Event()

    def cancel_when_busy() -> None:  # mid-run, however slow the machine is today
        while len(srv.arrivals) < 5:
            time.sleep(0.002)
        cancel.set()

    timer = threading.Thread(target=cancel_when_busy)
    timer.start()
    ps = srv.client(**UNLIMITED).get_profiles(srv.org.user_ids[1:501], workers=2, cancel=cancel,
                                              progress=False)
    timer.join()
    assert ps.cancelled and 0 < ps.counts["ok"] < 500
    check_invariant(ps, 500)
    assert len(srv.arrivals) == ps.counts["ok"]

    srv.reset_arrivals()
    ps = srv.client().get_profiles(["a", "b"], cancel=cancel, progress=False)  # already set
    assert ps.cancelled and ps.counts["failed"] == 2 and srv.arrivals == []


def test_keyboard_interrupt_keeps_what_was_fetched(srv: SampleServer, tmp_path: Path) -> None:
    srv.latency = 0.01
    ids = list(srv.org.user_ids[1:301])
    client = srv.client(**UNLIMITED)

    def interrupt_when_busy() -> None:
        while len(srv.arrivals) < 20:
            time.sleep(0.002)
        _thread.interrupt_main()  # what Ctrl-C does

    thread = threading.Thread(target=interrupt_when_busy)
    thread.start()
    with pytest.warns(IncompleteFetchWarning, match="interrupted"):
        ps = client.get_profiles(ids, workers=4, cache=tmp_path / "c.sqlite", progress=False)
    thread.join()
    assert ps.cancelled
    check_invariant(ps, 300)
    assert ps.counts["ok"] >= 20
    assert len(srv.arrivals) == ps.counts["ok"]  # every answer that arrived was kept
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == ps.counts["ok"]


def test_a_second_ctrl_c_abandons_the_requests_in_flight(fresh_server: SampleServer) -> None:
    """The first Ctrl-C waits for the requests in flight; the second stops waiting. The
    server holds every request far longer than the test runs, so a run that waited for
    them would come back with their answers (and only after that delay)."""
    workers = 4
    fresh_server.latency = 10.0
    ids = list(fresh_server.org.user_ids[1:41])
    client = fresh_server.client(**UNLIMITED)
    first_seen = threading.Event()

    class FirstInterrupt(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("interrupted: waiting for the requests in flight"):
                first_seen.set()

    def collecting() -> bool:
        """Whether the main thread waits for results, not still handling the first Ctrl-C
        (one landing in that handler's log call is the next test's case)."""
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        return bool(names) and names[0] == "wait" and "_collect" in names

    def interrupt_twice() -> None:
        while len(fresh_server.arrivals) < workers or not collecting():  # every worker waits for an answer
            time.sleep(0.002)
        _thread.interrupt_main()
        assert first_seen.wait(5)
        while not collecting():
            time.sleep(0.002)
        _thread.interrupt_main()

    handler = FirstInterrupt()
    logging.getLogger("amptools").addHandler(handler)
    thread = threading.Thread(target=interrupt_twice)
    thread.start()
    try:
        with pytest.warns(IncompleteFetchWarning, match="interrupted"):
            ps = client.get_profiles(ids, workers=workers, progress=False)
    finally:
        thread.join()
        logging.getLogger("amptools").removeHandler(handler)
    assert first_seen.is_set() and ps.cancelled
    check_invariant(ps, 40)
    assert len(fresh_server.arrivals) == workers  # nothing more was asked after the first
    assert ps.counts["ok"] == 0  # the answers in flight were not waited for
    assert (ps.outcomes["status"] == "failed").all()


def test_a_second_ctrl_c_while_the_first_is_said_also_abandons_them(fresh_server: SampleServer) -> None:
    """A second Ctrl-C landing inside the first one's log line (a handler that is slow,
    or a person pressing twice at once) abandons the requests in flight like any second
    Ctrl-C: the run returns what it has, never a bare KeyboardInterrupt."""
    workers = 4
    fresh_server.latency = 10.0
    ids = list(fresh_server.org.user_ids[1:41])
    client = fresh_server.client(**UNLIMITED)

    class SecondInterruptWhileSaid(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("interrupted: waiting for the requests in flight"):
                raise KeyboardInterrupt  # what Ctrl-C raises wherever the main thread is

    def interrupt_once() -> None:
        while len(fresh_server.arrivals) < workers:
            time.sleep(0.002)
        _thread.interrupt_main()

    handler = SecondInterruptWhileSaid()
    logging.getLogger("amptools").addHandler(handler)
    thread = threading.Thread(target=interrupt_once)
    thread.start()
    try:
        with pytest.warns(IncompleteFetchWarning, match="interrupted"):
            ps = client.get_profiles(ids, workers=workers, progress=False)
    finally:
        thread.join()
        logging.getLogger("amptools").removeHandler(handler)
    assert ps.cancelled
    check_invariant(ps, 40)
    assert len(fresh_server.arrivals) == workers and ps.counts["ok"] == 0


# -- cache --------------------------------------------------------------------------------
def test_second_run_asks_nothing(srv: SampleServer, tmp_path: Path) -> None:
    ids = list(srv.org.user_ids[1:31]) + ["ghost"]
    query = ProfileQuery(recs=("testRecId",), amp_props=True)
    with pytest.warns(ExposureWarning):
        first = srv.client(**UNLIMITED).get_profiles(ids, query, cache=tmp_path / "c.sqlite",
                                                     progress=False)
    srv.reset_arrivals()
    with ProfileCache(tmp_path / "c.sqlite") as cache, warnings.catch_warnings():
        warnings.simplefilter("error")  # no exposure warning: nothing is fetched
        second = srv.client(**UNLIMITED).get_profiles(ids, query, cache=cache, progress=False)
        assert not cache.closed  # an open cache passed in stays open
    assert srv.arrivals == []
    assert second.counts == first.counts == {"ok": 30, "not_found": 1, "failed": 0}
    assert second.outcomes["from_cache"].all()
    assert second.profiles == first.profiles
    # A query the cached answers do not cover is asked (the unknown user is unknown whatever
    # was asked of it).
    srv.reset_arrivals()
    srv.client(**UNLIMITED).get_profiles(ids, cache=tmp_path / "c.sqlite", progress=False, cohort_ids=True)
    assert len(srv.arrivals) == len(ids) - 1


def test_max_age_refreshes(srv: SampleServer, tmp_path: Path) -> None:
    ids = list(srv.org.user_ids[1:11])
    client = srv.client(**UNLIMITED)
    client.get_profiles(ids[:5], cache=tmp_path / "c.sqlite", progress=False)
    time.sleep(0.3)
    client.get_profiles(ids[5:], cache=tmp_path / "c.sqlite", progress=False)
    srv.reset_arrivals()
    ps = client.get_profiles(ids, cache=tmp_path / "c.sqlite", max_age=0.2, progress=False)
    assert set(asked(srv.arrivals)) == set(ids[:5])  # only the older half
    assert ps.from_cache == 5
    srv.reset_arrivals()
    client.get_profiles(ids, cache=tmp_path / "c.sqlite", max_age=0, progress=False)
    assert len(srv.arrivals) == 10


def test_failed_ids_are_retried_next_run(srv: SampleServer, tmp_path: Path) -> None:
    ids = list(srv.org.user_ids[1:11])
    srv.faults = Faults(server_error=1.0)
    first = srv.client(**UNLIMITED, **FAST, max_retries=1).get_profiles(
        ids, cache=tmp_path / "c.sqlite", progress=False)
    assert first.counts["failed"] == 10
    assert set(first.failures["attempts"]) == {2}
    assert first.failures["http_status"].isin([500, 502, 503]).all()
    srv.faults = None
    srv.reset_arrivals()
    second = srv.client(**UNLIMITED).get_profiles(ids, cache=tmp_path / "c.sqlite", progress=False)
    assert second.counts["ok"] == 10
    assert asked(srv.arrivals) == Counter(ids)


def test_combining_sets(srv: SampleServer) -> None:
    client = srv.client(**UNLIMITED)
    users = list(srv.org.user_ids[1:7])
    a = client.get_profiles(users[:3], progress=False)
    b = client.get_profiles(users[2:5], progress=False)
    both = a + b
    assert both.ids == users[:5] and both.counts["ok"] == 5
    # A later run that failed where an earlier one succeeded does not replace it ...
    srv.faults = Faults(server_error=1.0, seed=3)
    broken = srv.client(**UNLIMITED, max_retries=0).get_profiles(users[1:4] + ["ghost"], progress=False)
    srv.faults = None
    assert broken.counts["failed"] == 4
    patched = a + broken
    assert [patched.outcome(u).status for u in users[:4]] == ["ok", "ok", "ok", "failed"]
    assert patched.outcome(users[1]).profile == a.outcome(users[1]).profile
    assert patched.outcome("ghost").status == "failed"  # an id only the later set holds
    # ... while a later success replaces an earlier failure (a retry run patches holes).
    again = broken + client.get_profiles(users[1:3], progress=False)
    assert [again.outcome(u).status for u in users[1:4]] == ["ok", "ok", "failed"]
    with pytest.raises(ValueError, match="same query"):
        a + client.get_profiles(users[:1], cohort_ids=True, progress=False)


def test_a_bulk_fetch_calls_its_done_callbacks_once(srv: SampleServer) -> None:
    seen: list[tuple[str, int]] = []
    job = start_fetch(srv.client(**UNLIMITED), srv.org.user_ids[1:30], workers=4)
    job.add_done_callback(lambda ended: seen.append(("early", ended.result().counts["ok"])))
    job.wait(60)
    job.add_done_callback(lambda ended: seen.append(("late", ended.result().counts["ok"])))
    job.add_done_callback(lambda ended: 1 / 0)  # logged, does not stop the others
    job.add_done_callback(lambda ended: seen.append(("after a broken one", ended.done())))
    assert seen == [("early", 29), ("late", 29), ("after a broken one", True)]


def test_an_acknowledged_exposure_is_not_warned_again(srv: SampleServer) -> None:
    client = srv.client(**UNLIMITED)
    client.acknowledge_exposure()  # a widget showed its own note
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.get_profiles(srv.org.user_ids[1:3], recs=("home-feed",), progress=False)
    with pytest.warns(ExposureWarning):
        srv.client(**UNLIMITED).get_profiles(srv.org.user_ids[1:3], recs=("home-feed",), progress=False)


# -- resume after SIGKILL -------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    from amptools.client import ProfileClient
    from amptools.bulk import fetch_profiles
    url, key, cache, n = sys.argv[1:5]
    ids = [line for line in sys.stdin.read().splitlines()]
    client = ProfileClient(key, base_url=url, rate_limit=100_000, rate_period=1.0)
    print("started", flush=True)
    fetch_profiles(client, ids, cache=cache, workers=int(n), progress=False)
    print("finished", flush=True)
""")


def test_resume_after_sigkill(tmp_path: Path) -> None:
    cache_path = tmp_path / "resume.sqlite"
    with SampleServer(rate_limit=100_000, window=1.0, latency=0.02) as srv:
        ids = list(srv.org.user_ids[1:121]) + ["ghost-a", "ghost-b"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, srv.url, srv.secret_key, str(cache_path), "2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )
        child.stdin.write("\n".join(ids))
        child.stdin.close()
        deadline = time.monotonic() + 30
        written = 0
        while written < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
            if cache_path.exists():
                try:
                    with sqlite3.connect(cache_path) as probe:
                        written = probe.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        assert 30 <= written < len(ids)
        time.sleep(0.1)  # let the killed child's last requests land before we look

        with ProfileCache(cache_path) as cache:
            done = cache.ids("user_id", ProfileQuery()) | cache.ids("user_id", ProfileQuery(),
                                                                      "not_found")
            assert len(cache) >= 30  # nothing it wrote was lost
        missing = [i for i in ids if i not in done]
        srv.reset_arrivals()
        ps = srv.client(rate_limit=100_000, rate_period=1.0).get_profiles(
            ids, cache=cache_path, progress=False)
        assert asked(srv.arrivals) == Counter(missing)  # only what was missing, once each
    assert ps.counts == {"ok": 120, "not_found": 2, "failed": 0}
    assert ps.from_cache == len(done)
    assert [p.user_id for p in ps.profiles] == ids[:120]


# -- cache robustness: write failures, split queries, scopes -----------------------------------
def test_a_cache_write_failure_loses_nothing(srv: SampleServer, tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    ids = list(srv.org.user_ids[1:31])
    with ProfileCache(path, timeout=0.2) as cache:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        try:
            with pytest.warns(CacheWarning) as caught:
                ps = srv.client(**UNLIMITED).get_profiles(ids, cache=cache, workers=4,
                                                          progress=False)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
        assert len(messages) == 1  # once, not once per id
        assert str(path) in messages[0] and "database is locked" in messages[0]
        assert "kept in memory" in messages[0]
        assert ps.counts == {"ok": 30, "not_found": 0, "failed": 0}
        assert [p.user_id for p in ps.profiles] == ids
        assert isinstance(ps.cache_error, sqlite3.OperationalError)
        assert "not all kept in the cache" in repr(ps)
        assert len(srv.arrivals) == 30
        # Once the lock is gone the cache works again; nothing half-written is served.
        srv.reset_arrivals()
        again = srv.client(**UNLIMITED).get_profiles(ids, cache=cache, progress=False)
    assert again.ok == 30 and again.cache_error is None
    assert again.from_cache == 0 and len(srv.arrivals) == 30 - again.from_cache


def _recs_asked(arrivals: list[Any]) -> Counter[str]:
    return Counter(a.params["user_id"] for a in arrivals if a.params.get("get_recs") == "true")


def test_split_queries_never_fetch_recommendations_twice(srv: SampleServer,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    query = ProfileQuery(recs=("home-feed",), amp_props=True, computations=True, split_computations=True)
    ids = list(srv.org.user_ids[:40])
    srv.faults = Faults(server_error=0.5, seed=7)
    client = srv.client(**UNLIMITED, max_retries=0)
    with pytest.warns(ExposureWarning):
        first = client.get_profiles(ids, query, cache=path, progress=False)
    served = Counter(a.params["user_id"] for a in srv.arrivals
                     if a.status == 200 and a.params.get("get_recs") == "true")
    assert first.failed > 0 and served  # the scenario: some halves succeeded, some not
    recs_first = _recs_asked(srv.arrivals)
    srv.faults = None
    srv.reset_arrivals()
    second = client.get_profiles(ids, query, cache=path, progress=False)
    assert second.counts == {"ok": 40, "not_found": 0, "failed": 0}
    recs_second = _recs_asked(srv.arrivals)
    assert not set(recs_second) & set(served)  # no user's recommendations served twice
    total = recs_first + recs_second
    assert all(total[u] - (recs_first[u] - served[u]) == 1 for u in ids)  # one 200 each
    # Only the missing parts were asked: the users whose recommendations came back but
    # whose computations failed get one request each, for computations only.
    partial = [u for u in served if first.outcome(u).status == "failed"]
    assert partial
    for user in partial:
        asked_now = [a.params for a in srv.arrivals if a.params["user_id"] == user]
        assert asked_now == [{"user_id": user, "get_computations": "true"}]
    srv.reset_arrivals()
    third = client.get_profiles(ids, query, cache=path, progress=False)
    assert third.from_cache == 40 and srv.arrivals == []
    assert second.profiles == third.profiles


def test_cancel_between_parts_keeps_the_first(srv: SampleServer, tmp_path: Path) -> None:
    query = ProfileQuery(recs=("home-feed",), amp_props=True, computations=True, split_computations=True)
    user = srv.org.user_ids[3]
    client = srv.client(**UNLIMITED)
    cancel = threading.Event()
    original = client.request

    def request(params: Any, *, cancel: Any = None) -> Any:
        answer = original(params, cancel=cancel)
        if params.get("get_recs") == "true":
            outer.set()  # cancelled right after the recommendations came back ...
            time.sleep(0.3)  # ... and noticed by the run before the next request
        return answer

    outer = cancel
    client.request = request  # type: ignore[method-assign]
    with pytest.warns(ExposureWarning):
        ps = client.get_profiles([user], query, cache=tmp_path / "c.sqlite", cancel=cancel,
                                 progress=False)
    assert ps.cancelled and ps.failed == 1
    assert _recs_asked(srv.arrivals) == Counter({user: 1})
    srv.reset_arrivals()
    again = srv.client(**UNLIMITED).get_profiles([user], query, cache=tmp_path / "c.sqlite",
                                                 progress=False)
    assert again.ok == 1 and _recs_asked(srv.arrivals) == Counter()
    assert [a.params for a in srv.arrivals] == [{"user_id": user, "get_computations": "true"}]


def test_an_unreadable_answer_is_kept_and_recommendations_not_refetched(
        srv: SampleServer, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    users = list(srv.org.user_ids[1:4])
    bad_user = users[0]
    client = srv.client(**UNLIMITED)
    original = client.request

    def corrupt(params: Any, *, cancel: Any = None) -> Any:
        payload, attempts = original(params, cancel=cancel)
        if params.get("user_id") == bad_user:
            payload = {**payload, "userData": {**payload["userData"], "recommendations": "?!"}}
        return payload, attempts

    client.request = corrupt  # type: ignore[method-assign]
    recs = ProfileQuery(recs=("home-feed",))
    with pytest.warns(ExposureWarning):
        first = client.get_profiles(users, recs, cache=path, progress=False)
    assert first.ok == 2 and first.outcome(bad_user).status == "failed"
    assert "recommendations" in first.outcome(bad_user).error
    with ProfileCache(path) as cache:  # what the service sent is kept, with its error
        stored = cache.stored("user_id", [bad_user], recs, scope=cache.scopes()[0])[bad_user]
        (hit,) = stored.parts.values()
        assert hit.payload["userData"]["recommendations"] == "?!" and hit.error
        assert cache.ids("user_id", recs, "failed") == {bad_user}
    srv.reset_arrivals()
    second = srv.client(**UNLIMITED).get_profiles(users, recs, cache=path, progress=False)
    assert srv.arrivals == []  # not asked again: it would log another exposure
    bad = second.outcome(bad_user)
    assert bad.status == "failed" and bad.from_cache and "not fetched again" in bad.error
    # Without recommendations there is no side effect: such a part is fetched again,
    # and the unreadable body it replaces is kept in the rejected table.
    props = ProfileQuery(amp_props=True)
    client.get_profiles([bad_user], props, cache=path, progress=False)
    with ProfileCache(path) as cache:
        cache._conn.execute("UPDATE responses SET error = 'unreadable', "
                            "payload = '{\"userData\": 3}' WHERE part = ?", (props.canonical(),))
    srv.reset_arrivals()
    third = srv.client(**UNLIMITED).get_profiles([bad_user], props, cache=path, progress=False)
    assert third.ok == 1 and len(srv.arrivals) == 1
    with ProfileCache(path) as cache:
        assert cache._conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == 1


def test_two_projects_share_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with SampleServer(seed=1) as a:
        ids = list(dict.fromkeys(["testUser", *a.org.user_ids[:9]]))
        ps_a = a.client(**UNLIMITED).get_profiles(ids, amp_props=True, cache=path,
                                                  progress=False)
    with SampleServer(seed=2, secret_key="another-project") as b:
        ps_b = b.client(**UNLIMITED).get_profiles(ids, amp_props=True, cache=path,
                                                  progress=False)
        assert asked(b.arrivals) == Counter(ids)  # the other project's answers are not served
        assert ps_b.from_cache == 0
        b.reset_arrivals()
        again_b = b.client(**UNLIMITED).get_profiles(ids, amp_props=True, cache=path,
                                                     progress=False)
        assert b.arrivals == [] and again_b.profiles == ps_b.profiles
    # The first project's entries are still there, still its own: the same sample org
    # started again (a new port, the same org key) is served from them.
    with SampleServer(seed=1) as a2:
        again_a = a2.client(**UNLIMITED).get_profiles(ids, amp_props=True, cache=path,
                                                      progress=False)
        assert a2.arrivals == [] and again_a.profiles == ps_a.profiles
    with SampleServer(seed=1, secret_key="a-third-project") as a3:  # another key: another scope
        a3.client(**UNLIMITED).get_profiles(ids, amp_props=True, cache=path, progress=False)
        assert len(a3.arrivals) == len(ids)
    with ProfileCache(path) as cache:
        assert len(cache.scopes()) == 3
        assert len(cache) == 3 * len(ids)
    assert ps_a.ok == len(ids)
