"""What mutation testing (``make mutate``) found the other tests of the retries and the
answers' mapping let through: the retry delays' exact values and defaults, an HTTP-date
``Retry-After``, and the context of an answer nested too deeply."""

from __future__ import annotations

import json
import threading
import time
from email.utils import formatdate

import pytest

import amptools as amp
from amptools.client import map_response
from amptools.errors import ServerError, ThrottledError, TransportError
from amptools.transport import RetryPolicy, jitter, parse_retry_after, retry_delay, should_retry


class Fixed:
    """A random source that always draws the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def same(delay: float) -> float:
    return delay


def test_jitter_keeps_half_and_draws_the_other_half() -> None:
    assert jitter(10.0, Fixed(0.0)) == 5.0  # type: ignore[arg-type]
    assert jitter(10.0, Fixed(0.5)) == 7.5  # type: ignore[arg-type]
    assert jitter(10.0, Fixed(0.999)) == pytest.approx(9.995)  # type: ignore[arg-type]


def test_retry_delays_double_from_the_base_up_to_the_caps_documented() -> None:
    assert [retry_delay(n, jitter=same) for n in (1, 2, 3, 7, 20)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert retry_delay(1, 1000.0) == 60.0  # the service's Retry-After, capped at 60 s
    assert retry_delay(1, 12.5) == 12.5
    # A Retry-After of zero (or less, or not finite) says nothing: the backoff applies.
    for said in (0.0, -3.0, float("nan"), float("inf")):
        assert retry_delay(2, said, jitter=same) == 1.0


def test_a_retry_policy_uses_its_own_base_caps_and_random_source() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=0.1, backoff_cap=0.3, retry_after_cap=2.0)
    rng = Fixed(0.5)
    assert policy.delay(1, ServerError("x"), rng) == pytest.approx(0.075)  # type: ignore[arg-type]
    assert policy.delay(5, ServerError("x"), rng) == pytest.approx(0.225)  # type: ignore[arg-type]
    assert policy.delay(1, ThrottledError("x", retry_after=9.0)) == 2.0
    assert policy.delay(1, ValueError("not an API error"), rng) == pytest.approx(0.075)  # type: ignore[arg-type]


def test_only_retryable_api_errors_are_retried_and_only_max_retries_times() -> None:
    assert should_retry(TransportError("reset"), 4, 4) and not should_retry(TransportError("reset"), 5, 4)
    assert not should_retry(amp.AuthenticationError("no"), 1, 4)
    assert not should_retry(ValueError("x"), 1, 4)


def test_a_retry_after_given_as_an_http_date_is_seconds_from_now() -> None:
    seconds = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert seconds is not None and 25 < seconds <= 31
    assert parse_retry_after(formatdate(time.time() - 30, usegmt=True)) is None  # past: not sent


def test_an_answer_nested_too_deeply_names_its_status_and_url() -> None:
    error = map_response(200, "[" * 100_000 + "]" * 100_000, {}, "https://x.example/v1/userprofile")
    assert isinstance(error, amp.ResponseFormatError) and error.field == "(body)"
    assert (error.status, error.url) == (200, "https://x.example/v1/userprofile")


URL = "https://profile-api.amplitude.com/v1/userprofile?user_id=u"
SAID = "Number of requests per minute exceeds system limit"


def test_a_throttle_says_what_to_do_and_keeps_its_context() -> None:
    error = map_response(429, SAID, {"Retry-After": "7"}, URL)
    assert isinstance(error, ThrottledError) and error.retry_after == 7.0
    assert (error.status, error.body, error.url) == (429, SAID, URL)
    assert ("amptools slows down and retries. Lower rate_limit= if other tools share the org's "
            "600 a minute.") in str(error)


@pytest.mark.parametrize(("status", "body", "throttled"), [
    (400, '{"error": "%s"}' % SAID, True),  # an error answer that says so
    (300, SAID, True),  # not a 2xx, and the sentence in its text
    (200, "<html>%s</html>" % SAID, False),  # a 2xx that is no JSON: not a throttle
    (200, '{"userData": {"amp_props": {"note": "x"}}, "error": "%s"}' % SAID, False),  # a profile
    (299, '{"userData": {}, "error": "%s"}' % SAID, False),
    (300, '{"userData": {}, "error": "%s"}' % SAID, True),  # not a 2xx: not a profile either
])
def test_only_a_429_or_an_error_answer_saying_so_is_a_throttle(status: int, body: str, throttled: bool) -> None:
    error = map_response(status, body, {}, URL)
    assert isinstance(error, ThrottledError) is throttled


def test_a_deep_answer_says_why_it_cannot_be_read() -> None:
    error = map_response(200, "[" * 100_000 + "]" * 100_000, {}, URL)
    assert str(error).startswith("the Profile API answered HTTP 200 with JSON nested too deeply to read "
                                 "(no profile is nested like that).")


@pytest.mark.parametrize(("status", "body", "headers", "kind", "said"), [
    (401, "Missing Api-Key in Authorization header", {}, amp.AuthenticationError,
     "authentication failed (HTTP 401): the request had no valid 'Authorization: Api-Key <key>' header — "
     "is the key empty?"),
    (401, "Invalid Api-Key", {}, amp.AuthenticationError,
     "authentication failed (HTTP 401): the service rejected the secret key (Invalid Api-Key) — check that "
     "AMPLITUDE_SECRET_KEY holds this project's *secret* key, not its API key."),
    (400, '{"error": "User id u not seen before"}', {}, amp.UnknownUserError,
     "the service has not seen this user (User id u not seen before): the id may be mistyped or belong to "
     "another project."),
    (300, "", {"Location": "https://elsewhere.example/x?k=1"}, amp.RedirectError,
     "the service redirected (HTTP 300) to https://elsewhere.example; amptools never follows redirects so "
     "the key is not sent elsewhere. Use the https:// base URL (https://profile-api.amplitude.com)."),
    (302, "", {}, amp.RedirectError,
     "the service redirected (HTTP 302) to an address it did not name; amptools never follows redirects so "
     "the key is not sent elsewhere. Use the https:// base URL (https://profile-api.amplitude.com)."),
    (404, "", {}, amp.NotFoundError,
     "nothing at https://profile-api.amplitude.com/v1/userprofile (HTTP 404): the base URL or path is "
     "wrong; the Profile API lives at https://profile-api.amplitude.com/v1/userprofile (no EU endpoint "
     "exists)."),
    (503, "", {}, amp.ServerError, "the Profile API failed (HTTP 503); retried with backoff."),
    (418, "teapot", {}, amp.ProfileAPIError, "the Profile API refused the request (HTTP 418): teapot"),
    (400, "bad request", {}, amp.ProfileAPIError, "the Profile API refused the request (HTTP 400): bad request"),
    (418, "t" * 300, {}, amp.ProfileAPIError, "the Profile API refused the request (HTTP 418): " + "t" * 200),
    (200, "[" + "1, " * 40 + "1]", {}, amp.ResponseFormatError,
     "the Profile API answered HTTP 200 with a body that is not a JSON object (%r)." % ("[" + "1, " * 40 + "1]")[:80]),
])
def test_every_answer_maps_to_its_error_its_words_and_its_context(
        status: int, body: str, headers: dict[str, str], kind: type, said: str) -> None:
    error = map_response(status, body, headers, URL)
    assert type(error) is kind and str(error) == said
    assert getattr(error, "field", None) == ("(body)" if kind is amp.ResponseFormatError else None)
    assert (error.status, error.body, error.url) == (status, body, URL)  # type: ignore[union-attr]


def test_a_body_is_read_while_its_cancel_is_unset_and_refused_once_set(hostile) -> None:
    import requests

    from amptools.errors import FetchCancelled
    from amptools.transport import read_body
    from test_hardening import PROFILE, send

    hostile.answer = lambda h: send(h, 200, PROFILE)
    cancel = threading.Event()
    with requests.get(hostile.url + "/v1/userprofile", stream=True, timeout=5) as response:
        assert json.loads(read_body(response, 2**20, cancel)) == PROFILE
    cancel.set()
    with requests.get(hostile.url + "/v1/userprofile", stream=True, timeout=5) as response:
        with pytest.raises(FetchCancelled):
            read_body(response, 2**20, cancel)


# -- one exchange: what it asks for, and a body that looks whole because it was cut --------------------
def close_delimited(handler, first: bytes, then=lambda: None, rest: bytes = b"") -> None:
    """An answer without a length: its body ends when the connection closes, so a cut one
    looks whole to the reader."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(first)
    handler.wfile.flush()
    then()
    handler.wfile.write(rest)
    handler.close_connection = True


