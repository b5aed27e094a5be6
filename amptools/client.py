"""ProfileClient: one request to the Profile API, done right.

This is the only module that knows ``requests``. Everything the transport or the
service can do wrong is mapped to the amptools error tree in two functions,
:func:`map_response` and :func:`map_transport_error`. Whether to retry and how
long to wait are plain functions (:func:`should_retry`, :func:`retry_delay`),
with the jitter in its own function so tests can pin it.

The secret key lives in the ``Authorization`` header of each request and nowhere
else: not in ``repr``, URLs, exceptions or logs. Redirects are never followed
(so the key is never sent to another host), and the connections amptools opens
ignore ``http.client`` debug printing, which would otherwise echo the header.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import math
import os
import random
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import SplitResult, quote, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import (
    AmptoolsWarning,
    AuthenticationError,
    ConfigurationError,
    FetchCancelled,
    InvalidQueryError,
    NotFoundError,
    ProfileAPIError,
    RedirectError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
    TransportError,
    UnknownUserError,
    warn,
    whole_number,
)
from .models import UserProfile
from .names import NameLearner
from .query import IdType, ProfileQuery, validate_id
from .ratelimit import Quota, RateLimiter

if TYPE_CHECKING:
    from datetime import timedelta

    from ._types import PathLike
    from .bulk import ProfileSet, ProgressHook
    from .cache import ProfileCache

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINT",
    "ExposureWarning",
    "ProfileClient",
    "api_scope",
    "key_fingerprint",
    "map_response",
    "map_transport_error",
    "retry_delay",
    "should_retry",
]

DEFAULT_BASE_URL = "https://profile-api.amplitude.com"
ENDPOINT = "/v1/userprofile"
KEY_VARIABLE = "AMPLITUDE_SECRET_KEY"
URL_VARIABLE = "AMPLITUDE_PROFILE_API_URL"
THROTTLE_TEXT = "Number of requests per minute exceeds system limit"
UNKNOWN_USER_TEXT = "not seen before"

log = logging.getLogger("amptools")


class ExposureWarning(AmptoolsWarning):
    """Fetching recommendations logs exposure events in Amplitude."""


EXPOSURE_MESSAGE = (
    "Fetching recommendations logs a recommendation exposure event in Amplitude for "
    "every user asked about, which feeds the measurement of live experiments. Fetch "
    "only the users you need, and reuse a cache (cache='profiles.sqlite') instead of "
    "fetching again."
)


# -- one attempt's deadline ------------------------------------------------------------
# The read timeout bounds each socket read, not the answer: a server that trickles a
# byte a second would hold a worker (and a cancel) for as long as it likes. Each
# attempt therefore runs under a watch whose timer shuts the connection's socket at the
# deadline; the blocked read then ends at once and the attempt is a TransportError.
_active_watch = threading.local()


class _Watch:
    """The deadline of one attempt: knows the connection in use, shuts it when late."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.connection: Any = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        _active_watch.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _active_watch.current = None

    def _fire(self) -> None:
        self.fired = True
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


