"""The org's request budget shared by a team's machines, on Redis.

An analytics team is never one machine: each analyst's JupyterHub server is its own pod,
a nightly ``amptools fetch`` runs on a scheduler, a colleague works on a laptop, and all
of them draw on the org's 600 requests a minute. Point every client at one Redis
(``ProfileClient(..., budget="redis://host:6379/0")``, ``$AMPTOOLS_BUDGET_URL``, or
``amptools fetch --budget URL``) and they share one budget with the semantics of one
machine's (:mod:`amptools.budget`): the sliding window, the paced GCRA, slow start,
yielding and its memory, max-min fair shares between clients, leases, and claims on ids.

How:

- **Atomic steps on Redis's clock.** Each step (a grant, a pause, a throttle, the counts,
  a claim) is one call of one Lua script (:mod:`amptools.budget_lua`), run by its SHA
  (``EVALSHA``, loaded again after a ``NOSCRIPT``); Redis runs one script at a time, and
  the script reads the time from Redis (``TIME``), never from the machines, whose clocks
  differ. The arithmetic is :mod:`amptools.ratelimit`'s, written in Lua, with the
  constants passed from Python; a property test checks that the two agree.
- **Few round trips.** A grant takes up to a few permits at once when the pace allows them
  (the ones a client that fell behind by a round trip may send back to back anyway), and
  hands them out from a small stash for at most :data:`STASH_TTL`; a completed request is
  told with the next call, or within :data:`FLUSH` by a heartbeat thread, never by a
  round trip of its own. So a Redis 50 ms away still lets a client reach its ceiling.
- **Nothing left by the dead.** Every call, and a heartbeat every :data:`HEARTBEAT`
  seconds, says the process lives; a process not heard from for
  :data:`~amptools.budget_lua.ALIVE` seconds is dead: its permits complete, its share and
  its claims are free. A request whose answer never came stops counting after its lease.
- **Keys of one scope.** Every key is under ``amptools:v1:{<fingerprint>}``, a hash of the
  client's scope (base URL and key fingerprint; never the key), and expires an hour
  after its last write. Claims store a hash of the claimed key, not the ids.
- **Faults keep the promises.** Every call times out after :data:`TIMEOUT` seconds (one
  retry on a fresh connection, for a Redis that restarted): a Redis that is down costs
  no answer, the client paces alone (:class:`~amptools.ratelimit.RateLimiter`'s
  fallback) at a cautious share (:class:`CautiousLedger`), says so once, and rejoins when
  Redis answers again.

Needs the ``redis`` package: ``pip install 'amptools[team]'``. A single Redis (or one
with replicas) is assumed, not Redis Cluster. The URL's password is held as a
:class:`~amptools.transport.Secret`: never in a repr, an error, a log line or ``quota()``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .budget import Budget, ClaimStore
from .budget_lua import CONSTANTS, SCRIPT
from .errors import ConfigurationError
from .ratelimit import ClientPace, Counts, LocalLedger
from .transport import Secret

__all__ = [
    "ALONE_SHARE",
    "FLUSH",
    "HEARTBEAT",
    "KEY_PREFIX",
    "MAX_BATCH",
    "STASH_TTL",
    "TIMEOUT",
    "CautiousLedger",
    "RedisBudget",
    "RedisClaims",
    "RedisStore",
    "namespace",
    "open_redis",
]

log = logging.getLogger("amptools")

#: Seconds a Redis call may take (connect, or send and answer) before it fails: the
#: client goes on alone within a second of losing Redis.
TIMEOUT = 0.4
#: A client that never heard from Redis paces alone at this share of its ceiling (two
#: machines alone then stay within one ceiling); one that did, at its last fair share.
ALONE_SHARE = 0.5
#: The most permits one call takes.
MAX_BATCH = 8
#: Seconds a permit taken ahead may wait in the stash before it is given back unused.
STASH_TTL = 1.0
#: Seconds within which completed requests are told to Redis when no call tells them sooner.
FLUSH = 0.2
#: Seconds between two "this process lives" of an idle client (see budget_lua.ALIVE).
HEARTBEAT = 2.0
#: Every key starts with this (then the scope's fingerprint).
KEY_PREFIX = "amptools:v1"
_CONSTANT_ARGS = tuple(repr(float(value)) for _, value in CONSTANTS)


def namespace(scope: str) -> str:
    """The key prefix of a scope: ``amptools:v1:{<16 hex digits of its SHA-256>}``."""
    return f"{KEY_PREFIX}:{{{hashlib.sha256(scope.encode('utf-8')).hexdigest()[:16]}}}"


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# -- the URL --------------------------------------------------------------------------------
class _Parsed:
    """A Redis URL taken apart: the URL to connect to without its credentials, where it is
    (for people), and the credentials, held as Secrets."""

    __slots__ = ("password", "url", "username", "where")

    def __init__(self, url: str, where: str, username: Secret | None, password: Secret | None) -> None:
        self.url, self.where, self.username, self.password = url, where, username, password


def _parse(url: Secret) -> _Parsed | str:
    """The parts of ``url``, or what is wrong with it (text that never quotes the URL)."""
    try:
        parts = urlsplit(url.reveal())
        userinfo, at, hostport = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":") if at else ("", "", "")
        options = parse_qsl(parts.query, keep_blank_values=True)
        kept = [(name, value) for name, value in options if name not in ("password", "username")]
        for name, value in options:
            if name == "password":
                password = value
            elif name == "username":
                username = value
        scheme = parts.scheme.lower()
        if scheme == "unix":
            if not parts.path:
                return "a unix:// URL needs the socket's path (unix:///path/redis.sock)"
        else:
            host = urlsplit(f"//{hostport}")
            if not host.hostname:
                return "it names no host"
            host.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                return "the database after the host must be a number (redis://host:6379/0)"
        clean = urlunsplit((scheme, hostport, parts.path, urlencode(kept), ""))
        where = urlunsplit((scheme, hostport, parts.path, "", ""))
        return _Parsed(clean, where, Secret(unquote(username)) if username else None,
                       Secret(unquote(password)) if password else None)
    except Exception:  # noqa: BLE001 - said without the URL, whatever it was
        return "it cannot be read as a URL (a port that is not a number from 0 to 65535, or a bracket left open)"


def _redis_module() -> Any:
    try:
        import redis
    except ImportError:
        return None
    return redis


class _Credentials:
    """redis-py's credential provider, reading the password from a Secret when it connects."""

    def __init__(self, username: Secret | None, password: Secret) -> None:
        self._username, self._password = username, password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        if self._username is None:
            return (self._password.reveal(),)
        return (self._username.reveal(), self._password.reveal())

    def __repr__(self) -> str:
        return "<credentials ***>"