def test_the_client_asks_for_gzip_or_deflate_only(hostile, monkeypatch) -> None:
    """Never br or zstd, which amptools cannot read: requests asks for them by default when
    their packages are installed (made so here, so that only amptools' own header can pass)."""
    import requests

    defaults = requests.utils.default_headers()
    defaults["Accept-Encoding"] = "gzip, deflate, br, zstd"
    monkeypatch.setattr(requests.sessions, "default_headers", lambda: requests.structures.CaseInsensitiveDict(defaults))
    hostile.client(max_retries=0).get_profile("u1")
    assert hostile.requests[-1]["Accept-Encoding"] == "gzip, deflate"


def test_a_body_cut_by_the_deadline_is_a_timeout_naming_it(hostile) -> None:
    hostile.answer = lambda h: close_delimited(h, b'{"userData": {', lambda: time.sleep(3))
    with pytest.raises(TransportError) as info:
        hostile.client(max_retries=0, deadline=0.5).get_profile("u1")
    assert str(info.value) == ("no complete answer within the attempt's 0.5 s deadline (TimeoutError); "
                               "retried with backoff.")
    assert info.value.url.startswith(hostile.url + "/v1/userprofile?")


def one_exchange(url: str, cancel: threading.Event | None = None, auth=None, deadline: float = 10.0):
    """One GET as the cohort client sends them (cancellable mid-body)."""
    from amptools.transport import NoAuth, exchange, thread_session

    session = thread_session(threading.local(), pool_connections=1, pool_maxsize=1)
    return exchange(session, url, auth=auth or NoAuth(), timeout=(5.0, 5.0), deadline=deadline,
                    max_bytes=2**20, cancel=cancel)


