"""CohortClient: Amplitude's Behavioral Cohorts API — list cohorts, download their members.

An analyst's "which users?" is usually a cohort already built in Amplitude. This
module lists the project's cohorts with their names, sizes and sync targets, and
downloads a cohort's members (``amplitude_id``, ``user_id`` and, on request, user
properties) so they can be handed to :meth:`ProfileClient.get_profiles`.

The same standards as :class:`~amptools.client.ProfileClient`, with its pieces
reused: the keys sit in a holder that prints as ``***`` and travel only in the
``Authorization`` header (HTTP Basic: API key as user, secret key as password);
``http://`` is allowed only on loopback; answers map onto the amptools error tree;
transient failures are retried with :func:`~amptools.client.retry_delay`. The HTTP
itself is done by :class:`amptools.client.HTTPGetter` (``client.py`` stays the only
module that imports ``requests``).

Downloading is asynchronous: request → poll (``JOB INPROGRESS`` → ``JOB COMPLETED``,
with backoff, bounded by ``max_wait``, cancellable) → the file, in the body or via a
302 to a pre-signed storage URL that is fetched **without** the ``Authorization``
header (an expired link is asked for again). Every "get one cohort" request counts
against the org's 500 a month, so downloads are cached by ``(cohort_id,
last_computed)``: a cohort not computed again since is never downloaded twice.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import io
import json
import logging
import os
import random
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

import pandas as pd

from .client import (
    KEY_VARIABLE,
    HTTPAnswer,
    HTTPGetter,
    ProfileClient,
    _is_loopback,
    _parse_retry_after,
    checked_url,
    _KeyHolder,
    _Secret,
    api_scope,
    jitter,
    retry_delay,
    should_retry,
)
# The four errors used throughout are imported by name; the leaves met once or twice
# (mostly in map_cohort_response) are spelled errors.X.
from . import errors
from .errors import ConfigurationError, InvalidQueryError, ProfileAPIError, ResponseFormatError, whole_number

__all__ = [
    "API_KEY_VARIABLE",
    "COHORT_COLUMNS",
    "COHORT_DTYPES",
    "HOSTS",
    "MEMBER_ID_COLUMNS",
    "CohortClient",
    "CohortJobTimeout",
    "connect",
    "downloads_spent",
    "for_profile_client",
    "map_cohort_response",
    "read_member_file",
]

HOSTS: dict[str, str] = {"us": "https://amplitude.com", "eu": "https://analytics.eu.amplitude.com"}
API_KEY_VARIABLE = "AMPLITUDE_API_KEY"
URL_VARIABLE = "AMPLITUDE_COHORTS_API_URL"
MONTHLY_DOWNLOADS = 500
LIST_PATH = "/api/3/cohorts"
REQUEST_PATH = "/api/5/cohorts/request/{}"
STATUS_PATH = "/api/5/cohorts/request-status/{}"
FILE_PATH = "/api/5/cohorts/request/{}/file"
USAGE_PATH = "/api/5/cohorts/usage"  # assumed: the docs name a "Get usage" endpoint, not its path

#: The columns of :meth:`CohortClient.list_cohorts`, in order.
COHORT_COLUMNS: tuple[str, ...] = (
    "cohort_id", "name", "description", "size", "last_computed", "last_modified",
    "owners", "archived", "published", "synced_to",
)
_UTC = pd.DatetimeTZDtype(unit="us", tz="UTC")
COHORT_DTYPES: dict[str, Any] = {
    "cohort_id": "str", "name": "str", "description": "str", "size": "Int64",
    "last_computed": _UTC, "last_modified": _UTC, "owners": object, "archived": "boolean",
    "published": "boolean", "synced_to": object,
}
#: The first columns of :meth:`CohortClient.members`; user properties follow.
MEMBER_ID_COLUMNS: tuple[str, ...] = ("amplitude_id", "user_id")
_ID_ALIASES = {
    "amplitude_id": "amplitude_id", "amplitude id": "amplitude_id", "amplitudeid": "amplitude_id",
    "amp_id": "amplitude_id", "user_id": "user_id", "user id": "user_id", "userid": "user_id",
}
# Statuses a storage host answers for an expired or unknown pre-signed link.
_EXPIRED_LINK = frozenset({400, 403, 410})
_LINK_RENEWALS = 3

log = logging.getLogger("amptools")
_T = TypeVar("_T")


class CohortJobTimeout(ProfileAPIError, TimeoutError):
    """A cohort download job did not complete within ``max_wait``. Call again to keep waiting."""


# -- the downloads this process spent ----------------------------------------------
_spent_lock = threading.Lock()
_spent = 0


def downloads_spent() -> int:
    """How many "get one cohort" requests (of the org's 500 a month) this process made."""
    return _spent


def _spend() -> int:
    global _spent
    with _spent_lock:
        _spent += 1
        return _spent


# -- the mapping of answers to errors ------------------------------------------------
def map_cohort_response(
    status: int, text: str, headers: Mapping[str, str], url: str, *, not_found: str = ""
) -> dict[str, Any] | ProfileAPIError:
    """Turn one Cohorts API answer into its JSON object, or the error it stands for.

    Parameters
    ----------
    status, text, headers, url
        The answer (``url`` without credentials).
    not_found : str
        What a 404 means for this request (said in the error).

    Returns
    -------
    dict or ProfileAPIError
    """
    context: dict[str, Any] = {"status": status, "body": text, "url": url}
    try:
        payload: Any = json.loads(text) if text.strip() else None
    except ValueError:
        payload = None
    error_text = ""
    if isinstance(payload, dict):
        error_text = str(payload.get("error") or payload.get("message") or "")
    if status in (401, 403):
        return errors.AuthenticationError(
            f"the Cohorts API rejected the keys (HTTP {status}): it needs both the project's "
            f"API key ({API_KEY_VARIABLE}, sent as the user) and its secret key ({KEY_VARIABLE}, "
            "sent as the password) — check that both belong to this project.", **context)
    if status == 429:
        return errors.ThrottledError(
            "the Cohorts API is over its limit (HTTP 429; 60 downloads per 10 minutes and 4 in "
            "parallel per app); amptools waits and retries.",
            retry_after=_parse_retry_after(headers.get("Retry-After")), **context)
    if status == 404:
        return errors.NotFoundError(f"{not_found or 'nothing at ' + url.split('?')[0]} (HTTP 404).", **context)
    if 300 <= status < 400:
        return errors.RedirectError(
            f"the Cohorts API redirected (HTTP {status}) where no redirect was expected; amptools "
            "does not follow it, so the keys are not sent elsewhere.", **context)
    if status >= 500:
        return errors.ServerError(f"the Cohorts API failed (HTTP {status}); retried with backoff.", **context)
    if status >= 400:
        return ProfileAPIError(
            f"the Cohorts API refused the request (HTTP {status}): {error_text or text[:200]}", **context)
    if not isinstance(payload, dict):
        return ResponseFormatError(
            f"the Cohorts API answered HTTP {status} with a body that is not a JSON object "
            f"({text[:80]!r}).", **context)
    return payload


# -- reading what the API sends ------------------------------------------------------
def _timestamp(value: Any) -> pd.Timestamp:
    """Unix seconds or milliseconds, or an ISO string, as a UTC timestamp (NaT if absent)."""
    if value is None or value == "":
        return pd.NaT
    try:
        number = float(value)
    except (TypeError, ValueError):
        stamp = pd.to_datetime(value, utc=True, errors="coerce")
        return pd.NaT if pd.isna(stamp) else stamp
    return pd.Timestamp(number / 1000 if number > 1e11 else number, unit="s", tz="UTC")


def _cohort_frame(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for entry in entries:
        owners = entry.get("owners")
        if owners is None:
            owners = [entry["owner"]] if entry.get("owner") else []
        sync = entry.get("syncMetadata") or []
        rows.append((
            str(entry.get("id", "")), str(entry.get("name") or ""), str(entry.get("description") or ""),
            entry.get("size"), _timestamp(entry.get("lastComputed")),
            _timestamp(entry.get("lastMod", entry.get("lastModified"))),
            tuple(str(o) for o in owners), entry.get("archived"), entry.get("published"),
            tuple(str(s.get("target", "")) for s in sync if isinstance(s, Mapping)),
        ))
    frame = pd.DataFrame.from_records(rows, columns=list(COHORT_COLUMNS))
    frame["size"] = pd.to_numeric(frame["size"], errors="coerce")
    return frame.astype(COHORT_DTYPES)


def read_member_file(content: bytes) -> pd.DataFrame:
    """Read a cohort member file tolerantly: CSV (or TSV, or JSON lines), gzip/zip or plain.

    Parameters
    ----------
    content : bytes
        The file as downloaded.

    Returns
    -------
    pandas.DataFrame
        ``amplitude_id`` (Int64, or str if the file holds non-numeric ids),
        ``user_id`` (str, <NA> when blank), then one str column per property in the
        file's order. A missing id column is added empty.

    Raises
    ------
    ResponseFormatError
        When the file holds neither an ``amplitude_id`` nor a ``user_id`` column;
        the message names the columns found.
    """
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    elif content[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            content = archive.read(names[0]) if names else b""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        records = _json_records(stripped)
        header = list(dict.fromkeys(k for r in records for k in r))
        raw = pd.DataFrame([[_text(r.get(k)) for k in header] for r in records], columns=header, dtype=object)
    else:
        first = text.split("\n", 1)[0]
        delimiter = "\t" if "\t" in first and "," not in first else ";" if first.count(";") > first.count(",") else ","
        # pandas' C parser: a 2-million-member file (the API's maximum) in seconds.
        raw = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                          skip_blank_lines=True).fillna("") if text.strip() else pd.DataFrame()
        if len(raw.columns):
            raw = raw[(raw != "").any(axis=1)]
    names = [_ID_ALIASES.get(str(h).strip().lower(), str(h).strip()) for h in raw.columns]
    if names and not set(names) & set(MEMBER_ID_COLUMNS):
        raise ResponseFormatError(
            "the cohort file has no amplitude_id or user_id column; it has "
            f"{', '.join(map(repr, names[:20]))}.")
    raw.columns = names
    n = len(raw)
    out: dict[str, Any] = {}
    amplitude = (raw["amplitude_id"].astype("str") if "amplitude_id" in raw
                 else pd.Series([""] * n, dtype="str"))
    numbers = pd.to_numeric(amplitude.where(amplitude != ""), errors="coerce")
    out["amplitude_id"] = (numbers.astype("Int64") if numbers.notna().sum() == (amplitude != "").sum()
                           else amplitude.where(amplitude != ""))
    for name in names:
        if name not in out:
            values = raw[name].astype("str")
            out[name] = values.where(values != "")
    if "user_id" not in out:
        out["user_id"] = pd.Series([pd.NA] * n, dtype="str")
    order = [*MEMBER_ID_COLUMNS, *[name for name in out if name not in MEMBER_ID_COLUMNS]]
    return pd.DataFrame({name: out[name].reset_index(drop=True) for name in order})


def _json_records(text: str) -> list[dict[str, Any]]:
    try:
        payload = json.loads(text)
    except ValueError:
        payload = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(payload, dict):
        payload = next((v for v in payload.values() if isinstance(v, list)), [payload])
    return [r for r in payload if isinstance(r, dict)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the download cache --------------------------------------------------------------
class _FileCache:
    """Member files by (scope, cohort_id, last_computed, what was asked): memory, or SQLite."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[tuple[str, ...], bytes] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            with self._connect() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS cohort_files (scope TEXT, cohort_id TEXT, "
                    "last_computed TEXT, variant TEXT, fetched_at REAL, content BLOB, "
                    "PRIMARY KEY (scope, cohort_id, last_computed, variant))")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per use, closed after (sqlite3's own context manager
        # only commits), so a notebook never holds the file open.
        assert self.path is not None
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    def get(self, key: tuple[str, ...]) -> bytes | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        if self.path is None:
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT content FROM cohort_files WHERE scope=? AND cohort_id=? AND last_computed=? "
                "AND variant=?", key).fetchone()
        return gzip.decompress(row[0]) if row else None

    def put(self, key: tuple[str, ...], content: bytes) -> None:
        with self._lock:
            self._memory[key] = content
        if self.path is not None:
            with self._connect() as conn:
                conn.execute("INSERT OR REPLACE INTO cohort_files VALUES (?, ?, ?, ?, ?, ?)",
                             (*key, time.time(), gzip.compress(content, mtime=0)))


# -- the client ---------------------------------------------------------------------
class CohortClient(_KeyHolder):
    """A client of Amplitude's Behavioral Cohorts API.

    Parameters
    ----------
    api_key, secret_key : str
        The project's API key and secret key (HTTP Basic user and password). Both
        are needed; they are sent only in the ``Authorization`` header.
    region : {"us", "eu"}
        ``https://amplitude.com`` or ``https://analytics.eu.amplitude.com``.
    base_url : str, optional
        Overrides ``region``; ``http://`` only for 127.0.0.1/localhost.
    timeout : float or (connect, read)
        Seconds per request.
    cache : str or Path, optional
        A SQLite file keeping downloaded member files across sessions; without it
        they are kept for the life of this client.
    max_retries : int
        Retries of transient failures (5xx, 429, resets, timeouts) per request.
    poll_base, poll_cap : float
        The first wait between status polls and the longest one (doubling, jittered).
    listing_max_age : float
        Seconds a cohort list is reused to resolve names and ``last_computed``
        before it is asked again (``list_cohorts()`` always asks).
    sleep, clock, rng
        Injected by tests.
    """

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        region: str = "us",
        base_url: str | None = None,
        timeout: float | tuple[float, float] = (5.0, 60.0),
        cache: str | Path | None = None,
        max_retries: int = 4,
        poll_base: float = 1.0,
        poll_cap: float = 15.0,
        listing_max_age: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        problem = _keys_problem(api_key, secret_key)
        secrets = (_Secret(api_key.strip()), _Secret(secret_key.strip())) if problem is None else None
        # As in ProfileClient: no frame of a raised error may hold a key in a local.
        del api_key, secret_key
        if secrets is None:
            raise ConfigurationError(problem)
        if region not in HOSTS:
            raise ConfigurationError(f"region must be one of {', '.join(map(repr, HOSTS))}, got {region!r}.")
        parts = checked_url(base_url or HOSTS[region], what="base_url", use=f"{HOSTS['us']} (or region='eu')")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        if len(timeout) != 2 or not all(t > 0 for t in timeout):
            raise ConfigurationError(f"timeout must be positive seconds or (connect, read), got {timeout!r}.")
        self._http = HTTPGetter(*secrets, timeout=(float(timeout[0]), float(timeout[1])))
        self._scope = api_scope(self.base_url, secrets[0].reveal() + ":" + secrets[1].reveal())
        self.max_retries = whole_number("max_retries", max_retries, minimum=0)
        self.poll_base = poll_base
        self.poll_cap = poll_cap
        self.listing_max_age = listing_max_age
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache = _FileCache(cache)
        self._listing: tuple[float, pd.DataFrame] | None = None
        self._pending: dict[tuple[str, ...], str] = {}
        #: "get one cohort" requests this client made (see also :func:`downloads_spent`).
        self.downloads = 0
        #: Requests this client sent, all endpoints (the storage host included).
        self.requests_sent = 0

    @classmethod
    def from_env(cls, **kwargs: Any) -> CohortClient:
        """A client for ``AMPLITUDE_API_KEY`` + ``AMPLITUDE_SECRET_KEY`` (and ``AMPLITUDE_COHORTS_API_URL``)."""
        missing = [name for name in (API_KEY_VARIABLE, KEY_VARIABLE) if not os.environ.get(name, "").strip()]
        if missing:
            raise ConfigurationError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. The Cohorts "
                f"API needs both {API_KEY_VARIABLE} (the project's API key) and {KEY_VARIABLE} (its "
                "secret key), from Settings → Projects → your project → General; or try it without "
                "keys on the embedded sample org: amptools.cohorts.connect().")
        if URL_VARIABLE in os.environ and "base_url" not in kwargs:
            kwargs["base_url"] = os.environ[URL_VARIABLE]
        return cls(os.environ[API_KEY_VARIABLE], os.environ[KEY_VARIABLE], **kwargs)

    def __repr__(self) -> str:
        return f"<amptools.CohortClient {getattr(self, 'base_url', '(not set up)')}>"

    @property
    def is_sample(self) -> bool:
        """True when the client talks to a local server (the embedded sample org)."""
        return _is_loopback(urlsplit(self.base_url).hostname)

    # -- requests ------------------------------------------------------------------
    def _call(self, fetch: Callable[[], _T | ProfileAPIError], cancel: threading.Event | None) -> _T:
        """Run ``fetch`` until it answers, retrying transient errors with backoff."""
        attempt = 0
        while True:
            attempt += 1
            self.requests_sent += 1
            result = fetch()
            if not isinstance(result, ProfileAPIError):
                return result
            result.attempts = attempt
            if not should_retry(result, attempt, self.max_retries):
                raise result
            delay = retry_delay(attempt, result.retry_after, jitter=lambda d: jitter(d, self._rng))
            log.info("cohorts: retrying after %s in %.2fs", type(result).__name__, delay)
            self._wait(delay, cancel, "while waiting to retry")

    def _wait(self, seconds: float, cancel: threading.Event | None, when: str) -> None:
        if cancel is not None:
            if cancel.wait(seconds):
                raise errors.FetchCancelled(f"cancelled {when}")
        else:
            self._sleep(seconds)

    def _get_json(self, path: str, cancel: threading.Event | None = None, *,
                  not_found: str = "") -> tuple[int, dict[str, Any]]:
        url = self.base_url + path

        def fetch() -> tuple[int, dict[str, Any]] | ProfileAPIError:
            answer = self._http.get(url, headers={"Accept": "application/json"})
            if isinstance(answer, errors.TransportError):
                return answer
            mapped = map_cohort_response(answer.status, answer.text, answer.headers, url, not_found=not_found)
            return mapped if isinstance(mapped, ProfileAPIError) else (answer.status, mapped)

        return self._call(fetch, cancel)

    # -- listing -------------------------------------------------------------------
    def list_cohorts(self, *, include_archived: bool = False) -> pd.DataFrame:
        """The project's cohorts, one row each, largest first.

        Returns
        -------
        pandas.DataFrame
            Columns (:data:`COHORT_COLUMNS`): ``cohort_id``, ``name``, ``description``
            (str), ``size`` (Int64), ``last_computed``, ``last_modified`` (UTC),
            ``owners`` (tuple of str), ``archived``, ``published`` (boolean),
            ``synced_to`` (tuple of sync targets; cohorts synced to the Profile API
            are those whose ids profiles can return).
        """
        _, payload = self._get_json(LIST_PATH + "?includeSyncInfo=true")
        entries = payload.get("cohorts")
        if not isinstance(entries, list):
            raise ResponseFormatError("the cohort list has no 'cohorts' array.", url=self.base_url + LIST_PATH)
        frame = _cohort_frame([e for e in entries if isinstance(e, Mapping)])
        frame = frame.sort_values(["size", "name"], ascending=[False, True], na_position="last",
                                  ignore_index=True)
        self._listing = (self._clock(), frame)
        return frame[~frame["archived"].fillna(False)].reset_index(drop=True) if not include_archived else frame.copy()

    def _cohorts(self, *, fresh: bool = False) -> pd.DataFrame:
        if fresh or self._listing is None or self._clock() - self._listing[0] > self.listing_max_age:
            self.list_cohorts()
        assert self._listing is not None
        return self._listing[1]

    def cohort_names(self) -> dict[str, str]:
        """``{cohort_id: name}`` of every cohort, archived ones too (what tables and figures show)."""
        listing = self._cohorts()
        return dict(zip(listing["cohort_id"].tolist(), listing["name"].tolist()))

    def resolve(self, cohort: str) -> dict[str, Any]:
        """The listing row of a cohort given by id or exact name.

        Raises
        ------
        InvalidQueryError
            When the name is unknown or belongs to several cohorts; the message
            lists the candidates (``name (id)``).
        """
        if not isinstance(cohort, str) or not cohort.strip():
            raise InvalidQueryError(f"give a cohort id or exact cohort name, got {cohort!r}.")
        for fresh in (False, True):
            listing = self._cohorts(fresh=fresh)
            by_id = listing[listing["cohort_id"] == cohort]
            if len(by_id):
                row: dict[str, Any] = by_id.iloc[0].to_dict()
                return row
            by_name = listing[listing["name"] == cohort]
            if len(by_name) == 1:
                row = by_name.iloc[0].to_dict()
                return row
            if len(by_name) > 1:
                raise InvalidQueryError(
                    f"{len(by_name)} cohorts are named {cohort!r}: "
                    f"{_describe(by_name)}. Give the cohort id instead.")
        names = listing["name"].tolist()
        close = difflib.get_close_matches(cohort, names, n=5, cutoff=0.5) or [
            n for n in names if cohort.lower() in n.lower()][:5]
        hint = (f"Did you mean {_describe(listing[listing['name'].isin(close)])}?" if close
                else "list_cohorts() shows every cohort's id and name.")
        raise InvalidQueryError(f"no cohort has the id or name {cohort!r} in this project. {hint}")

    # -- members -------------------------------------------------------------------
    def members(
        self,
        cohort: str,
        *,
        props: bool = False,
        prop_keys: Sequence[str] = (),
        max_wait: float = 600.0,
        cancel: threading.Event | None = None,
        on_progress: Callable[[str, str], Any] | None = None,
    ) -> pd.DataFrame:
        """Download a cohort's members (or reuse the download of its last computation).

        Parameters
        ----------
        cohort : str
            A cohort id or its exact name.
        props : bool
            Add user properties (all, or those in ``prop_keys``).
        prop_keys : sequence of str
            The user properties to add (implies ``props``).
        max_wait : float
            Seconds to wait for Amplitude's job (real ones take 30–60 s or more).
        cancel : threading.Event, optional
            Set it to stop waiting (raises :class:`FetchCancelled`).
        on_progress : callable(stage, message), optional
            Told ``"cached"``, ``"requested"``, ``"waiting"``, ``"downloading"``, ``"done"``.

        Returns
        -------
        pandas.DataFrame
            ``amplitude_id`` (Int64), ``user_id`` (str), then property columns (str).
            ``.attrs["cohort"]`` holds ``cohort_id``, ``name``, ``last_computed``,
            ``from_cache`` and ``downloads_spent`` (this process's count).

        Raises
        ------
        InvalidQueryError
            An unknown or ambiguous name (before any download).
        CohortJobTimeout
            The job did not complete within ``max_wait``; calling again resumes it
            without spending another download.
        FetchCancelled, NotFoundError, AuthenticationError, ProfileAPIError
        """
        say = on_progress or (lambda stage, message: None)
        keys = tuple(str(k) for k in ([prop_keys] if isinstance(prop_keys, str) else prop_keys))
        props = bool(props or keys)
        row = self.resolve(cohort)
        cohort_id, name = str(row["cohort_id"]), str(row["name"])
        label = f"{name!r} ({cohort_id})" if name else repr(cohort_id)
        computed = row["last_computed"]
        key = (self._scope, cohort_id, "" if pd.isna(computed) else computed.isoformat(),
               json.dumps([props, sorted(keys)]))
        # Without a last_computed nobody can tell whether the cohort changed: download.
        content = self._cache.get(key) if key[2] else None
        from_cache = content is not None
        if content is None:
            content = self._download(cohort_id, label, key, props, keys, max_wait, cancel, say)
            if key[2]:  # a download without its computation time could never be reused
                self._cache.put(key, content)
        else:
            say("cached", f"cohort {label}: reused the download of its computation at {key[2]}; "
                          "no request sent")
        frame = read_member_file(content)
        frame.attrs["cohort"] = {"cohort_id": cohort_id, "name": name, "last_computed": computed,
                                 "from_cache": from_cache, "downloads_spent": downloads_spent()}
        say("done", f"cohort {label}: {len(frame):,} members")
        return frame

    def _download(self, cohort_id: str, label: str, key: tuple[str, ...], props: bool,
                  keys: tuple[str, ...], max_wait: float, cancel: threading.Event | None,
                  say: Callable[[str, str], Any]) -> bytes:
        deadline = self._clock() + max_wait
        request_id = self._pending.get(key)
        if request_id is None:
            query = urlencode([("props", "1")] + [("propKeys", k) for k in keys]) if props else ""
            _, payload = self._get_json(
                REQUEST_PATH.format(quote(cohort_id, safe="")) + ("?" + query if query else ""), cancel,
                not_found=f"cohort {label} is not in this project (deleted, or another project's); "
                          "list_cohorts() shows the current ones")
            request_id = str(payload.get("request_id") or payload.get("requestId") or "")
            if not request_id:
                raise ResponseFormatError(f"the download request for cohort {label} gave no request_id.")
            self.downloads += 1
            spent = _spend()
            self._pending[key] = request_id
            message = (f"cohort {label}: download requested — {spent} of the org's {MONTHLY_DOWNLOADS} "
                       "monthly downloads spent by this process")
            log.info("%s", message)
            say("requested", message)
        poll = 0
        while True:
            status, payload = self._get_json(
                STATUS_PATH.format(quote(request_id, safe="")), cancel,
                not_found=f"the download job of cohort {label} is gone")
            state = str(payload.get("async_status", "")).upper()
            if status == 200 and "COMPLETED" in state:
                break
            if "FAIL" in state or "ERROR" in state:
                self._pending.pop(key, None)
                raise ProfileAPIError(f"Amplitude's download job for cohort {label} failed ({state}).")
            poll += 1
            left = deadline - self._clock()
            if left <= 0:
                raise CohortJobTimeout(
                    f"the download job for cohort {label} did not complete within max_wait={max_wait:g} s "
                    f"(still {state or 'in progress'}). Amplitude's jobs often take 30–60 s or more: call "
                    "members() again (with a larger max_wait) to keep waiting on the same job — no "
                    "second download is spent.")
            delay = min(left, jitter(min(self.poll_cap, self.poll_base * 2 ** (poll - 1)), self._rng))
            say("waiting", f"cohort {label}: Amplitude is preparing the file ({state or 'in progress'})")
            self._wait(delay, cancel, f"while waiting for cohort {label}")
        say("downloading", f"cohort {label}: downloading the member file")
        content = self._fetch_file(request_id, label, cancel)
        self._pending.pop(key, None)
        return content

    def _fetch_file(self, request_id: str, label: str, cancel: threading.Event | None) -> bytes:
        url = self.base_url + FILE_PATH.format(quote(request_id, safe=""))

        def fetch_file() -> HTTPAnswer | ProfileAPIError:
            answer = self._http.get(url)
            if isinstance(answer, errors.TransportError) or answer.status in (200, 301, 302, 303, 307, 308):
                return answer
            return _as_error(map_cohort_response(  # 5xx and 429 are retried by _call
                answer.status, answer.text, answer.headers, url,
                not_found=f"the member file of cohort {label} is gone"))

        for _ in range(_LINK_RENEWALS):
            answer = self._call(fetch_file, cancel)
            if answer.status == 200:
                return answer.content
            location = urljoin(url, answer.headers.get("Location", ""))
            checked_url(location, what="the storage link", use="the link the Cohorts API gives", query=True)
            # The pre-signed link carries its own signature: no Authorization header
            # goes with it, and it is never logged (its query is a credential too).
            stored = self._call(lambda: self._storage_get(location), cancel)
            if stored.status == 200:
                return stored.content
            if stored.status not in _EXPIRED_LINK:
                raise ProfileAPIError(
                    f"the storage host refused the member file of cohort {label} (HTTP {stored.status}).",
                    status=stored.status, url=location.split("?")[0])
            log.info("cohorts: the storage link of cohort %s expired; asking for a fresh one", label)
        raise ProfileAPIError(
            f"the storage link of cohort {label} was expired {_LINK_RENEWALS} times in a row; "
            "check this machine's clock, then call members() again.")

    def _storage_get(self, location: str) -> HTTPAnswer | ProfileAPIError:
        answer = self._http.get(location, authorized=False)
        if isinstance(answer, HTTPAnswer) and answer.status >= 500:
            return errors.ServerError(f"the storage host failed (HTTP {answer.status}); retried.",
                                      status=answer.status, url=location.split("?")[0])
        return answer

    # -- usage ---------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """The org's cohort downloads this month, where the API reports it.

        Returns
        -------
        dict
            ``downloads_this_month`` (int or None when the usage endpoint is not
            available), ``monthly_limit`` (500 unless the API says otherwise),
            ``downloads_this_process`` (:func:`downloads_spent`).
        """
        try:
            _, payload = self._get_json(USAGE_PATH)
        except (errors.NotFoundError, ResponseFormatError):
            payload = {}
        used = _find_number(payload, ("download", "usage", "count", "used"), skip="limit")
        limit = _find_number(payload, ("limit", "quota"))
        return {"downloads_this_month": used, "monthly_limit": limit or MONTHLY_DOWNLOADS,
                "downloads_this_process": downloads_spent()}


def _find_number(payload: Any, words: tuple[str, ...], skip: str = "\0") -> int | None:
    """The first number under a key naming one of ``words`` but not ``skip`` (depth-first)."""
    if isinstance(payload, Mapping):
        for name, value in payload.items():
            lowered = str(name).lower()
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and any(w in lowered for w in words) and skip not in lowered):
                return int(value)
        for value in payload.values():
            found = _find_number(value, words, skip)
            if found is not None:
                return found
    return None


def _as_error(result: dict[str, Any] | ProfileAPIError) -> ProfileAPIError:
    if isinstance(result, ProfileAPIError):
        return result
    return ResponseFormatError("the member file answer was JSON, not a file.")


def _describe(rows: pd.DataFrame) -> str:
    return ", ".join(f"{n!r} ({i})" for i, n in zip(rows["cohort_id"], rows["name"]))


def _keys_problem(api_key: Any, secret_key: Any) -> str | None:
    """What is wrong with the two keys, or None; never quotes a key."""
    missing = [what for what, value in (("API key", api_key), ("secret key", secret_key))
               if not isinstance(value, str) or not value.strip()]
    if missing:
        return (f"the {' and the '.join(missing)} {'is' if len(missing) == 1 else 'are'} empty: the "
                "Cohorts API needs both the project's API key and its secret key "
                f"({API_KEY_VARIABLE} and {KEY_VARIABLE}); amptools.cohorts.connect() uses the "
                "embedded sample org when neither is set.")
    if any(c in api_key for c in "\r\n:"):
        return "the API key contains a line break or a colon; paste it again without one."
    if any(c in secret_key for c in "\r\n"):
        return "the secret key contains a line break; paste it again without one."
    return None


# -- where a CohortClient comes from -----------------------------------------------------
def connect(**kwargs: Any) -> CohortClient:
    """A CohortClient for the real API when both keys are set, else for the embedded sample org.

    ``AMPLITUDE_API_KEY`` and ``AMPLITUDE_SECRET_KEY`` both set: the real API.
    Neither: the sample org that :func:`amptools.connect` also uses. Only one: a
    :class:`ConfigurationError` naming the missing one (when the secret key is set
    for the Profile API, the Cohorts API still needs the API key too).
    """
    if os.environ.get(API_KEY_VARIABLE, "").strip() or os.environ.get(KEY_VARIABLE, "").strip():
        return CohortClient.from_env(**kwargs)
    import amptools

    return amptools._shared_sample_server().cohort_client(**kwargs)


def for_profile_client(client: ProfileClient, **kwargs: Any) -> CohortClient:
    """The CohortClient that goes with a ProfileClient: its sample org's, or from the environment.

    Raises
    ------
    ConfigurationError
        For a real ProfileClient when ``AMPLITUDE_API_KEY`` or ``AMPLITUDE_SECRET_KEY`` is missing.
    """
    if getattr(client, "is_sample", False):
        from .sample.server import running

        server = running(client.base_url)
        if server is not None:
            return server.cohort_client(**kwargs)
    return CohortClient.from_env(**kwargs)
