"""Many ids -> :class:`ProfileSet`: workers, pacing, progress, an outcome per id, resume.

Every worker of a run takes its permits from the client's one limiter (retries
included); duplicate ids are asked once and, with a cache, nothing already answered is
asked again; every unique id ends with exactly one outcome (``ok``, ``not_found`` or
``failed``). A 401 stops the run and raises with the partial set as ``error.partial``;
a cancel (the event, :meth:`BulkFetch.cancel`, Ctrl-C) returns the partial set, whose
unfetched ids are ``failed`` with :data:`CANCELLED_ERROR`, so a rerun with the same
cache fetches exactly those. Processes sharing a cache file claim each id machine-wide
(:mod:`amptools.budget`) and never fetch it twice. A query for properties and
computations is one request per user, told apart by :mod:`amptools.names`.

The promises and how each is kept: ``docs/python-api.md``, ``docs/quota.md`` and
``docs/reliability.md``.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from .cache import Decision, CacheWarning, ProfileCache, StoredParts, decide, open_cache
from .errors import (
    AmptoolsWarning,
    AuthenticationError,
    CacheError,
    ConfigurationError,
    FetchCancelled,
    InvalidQueryError,
    ProfileAPIError,
    UnknownUserError,
    warn,
    whole_number,
)
from .models import UserProfile, read_error
from .names import KeyKindWarning, NameLearner, warning_text
from .ratelimit import ClientPace
from .ids import unique_ids
from .query import ID_TYPES, STATUSES, IdType, ProfileQuery

if TYPE_CHECKING:
    from .client import ProfileClient

__all__ = [
    "FAILURE_COLUMNS",
    "OUTCOME_COLUMNS",
    "STATUSES",
    "BulkFetch",
    "IncompleteFetchWarning",
    "Outcome",
    "ProfileSet",
    "fetch_profiles",
    "start_fetch",
    "unique_ids",
]

log = logging.getLogger("amptools")

FAILURE_COLUMNS = ("user_id", "device_id", "status", "http_status", "attempts", "error")
OUTCOME_COLUMNS = ("id", "status", "http_status", "attempts", "error", "from_cache")
_FAILURE_DTYPES = {"user_id": "str", "device_id": "str", "status": "str",
                   "http_status": "Int64", "attempts": "int64", "error": "str"}
_OUTCOME_DTYPES = {"id": "str", "status": "str", "http_status": "Int64", "attempts": "int64",
                   "error": "str", "from_cache": "bool"}

CANCELLED_ERROR = "cancelled before it was fetched"
STOPPED_BY_AUTH_ERROR = "not fetched: the run stopped at an authentication failure (HTTP 401)"
# How long another process may hold an id of a shared cache before it is asked again:
# longer than one id's retries take (attempt deadlines and backoff included).
CLAIM_TTL = 300.0
# How often the coordinating thread looks at the cancel event while it waits.
_POLL = 0.05

ProgressHook = Callable[[int, int, Mapping[str, int]], None]


class IncompleteFetchWarning(AmptoolsWarning):
    """A bulk fetch stopped before every id was fetched (Ctrl-C); the result is partial."""


@dataclass(frozen=True)
class Outcome:
    """How one unique id ended.

    Attributes
    ----------
    id : str
        The user id or device id that was asked for.
    status : {"ok", "not_found", "failed"}
    http_status : int or None
        The last HTTP status seen (None when no answer arrived).
    attempts : int
        Requests made for this id in this run (the original fetch's, when cached).
    error : str or None
        Why it is not ``ok``.
    from_cache : bool
        True when the answer came from the cache, not the network.
    profile : UserProfile or None
        The parsed profile, for ``ok``.
    """

    id: str
    status: str
    http_status: int | None = None
    attempts: int = 0
    error: str | None = None
    from_cache: bool = False
    profile: UserProfile | None = field(default=None, repr=False)


class ProfileSet:
    """The result of a bulk fetch: profiles in input order and one outcome per unique id.

    Iterating yields the fetched profiles and ``len`` is their number.

    Attributes
    ----------
    query : ProfileQuery
        What was asked for each id.
    id_type : {"user_id", "device_id"}
        Which id the ids are.
    cancelled : bool
        True when the run was cancelled (cancel event or Ctrl-C) before it ended.
    elapsed : float
        Seconds the run took.
    cache_error : Exception or None
        Why writing to the cache failed during the run (the results are complete in
        memory but were not all kept in the cache); None when all went well.
    scope : str or None
        Which API and project answered (the client's ``scope``: base URL and a key
        fingerprint, never the key); snapshots keep it to tell orgs apart.
    """

    def __init__(
        self,
        outcomes: Iterable[Outcome],
        *,
        query: ProfileQuery,
        id_type: str = "user_id",
        cancelled: bool = False,
        elapsed: float = 0.0,
        cache_error: BaseException | None = None,
        scope: str | None = None,
    ) -> None:
        self._outcomes: dict[str, Outcome] = {}
        for outcome in outcomes:
            if outcome.status not in STATUSES:
                raise ValueError(f"unknown outcome status {outcome.status!r}")
            self._outcomes[outcome.id] = outcome
        self.query = query
        self.id_type = id_type
        self.cancelled = cancelled
        self.elapsed = elapsed
        self.cache_error = cache_error
        self.scope = scope

    # -- what came back --------------------------------------------------------------
    @property
    def profiles(self) -> list[UserProfile]:
        """The fetched profiles, in the order the ids were given (first occurrence)."""
        return [o.profile for o in self._outcomes.values() if o.profile is not None]

    @property
    def ids(self) -> list[str]:
        """The unique ids, in input order."""
        return list(self._outcomes)

    def outcome(self, id: str) -> Outcome:
        """The outcome of one id (KeyError when it was not asked)."""
        return self._outcomes[id]

    def get(self, id: str) -> UserProfile | None:
        """The profile fetched for ``id``, or None."""
        outcome = self._outcomes.get(id)
        return outcome.profile if outcome is not None else None

    @property
    def counts(self) -> dict[str, int]:
        """``{"ok": n, "not_found": n, "failed": n}``; the values sum to the unique ids."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for outcome in self._outcomes.values():
            counts[outcome.status] += 1
        return counts

    @property
    def ok(self) -> int:
        return self.counts["ok"]

    @property
    def not_found(self) -> int:
        return self.counts["not_found"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def from_cache(self) -> int:
        """How many outcomes were taken from the cache."""
        return sum(o.from_cache for o in self._outcomes.values())

    @property
    def failures(self) -> pd.DataFrame:
        """Every id that did not come back with a profile (``not_found`` and ``failed``).

        Returns
        -------
        DataFrame
            One row per such id, in input order: ``user_id``, ``device_id`` (the id in
            the column of ``id_type``, the other missing), ``status`` (``not_found`` or
            ``failed``), ``http_status`` (Int64, last HTTP status), ``attempts`` (int64),
            ``error`` (str).
        """
        rows = []
        for o in self._outcomes.values():
            if o.status == "ok":
                continue
            rows.append({
                "user_id": o.id if self.id_type == "user_id" else None,
                "device_id": o.id if self.id_type == "device_id" else None,
                "status": o.status, "http_status": o.http_status,
                "attempts": o.attempts, "error": o.error,
            })
        return _frame(rows, FAILURE_COLUMNS, _FAILURE_DTYPES)

    @property
    def outcomes(self) -> pd.DataFrame:
        """One row per unique id, in input order.

        Returns
        -------
        DataFrame
            ``id`` (str), ``status`` (``ok``/``not_found``/``failed``), ``http_status``
            (Int64), ``attempts`` (int64), ``error`` (str, missing for ``ok``),
            ``from_cache`` (bool).
        """
        rows = [{"id": o.id, "status": o.status, "http_status": o.http_status,
                 "attempts": o.attempts, "error": o.error, "from_cache": o.from_cache}
                for o in self._outcomes.values()]
        return _frame(rows, OUTCOME_COLUMNS, _OUTCOME_DTYPES)

    # -- combining -------------------------------------------------------------------
    def __add__(self, other: ProfileSet) -> ProfileSet:
        """Both sets' ids; where both hold an id, the later set's outcome wins unless it
        is ``failed`` and the earlier one is not (so a retry run patches holes)."""
        if not isinstance(other, ProfileSet):
            return NotImplemented
        if other.query != self.query or other.id_type != self.id_type:
            raise ValueError("only ProfileSets of the same query and id_type can be combined")
        merged = dict(self._outcomes)
        for id_, outcome in other._outcomes.items():
            known = merged.get(id_)
            if known is None or outcome.status != "failed" or known.status == "failed":
                merged[id_] = outcome
        return ProfileSet(merged.values(), query=self.query, id_type=self.id_type,
                          cancelled=other.cancelled, elapsed=self.elapsed + other.elapsed,
                          cache_error=other.cache_error or self.cache_error,
                          scope=self.scope if self.scope == other.scope else None)

    # -- container protocol ----------------------------------------------------------
    def __iter__(self) -> Iterator[UserProfile]:
        return iter(self.profiles)

    def __len__(self) -> int:
        return sum(o.profile is not None for o in self._outcomes.values())

    def __repr__(self) -> str:
        c = self.counts
        cached = f", {self.from_cache} from cache" if self.from_cache else ""
        tail = ", cancelled" if self.cancelled else ""
        if self.cache_error is not None:
            tail += ", not all kept in the cache"
        return (f"<ProfileSet {c['ok']} ok, {c['not_found']} not_found, {c['failed']} failed "
                f"of {len(self._outcomes)} ids{cached}{tail}>")


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame.astype(dtypes)




# -- the run -----------------------------------------------------------------------------
class ReceivedBody(NamedTuple):
    """One body a run received: the part it answers (the cache key), the body, the
    requests it took, and why it cannot be read (None when it can)."""

    key: str
    payload: Any
    attempts: int
    error: str | None


@dataclass(frozen=True)
class _Result:
    """What a worker hands the coordinating thread for one id: its outcome, and the
    bodies fetched in this run that are not cached yet, written together with it."""

    outcome: Outcome
    parts: tuple[ReceivedBody, ...] = ()
    auth_error: AuthenticationError | None = None


@dataclass(frozen=True)
class _EarlyBody:
    """One body of a split query that arrived while the id has more parts to fetch:
    cached at once so it survives a failure or a cancel before the next part."""

    id: str
    part: ReceivedBody


class _Progress:
    """The run's reporter: the counts, a bar (or lines) and the ``on_progress`` hook.

    Where it shows: a notebook-native bar in Jupyter (tqdm's widget), a tqdm bar on a
    terminal, and when stderr is piped (a log, a CI job) one line every
    :attr:`PIPED_EVERY` seconds instead of hundreds of ``\\r`` updates. The ETA comes
    from the pace the client's limiter allows (``limiter.pace`` requests per
    ``limiter.period``, read again as it changes), or from the measured rate when that is
    slower (latency, few workers); never from the opening burst alone.
    """

    #: Seconds between two lines when stderr is not a terminal.
    PIPED_EVERY = 5.0
    #: The measured rate is taken over this many recent seconds, once it spans
    #: :attr:`RATE_AFTER` of them (before that the pace alone gives the ETA).
    RATE_WINDOW = 30.0
    RATE_AFTER = 5.0
    #: How often the pace is read again (a shared budget reads it from a file).
    PACE_EVERY = 1.0

    def __init__(self, total: int, *, bar: bool, hook: ProgressHook | None, limiter: Any = None,
                 requests_per_id: int = 1, clock: Callable[[], float] = time.monotonic,
                 stream: Any = None) -> None:
        self.total = total
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.done = 0
        self.cached = 0
        self._want_bar = bar
        self._bar: Any = None
        self._lines = False
        self._hook = hook
        self._hook_failed = False
        self._limiter = limiter
        self._requests_per_id = max(1, requests_per_id)
        self._clock = clock
        self._stream = stream
        self._started = clock()
        self._samples: deque[tuple[float, int]] = deque()
        self._pace: tuple[float, float | None] = (float("-inf"), None)
        self._last_line = float("-inf")

    # -- where it shows -------------------------------------------------------------
    @staticmethod
    def _in_notebook() -> bool:
        """Whether this runs in a Jupyter kernel (tqdm.autonotebook's test)."""
        import sys

        ipython = sys.modules.get("IPython")
        try:
            shell = ipython.get_ipython() if ipython is not None else None
            return shell is not None and "IPKernelApp" in shell.config
        except Exception:
            return False

    def start(self, cached: list[Outcome]) -> None:
        """Count what the cache answered, then show the bar (cached ids start it as done,
        so they do not inflate the rate or the ETA)."""
        self.cached = len(cached)
        for outcome in cached:
            self.add(outcome, report=False)
        self._started = self._clock()
        self._samples.append((self._started, self.done))
        if self._want_bar:
            import sys

            stream = self._stream if self._stream is not None else sys.stderr
            notebook = self._in_notebook()
            if not notebook and not getattr(stream, "isatty", lambda: False)():
                self._lines = True
                self._stream = stream
                self._line(force=True)
            else:
                if notebook:
                    from tqdm.notebook import tqdm
                else:
                    from tqdm import tqdm  # type: ignore[assignment]
                self._bar = tqdm(total=self.total, initial=self.done, desc="profiles", unit="id",
                                 mininterval=0.2, dynamic_ncols=True, postfix=self._status(),
                                 bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self._notify()

    def add(self, outcome: Outcome, *, report: bool = True) -> None:
        self.counts[outcome.status] += 1
        self.done += 1
        if not report:
            return
        now = self._clock()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.RATE_WINDOW:
            self._samples.popleft()
        if self._bar is not None:
            self._postfix(refresh=False)
            self._bar.update(1)
        elif self._lines:
            self._line()
        self._notify()

    def close(self) -> None:
        if self._bar is not None:
            self._postfix(refresh=False)
            self._bar.close()
        elif self._lines:
            self._line(force=True, final=True)

    # -- what it says ---------------------------------------------------------------
    def pace_per_second(self) -> float | None:
        """Requests a second the limiter allows now (read at most every PACE_EVERY s)."""
        now = self._clock()
        read_at, pace = self._pace
        if now - read_at >= self.PACE_EVERY and self._limiter is not None:
            try:
                pace = float(self._limiter.pace) / float(self._limiter.period)
            except Exception:  # a budget file that cannot be read: the measured rate alone
                pace = None
            self._pace = (now, pace)
        return pace

    def eta(self) -> float | None:
        """Seconds until the last id is done, or None when nothing tells yet."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        estimates = []
        pace = self.pace_per_second()
        if pace:
            requests = float(left * self._requests_per_id)
            if self.done == self.cached and self._limiter is not None:
                # Before the first answer: a fresh run's first burst goes at once (a small
                # fetch is over before the pace matters).
                limit, period = self._limiter.limit, self._limiter.period
                requests = max(0.0, requests - ClientPace.burst(limit / period, period))
            estimates.append(requests / pace)
        (first_time, first_done), (last_time, last_done) = self._samples[0], self._samples[-1]
        if last_time - first_time >= self.RATE_AFTER and last_done > first_done:
            estimates.append(left * (last_time - first_time) / (last_done - first_done))
        return max(estimates) if estimates else None

    def _status(self) -> str:
        from tqdm import tqdm as std_tqdm

        eta = self.eta()
        parts = [f"ETA {std_tqdm.format_interval(eta) if eta is not None else '?'}"]
        pace = self.pace_per_second()
        if pace:
            parts.append(f"pace {pace * 60:,.0f}/min")
        parts += [f"{self.counts[status]:,} {status}" for status in ("not_found", "failed")
                  if self.counts[status]]
        if self.cached:
            parts.append(f"{self.cached:,} cached")
        return ", ".join(parts)

    def _postfix(self, refresh: bool = True) -> None:
        self._bar.set_postfix_str(self._status(), refresh=refresh)

    def _line(self, *, force: bool = False, final: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_line < self.PIPED_EVERY:
            return
        self._last_line = now
        from tqdm import tqdm as std_tqdm

        share = f" ({self.done / self.total:.0%})" if self.total else ""
        elapsed = std_tqdm.format_interval(now - self._started)
        if final:
            counts = ", ".join(f"{self.counts[status]:,} {status}" for status in STATUSES)
            text = f"profiles: {self.done:,}/{self.total:,} in {elapsed}: {counts}"
        else:
            text = f"profiles: {self.done:,}/{self.total:,}{share}, {elapsed} elapsed, {self._status()}"
        try:
            print(text, file=self._stream, flush=True)
        except (OSError, ValueError):  # a closed pipe must not lose the run
            self._lines = False

    def _notify(self) -> None:
        if self._hook is None:
            return
        try:
            self._hook(self.done, self.total, dict(self.counts))
        except Exception:  # a broken widget callback must not lose the run
            if not self._hook_failed:
                self._hook_failed = True
                log.exception("on_progress raised; the fetch goes on without it")




@dataclass(frozen=True)
class _Form:
    """One way of asking an id: a query, its requests and their cache keys."""

    query: ProfileQuery
    parts: tuple[ProfileQuery, ...]
    keys: tuple[str, ...]

    @classmethod
    def of(cls, query: ProfileQuery) -> _Form:
        parts = query.parts()
        return cls(query, parts, tuple(part.canonical() for part in parts))


@dataclass
class _Plan:
    """What the cache answers and how every other id is asked (see :func:`_plan`).

    ``cached`` holds the cache's answer by id (``ok``, ``not_found`` or ``failed``);
    ``to_fetch`` the other ids in input order; ``have`` the usable cached bodies of ids
    still to fetch; ``split`` the ids the cache holds (in part) the two-request way,
    which are finished that way.
    """

    cached: dict[str, tuple[_Form, Decision]]
    to_fetch: list[str]
    have: dict[str, dict[str, Any]]
    split: set[str]


def _plan(ids: Sequence[str], stored: Mapping[str, StoredParts], main: _Form, split: _Form | None) -> _Plan:
    """Pure: the plan of a run from what the cache holds. An id the cache answered (in
    part) the two-request way is finished that way."""
    plan = _Plan({}, [], {}, set())
    for id_ in ids:
        entry = stored.get(id_)
        form = main
        if split is not None and entry is not None and not any(k in entry.parts for k in main.keys) \
                and any(k in entry.parts for k in split.keys):
            form = split
            plan.split.add(id_)
        answer = decide(entry, form.parts)
        if answer.status == "missing":
            plan.to_fetch.append(id_)
            if answer.have:
                plan.have[id_] = answer.have
        else:
            plan.cached[id_] = (form, answer)
    return plan


class _Claims:
    """Ids of a cache file shared by several processes, claimed machine-wide (team-wide on
    a team's budget).

    A claims file that fails is given up for the rest of the run (each run fetches for
    itself then, as without claims); the flag is kept under a lock, so a worker that
    meets the failure and one that is about to claim agree.
    """

    def __init__(self, store: Any, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._broken = False

    @property
    def usable(self) -> bool:
        with self._lock:
            return not self._broken

    def _give_up(self, error: BaseException) -> None:
        with self._lock:
            if self._broken:
                return
            self._broken = True
        log.warning("claims unavailable (%s: %s); fetching without them", type(error).__name__, error)

    def key(self, id_: str) -> str:
        return f"{self.prefix}|{id_}"

    def hold(self, id_: str, stop: threading.Event) -> bool:
        """Claim ``id_``, waiting while another run holds it (at most CLAIM_TTL); False
        when the claims are unusable (the id is fetched without one)."""
        if not self.usable:
            return False
        key = self.key(id_)
        try:
            if not self.store.claim(key, self.owner, CLAIM_TTL):
                self.store.wait_claimed(key, timeout=CLAIM_TTL, cancel=stop)
                self.store.claim(key, self.owner, CLAIM_TTL)
        except Exception as error:  # a broken claims file must not stop the fetch
            self._give_up(error)
            return False
        return True

    def release(self, id_: str | None = None) -> None:
        if not self.usable:
            return
        try:
            if id_ is None:
                self.store.release_owner(self.owner)
            else:
                self.store.release(self.key(id_), self.owner)
        except Exception:  # the claim expires anyway
            log.debug("could not release a claim", exc_info=True)


@dataclass(frozen=True)
class _Context:
    """What every worker of a run reads (never writes): set once, before they start."""

    client: ProfileClient
    id_type: str
    query: ProfileQuery
    main: _Form
    split: _Form | None
    stop: threading.Event
    names: NameLearner
    claims: _Claims | None
    have: Mapping[str, Mapping[str, Any]]
    positions: Mapping[str, int]
    form_of: Callable[[str], _Form]
    choose: Callable[[str, _Form], None]
    reread: Callable[[str], Outcome | None]
    profile: Callable[[_Form, list[Any]], UserProfile]


class _Fetcher:
    """Fetching one id (in a worker thread): the requests the cache lacks, as a _Result."""

    def __init__(self, context: _Context) -> None:
        self.context = context

    def _form(self, id_: str) -> _Form:
        """How ``id_`` is asked: as the cache began it, else the exact way when the names
        ask for a check at its position, else the run's query."""
        context = self.context
        form = context.form_of(id_)
        if form is context.main and context.split is not None \
                and context.names.exact(context.positions.get(id_, -1)):
            form = context.split
        context.choose(id_, form)
        return form

    def fetch(self, id_: str, hand: Callable[[_EarlyBody], None]) -> _Result | None:
        """``hand`` passes each body that is not the id's last on, to be cached at once."""
        context = self.context
        if context.claims is not None and context.claims.hold(id_, context.stop):
            # Claimed now; another run may have answered it since this run looked.
            answered = context.reread(id_)
            if answered is not None:
                return _Result(answered)
        form = self._form(id_)
        have = context.have.get(id_, {})
        missing = [i for i, key in enumerate(form.keys) if key not in have]
        payloads: list[Any] = [have.get(key) for key in form.keys]
        fetched: list[ReceivedBody] = []
        attempts = 0
        for n, index in enumerate(missing):
            part, key = form.parts[index], form.keys[index]
            try:
                payload, used = context.client.request({context.id_type: id_, **part.to_params()},
                                                       cancel=context.stop)
            except FetchCancelled:
                return None  # counted as cancelled by the coordinating thread
            except Exception as error:
                return self._failure(id_, error, attempts)
            attempts += used
            payloads[index] = payload
            problem = read_error(payload, part)
            entry = ReceivedBody(key, payload, used, problem)
            if problem is not None:
                # Kept in the cache with its error; the parts after it are not asked.
                return _Result(Outcome(id_, "failed", 200, attempts, problem), (*fetched, entry))
            if n < len(missing) - 1:
                hand(_EarlyBody(id_, entry))  # cached now: survives a failure of the next part
            else:
                fetched.append(entry)
        try:
            profile = context.profile(form, payloads)
        except Exception as error:
            return _Result(Outcome(id_, "failed", 200, attempts,
                                   f"unexpected response: {type(error).__name__}: {error}"), tuple(fetched))
        self._learn(form, payloads)
        return _Result(Outcome(id_, "ok", 200, attempts, None, False, profile), tuple(fetched))

    def _learn(self, form: _Form, payloads: list[Any]) -> None:
        """What this user's answers teach the run about the org's names."""
        names = self.context.names
        if not names.active:
            return
        if form is not self.context.main:
            names.learn_exact(payloads[0], payloads[-1])
        else:
            names.learn_types(payloads[0])

    def _failure(self, id_: str, error: Exception, attempts: int) -> _Result:
        stop, id_type = self.context.stop, self.context.id_type
        if isinstance(error, UnknownUserError):
            return _Result(Outcome(id_, "not_found", error.status, attempts + error.attempts, str(error)))
        if isinstance(error, AuthenticationError):
            stop.set()  # before anything else: no new request after a 401
            return _Result(Outcome(id_, "failed", error.status, attempts + error.attempts, str(error)),
                           auth_error=error)
        if isinstance(error, ProfileAPIError):
            return _Result(Outcome(id_, "failed", error.status, attempts + error.attempts, str(error)))
        log.error("unexpected error fetching %s %r", id_type, id_, exc_info=error)
        return _Result(Outcome(id_, "failed", None, attempts + 1, f"{type(error).__name__}: {error}"))


class _Run:
    """One bulk fetch: checks at construction; :meth:`run` plans from the cache, fetches
    the rest in worker threads (:class:`_Fetcher`) and records every result here, in the
    coordinating thread (the cache writes, the outcomes, the :class:`_Progress`)."""

    def __init__(
        self,
        client: ProfileClient,
        ids: Iterable[str | int],
        query: ProfileQuery | None,
        *,
        id_type: str,
        workers: int,
        progress: bool,
        cache: ProfileCache | str | os.PathLike[str] | None,
        max_age: float | timedelta | None,
        cancel: threading.Event | None,
        on_progress: ProgressHook | None,
        options: dict[str, Any],
    ) -> None:
        if id_type not in ID_TYPES:
            raise InvalidQueryError(f"id_type must be one of {', '.join(ID_TYPES)}, got {id_type!r}.")
        workers = whole_number("workers", workers, minimum=1)
        if on_progress is not None and not callable(on_progress):
            raise ConfigurationError("on_progress must be a callable (done, total, counts).")
        self.client = client
        self.query = ProfileQuery.from_options(query, **options)
        self.id_type = id_type
        self.ids = unique_ids(ids, id_type)
        self.workers = workers
        self.show_bar = progress
        self.cache_arg = cache
        self.max_age = max_age
        self.user_cancel = cancel
        self.on_progress = on_progress
        self.scope = str(client.scope)
        self.main = _Form.of(self.query)
        # A merged query can also be answered the two-request way: by older cache
        # entries, and for the users that check the org's computation names.
        self.split = _Form.of(self.query.split()) if self.query.merges_computations else None
        self.stop = threading.Event()
        self.outcomes: dict[str, Outcome] = {}
        self.auth_error: AuthenticationError | None = None
        self.cancelled = False
        self.interrupted = False
        self.cache_error: BaseException | None = None
        self.names = NameLearner(self.scope, self.query, total=0)
        self.plan = _Plan({}, [], {}, set())
        self.claims: _Claims | None = None
        self._merged: list[str] = []  # ids read from merged answers
        self._chosen: dict[str, _Form] = {}  # how each fetched id was asked (workers write)
        self._chosen_lock = threading.Lock()
        self._cache: ProfileCache | None = None
        self._progress: _Progress | None = None

    # -- forms and profiles (any thread) -------------------------------------------------
    def form(self, id_: str) -> _Form:
        """How ``id_`` is (or was) asked: the run's query, or its two-request form."""
        with self._chosen_lock:
            chosen = self._chosen.get(id_)
        if chosen is not None:
            return chosen
        if id_ in self.plan.split and self.split is not None:
            return self.split
        return self.main

    def _choose(self, id_: str, form: _Form) -> None:
        with self._chosen_lock:
            self._chosen[id_] = form

    def profile(self, form: _Form, payloads: list[Any]) -> UserProfile:
        """One profile from its bodies (a merged answer read with the names of the moment)."""
        if form is self.main and self.query.merges_computations:
            return UserProfile.from_payloads(payloads, form.query, self.names.read())
        return UserProfile.from_payloads(payloads, form.query)

    def _cached_outcome(self, id_: str, form: _Form, answer: Decision) -> Outcome | None:
        """The outcome of a cache answer; None when its bodies do not make a profile."""
        if answer.status != "ok":
            return Outcome(id_, answer.status, answer.http_status, answer.attempts, answer.error, True)
        try:
            profile = self.profile(form, answer.payloads)
        except Exception:
            return None
        return Outcome(id_, "ok", 200, answer.attempts, None, True, profile)

    def reread(self, id_: str) -> Outcome | None:
        """What the cache holds for ``id_`` now (another process may have answered it)."""
        cache = self._cache
        if cache is None:
            return None
        entry = cache.stored(self.id_type, [id_], self.query, scope=self.scope, max_age=self.max_age,
                             also=self.split.query if self.split else None).get(id_)
        plan = _plan([id_], {id_: entry} if entry else {}, self.main, self.split)
        if id_ not in plan.cached:
            return None
        form, answer = plan.cached[id_]
        return self._cached_outcome(id_, form, answer)

    # -- bookkeeping (coordinating thread only) ------------------------------------------
    def _record(self, result: _Result | _EarlyBody) -> None:
        """Cache, then count, one result. Idempotent: a Ctrl-C anywhere in here leaves the
        result queued, and processing it again neither loses nor double-counts it."""
        if isinstance(result, _EarlyBody):
            if result.id not in self.outcomes:
                self._save(result.id, parts=(result.part,))
            return
        outcome = result.outcome
        if outcome.id in self.outcomes:
            return
        if result.auth_error is not None:
            self.stop.set()
            if self.auth_error is None:
                self.auth_error = result.auth_error
        self._save(outcome.id, parts=result.parts, status=outcome.status,
                   http_status=outcome.http_status, attempts=outcome.attempts,
                   error=None if outcome.status == "ok" else outcome.error)
        if self.claims is not None:
            self.claims.release(outcome.id)
        if outcome.profile is not None and self.names.active and self.form(outcome.id) is self.main:
            self._merged.append(outcome.id)
        self._count(outcome)

    def _count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.id] = outcome
        if self._progress is not None:
            self._progress.add(outcome)

    def _save(self, id_: str, **what: Any) -> None:
        """Write to the cache; on the first failure, warn and go on in memory only."""
        cache = self._cache
        if cache is None:
            return
        try:
            cache.save(self.id_type, id_, self.query, scope=self.scope, **what)
        except Exception as error:  # sqlite3 errors, a full disk, a read-only file
            self._cache_failed(cache, error)

    def _cache_failed(self, cache: ProfileCache, error: BaseException) -> None:
        self._cache = None  # no more writes this run: each would wait for the lock again
        self.cache_error = error
        log.warning("cache %s failed: %s: %s", cache.path, type(error).__name__, error)
        warn(
            f"writing to the cache {cache.path!r} failed ({type(error).__name__}: {error}). "
            "The fetch goes on: every result is kept in memory and returned, but results "
            "from now on are not kept in the cache, so a later run will fetch them again. "
            "Close other programs using the file (or free disk space) and run again with "
            "the same cache to store them.",
            CacheWarning,
        )

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> ProfileSet:
        started = time.monotonic()
        try:
            cache, owned = open_cache(self.cache_arg)
        except CacheError as error:
            # The same path as a cache that fails mid-run: fetch, keep all in memory, say so.
            cache, owned = None, False
            self.cache_error = error
            warn(f"{error} The fetch goes on without it: every result is returned, "
                 "but none is kept for a later run.", CacheWarning)
        self._cache = cache
        self._progress = _Progress(len(self.ids), bar=self.show_bar, hook=self.on_progress,
                                   limiter=getattr(self.client, "limiter", None),
                                   requests_per_id=len(self.main.parts))
        try:
            self._prepare()
            self._fetch()
            return self._finish(started)
        finally:
            self._progress.close()
            if owned and cache is not None:
                cache.close()

    def _prepare(self) -> None:
        """Read the cache and the names, make the plan, count what the cache answered."""
        cache = self._cache
        stored: dict[str, StoredParts] = {}
        evidence: dict[tuple[str, str], tuple[float, str]] = {}
        if cache is not None:
            try:
                if self.query.merges_computations:
                    evidence = cache.name_evidence(self.scope)
                if self.ids:
                    stored = cache.stored(self.id_type, self.ids, self.query, scope=self.scope,
                                          max_age=self.max_age, also=self.split.query if self.split else None)
            except (sqlite3.Error, OSError) as error:
                self._cache_failed(cache, error)
        self.plan = _plan(self.ids, stored, self.main, self.split)
        self.names = NameLearner(self.scope, self.query, total=len(self.plan.to_fetch), stored=evidence)
        cached: list[Outcome] = []
        for id_, (form, answer) in list(self.plan.cached.items()):
            outcome = self._cached_outcome(id_, form, answer)
            if outcome is None:  # bodies that do not make a profile: asked again
                del self.plan.cached[id_]
                self.plan.to_fetch.append(id_)
            else:
                cached.append(outcome)
                self.outcomes[id_] = outcome
        order = {id_: n for n, id_ in enumerate(self.ids)}
        self.plan.to_fetch.sort(key=order.__getitem__)
        if cache is not None and cache.path != ":memory:" and self.plan.to_fetch:
            try:
                from .budget import open_store

                # The file itself, however its path was typed (relative, absolute, a link).
                where = os.stat(cache.path)
                # Claimed where the client's budget lives: the machine's file, or the team's Redis.
                budget = getattr(self.client, "budget", None) or open_store()
                self.claims = _Claims(budget.claims(self.scope), f"{where.st_dev}:{where.st_ino}|{self.scope}|"
                                                                 f"{self.id_type}|{self.query.canonical()}")
            except Exception as error:  # no writable cache folder: each run for itself
                log.warning("no claims for the shared cache (%s: %s)", type(error).__name__, error)
        if self._sends_recommendations():
            self.client.warn_exposure(self.query, cache=self.cache_arg is not None)  # said once
        assert self._progress is not None
        self._progress.start(cached)

    def _sends_recommendations(self) -> bool:
        """Whether a request about to be sent asks for recommendations (and so logs an
        exposure event): a part with them that the cache does not hold, for some id."""
        for id_ in self.plan.to_fetch:
            form, have = self.form(id_), self.plan.have.get(id_, {})
            if any(part.asks_recommendations and key not in have for part, key in zip(form.parts, form.keys)):
                return True
        return False

    def _fetch(self) -> None:
        to_fetch = self.plan.to_fetch
        if to_fetch and self.user_cancel is not None and self.user_cancel.is_set():
            self.cancelled = True
        elif to_fetch:
            # The first id checks the org's names (asked the exact way) before the others
            # are read with them.
            first = 1 if self.names.active else 0
            for batch in (to_fetch[:first], to_fetch[first:]):
                if batch and not self.stop.is_set():
                    self._fetch_all(batch)
            if self.names.active and not self.stop.is_set():
                self._refresh_names()
        if self.claims is not None:
            self.claims.release()

    def _finish(self, started: float) -> ProfileSet:
        """Keep the names, give every id its one outcome, build the ProfileSet."""
        if self.query.merges_computations:
            self._settle_names()
        # Every id ends with one outcome, whatever stopped the run.
        reason = STOPPED_BY_AUTH_ERROR if self.auth_error is not None else CANCELLED_ERROR
        for id_ in self.plan.to_fetch:
            if id_ not in self.outcomes:
                self._count(Outcome(id_, "failed", None, 0, reason))
        if len(self.outcomes) != len(self.ids):  # the invariant, checked rather than assumed
            raise AssertionError(f"bulk fetch ended with {len(self.outcomes)} outcomes "
                                 f"for {len(self.ids)} ids")
        result = ProfileSet(
            (self.outcomes[id_] for id_ in self.ids),
            query=self.query, id_type=self.id_type,
            cancelled=self.cancelled and self.auth_error is None,
            elapsed=time.monotonic() - started,
            cache_error=self.cache_error,
            scope=self.scope,
        )
        if self.auth_error is not None:
            self.auth_error.partial = result
            raise self.auth_error
        if self.interrupted:
            warn(
                f"the fetch was interrupted: {result.counts['ok']} ok, "
                f"{result.counts['not_found']} not_found kept; "
                f"{sum(o.error == CANCELLED_ERROR for o in self.outcomes.values())} ids were not "
                "fetched (counted as failed). Run again with the same cache= to fetch only those.",
                IncompleteFetchWarning,
            )
        return result

    def _settle_names(self) -> None:
        """Keep what the run learned, read merged profiles again if the names grew after
        they were parsed, and name the keys that stayed unclear (once)."""
        names = self.names.settle()
        cache = self._cache
        learned = self.names.learned
        if cache is not None and learned:
            try:
                cache.save_names(learned, scope=self.scope)
            except Exception as error:  # sqlite3 errors, a full disk, a read-only file
                self._cache_failed(cache, error)
        if self.names.grew or any(o.profile is not None and o.profile.names is not names
                                  for o in self.outcomes.values()):
            for id_, outcome in self.outcomes.items():
                if outcome.profile is not None and self.form(id_) is self.main:
                    profile = UserProfile.from_payloads([outcome.profile.raw], self.query, names)
                    self.outcomes[id_] = replace(outcome, profile=profile)
        unclear = self.names.unclear(o.profile.key_kinds for o in self.outcomes.values()
                                     if o.profile is not None)
        if unclear:
            warn(warning_text(unclear, self.query), KeyKindWarning)

    def _refresh_names(self) -> None:
        """Ask the users :meth:`NameLearner.plan_refreshes` chooses for their computations
        (or properties) alone, keep each answer in the cache, learn from it. A refresh
        never fails its user; a key it would have settled stays ``unverified``."""
        fetched_apart = sum(self._chosen.get(id_) is self.split for id_ in self.plan.to_fetch)
        part = self.names.refresh_part
        key = part.canonical()
        # Judged with all the run learned: a key seen apart meanwhile needs no refresh.
        unsure = {}
        for id_ in self._merged:
            profile = self.outcomes[id_].profile
            assert profile is not None
            unsure[id_] = self.names.unsure(profile.raw)
        for id_ in self.names.plan_refreshes(unsure, asked=fetched_apart):
            outcome = self.outcomes[id_]
            assert outcome.profile is not None
            try:
                payload, used = self.client.request({self.id_type: id_, **part.to_params()}, cancel=self.stop)
            except (ProfileAPIError, FetchCancelled):
                if self.stop.is_set():
                    return
                continue
            except KeyboardInterrupt:
                self.interrupted = self.cancelled = True
                self.stop.set()
                return
            self.names.learn_refresh(outcome.profile.raw, payload)
            self._save(id_, parts=(ReceivedBody(key, payload, used, read_error(payload, part)),))
            self.outcomes[id_] = replace(outcome, attempts=outcome.attempts + used)

    # -- threads -------------------------------------------------------------------------
    def _fetch_all(self, ids: list[str]) -> None:
        pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        for id_ in ids:
            pending.put(id_)
        # A result leaves the deque only after it is cached and counted, so a Ctrl-C at
        # any moment cannot drop an answer that arrived (see _record).
        results: deque[_Result | _EarlyBody] = deque()
        ready = threading.Event()
        fetcher = _Fetcher(_Context(
            client=self.client, id_type=self.id_type, query=self.query, main=self.main, split=self.split,
            stop=self.stop, names=self.names, claims=self.claims, have=self.plan.have,
            positions={id_: n for n, id_ in enumerate(self.plan.to_fetch)},
            form_of=self.form, choose=self._choose, reread=self.reread, profile=self.profile))

        def work() -> None:
            def hand(item: _EarlyBody) -> None:
                results.append(item)
                ready.set()

            while not self.stop.is_set():
                try:
                    id_ = pending.get_nowait()
                except queue.Empty:
                    return
                result = fetcher.fetch(id_, hand)
                if result is not None:
                    results.append(result)
                    ready.set()

        # Daemon threads: a run abandoned by a second Ctrl-C must not block the exit.
        threads = [threading.Thread(target=work, daemon=True, name=f"amptools-bulk-{i}")
                   for i in range(min(self.workers, len(ids)))]
        for thread in threads:
            thread.start()
        try:
            self._collect(threads, results, ready)
        except BaseException:
            # A failing cache write (disk full, ...) or a bug here: send nothing more.
            self.stop.set()
            raise
        if self.stop.is_set() and self.auth_error is None:
            self.cancelled = True

    def _collect(self, threads: list[threading.Thread], results: deque[_Result | _EarlyBody],
                 ready: threading.Event) -> None:
        """Cache and count the workers' results until they are all done (or abandoned)."""
        abandoned = False
        while True:
            try:
                if (self.user_cancel is not None and self.user_cancel.is_set()
                        and not self.stop.is_set()):
                    self.stop.set()
                    self.cancelled = True
                if results:
                    self._record(results[0])
                    results.popleft()
                    continue
                if abandoned or not any(thread.is_alive() for thread in threads):
                    if not results:
                        break
                    continue
                ready.wait(_POLL)
                ready.clear()
            except KeyboardInterrupt:
                if self.interrupted:
                    abandoned = True  # second Ctrl-C: keep what arrived, stop waiting
                    continue
                self.interrupted = self.cancelled = True
                self.stop.set()
                try:
                    log.warning("interrupted: waiting for the requests in flight "
                                "(press Ctrl-C again to abandon them)")
                except KeyboardInterrupt:
                    abandoned = True  # the second Ctrl-C came while the first was being said


def fetch_profiles(
    client: ProfileClient,
    ids: Iterable[str | int],
    query: ProfileQuery | None = None,
    *,
    id_type: IdType = "user_id",
    workers: int = 8,
    progress: bool = True,
    cache: ProfileCache | str | os.PathLike[str] | None = None,
    max_age: float | timedelta | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressHook | None = None,
    **options: Any,
) -> ProfileSet:
    """Fetch many users' profiles at the client's rate limit; one outcome per unique id.

    ``client.get_profiles(ids, query, ...)`` calls this.

    Parameters
    ----------
    client : ProfileClient
        Its limiter paces every request of the run (retries included).
    ids : iterable
        User ids (or device ids, see ``id_type``): a list, a pandas Series, a
        generator. Integers are taken as text; blanks, None and floats are refused
        up front. Duplicates are asked once.
    query : ProfileQuery, optional
        What to ask for each user; ``**options`` is shorthand (``recs=("testRecId",)``).
    id_type : {"user_id", "device_id"}
        Which parameter the ids are sent as.
    workers : int
        Threads sending requests; all share the client's one limiter.
    progress : bool
        A tqdm bar (a widget in Jupyter, text in a terminal) with done/total, rate,
        ETA and failures so far. ``False`` is silent.
    cache : str, path or ProfileCache, optional
        Raw responses and outcomes are kept there as they arrive; ids it already
        answered (``ok`` or ``not_found``) are not asked again.
    max_age : float or timedelta, optional
        Cached answers older than this many seconds are fetched again.
    cancel : threading.Event, optional
        Set it (from any thread) to stop the run: see Returns.
    on_progress : callable, optional
        ``on_progress(done, total, counts)`` after every id (``counts`` is
        ``{"ok", "not_found", "failed"}``); called in the thread running the fetch.

    Returns
    -------
    ProfileSet
        ``.profiles`` in input order, ``.failures``, ``.outcomes``, ``.counts``.
        When cancelled (the event, or Ctrl-C, which also warns) it is partial:
        ``cancelled=True`` and the ids never fetched are ``failed`` with error
        ``"cancelled before it was fetched"``; rerun with the same cache to fetch them.

    Raises
    ------
    InvalidQueryError
        Before any request, for bad ids (the first few, with positions) or options.
    AuthenticationError
        On a 401: the run stops at once; ``error.partial`` is the partial ProfileSet.
    """
    run = _Run(client, ids, query, id_type=id_type, workers=workers, progress=progress,
               cache=cache, max_age=max_age, cancel=cancel, on_progress=on_progress,
               options=options)
    return run.run()


class BulkFetch:
    """A bulk fetch running in a background thread (for widgets); see :func:`start_fetch`.

    Like a :class:`concurrent.futures.Future`: :meth:`done`, :meth:`result`,
    :meth:`cancel` and :meth:`add_done_callback`.

    Attributes
    ----------
    total : int
        The unique ids of the run.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._cancel = run.user_cancel if run.user_cancel is not None else threading.Event()
        run.user_cancel = self._cancel
        self.total = len(run.ids)
        self._done = 0
        self._counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self._hook = run.on_progress
        run.on_progress = self._on_progress
        self._result: ProfileSet | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._callbacks: list[Callable[[BulkFetch], Any]] = []
        self._callbacks_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="amptools-bulk", daemon=True)

    def _on_progress(self, done: int, total: int, counts: Mapping[str, int]) -> None:
        self._done, self._counts = done, dict(counts)
        if self._hook is not None:
            self._hook(done, total, counts)

    def _main(self) -> None:
        try:
            self._result = self._run.run()
        except BaseException as error:  # handed to result()
            self._error = error
        finally:
            with self._callbacks_lock:
                self._finished.set()
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                self._call(callback)

    def add_done_callback(self, callback: Callable[[BulkFetch], Any]) -> None:
        """Call ``callback(fetch)`` once the run has ended (at once when it already has),
        in the thread that ended it. An exception in it is logged, never lost in silence."""
        with self._callbacks_lock:
            if not self._finished.is_set():
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[BulkFetch], Any]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("a done callback of %r raised", self)

    def cancel(self) -> None:
        """Ask the run to stop: no new request is sent; :meth:`result` returns the partial set."""
        self._cancel.set()

    @property
    def progress(self) -> tuple[int, int, dict[str, int]]:
        """``(done, total, counts)`` as last reported."""
        return self._done, self.total, dict(self._counts)

    def done(self) -> bool:
        """True once the run has ended (finished, cancelled or failed)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; False when ``timeout`` ran out first."""
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> ProfileSet:
        """The ProfileSet, once the run ended; re-raises its error (e.g. AuthenticationError).

        Raises
        ------
        TimeoutError
            When ``timeout`` seconds pass first.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError("the bulk fetch is still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __repr__(self) -> str:
        state = "done" if self.done() else ("cancelling" if self._cancel.is_set() else "running")
        return f"<amptools.BulkFetch {self._done}/{self.total} {state}>"


def start_fetch(
    client: ProfileClient,
    ids: Iterable[str | int],
    query: ProfileQuery | None = None,
    *,
    progress: bool = False,
    **kwargs: Any,
) -> BulkFetch:
    """Start :func:`fetch_profiles` in a background thread and return its handle at once.

    Ids and options are checked before this returns (``InvalidQueryError``). Takes
    the arguments of :func:`fetch_profiles`; ``progress`` defaults to False because a
    widget shows progress itself through ``on_progress``.

    Examples
    --------
    >>> job = start_fetch(client, ids, recs=("testRecId",), on_progress=show)  # doctest: +SKIP
    >>> job.cancel()                      # from a button's callback
    >>> ps = job.result()                 # partial, ps.cancelled is True
    """
    options = {k: v for k, v in kwargs.items() if k not in
               ("id_type", "workers", "cache", "max_age", "cancel", "on_progress")}
    run = _Run(client, ids, query,
               id_type=kwargs.get("id_type", "user_id"), workers=kwargs.get("workers", 8),
               progress=progress, cache=kwargs.get("cache"), max_age=kwargs.get("max_age"),
               cancel=kwargs.get("cancel"), on_progress=kwargs.get("on_progress"),
               options=options)
    job = BulkFetch(run)
    job._thread.start()
    return job
