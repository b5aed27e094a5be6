"""CohortClient: Amplitude's Behavioral Cohorts API — list cohorts, download their members.

An analyst's "which users?" is usually a cohort already built in Amplitude. This
module lists the project's cohorts with their names, sizes and sync targets, and
downloads a cohort's members (``amplitude_id``, ``user_id`` and, on request, user
properties) so they can be handed to :meth:`ProfileClient.get_profiles`.

The same standards as :class:`~amptools.client.ProfileClient`, through the same
transport (:mod:`amptools.transport`): the keys sit in holders that print as ``***``
and travel only in the ``Authorization`` header (HTTP Basic: API key as user, secret
key as password); ``http://`` is allowed only on loopback; every attempt runs under
a deadline and a byte cap (member files: ``max_response_bytes``, 512 MiB by
default, on the wire and once decompressed), and a download can be cancelled
mid-body; a Ctrl-C leaves no frame holding a key; answers map onto the amptools
error tree (:class:`~amptools.errors.CohortsAPIError`); transient failures are
retried with capped backoff by :func:`~amptools.transport.call_with_retries`.

Downloading is asynchronous: request → poll (``JOB INPROGRESS`` → ``JOB COMPLETED``,
with backoff, bounded by ``max_wait``, cancellable) → the file, in the body or via a
302 to a pre-signed storage URL that is fetched **without** the ``Authorization``
header (an expired link is asked for again). Every "get one cohort" request counts
against the org's 500 a month, so downloads are cached by ``(cohort_id,
last_computed)`` once they were read: a cohort not computed again since is never
downloaded twice.
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
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urljoin

import pandas as pd

from . import connection, errors, stores
from .client import KEY_VARIABLE, api_scope
from .errors import (
    AmplitudeAPIError,
    AmptoolsWarning,
    CohortsAPIError,
    ConfigurationError,
    InvalidQueryError,
    ProfileAPIError,
    ResponseFormatError,
    warn,
    whole_number,
)
from .transport import (
    BasicAuth,
    HTTPAnswer,
    HTTPGetter,
    KeyHolder,
    RetryPolicy,
    Secret,
    call_with_retries,
    checked_seconds,
    checked_timeout,
    checked_url,
    jitter,
    parse_retry_after,
)


__all__ = [
    "API_KEY_VARIABLE",
    "COHORT_COLUMNS",
    "COHORT_DTYPES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HOSTS",
    "MEMBER_ID_COLUMNS",
    "CohortClient",
    "CohortFileWarning",
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
# Amplitude's page names a "Get usage" endpoint; three independent clients use this path.
USAGE_PATH = "/api/3/cohorts/usage"
USAGE_FALLBACK_PATH = "/api/5/cohorts/usage"  # asked on a 404 (what amptools asked before)
#: The largest answer accepted, on the wire and once decompressed: a member file of the
#: API's 2 million users with a few properties fits.
DEFAULT_MAX_RESPONSE_BYTES = 512 * 2**20

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


class CohortJobTimeout(CohortsAPIError, ProfileAPIError, TimeoutError):
    """A cohort download job did not complete within ``max_wait``. Call again to keep waiting.

    (A :class:`ProfileAPIError` too, for now: see :class:`~amptools.errors.CohortsAPIError`.)
    """


class CohortFileWarning(AmptoolsWarning):
    """A cohort member file held bytes that are not UTF-8: they were replaced (the lines are named)."""


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
) -> dict[str, Any] | CohortsAPIError:
    """Turn one Cohorts API answer into its JSON object, or the error it stands for.

    Parameters
    ----------
    status, text, headers, url
        The answer (``url`` without credentials).
    not_found : str
        What a 404 means for this request (said in the error).

    Returns
    -------
    dict or CohortsAPIError
        The error is also of its kind (:class:`AuthenticationError`,
        :class:`ThrottledError`, ...).
    """
    context: dict[str, Any] = {"status": status, "body": text, "url": url}
    try:
        payload: Any = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        payload = None
    error_text = ""
    if isinstance(payload, dict):
        error_text = str(payload.get("error") or payload.get("message") or "")
    of = CohortsAPIError.of
    if status in (401, 403):
        return of(errors.AuthenticationError,
                  f"the Cohorts API rejected the keys (HTTP {status}): it needs both the project's "
                  f"API key ({API_KEY_VARIABLE}, sent as the user) and its secret key ({KEY_VARIABLE}, "
                  "sent as the password) — check that both belong to this project.", **context)
    if status == 429:
        return of(errors.ThrottledError,
                  "the Cohorts API is over its limit (HTTP 429; 60 downloads per 10 minutes and 4 in "
                  "parallel per app); amptools waits and retries.",
                  retry_after=parse_retry_after(headers.get("Retry-After")), **context)
    if status == 404:
        return of(errors.NotFoundError, f"{not_found or 'nothing at ' + url.split('?')[0]} (HTTP 404).",
                  **context)
    if 300 <= status < 400:
        return of(errors.RedirectError,
                  f"the Cohorts API redirected (HTTP {status}) where no redirect was expected; amptools "
                  "does not follow it, so the keys are not sent elsewhere.", **context)
    if status >= 500:
        return of(errors.ServerError, f"the Cohorts API failed (HTTP {status}); retried with backoff.",
                  **context)
    if status >= 400:
        return of(ProfileAPIError,
                  f"the Cohorts API refused the request (HTTP {status}): {error_text or text[:200]}",
                  **context)
    if not isinstance(payload, dict):
        return of(ResponseFormatError,
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
    """The listing's rows; a time nobody gave (a cohort never computed) is ``NaT``."""
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
    for column in ("last_computed", "last_modified"):
        # A column of only NaT is timezone-naive: made UTC before the cast, which refuses that.
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype(COHORT_DTYPES)