def with_length(handler, first: bytes, then=lambda: None) -> None:
    """An answer that announces more body than it sends before ``then``."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(first) + 100))
    handler.end_headers()
    handler.wfile.write(first)
    handler.wfile.flush()
    then()


class SeenByTheWatchOnly(threading.Event):
    """A cancel only the deadline's watch sees: the reader never does, so the cut the watch
    makes is the only way the read can end early, whatever the machine's load."""

    def is_set(self) -> bool:
        return threading.current_thread().name == "amptools-deadline" and super().is_set()


def test_a_body_cut_by_a_cancel_is_cancelled_not_an_answer(hostile) -> None:
    """The deadline's watch cuts the connection on a cancel: the body then looks whole
    (it ends when the connection does), and is no answer."""
    from amptools.errors import FetchCancelled

    cancel = SeenByTheWatchOnly()
    cancel.set()
    hostile.answer = lambda h: close_delimited(h, b'{"a": "' + b"x" * 1000, lambda: time.sleep(3))
    with pytest.raises(FetchCancelled) as info:
        one_exchange(hostile.url + "/file", cancel)
    assert str(info.value) == "cancelled while downloading"


def test_a_cut_body_of_known_length_is_cancelled_or_a_timeout(hostile) -> None:
    """The watch's cut makes the reader fail (a body shorter than its length): the cancel
    or the deadline behind it is what the caller is told, with the URL."""
    from amptools.errors import FetchCancelled

    cancel = SeenByTheWatchOnly()
    cancel.set()
    hostile.answer = lambda h: with_length(h, b'{"a": ', lambda: time.sleep(3))
    with pytest.raises(FetchCancelled):
        one_exchange(hostile.url + "/file", cancel)
    error = one_exchange(hostile.url + "/file", deadline=0.5)
    assert isinstance(error, TransportError) and error.url == hostile.url + "/file"
    assert "within the attempt's 0.5 s deadline" in str(error)


def test_an_unexpected_failure_is_an_api_error_and_an_interrupt_is_raised_bare(hostile) -> None:
    """What no mapping knows is a ProfileAPIError naming only its type; an interrupt is raised
    again without its arguments (a SystemExit keeps its code)."""
    import requests

    class Failing(requests.auth.AuthBase):
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def __call__(self, request):
            raise self.error

    error = one_exchange(hostile.url + "/file", auth=Failing(ValueError("a secret detail")))
    assert type(error) is amp.ProfileAPIError and error.url == hostile.url + "/file"
    assert str(error) == "the request failed unexpectedly (ValueError)."
    with pytest.raises(KeyboardInterrupt) as interrupt:
        one_exchange(hostile.url + "/file", auth=Failing(KeyboardInterrupt("a secret detail")))
    assert interrupt.value.args == ()
    with pytest.raises(SystemExit) as exit_:
        one_exchange(hostile.url + "/file", auth=Failing(SystemExit(3)))
    assert exit_.value.code == 3