def _connection(module: Any, parsed: _Parsed, timeout: float) -> Any:
    """A redis-py client for the URL (its password read from a Secret on each connect), or
    None when redis-py refuses the URL's options. It connects when first used."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    credentials = _Credentials(parsed.username, parsed.password) if parsed.password is not None else None
    try:
        return module.Redis.from_url(
            parsed.url, credential_provider=credentials, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1), decode_responses=True,
            client_name="amptools")
    except (ValueError, TypeError):
        return None


class _User(Protocol):
    def beat(self, now: float) -> None: ...


# -- the store --------------------------------------------------------------------------------
class RedisStore(Budget):
    """A team's Redis: the budget and the claims of every client (of every machine) that
    names it.

    Parameters
    ----------
    url : Secret or str
        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
        ``unix:///path/redis.sock``.
    what : str
        How the URL was given, for errors.
    clock : callable, optional
        Tests only: a fake clock whose time every call passes instead of Redis's ``TIME``.
        With it no heartbeat thread runs (a thread on real time would tell the fake
        clock's time at moments the test does not choose); a test beats with ``beat(now)``.
    timeout : float
        Seconds a call may take (:data:`TIMEOUT`).
    """

    def __init__(self, url: Secret | str, *, what: str = "budget=",
                 clock: Callable[[], float] | None = None, timeout: float = TIMEOUT) -> None:
        secret = url if isinstance(url, Secret) else Secret(url)
        del url
        parsed = _parse(secret)
        module = _redis_module()
        if isinstance(parsed, str):
            raise ConfigurationError(f"{what} is not a Redis URL amptools can use: {parsed}.")
        if module is None:
            raise ConfigurationError(
                f"{what} names a Redis budget, which needs the redis package: "
                "pip install 'amptools[team]' (or pip install redis).")
        self.location = parsed.where
        self.where = f"the team's Redis {parsed.where}"
        self._clock = clock
        self._redis = _connection(module, parsed, timeout)
        if self._redis is None:
            raise ConfigurationError(f"{what} is not a Redis URL amptools can use: redis-py refused its "
                                     "options (the database, or a setting after '?').")
        self._script = self._redis.register_script(SCRIPT)
        #: This process's id on the store (its permits, clients and claims carry it).
        self.process = uuid.uuid4().hex[:16]
        #: The measured time of one call, seconds (a moving average).
        self.rtt = 0.0
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<amptools.redis_budget.RedisStore {getattr(self, 'location', '(not set up)')}>"

    def now(self) -> float:
        """The local clock the ledgers measure ages with (the test's fake one, if given)."""
        return self._clock() if self._clock is not None else time.monotonic()

    def call(self, key: str, op: str, *args: str) -> list[str]:
        """Run one operation of the script on the keys under ``key``; its reply as text."""
        clock = repr(self._clock()) if self._clock is not None else ""
        started = self.now()
        reply = self._script(keys=[key], args=[*_CONSTANT_ARGS, clock, op, *args])
        spent = self.now() - started
        self.rtt = spent if self.rtt == 0.0 else 0.8 * self.rtt + 0.2 * spent
        return [str(value) for value in reply]

    # -- the Budget interface -----------------------------------------------------------
    def ledger(self, scope: str) -> RedisBudget:
        return RedisBudget(self, scope)

    def claims(self, scope: str = "") -> RedisClaims:
        return RedisClaims(self, scope)

    def close(self) -> None:
        """Stop the heartbeat and close the connections (a later use opens them again)."""
        with self._lock:
            self._closed = True
        self._redis.close()

    # -- the heartbeat --------------------------------------------------------------------
    def register(self, user: _User) -> None:
        """Beat for ``user`` (a ledger or claims) every :data:`FLUSH` seconds while it lives."""
        with self._lock:
            self._users.add(user)
            self._closed = False
            if self._clock is not None:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="amptools-team-budget", daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        failed = False
        while True:
            time.sleep(FLUSH if not failed else 1.0)  # a Redis that is down is asked less often
            with self._lock:
                users = list(self._users)
                if self._closed or not users:
                    self._thread = None
                    return
            failed = False
            for user in users:
                try:
                    user.beat(self.now())
                except Exception as error:  # noqa: BLE001 - the next call tells it, or the lease
                    failed = True
                    log.debug("team budget heartbeat failed: %s: %s", type(error).__name__, error)


_stores: dict[tuple[str, int], RedisStore] = {}
_stores_lock = threading.Lock()


def open_redis(url: Secret | str, *, what: str = "budget=") -> RedisStore:
    """The process's :class:`RedisStore` for ``url`` (one per URL and process)."""
    secret = url if isinstance(url, Secret) else Secret(url)
    del url
    key = (_hashed(secret.reveal()), os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RedisStore(secret, what=what)
        return store


# -- one client's ledger ------------------------------------------------------------------------
class CautiousLedger(LocalLedger):
    """A team-budget client's stand-in while Redis cannot be reached: it paces alone (as
    :class:`~amptools.ratelimit.LocalLedger`) under a cautious ceiling, since the team's
    other clients cannot see it: its last fair share of the ceiling, or
    :data:`ALONE_SHARE` of its own when it never heard from Redis."""

    def __init__(self, ceiling: Callable[[int, float], int]) -> None:
        super().__init__()
        self._ceiling = ceiling

    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        return super().try_grant(now, self._ceiling(limit, period), period)

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        return super().throttled(now, granted_at, self._ceiling(limit, period), period)

    def counts(self, now: float, limit: int, period: float) -> Counts:
        return super().counts(now, self._ceiling(limit, period), period)


class RedisBudget:
    """One client's ledger in a :class:`RedisStore`, shared by every client of its scope on
    every machine that names the store (see :class:`~amptools.ratelimit.Ledger`).

    A grant is one script call: note this client as active with its ceiling, take the
    scope's pace and this client's max-min fair share of it, check the client's GCRA,
    the window and the client's ceiling (:func:`~amptools.ratelimit.grant_wait`), and
    record up to a few permits (the first is used, the others wait in a stash).
    """

    shared = True

    def __init__(self, store: RedisStore, scope: str) -> None:
        self.store = store
        self.scope = scope
        self.namespace = namespace(scope)
        self.where = store.where
        self.client = f"{store.process}.{uuid.uuid4().hex[:12]}"
        self.pace = ClientPace()
        self._lock = threading.Lock()
        self._stash: deque[tuple[int, float]] = deque()  # (permit, when it was taken)
        self._finished: list[tuple[int, float]] = []  # (permit, when it completed)
        self._returned: list[int] = []  # permits taken ahead and never used
        self._lost: list[str] = []  # grant calls whose answer never came (their permits are unused)
        self._period = 60.0
        self._fair: float | None = None  # this client's fair share of the ceiling, per second
        self._share: float | None = None  # and of the pace now
        self._last_call = -math.inf
        store.register(self)

    def __repr__(self) -> str:
        return f"<amptools.redis_budget.RedisBudget {self.namespace}>"

    # -- calls ----------------------------------------------------------------------------
    def _call(self, op: str, now: float, *args: str, call: str = "") -> list[str]:
        """One script call that also tells the permits completed and given back meanwhile
        (``call``: a grant's id, given back when its answer is lost)."""
        with self._lock:
            finished, returned, lost = self._finished, self._returned, self._lost
            self._finished, self._returned, self._lost = [], [], []
        done = ",".join(f"{number}:{max(0.0, now - at)!r}" for number, at in finished)
        back = ",".join(str(number) for number in returned)
        try:
            reply = self.store.call(self.namespace, op, self.client, *args, done, back, ",".join(lost))
        except BaseException:
            with self._lock:  # told with the next call that succeeds
                self._finished[:0] = finished
                self._returned[:0] = returned
                self._lost[:0] = lost + ([call] if call else [])
            raise
        self._last_call = now
        return reply

    def _give_back_stash(self, now: float, *, older_than: float | None = None) -> None:
        with self._lock:
            while self._stash and (older_than is None or now - self._stash[0][1] > older_than):
                self._returned.append(self._stash.popleft()[0])

    def _batch(self, limit: int, period: float) -> int:
        """Permits to ask for at once: those the pace lets through during one round trip, and one."""
        share = self._share if self._share is not None else limit / period
        return max(1, min(MAX_BATCH, 1 + math.ceil(self.store.rtt * share)))

    # -- the Ledger interface --------------------------------------------------------------------
    def try_grant(self, now: float, limit: int, period: float) -> tuple[float, int]:
        self._period = period
        self._give_back_stash(now, older_than=STASH_TTL)
        with self._lock:
            if self._stash:
                return 0.0, self._stash.popleft()[0]
        pace = self.pace
        call = uuid.uuid4().hex[:16]
        reply = self._call("grant", now, repr(limit / period), str(limit), repr(float(period)),
                           str(self._batch(limit, period)), repr(pace.tat), repr(pace.seen_decrease),
                           str(pace.credit), call, call=call)
        _, wait, share, fair, _, tat, seen, credit, *permits = reply
        self._share, self._fair = float(share), float(fair)
        pace.tat, pace.seen_decrease, pace.credit = float(tat), float(seen), int(credit)
        if not permits:
            return float(wait), 0
        with self._lock:
            self._stash.extend((int(number), now) for number in permits[1:])
        return 0.0, int(permits[0])

    def finish(self, token: int, now: float) -> None:
        """Noted here, told with the next call (at most :data:`FLUSH` later): no round trip."""
        with self._lock:
            self._finished.append((token, now))

    def pause(self, now: float, seconds: float) -> None:
        self._give_back_stash(now)  # no permit taken before the pause goes during it
        self._call("pause", now, repr(float(self._period)), repr(float(seconds)))

    def throttled(self, now: float, granted_at: float | None, limit: int, period: float) -> bool:
        self._give_back_stash(now)
        age = "" if granted_at is None else repr(max(0.0, now - granted_at))
        return self._call("throttled", now, str(limit), repr(float(period)), age)[1] == "1"

    def counts(self, now: float, limit: int, period: float) -> Counts:
        at, in_window, used, share, fair, not_before, clients = self._call(
            "counts", now, str(limit), repr(float(period)))
        self._share, self._fair = float(share), float(fair)
        return Counts(int(in_window), int(used), float(share), float(not_before) - float(at) + now, int(clients))

    def close(self) -> None:
        """This client leaves its scope: the others share the pace without it at once."""
        now = self.store.now()
        self._give_back_stash(now)
        self._call("leave", now, repr(float(self._period)))

    # -- alone, and the heartbeat -------------------------------------------------------------
    def cautious_limit(self, limit: int, period: float) -> int:
        """The ceiling to pace alone at: the fair share last heard, else ALONE_SHARE of ``limit``."""
        if self._fair is None:
            return max(1, round(limit * ALONE_SHARE))
        return max(1, min(limit, round(self._fair * period)))

    def stand_in(self) -> CautiousLedger:
        """The ledger its limiter paces with while Redis cannot be reached."""
        return CautiousLedger(self.cautious_limit)

    def flush(self, now: float, *, every: float = math.inf) -> None:
        """Tell the completed and unused permits now (and that this process lives, when
        the last call is ``every`` seconds old)."""
        with self._lock:
            due = bool(self._finished or self._returned or self._lost)
        if due or now - self._last_call >= every:
            self._call("sync", now, repr(float(self._period)))

    def beat(self, now: float) -> None:
        """The heartbeat's: give back a stash kept too long, tell what completed, say this
        process lives every :data:`HEARTBEAT` seconds (once the client has asked at all:
        a client made and never used asks Redis nothing)."""
        self._give_back_stash(now, older_than=STASH_TTL)
        self.flush(now, every=HEARTBEAT if self._last_call > -math.inf else math.inf)


# -- claims -------------------------------------------------------------------------------------
class RedisClaims(ClaimStore):
    """Claims on ids in a :class:`RedisStore` (see :class:`~amptools.budget.ClaimStore`):
    two machines sharing a profile store never fetch one id at once. Keys and owners
    are stored hashed; a claim expires on Redis's clock, and is free as soon as its
    process stops saying it lives."""

    def __init__(self, store: RedisStore, scope: str = "") -> None:
        self.store = store
        self.namespace = namespace(scope)
        self._beaten = -math.inf
        store.register(self)

    def __repr__(self) -> str:
        return f"<amptools.redis_budget.RedisClaims {self.namespace}>"

    def _call(self, op: str, *args: str) -> list[str]:
        self._beaten = self.store.now()
        return self.store.call(self.namespace, op, *args)

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        milliseconds = str(max(1, math.ceil(ttl * 1000)))
        return self._call("claim", _hashed(key), _hashed(owner), self.store.process, milliseconds)[1] == "1"

    def release(self, key: str, owner: str | None = None) -> None:
        self._call("release", _hashed(key), "" if owner is None else _hashed(owner))

    def release_owner(self, owner: str) -> int:
        return int(self._call("release_owner", _hashed(owner))[1])

    def is_claimed(self, key: str) -> bool:
        return self._call("is_claimed", _hashed(key))[1] == "1"

    def beat(self, now: float) -> None:
        """Say this process lives (its claims hold) every :data:`HEARTBEAT` seconds, once used."""
        if self._beaten > -math.inf and now - self._beaten >= HEARTBEAT:
            self._call("alive", self.store.process)
