"""A real Redis for the tests: Debian's ``redis-server`` on a free loopback port.

No fake Redis: the team budget's Lua runs where it runs in production. The server keeps
nothing on disk (``--save ''``, ``--appendonly no``) and is stopped by its process id.
Without ``redis-server`` the tests that need it skip, unless ``AMPTOOLS_REQUIRE_REDIS=1``
(as ``.ci/run`` sets), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

BINARY = "redis-server"


def require_redis() -> str:
    """The path of redis-server, or skip (fail when AMPTOOLS_REQUIRE_REDIS=1)."""
    path = shutil.which(BINARY)
    if path is None:
        message = f"{BINARY} is missing (apt-get install -y redis-server)"
        if os.environ.get("AMPTOOLS_REQUIRE_REDIS") == "1":
            pytest.fail(f"AMPTOOLS_REQUIRE_REDIS=1 but {message}")
        pytest.skip(f"{message}; with AMPTOOLS_REQUIRE_REDIS=1 (as in CI) this fails instead")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (``password`` sets ``--requirepass``)."""

    def __init__(self, *, password: str | None = None, port: int | None = None) -> None:
        self.binary = require_redis()
        self.password = password
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="amptools-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", self._dir]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{BINARY} did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def client(self) -> object:
        """A plain redis-py client of this server (to look at what is stored)."""
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays every byte by ``delay`` seconds each way: a
    Redis that far away (a round trip of twice the delay), for the latency test."""

    def __init__(self, target_port: int, delay: float) -> None:
        import threading

        self.target_port, self.delay = target_port, delay
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = [self.listener]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str | None = None) -> str:
        return f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        import threading

        while not self.stopped.is_set():
            try:
                near, _ = self.listener.accept()
                far = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self.sockets += [near, far]
            for source, target in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        import queue
        import threading

        line: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def deliver() -> None:
            while True:
                due, data = line.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        target.shutdown(socket.SHUT_WR)
                        return
                    target.sendall(data)
                except OSError:
                    return

        threading.Thread(target=deliver, daemon=True).start()
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            line.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def close(self) -> None:
        self.stopped.set()
        for each in self.sockets:
            try:
                each.close()
            except OSError:
                pass


def grant_times(limiter: object, seconds: float, *, workers: int = 8, request: float = 0.1) -> list[float]:
    """When ``limiter`` granted each permit to ``workers`` threads that each send a request
    of ``request`` seconds after another for ``seconds``: the latency test's and the
    benchmark's load."""
    import threading

    times: list[float] = []
    stop = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < stop:
            with limiter.permit():  # type: ignore[attr-defined]
                times.append(time.monotonic())
                time.sleep(request)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(times)
