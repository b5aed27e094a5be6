"""What mutation testing (``make mutate``) found the client's other tests let through: the
Accept header, what a too-large answer says, a cancel that reaches the permit and the
wait before a retry, and a throttle that reaches the limiter."""

from __future__ import annotations

import gzip
import json
import threading
import zlib

import pytest

import amptools as amp
from amptools.sample.server import Faults, SampleServer
from test_hardening import PROFILE, Hostile, send
from test_mutants_transport import Fixed


def test_the_client_asks_for_json_and_says_why_a_large_answer_is_refused(hostile: Hostile) -> None:
    hostile.answer = lambda h: send(h, 200, PROFILE)
    hostile.client().get_profile("u1")
    assert hostile.requests[-1]["Accept"] == "application/json"
    hostile.answer = lambda h: send(h, 200, b"{" + b" " * 50_000 + b"}")
    with pytest.raises(amp.ResponseFormatError) as info:
        hostile.client(max_response_bytes=4096, max_retries=0).get_profile("u1")
    assert str(info.value) == ("the answer is larger than max_response_bytes=4,096 (more than 4,096 bytes on the "
                               "wire); a profile is a few kilobytes. Raise max_response_bytes= if this is expected.")


def test_a_cancel_set_before_the_request_sends_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    with SampleServer() as server:
        with pytest.raises(amp.FetchCancelled):
            server.client().request({"user_id": "testUser"}, cancel=cancel)
        assert server.arrivals == []


def test_the_wait_before_a_retry_is_on_the_cancel_and_a_throttle_reaches_the_limiter() -> None:
    slept: list[float] = []
    with SampleServer() as server:
        server.faults = Faults(server_error=1.0)
        client = server.client(max_retries=1, backoff_base=0.01, sleep=slept.append)
        with pytest.raises(amp.ServerError):
            client.request({"user_id": "testUser"}, cancel=threading.Event())
        assert slept == []  # the wait was the cancel's (a cancel ends it), not a plain sleep
        assert len(server.arrivals) == 2
        server.faults = Faults(throttle=1.0)
        client = server.client(max_retries=1, backoff_base=0.01, retry_after_cap=0.05)
        with pytest.raises(amp.ThrottledError):
            client.get_profile("testUser")
        assert client.quota().throttles == 1


def test_the_waits_between_retries_draw_from_the_client_s_random_source() -> None:
    slept: list[float] = []
    with SampleServer() as server:
        server.faults = Faults(server_error=1.0)
        client = server.client(max_retries=2, backoff_base=0.01, sleep=slept.append, rng=Fixed(0.0))
        with pytest.raises(amp.ServerError):
            client.get_profile("testUser")
    assert slept == [0.005, 0.01]  # half of 0.01 and of 0.02: the jitter drew 0 each time


@pytest.mark.parametrize(("setting", "named"), [
    ({"deadline": -1.0}, "deadline"),
    ({"max_response_bytes": 5}, "max_response_bytes"),
    ({"budget": 123}, "budget= takes a Redis URL as text (redis://host:6379/0), got int."),
])
def test_a_bad_client_setting_is_named(setting: dict[str, object], named: str) -> None:
    with pytest.raises(amp.ConfigurationError) as info:
        amp.ProfileClient("k" * 32, **setting)  # type: ignore[arg-type]
    assert str(info.value).startswith(named)


def test_a_budget_url_given_as_text_is_the_team_s_budget() -> None:
    client = amp.ProfileClient("k" * 32, budget="  redis://127.0.0.1:1/0  ")
    assert client.quota().budget.startswith("the team's Redis redis://127.0.0.1:1/0 (alone: ")  # stripped, and down



def test_a_refused_key_leaves_no_frame_holding_the_budget_url_as_text() -> None:
    """The budget URL (it may hold a password) is a Secret before the key is checked: when
    the key is refused, no frame of the error holds the URL as text (verbose tracebacks and
    error trackers print locals). Text locals only: mutmut's trampolines hold a call's
    arguments in a tuple and a dict (the key tests that walk every local are deselected there)."""
    with pytest.raises(amp.ConfigurationError) as info:
        amp.ProfileClient("", budget=" redis://:" + "CANARYpw" + "-1f2e@127.0.0.1:1/0 ")  # made in the call
    texts: list[str] = []
    tb = info.value.__traceback__
    while tb is not None:
        texts += [value for value in tb.tb_frame.f_locals.values() if isinstance(value, str)]
        tb = tb.tb_next
    assert "secret key" in str(info.value) and len(texts) > 0  # the key's error, and frames were read
    assert not [text for text in texts if "CANARYpw-1f2e" in text]