def read_member_file(content: bytes, *, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> pd.DataFrame:
    """Read a cohort member file tolerantly: CSV (or TSV, or JSON lines), gzip/zip or plain.

    Parameters
    ----------
    content : bytes
        The file as downloaded.
    max_bytes : int
        The largest file accepted once decompressed (512 MiB by default).

    Returns
    -------
    pandas.DataFrame
        ``amplitude_id`` (Int64, or str if the file holds non-numeric ids),
        ``user_id`` (str, <NA> when blank), then one str column per property in the
        file's order. A missing id column is added empty.

    Raises
    ------
    ResponseFormatError
        When the file holds neither an ``amplitude_id`` nor a ``user_id`` column (the
        message names the columns found), cannot be decompressed, or is larger than
        ``max_bytes`` once decompressed.

    Warns
    -----
    CohortFileWarning
        When some bytes are not UTF-8: only those are replaced (by ``\ufffd``), and the
        warning names their lines; every other id is read exactly.
    """
    text = _utf8(_unpacked(content, max_bytes))
    stripped = text.lstrip()
    try:
        if stripped.startswith(("[", "{")):
            records = _json_records(stripped)
            header = list(dict.fromkeys(k for r in records for k in r))
            raw = pd.DataFrame([[_text(r.get(k)) for k in header] for r in records], columns=header,
                               dtype=object)
        else:
            first = text.split("\n", 1)[0]
            delimiter = ("\t" if "\t" in first and "," not in first
                         else ";" if first.count(";") > first.count(",") else ",")
            # pandas' C parser: a 2-million-member file (the API's maximum) in seconds.
            raw = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                              skip_blank_lines=True).fillna("") if text.strip() else pd.DataFrame()
            if len(raw.columns):
                raw = raw[(raw != "").any(axis=1)]
    except (ValueError, RecursionError) as error:  # pandas' ParserError and JSON's are ValueErrors
        raise _format_error(f"the cohort file cannot be read as CSV or JSON ({type(error).__name__}: "
                            f"{str(error)[:200]}).") from None
    names = [_ID_ALIASES.get(str(h).strip().lower(), str(h).strip()) for h in raw.columns]
    if names and not set(names) & set(MEMBER_ID_COLUMNS):
        raise _format_error(
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


def _format_error(message: str) -> CohortsAPIError:
    return CohortsAPIError.of(ResponseFormatError, message)


def _unpacked(content: bytes, limit: int) -> bytes:
    """The file inside a gzip or zip container (or ``content`` itself), never past ``limit``
    bytes: the output of decompression is bounded, so a small bomb stops at the limit."""
    too_large = (f"the cohort file is larger than max_response_bytes={limit:,} once decompressed; "
                 "raise max_response_bytes= if the cohort is that large.")
    if content[:2] == b"\x1f\x8b":
        out = io.BytesIO()
        rest = content
        try:
            while rest[:2] == b"\x1f\x8b":  # gzip allows several members one after another
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out.write(inflater.decompress(rest, limit + 1 - out.tell()))
                if out.tell() > limit or inflater.unconsumed_tail:
                    raise _format_error(too_large)
                if not inflater.eof:
                    raise _format_error("the cohort file's gzip data is cut short; download it again.")
                rest = inflater.unused_data
        except zlib.error as error:
            raise _format_error(f"the cohort file's gzip data cannot be decompressed ({error}).") from None
        return out.getvalue()
    if content[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                if not members:
                    return b""
                if members[0].file_size > limit:
                    raise _format_error(too_large)
                with archive.open(members[0]) as inner:
                    data = inner.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise _format_error(f"the cohort file's zip data cannot be read ({error}).") from None
        if len(data) > limit:
            raise _format_error(too_large)
        return data
    return content


def _utf8(content: bytes) -> str:
    """The file's text. Bytes that are not UTF-8 are replaced, and a warning names their lines
    (decoding the whole file as another encoding would garble every non-ASCII id)."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    bad: list[int] = []
    start, number = 0, 0
    while start <= len(content):
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end
        number += 1
        try:
            content[start:end].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(number)
        start = end + 1
    shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    warn(f"the cohort file is not valid UTF-8 on line{'s' if len(bad) > 1 else ''} {shown}: those "
         "bytes were replaced by '\ufffd', so the ids on those lines may not match a user; every "
         "other line was read exactly.", CohortFileWarning)
    return content.decode("utf-8-sig", errors="replace")


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
    """Member files by (scope, cohort_id, last_computed, what was asked): memory, or SQLite.

    The file is opened as every amptools store is (:func:`amptools.stores.connect`:
    private to its owner, ``~`` expanded, a :class:`CacheError` when it cannot be
    used). Once open, a failure to read or write it costs nothing already downloaded:
    a :class:`~amptools.cache.CacheWarning`, and the memory copy is kept.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = stores.expand(path) if path is not None else None
        self._memory: dict[tuple[str, ...], bytes] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            stores.connect(self.path, what="the cohort cache", prepare=_create_table).close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per use, closed after (sqlite3's own context manager
        # only commits), so a notebook never holds the file open.
        assert self.path is not None
        with contextlib.closing(stores.connect(self.path, what="the cohort cache")) as conn, conn:
            yield conn

    def get(self, key: tuple[str, ...]) -> bytes | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        if self.path is None:
            return None
        try:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT content FROM cohort_files WHERE scope=? AND cohort_id=? AND last_computed=? "
                    "AND variant=?", key).fetchone()
            return gzip.decompress(row[0]) if row else None
        except (sqlite3.Error, errors.CacheError, zlib.error, EOFError) as error:
            self._warn("read", error)
            return None

    def put(self, key: tuple[str, ...], content: bytes) -> None:
        with self._lock:
            self._memory[key] = content
        if self.path is not None:
            try:
                with self._connect() as conn:
                    conn.execute("INSERT OR REPLACE INTO cohort_files VALUES (?, ?, ?, ?, ?, ?)",
                                 (*key, time.time(), gzip.compress(content, mtime=0)))
            except (sqlite3.Error, errors.CacheError) as error:
                self._warn("written", error)

    def forget(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._memory.pop(key, None)
        if self.path is not None:
            with contextlib.suppress(sqlite3.Error, errors.CacheError), self._connect() as conn:
                conn.execute("DELETE FROM cohort_files WHERE scope=? AND cohort_id=? AND last_computed=? "
                             "AND variant=?", key)

    def _warn(self, done: str, error: BaseException) -> None:
        from .cache import CacheWarning

        warn(f"the cohort cache {self.path!r} could not be {done} ({type(error).__name__}: {error}); "
             "this client keeps its downloads in memory.", CacheWarning)


def _create_table(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cohort_files (scope TEXT, cohort_id TEXT, "
            "last_computed TEXT, variant TEXT, fetched_at REAL, content BLOB, "
            "PRIMARY KEY (scope, cohort_id, last_computed, variant))")


# -- the client ---------------------------------------------------------------------
class CohortClient(KeyHolder):
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
        Seconds per request: positive and finite.
    cache : str or Path, optional
        A SQLite file keeping downloaded member files across sessions (created
        readable by its owner only; ``~`` is expanded); without it they are kept for
        the life of this client.
    max_retries : int
        Retries of transient failures (5xx, 429, resets, timeouts) per request.
    backoff_base, backoff_cap, retry_after_cap : float
        The retry delays, as :class:`~amptools.client.ProfileClient`'s.
    deadline : float, optional
        Seconds one API call may take in all (connect, send, headers, body); by
        default the connect plus the read timeout.
    download_deadline : float
        Seconds one attempt at downloading a member file may take in all (900).
    max_response_bytes : int
        The largest answer accepted, on the wire and once decompressed
        (:data:`DEFAULT_MAX_RESPONSE_BYTES`, 512 MiB); a larger one is a
        :class:`ResponseFormatError`.
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
        cache: str | os.PathLike[str] | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        deadline: float | None = None,
        download_deadline: float = 900.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        poll_base: float = 1.0,
        poll_cap: float = 15.0,
        listing_max_age: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        problem = _keys_problem(api_key, secret_key)
        secrets = (Secret(api_key.strip()), Secret(secret_key.strip())) if problem is None else None
        # As in ProfileClient: no frame of a raised error may hold a key in a local.
        del api_key, secret_key
        if secrets is None:
            raise ConfigurationError(problem)
        if region not in HOSTS:
            raise ConfigurationError(f"region must be one of {', '.join(map(repr, HOSTS))}, got {region!r}.")
        parts = checked_url(base_url or HOSTS[region], what="base_url", use=f"{HOSTS['us']} (or region='eu')")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.timeout = checked_timeout(timeout)
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_cap, retry_after_cap)  # checks them
        self.max_retries = self.policy.max_retries
        self.deadline = checked_seconds("deadline", sum(self.timeout) if deadline is None else deadline)
        self.download_deadline = checked_seconds("download_deadline", download_deadline)
        self.max_response_bytes = whole_number("max_response_bytes", max_response_bytes, minimum=1024)
        self._http = HTTPGetter(BasicAuth(*secrets), timeout=self.timeout, deadline=self.deadline,
                                max_bytes=self.max_response_bytes)
        self._scope = api_scope(self.base_url, secrets[0].reveal() + ":" + secrets[1].reveal())
        self.poll_base = checked_seconds("poll_base", poll_base)
        self.poll_cap = checked_seconds("poll_cap", poll_cap)
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
        """True when the client talks to an embedded sample org of this process
        (:func:`amptools.connection.sample_server` says which)."""
        return connection.is_sample(self.base_url)

    # -- requests ------------------------------------------------------------------
    def _call(self, fetch: Callable[[], _T | AmplitudeAPIError], cancel: threading.Event | None) -> _T:
        """Run ``fetch`` until it answers, retrying transient errors with capped backoff.

        Every error raised is a :class:`CohortsAPIError` (of its kind)."""
        def attempt() -> _T | AmplitudeAPIError:
            self.requests_sent += 1
            result = fetch()
            return CohortsAPIError.adopt(result) if isinstance(result, AmplitudeAPIError) else result

        result, _ = call_with_retries(attempt, self.policy, cancel=cancel, sleep=self._sleep, rng=self._rng)
        return result

    def _wait(self, seconds: float, cancel: threading.Event | None, when: str) -> None:
        if cancel is not None:
            if cancel.wait(seconds):
                raise errors.FetchCancelled(f"cancelled {when}")
        else:
            self._sleep(seconds)

    def _get_json(self, path: str, cancel: threading.Event | None = None, *,
                  not_found: str = "", cut: bool = False) -> tuple[int, dict[str, Any]]:
        """One API call's JSON object, retried; ``cut``: a cancel also ends the attempt in
        flight (not for a download request, whose answer says which download was spent)."""
        url = self.base_url + path

        def fetch() -> tuple[int, dict[str, Any]] | AmplitudeAPIError:
            answer = self._http.get(url, headers={"Accept": "application/json"},
                                    cancel=cancel if cut else None)
            if not isinstance(answer, HTTPAnswer):
                return answer
            mapped = map_cohort_response(answer.status, answer.text, answer.headers, url, not_found=not_found)
            return mapped if isinstance(mapped, CohortsAPIError) else (answer.status, mapped)

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
            raise _format_error("the cohort list has no 'cohorts' array.")
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
        ResponseFormatError
            The file could not be read (nothing is cached then); calling again
            downloads the same file again without spending another download.
        FetchCancelled, NotFoundError, AuthenticationError, CohortsAPIError
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
        frame = self._read_cached(key, content, label) if content is not None else None
        from_cache = frame is not None
        if frame is None:
            content = self._download(cohort_id, label, key, props, keys, max_wait, cancel, say)
            try:
                frame = read_member_file(content, max_bytes=self.max_response_bytes)
            except ResponseFormatError as error:
                # Nothing is cached: the job stays pending, so calling again fetches its
                # file again (Amplitude keeps it for 7 days) without spending a download.
                raise _format_error(
                    f"the member file of cohort {label} cannot be read: {error} Nothing was kept; "
                    "call members() again to download the same file again (no second download "
                    "is spent).") from None
            self._pending.pop(key, None)
            if key[2]:  # a download without its computation time could never be reused
                self._cache.put(key, content)
        else:
            say("cached", f"cohort {label}: reused the download of its computation at {key[2]}; "
                          "no request sent")
        frame.attrs["cohort"] = {"cohort_id": cohort_id, "name": name, "last_computed": computed,
                                 "from_cache": from_cache, "downloads_spent": downloads_spent()}
        say("done", f"cohort {label}: {len(frame):,} members")
        return frame

    def _read_cached(self, key: tuple[str, ...], content: bytes, label: str) -> pd.DataFrame | None:
        """A cached file's members, or None (and the entry dropped) when it cannot be read
        (an older amptools stored files before reading them)."""
        try:
            return read_member_file(content, max_bytes=self.max_response_bytes)
        except ResponseFormatError as error:
            log.warning("cohorts: the cached file of cohort %s cannot be read (%s); downloading it again",
                        label, error)
            self._cache.forget(key)
            return None

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
                raise _format_error(f"the download request for cohort {label} gave no request_id.")
            self.downloads += 1
            spent = _spend()
            self._pending[key] = request_id
            message = (f"cohort {label}: download requested — {spent} of the org's {MONTHLY_DOWNLOADS} "
                       "monthly downloads spent by this process")
            log.info("%s", message)
            say("requested", message)
        try:
            return self._wait_and_fetch(request_id, label, key, deadline, max_wait, cancel, say)
        except errors.FetchCancelled as cancelled:
            if label in str(cancelled):
                raise
            raise errors.FetchCancelled(f"{cancelled} (cohort {label}); call members() again to resume: "
                                        "no second download is spent.") from None

    def _wait_and_fetch(self, request_id: str, label: str, key: tuple[str, ...], deadline: float,
                        max_wait: float, cancel: threading.Event | None,
                        say: Callable[[str, str], Any]) -> bytes:
        poll = 0
        while True:
            status, payload = self._get_json(
                STATUS_PATH.format(quote(request_id, safe="")), cancel,
                not_found=f"the download job of cohort {label} is gone", cut=True)
            state = str(payload.get("async_status", "")).upper()
            if status == 200 and "COMPLETED" in state:
                break
            if "FAIL" in state or "ERROR" in state:
                self._pending.pop(key, None)
                raise CohortsAPIError.of(ProfileAPIError, f"Amplitude's download job for cohort {label} "
                                                          f"failed ({state}).")
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
        return self._fetch_file(request_id, label, cancel)

    def _fetch_file(self, request_id: str, label: str, cancel: threading.Event | None) -> bytes:
        url = self.base_url + FILE_PATH.format(quote(request_id, safe=""))

        def fetch_file() -> HTTPAnswer | AmplitudeAPIError:
            answer = self._http.get(url, cancel=cancel, deadline=self.download_deadline)
            if not isinstance(answer, HTTPAnswer) or answer.status in (200, 301, 302, 303, 307, 308):
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
            stored = self._call(lambda: self._storage_get(location, cancel), cancel)
            if stored.status == 200:
                return stored.content
            if stored.status not in _EXPIRED_LINK:
                raise CohortsAPIError.of(
                    ProfileAPIError,
                    f"the storage host refused the member file of cohort {label} (HTTP {stored.status}).",
                    status=stored.status, url=location.split("?")[0])
            log.info("cohorts: the storage link of cohort %s expired; asking for a fresh one", label)
        raise CohortsAPIError.of(
            ProfileAPIError,
            f"the storage link of cohort {label} was expired {_LINK_RENEWALS} times in a row; "
            "check this machine's clock, then call members() again.")

    def _storage_get(self, location: str, cancel: threading.Event | None) -> HTTPAnswer | AmplitudeAPIError:
        answer = self._http.get(location, authorized=False, cancel=cancel, deadline=self.download_deadline)
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
            ``resets_at`` (a UTC timestamp, or None when not said),
            ``downloads_this_process`` (:func:`downloads_spent`).

        ``GET /api/3/cohorts/usage`` answers ``{"rest_download": {"limit", "usage",
        "resets_at"}}``; on a 404 the older ``/api/5/cohorts/usage`` is asked. The
        answer is read tolerantly: the first count under a key naming downloads or
        usage, and a limit if one is given.
        """
        payload: Any = {}
        for path in (USAGE_PATH, USAGE_FALLBACK_PATH):
            try:
                _, payload = self._get_json(path)
                break
            except errors.NotFoundError:
                continue
            except ResponseFormatError:
                break
        used = _find_number(payload, ("download", "usage", "count", "used"), skip="limit")
        limit = _find_number(payload, ("limit", "quota"))
        reset = _find_value(payload, "reset")
        resets_at = _timestamp(reset) if isinstance(reset, (str, int, float)) else pd.NaT
        return {"downloads_this_month": used, "monthly_limit": limit or MONTHLY_DOWNLOADS,
                "resets_at": None if pd.isna(resets_at) else resets_at,
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


def _find_value(payload: Any, word: str) -> Any:
    """The first value under a key naming ``word`` (depth-first), or None."""
    if isinstance(payload, Mapping):
        for name, value in payload.items():
            if word in str(name).lower() and not isinstance(value, Mapping):
                return value
        for value in payload.values():
            found = _find_value(value, word)
            if found is not None:
                return found
    return None


def _as_error(result: dict[str, Any] | CohortsAPIError) -> CohortsAPIError:
    if isinstance(result, CohortsAPIError):
        return result
    return _format_error("the member file answer was JSON, not a file.")


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
# amptools.connection chooses between the real API and the sample org for both APIs;
# these are its functions under the names this module has always offered.
connect = connection.connect_cohorts
for_profile_client = connection.cohort_client_for
