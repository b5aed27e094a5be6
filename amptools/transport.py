"""The one HTTP transport of amptools, for every Amplitude API it talks to.

This is the only module that imports ``requests`` (and ``urllib3``). The clients
(:class:`~amptools.client.ProfileClient`, :class:`~amptools.cohorts.CohortClient`)
say *what* to ask and what an answer means; how one attempt is made, bounded and
retried is decided here, once:

- **sessions**: one ``requests.Session`` per thread, over connections that never
  print headers (``http.client`` debug output would echo the key), never retrying by
  themselves and never following a redirect (so a key never reaches another host);
- **secrets and auth**: keys live in a :class:`Secret` that prints as ``***`` and
  reach the wire only through an auth hook on the prepared request
  (:class:`ApiKeyAuth`, :class:`BasicAuth`, or :class:`NoAuth` for pre-signed links);
- **one attempt** (:func:`exchange`): the body is read in chunks under a byte cap, on
  the wire and once decompressed (amptools decompresses, with an output bound, so a
  gzip bomb stops at the cap), under a per-attempt deadline (a timer shuts the socket,
  so a trickling server cannot hold a worker), optionally cancellable mid-body; a
  Ctrl-C leaves no frame holding a key;
- **errors**: transport failures become a retryable :class:`TransportError`
  (:func:`map_transport_error`); what a status means is each API's business;
- **checked settings**: URLs that may receive a key (:func:`checked_url`), timeouts
  and seconds;
- **retries**: :func:`should_retry`, :func:`retry_delay` with its :func:`jitter`,
  ``Retry-After`` (:func:`parse_retry_after`), and one loop, :func:`call_with_retries`,
  under a :class:`RetryPolicy`.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import math
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import (
    AmplitudeAPIError,
    ConfigurationError,
    FetchCancelled,
    ProfileAPIError,
    ResponseFormatError,
    TransportError,
    whole_number,
)

__all__ = [
    "USER_AGENT",
    "ApiKeyAuth",
    "BasicAuth",
    "HTTPAnswer",
    "HTTPGetter",
    "KeyHolder",
    "NoAuth",
    "RetryPolicy",
    "Secret",
    "call_with_retries",
    "checked_seconds",
    "checked_timeout",
    "checked_url",
    "exchange",
    "is_loopback",
    "jitter",
    "map_transport_error",
    "parse_retry_after",
    "read_body",
    "retry_delay",
    "should_retry",
    "thread_session",
]

USER_AGENT = "amptools/0.1 (+python-requests)"
log = logging.getLogger("amptools")
_T = TypeVar("_T")
# How often a cancellable attempt looks at its cancel event: a cancel ends a download
# within this, plus the moment the cut socket takes to wake the reading thread.
_CANCEL_POLL = 0.1


# -- one attempt's deadline (and cancel) --------------------------------------------------
# The read timeout bounds each socket read, not the answer: a server that trickles a
# byte a second would hold a worker (and a cancel) for as long as it likes. Each
# attempt therefore runs under a watch whose thread shuts the connection's socket at the
# deadline (or when the attempt's cancel event is set); the blocked read then ends at
# once and the attempt is a TransportError (or FetchCancelled).
_active_watch = threading.local()


class _Watch:
    """The deadline of one attempt: knows the connection in use, shuts it when late or cancelled."""

    def __init__(self, seconds: float, cancel: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.cancel = cancel
        self.connection: Any = None
        self.fired = False  # the deadline passed
        self.cancelled = False  # the cancel event was set
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amptools-deadline", daemon=True)

    def __enter__(self) -> _Watch:
        _active_watch.current = self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        _active_watch.current = None

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                self.fired = True
                break
            if self._done.wait(left if self.cancel is None else min(left, _CANCEL_POLL)):
                return
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                break
        if not self._done.is_set():
            self._cut()

    def _cut(self) -> None:
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            try:
                # The plain socket's shutdown, also for TLS sockets: it wakes the blocked
                # read in the other thread without touching the TLS object it is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


# -- connections that never print headers -----------------------------------------
class _QuietHTTPConnection(HTTPConnection):
    # http.client prints every header sent (the key included) when its debuglevel is
    # raised, often globally for troubleshooting; our connections stay silent.
    debuglevel = property(lambda self: 0, lambda self, value: None)

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = getattr(_active_watch, "current", None)
        if watch is not None:
            watch.connection = self  # so the deadline can cut this connection
        super().request(*args, **kwargs)


class _QuietHTTPSConnection(HTTPSConnection):
    debuglevel = property(lambda self: 0, lambda self, value: None)
    request = _QuietHTTPConnection.request


class _QuietHTTPPool(HTTPConnectionPool):
    ConnectionCls = _QuietHTTPConnection


class _QuietHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _QuietHTTPSConnection


class _QuietAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _QuietHTTPPool, "https": _QuietHTTPSPool}


def thread_session(local: threading.local, *, pool_connections: int, pool_maxsize: int) -> requests.Session:
    """This thread's session, kept in ``local`` and made on first use.

    One session per thread: requests does not promise a Session is thread-safe. It
    never retries by itself (:func:`call_with_retries` does, with backoff) and sends
    amptools' User-Agent.
    """
    session: requests.Session | None = getattr(local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = _QuietAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        local.session = session
    return session


# -- secrets and auth ----------------------------------------------------------------
class KeyHolder:
    """Base of the clients, which hold keys: a pickle would carry them to a file or another
    process, so pickling is refused and each process makes its own client."""

    _holds = "the keys"  # said in the refusal

    def __reduce__(self) -> Any:
        name = type(self).__name__
        raise TypeError(f"a {name} holds {self._holds} and cannot be pickled; "
                        f"create one in each process with {name}.from_env().")


class Secret:
    """Holds a key; prints as asterisks wherever it ends up."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the secret key cannot be pickled")


class ApiKeyAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Api-Key <key>`` on each prepared request (the Profile API)."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Api-Key " + self._secret.reveal()
        return request

    def __repr__(self) -> str:
        return "<ApiKeyAuth ***>"


class BasicAuth(requests.auth.AuthBase):
    """HTTP Basic with the API key as user and the secret key as password (Dashboard APIs)."""

    def __init__(self, user: Secret, password: Secret) -> None:
        self._user = user
        self._password = password

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        basic = requests.auth.HTTPBasicAuth(self._user.reveal(), self._password.reveal())
        signed: requests.PreparedRequest = basic(request)  # the stubs type __call__ loosely
        return signed

    def __repr__(self) -> str:
        return "<BasicAuth ***>"


class NoAuth(requests.auth.AuthBase):
    """No ``Authorization`` header at all (a pre-signed storage link carries its own signature).

    An explicit auth object also stops requests from adding ~/.netrc credentials.
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request

    def __repr__(self) -> str:
        return "<NoAuth>"


# -- checked settings ------------------------------------------------------------------
def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(url: str, *, what: str, use: str, query: bool = False) -> SplitResult:
    """The parts of an http(s) URL that may receive a key, or a :class:`ConfigurationError`.

    Credentials in the URL are refused first, so no message ever quotes them; a query
    (a signed storage link's signature) is never quoted either. Plain http is allowed
    only for loopback addresses.
    """
    parts = urlsplit(str(url))
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(f"{what} must not hold credentials (user:password@); "
                                 "pass keys as arguments.")
    shown = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} {shown} is not an http(s) URL; use {use}.")
    if parts.query and not query:
        raise ConfigurationError(f"{what} must not hold a query string.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{what} {shown} is plain http: keys and data would travel unencrypted. Use "
            f"https:// ({use}); http is allowed only for 127.0.0.1/localhost.")
    return parts


def _is_seconds(value: Any, *, zero: bool = False) -> bool:
    """A finite number of seconds, positive (or ≥ 0 with ``zero``); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0


def checked_seconds(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as finite seconds > 0 (≥ 0 with ``zero``), else a :class:`ConfigurationError`
    naming the setting (``inf``, ``nan`` and booleans are refused)."""
    if not _is_seconds(value, zero=zero):
        bound = "≥ 0" if zero else "positive,"
        raise ConfigurationError(f"{name} must be {bound} finite seconds, got {value!r}.")
    return float(value)


def checked_timeout(timeout: Any) -> tuple[float, float]:
    """``(connect, read)`` seconds from a number or a pair, else a :class:`ConfigurationError`."""
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = (timeout, timeout)
    if isinstance(timeout, list):
        timeout = tuple(timeout)
    if not isinstance(timeout, tuple) or len(timeout) != 2 or not all(_is_seconds(t) for t in timeout):
        raise ConfigurationError(
            f"timeout must be positive, finite seconds or (connect, read), got {timeout!r}.")
    return float(timeout[0]), float(timeout[1])


# -- retries --------------------------------------------------------------------------
def should_retry(error: BaseException, attempt: int, max_retries: int) -> bool:
    """Retry transient failures (5xx, throttling, resets, timeouts) up to ``max_retries`` times."""
    return isinstance(error, AmplitudeAPIError) and error.retryable and attempt <= max_retries


def jitter(delay: float, rng: random.Random | None = None) -> float:
    """Equal jitter: half the delay fixed, half random, so retries spread out."""
    return delay / 2 + (rng or random).random() * delay / 2


def retry_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    retry_after_cap: float = 60.0,
    jitter: Callable[[float], float] = jitter,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    The service's ``Retry-After`` wins when it is sent (capped at ``retry_after_cap``);
    otherwise capped exponential backoff with jitter: ``base * 2**(attempt-1)``.
    """
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        return min(retry_after, retry_after_cap)
    return jitter(min(cap, base * 2 ** max(0, attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, or None when it says nothing usable.

    Negative, zero, NaN, infinite, past or garbage values count as "not sent", so the
    normal backoff applies (a zero would otherwise mean immediate retries).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        try:
            seconds = moment.timestamp() - time.time()
        except (OverflowError, OSError, ValueError):
            return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait: checked when made.

    ``max_retries`` retries after the first attempt; the waits are
    :func:`retry_delay`'s (``backoff_base`` doubling up to ``backoff_cap``, or the
    service's ``Retry-After`` up to ``retry_after_cap``).
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        whole_number("max_retries", self.max_retries, minimum=0)
        for name in ("backoff_base", "backoff_cap", "retry_after_cap"):
            value = getattr(self, name)
            if not _is_seconds(value, zero=True):
                raise ConfigurationError(f"{name} must be finite seconds ≥ 0, got {value!r}.")

    def delay(self, attempt: int, error: BaseException, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``attempt`` failed with ``error``."""
        return retry_delay(attempt, getattr(error, "retry_after", None), base=self.backoff_base,
                           cap=self.backoff_cap, retry_after_cap=self.retry_after_cap,
                           jitter=lambda d: jitter(d, rng))


def call_with_retries(
    attempt: Callable[[], _T | AmplitudeAPIError],
    policy: RetryPolicy,
    *,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    before_wait: Callable[[AmplitudeAPIError, int, float], None] | None = None,
) -> tuple[_T, int]:
    """Run ``attempt`` until it answers; return (answer, attempts made).

    ``attempt`` returns its answer, or the :class:`AmplitudeAPIError` it stands for.
    A retryable error (see :func:`should_retry`) is tried again after
    ``policy.delay`` seconds — ``before_wait(error, attempt, delay)`` is told first —
    until ``policy.max_retries`` retries are used up; then, or for an error retrying
    cannot fix, the error is raised with its ``attempts`` set. The wait ends early
    with :class:`FetchCancelled` when ``cancel`` is set.
    """
    made = 0
    while True:
        made += 1
        result = attempt()
        if not isinstance(result, AmplitudeAPIError):
            return result, made
        result.attempts = made
        if not should_retry(result, made, policy.max_retries):
            raise result
        delay = policy.delay(made, result, rng)
        if before_wait is not None:
            before_wait(result, made, delay)
        log.info("retrying after %s (attempt %d of %d) in %.2fs",
                 type(result).__name__, made, policy.max_retries + 1, delay)
        if cancel is not None:
            if cancel.wait(delay):
                raise FetchCancelled("cancelled while waiting to retry")
        else:
            sleep(delay)


# -- one attempt ----------------------------------------------------------------------
class _TooLarge(Exception):
    """A body past the byte cap (raw, or once decompressed)."""


# The Content-Encodings amptools reads (lower case; "" when none is named).
_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")


def _inflater(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for one of :data:`_ENCODINGS`, or None for none."""
    if encoding in ("", "identity"):
        return None
    if encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some servers send raw deflate.
        return zlib.decompressobj(zlib.MAX_WBITS if first and (first[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
    return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip, x-gzip


def read_body(response: requests.Response, limit: int, cancel: threading.Event | None = None) -> bytes:
    """The body, decompressed, read in chunks and refused past ``limit`` bytes.

    Decompression is ours (zlib with an output bound), not urllib3's, so a small
    gzip bomb cannot expand into gigabytes before anyone looks at the size. Raises
    ``_TooLarge`` past the cap and :class:`FetchCancelled` when ``cancel`` is set.
    """
    encoding = response.headers.get("Content-Encoding", "")  # pragma: no mutate — mutmut: requests' headers ignore case
    encoding = encoding.strip().lower()
    if encoding not in _ENCODINGS:  # refused before reading, even for an empty body
        raise zlib.error(f"unknown Content-Encoding {encoding!r}")
    inflater: Any = None
    out = io.BytesIO()  # grows in place; getvalue() hands over its buffer without a copy
    wire = 0
    # (mutmut: the chunk size is urllib3's default, and requests opens every answer with
    # decode_content=False: the size and an omitted decode_content change nothing; True
    # would decompress twice, which every compressed-answer test shows.)
    for chunk in response.raw.stream(65536, decode_content=False):  # pragma: no mutate
        if cancel is not None and cancel.is_set():
            raise FetchCancelled("cancelled while downloading")  # pragma: no mutate — mutmut: exchange() raises its own
        wire += len(chunk)
        if wire > limit:
            raise _TooLarge(f"more than {limit:,} bytes on the wire")
        if wire == len(chunk):
            inflater = _inflater(encoding, chunk)
        if inflater is None:
            out.write(chunk)
            continue
        # max_length is at least 1 here (0 would mean "no bound"). (mutmut: one byte more, or
        # the output so far added, only lets more be inflated before the check below refuses it.)
        out.write(inflater.decompress(chunk, limit + 1 - out.tell()))
        if out.tell() > limit:  # (input left unread means the output reached max_length: past it too)
            raise _TooLarge(f"more than {limit:,} bytes once decompressed")
    if inflater is not None:
        out.write(inflater.flush())
        # (mutmut: no stream reaches this: decompress() took all its input within its bound,
        # so flush() adds nothing; kept should a zlib hold output back.)
        if out.tell() > limit:  # pragma: no mutate
            raise _TooLarge(f"more than {limit:,} bytes once decompressed")  # pragma: no mutate
    return out.getvalue()


class HTTPAnswer:
    """One HTTP answer as plain values: status, headers, the body and the URL asked."""

    __slots__ = ("content", "headers", "status", "url")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, url: str) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"<HTTPAnswer {self.status} {len(self.content):,} bytes>"  # never the URL (signed links)


def map_transport_error(exc: BaseException, url: str, *, deadline: float | None = None) -> TransportError:
    """Turn a connection, timeout or cut-body failure into a retryable TransportError.

    ``deadline`` is set when the attempt's total deadline cut it (whatever the
    transport then reported).
    """
    kind = type(exc).__name__
    if deadline is not None:
        what = f"no complete answer within the attempt's {deadline:g} s deadline"
    elif isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout)):
        what = "the request timed out"
    elif isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                          http.client.IncompleteRead)):
        what = "the response was cut off before its end"
    elif isinstance(exc, (requests.ConnectionError, OSError)):
        what = "the connection failed or was reset"
    else:
        what = "the request failed in transport"
    return TransportError(f"{what} ({kind}); retried with backoff.", url=url)


def exchange(
    session: requests.Session,
    url: str,
    *,
    auth: requests.auth.AuthBase,
    timeout: tuple[float, float],
    deadline: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    shown_url: str | None = None,
    too_large: str = "",
) -> HTTPAnswer | ProfileAPIError:
    """One GET under a deadline and a byte cap: the answer, or the error it stands for.

    Parameters
    ----------
    session, url, auth, timeout
        What to send and how (``timeout``: connect and read seconds).
    deadline : float
        Seconds the whole attempt may take (connect, send, headers, body).
    max_bytes : int
        The largest body accepted, on the wire and once decompressed.
    cancel : threading.Event, optional
        Set it to cut the attempt mid-body (raises :class:`FetchCancelled`).
    shown_url : str, optional
        The URL errors carry, when ``url`` must not be shown (a signed link).
    too_large : str
        Added to the message of a body past ``max_bytes`` (what size is expected).

    Returns
    -------
    HTTPAnswer, or TransportError / ResponseFormatError / ProfileAPIError
        Redirects are answers (never followed); statuses are the caller's business.

    Never lets a frame that held a key escape: an interrupt (Ctrl-C) is raised anew,
    outside every frame of requests, urllib3 and http.client.
    """
    shown = url if shown_url is None else shown_url
    error: ProfileAPIError | None = None
    interrupted: tuple[type[BaseException], tuple[Any, ...]] | None = None
    cancelled = False  # pragma: no mutate — mutmut: only `if cancelled` reads it (None reads as False)
    status: int | None = None  # pragma: no mutate — mutmut: read only after the answer set it
    watch = _Watch(deadline, cancel)
    try:
        with watch:
            # The key is added by the auth hook on the prepared request, so no frame of
            # ours holds it in a local that a verbose traceback shows.
            response = session.get(
                url, auth=auth, timeout=timeout, stream=True,
                allow_redirects=False,  # pragma: no mutate — mutmut: None is as False to requests
                headers={"Accept-Encoding": "gzip, deflate", **(headers or {})},
            )
            status = response.status_code
            try:
                body = read_body(response, max_bytes, cancel)
            finally:
                response.close()
        if watch.cancelled:
            cancelled = True
        elif watch.fired:  # the body may look whole when a close cut it short
            error = map_transport_error(TimeoutError(), shown, deadline=deadline)
    except FetchCancelled:
        cancelled = True
    except _TooLarge as over:
        error = ResponseFormatError(
            f"the answer is larger than max_response_bytes={max_bytes:,} ({over}){too_large}. "
            "Raise max_response_bytes= if this is expected.", status=status, url=shown)
        error.field = "(body)"
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
            OSError) as exc:
        if watch.cancelled:
            cancelled = True
        else:
            error = map_transport_error(exc, shown, deadline=deadline if watch.fired else None)
    except zlib.error as exc:  # zlib's words name no data: "incorrect header check", an encoding
        error = ResponseFormatError(f"the answer's compressed body could not be decompressed ({exc}).",
                                    status=status, url=shown)
        error.field = "(body)"
    except Exception as exc:  # noqa: BLE001 - never a raw transport error to the user
        error = ProfileAPIError(f"the request failed unexpectedly ({type(exc).__name__}).", url=shown)
    except BaseException as exc:  # Ctrl-C, SystemExit
        interrupted = (type(exc), exc.args if isinstance(exc, SystemExit) else ())
    # Raised here, outside the handler: the new exception has no context, so its
    # traceback holds no frame of requests, urllib3 or http.client (whose locals
    # hold the headers, keys included) for a verbose traceback or tracker to print.
    if interrupted is not None:
        raise interrupted[0](*interrupted[1])
    if cancelled:
        raise FetchCancelled("cancelled while downloading")
    if error is not None:
        return error
    return HTTPAnswer(response.status_code, response.headers, body, shown)  # headers: any case


class HTTPGetter:
    """Single GETs with one auth, under a deadline and a byte cap, from per-thread sessions.

    The transport of :class:`amptools.cohorts.CohortClient`. Every GET is one
    :func:`exchange`; retrying is the caller's (with :func:`call_with_retries`).

    Parameters
    ----------
    auth : requests.auth.AuthBase
        :class:`BasicAuth` or :class:`ApiKeyAuth` (holding :class:`Secret` keys).
    timeout : (connect, read)
        Seconds.
    deadline : float
        Seconds one attempt may take in all.
    max_bytes : int
        The largest body accepted, on the wire and once decompressed.
    """

    def __init__(self, auth: requests.auth.AuthBase, *, timeout: tuple[float, float], deadline: float,
                 max_bytes: int, pool_connections: int = 2, pool_maxsize: int = 2) -> None:
        self._auth = auth
        self.timeout = timeout
        self.deadline = deadline
        self.max_bytes = max_bytes
        self._pool = (pool_connections, pool_maxsize)
        self._local = threading.local()

    def __repr__(self) -> str:
        return "<amptools.transport.HTTPGetter ***>"

    def __reduce__(self) -> Any:
        raise TypeError("an HTTPGetter holds the keys and cannot be pickled.")

    def session(self) -> requests.Session:
        """This thread's session."""
        return thread_session(self._local, pool_connections=self._pool[0], pool_maxsize=self._pool[1])

    def get(self, url: str, *, authorized: bool = True, headers: Mapping[str, str] | None = None,
            cancel: threading.Event | None = None, deadline: float | None = None,
            too_large: str = "") -> HTTPAnswer | ProfileAPIError:
        """GET ``url`` once; ``authorized=False`` sends no ``Authorization`` header at all
        and keeps the URL's query (a signature) out of errors and the answer."""
        return exchange(self.session(), url, auth=self._auth if authorized else NoAuth(),
                        timeout=self.timeout, deadline=self.deadline if deadline is None else deadline,
                        max_bytes=self.max_bytes, headers=headers, cancel=cancel,
                        shown_url=None if authorized else url.split("?")[0], too_large=too_large)
