"""What an adversarial review broke (issue 9), each case against real parts.

The transport cases run against a hostile server on 127.0.0.1: each test tells it
how to answer (trickle, bomb, lie about throttling, stall) and counts what arrived.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import stat
import struct
import threading
import time
import traceback
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

import amptools as amp
from amptools.cache import CacheWarning, ProfileCache
from amptools.client import THROTTLE_TEXT
from amptools.transport import parse_retry_after, retry_delay
from amptools.errors import CacheError, ConfigurationError, InvalidQueryError, ResponseFormatError
from amptools.ids import parse_id_file
from amptools.models import UserProfile

CANARY = "CANARYkey0123456789abcdef"
API_CANARY = "APICANARYkey0123456789"
PROFILE = {"userData": {"user_id": "u1", "device_id": None, "recommendations": None,
                        "amp_props": {"plan": "pro"}, "cohort_ids": None}}


class Hostile:
    """A loopback server whose answer each test scripts: ``answer(handler)``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.answer: Callable[[BaseHTTPRequestHandler], None] = lambda h: send(h, 200, PROFILE)
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hostile.requests.append(dict(self.headers))
                hostile.paths.append(self.path)
                try:
                    hostile.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that cut its connection (a deadline, a cancel) is the point here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self, **options: object) -> amp.ProfileClient:
        options.setdefault("backoff_base", 0.01)
        return amp.ProfileClient(CANARY, base_url=self.url, **options)  # type: ignore[arg-type]

    def cohort_client(self, **options: object) -> object:
        from amptools.cohorts import CohortClient

        for name, value in (("poll_base", 0.01), ("poll_cap", 0.05)):
            options.setdefault(name, value)
        return CohortClient(API_CANARY, CANARY, base_url=self.url, **options)  # type: ignore[arg-type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                        **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


# -- 2: text that cannot be encoded -------------------------------------------------------
def test_a_lone_surrogate_is_cached_losslessly_and_a_rerun_fetches_nothing(hostile, tmp_path):
    body = json.dumps({"userData": {**PROFILE["userData"], "amp_props": {"name": "x\ud800y"}}})
    hostile.answer = lambda h: send(h, 200, body.encode())
    client = hostile.client()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # the cache must not give up
        first = client.get_profiles(["u1"], amp_props=True, cache=tmp_path / "c.sqlite", progress=False)
        second = client.get_profiles(["u1"], amp_props=True, cache=tmp_path / "c.sqlite", progress=False)
    assert first.cache_error is None and second.from_cache == 1
    assert len(hostile.requests) == 1
    assert second.profiles[0].amp_props == {"name": "x\ud800y"}  # the very same text


def test_an_id_with_a_surrogate_is_refused_before_any_request(hostile):
    with pytest.raises(InvalidQueryError, match="lone surrogate"):
        hostile.client().get_profiles(["ok", "bad\udc80"], amp_props=True, progress=False)
    assert hostile.requests == []


# -- 3: throttling is a status, not a sentence anywhere ----------------------------------
def test_a_profile_that_quotes_the_throttle_sentence_is_a_profile(hostile):
    props = {"bio": f"{THROTTLE_TEXT}. Contact Support if you need this limit raised"}
    hostile.answer = lambda h: send(h, 200, {"userData": {**PROFILE["userData"], "amp_props": props}})
    profile = hostile.client().get_profile("u1", amp_props=True)
    assert profile.amp_props == props
    assert len(hostile.requests) == 1  # not retried as a throttle


@pytest.mark.parametrize("status", [429, 503, 200])
def test_an_error_answer_with_the_throttle_text_is_throttling(hostile, status):
    hostile.answer = lambda h: send(h, status, {"error": THROTTLE_TEXT})
    with pytest.raises(amp.ThrottledError):
        hostile.client(max_retries=1).get_profile("u1", amp_props=True)
    assert len(hostile.requests) == 2


# -- 4: bounded time and size -------------------------------------------------------------
def trickle(handler: BaseHTTPRequestHandler) -> None:
    data = json.dumps(PROFILE).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    for byte in data:  # a byte every 0.2 s: each read is quick, the answer takes minutes
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


def test_a_trickling_answer_ends_at_the_attempt_deadline(hostile):
    hostile.answer = trickle
    client = hostile.client(timeout=(1, 1), deadline=1.0, max_retries=1)
    started = time.monotonic()
    with pytest.raises(amp.TransportError, match="deadline") as caught:
        client.get_profile("u1", amp_props=True)
    # Two attempts of 1 s each and a short backoff, not the trickle's ~25 s per attempt.
    assert time.monotonic() - started < 8
    assert caught.value.attempts == 2


