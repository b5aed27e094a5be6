"""The sample org's Behavioral Cohorts API, and a loopback server playing the storage host.

:class:`~amptools.sample.server.SampleServer` hands every ``/api/...`` request to
:meth:`SampleCohorts.handle`; everything about cohorts lives here. Authentication is
HTTP Basic with the server's ``api_key`` as user and its ``secret_key`` as password.

=================================================  ============================================
request                                            answer
=================================================  ============================================
``GET /api/3/cohorts[?includeSyncInfo=true]``      200 ``{"cohorts": [...]}`` (Unix seconds)
``GET /api/5/cohorts/request/{cohort_id}``         202 ``{"request_id", "cohort_id"}``; 404 unknown
``GET /api/5/cohorts/request-status/{request}``    202 ``JOB INPROGRESS`` until ``job_delay`` passed,
                                                   then 200 ``JOB COMPLETED``
``GET /api/5/cohorts/request/{request}/file``      200 CSV body up to ``inline_limit`` members,
                                                   else 302 to a pre-signed storage URL (gzip CSV)
``GET /api/3/cohorts/usage``                       200 ``{"rest_download": {"limit": 500, "usage": n,
                                                   "resets_at": ISO time}}`` (downloads this month)
missing or wrong credentials                       401 ``{"error": "Invalid API key or secret key"}``
=================================================  ============================================

The cohorts are those of ``org.json``, all synced to the Profile API (so a user's
``cohort_ids`` there are exactly the cohorts whose member file lists the user),
plus two that are not synced to it and never show up in profiles. Sizes are the
true member counts. The storage host records the headers of every request it gets
and can be told to expire links.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import hmac
import io
import itertools
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from amptools.sample.server import SampleServer, RequestHandler

__all__ = ["PREFIX", "SampleCohorts", "StorageHost", "StorageRequest"]

PREFIX = "/api/"
MONTHLY_LIMIT = 500
AMPLITUDE_ID_BASE = 100_000_000_000
# Cohorts the sample org has besides org.json's: synced elsewhere, never to the
# Profile API, so profiles never list them (id, name, member rate, targets, archived).
_EXTRA_COHORTS = (
    ("cohort29", "Spring sale audience", 0.07, ("braze",), False),
    ("cohort30", "Old onboarding test", 0.02, (), True),
)
_SHARED: dict[tuple[int, int, str], dict[str, list[int]]] = {}
_SHARED_LOCK = threading.Lock()
_OWNERS = ("ana@example.com", "ben@example.com", "growth-team@example.com")


@dataclass
class StorageRequest:
    """One request the storage host received: its path and every header (names lower-case)."""

    path: str
    headers: dict[str, str]
    status: int | None = None


@dataclass
class _Job:
    cohort_id: str
    ready_at: float
    props: bool
    prop_keys: tuple[str, ...]
    request_id: str = ""
    file: bytes | None = field(default=None, repr=False)


class _StorageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "amptools-sample-storage"
    server: _StorageServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802
        self.server.host._serve(self)


class _StorageServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    host: StorageHost

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client hanging up is normal here


class StorageHost:
    """A loopback server that plays the pre-signed storage (S3-like) host.

    Links live ``link_ttl`` seconds; :meth:`expire_links` expires every link given
    out so far and :meth:`expire_next` makes the next ``n`` links born expired.
    :attr:`requests` lists what it received, headers included.
    """

    def __init__(self, *, link_ttl: float = 60.0) -> None:
        self.link_ttl = link_ttl
        self._links: dict[str, tuple[bytes, float]] = {}
        self._requests: list[StorageRequest] = []
        self._born_expired = 0
        self._lock = threading.Lock()
        self._httpd: _StorageServer | None = None
        self._counter = itertools.count(1)

    @property
    def requests(self) -> list[StorageRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def url(self) -> str:
        if self._httpd is None:
            httpd = _StorageServer(("127.0.0.1", 0), _StorageHandler)
            httpd.host = self
            threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                             name="amptools-sample-storage", daemon=True).start()
            self._httpd = httpd
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def publish(self, content: bytes, name: str) -> str:
        """A fresh pre-signed URL for ``content``."""
        with self._lock:
            token = hashlib.sha256(f"{next(self._counter)}:{time.time_ns()}".encode()).hexdigest()[:32]
            expires = time.monotonic() + self.link_ttl
            if self._born_expired:
                self._born_expired -= 1
                expires = time.monotonic() - 1
            self._links[token] = (content, expires)
        return f"{self.url}/cohort-exports/{name}.csv.gz?X-Amz-Expires={self.link_ttl:g}&X-Amz-Signature={token}"

    def expire_links(self) -> None:
        """Every link given out so far answers 403 "Request has expired" from now on."""
        with self._lock:
            self._links = {t: (c, -math.inf) for t, (c, _) in self._links.items()}

    def expire_next(self, n: int = 1) -> None:
        """The next ``n`` links are already expired when given out."""
        with self._lock:
            self._born_expired += n

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _serve(self, handler: _StorageHandler) -> None:
        path, _, query = handler.path.partition("?")
        record = StorageRequest(path=path, headers={k.lower(): v for k, v in handler.headers.items()})
        with self._lock:
            self._requests.append(record)
            token = parse_qs(query).get("X-Amz-Signature", [""])[-1]
            link = self._links.get(token)
        if link is None:
            status, body, kind = 403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml"
        elif link[1] < time.monotonic():
            status, kind = 403, "application/xml"
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        else:
            status, body, kind = 200, link[0], "application/octet-stream"
        record.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class SampleCohorts:
    """The sample org's cohorts and their download jobs.

    Parameters
    ----------
    owner : SampleServer
        The server whose org, keys and arrivals these cohorts use.
    job_delay : float
        Seconds from a download request until its job completes (``math.inf``: never).
    inline_limit : int
        Cohorts with at most this many members are answered in the file's body;
        larger ones with a 302 to the storage host.
    """

    def __init__(self, owner: SampleServer, *, job_delay: float = 0.3, inline_limit: int = 100) -> None:
        self.owner = owner
        self.job_delay = job_delay
        self.inline_limit = inline_limit
        self.storage = StorageHost()
        self.downloads = 0
        self._jobs: dict[str, _Job] = {}
        self._members: dict[str, list[int]] | None = None
        self._recomputed: dict[str, int] = {}
        self._renamed: dict[str, str] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    # ------------------------------------------------------------------ the data
    def members(self, cohort_id: str) -> list[int]:
        """The indexes of the org's users in a cohort (empty for an unknown id)."""
        return self._memberships().get(cohort_id, [])

    def _memberships(self) -> dict[str, list[int]]:
        with self._lock:
            if self._members is None:
                org = self.owner.org
                # Every user is built once (about 0.4 ms each); servers of the same org
                # in one process share the result.
                key = (org.seed, org.n_users, json.dumps(org.definition["cohorts"], sort_keys=True))
                with _SHARED_LOCK:
                    members = _SHARED.get(key)
                    if members is None:
                        members = {cid: [] for cid in org.cohort_ids}
                        for index in range(org.n_users):
                            for cid in org._user(index).cohorts:
                                members[cid].append(index)
                        for cid, _, rate, _, _ in _EXTRA_COHORTS:
                            members[cid] = [i for i in range(org.n_users) if _draw(org.seed, cid, i) < rate]
                        _SHARED[key] = members
                self._members = members
            return self._members

    def definitions(self, *, sync_info: bool = True) -> list[dict[str, Any]]:
        """The cohorts as ``GET /api/3/cohorts`` lists them."""
        org = self.owner.org
        entries = [(cid, org.cohort_names[cid], ("profile_api",) + (("braze",) if n % 3 == 0 else ()), False)
                   for n, cid in enumerate(org.cohort_ids, start=1)]
        entries += [(cid, name, targets, archived) for cid, name, _, targets, archived in _EXTRA_COHORTS]
        memberships = self._memberships()
        cohorts = []
        for n, (cid, name, targets, archived) in enumerate(entries):
            if cid in self._removed:
                continue
            name = self._renamed.get(cid, name)
            computed = org.as_of - 3600 * (n % 24) + self._recomputed.get(cid, 0)
            entry: dict[str, Any] = {
                "id": cid, "name": name, "description": f"Sample cohort: {name.lower()}.",
                "size": len(memberships[cid]), "archived": archived, "published": n % 5 != 4,
                "owners": [_OWNERS[n % len(_OWNERS)]], "appId": 123456, "type": "redshift",
                "createdAt": org.as_of - 86400 * (30 + n), "lastMod": org.as_of - 86400 * (n % 7),
                "lastComputed": computed,
            }
            if sync_info:
                entry["syncMetadata"] = [{"target": t, "frequency": "daily", "last_successful": computed}
                                         for t in targets]
            cohorts.append(entry)
        return cohorts

    def recompute(self, cohort_id: str) -> None:
        """Pretend a cohort was computed again (its ``lastComputed`` moves on)."""
        with self._lock:
            self._recomputed[cohort_id] = self._recomputed.get(cohort_id, 0) + 60

    def rename(self, cohort_id: str, name: str) -> None:
        """Give a cohort another name (two cohorts may share one, as in Amplitude)."""
        self._renamed[cohort_id] = name

    def remove(self, cohort_id: str) -> None:
        """Delete a cohort: it leaves the list and its download requests answer 404."""
        self._removed.add(cohort_id)

    def member_file(self, cohort_id: str, *, props: bool, prop_keys: tuple[str, ...]) -> bytes:
        """The CSV of a cohort's members: ``amplitude_id, user_id`` and properties."""
        org = self.owner.org
        indexes = self.members(cohort_id)
        keys: list[str] = []
        if props:
            seen: dict[str, None] = {}
            for index in indexes:
                seen.update(dict.fromkeys(org._user(index).props))
            keys = [k for k in seen if not prop_keys or k in prop_keys]
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL if len(indexes) > self.inline_limit else csv.QUOTE_MINIMAL)
        writer.writerow(["amplitude_id", "user_id", *keys])
        for index in indexes:
            user = org._user(index)
            writer.writerow([AMPLITUDE_ID_BASE + index, user.user_id, *(_cell(user.props.get(k)) for k in keys)])
        return out.getvalue().encode("utf-8")

    def resets_at(self) -> str:
        """When the monthly download count starts again: the next first of a month (UTC, ISO 8601)."""
        now = datetime.fromtimestamp(self.owner.org.as_of, tz=timezone.utc)
        following = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0,
                                                                       microsecond=0)
        return following.strftime("%Y-%m-%dT%H:%M:%SZ")

    def stop(self) -> None:
        self.storage.stop()

    # ------------------------------------------------------------------ HTTP
    def handle(self, handler: RequestHandler, path: str, query: str) -> None:
        """Answer one ``/api/...`` request on the sample server's handler."""
        owner = self.owner
        if handler.command != "GET":
            handler.close_connection = True
            return handler._send(404, b"")
        if not self._authorized(handler.headers.get("Authorization", "")):
            return handler._json_error(401, "Invalid API key or secret key")
        params = parse_qs(query, keep_blank_values=True)
        parts = path.strip("/").split("/")
        if parts == ["api", "3", "cohorts"]:
            sync = params.get("includeSyncInfo", ["false"])[-1].lower() == "true"
            return self._json(handler, 200, {"cohorts": self.definitions(sync_info=sync)})
        if parts == ["api", "3", "cohorts", "usage"]:
            return self._json(handler, 200, {"rest_download": {
                "limit": MONTHLY_LIMIT, "usage": self.downloads, "resets_at": self.resets_at()}})
        if parts[:3] != ["api", "5", "cohorts"]:
            return handler._send(404, b"")
        rest = parts[3:]
        if len(rest) == 2 and rest[0] == "request":
            cohort_id = rest[1]
            if cohort_id not in self._memberships() or cohort_id in self._removed:
                return handler._json_error(404, f"Cohort {cohort_id} not found")
            with self._lock:
                self.downloads += 1
                request_id = f"req-{owner.org.seed % 1000}-{next(self._counter)}"
                self._jobs[request_id] = _Job(
                    cohort_id, time.monotonic() + self.job_delay,
                    params.get("props", ["0"])[-1] in ("1", "true"), tuple(params.get("propKeys", [])),
                    request_id)
            return self._json(handler, 202, {"request_id": request_id, "cohort_id": cohort_id})
        job = self._jobs.get(rest[1]) if len(rest) >= 2 else None
        if len(rest) == 2 and rest[0] == "request-status":
            if job is None:
                return handler._json_error(404, f"Request {rest[1]} not found")
            done = time.monotonic() >= job.ready_at
            return self._json(handler, 200 if done else 202, {
                "request_id": job.request_id, "cohort_id": job.cohort_id,
                "async_status": "JOB COMPLETED" if done else "JOB INPROGRESS"})
        if len(rest) == 3 and rest[0] == "request" and rest[2] == "file":
            if job is None:
                return handler._json_error(404, f"Request {rest[1]} not found")
            if time.monotonic() < job.ready_at:
                return handler._json_error(400, "The job is not completed yet")
            if job.file is None:
                job.file = self.member_file(job.cohort_id, props=job.props, prop_keys=job.prop_keys)
            if len(self.members(job.cohort_id)) <= self.inline_limit:
                return handler._send(200, job.file, "text/csv; charset=utf-8")
            location = self.storage.publish(gzip.compress(job.file, mtime=0), job.request_id)
            return handler._send(302, b"", None, {"Location": location})
        return handler._send(404, b"")

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return False
        expected = f"{self.owner.api_key}:{self.owner.secret_key}".encode()
        return hmac.compare_digest(given, expected)

    @staticmethod
    def _json(handler: RequestHandler, status: int, payload: Mapping[str, Any]) -> None:
        handler._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")


def _draw(seed: int, cohort_id: str, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{cohort_id}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
