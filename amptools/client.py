"""ProfileClient: one request to the Profile API, done right.

What an answer means is decided here, in one function (:func:`map_response`); how a
request is made, bounded and retried is :mod:`amptools.transport`'s (the only module
that imports ``requests``): one attempt under a deadline and a byte cap, transport
failures mapped to :class:`TransportError`, the retry policy as plain functions
(:func:`should_retry`, :func:`retry_delay`, re-exported here) and one retry loop.

The secret key lives in the ``Authorization`` header of each request and nowhere
else: not in ``repr``, URLs, exceptions or logs. Redirects are never followed
(so the key is never sent to another host), and the connections amptools opens
ignore ``http.client`` debug printing, which would otherwise echo the header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlsplit

from .errors import (
    AmplitudeAPIError,
    AmptoolsWarning,
    AuthenticationError,
    ConfigurationError,
    InvalidQueryError,
    NotFoundError,
    ProfileAPIError,
    RedirectError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
    UnknownUserError,
    warn,
    whole_number,
)
from .models import UserProfile
from .names import NameLearner
from .query import ORG_REQUESTS_PER_MINUTE, IdType, ProfileQuery, encode_params, validate_id
from .ratelimit import Quota, RateLimiter
from .transport import (
    ApiKeyAuth,
    HTTPAnswer,
    KeyHolder,
    RetryPolicy,
    Secret,
    call_with_retries,
    checked_seconds,
    checked_timeout,
    checked_url,
    exchange,
    is_loopback,
    jitter,
    map_transport_error,
    parse_retry_after,
    retry_delay,
    should_retry,
    thread_session,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from .budget import Budget

    from ._types import PathLike
    from .bulk import ProfileSet, ProgressHook
    from .cache import ProfileCache

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINT",
    "ExposureWarning",
    "ProfileClient",
    "api_scope",
    "checked_url",
    "exposure_message",
    "jitter",
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


def exposure_message(*, cache: bool) -> str:
    """The :class:`ExposureWarning` text; its advice depends on whether the run has a cache."""
    advice = ("Fetch only the users you need: your cache keeps their answers, so fetching them "
              "again sends no request for a user it holds." if cache else
              "Fetch only the users you need, and fetch through a cache (get_profiles(..., "
              "cache='profiles.sqlite'), or --cache on the command line) so that fetching them "
              "again asks the service for nothing it already has.")
    return ("Fetching recommendations logs a recommendation exposure event in Amplitude for "
            f"every user asked about, which feeds the measurement of live experiments. {advice}")


#: The text for a run without a cache (kept for those who imported it).
EXPOSURE_MESSAGE = exposure_message(cache=False)


# -- the mapping of answers to errors -------------------------------------------------
def map_response(
    status: int, text: str, headers: Mapping[str, str], url: str
) -> dict[str, Any] | ProfileAPIError:
    """Turn one HTTP answer into the JSON payload, or the error it stands for."""
    context: _ErrorContext = {"status": status, "body": text, "url": url}
    error_text = ""
    try:
        payload: Any = json.loads(text)
    except ValueError:  # empty, or not JSON: anything but an object is "no JSON object" below
        payload = None  # pragma: no mutate — mutmut: "" or any non-dict here is the same answer
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
            "down and retries. Lower rate_limit= if other tools share the org's "
            f"{ORG_REQUESTS_PER_MINUTE} a minute.",
            retry_after=parse_retry_after(headers.get("Retry-After")),
            **context,
        )
    if status == 401:
        if "Missing" in text:
            why = ("the request had no valid 'Authorization: Api-Key <key>' header — "
                   "is the key empty?")
        else:
            why = ("the service rejected the secret key (Invalid Api-Key) — check that "
                   f"{KEY_VARIABLE} holds this project's *secret* key, not its API key.")
        return AuthenticationError(f"authentication failed (HTTP 401): {why}", **context)
    if UNKNOWN_USER_TEXT in error_text:
        return UnknownUserError(
            f"the service has not seen this user ({error_text}): the id may be mistyped or "
            "belong to another project.",
            **context,
        )
    if 300 <= status < 400:
        location = urlsplit(headers.get("Location", ""))  # pragma: no mutate — mutmut: any default for a missing Location names no address
        where = f"{location.scheme}://{location.netloc}" if location.netloc else "an address it did not name"
        return RedirectError(
            f"the service redirected (HTTP {status}) to {where}; "
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
    netloc = parts.hostname if is_loopback(parts.hostname) else parts.netloc
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


class _ErrorContext(TypedDict):
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




class ProfileClient(KeyHolder):
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
    budget : str, optional
        A team's budget: a Redis URL (``redis://[:password@]host[:port][/db]``,
        ``rediss://`` with TLS, ``unix:///path/redis.sock``) that every client of the
        org, on every machine, names (see :mod:`amptools.redis_budget`; needs
        ``pip install 'amptools[team]'``). By default ``$AMPTOOLS_BUDGET_URL``, else the
        machine's budget file. The password is never shown.
    backoff_base, backoff_cap, retry_after_cap : float
        The retry delays (see :func:`retry_delay`).
    deadline : float, optional
        Seconds one attempt may take in all (connect, send, headers and body): a
        server that trickles its answer cannot hold a worker longer. By default the
        connect timeout plus the read timeout.
    max_response_bytes : int
        The largest body accepted, on the wire and once decompressed (8 MiB; a profile
        is a few kilobytes; at least 1024). A larger one is a :class:`ResponseFormatError`.
    sleep, clock : callables
        Injected by tests; ``time.sleep`` and ``time.monotonic`` otherwise.
    rng : random.Random, optional
        Seeds the jitter.

    Attributes
    ----------
    budget : Budget or None
        Where the shared budget lives (:class:`amptools.budget.Budget`: the machine's
        file or the team's Redis), or None for a client that keeps its own.
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
        budget: str | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        deadline: float | None = None,
        max_response_bytes: int = 8 * 2**20,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        # The budget's URL may hold a password: held as a Secret before anything can raise.
        if budget is not None and not isinstance(budget, (str, Secret)):
            raise ConfigurationError(f"budget= takes a Redis URL as text (redis://host:6379/0), "
                                     f"got {type(budget).__name__}.")
        team = Secret(budget.strip()) if isinstance(budget, str) else budget
        del budget
        problem = _key_problem(secret_key)
        # No frame of a raised error may hold the key in a local (verbose tracebacks,
        # error trackers and `pytest -l` print locals), so drop it before anything raises.
        if problem is not None:
            del secret_key
            raise ConfigurationError(problem)
        self._key = Secret(secret_key.strip())
        self._auth = ApiKeyAuth(self._key)
        del secret_key
        self.base_url = self._check_base_url(base_url)
        self.timeout: tuple[float, float] = checked_timeout(timeout)
        policy = RetryPolicy(max_retries, backoff_base, backoff_cap, retry_after_cap)  # checks them
        self.deadline = checked_seconds("deadline", sum(self.timeout) if deadline is None else deadline)
        self.max_response_bytes = whole_number("max_response_bytes", max_response_bytes, minimum=1024)
        self.max_retries = policy.max_retries
        if team is not None and not shared_budget:
            raise ConfigurationError("budget= names a shared budget and shared_budget=False asks for none: "
                                     "give only one of them.")
        self.budget: Budget | None = None
        self.limiter = RateLimiter(rate_limit, rate_period, clock=clock, sleep=sleep,
                                   ledger=self._shared_ledger(shared_budget and clock is time.monotonic, team))
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._exposure_warned = False  # pragma: no mutate — mutmut: None reads as False (only `if` asks it)
        self._exposure_lock = threading.Lock()

    @staticmethod
    def _check_base_url(base_url: str) -> str:
        parts = checked_url(base_url, what="base_url", use=DEFAULT_BASE_URL)
        path = parts.path.rstrip("/")
        if path.endswith(ENDPOINT):
            path = path[: -len(ENDPOINT)]
        return f"{parts.scheme}://{parts.netloc}{path}"

    def _shared_ledger(self, shared: bool, team: Secret | None) -> Any:
        """This client's ledger in the shared budget of its scope (the team's Redis when
        ``team`` or ``$AMPTOOLS_BUDGET_URL`` names one, else the machine's file), or None
        (this client's own)."""
        if not shared:
            return None
        from .budget import budget_path, open_budget, unusable

        scope = self.scope
        if is_loopback(urlsplit(self.base_url).hostname):
            # api_scope drops a loopback port so sample-org caches are reused across
            # sessions, but two local servers running at once (sample orgs, in this
            # process or another) are two orgs with two limits: their budgets are kept
            # apart by port.
            scope += f" port:{urlsplit(self.base_url).port}"
        try:
            self.budget = open_budget(team)
        except (OSError, sqlite3.Error) as error:
            unusable(budget_path(), error)  # said once, with what to do
            return None
        return self.budget.ledger(scope)

    def quota(self) -> Quota:
        """What this client (its scope, when shared) used and is allowed: plain data.

        Returns
        -------
        Quota
            ``used_last_minute``, ``allowed_now`` (the pace per minute, lower after
            throttles), ``limit`` (the ceiling per minute), ``throttles`` (met by this
            client), ``shared``, ``clients`` and ``budget`` (where the budget lives:
            ``"this machine"``, ``"the team's Redis redis://host:6379/0"``, never a
            password); ``str()`` gives one line for a progress display.
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
        return api_scope(self.base_url, self._key.reveal())

    @property
    def is_sample(self) -> bool:
        """True when the client talks to an embedded sample org of this process
        (:func:`amptools.connection.sample_server` says which); a local proxy is not one."""
        from .connection import is_sample

        return is_sample(self.base_url)

    def acknowledge_exposure(self) -> None:
        """Say that the user was told fetching recommendations logs exposure events (a
        widget's own note, say): this client then issues no :class:`ExposureWarning`."""
        with self._exposure_lock:
            self._exposure_warned = True

    def warn_exposure(self, query: ProfileQuery, *, cache: bool = False) -> None:
        """Warn once per client that fetching recommendations logs exposure events
        (``cache``: whether the run fetches through a cache, which the advice depends on)."""
        if not query.asks_recommendations:
            return
        with self._exposure_lock:
            if self._exposure_warned:
                return
            self._exposure_warned = True
        warn(exposure_message(cache=cache), ExposureWarning)

    # -- one request -------------------------------------------------------------
    def request(
        self, params: Mapping[str, str], *, cancel: threading.Event | None = None
    ) -> tuple[dict[str, Any], int]:
        """Send one query, retrying transient failures; return (payload, attempts).

        Raises the mapped :class:`ProfileAPIError` leaf (with ``attempts`` set) when the
        answer is an error that retrying cannot fix or the retries are used up, and
        :class:`FetchCancelled` when ``cancel`` is set while waiting.
        """
        url = f"{self.endpoint}?{encode_params(params)}"
        policy = RetryPolicy(self.max_retries, self.backoff_base, self.backoff_cap, self.retry_after_cap)
        return call_with_retries(lambda: self._send_once(url, cancel), policy, cancel=cancel,
                                 sleep=self._sleep, rng=self._rng, before_wait=self._before_retry)

    def _before_retry(self, error: AmplitudeAPIError, attempt: int, delay: float) -> None:
        if isinstance(error, ThrottledError):
            self.limiter.throttled(delay)  # pauses every thread and slows the pace

    def _send_once(
        self, url: str, cancel: threading.Event | None
    ) -> dict[str, Any] | ProfileAPIError:
        with self.limiter.permit(cancel):
            answer = self._exchange(url)
        if isinstance(answer, ProfileAPIError):
            return answer
        return map_response(answer.status, answer.text, answer.headers, url)

    def _exchange(self, url: str) -> HTTPAnswer | ProfileAPIError:
        """One HTTP attempt under its deadline and size limit (see :func:`transport.exchange`):
        the answer, or the error it stands for. Never lets a frame that held the key escape."""
        # (mutmut: the pool sizes change how many sockets are kept, never an answer.)
        session = thread_session(self._local, pool_connections=1, pool_maxsize=4)  # pragma: no mutate
        return exchange(session, url, auth=self._auth, timeout=self.timeout, deadline=self.deadline,
                        max_bytes=self.max_response_bytes, headers={"Accept": "application/json"},
                        too_large="; a profile is a few kilobytes")

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
