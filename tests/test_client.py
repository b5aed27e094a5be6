"""ProfileClient against the real sample server, and its plain policy functions."""

from __future__ import annotations

import os

import http.client
import http.server
import logging
import pickle
import threading
import traceback
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import amptools as amp
from amptools.client import map_response, retry_delay, should_retry
from amptools.sample import Faults, SampleServer
from conftest import DOCUMENTED_QUERIES, load_sample

THROTTLE_BODY = ('{"error":"Number of requests per minute exceeds system limit. '
                 'Contact Support if you need this limit raised"}')


def fast_client(server, **kwargs):
    """A client that retries quickly, for tests that count retries."""
    options = {"backoff_base": 0.01, "backoff_cap": 0.05, "timeout": 2.0}
    options.update(kwargs)
    return server.client(**options)


# -- the six documented queries ------------------------------------------------------
DOCUMENTED = {
    "one_rec": {"recs": ("testRecId",)},
    "two_recs": {"recs": ("testRecId", "testRecId2")},
    "user_properties": {"amp_props": True},
    "cohort_ids": {"cohort_ids": True},
    "one_computation": {"computations": ("computed-prop-2",)},
    "all_computations": {"computations": True},
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_queries_come_back_as_documented(sample_server, name):
    client = sample_server.client()
    query = amp.ProfileQuery(**DOCUMENTED[name])
    assert query.to_params() == DOCUMENTED_QUERIES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", amp.ExposureWarning)
        profile = client.get_profile("testUser", query=query)
    expected = load_sample(name)
    assert profile.raw == expected
    assert profile == amp.UserProfile.from_json(expected, query)


def test_documented_profiles_hold_the_documented_values(sample_server):
    client = sample_server.client()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", amp.ExposureWarning)
        two = client.get_profile("testUser", recs=("testRecId", "testRecId2"))
    assert [r.rec_id for r in two.recommendations] == ["testRecId", "testRecId2"]
    assert two.recommendations[1].items[:2] == ("bulgogi", "bibimbap")
    assert two.recommendations[1].recommendation_source == "model2"
    comps = client.get_profile("testUser", computations=True)
    assert comps.computations == {"computed-prop-1": "5000000.0", "computed-prop-2": "3"}
    assert comps.amp_props is None
    props = client.get_profile(device_id="ffff-ffff-ffff-ffff", amp_props=True)
    assert props.amp_props["number_property"] == 12 and props.computations is None
    cohorts = client.get_profile("testUser", cohort_ids=True)
    assert cohorts.cohort_ids == ("cohort1", "cohort3", "cohort7")


def test_properties_and_all_computations_stay_apart_in_one_request_once_names_are_known():
    from amptools.sample import SampleServer

    # An org of its own: this process has not learned its computation names yet.
    with SampleServer(secret_key="names-" + os.urandom(6).hex()) as server:
        client = server.client()
        first = client.get_profile("testUser", amp_props=True, computations=True)
        assert len(server.arrivals) == 2  # the two-request way, which teaches the names
        second = client.get_profile("testUser", amp_props=True, computations=True)
        assert len(server.arrivals) == 3  # then one request
        assert server.arrivals[-1].params.get("get_computations") == "true"
    for profile in (first, second):
        assert profile.computations == {"computed-prop-1": "5000000.0", "computed-prop-2": "3"}
        assert "computed-prop-1" not in profile.amp_props and profile.amp_props["library"] == "http/1.0"


def test_recommendations_warn_once_about_exposure(fresh_server):
    client = fresh_server.client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.get_profile("testUser", recs="testRecId")
        client.get_profile("testUser", recs="testRecId")
        client.get_profile("testUser", amp_props=True)
    exposure = [w for w in caught if issubclass(w.category, amp.ExposureWarning)]
    assert len(exposure) == 1 and "exposure" in str(exposure[0].message)
    assert exposure[0].filename == __file__  # points at the caller's line, not amptools' own


# -- errors: every row of PROFILE_API.md's table ----------------------------------------
def test_wrong_key_is_authentication_error_and_not_retried(fresh_server):
    client = amp.ProfileClient("wrong-key", base_url=fresh_server.url, backoff_base=0.01)
    with pytest.raises(amp.AuthenticationError, match="Invalid Api-Key") as info:
        client.get_profile("testUser")
    assert info.value.status == 401 and info.value.body == "Invalid Api-Key"
    assert len(fresh_server.arrivals) == 1


def test_missing_header_is_its_own_authentication_message():
    error = map_response(401, "Missing Api-Key in Authorization header", {}, "u")
    assert isinstance(error, amp.AuthenticationError) and "no valid 'Authorization" in str(error)


def test_unknown_user_is_not_retried(fresh_server):
    client = fast_client(fresh_server)
    with pytest.raises(amp.UnknownUserError, match="not seen before") as info:
        client.get_profile("nobody-at-all")
    assert info.value.attempts == 1 and len(fresh_server.arrivals) == 1


def test_no_id_is_refused_before_the_network(fresh_server):
    client = fresh_server.client()
    with pytest.raises(amp.InvalidQueryError, match="user_id or a device_id"):
        client.get_profile()
    with pytest.raises(amp.InvalidQueryError, match="blank"):
        client.get_profile("   ")
    assert fresh_server.arrivals == []


def test_wrong_path_is_not_found(fresh_server):
    client = amp.ProfileClient(fresh_server.secret_key, base_url=fresh_server.url + "/v2")
    with pytest.raises(amp.NotFoundError, match="base URL or path is wrong") as info:
        client.get_profile("testUser")
    assert info.value.status == 404 and len(fresh_server.arrivals) == 1


def test_server_errors_are_retried_then_given_up(fresh_server):
    fresh_server.faults = Faults(server_error=1.0, seed=1)
    client = fast_client(fresh_server, max_retries=3)
    with pytest.raises(amp.ServerError) as info:
        client.get_profile("testUser")
    assert info.value.attempts == 4 and len(fresh_server.arrivals) == 4
    assert info.value.status >= 500


def test_transient_server_errors_are_survived(fresh_server):
    fresh_server.faults = Faults(server_error=0.5, seed=3)
    client = fast_client(fresh_server, max_retries=10)
    for user in fresh_server.org.user_ids[:20]:
        assert client.get_profile(user, cohort_ids=True).user_id == user
    assert len(fresh_server.arrivals) > 20  # some were retried


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_resets_and_cut_bodies_are_transport_errors(fresh_server, fault):
    fresh_server.faults = Faults(**{fault: 1.0}, seed=2)
    client = fast_client(fresh_server, max_retries=2)
    with pytest.raises(amp.TransportError):
        client.get_profile("testUser")
    assert len(fresh_server.arrivals) == 3


def test_stalls_hit_the_read_timeout_and_are_retried():
    with SampleServer(faults=Faults(stall=1.0, stall_seconds=1.0, seed=4)) as server:
        client = fast_client(server, timeout=(1.0, 0.2), max_retries=1)
        with pytest.raises(amp.TransportError, match="timed out"):
            client.get_profile("testUser")
        assert len(server.arrivals) == 2


def test_throttling_pauses_and_honours_retry_after():
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        threading.Event().wait(seconds)

    with SampleServer(rate_limit=2, window=0.6) as server:
        client = server.client(sleep=sleep, retry_after_cap=0.3, backoff_base=0.01, max_retries=8)
        for _ in range(3):
            client.get_profile("testUser", cohort_ids=True)
        statuses = [a.status for a in server.arrivals]
    assert statuses.count(429) >= 1 and statuses.count(200) == 3
    assert 0.3 in sleeps  # Retry-After (whole seconds) capped by retry_after_cap


def test_throttle_body_is_recognised_whatever_the_status():
    error = map_response(200, THROTTLE_BODY, {"Retry-After": "7"}, "u")
    assert isinstance(error, amp.ThrottledError) and error.retry_after == 7.0
    assert isinstance(map_response(400, THROTTLE_BODY, {}, "u"), amp.ThrottledError)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, "not json", amp.ResponseFormatError),
        (200, "[1, 2]", amp.ResponseFormatError),
        (301, "<html>moved</html>", amp.RedirectError),
        (503, "", amp.ServerError),
        (400, '{"error":"User id and device id not seen before"}', amp.UnknownUserError),
        (200, '{"error":"User id and device id not seen before"}', amp.UnknownUserError),
        (400, '{"error":"something new"}', amp.ProfileAPIError),
        (404, "", amp.NotFoundError),
    ],
)
def test_status_mapping(status, body, kind):
    error = map_response(status, body, {"Location": "https://elsewhere.example/x"}, "u")
    assert type(error) is kind