def test_the_smallest_answer_limit_is_one_kib() -> None:
    assert amp.ProfileClient("k" * 32, max_response_bytes=1024).max_response_bytes == 1024
    with pytest.raises(amp.ConfigurationError, match="max_response_bytes"):
        amp.ProfileClient("k" * 32, max_response_bytes=1023)


def test_a_budget_url_and_shared_budget_false_are_refused_together_in_words() -> None:
    with pytest.raises(amp.ConfigurationError) as info:
        amp.ProfileClient("k" * 32, budget="redis://127.0.0.1:1/0", shared_budget=False)
    assert str(info.value) == ("budget= names a shared budget and shared_budget=False asks for none: "
                               "give only one of them.")
    assert amp.ProfileClient("k" * 32, shared_budget=False).budget is None  # a client of its own


def test_the_client_s_limiter_waits_on_the_client_s_clock_and_sleep() -> None:
    """The clock and sleep a client is given are its limiter's (tests and notebooks inject them)."""
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        assert len(slept) < 50, "the limiter waits on another clock"
        now[0] += seconds

    client = amp.ProfileClient("k" * 32, rate_limit=2, rate_period=60.0, clock=lambda: now[0], sleep=sleep)
    failed: list[BaseException] = []

    def three_permits() -> None:
        try:
            for _ in range(3):
                client.limiter.release(client.limiter.acquire())
        except BaseException as error:  # noqa: BLE001 - told below
            failed.append(error)

    worker = threading.Thread(target=three_permits, daemon=True)
    worker.start()
    worker.join(10)  # a limiter on time.sleep would sleep half a minute here
    assert not worker.is_alive(), "the limiter sleeps on another sleep"
    assert not failed, failed
    assert slept and now[0] > 1000.0  # the third permit waited, on the client's clock


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "encode"), [
    ("identity", lambda data: data),
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    (" X-GZIP ", gzip.compress),
    ("deflate", zlib.compress),  # RFC 9110's deflate: zlib-wrapped
    ("Deflate", raw_deflate),  # what some servers send instead
])
def test_every_content_encoding_http_names_is_read(hostile: Hostile, encoding: str, encode) -> None:
    body = encode(json.dumps(PROFILE).encode())
    hostile.answer = lambda h: send(h, 200, body, {"Content-Encoding": encoding})
    assert hostile.client(max_retries=0).get_profile("u1").user_id == PROFILE["userData"]["user_id"]


@pytest.mark.parametrize(("encoding", "encode", "says"), [
    ("gzip", zlib.compress, "incorrect header check"),  # a label that lies: refused, not guessed
    ("br", lambda data: data, "unknown Content-Encoding 'br'"),  # one amptools does not read
    ("br", lambda data: b"", "unknown Content-Encoding 'br'"),  # ...even with nothing to decode
])
def test_a_body_that_is_not_what_its_encoding_says_is_refused(hostile: Hostile, encoding: str, encode,
                                                               says: str) -> None:
    body = encode(json.dumps(PROFILE).encode())
    hostile.answer = lambda h: send(h, 200, body, {"Content-Encoding": encoding})
    with pytest.raises(amp.ResponseFormatError) as info:
        hostile.client(max_retries=0).get_profile("u1")
    assert str(info.value).startswith("the answer's compressed body could not be decompressed (")
    assert says in str(info.value)
    assert info.value.status == 200 and info.value.field == "(body)"
    assert info.value.url.startswith(hostile.url + "/v1/userprofile?")


def test_a_compressed_answer_of_exactly_the_limit_is_read_and_one_byte_more_is_not(hostile: Hostile) -> None:
    whole = json.dumps(PROFILE).encode()
    for size, accepted in ((2048, True), (2049, False)):
        body = gzip.compress(whole[:-1] + b" " * (size - len(whole)) + b"}")
        hostile.answer = lambda h, body=body: send(h, 200, body, {"Content-Encoding": "gzip"})
        client = hostile.client(max_retries=0, max_response_bytes=2048)
        if accepted:
            assert client.get_profile("u1").user_id == PROFILE["userData"]["user_id"]
        else:
            with pytest.raises(amp.ResponseFormatError, match="more than 2,048 bytes once decompressed"):
                client.get_profile("u1")


def test_a_plain_answer_of_exactly_the_limit_is_read_and_one_byte_more_is_not(hostile: Hostile) -> None:
    whole = json.dumps(PROFILE).encode()
    for size, accepted in ((2048, True), (2049, False)):
        body = whole[:-1] + b" " * (size - len(whole)) + b"}"
        hostile.answer = lambda h, body=body: send(h, 200, body)
        client = hostile.client(max_retries=0, max_response_bytes=2048)
        if accepted:
            assert client.get_profile("u1").user_id == PROFILE["userData"]["user_id"]
        else:
            with pytest.raises(amp.ResponseFormatError, match="more than 2,048 bytes on the wire"):
                client.get_profile("u1")