def _thread_session(local: threading.local, *, pool_connections: int, pool_maxsize: int) -> requests.Session:
    """This thread's session, kept in ``local`` and made on first use.

    One session per thread: requests does not promise a Session is thread-safe. It
    never retries by itself (our loops do, with backoff) and sends amptools' User-Agent.
    """
    session: requests.Session | None = getattr(local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = _QuietAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "amptools/0.1 (+python-requests)"
        local.session = session
    return session


class _KeyHolder:
    """Base of the clients, which hold keys: a pickle would carry them to a file or another
    process, so pickling is refused and each process makes its own client."""

    _holds = "the keys"  # said in the refusal

    def __reduce__(self) -> Any:
        name = type(self).__name__
        raise TypeError(f"a {name} holds {self._holds} and cannot be pickled; "
                        f"create one in each process with {name}.from_env().")


class _Secret:
    """Holds the key; prints as asterisks wherever it ends up."""

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


class _ApiKeyAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Api-Key <key>`` on each prepared request."""

    def __init__(self, secret: _Secret) -> None:
        self._secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Api-Key " + self._secret.reveal()
        return request

    def __repr__(self) -> str:
        return "<ApiKeyAuth ***>"


# -- retry policy -----------------------------------------------------------------
def should_retry(error: BaseException, attempt: int, max_retries: int) -> bool:
    """Retry transient failures (5xx, throttling, resets, timeouts) up to ``max_retries`` times."""
    return bool(getattr(error, "retryable", False)) and attempt <= max_retries


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


def _parse_retry_after(value: str | None) -> float | None:
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


# -- the mapping of answers to errors -------------------------------------------------
def map_response(
    status: int, text: str, headers: Mapping[str, str], url: str
) -> dict[str, Any] | ProfileAPIError:
    """Turn one HTTP answer into the JSON payload, or the error it stands for."""
    context: _Answer = {"status": status, "body": text, "url": url}
    error_text = ""
    payload: Any = None
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        payload = None
    except RecursionError:
        error = ResponseFormatError(
            f"the Profile API answered HTTP {status} with JSON nested too deeply to read "
            "(no profile is nested like that).", **context)
        error.field = "(body)"
        return error
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error_text = payload["error"]
    # Throttling is a 429, or an error answer that says so; never a profile (a 2xx body
    # with userData), whose properties are end users' text and may hold the sentence.
    is_profile = 200 <= status < 300 and isinstance(payload, dict) and "userData" in payload
    throttle_said = THROTTLE_TEXT in error_text or (not 200 <= status < 300 and THROTTLE_TEXT in text)
    if status == 429 or (throttle_said and not is_profile):
        return ThrottledError(
            f"the org is over its requests-per-minute limit (HTTP {status}); amptools slows "
            "down and retries. Lower rate_limit= if other tools share the org's 600 a minute.",
            retry_after=_parse_retry_after(headers.get("Retry-After")),
            **context,
        )
    if status == 401:
        if "Missing" in text:
            why = ("the request had no valid 'Authorization: Api-Key <key>' header — "
                   "is the key empty?")
        else:
            why = ("the service rejected the secret key (Invalid Api-Key) — check that "
                   f"{KEY_VARIABLE} holds this project's *secret* key, not its API key")
        return AuthenticationError(f"authentication failed (HTTP 401): {why}.", **context)
    if UNKNOWN_USER_TEXT in error_text:
        return UnknownUserError(
            f"the service has not seen this user ({error_text}): the id may be mistyped or "
            "belong to another project.",
            **context,
        )
    if 300 <= status < 400:
        location = urlsplit(headers.get("Location", ""))
        return RedirectError(
            f"the service redirected (HTTP {status}) to {location.scheme}://{location.netloc}; "
            "amptools never follows redirects so the key is not sent elsewhere. Use the "
            f"https:// base URL ({DEFAULT_BASE_URL}).",
            **context,
        )
    if status == 404:
        return NotFoundError(
            f"nothing at {url.split('?')[0]} (HTTP 404): the base URL or path is wrong; the "
            f"Profile API lives at {DEFAULT_BASE_URL}{ENDPOINT} (no EU endpoint exists).",
            **context,
        )
    if status >= 500:
        return ServerError(f"the Profile API failed (HTTP {status}); retried with backoff.", **context)
    if status >= 400 or error_text:
        return ProfileAPIError(
            f"the Profile API refused the request (HTTP {status}): {error_text or text[:200]!s}",
            **context,
        )
    if not isinstance(payload, dict):
        error = ResponseFormatError(
            f"the Profile API answered HTTP {status} with a body that is not a JSON object "
            f"({text[:80]!r}).",
            **context,
        )
        error.field = "(body)"
        return error
    return payload


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


_SCOPE_SALT = b"amptools.cache.scope.v1\x00"


def key_fingerprint(secret_key: str) -> str:
    """16 hex digits of a salted SHA-256 of the key: tells keys apart, reveals nothing."""
    return hashlib.sha256(_SCOPE_SALT + secret_key.encode("utf-8")).hexdigest()[:16]


def api_scope(base_url: str, secret_key: str) -> str:
    """Which API and project answers a client: its base URL and a key fingerprint.

    Caches keep answers apart by this, so one project's (or the sample org's) answers
    are never served to another. A loopback URL's port is left out: the sample org
    runs on a new port each time, and its key already says which org it is.
    """
    parts = urlsplit(base_url.rstrip("/"))
    netloc = parts.hostname if _is_loopback(parts.hostname) else parts.netloc
    return f"{parts.scheme}://{netloc}{parts.path} key:{key_fingerprint(secret_key)}"


def _key_problem(secret_key: Any) -> str | None:
    """What is wrong with a secret key, or None; never raises, never quotes the key."""
    if not isinstance(secret_key, str) or not secret_key.strip():
        return ("the secret key is empty: pass your project's secret key, set "
                f"{KEY_VARIABLE}, or use amptools.connect() to try the embedded sample org.")
    if any(c in secret_key for c in "\r\n"):
        return "the secret key contains a line break; paste it again without one."
    if not all("!" <= c <= "~" for c in secret_key.strip()):
        # Curly quotes, NBSP, a space inside: a key never has them, and http.client would
        # fail on them later with an error whose repr holds the whole header.
        return ("the secret key holds a character a key never has (a space, a curly quote "
                "or another non-ASCII character, often picked up by pasting it through a "
                "document or chat); paste it again as plain text.")
    return None


def _is_seconds(value: Any, *, zero: bool = False) -> bool:
    """A finite number of seconds, positive (or ≥ 0 with ``zero``); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0


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
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{what} {shown} is plain http: keys and data would travel unencrypted. Use "
            f"https:// ({use}); http is allowed only for 127.0.0.1/localhost.")
    return parts


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Answer(TypedDict):
    # What every error made from one HTTP answer carries.
    status: int
    body: str
    url: str