def test_retry_policy_is_plain_functions():
    assert should_retry(amp.ServerError("x"), 1, 3) and not should_retry(amp.ServerError("x"), 4, 3)
    for leaf in (amp.AuthenticationError, amp.NotFoundError, amp.UnknownUserError, amp.InvalidQueryError):
        assert not should_retry(leaf("x"), 1, 3)
    no_jitter = {"jitter": lambda d: d}
    assert [retry_delay(a, base=0.5, cap=3, **no_jitter) for a in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]
    assert retry_delay(1, retry_after=120, retry_after_cap=60) == 60
    assert retry_delay(1, retry_after=2) == 2
    assert 0.25 <= retry_delay(1, base=0.5) <= 0.5  # default jitter: half fixed, half random


# -- safety -------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://profile-api.amplitude.com", "ftp://x", "https://k:s@h.com"])
def test_unsafe_base_urls_are_refused(url):
    with pytest.raises(amp.ConfigurationError):
        amp.ProfileClient("k", base_url=url)


def test_redirects_are_never_followed():
    hits = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Elsewhere)
    target = f"http://127.0.0.1:{other.server_port}/v1/userprofile"

    class Redirector(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(301)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = http.server.HTTPServer(("127.0.0.1", 0), Redirector)
    for srv in (other, redirector):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = amp.ProfileClient("canary-redirect-key", base_url=f"http://127.0.0.1:{redirector.server_port}")
        with pytest.raises(amp.RedirectError, match="never follows redirects"):
            client.get_profile("testUser")
        assert hits == []
    finally:
        for srv in (other, redirector):
            srv.shutdown()
            srv.server_close()


def test_from_env_without_key_names_the_sample_org(monkeypatch):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    with pytest.raises(amp.ConfigurationError, match="sample org"):
        amp.ProfileClient.from_env()


def test_from_env_reads_the_key(monkeypatch, fresh_server):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", fresh_server.secret_key)
    monkeypatch.setenv("AMPLITUDE_PROFILE_API_URL", fresh_server.url)
    assert amp.ProfileClient.from_env().get_profile("testUser").user_id == "testUser"


CANARY = "CANARY-sk-7f3a9c1e55d04b2b"


def with_locals(error: BaseException) -> str:
    """The traceback as verbose tools show it: every frame's locals included."""
    exception = traceback.TracebackException.from_exception(error, capture_locals=True)
    return "".join(exception.format())


def test_the_key_never_shows_even_with_debug_logging(capfd, caplog):
    seen: list[str] = []
    old_level = http.client.HTTPConnection.debuglevel
    http.client.HTTPConnection.debuglevel = 1  # what people do to debug requests
    caplog.set_level(logging.DEBUG)
    try:
        with SampleServer(secret_key=CANARY) as server:
            client = server.client(backoff_base=0.01, max_retries=1, retry_after_cap=0.05)
            wrong = amp.ProfileClient(CANARY + "x", base_url=server.url)
            seen.append(repr(client))
            seen.append(str(client.get_profile("testUser", amp_props=True)))
            failing = [
                (Faults(throttle=1.0), lambda: client.get_profile("testUser", cohort_ids=True)),
                (Faults(server_error=1.0), lambda: client.get_profile("testUser")),
                (Faults(reset=1.0), lambda: client.get_profile("testUser")),
                (None, lambda: client.get_profile("who?")),
                (None, lambda: wrong.get_profile("testUser")),
            ]
            for faults, call in failing:
                server.faults = faults
                with pytest.raises(amp.ProfileAPIError) as info:
                    call()
                error = info.value
                seen += [str(error), repr(error), repr(vars(error)), with_locals(error)]
            seen.append(repr(server.arrivals))
        with pytest.raises(TypeError):
            pickle.dumps(client)
        for bad_setting in ({"base_url": "http://example.com"}, {"timeout": -1}):
            with pytest.raises(amp.ConfigurationError) as info:
                amp.ProfileClient(CANARY, **bad_setting)
            seen.append(with_locals(info.value))
    finally:
        http.client.HTTPConnection.debuglevel = old_level
    out, err = capfd.readouterr()
    seen += [out, err, caplog.text]
    assert caplog.text  # debug logging really was on
    assert all(CANARY not in text for text in seen)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s)
       | st.sampled_from(["a b", "a&b=c", "1+1", "x/y", "50%", "#tag", "😀 ümlaut", "a,b"]))
