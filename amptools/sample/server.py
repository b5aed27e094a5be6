"""A real HTTP server that plays the Amplitude User Profile API on 127.0.0.1.

It answers ``GET {url}/v1/userprofile`` from a :class:`~amptools.sample.dataset.SampleOrg`
and can inject faults (server errors, throttling, connection resets, stalls,
truncated bodies) at seeded, reproducible rates. Only the standard library is used.

Statuses, checked in this order:

=====================================================  =======================================
situation                                              answer
=====================================================  =======================================
path other than ``/v1/userprofile`` or not ``GET``     404, empty body
``Authorization`` missing or not ``Api-Key <key>``     401 ``Missing Api-Key in Authorization header``
wrong key                                              401 ``Invalid Api-Key``
more than ``rate_limit`` admitted in ``window`` s      429 ``{"error":"Number of requests per minute ..."}``
                                                       with ``Retry-After`` (whole seconds)
(injected fault, see :class:`Faults`)                  500/502/503, 429, reset, stall, truncate
neither ``user_id`` nor ``device_id``                  400 ``{"error":"user_id or device_id is required"}``
unknown ids (or ids of two different users)            400 ``{"error":"User id and device id not seen before"}``
bad ``rec_type``/``propensity_type``, no ``rec_id``    400 ``{"error": "..."}``
otherwise                                              200, ``application/json``, the payload
=====================================================  =======================================

Throttled requests are not admitted, so they do not count against the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from amptools.connection import register_sample_server, sample_server, unregister_sample_server
from amptools.query import ORG_REQUESTS_PER_MINUTE
from amptools.sample.cohorts import PREFIX as COHORTS_PREFIX
from amptools.sample.cohorts import SampleCohorts
from amptools.sample.dataset import SampleOrg, SampleRequestError

if TYPE_CHECKING:
    from amptools.client import ProfileClient
    from amptools.cohorts import CohortClient

__all__ = ["ENDPOINT", "THROTTLE_BODY", "Arrival", "Change", "Faults", "SampleServer", "running", "serve"]

ENDPOINT = "/v1/userprofile"
THROTTLE_BODY = (
    '{"error":"Number of requests per minute exceeds system limit. '
    'Contact Support if you need this limit raised"}'
)
UNKNOWN_USER_ERROR = "User id and device id not seen before"
MISSING_IDS_ERROR = "user_id or device_id is required"
MISSING_KEY_TEXT = "Missing Api-Key in Authorization header"
INVALID_KEY_TEXT = "Invalid Api-Key"
# Ids lists may also arrive as repeated parameters; they are joined with commas.
_LIST_PARAMS = frozenset({"rec_id", "comp_id", "prediction_id"})
_SERVER_ERRORS = ((500, b"Internal Server Error"), (502, b"Bad Gateway"), (503, b"Service Unavailable"))
_FAULT_KINDS = ("server_error", "throttle", "reset", "stall", "truncate")


@dataclass
class Faults:
    """Failure rates injected by a :class:`SampleServer`.

    Each rate is a probability per attempt; the kinds exclude each other, so their
    sum must not exceed 1. The draw for a request is a hash of ``(seed, user_id,
    device_id, n)`` where ``n`` counts earlier attempts for the same ids: a retry
    gets a fresh draw, and the outcome does not depend on thread scheduling.

    Parameters
    ----------
    latency : float
        Seconds slept before answering every request.
    server_error : float
        Rate of 5xx answers (mostly 500, sometimes 502 or 503).
    throttle : float
        Rate of 429 answers with the documented throttling body.
    reset : float
        Rate of connections closed abruptly (TCP RST) without an answer.
    stall : float
        Rate of answers delayed by ``stall_seconds``.
    truncate : float
        Rate of 200 answers whose body is cut short of its ``Content-Length``.
    stall_seconds : float
        How long a stalled request sleeps before answering.
    seed : int
        Seed of the draws.
    """

    latency: float = 0.0
    server_error: float = 0.0
    throttle: float = 0.0
    reset: float = 0.0
    stall: float = 0.0
    truncate: float = 0.0
    stall_seconds: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = [getattr(self, kind) for kind in _FAULT_KINDS]
        if any(rate < 0 or rate > 1 for rate in rates):
            raise ValueError("fault rates must be probabilities between 0 and 1")
        if sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must not add up to more than 1")
        if self.latency < 0 or self.stall_seconds < 0:
            raise ValueError("latency and stall_seconds must not be negative")

    def draw(self, user_id: str, device_id: str, attempt: int) -> tuple[str | None, float]:
        """Decide the fault of one attempt.

        Parameters
        ----------
        user_id, device_id : str
            The request's ids (empty when absent).
        attempt : int
            How many earlier attempts carried the same ids.

        Returns
        -------
        tuple of (str or None, float)
            The fault kind (one of ``server_error``, ``throttle``, ``reset``,
            ``stall``, ``truncate``) or None, and a second uniform number in
            [0, 1) used to pick details such as the 5xx status.
        """
        text = f"{self.seed}\x1f{user_id}\x1f{device_id}\x1f{attempt}"
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "big") / 2**64
        second = int.from_bytes(digest[8:], "big") / 2**64
        edge = 0.0
        for kind in _FAULT_KINDS:
            edge += getattr(self, kind)
            if first < edge:
                return kind, second
        return None, second


@dataclass(frozen=True)
class Change:
    """A change of the org once the server answered ``after`` profile requests, as a
    real org changes while a long fetch runs (someone creates or deletes a computation).

    Parameters
    ----------
    after : int
        Profile requests answered (with a profile or an error) before the change.
    add_computation, remove_computation, add_property : str, optional
        The name created or deleted (see :meth:`SampleOrg.add_computation`). A computation
        with the name of a property makes a clash.
    """

    after: int
    add_computation: str | None = None
    remove_computation: str | None = None
    add_property: str | None = None

    def apply(self, org: SampleOrg) -> None:
        """Make the change in ``org``."""
        if self.remove_computation is not None:
            org.remove_computation(self.remove_computation)
        if self.add_computation is not None:
            org.add_computation(self.add_computation)
        if self.add_property is not None:
            org.add_property(self.add_property)


@dataclass
class Arrival:
    """One request received by a :class:`SampleServer` (never its key).

    Attributes
    ----------
    time : float
        ``time.monotonic()`` when the request line was read.
    method : str
        The HTTP method.
    path : str
        The URL path, without the query string.
    params : dict of str to str
        The percent-decoded query parameters (repeated ``rec_id``,
        ``comp_id`` and ``prediction_id`` joined with commas, others last wins).
    status : int or None
        The status answered; None while in flight or when the connection was reset.
    fault : str or None
        The injected fault, if any.
    """

    time: float
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    fault: str | None = None


def parse_params(query: str) -> dict[str, str]:
    """Decode a query string the way the sample server reads it.

    Parameters
    ----------
    query : str
        The raw query string (after ``?``).

    Returns
    -------
    dict of str to str
        ``parse_qs`` semantics (``+`` is a space, ``%2B`` a plus, blank values
        kept); repeated list parameters are joined with commas.
    """
    parsed = parse_qs(query, keep_blank_values=True)
    return {
        name: ",".join(values) if name in _LIST_PARAMS else values[-1]
        for name, values in parsed.items()
    }


class _SlidingWindow:
    """Admit at most ``limit`` requests in any ``window`` seconds; with ``count_refused``
    a refused request counts too (nobody outside Amplitude knows which the service does)."""

    def __init__(self, limit: int, window: float, count_refused: bool = False) -> None:
        self.limit = limit
        self.window = window
        self.count_refused = count_refused
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self, now: float) -> float | None:
        """Admit a request, or return the seconds until one would be admitted."""
        with self._lock:
            while self._admitted and self._admitted[0] <= now - self.window:
                self._admitted.popleft()
            over = len(self._admitted) - self.limit
            if over >= 0:
                # Admitted again once enough of the counted requests left the window.
                wait = self._admitted[over] + self.window - now
                if self.count_refused:
                    self._admitted.append(now)
                return wait
            self._admitted.append(now)
            return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    owner: SampleServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (or a stop() that closes the socket) is normal here.
        error = sys.exc_info()[1]
        if isinstance(error, OSError) or self.owner._stopping.is_set():
            return
        super().handle_error(request, client_address)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "amptools-sample"
    timeout = 30
    server: _HTTPServer
    # Filled by BaseHTTPRequestHandler.send_header; typeshed leaves the private list out.
    _headers_buffer: list[bytes]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Silent: the arrivals list is the log, and it never holds the key.
        return

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # ------------------------------------------------------------------ helpers
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        truncate: bool = False,
    ) -> None:
        self._arrival.status = status
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        # Headers and body leave in one write: two small writes would meet
        # Nagle's algorithm and the client's delayed ACK (40 ms per request).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body[: max(1, len(body) // 2)] if truncate else body)
        self.flush_headers()

    def _json_error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False)
        self._send(status, body.encode("utf-8"), "application/json", headers)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        self.close_connection = True
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError:
            pass

    # ------------------------------------------------------------------- serve
    def _serve(self) -> None:
        owner = self.server.owner
        now = time.monotonic()
        split = urlsplit(self.path)
        params = parse_params(split.query)
        self._arrival = Arrival(time=now, method=self.command, path=split.path, params=params)
        owner._record(self._arrival)
        faults = owner.faults

        delay = owner.latency + (faults.latency if faults else 0.0)
        if delay > 0 and owner._stopping.wait(delay):
            return self._reset()

        if split.path.startswith(COHORTS_PREFIX):
            return owner.cohorts.handle(self, split.path, split.query)
        if split.path != ENDPOINT or self.command != "GET":
            # An unread request body would poison the kept-alive connection.
            if self.command != "GET":
                self.close_connection = True
            return self._send(404, b"")

        header = self.headers.get("Authorization")
        if header is None or not header.startswith("Api-Key ") or not header[8:].strip():
            return self._send(401, MISSING_KEY_TEXT.encode(), "text/plain; charset=utf-8")
        if not hmac.compare_digest(header[8:].strip().encode(), owner.secret_key.encode()):
            return self._send(401, INVALID_KEY_TEXT.encode(), "text/plain; charset=utf-8")

        wait = owner._limiter.admit(now)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            return self._send(
                429, THROTTLE_BODY.encode(), "application/json", {"Retry-After": retry_after}
            )

        user_id = params.get("user_id", "")
        device_id = params.get("device_id", "")
        fault, detail = owner._draw_fault(faults, user_id, device_id)
        self._arrival.fault = fault
        if fault == "reset":
            return self._reset()
        if fault == "stall" and faults is not None:
            if owner._stopping.wait(faults.stall_seconds):
                return self._reset()
        if fault == "server_error":
            status, text = _SERVER_ERRORS[0 if detail < 0.7 else 1 if detail < 0.85 else 2]
            return self._send(status, text, "text/plain; charset=utf-8")
        if fault == "throttle":
            return self._send(429, THROTTLE_BODY.encode(), "application/json", {"Retry-After": "1"})

        owner._answering()
        if not user_id and not device_id:
            return self._json_error(400, MISSING_IDS_ERROR)
        index = owner.org.find(user_id=user_id or None, device_id=device_id or None)
        if index is None:
            return self._json_error(400, UNKNOWN_USER_ERROR)
        try:
            payload = owner.org.payload(index, params)
        except SampleRequestError as error:
            return self._json_error(error.status, error.message)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(200, body, "application/json", truncate=fault == "truncate")


def running(url: str) -> SampleServer | None:
    """The sample server of this process that answers at ``url``, if any (the registry
    is :mod:`amptools.connection`'s, which the library asks)."""
    return sample_server(url)


class SampleServer:
    """The embedded User Profile API: a threaded HTTP server on 127.0.0.1.

    Parameters
    ----------
    rate_limit : int
        Requests admitted per ``window`` (sliding window); more answer 429.
    window : float
        Length of the rate-limit window in seconds.
    count_throttled : bool
        Count refused requests against the limit too (a stricter limiter: a client that
        keeps asking while throttled keeps the window full). False: only admitted ones.
    clash : bool
        A computation with the name of a property (``lifetime_value``), enabled for some
        users (see :class:`~amptools.sample.dataset.SampleOrg`).
    changes : sequence of Change
        Changes of the org made while it serves (a computation created after N requests).
    latency : float
        Seconds slept before answering every request.
    faults : Faults, optional
        Fault injection rates; none when omitted. Settable at runtime.
    seed : int, optional
        Seed of the sample org (``org.json``'s when omitted).
    n_users : int, optional
        Number of users of the sample org (``org.json``'s when omitted).
    secret_key : str, optional
        The key clients must send; by default one named after the org (seed and size),
        so a cache filled from this sample org is reused by later sessions.
        The Cohorts API (``/api/...``, see :mod:`amptools.sample.cohorts`) takes it as
        the password of HTTP Basic auth, with :attr:`api_key` as the user.
    port : int
        Port to bind on 127.0.0.1; a free one when 0.
    day : int
        The org's day (:mod:`amptools.sample.clock`): 0 is the org as drawn; on later
        days a model has retrained, users joined and left cohorts, computed properties
        moved. The same org on every day (one key, one scope).

    Examples
    --------
    >>> with SampleServer() as srv:  # doctest: +SKIP
    ...     client = srv.client()
    ...     profile = client.get_profile(user_id="testUser")
    """

    def __init__(
        self,
        *,
        rate_limit: int = ORG_REQUESTS_PER_MINUTE,
        window: float = 60.0,
        count_throttled: bool = False,
        clash: bool = False,
        changes: Sequence[Change] = (),
        latency: float = 0.0,
        faults: Faults | None = None,
        seed: int | None = None,
        n_users: int | None = None,
        secret_key: str | None = None,
        port: int = 0,
        day: int = 0,
    ) -> None:
        if rate_limit < 1 or window <= 0:
            raise ValueError("rate_limit must be at least 1 and window positive")
        self.rate_limit = rate_limit
        self.window = window
        self.count_throttled = count_throttled
        self.latency = latency
        self.org = SampleOrg(seed=seed, n_users=n_users, clash=clash, day=day)
        self._changes = sorted(changes, key=lambda change: change.after)
        self._answered = 0
        # The local org's default key is not a secret: it names the org (seed and size),
        # so caches filled from the same sample org in another session stay usable.
        self.secret_key: str = (secret_key if secret_key is not None
                                else f"sample-org-{self.org.seed}-{self.org.n_users}")
        # The Cohorts API's Basic auth pairs an API key with the secret key.
        self.api_key: str = f"sample-api-{self.org.seed}-{self.org.n_users}"
        #: The Behavioral Cohorts API of this org (job delay, storage host: see sample.cohorts).
        self.cohorts = SampleCohorts(self)
        self.port = port
        self._faults = faults
        self._limiter = _SlidingWindow(rate_limit, window, count_refused=count_throttled)
        self._arrivals: list[Arrival] = []
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = self.url if self._httpd is not None else "stopped"
        return f"<SampleServer {state}>"

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        """Base URL, like ``http://127.0.0.1:PORT`` (the endpoint is ``{url}/v1/userprofile``)."""
        if self._httpd is None:
            raise RuntimeError("the sample server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):  # never for an IPv4 server; typeshed allows it
            host = host.decode()
        return f"http://{host}:{port}"

    @property
    def faults(self) -> Faults | None:
        """The fault rates in force; assigning resets the per-id attempt counters."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        with self._lock:
            self._faults = value
            self._attempts.clear()

    @property
    def arrivals(self) -> list[Arrival]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._arrivals)

    def reset_arrivals(self) -> None:
        """Forget the recorded arrivals."""
        with self._lock:
            self._arrivals.clear()

    def start(self) -> SampleServer:
        """Bind and serve in a daemon thread.

        Returns
        -------
        SampleServer
            ``self``, started.
        """
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", self.port), RequestHandler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="amptools-sample-server", daemon=True,
        )
        self._thread.start()
        self._registered_url = self.url
        register_sample_server(self)
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled handlers and close every socket."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                connection.close()
            except OSError:
                pass
        httpd.server_close()
        self.cohorts.stop()
        unregister_sample_server(self._registered_url)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SampleServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> ProfileClient:
        """A :class:`amptools.client.ProfileClient` pointed at this server.

        Parameters
        ----------
        **kwargs
            Passed on to ``ProfileClient`` (``timeout``, ``max_retries``,
            ``rate_limit``, ...).

        Returns
        -------
        ProfileClient
            A client holding this server's key and URL.
        """
        from amptools.client import ProfileClient

        return ProfileClient(self.secret_key, base_url=self.url, **kwargs)

    def cohort_client(self, **kwargs: Any) -> CohortClient:
        """A :class:`amptools.cohorts.CohortClient` for this org's Cohorts API (keys included).

        Parameters
        ----------
        **kwargs
            Passed on to ``CohortClient`` (``cache``, ``timeout``, ``poll_base``, ...).

        Returns
        -------
        CohortClient
        """
        from amptools.cohorts import CohortClient

        return CohortClient(self.api_key, self.secret_key, base_url=self.url, **kwargs)

    # ---------------------------------------------------------------- internals
    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    def _answering(self) -> None:
        """Count one answered profile request; make the changes that fall due first."""
        with self._lock:
            while self._changes and self._changes[0].after <= self._answered:
                self._changes.pop(0).apply(self.org)
            self._answered += 1

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _draw_fault(
        self, faults: Faults | None, user_id: str, device_id: str
    ) -> tuple[str | None, float]:
        if faults is None:
            return None, 0.0
        with self._lock:
            attempt = self._attempts.get((user_id, device_id), 0)
            self._attempts[(user_id, device_id)] = attempt + 1
        return faults.draw(user_id, device_id, attempt)


def serve(port: int = 8765, **kwargs: Any) -> None:
    """Run a :class:`SampleServer` in the foreground until Ctrl-C.

    Parameters
    ----------
    port : int
        Port on 127.0.0.1 (0 picks a free one).
    **kwargs
        Passed on to :class:`SampleServer`.
    """
    server = SampleServer(port=port, **kwargs)
    with server:
        print(f"amptools sample server: {server.url}{ENDPOINT}")
        print(f"  a fake org of {server.org.n_users} users, rate limit "
              f"{server.rate_limit} per {server.window:g} s; try user_id=testUser")
        print(f"  sample org's local key (not a real Amplitude key): {server.secret_key}")
        print(f"  Cohorts API: {server.url}/api/3/cohorts (Basic auth, user {server.api_key}, "
              "password the key above)")
        print("  in Python: amptools.ProfileClient(<that key>, base_url="
              f"{server.url!r})")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopped.")