def _checked_ids(user_id: object, device_id: object) -> dict[str, str]:
    if user_id is None and device_id is None:
        raise InvalidQueryError(
            "give a user_id or a device_id (or both): the API needs one to know who to look up."
        )
    ids: dict[str, str] = {}
    if user_id is not None:
        ids["user_id"] = validate_id(user_id, "user_id")
    if device_id is not None:
        ids["device_id"] = validate_id(device_id, "device_id")
    return ids


def _encode_query(params: Mapping[str, str]) -> str:
    """Percent-encode every value; the commas that join id lists stay literal.

    Single ids (user_id, device_id) are encoded whole, commas included, so an id
    with a comma cannot be mistaken for two.
    """
    lists = {"rec_id", "comp_id", "prediction_id"}
    pieces = []
    for name, value in params.items():
        if name in lists:
            encoded = ",".join(quote(part, safe="") for part in value.split(","))
        else:
            encoded = quote(value, safe="")
        pieces.append(f"{name}={encoded}")
    return "&".join(pieces)


class _TooLarge(Exception):
    """A body past max_response_bytes (raw, or once decompressed)."""


def _read_body(response: requests.Response, limit: int) -> bytes:
    """The body, decompressed, read in chunks and refused past ``limit`` bytes.

    Decompression is ours (zlib with an output bound), not urllib3's, so a small
    gzip bomb cannot expand into gigabytes before anyone looks at the size.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in response.raw.stream(65536, decode_content=False):
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"more than {limit:,} bytes on the wire")
        chunks.append(chunk)
    data = b"".join(chunks)
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some servers send raw deflate.
        wbits = zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        raise zlib.error(f"unknown Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise _TooLarge(f"more than {limit:,} bytes once decompressed")
    return out


class ProfileClient(_KeyHolder):
    """A client of the Amplitude User Profile API.

    Parameters
    ----------
    secret_key : str
        The project's secret key. Sent only in the ``Authorization`` header.
    base_url : str
        ``https://profile-api.amplitude.com`` by default; ``http://`` only for loopback.
    timeout : float or (connect, read)
        Seconds; every request has both a connect and a read timeout.
    max_retries : int
        Retries after the first attempt for transient failures.
    rate_limit : int
        Requests per ``rate_period`` seconds for this client, all threads together.
        540 a minute leaves 10% of the org's 600 to other tools.
    rate_period : float
        The window of ``rate_limit`` in seconds.
    shared_budget : bool
        Share one budget with every client of the same scope on this machine, across
        threads and processes (see :mod:`amptools.budget`). False keeps this client's
        own limiter. An injected ``clock`` always keeps its own.
    backoff_base, backoff_cap, retry_after_cap : float
        The retry delays (see :func:`retry_delay`).
    deadline : float, optional
        Seconds one attempt may take in all (connect, send, headers and body): a
        server that trickles its answer cannot hold a worker longer. By default the
        connect timeout plus the read timeout.
    max_response_bytes : int
        The largest body accepted, on the wire and once decompressed (8 MiB; a profile
        is a few kilobytes). A larger one is a :class:`ResponseFormatError`.
    sleep, clock : callables
        Injected by tests; ``time.sleep`` and ``time.monotonic`` otherwise.
    rng : random.Random, optional
        Seeds the jitter.
    """

    _holds = "the secret key"

    def __init__(
        self,
        secret_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        max_retries: int = 4,
        rate_limit: int = 540,
        rate_period: float = 60.0,
        shared_budget: bool = True,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        deadline: float | None = None,
        max_response_bytes: int = 8 * 2**20,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        problem = _key_problem(secret_key)
        # No frame of a raised error may hold the key in a local (verbose tracebacks,
        # error trackers and `pytest -l` print locals), so drop it before anything raises.
        if problem is not None:
            del secret_key
            raise ConfigurationError(problem)
        self._auth = _ApiKeyAuth(_Secret(secret_key.strip()))
        del secret_key
        self.base_url = self._check_base_url(base_url)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            timeout = (float(timeout), float(timeout))
        if isinstance(timeout, list):
            timeout = tuple(timeout)
        if not isinstance(timeout, tuple) or len(timeout) != 2 or not all(_is_seconds(t) for t in timeout):
            raise ConfigurationError(
                f"timeout must be positive, finite seconds or (connect, read), got {timeout!r}.")
        self.timeout: tuple[float, float] = (timeout[0], timeout[1])
        for name, value in (("backoff_base", backoff_base), ("backoff_cap", backoff_cap),
                            ("retry_after_cap", retry_after_cap)):
            if not _is_seconds(value, zero=True):
                raise ConfigurationError(f"{name} must be finite seconds ≥ 0, got {value!r}.")
        self.deadline = float(sum(self.timeout)) if deadline is None else deadline
        if not _is_seconds(self.deadline):
            raise ConfigurationError(f"deadline must be positive, finite seconds, got {deadline!r}.")
        self.max_response_bytes = whole_number("max_response_bytes", max_response_bytes, minimum=1024)
        self.max_retries = whole_number("max_retries", max_retries, minimum=0)
        self.limiter = RateLimiter(rate_limit, rate_period, clock=clock, sleep=sleep,
                                   ledger=self._shared_ledger(shared_budget and clock is time.monotonic))
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._exposure_warned = False
        self._exposure_lock = threading.Lock()

    @staticmethod
    def _check_base_url(base_url: str) -> str:
        parts = checked_url(base_url, what="base_url", use=DEFAULT_BASE_URL)
        path = parts.path.rstrip("/")
        if path.endswith(ENDPOINT):
            path = path[: -len(ENDPOINT)]
        return f"{parts.scheme}://{parts.netloc}{path}"

    def _shared_ledger(self, shared: bool) -> Any:
        """The machine-wide budget of this client's scope, or None (this client's own)."""
        if not shared:
            return None
        from .budget import SharedBudget, budget_path, open_store, unusable

        scope = self.scope
        if self.is_sample:
            # api_scope drops a loopback port so sample-org caches are reused across
            # sessions, but two sample servers running at once are two orgs with two
            # limits: their budgets are kept apart by port.
            scope += f" port:{urlsplit(self.base_url).port}"
        try:
            return SharedBudget(open_store(), scope)
        except (OSError, sqlite3.Error) as error:
            unusable(budget_path(), error)  # said once, with what to do
            return None

    def quota(self) -> Quota:
        """What this client (its scope, when shared) used and is allowed: plain data.

        Returns
        -------
        Quota
            ``used_last_minute``, ``allowed_now`` (the pace per minute, lower after
            throttles), ``limit`` (the ceiling per minute), ``throttles`` (met by this
            client) and ``shared``; ``str()`` gives one line for a progress display.
        """
        return self.limiter.quota()

    @classmethod
    def from_env(cls, **kwargs: Any) -> ProfileClient:
        """A client for the key in ``AMPLITUDE_SECRET_KEY`` (and ``AMPLITUDE_PROFILE_API_URL``)."""
        if not os.environ.get(KEY_VARIABLE, "").strip():
            raise ConfigurationError(
                f"{KEY_VARIABLE} is not set. Set it to your Amplitude project's secret key "
                "(Settings → Projects → your project → General), or try amptools without a "
                "key on the embedded sample org: amptools.connect() picks it automatically."
            )
        if URL_VARIABLE in os.environ and "base_url" not in kwargs:
            kwargs["base_url"] = os.environ[URL_VARIABLE]
        return cls(os.environ[KEY_VARIABLE], **kwargs)

    def __repr__(self) -> str:
        # Robust while __init__ is still running: verbose tracebacks repr `self`.
        limiter = getattr(self, "limiter", None)
        rate = f" rate_limit={limiter.limit}/{limiter.period:g}s" if limiter else ""
        return f"<amptools.ProfileClient {getattr(self, 'base_url', '(not set up)')}{rate}>"

    @property
    def endpoint(self) -> str:
        return self.base_url + ENDPOINT

    @property
    def scope(self) -> str:
        """Which API and project this client asks (see :func:`api_scope`); never the key."""
        return api_scope(self.base_url, self._auth._secret.reveal())

    @property
    def is_sample(self) -> bool:
        """True when the client talks to a local server (the embedded sample org)."""
        return _is_loopback(urlsplit(self.base_url).hostname)

    def _session(self) -> requests.Session:
        return _thread_session(self._local, pool_connections=1, pool_maxsize=4)

    def acknowledge_exposure(self) -> None:
        """Say that the user was told fetching recommendations logs exposure events (a
        widget's own note, say): this client then issues no :class:`ExposureWarning`."""
        with self._exposure_lock:
            self._exposure_warned = True

    def warn_exposure(self, query: ProfileQuery) -> None:
        """Warn once per client that fetching recommendations logs exposure events."""
        if not query.asks_recommendations:
            return
        with self._exposure_lock:
            if self._exposure_warned:
                return
            self._exposure_warned = True
        warn(EXPOSURE_MESSAGE, ExposureWarning)

    # -- one request -------------------------------------------------------------
    def request(
        self, params: Mapping[str, str], *, cancel: threading.Event | None = None
    ) -> tuple[dict[str, Any], int]:
        """Send one query, retrying transient failures; return (payload, attempts).

        Raises the mapped :class:`ProfileAPIError` leaf (with ``attempts`` set) when the
        answer is an error that retrying cannot fix or the retries are used up, and
        :class:`FetchCancelled` when ``cancel`` is set while waiting.
        """
        url = f"{self.endpoint}?{_encode_query(params)}"
        attempt = 0
        while True:
            attempt += 1
            result = self._send_once(url, cancel)
            if not isinstance(result, ProfileAPIError):
                return result, attempt
            result.attempts = attempt
            if not should_retry(result, attempt, self.max_retries):
                raise result
            delay = retry_delay(
                attempt,
                result.retry_after,
                base=self.backoff_base,
                cap=self.backoff_cap,
                retry_after_cap=self.retry_after_cap,
                jitter=lambda d: jitter(d, self._rng),
            )
            if isinstance(result, ThrottledError):
                self.limiter.throttled(delay)  # pauses every thread and slows the pace
            log.info("retrying after %s (attempt %d of %d) in %.2fs",
                     type(result).__name__, attempt, self.max_retries + 1, delay)
            if cancel is not None:
                if cancel.wait(delay):
                    raise FetchCancelled("cancelled while waiting to retry")
            else:
                self._sleep(delay)

    def _send_once(
        self, url: str, cancel: threading.Event | None
    ) -> dict[str, Any] | ProfileAPIError:
        with self.limiter.permit(cancel):
            answer = self._exchange(url)
        if isinstance(answer, ProfileAPIError):
            return answer
        status, text, headers = answer
        return map_response(status, text, headers, url)

    def _exchange(self, url: str) -> tuple[int, str, Mapping[str, str]] | ProfileAPIError:
        """One HTTP attempt under its deadline and size limit: (status, text, headers),
        or the error it stands for. Never lets a frame that held the key escape."""
        error: ProfileAPIError | None = None
        interrupted: tuple[type[BaseException], tuple[Any, ...]] | None = None
        watch = _Watch(self.deadline)
        try:
            with watch:
                # The key is added by the auth hook on the prepared request, so no
                # frame of ours holds it in a local that a verbose traceback shows.
                response = self._session().get(
                    url, auth=self._auth, timeout=self.timeout, allow_redirects=False,
                    stream=True, headers={"Accept": "application/json",
                                          "Accept-Encoding": "gzip, deflate"},
                )
                try:
                    body = _read_body(response, self.max_response_bytes)
                finally:
                    response.close()
            if watch.fired:  # the body may look whole when a close cut it short
                error = map_transport_error(TimeoutError(), url, deadline=self.deadline)
        except _TooLarge as too_large:
            error = ResponseFormatError(
                f"the answer is larger than max_response_bytes={self.max_response_bytes:,} "
                f"({too_large}); a profile is a few kilobytes. Raise max_response_bytes= if "
                "this is expected.", status=response.status_code, url=url)
            error.field = "(body)"
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError) as exc:
            error = map_transport_error(exc, url, deadline=self.deadline if watch.fired else None)
        except zlib.error:
            error = ResponseFormatError(
                "the answer's compressed body could not be decompressed.",
                status=response.status_code, url=url)
            error.field = "(body)"
        except Exception as exc:  # noqa: BLE001 - never a raw transport error to the user
            error = ProfileAPIError(f"the request failed unexpectedly ({type(exc).__name__}).", url=url)
        except BaseException as exc:  # Ctrl-C, SystemExit
            interrupted = (type(exc), exc.args if isinstance(exc, SystemExit) else ())
        # Raised here, outside the handler: the new exception has no context, so its
        # traceback holds no frame of requests, urllib3 or http.client (whose locals
        # hold the headers, key included) for a verbose traceback or tracker to print.
        if interrupted is not None:
            raise interrupted[0](*interrupted[1])
        if error is not None:
            return error
        return response.status_code, body.decode("utf-8", errors="replace"), response.headers

    def fetch_payloads(
        self,
        query: ProfileQuery,
        *,
        user_id: str | None = None,
        device_id: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The raw bodies for one user (one per ``query.parts()``) and the attempts made.

        Raises :class:`InvalidQueryError` before any request when no id is given or
        an id is blank; otherwise as :meth:`request`, with ``attempts`` counting
        every request made for this user.
        """
        ids = _checked_ids(user_id, device_id)
        payloads = []
        attempts = 0
        for part in query.parts():
            try:
                payload, used = self.request({**ids, **part.to_params()}, cancel=cancel)
            except ProfileAPIError as error:
                error.attempts += attempts
                raise
            attempts += used
            payloads.append(payload)
        return payloads, attempts

    def get_profile(
        self,
        user_id: str | None = None,
        *,
        device_id: str | None = None,
        query: ProfileQuery | None = None,
        **options: Any,
    ) -> UserProfile:
        """Fetch one user's profile.

        Parameters
        ----------
        user_id, device_id : str
            Who to ask about; at least one. Both may be given.
        query : ProfileQuery, optional
            What to ask for; ``**options`` is shorthand (``recs=("testRecId",)``).

        Returns
        -------
        UserProfile

        Raises
        ------
        InvalidQueryError
            Before any request, when the ids or options are bad.
        ProfileAPIError
            One of its leaves, when the service refuses or fails.
        """
        query = ProfileQuery.from_options(query, **options)
        ids = _checked_ids(user_id, device_id)
        self.warn_exposure(query)
        names = NameLearner(self.scope, query, total=0)
        if names.active and (not names.names or names.clash_with_listed):
            # Nothing is known of the org's names yet (or a listed computation is also a
            # property's name): this user is asked the two-request way, which keeps them
            # apart exactly and teaches the names.
            split = query.split()
            payloads, _ = self.fetch_payloads(split, user_id=ids.get("user_id"), device_id=ids.get("device_id"))
            names.learn_exact(payloads[0], payloads[-1])
            names.settle()
            return UserProfile.from_payloads(payloads, split)
        payloads, _ = self.fetch_payloads(query, user_id=ids.get("user_id"), device_id=ids.get("device_id"))
        if names.active:
            names.learn_types(payloads[0])
            if names.unsure(payloads[0]):
                # A key never seen apart: this user's computations alone tell it.
                try:
                    alone, _ = self.request({**ids, **names.refresh_part.to_params()})
                except ProfileAPIError:
                    pass  # the key stays unverified, and flagged
                else:
                    names.learn_refresh(payloads[0], alone)
        return UserProfile.from_payloads(payloads, query, names.settle() if names.active else None)

    def get_profiles(
        self,
        ids: Iterable[str],
        query: ProfileQuery | None = None,
        *,
        id_type: IdType = "user_id",
        workers: int = 8,
        progress: bool = True,
        cache: ProfileCache | PathLike | None = None,
        max_age: float | timedelta | None = None,
        cancel: threading.Event | None = None,
        on_progress: ProgressHook | None = None,
        **options: Any,
    ) -> ProfileSet:
        """Fetch many users at this client's rate limit; one outcome per unique id.

        Parameters are those of :func:`amptools.bulk.fetch_profiles`: ``id_type``
        (``"user_id"`` or ``"device_id"``), ``workers``, ``progress`` (a tqdm bar),
        ``cache`` (a SQLite path: never fetch a user twice, resume after a crash),
        ``max_age`` (seconds after which cached answers are refetched), ``cancel``
        (a ``threading.Event``), ``on_progress(done, total, counts)``; ``**options``
        are :class:`ProfileQuery` shorthand.

        Returns
        -------
        ProfileSet
            ``.profiles`` in input order and ``.failures`` (user_id, device_id, status,
            http_status, attempts, error).
        """
        from .bulk import fetch_profiles

        return fetch_profiles(self, ids, query, id_type=id_type, workers=workers,
                              progress=progress, cache=cache, max_age=max_age, cancel=cancel,
                              on_progress=on_progress, **options)


# -- plain GETs for Amplitude's other REST APIs (cohorts.py) --------------------------
class _BasicAuth(requests.auth.AuthBase):
    """HTTP Basic with the API key as user and the secret key as password (Dashboard APIs)."""

    def __init__(self, user: _Secret, password: _Secret) -> None:
        self._user = user
        self._password = password

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        basic = requests.auth.HTTPBasicAuth(self._user.reveal(), self._password.reveal())
        signed: requests.PreparedRequest = basic(request)  # the stubs type __call__ loosely
        return signed

    def __repr__(self) -> str:
        return "<BasicAuth ***>"


class _NoAuth(requests.auth.AuthBase):
    # An explicit auth object also stops requests from adding ~/.netrc credentials,
    # so a pre-signed storage URL receives no Authorization header at all.
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


class HTTPAnswer:
    """One HTTP answer as plain values: what :class:`HTTPGetter` hands to other modules."""

    __slots__ = ("content", "headers", "status", "url")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, url: str) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class HTTPGetter:
    """Single GETs with Basic auth (or none), redirects never followed, quiet connections.

    The transport half of :class:`amptools.cohorts.CohortClient`, kept here so that
    ``client.py`` stays the only module that imports ``requests``. Transport failures
    come back as :class:`TransportError` (see :func:`map_transport_error`); what a
    status means is the caller's business.
    """

    def __init__(self, api_key: _Secret, secret_key: _Secret, *,
                 timeout: tuple[float, float] = (5.0, 60.0)) -> None:
        self._auth = _BasicAuth(api_key, secret_key)
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self) -> str:
        return "<amptools.client.HTTPGetter ***>"

    def __reduce__(self) -> Any:
        raise TypeError("an HTTPGetter holds the keys and cannot be pickled.")

    def _session(self) -> requests.Session:
        return _thread_session(self._local, pool_connections=2, pool_maxsize=2)

    def get(self, url: str, *, authorized: bool = True,
            headers: Mapping[str, str] | None = None) -> HTTPAnswer | TransportError:
        """GET ``url`` once; ``authorized=False`` sends no ``Authorization`` header at all."""
        try:
            response = self._session().get(
                url, auth=self._auth if authorized else _NoAuth(), headers=dict(headers or {}),
                timeout=self.timeout, allow_redirects=False,
            )
            content = response.content
        except requests.RequestException as exc:
            error = map_transport_error(exc, url.split("?")[0] if not authorized else url)
            error.__cause__ = None
            return error
        return HTTPAnswer(response.status_code, dict(response.headers), content, url)