def test_cancel_returns_within_the_in_flight_deadline(hostile):
    hostile.answer = trickle
    client = hostile.client(timeout=(1, 1), deadline=2.0)
    fetch = amp.bulk.start_fetch(client, [f"u{i}" for i in range(20)], amp_props=True, workers=4)
    time.sleep(0.5)
    started = time.monotonic()
    fetch.cancel()
    result = fetch.result(timeout=30)
    assert time.monotonic() - started < 2.0 + 2.5  # the deadline, plus about a second
    assert result.cancelled and len(result.outcomes) == 20


class Counted:
    """An answer of ``head``, ``filler`` ``times`` over, then ``tail``, written a piece at a
    time, counting what the client let the server send before it hung up: what it read,
    plus what the kernel's socket buffers held (tens of MiB at most on loopback)."""

    def __init__(self, head: bytes, filler: bytes, times: int, tail: bytes,
                 headers: dict[str, str] | None = None) -> None:
        self.pieces = [head, *[filler] * times, tail]
        self.length = len(head) + len(filler) * times + len(tail)
        self.headers = headers or {}
        self.sent = 0
        self.finished = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            handler.send_response(200)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(self.length),
                                **self.headers}.items():
                handler.send_header(name, value)
            handler.end_headers()
            for piece in self.pieces:
                handler.wfile.write(piece)
                self.sent += len(piece)
        finally:
            self.finished.set()


# Far more than the limit (1 MiB) plus what loopback socket buffers can hold (tcp_rmem
# grows to 32 MiB at most, tcp_wmem to 4 MiB): a client that reads the whole body before
# it looks at its size lets all of it through.
HUGE = 128 * 2**20