def test_a_cancel_seen_between_chunks_stops_the_read(hostile, monkeypatch) -> None:
    """The body's reader looks at the cancel itself: the deadline's watch looks only every
    _CANCEL_POLL seconds (made long here, so only the reader can see it)."""
    import amptools.transport as transport
    from amptools.errors import FetchCancelled

    monkeypatch.setattr(transport, "_CANCEL_POLL", 60.0)
    cancel = threading.Event()
    hostile.answer = lambda h: close_delimited(h, b'{"a": ', cancel.set, b"1}")
    with pytest.raises(FetchCancelled):
        one_exchange(hostile.url + "/file", cancel)
    assert one_exchange(hostile.url + "/file", threading.Event()).content == b'{"a": 1}'  # unset: read whole


def test_a_too_large_answer_carries_its_status_and_url(hostile) -> None:
    from test_hardening import send

    hostile.answer = lambda h: send(h, 200, b"{" + b" " * 5000 + b"}")
    with pytest.raises(amp.ResponseFormatError) as info:
        hostile.client(max_retries=0, max_response_bytes=1024).get_profile("u1")
    assert info.value.status == 200 and info.value.url.startswith(hostile.url + "/v1/userprofile?")
    assert info.value.field == "(body)"


# -- settings: seconds and timeouts, named in their errors ---------------------------------------------
def test_seconds_are_finite_numbers_never_text_or_booleans_and_their_errors_say_the_bound() -> None:
    from amptools.errors import ConfigurationError
    from amptools.transport import checked_seconds, checked_timeout

    assert checked_seconds("deadline", 2) == 2.0 and checked_seconds("backoff_base", 0, zero=True) == 0.0
    for value in ("5", True, None, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError):
            checked_seconds("deadline", value)
    with pytest.raises(ConfigurationError) as info:
        checked_seconds("deadline", -1)
    assert str(info.value) == "deadline must be positive, finite seconds, got -1."
    with pytest.raises(ConfigurationError) as info:
        checked_seconds("backoff_base", -1, zero=True)
    assert str(info.value) == "backoff_base must be ≥ 0 finite seconds, got -1."
    assert checked_timeout([3, 4.5]) == (3.0, 4.5) and checked_timeout(2) == (2.0, 2.0)
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(max_retries=-1)
    assert str(info.value).startswith("max_retries ")


def test_a_retry_is_logged_with_its_error_attempt_and_wait(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from amptools.transport import call_with_retries

    answers = iter([ServerError("boom"), "done"])
    with caplog.at_level(logging.INFO, logger="amptools"):
        call_with_retries(lambda: next(answers), RetryPolicy(max_retries=2, backoff_base=0.5, backoff_cap=4.0),
                          sleep=lambda seconds: None, rng=Fixed(0.0))
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == [
        "retrying after ServerError (attempt 1 of 3) in 0.25s"]


def test_a_cancel_during_the_wait_to_retry_says_so() -> None:
    from amptools.errors import FetchCancelled
    from amptools.transport import call_with_retries

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(FetchCancelled) as info:
        call_with_retries(lambda: ServerError("boom"), RetryPolicy(max_retries=2), cancel=cancel)
    assert str(info.value) == "cancelled while waiting to retry"


def test_an_exchange_shows_the_url_it_is_told_to_and_its_own_words_past_the_limit(hostile) -> None:
    """``shown_url`` stands for the URL asked (a signed link) in the answer and in every
    error; with no ``too_large`` the refusal says only the limit and what to do."""
    from test_hardening import send

    from amptools.transport import NoAuth, exchange, thread_session

    session = thread_session(threading.local(), pool_connections=1, pool_maxsize=1)

    def asked(**options):
        return exchange(session, hostile.url + "/file?signature=secret", auth=NoAuth(), timeout=(5.0, 5.0),
                        deadline=10.0, max_bytes=1024, **options)

    hostile.answer = lambda h: send(h, 200, b"{}")
    assert asked(shown_url="the file").url == "the file"
    assert asked().url == hostile.url + "/file?signature=secret"
    hostile.answer = lambda h: send(h, 200, b"{" + b" " * 2000 + b"}")
    error = asked(shown_url="the file")
    assert isinstance(error, amp.ResponseFormatError) and error.url == "the file"
    assert str(error) == ("the answer is larger than max_response_bytes=1,024 (more than 1,024 bytes on the "
                          "wire). Raise max_response_bytes= if this is expected.")
