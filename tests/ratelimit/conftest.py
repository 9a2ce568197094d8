"""Redis for the rate-limit tests: the machine's (127.0.0.1:6379, one key prefix per test),
or a private `redis-server` a test may kill, pause and start again on the same port.

Without Redis the tests that need it are skipped with the reason, except under CI=true, where
they fail (as PostgreSQL's in tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.ratelimit.helpers import load_matrix
from tests.reliability.processes import free_port
from tests.support import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"
_reason: list[str | None] = []


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true needs Redis: {why}")
    pytest.skip(why)


def redis_unavailable_reason(url: str = REDIS_URL) -> str | None:
    """Why the machine's Redis cannot be used for tests, or None if it can."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"Redis at {url} is not reachable: {exc}".splitlines()[0]
    return None


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (skipped with the reason when unreachable; a failure under CI)."""
    if not _reason:
        _reason.append(redis_unavailable_reason())
    if _reason[0] is not None:
        _unavailable(_reason[0])
    return REDIS_URL


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (all carry its hash tag)."""
    with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
        keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (CBSTOP_REDIS_PREFIX); its keys are deleted after."""
    prefix = "t" + uuid.uuid4().hex
    yield prefix
    delete_prefix(redis_url, prefix)


class RedisServer:
    """A private `redis-server` on a free port, with no persistence: killed, paused and
    started again (on the same port, empty) by the test that owns it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server is not on PATH: cannot start a private Redis")
        self.binary = str(binary)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cbstop-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start it (empty) and wait until it answers PING."""
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log[-2000:]}")
            if redis_unavailable_reason(self.url) is None:
                return
            time.sleep(0.02)
        raise AssertionError(f"redis-server not answering after {timeout}s: {self.log[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: gone at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A started private `redis-server`, killed and removed after the test."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where a server counts (its environment): in its process, or in Redis under this
    test's own key prefix."""
    if request.param == "memory":
        return {}
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    return {"CBSTOP_REDIS_URL": url, "CBSTOP_REDIS_PREFIX": prefix}


@pytest.fixture
def world_url(database_url: str) -> str:
    """A fresh database of this run's dialect holding the matrix world."""
    load_matrix(database_url)
    return database_url
