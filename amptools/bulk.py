"""Many ids -> :class:`ProfileSet`: workers, pacing, progress, an outcome per id, resume.

An org may make 600 requests a minute across all its endpoints and there is no
batch endpoint, so bulk work is pacing, retrying and never asking twice:

- every worker thread of a run takes its permits from the client's one
  :class:`~amptools.ratelimit.RateLimiter` (retries included; a throttle answer
  pauses all of them);
- duplicate ids are asked once, and with a cache (:mod:`amptools.cache`) nothing
  already answered is asked again;
- every unique id ends with exactly one outcome, ``ok``, ``not_found`` or
  ``failed``, so ``ok + not_found + failed == unique ids`` always holds.

Stopping
--------
An :class:`AuthenticationError` (HTTP 401) stops the run at once: no new request
is sent after it, the requests already in flight are awaited, and the error is
raised with the partial :class:`ProfileSet` as ``error.partial``.

A cancelled run — the ``cancel`` event set from another thread, :meth:`BulkFetch.cancel`,
or Ctrl-C (KeyboardInterrupt) — sends no new request, waits for the ones in
flight (their answers are kept and cached), and *returns* the partial
:class:`ProfileSet` with ``cancelled=True``. Ids it never fetched are counted as
``failed`` with the error ``"cancelled before it was fetched"`` (attempts 0, no
HTTP status), so the invariant holds and a rerun with the same cache fetches
exactly those. Ctrl-C also issues an :class:`IncompleteFetchWarning`; pressing it
a second time abandons the requests still in flight.

Cache
-----
Entries are scoped by the client's base URL and a fingerprint of its key
(the client's ``scope``), so one cache file never serves one project's
answers to another. A query that ``ProfileQuery.parts()`` splits into two requests
is cached part by part as each answer arrives; a later run asks only for the parts
the cache lacks, so a user's recommendations are never fetched (and exposure-logged)
twice because the other request failed. A 200 body that cannot be read is kept in
the cache with its error (the id is ``failed``); a rerun does not fetch it again
when it asked for recommendations (see :mod:`amptools.cache`).

One request per user
--------------------
A query for properties *and* computations is one request per user: the API merges
them into ``amp_props`` and amptools tells them apart by name. With listed
``comp_id`` values the query names them. With all computations the run needs the org's
computation names: when neither this process nor the cache knows them for the
client's scope, the first few users (``NAME_PROBES``) are fetched the two-request
way (their answers keep the two apart exactly) and the names are learned from them;
a merged answer with a key neither known as a computation nor as a property sends
one computations-only request for that user to refresh them (at most
``NAME_REFRESHES`` a run), and every merged profile is read again with the final
names. Names are kept per scope in the cache and in the process.
``split_computations=True`` asks the two-request way for every user.

Processes sharing a cache
-------------------------
Two processes (two notebooks, a notebook and ``amptools fetch``) that share a cache
file never fetch the same id at once: before asking for an id a worker claims it
machine-wide (:mod:`amptools.budget`); an id claimed by another run is waited for
and then read from the cache. A claim expires after ``CLAIM_TTL`` seconds, or when
its process is gone, so a killed process blocks nobody.

When writing to the cache fails (the file is locked by another program for longer
than its timeout, the disk is full, the file is read-only), the run goes on in
memory: a :class:`~amptools.cache.CacheWarning` names the file and the error once,
nothing more is written to the cache in that run, and the returned
:class:`ProfileSet` holds every answer, with the error as ``cache_error``.
"""

from __future__ import annotations

import logging
import queue
import uuid
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from .cache import CacheWarning, ProfileCache, StoredParts, decide, open_cache
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
)
from .models import ComputationNames, UserProfile, read_error
from .query import ID_TYPES, ProfileQuery, validate_id

if TYPE_CHECKING:
    import os

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

STATUSES = ("ok", "not_found", "failed")
FAILURE_COLUMNS = ("user_id", "device_id", "status", "http_status", "attempts", "error")
OUTCOME_COLUMNS = ("id", "status", "http_status", "attempts", "error", "from_cache")
_FAILURE_DTYPES = {"user_id": "str", "device_id": "str", "status": "str",
                   "http_status": "Int64", "attempts": "int64", "error": "str"}