def gzip_bomb_with_a_long_tail(zeros: int, tail: int) -> Counted:
    """A gzip answer: ``zeros`` bytes of "0" squeezed into a few kilobytes, then about
    ``tail`` NUL bytes stored as they are, so the body is long on the wire too (a client
    that checks as it reads refuses it at the first chunk and never takes the tail)."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = squeeze.compress(b"0" * zeros) + squeeze.flush(zlib.Z_SYNC_FLUSH)  # ends byte-aligned
    block = bytes(65535)
    times = max(1, tail // len(block))
    crc = zlib.crc32(b"0" * zeros)
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    return Counted(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head,
                   b"\x00" + struct.pack("<HH", len(block), 0xFFFF ^ len(block)) + block,  # a stored block
                   times,
                   b"\x01\x00\x00\xff\xff"  # the last block: stored, empty
                   + struct.pack("<II", crc, (zeros + times * len(block)) % 2**32),
                   {"Content-Encoding": "gzip"})


def test_the_long_tailed_bomb_is_a_true_gzip_stream():
    small = gzip_bomb_with_a_long_tail(1000, 3 * 65535)
    body = b"".join(small.pieces)
    assert len(body) == small.length and gzip.decompress(body) == b"0" * 1000 + bytes(3 * 65535)


def test_a_gzip_bomb_is_refused_by_its_decompressed_size(hostile):
    bomb = gzip.compress(b'{"userData": {"amp_props": {"x": "' + b"0" * (40 * 2**20) + b'"}}}')
    assert len(bomb) < 100_000
    hostile.answer = lambda h: send(h, 200, bomb, {"Content-Encoding": "gzip"})
    with pytest.raises(ResponseFormatError, match="decompressed") as caught:
        hostile.client(max_response_bytes=2**20).get_profile("u1", amp_props=True)
    assert "max_response_bytes" in str(caught.value)
    # Refused at the first chunk, before the rest is read or inflated: a bomb that is also
    # long on the wire is not read whole, and the client never holds its 40 MiB of zeros.
    answer = gzip_bomb_with_a_long_tail(40 * 2**20, HUGE)
    hostile.answer = answer
    tracemalloc.start()
    try:
        with pytest.raises(ResponseFormatError, match="decompressed"):
            hostile.client(max_response_bytes=2**20).get_profile("u1", amp_props=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.finished.wait(10)
    assert answer.sent < HUGE // 2  # the tail stayed on the server
    assert peak < 8 * 2**20  # about the 1 MiB cap and the buffers around it, not the 40 MiB inflated


def test_a_huge_body_is_refused_without_reading_it_whole(hostile):
    answer = Counted(b"", b" " * 65536, HUGE // 65536, json.dumps(PROFILE).encode())
    hostile.answer = answer
    with pytest.raises(ResponseFormatError, match="on the wire"):
        hostile.client(max_response_bytes=2**20).get_profile("u1", amp_props=True)
    assert answer.finished.wait(10)  # the client hung up...
    assert answer.sent < HUGE // 2  # ...long before the end: refused as it read, not after
    assert len(hostile.requests) == 1  # and not asked again


def test_a_gzip_answer_within_the_limit_is_read(hostile):
    hostile.answer = lambda h: send(h, 200, gzip.compress(json.dumps(PROFILE).encode()),
                                    {"Content-Encoding": "gzip"})
    assert hostile.client().get_profile("u1", amp_props=True).amp_props == {"plan": "pro"}


# -- 5: Retry-After that says nothing ------------------------------------------------------
@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_meaningless_retry_after_means_the_normal_backoff(hostile, value):
    assert parse_retry_after(value) is None
    hostile.answer = lambda h: send(h, 503, {"error": "busy"}, {"Retry-After": value})
    delays: list[float] = []
    client = hostile.client(max_retries=3, backoff_base=0.5, sleep=delays.append)
    with pytest.raises(amp.ServerError):
        client.get_profile("u1", amp_props=True)
    assert len(delays) == 3 and all(d >= 0.25 for d in delays)  # equal jitter keeps half
    assert retry_delay(1, float("nan"), jitter=lambda d: d) == 0.5


# -- 6 and 7: the key --------------------------------------------------------------------
def interrupted(call: Callable[[], object], after: float = 0.5) -> KeyboardInterrupt:
    """The KeyboardInterrupt a Ctrl-C ``after`` seconds into ``call`` raises."""
    main = threading.main_thread().ident
    timer = threading.Timer(after, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    try:
        call()
    except KeyboardInterrupt as interrupt:
        return interrupt
    finally:
        timer.cancel()
    pytest.fail("the interrupt did not arrive")


def assert_nowhere(caught: BaseException, *secrets: str) -> None:
    """No secret in a verbose traceback, nor in any local of any frame of any chained exception."""
    verbose = "".join(traceback.TracebackException.from_exception(caught, capture_locals=True).format())
    error: BaseException | None = caught
    while error is not None:  # every chained exception and every local of every frame
        tb = error.__traceback__
        while tb is not None:
            verbose += repr(tb.tb_frame.f_locals)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    for secret in secrets:
        assert secret not in verbose


def test_ctrl_c_during_a_request_leaves_no_frame_holding_the_key(hostile):
    hostile.answer = lambda h: time.sleep(5)  # never answers in time
    client = hostile.client(timeout=(5, 5))
    assert_nowhere(interrupted(lambda: client.get_profile("u1", amp_props=True)), CANARY)


@pytest.mark.parametrize("key", ["\u201cabc123\u201d", "abc\u00a0123", "abc 123", "clé123"])
def test_keys_with_characters_a_key_never_has_are_refused_without_quoting_them(key):
    with pytest.raises(ConfigurationError, match="paste it again") as caught:
        amp.ProfileClient(key, base_url="http://127.0.0.1:9")
    assert key not in str(caught.value) and key not in repr(caught.value)
    # Spaces around a pasted key are trimmed, not refused.
    assert amp.ProfileClient(f"  {CANARY}  ", base_url="http://127.0.0.1:9").scope == \
        amp.ProfileClient(CANARY, base_url="http://127.0.0.1:9").scope


# -- 12: answers that cannot be a profile ------------------------------------------------
@pytest.mark.parametrize("value", [1e30, -1e12, int("9" * 400), "99999-01-01", "0001-01-01T00:00:00+14:00"])
def test_an_impossible_last_updated_names_the_field(value):
    payload = {"userData": {"recommendations": [{"rec_id": "r", "items": ["a"], "last_updated": value}]}}
    with pytest.raises(ResponseFormatError, match="last_updated") as caught:
        UserProfile.from_json(payload)
    assert caught.value.field == "userData.recommendations[0].last_updated"


# Each is a time Python reads (no overflow, no parse error): only the range refuses it.
@pytest.mark.parametrize("value, year", [(8.8e9, 2248), (-6e8, 1950), ("2250-01-01", 2250), ("1950-06-01", 1950),
                                         ("2200-01-01T00:00:00Z", 2200), (-1, 1969)])
def test_a_readable_last_updated_outside_1970_to_2200_names_the_field(value, year):
    moment = (datetime.fromtimestamp(value, tz=timezone.utc) if isinstance(value, float | int)
              else datetime.fromisoformat(value.replace("Z", "+00:00")))
    assert moment.year == year  # readable: the range check is what must refuse it
    payload = {"userData": {"recommendations": [{"rec_id": "r", "items": ["a"], "last_updated": value}]}}
    with pytest.raises(ResponseFormatError, match="between 1970 and 2200") as caught:
        UserProfile.from_json(payload)
    assert caught.value.field == "userData.recommendations[0].last_updated"


@pytest.mark.parametrize("value", [0, "1970-01-01T00:00:00Z", "2199-12-31T23:59:59Z", 7258118399])
def test_a_last_updated_at_the_ends_of_the_range_is_read(value):
    payload = {"userData": {"recommendations": [{"rec_id": "r", "items": ["a"], "last_updated": value}]}}
    (rec,) = UserProfile.from_json(payload).recommendations
    assert rec.last_updated is not None and 1970 <= rec.last_updated.year <= 2199


def test_json_nested_a_thousand_deep_is_a_format_error(hostile):
    hostile.answer = lambda h: send(h, 200, ('{"userData": {"amp_props": {"x": ' + "[" * 1000
                                             + "]" * 1000 + "}}}").encode())
    with pytest.raises(ResponseFormatError, match="nested"):
        hostile.client().get_profile("u1", amp_props=True)


# -- 13: cache files that cannot be used ---------------------------------------------------
def damaged_caches(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.sqlite"
    with ProfileCache(good) as cache:
        cache.save("user_id", "u1", amp.ProfileQuery(amp_props=True), parts=[], status="failed")
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(good.read_bytes()[:100])
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(4096))
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    cases = {"truncated": truncated, "garbage": garbage, "folder": folder}
    for name, version in (("newer", "99"), ("unknown", "abc")):
        path = tmp_path / f"{name}.sqlite"
        path.write_bytes(good.read_bytes())
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        cases[name] = path
    return cases


@pytest.mark.parametrize("case", ["truncated", "garbage", "folder", "newer", "unknown"])
def test_an_unusable_cache_is_one_cache_error_with_the_path(tmp_path, case):
    path = damaged_caches(tmp_path)[case]
    with pytest.raises(CacheError) as caught:
        ProfileCache(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, amp.AmptoolsError)


def test_a_bulk_run_with_an_unusable_cache_warns_and_keeps_everything(sample_server, tmp_path):
    path = damaged_caches(tmp_path)["garbage"]
    with pytest.warns(CacheWarning, match="garbage.sqlite"):
        result = sample_server.client().get_profiles(["testUser"], amp_props=True, cache=path,
                                                     progress=False)
    assert result.counts["ok"] == 1 and isinstance(result.cache_error, CacheError)


def test_a_cache_in_a_read_only_folder_is_a_cache_error():
    import shutil
    import tempfile

    # A folder of its own in /tmp, so another user can reach it when the test runs as root.
    tmp_path = Path(tempfile.mkdtemp(prefix="amptools-ro-"))
    tmp_path.chmod(0o755)
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    # Root writes anywhere, so as root the check runs with an ordinary user's rights.
    as_root = os.geteuid() == 0
    try:
        if as_root:
            os.seteuid(65534)
        with pytest.raises(CacheError) as caught:
            ProfileCache(folder / "c.sqlite")
    finally:
        if as_root:
            os.seteuid(0)
        folder.chmod(0o755)
        shutil.rmtree(tmp_path)
    assert "read-only" in str(caught.value) and str(folder) in str(caught.value)


# -- 17: files that hold personal data ------------------------------------------------------
def test_the_cache_and_its_wal_are_readable_by_the_owner_only(sample_server, tmp_path, umask_022):
    # Under the common umask 022 (the fixture), not the caller's: under 077 a file created
    # 0666 would show 0600 too.
    path = tmp_path / "c.sqlite"
    with ProfileCache(path) as cache:
        sample_server.client().get_profiles(["testUser"], amp_props=True, cache=cache, progress=False)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    kept = tmp_path / "shared.sqlite"
    ProfileCache(kept).close()
    kept.chmod(0o640)
    ProfileCache(kept).close()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640  # the owner's choice is kept


# -- 14: settings ----------------------------------------------------------------------
@pytest.mark.parametrize("setting", [
    {"backoff_base": -1}, {"backoff_base": float("nan")}, {"backoff_cap": float("inf")},
    {"retry_after_cap": -0.5}, {"timeout": float("inf")}, {"timeout": (5, float("inf"))},
    {"timeout": (float("nan"), 5)}, {"deadline": 0}, {"max_response_bytes": 10},
])
def test_bad_client_settings_are_refused_at_construction(setting):
    with pytest.raises(ConfigurationError, match=next(iter(setting))):
        amp.ProfileClient(CANARY, base_url="http://127.0.0.1:9", **setting)


# -- 15: id files -----------------------------------------------------------------------
def test_a_utf8_file_with_one_stray_byte_names_the_line():
    content = "user_id\nmüller\nzoë\n".encode() + b"caf\xe9\n" + "ok\n".encode()
    with pytest.raises(InvalidQueryError, match="line 4 is not valid UTF-8"):
        parse_id_file(content)


def test_a_cp1252_file_is_still_read_as_cp1252():
    assert parse_id_file("user_id\nmüller\ncafé\n".encode("cp1252")).ids == ["müller", "café"]


@pytest.mark.parametrize("content", [b"PK\x03\x04\x00\x00binary", b"user_id\nab\x00c\n"])
def test_binary_files_and_nul_ids_are_refused(content):
    with pytest.raises(InvalidQueryError, match="NUL"):
        parse_id_file(content)


def test_an_id_type_the_file_does_not_have_is_an_error(tmp_path):
    (tmp_path / "ids.csv").write_bytes(b"user_id,plan\nu1,pro\n")
    code, _, err = run_cli(["fetch", str(tmp_path / "ids.csv"), "--sample", "--props",
                            "--id-type", "device_id", "--out", str(tmp_path / "out")])
    assert code == 2 and "no device_id column" in err and not (tmp_path / "out").exists()


def test_a_header_with_the_same_column_twice_is_an_error():
    with pytest.raises(InvalidQueryError, match="more than once"):
        parse_id_file(b"user_id,plan,user_id\nu1,pro,u2\n")


# -- 8, 9: reports ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_report_of_1500_ids_runs_end_to_end(tmp_path, monkeypatch):
    from amptools.notebooks import build_report, execute_report
    from amptools.sample import SampleServer

    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    awkward = ["NA", "null", "nan", "None", "007", "a,b", 'say "hi"', "12345678901234567890"]
    query = amp.ProfileQuery(cohort_ids=True)
    with SampleServer(rate_limit=100_000) as server:
        ids = awkward + list(server.org.user_ids[:1492])
        # The report then runs through the cache: every id must be read back exactly.
        server.client(rate_limit=100_000).get_profiles(ids, query=query, cache=tmp_path / "c.sqlite",
                                                       progress=False, workers=16)
    path = build_report(tmp_path / "big.ipynb", ids, query, cache="c.sqlite", sample=True)
    assert "user-000100" not in path.read_text(encoding="utf-8")  # the ids went to a CSV
    execute_report(path)
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(path, as_version=4).cells])
    assert '"output_type": "error"' not in outputs
    assert "1492 ok, 8 not_found, 0 failed of 1500 ids, 1500 from cache" in outputs


def test_a_hostile_title_and_rec_id_stay_text_in_the_html(tmp_path):
    from nbconvert import HTMLExporter

    from amptools.notebooks import build_report

    tag = '<img src=x onerror="alert(1)">'
    path = build_report(tmp_path / "r.ipynb", ["u1"], amp.ProfileQuery(recs=(f"feed{tag}",)),
                        title=f"Q3 {tag} [click](javascript:alert(2))")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    assert "<img" not in body and 'href="javascript' not in body
    assert "&lt;img src=x" in body  # shown, as text


# -- 10, 11: the command line -----------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    import io

    from amptools.cli import main

    out, err = io.StringIO(), io.StringIO()
    return main(argv, stdout=out, stderr=err), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, says", [
    (["fetch", "IDS", "--sample", "--top-n", "0", "--marketing"], "--top-n"),
    (["fetch", "IDS", "--sample", "--marketing", "--marketing-props", "plan"], "add --props"),
    (["fetch", "IDS", "--sample", "--props", "--marketing", "--marketing-props", "gp:email"], "--include-pii"),
    (["fetch", "IDS", "--sample", "--recs", "a", "--marketing", "--marketing-rec-id", "b"], "not one of the sets"),
    (["fetch", "IDS", "--sample", "--props", "--out", "FILE"], "is a file"),
    (["fetch", "IDS", "--sample", "--props", "--cache", "DIR"], "is a folder"),
    (["fetch", "IDS", "--sample", "--props", "--max-age", "nan"], "--max-age"),
    (["fetch", "IDS", "--sample", "--props", "--max-age", "-1"], "--max-age"),
    (["fetch", "IDS", "--sample", "--props", "--workers", "0"], "--workers"),
    (["report", "IDS", "--sample", "--props", "--max-age", "inf"], "--max-age"),
    (["report", "IDS", "--sample", "--props", "--out", "DIR"], "is a folder"),
    (["demo", "--users", "-5"], "--users"),
    (["sample-server", "--port", "99999"], "--port"),
    # issue 18.9: preview checks everything before its fetch (which logs exposures)
    (["preview", "TEMPLATE", "IDS", "--sample", "--out", "DIR"], "is a folder"),
    (["preview", "TEMPLATE", "IDS", "--sample", "--cache", "DIR"], "is a folder"),
    (["preview", "TEMPLATE", "IDS", "--sample", "--attributes", "NO_USER_ID"], "no user_id column"),
    (["preview", "TEMPLATE", "IDS", "--sample", "--attributes", "LATIN1"], "not UTF-8 text (line 2"),
    (["preview", "LATIN1", "IDS", "--sample"], "not UTF-8 text (line 2"),
    # issue 18.10: fetch --cohort checks its options before a cohort download is spent
    (["fetch", "--sample", "--cohort", "Power users", "--cohort-sample", "-1"], "--cohort-sample"),
    (["fetch", "--sample", "--cohort", "Power users", "--cohort-sample", "0"], "--cohort-sample"),
    (["fetch", "--sample", "--cohort", "Power users", "--cohort-cache", "DIR"], "--cohort-cache"),
    (["fetch", "IDS", "--sample", "--props", "--cohort-sample", "5"], "only apply with --cohort"),
])
def test_every_option_is_checked_before_anything_is_fetched(tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)  # where the default outputs would go
    (tmp_path / "ids.csv").write_text("user_id\ntestUser\n")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "message.liquid").write_text("{% connected_content https://profile-api.amplitude.com/v1/userprofile"
                                             "?user_id={{${user_id}}}&get_amp_props=true :save amplitude %}Hi")
    (tmp_path / "no_user_id.csv").write_text("name,city\nAnn,Paris\n")
    (tmp_path / "latin1.txt").write_bytes("user_id,city\ntestUser,Z\u00fcrich\n".encode("latin-1"))
    swap = {"IDS": "ids.csv", "FILE": "file.txt", "DIR": "dir", "TEMPLATE": "message.liquid",
            "NO_USER_ID": "no_user_id.csv", "LATIN1": "latin1.txt"}
    argv = [swap.get(a, a) for a in argv]
    # Where a fetch would leave its mark: the profile cache, the cohort cache.
    if argv[0] in ("fetch", "report", "preview") and "--cache" not in argv:
        argv += ["--cache", "never.sqlite"]
    if "--cohort" in argv and "--cohort-cache" not in argv:
        argv += ["--cohort-cache", "never-cohorts.sqlite"]
    code, out, err = run_cli(argv)
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not [p.name for p in tmp_path.iterdir() if p.name in ("out", "previews.csv", "never.sqlite",
                                                                 "never-cohorts.sqlite")]


@pytest.mark.slow
def test_a_report_after_a_fetch_reads_the_same_cache_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    Path("ids.csv").write_text("user_id\ntestUser\nuser-000001\nuser-000002\n")
    code, _, err = run_cli(["fetch", "ids.csv", "--sample", "--cohorts", "--cache", "cache/p.sqlite",
                            "--out", "tables", "--no-progress"])
    assert code == 0, err
    code, _, err = run_cli(["report", "ids.csv", "--sample", "--cohorts", "--cache", "cache/p.sqlite",
                            "--out", "rep/r.ipynb", "--execute", "--workers", "2", "--max-age", "3600"])
    assert code == 0, err
    assert not Path("rep/cache").exists()
    nb = nbformat.read("rep/r.ipynb", as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "3 ok, 0 not_found, 0 failed of 3 ids, 3 from cache" in outputs  # no request sent
    assert "'workers': 2" in nb.cells[1].source and "'max_age': 3600.0" in nb.cells[1].source


@pytest.mark.parametrize("url", ["htp://user:SECRETpass@profile-api.amplitude.com",
                                 "http://user:SECRETpass@example.com", "https://:SECRETpass@example.com"])
def test_credentials_in_a_base_url_are_refused_without_being_quoted(url):
    from amptools.cohorts import CohortClient

    for make in (lambda: amp.ProfileClient(CANARY, base_url=url),
                 lambda: CohortClient("api-key", CANARY, base_url=url)):
        with pytest.raises(ConfigurationError, match="must not hold credentials") as caught:
            make()
        assert "SECRETpass" not in str(caught.value) and "SECRETpass" not in repr(caught.value)


# == issue 18: the cohort client under the same standard ========================================
LISTING = {"cohorts": [{"id": "c1", "name": "Hostile", "size": 2, "lastComputed": 1717000000, "lastMod": 1716000000}]}
MEMBER_FILE = b"amplitude_id,user_id\n1,u1\n2,u2\n"
BASIC = __import__("base64").b64encode(f"{API_CANARY}:{CANARY}".encode()).decode()


def cohort_api(hostile: Hostile, **stages: Callable[[BaseHTTPRequestHandler], None]) -> None:
    """Script the hostile server as a Cohorts API whose ``listing``, ``request``, ``poll``,
    ``file`` and ``storage`` (the pre-signed link, on the same server) answer as the real
    ones do, unless a stage is given a handler of its own."""
    answers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
        "listing": lambda h: send(h, 200, LISTING),
        "request": lambda h: send(h, 202, {"request_id": "r1", "cohort_id": "c1"}),
        "poll": lambda h: send(h, 200, {"async_status": "JOB COMPLETED"}),
        "file": lambda h: send(h, 302, b"", {"Location": "/storage/r1.csv?X-Amz-Signature=s1"}),
        "storage": lambda h: send(h, 200, MEMBER_FILE, {"Content-Type": "text/csv"}),
        **stages,
    }

    def route(handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        stage = ("listing" if path == "/api/3/cohorts" else "poll" if "/request-status/" in path
                 else "file" if path.endswith("/file") else "request" if "/request/" in path
                 else "storage" if path.startswith("/storage/") else "")
        answers.get(stage, lambda h: send(h, 404, {"error": "nothing here"}))(handler)

    hostile.answer = route


def downloads_requested(hostile: Hostile) -> int:
    return sum(p.split("?")[0] == "/api/5/cohorts/request/c1" for p in hostile.paths)


def trickle_file(handler: BaseHTTPRequestHandler) -> None:
    data = b"amplitude_id,user_id\n" + b"".join(b"%d,user-%d\n" % (i, i) for i in range(20))
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    for byte in data:  # ~280 bytes, one every 0.2 s: each read is quick, the file takes a minute
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


# -- 1: Ctrl-C ------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage, path", [
    ("listing", "/api/3/cohorts"), ("request", "/api/5/cohorts/request/c1"),
    ("poll", "/api/5/cohorts/request-status/r1"), ("file", "/api/5/cohorts/request/r1/file"),
    ("storage", "/storage/r1.csv"),
])
def test_ctrl_c_during_any_cohorts_request_leaves_no_frame_holding_either_key(hostile, stage, path):
    cohort_api(hostile, **{stage: lambda h: time.sleep(5)})
    client = hostile.cohort_client(timeout=(5, 5))
    caught = interrupted(lambda: client.members("c1"))
    assert hostile.paths[-1].split("?")[0] == path  # the interrupt came during that request
    assert_nowhere(caught, CANARY, API_CANARY, BASIC)


# -- 2: only a file that was read is cached -------------------------------------------------------
def test_a_cohort_file_that_cannot_be_read_is_not_cached(hostile, tmp_path):
    pages = iter([b"<html><body><h1>503 Service Unavailable</h1></body></html>"])
    cohort_api(hostile, storage=lambda h: send(h, 200, next(pages, MEMBER_FILE), {"Content-Type": "text/html"}))
    client = hostile.cohort_client(cache=tmp_path / "cohorts.sqlite")
    with pytest.raises(ResponseFormatError, match="no amplitude_id or user_id column"):
        client.members("c1")
    assert client.members("c1")["user_id"].tolist() == ["u1", "u2"]  # asked again, not served the page
    later = hostile.cohort_client(cache=tmp_path / "cohorts.sqlite").members("c1")
    assert later.attrs["cohort"]["from_cache"] and later["user_id"].tolist() == ["u1", "u2"]
    assert downloads_requested(hostile) == 1  # the same job's file was fetched again: nothing spent


# -- 3: bounded downloads ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zeros_bomb() -> bytes:
    bomb = gzip.compress(b"0" * (64 * 2**20), mtime=0)
    assert len(bomb) < 100_000
    return bomb


@pytest.mark.parametrize("how, says", [("encoded", "once decompressed"), ("gzip file", "once decompressed"),
                                       ("wire", "on the wire")])
def test_a_cohort_download_is_refused_past_max_response_bytes(hostile, zeros_bomb, how, says):
    answer = {"encoded": lambda h: send(h, 200, zeros_bomb, {"Content-Encoding": "gzip"}),
              "gzip file": lambda h: send(h, 200, zeros_bomb, {"Content-Type": "application/octet-stream"}),
              "wire": lambda h: send(h, 200, MEMBER_FILE + b"3,u3\n" * 2**19)}[how]
    cohort_api(hostile, storage=answer)
    with pytest.raises(ResponseFormatError, match=says) as caught:
        hostile.cohort_client(max_response_bytes=2**20).members("c1")
    assert "max_response_bytes=1,048,576" in str(caught.value)
    assert amp.cohorts.DEFAULT_MAX_RESPONSE_BYTES == 512 * 2**20


def test_a_trickling_cohort_download_ends_at_its_deadline(hostile):
    cohort_api(hostile, storage=trickle_file)
    client = hostile.cohort_client(timeout=(1, 1), download_deadline=1.0, max_retries=1)
    started = time.monotonic()
    with pytest.raises(amp.TransportError, match="deadline") as caught:
        client.members("c1")
    assert time.monotonic() - started < 8 and caught.value.attempts == 2  # not the trickle's minute


def test_cancel_ends_a_cohort_download_within_a_second(hostile):
    cohort_api(hostile, storage=trickle_file)
    client = hostile.cohort_client(timeout=(5, 5))
    cancel = threading.Event()
    set_at: list[float] = []

    def cancel_mid_download() -> None:
        while not any(p.startswith("/storage/") for p in hostile.paths):
            time.sleep(0.02)
        time.sleep(0.5)  # a few bytes of the file have arrived
        set_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_mid_download, daemon=True).start()
    with pytest.raises(amp.FetchCancelled, match="'Hostile'"):
        client.members("c1", cancel=cancel)
    assert time.monotonic() - set_at[0] < 1.0  # not the minute the file would take
    assert downloads_requested(hostile) == 1


# -- 7: cohort files that are not all UTF-8 ------------------------------------------------------
def test_one_bad_byte_in_a_cohort_file_garbles_no_other_id():
    from amptools.cohorts import read_member_file

    content = "amplitude_id,user_id\n1,Zoë\n".encode() + b"2,caf\xe9\n" + "3,Ünal\n".encode()
    with pytest.warns(amp.AmptoolsWarning, match="line 3:"):
        frame = read_member_file(content)
    assert frame["user_id"].tolist() == ["Zoë", "caf\ufffd", "Ünal"]


# -- 8, 13: listings no cohort of which was computed, and names that are escapes ------------------
def cohorts_cli(hostile: Hostile, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    for name, value in (("AMPLITUDE_SECRET_KEY", CANARY), ("AMPLITUDE_API_KEY", API_CANARY),
                        ("AMPLITUDE_PROFILE_API_URL", hostile.url), ("AMPLITUDE_COHORTS_API_URL", hostile.url)):
        monkeypatch.setenv(name, value)
    return run_cli(["cohorts", "list", *argv])


def test_cohorts_never_computed_are_listed_with_nat(hostile, monkeypatch):
    never = {"cohorts": [{"id": "c1", "name": "Never", "size": None},
                         {"id": "c2", "name": "Nor this", "size": 3, "lastComputed": None}]}
    cohort_api(hostile, listing=lambda h: send(h, 200, never))
    frame = hostile.cohort_client().list_cohorts()
    assert frame["last_computed"].isna().all() and str(frame["last_computed"].dtype) == "datetime64[us, UTC]"
    assert hostile.cohort_client().members("c1")["user_id"].tolist() == ["u1", "u2"]
    code, out, err = cohorts_cli(hostile, monkeypatch)
    assert code == 0, err
    assert "Never" in out and "never" in out and "2 cohorts" in out


def test_cohorts_list_prints_only_printable_text(hostile, monkeypatch):
    name = "\x1b]0;owned\x07\x1b[2J\x1b[31mEvil\u202eeman\r\nnext"
    cohort_api(hostile, listing=lambda h: send(h, 200, {"cohorts": [{"id": "c\x1b[1m1", "name": name, "size": 1,
                                                                     "lastComputed": 1717000000, "lastMod": 1716000000}]}))
    code, out, err = cohorts_cli(hostile, monkeypatch)
    assert code == 0, err
    assert not [c for c in out if not (c.isprintable() or c == "\n")]
    assert "Evil" in out and "\\x1b" in out and "\\u202e" in out


# -- 11 (cohort half): the cohort cache ----------------------------------------------------------
def test_the_cohort_cache_is_private_and_its_path_expanded(hostile, tmp_path, monkeypatch, umask_022):
    cohort_api(hostile)
    monkeypatch.setenv("HOME", str(tmp_path))
    hostile.cohort_client(cache="~/cache/cohorts.sqlite").members("c1")
    path = tmp_path / "cache" / "cohorts.sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(CacheError, match="folder.sqlite' is a folder"):
        hostile.cohort_client(cache=tmp_path / "folder.sqlite")