def test_any_unicode_id_reaches_the_server_intact(sample_server, user_id):
    client = sample_server.client()
    before = len(sample_server.arrivals)
    with pytest.raises(amp.UnknownUserError):
        client.get_profile(user_id, device_id=user_id + "-dev")
    arrival = sample_server.arrivals[before]
    assert arrival.params["user_id"] == user_id
    assert arrival.params["device_id"] == user_id + "-dev"


def test_connect_without_a_key_uses_the_sample_org_and_says_so_once():
    import os
    import subprocess
    import sys

    script = ("import amptools as amp\n"
              "a = amp.connect(); b = amp.connect(rate_limit=100)\n"
              "assert a.is_sample and b.limiter.limit == 100\n"
              "print(a.get_profile('testUser', cohort_ids=True).cohort_ids)\n")
    env = {k: v for k, v in os.environ.items() if k != "AMPLITUDE_SECRET_KEY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("embedded sample org") == 1
    assert "('cohort1', 'cohort3', 'cohort7')" in done.stdout


def test_connect_with_a_key_uses_it(monkeypatch, sample_server):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", sample_server.secret_key)
    monkeypatch.setenv("AMPLITUDE_PROFILE_API_URL", sample_server.url)
    client = amp.connect()
    assert client.get_profile("testUser").user_id == "testUser"