_OUTCOME_DTYPES = {"id": "str", "status": "str", "http_status": "Int64", "attempts": "int64",
                   "error": "str", "from_cache": "bool"}

CANCELLED_ERROR = "cancelled before it was fetched"
STOPPED_BY_AUTH_ERROR = "not fetched: the run stopped at an authentication failure (HTTP 401)"
_BAD_IDS_SHOWN = 5
# Users fetched the two-request way to learn an org's computation names, and the most
# computations-only requests a run sends to refresh them (each costs one request).
NAME_PROBES = 5
NAME_REFRESHES = 5
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
        counts = dict.fromkeys(STATUSES, 0)
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
                          cache_error=other.cache_error or self.cache_error)

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


# -- input -----------------------------------------------------------------------------
def unique_ids(ids: Any, id_type: str = "user_id") -> list[str]:
    """Validate every id and return the unique ones in input order.

    Raises
    ------
    InvalidQueryError
        Before any request, listing the first few bad ids and their positions.
    """
    if isinstance(ids, (str, bytes)):
        ids = [ids]
    elif isinstance(ids, pd.DataFrame):
        raise InvalidQueryError(
            "ids is a DataFrame; pass one column of it, e.g. df['user_id']."
        )
    elif not isinstance(ids, Iterable):
        raise InvalidQueryError(
            f"ids must be an iterable of ids (a list, a pandas Series, a generator), "
            f"got {type(ids).__name__}."
        )
    seen: dict[str, None] = {}
    bad: list[tuple[int, Any, str]] = []
    n_bad = 0
    for position, value in enumerate(ids):
        if hasattr(value, "item") and type(value).__module__ == "numpy" and not isinstance(value, float):
            value = value.item()  # numpy integers from arrays are plain ids too
        try:
            seen[validate_id(value, id_type)] = None
        except InvalidQueryError as error:
            n_bad += 1
            if len(bad) < _BAD_IDS_SHOWN:
                bad.append((position, value, str(error).split(";")[0]))
    if n_bad:
        shown = "; ".join(f"position {p}: {v!r} ({why})" for p, v, why in bad)
        more = f" (and {n_bad - len(bad)} more)" if n_bad > len(bad) else ""
        raise InvalidQueryError(
            f"{n_bad} {id_type}{'s are' if n_bad > 1 else ' is'} not valid, nothing was fetched: "
            f"{shown}{more}. Ids must be non-blank text (integers are accepted); read CSV "
            "columns with dtype=str and drop missing values first."
        )
    return list(seen)


# -- the run -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Result:
    """What a worker hands the coordinating thread for one id: its outcome, and the
    bodies fetched in this run that are not cached yet, ``(part key, body, attempts,
    read error)``, written together with the outcome."""

    outcome: Outcome
    parts: tuple[tuple[str, Any, int, str | None], ...] = ()
    auth_error: AuthenticationError | None = None


@dataclass(frozen=True)
class _Part:
    """One body of a split query that arrived while the id has more parts to fetch:
    cached at once so it survives a failure or a cancel before the next part."""

    id: str
    part: tuple[str, Any, int, str | None]


