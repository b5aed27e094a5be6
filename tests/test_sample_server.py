"""The embedded Profile API over real HTTP: answers, errors, throttling, faults."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from conftest import DOCUMENTED_QUERIES
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amptools.sample import Faults, SampleServer
from amptools.sample import server as server_module
from amptools.sample.server import ENDPOINT, THROTTLE_BODY, parse_params

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "data" / "samples"
DOCUMENTED = DOCUMENTED_QUERIES
THROTTLE_JSON = {
    "error": "Number of requests per minute exceeds system limit. "
    "Contact Support if you need this limit raised"
}


@pytest.fixture(scope="module")
def server() -> Iterator[SampleServer]:
    with SampleServer(rate_limit=100_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def session(server: SampleServer) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {server.secret_key}"
        yield http


def _get(srv: SampleServer, http: requests.Session | None = None, **params: str) -> requests.Response:
    if http is None:
        return requests.get(
            srv.url + ENDPOINT, params=params, timeout=5,
            headers={"Authorization": f"Api-Key {srv.secret_key}"},
        )
    return http.get(srv.url + ENDPOINT, params=params, timeout=5)


def _raw_request(srv: SampleServer, query: str) -> socket.socket:
    host, port = urlsplit(srv.url).hostname, urlsplit(srv.url).port
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(
        f"GET {ENDPOINT}?{query} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Api-Key {srv.secret_key}\r\n\r\n".encode()
    )
    return sock


# --------------------------------------------------------------- answers
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_queries(server: SampleServer, session: requests.Session, name: str) -> None:
    expected = json.loads((SAMPLE_DIR / f"{name}.json").read_text(encoding="utf-8"))
    response = _get(server, session, user_id="testUser", **DOCUMENTED[name])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == expected
    assert list(response.json()["userData"]) == list(expected["userData"])


def test_query_by_device_id_and_synthetic_user(server: SampleServer, session: requests.Session) -> None:
    by_device = _get(server, session, device_id="ffff-ffff-ffff-ffff", get_cohort_ids="true")
    assert by_device.json()["userData"]["user_id"] == "testUser"
    user_id = server.org.user_ids[42]
    data = _get(server, session, user_id=user_id, get_amp_props="true").json()
    assert data == server.org.payload(42, {"get_amp_props": "true"})


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({}, "Missing Api-Key in Authorization header"),
        ({"Authorization": "Bearer abc"}, "Missing Api-Key in Authorization header"),
        ({"Authorization": "Api-Key "}, "Missing Api-Key in Authorization header"),
        ({"Authorization": "Api-Key wrong-key"}, "Invalid Api-Key"),
    ],
)
def test_unauthorized(server: SampleServer, headers: dict[str, str], text: str) -> None:
    response = requests.get(server.url + ENDPOINT, params={"user_id": "testUser"},
                            headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.text == text


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/users"), ("GET", "/"),
                                              ("POST", ENDPOINT), ("GET", ENDPOINT + "/x")])
def test_not_found(server: SampleServer, method: str, path: str) -> None:
    response = requests.request(method, server.url + path, timeout=5,
                                headers={"Authorization": f"Api-Key {server.secret_key}"})
    assert response.status_code == 404
    assert response.content == b""


@pytest.mark.parametrize(
    "params",
    [{"user_id": "nobody"}, {"device_id": "0000"},
     {"user_id": "testUser", "device_id": "not-the-same-user"}],
)
def test_unknown_user(server: SampleServer, session: requests.Session, params: dict[str, str]) -> None:
    response = _get(server, session, **params)
    assert response.status_code == 400
    assert response.json() == {"error": "User id and device id not seen before"}


@pytest.mark.parametrize("params", [{}, {"user_id": ""}, {"get_recs": "true"}])
def test_missing_ids(server: SampleServer, session: requests.Session, params: dict[str, str]) -> None:
    response = _get(server, session, **params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_bad_rec_type_is_an_error_json(server: SampleServer, session: requests.Session) -> None:
    response = _get(server, session, user_id="testUser", get_recs="true", rec_id="testRecId",
                    rec_type="nonsense")
    assert response.status_code == 400
    assert "rec_type" in response.json()["error"]


def test_throttling_over_a_short_window() -> None:
    with SampleServer(rate_limit=5, window=0.5) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {srv.secret_key}"
        statuses = [_get(srv, http, user_id="testUser").status_code for _ in range(5)]
        throttled = _get(srv, http, user_id="testUser")
        assert statuses == [200] * 5
        assert throttled.status_code == 429
        assert throttled.json() == THROTTLE_JSON
        assert throttled.text == THROTTLE_BODY
        assert int(throttled.headers["Retry-After"]) >= 1
        time.sleep(0.55)
        assert _get(srv, http, user_id="testUser").status_code == 200
        assert [a.status for a in srv.arrivals] == [200] * 5 + [429, 200]


@pytest.mark.parametrize("count_throttled", [False, True])
def test_a_strict_limiter_counts_refused_requests(count_throttled: bool) -> None:
    """Two limiters a real org may have: only admitted requests count, or every one."""
    window = server_module._SlidingWindow(3, 60.0, count_refused=count_throttled)
    assert [window.admit(t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert window.admit(3.0) == pytest.approx(57.0)  # refused: the first expires at 60
    # A strict limiter counted the refused one at 3: two must leave before the next is admitted.
    assert window.admit(30.0) == pytest.approx(31.0 if count_throttled else 30.0)
    # At 60.5 the first admitted request has left the window; a strict limiter still counts
    # the two refused ones (at 3 and 30), so it admits again only once they leave too.
    assert (window.admit(60.5) is None) is (not count_throttled)
    if count_throttled:
        assert window.admit(61.5) == pytest.approx(1.5)  # admitted at 63: 2, 3 and 30 left by then
        assert window.admit(90.5) is None


def test_the_server_passes_the_switches_on(session: requests.Session) -> None:
    with SampleServer(count_throttled=True, clash=True) as server:
        assert server._limiter.count_refused and server.org.clash


def test_changes_happen_after_so_many_answered_requests(session: requests.Session) -> None:
    change = server_module.Change(after=2, add_computation="new_score", remove_computation="orders_90d")
    with SampleServer(changes=[change]) as server:
        headers = {"Authorization": f"Api-Key {server.secret_key}"}
        seen = []
        for i in range(1, 5):
            answer = session.get(server.url + ENDPOINT, headers=headers, timeout=10,
                                 params={"user_id": server.org.user_ids[i], "get_computations": "true"})
            seen.append(set(answer.json()["userData"]["amp_props"]))
    assert ["new_score" in keys for keys in seen] == [False, False, True, True]
    assert ["orders_90d" in keys for keys in seen] == [True, True, False, False]


def test_arrivals_log_everything_but_the_key() -> None:
    with SampleServer() as srv:
        _get(srv, user_id="testUser", get_cohort_ids="true")
        requests.get(srv.url + ENDPOINT, params={"user_id": "x"}, timeout=5)
        requests.get(srv.url + ENDPOINT, params={"user_id": "x"}, timeout=5,
                     headers={"Authorization": "Api-Key nope"})
        requests.get(srv.url + "/elsewhere", timeout=5)
        arrivals = srv.arrivals
        assert [(a.method, a.path, a.status) for a in arrivals] == [
            ("GET", ENDPOINT, 200), ("GET", ENDPOINT, 401), ("GET", ENDPOINT, 401),
            ("GET", "/elsewhere", 404),
        ]
        assert arrivals[0].params == {"user_id": "testUser", "get_cohort_ids": "true"}
        assert arrivals[0].fault is None
        assert arrivals[0].time <= arrivals[-1].time <= time.monotonic()
        assert srv.secret_key not in repr(arrivals)
        assert srv.secret_key not in repr(srv) and srv.secret_key not in repr(srv.faults)
        srv.reset_arrivals()
        assert srv.arrivals == []


def test_default_key_names_the_org_and_a_given_key_wins() -> None:
    with SampleServer(secret_key="local-sample-key") as fixed:
        assert fixed.secret_key == "local-sample-key"
        assert _get(fixed, user_id="testUser").status_code == 200
    # The same org keeps its key across sessions (so caches are reused); another org differs.
    assert SampleServer().secret_key == SampleServer().secret_key
    assert SampleServer(seed=7).secret_key != SampleServer().secret_key
    assert SampleServer(n_users=10).secret_key != SampleServer().secret_key


def test_concurrent_requests(server: SampleServer) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def fetch(index: int) -> None:
        status = _get(server, user_id=server.org.user_ids[index], get_recs="true",
                      rec_id="home-feed").status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(1, 65)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 64


def test_stop_is_prompt_with_stalled_and_idle_connections() -> None:
    srv = SampleServer(faults=Faults(stall=1.0, stall_seconds=30.0)).start()
    port = urlsplit(srv.url).port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    outcome: list[str] = []

    def stalled() -> None:
        try:
            _get(srv, user_id="testUser")
            outcome.append("answered")
        except requests.RequestException as error:
            outcome.append(type(error).__name__)

    thread = threading.Thread(target=stalled)
    thread.start()
    deadline = time.monotonic() + 5
    while not srv.arrivals and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    srv.stop()
    thread.join(timeout=5)
    assert time.monotonic() - start < 2.0
    assert outcome and outcome[0] != "answered"
    with idle:
        assert idle.recv(1) == b""  # the idle keep-alive connection was closed too
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# ----------------------------------------------------------------- faults
def _outcome(srv: SampleServer, http: requests.Session, user_id: str) -> str:
    try:
        response = http.get(srv.url + ENDPOINT, params={"user_id": user_id}, timeout=2)
        if response.status_code == 200:
            response.json()
    except requests.ConnectionError:
        return "connection"
    except requests.RequestException:
        return "broken"
    except ValueError:
        return "bad-body"
    return str(response.status_code)


@pytest.mark.parametrize(
    ("kind", "seen"),
    [("server_error", {"500", "502", "503"}), ("throttle", {"429"}),
     ("reset", {"connection"}), ("truncate", {"broken", "connection", "bad-body"})],
)
def test_fault_happens_at_its_rate_and_reproducibly(kind: str, seen: set[str]) -> None:
    faults = Faults(seed=11, **{kind: 0.3})
    with SampleServer(faults=faults, rate_limit=100_000) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {srv.secret_key}"
        ids = list(srv.org.user_ids[1:151])
        first = [_outcome(srv, http, uid) for uid in ids]
        injected = [a.fault for a in srv.arrivals]
        srv.faults = Faults(seed=11, **{kind: 0.3})  # resets the attempt counters
        again = [_outcome(srv, http, uid) for uid in ids]
        srv.faults = Faults(seed=12, **{kind: 0.3})
        other = [_outcome(srv, http, uid) for uid in ids]
    assert first == again
    assert first != other
    assert 0.15 <= injected.count(kind) / len(ids) <= 0.45
    assert set(injected) == {None, kind}
    for outcome, fault in zip(first, injected, strict=True):
        assert (outcome in seen) if fault == kind else outcome == "200"
    # The draw is a pure function, so it matches the server's decisions.
    assert [faults.draw(uid, "", 0)[0] for uid in ids] == injected


def test_retry_of_the_same_id_gets_a_fresh_draw() -> None:
    with SampleServer(faults=Faults(server_error=0.5, seed=3)) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {srv.secret_key}"
        outcomes = [_outcome(srv, http, "testUser") for _ in range(30)]
    assert "200" in outcomes and {"500", "502", "503"} & set(outcomes)


def test_server_errors_are_mostly_500() -> None:
    faults = Faults(server_error=1.0, seed=5)
    with SampleServer(faults=faults) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {srv.secret_key}"
        counts = Counter(_outcome(srv, http, uid) for uid in srv.org.user_ids[1:101])
    assert counts["500"] > counts["502"] + counts["503"] > 0


def test_reset_really_resets() -> None:
    with SampleServer(faults=Faults(reset=1.0)) as srv:
        sock = _raw_request(srv, "user_id=testUser")
        with sock, pytest.raises(ConnectionResetError):
            while sock.recv(4096):
                pass
        with pytest.raises(requests.ConnectionError):
            _get(srv, user_id="testUser")
        assert [a.fault for a in srv.arrivals] == ["reset", "reset"]
        assert srv.arrivals[0].status is None


def test_truncate_really_truncates() -> None:
    with SampleServer(faults=Faults(truncate=1.0)) as srv:
        sock = _raw_request(srv, "user_id=testUser&get_cohort_ids=true")
        received = b""
        with sock:
            while chunk := sock.recv(4096):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        assert 0 < len(body) < length
        assert srv.arrivals[0].fault == "truncate"
        with pytest.raises(requests.RequestException):
            _get(srv, user_id="testUser", get_cohort_ids="true").json()


def test_stall_outlasts_a_read_timeout() -> None:
    with SampleServer(faults=Faults(stall=1.0, stall_seconds=1.0)) as srv:
        with pytest.raises(requests.ReadTimeout):
            requests.get(srv.url + ENDPOINT, params={"user_id": "testUser"}, timeout=0.2,
                         headers={"Authorization": f"Api-Key {srv.secret_key}"})
        assert srv.arrivals[0].fault == "stall"
        start = time.monotonic()
        assert _get(srv, user_id="user-000001").status_code == 200
        assert time.monotonic() - start >= 0.9


def test_stall_rate_and_latency() -> None:
    faults = Faults(stall=0.25, stall_seconds=0.05, latency=0.01, seed=2)
    with SampleServer(faults=faults, latency=0.01) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Api-Key {srv.secret_key}"
        durations = []
        for uid in srv.org.user_ids[1:61]:
            start = time.monotonic()
            assert _outcome(srv, http, uid) == "200"
            durations.append(time.monotonic() - start)
        stalled = [a.fault == "stall" for a in srv.arrivals]
    assert 0.08 <= sum(stalled) / len(stalled) <= 0.45
    assert min(durations) >= 0.02
    assert all(d >= 0.07 for d, s in zip(durations, stalled, strict=True) if s)


def test_faults_validate_rates() -> None:
    with pytest.raises(ValueError):
        Faults(server_error=0.7, reset=0.5)
    with pytest.raises(ValueError):
        Faults(throttle=-0.1)


# ------------------------------------------------------------------ encoding
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
    | st.sampled_from(["a b", "a&b=c", "a+b", "a/b", "100%", "#frag", "😀 🍪", "%2B", "+", " "]),
    device_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
)
def test_unicode_ids_arrive_intact(
    server: SampleServer, session: requests.Session, user_id: str, device_id: str
) -> None:
    server.reset_arrivals()
    response = _get(server, session, user_id=user_id, device_id=device_id)
    assert response.status_code == 400
    (arrival,) = server.arrivals
    assert arrival.params["user_id"] == user_id
    assert arrival.params["device_id"] == device_id


def test_hostile_sample_user_ids_round_trip(server: SampleServer, session: requests.Session) -> None:
    hostile = [uid for uid in server.org.user_ids[:600] if not uid.isascii() or " " in uid]
    assert hostile
    for uid in hostile:
        data = _get(server, session, user_id=uid).json()
        assert data["userData"]["user_id"] == uid


def test_parse_params_semantics() -> None:
    query = urlencode({"user_id": "a+b c&d", "rec_id": "x,y", "blank": ""})
    assert parse_params(query) == {"user_id": "a+b c&d", "rec_id": "x,y", "blank": ""}
    assert parse_params("rec_id=a&rec_id=b&user_id=1&user_id=2") == {"rec_id": "a,b", "user_id": "2"}
    assert parse_params("user_id=a+b%2Bc%20d") == {"user_id": "a b+c d"}


# ------------------------------------------------------------------- client
def test_client_factory(server: SampleServer) -> None:
    from amptools.client import ProfileClient

    client = server.client()
    assert isinstance(client, ProfileClient)
    assert client.get_profile("testUser").user_id == "testUser"
    assert server.secret_key not in repr(client)


def test_serve_prints_url_and_stops_on_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.time, "sleep", interrupt)
    server_module.serve(0, secret_key="printed-sample-key")
    out = capsys.readouterr().out
    assert "http://127.0.0.1:" in out and ENDPOINT in out
    assert "sample org's local key" in out and "printed-sample-key" in out