class _Run:
    """One bulk fetch: validation at construction, the work in :meth:`run`."""

    def __init__(
        self,
        client: ProfileClient,
        ids: Any,
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
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(f"workers must be a whole number ≥ 1, got {workers!r}.")
        if on_progress is not None and not callable(on_progress):
            raise ConfigurationError("on_progress must be a callable (done, total, counts).")
        self.client = client
        self.query = ProfileQuery.from_options(query, **options)
        self.id_type = id_type
        self.ids = unique_ids(ids, id_type)
        self.workers = workers
        self.progress = progress
        self.cache_arg = cache
        self.max_age = max_age
        self.user_cancel = cancel
        self.on_progress = on_progress
        self.stop = threading.Event()
        self.outcomes: dict[str, Outcome] = {}
        self.counts = dict.fromkeys(STATUSES, 0)
        self.auth_error: AuthenticationError | None = None
        self.cancelled = False
        self.interrupted = False
        self._hook_failed = False
        self._bar: Any = None
        self.n_cached = 0
        self.parts = self.query.parts()
        self.part_keys = [part.canonical() for part in self.parts]
        # A merged query can also be answered the two-request way: by older cache
        # entries, and for the users that teach the run the org's computation names.
        self.split_query = self.query.split() if self.query.merges_computations else None
        self.split_parts = self.split_query.parts() if self.split_query is not None else ()
        self.split_keys = [part.canonical() for part in self.split_parts]
        self.split_ids: set[str] = set()
        self.names = ComputationNames()
        self._names_lock = threading.Lock()
        self._names_read = False  # a merged profile was parsed with the names of the moment
        self._names_grew = False  # ... and names were learned after that
        self._refreshes = NAME_REFRESHES
        self._claims: Any = None  # the machine-wide claims, when a cache file is shared
        self._owner = uuid.uuid4().hex
        self.scope = str(client.scope)
        # Bodies already cached for ids still to fetch: {id: {part key: body}}.
        self.have: dict[str, dict[str, Any]] = {}
        self.cache_error: BaseException | None = None
        self._cache: ProfileCache | None = None

    # -- bookkeeping (coordinating thread only) ------------------------------------------
    def _record(self, result: _Result | _Part, cache: ProfileCache | None) -> None:
        """Cache, then count, one result. Idempotent: a Ctrl-C anywhere in here leaves the
        result queued, and processing it again neither loses nor double-counts it."""
        if isinstance(result, _Part):
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
        self._release_claim(outcome.id)
        self._count(outcome)

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

    def _count(self, outcome: Outcome, *, report: bool = True) -> None:
        self.outcomes[outcome.id] = outcome
        self.counts[outcome.status] += 1
        if not report:
            return
        if self._bar is not None:
            self._bar.update(1)
            if outcome.status != "ok":
                self._set_postfix(refresh=False)
        self._notify()

    def _set_postfix(self, refresh: bool = True) -> None:
        postfix = {"failed": self.counts["failed"], "not_found": self.counts["not_found"]}
        if self.n_cached:
            postfix["cached"] = self.n_cached
        self._bar.set_postfix(postfix, refresh=refresh)

    def _notify(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(len(self.outcomes), len(self.ids), dict(self.counts))
        except Exception:  # a broken widget callback must not lose the run
            if not self._hook_failed:
                self._hook_failed = True
                log.exception("on_progress raised; the fetch goes on without it")

    # -- one id (worker threads) ---------------------------------------------------------
    def _fetch_one(self, id_: str, hand: Callable[[_Part], None]) -> _Result | None:
        """Fetch the parts of one id the cache lacks; ``hand`` passes each body that is
        not the last one on to be cached at once."""
        if self._claims is not None:
            waited = self._wait_for_other_run(id_)
            if waited is not None:
                return waited
        have = self.have.get(id_, {})
        _, parts, keys = self._plan(id_)
        missing = [i for i, key in enumerate(keys) if key not in have]
        payloads: list[Any] = [have.get(key) for key in keys]
        fetched: list[tuple[str, Any, int, str | None]] = []
        attempts = 0
        for n, index in enumerate(missing):
            part, key = parts[index], keys[index]
            try:
                payload, used = self.client.request({self.id_type: id_, **part.to_params()},
                                                    cancel=self.stop)
            except FetchCancelled:
                return None  # counted as cancelled by the coordinating thread
            except UnknownUserError as error:
                return _Result(Outcome(id_, "not_found", error.status, attempts + error.attempts,
                                       str(error)))
            except AuthenticationError as error:
                # Stop the other workers before anything else: no new request after a 401.
                self.stop.set()
                return _Result(Outcome(id_, "failed", error.status, attempts + error.attempts,
                                       str(error)), auth_error=error)
            except ProfileAPIError as error:
                return _Result(Outcome(id_, "failed", error.status, attempts + error.attempts,
                                       str(error)))
            except Exception as error:  # never lose an id to a surprise
                log.exception("unexpected error fetching %s %r", self.id_type, id_)
                return _Result(Outcome(id_, "failed", None, attempts + 1,
                                       f"{type(error).__name__}: {error}"))
            attempts += used
            payloads[index] = payload
            problem = read_error(payload, part)
            entry = (key, payload, used, problem)
            if problem is not None:
                # Kept in the cache with its error; the parts after it are not asked.
                return _Result(Outcome(id_, "failed", 200, attempts, problem), (*fetched, entry))
            if n < len(missing) - 1:
                hand(_Part(id_, entry))  # cached now: survives a failure of the next part
            else:
                fetched.append(entry)
        if id_ not in self.split_ids and self.query.needs_computation_names:
            refresh = self._refresh_names(id_, payloads[0])
            if refresh is not None:
                attempts += refresh[2]
                fetched.append(refresh)
        try:
            profile = self._profile(id_, payloads)
        except Exception as error:
            return _Result(Outcome(id_, "failed", 200, attempts,
                                   f"unexpected response: {type(error).__name__}: {error}"),
                           tuple(fetched))
        return _Result(Outcome(id_, "ok", 200, attempts, None, False, profile), tuple(fetched))

    # -- processes sharing a cache ------------------------------------------------------------
    def _claim_key(self, id_: str) -> str:
        cache = self._cache
        return f"{cache.path if cache is not None else ''}|{self.scope}|{self.id_type}:{id_}|{self.query.canonical()}"

    def _wait_for_other_run(self, id_: str) -> _Result | None:
        """Claim ``id_``; when another run holds it, wait for it and take its answer from
        the cache. None: this worker fetches the id."""
        key = self._claim_key(id_)
        try:
            if not self._claims.claim(key, self._owner, CLAIM_TTL):
                self._claims.wait_claimed(key, timeout=CLAIM_TTL, cancel=self.stop)
                self._claims.claim(key, self._owner, CLAIM_TTL)
            # Claimed now; another run may have answered it since this run looked.
            cache = self._cache
            entry = cache.stored(self.id_type, [id_], self.query, scope=self.scope,
                                 max_age=self.max_age, also=self.split_query).get(id_) if cache else None
            outcome = self._from_cache(entry) if entry is not None else None
            if outcome is not None:
                return _Result(outcome)
        except Exception as error:  # a broken claims file must not stop the fetch
            log.warning("claims unavailable (%s: %s); fetching without them", type(error).__name__, error)
            self._claims = None
        return None

    def _release_claim(self, id_: str) -> None:
        claims = self._claims
        if claims is not None:
            try:
                claims.release(self._claim_key(id_), self._owner)
            except Exception:  # expiry releases it anyway
                log.debug("could not release the claim on %r", id_, exc_info=True)

    # -- one request per user: telling computations apart by name -------------------------
    def _plan(self, id_: str) -> tuple[ProfileQuery, tuple[ProfileQuery, ...], list[str]]:
        """How this id is asked: the run's query, or its two-request form."""
        if id_ in self.split_ids:
            assert self.split_query is not None
            return self.split_query, self.split_parts, self.split_keys
        return self.query, self.parts, self.part_keys

    def _profile(self, id_: str, payloads: list[Any]) -> UserProfile:
        """One profile from its bodies; a two-request answer also teaches the names."""
        query, _, _ = self._plan(id_)
        if query is self.split_query and self.query.needs_computation_names:
            self._learn(ComputationNames.from_split(payloads))
        elif self.query.needs_computation_names:
            self._names_read = True
        return UserProfile.from_payloads(payloads, query, self.names)

    def _learn(self, names: ComputationNames) -> None:
        with self._names_lock:
            grown = self.names.learn(computations=names.computations, properties=names.properties)
            if grown != self.names:
                self._names_grew = self._names_grew or self._names_read
                self.names = grown

    def _refresh_names(self, id_: str, merged: Any) -> tuple[str, Any, int, str | None] | None:
        """Ask for this user's computations alone when the merged answer holds a key the
        run knows neither as a computation nor as a property (a computation added since
        the names were learned?). At most NAME_REFRESHES a run; never fails the user."""
        props = merged.get("userData", {}).get("amp_props") if isinstance(merged, dict) else None
        if not isinstance(props, dict) or not self.names.unseen(props):
            return None
        with self._names_lock:
            if self._refreshes <= 0:
                return None
            self._refreshes -= 1
        only = self.split_parts[-1]
        try:
            payload, used = self.client.request({self.id_type: id_, **only.to_params()}, cancel=self.stop)
        except (ProfileAPIError, FetchCancelled):
            return None
        computations = payload.get("userData", {}).get("amp_props") if isinstance(payload, dict) else None
        if isinstance(computations, dict):
            self._learn(ComputationNames(frozenset(computations), frozenset(props) - frozenset(computations)))
        return (self.split_keys[-1], payload, used, read_error(payload, only))

    def _settle_names(self, cache: ProfileCache | None) -> None:
        """Keep what the run learned, and read merged profiles again if the names grew
        after they were parsed."""
        if not self.query.needs_computation_names:
            return
        ComputationNames.remember(self.scope, self.names)
        if cache is not None and self.names:
            try:
                cache.save_names(self.names, scope=self.scope)
            except Exception as error:  # sqlite3 errors, a full disk, a read-only file
                self._cache_failed(cache, error)
        if self._names_grew:
            for id_, outcome in self.outcomes.items():
                if outcome.profile is not None and id_ not in self.split_ids:
                    profile = UserProfile.from_payloads([outcome.profile.raw], self.query, self.names)
                    self.outcomes[id_] = replace(outcome, profile=profile)

    def _worker(self, pending: queue.SimpleQueue[str], results: deque[_Result | _Part],
                ready: threading.Event) -> None:
        def hand(item: _Part) -> None:
            results.append(item)
            ready.set()

        while not self.stop.is_set():
            try:
                id_ = pending.get_nowait()
            except queue.Empty:
                return
            result = self._fetch_one(id_, hand)
            if result is not None:
                results.append(result)
                ready.set()

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
        try:
            return self._run(cache, started)
        finally:
            if self._bar is not None:
                self._bar.close()
            if owned and cache is not None:
                cache.close()

    def _from_cache(self, entry: StoredParts) -> Outcome | None:
        """The outcome an id's cached bodies give, or None when parts must be fetched
        (the usable bodies are then kept in ``self.have``)."""
        id_ = entry.id
        if self.split_query is not None and not any(k in entry.parts for k in self.part_keys) \
                and any(k in entry.parts for k in self.split_keys):
            self.split_ids.add(id_)  # answered (in part) the two-request way: finish it so
        _, parts, _ = self._plan(id_)
        answer = decide(entry, parts)
        if answer.status == "ok":
            try:
                profile = self._profile(id_, answer.payloads)
            except Exception:
                return None
            return Outcome(id_, "ok", 200, answer.attempts, None, True, profile)
        if answer.status in ("not_found", "failed"):
            return Outcome(id_, answer.status, answer.http_status, answer.attempts, answer.error, True)
        if answer.have:
            self.have[id_] = answer.have
        return None

    def _run(self, cache: ProfileCache | None, started: float) -> ProfileSet:
        cached: list[Outcome] = []
        self._cache = cache
        if self.query.needs_computation_names:
            self.names = ComputationNames.known(self.scope)
            if cache is not None:
                try:
                    self._learn(cache.names(self.scope))
                except (sqlite3.Error, OSError) as error:
                    self._cache_failed(cache, error)
        if cache is not None and self.ids:
            try:
                stored = cache.stored(self.id_type, self.ids, self.query, scope=self.scope,
                                      max_age=self.max_age, also=self.split_query)
            except (sqlite3.Error, OSError) as error:
                self._cache_failed(cache, error)
                stored = {}
            for id_ in self.ids:
                entry = stored.get(id_)
                outcome = self._from_cache(entry) if entry is not None else None
                if outcome is not None:
                    cached.append(outcome)
        self.n_cached = len(cached)
        known = {o.id for o in cached}
        to_fetch = [id_ for id_ in self.ids if id_ not in known]
        if cache is not None and cache.path != ":memory:" and to_fetch:
            try:
                from .budget import open_store

                self._claims = open_store()
            except Exception as error:  # no writable cache folder: each run for itself
                log.warning("no claims for the shared cache (%s: %s)", type(error).__name__, error)
        probes: list[str] = []
        if self.query.needs_computation_names and not self.names:
            # Nobody knows this org's computation names yet: a few users are asked the
            # two-request way first, and teach the run the names for everyone else.
            probes = [i for i in to_fetch if i not in self.split_ids][:NAME_PROBES]
            self.split_ids.update(probes)

        # Say so (once) when a request that is about to be sent asks for recommendations.
        for part, key in zip(self.parts, self.part_keys):
            if part.asks_recommendations and any(key not in self.have.get(i, ()) for i in to_fetch):
                self.client.warn_exposure(part)
                break
        for outcome in cached:
            self._count(outcome, report=False)
        if self.progress:
            from tqdm.auto import tqdm

            # Cached ids start the bar as done (initial) so they do not inflate rate or ETA.
            self._bar = tqdm(total=len(self.ids), initial=len(cached), desc="profiles",
                             unit="id", mininterval=0.2, dynamic_ncols=True)
            self._set_postfix()
        self._notify()

        if to_fetch and not (self.user_cancel is not None and self.user_cancel.is_set()):
            first = set(probes)
            for batch in ([i for i in to_fetch if i in first], [i for i in to_fetch if i not in first]):
                if batch and not self.stop.is_set():
                    self._fetch_all(batch, cache)
        elif to_fetch:
            self.cancelled = True
        if self._claims is not None:
            try:
                self._claims.release_owner(self._owner)
            except Exception:
                log.debug("could not release this run's claims", exc_info=True)
        self._settle_names(self._cache)

        # Every id ends with one outcome, whatever stopped the run.
        reason = STOPPED_BY_AUTH_ERROR if self.auth_error is not None else CANCELLED_ERROR
        for id_ in to_fetch:
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

    def _fetch_all(self, to_fetch: list[str], cache: ProfileCache | None) -> None:
        pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        for id_ in to_fetch:
            pending.put(id_)
        # A result leaves the deque only after it is cached and counted, so a Ctrl-C at
        # any moment cannot drop an answer that arrived (see _record).
        results: deque[_Result | _Part] = deque()
        ready = threading.Event()
        n_threads = min(self.workers, len(to_fetch))
        # Daemon threads: a run abandoned by a second Ctrl-C must not block the exit.
        threads = [threading.Thread(target=self._worker, args=(pending, results, ready),
                                    daemon=True, name=f"amptools-bulk-{i}")
                   for i in range(n_threads)]
        for thread in threads:
            thread.start()
        try:
            self._collect(threads, results, ready, cache)
        except BaseException:
            # A failing cache write (disk full, ...) or a bug here: send nothing more.
            self.stop.set()
            raise
        if self.stop.is_set() and self.auth_error is None:
            self.cancelled = True

    def _collect(self, threads: list[threading.Thread], results: deque[_Result | _Part],
                 ready: threading.Event, cache: ProfileCache | None) -> None:
        """Cache and count the workers' results until they are all done (or abandoned)."""
        abandoned = False
        while True:
            try:
                if (self.user_cancel is not None and self.user_cancel.is_set()
                        and not self.stop.is_set()):
                    self.stop.set()
                    self.cancelled = True
                if results:
                    self._record(results[0], cache)
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
                log.warning("interrupted: waiting for the requests in flight "
                            "(press Ctrl-C again to abandon them)")


def fetch_profiles(
    client: ProfileClient,
    ids: Any,
    query: ProfileQuery | None = None,
    *,
    id_type: str = "user_id",
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
        self._counts = dict.fromkeys(STATUSES, 0)
        self._hook = run.on_progress
        run.on_progress = self._on_progress
        self._result: ProfileSet | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
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
            self._finished.set()

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
    ids: Any,
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
