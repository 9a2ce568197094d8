"""Real processes for the fault suites: throwaway PostgreSQL clusters, `cbstop` commands and
`cbstop serve` servers, each started and stopped by the test that needs it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psycopg
import pytest

from tests.support import IN_CI, TEST_KEY_SECRET, query

REPO = Path(__file__).resolve().parents[2]
CBSTOP = str(Path(sys.executable).parent / "cbstop")
# initdb and pg_ctl refuse to run as root: as root, run them as the postgres user.
AS_POSTGRES: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(**over: str) -> dict[str, str]:
    """The environment of a `cbstop` process: the test secret, nothing from CBSTOP_ outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}
    env["CBSTOP_KEY_SECRET"] = TEST_KEY_SECRET
    # Rate limits only where a test is about them (as `make_settings`).
    env["CBSTOP_RATE_LIMIT"] = "off"
    env["CBSTOP_AUTH_FAILURE_LIMIT"] = "off"
    env.update(over)
    return env


def cbstop(args: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run one `cbstop` command to the end."""
    return subprocess.run(
        [CBSTOP, *args], env=base_env(**env), cwd=REPO, capture_output=True, text=True, timeout=60
    )


def require_initdb() -> None:
    """Skip (fail under CI) when throwaway PostgreSQL clusters cannot be made here."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return
    reason = "initdb/pg_ctl are not on PATH: cannot make a throwaway PostgreSQL cluster"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


class Cluster:
    """A throwaway PostgreSQL cluster on a free port, for tests that stop the database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cbstop-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if AS_POSTGRES:
            shutil.chown(self.dir, "postgres")
        self._pg(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N"])

    def _pg(self, argv: list[str]) -> None:
        done = subprocess.run(
            [*AS_POSTGRES, *argv], capture_output=True, text=True, timeout=60, cwd=self.dir
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    @property
    def server(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "postgres.log")
        self._pg(["pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.server}/{name}"

    def destroy(self) -> None:
        subprocess.run(
            [*AS_POSTGRES, "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A started throwaway cluster, removed afterwards."""
    require_initdb()
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.destroy()


class Server:
    """One `cbstop serve` process, its stdout and stderr kept in files."""

    def __init__(
        self, database_url: str, *, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cbstop-serve-"))
        self.argv = [CBSTOP, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.argv += ["--database-url", database_url, "--workers", str(workers)]
        self.env = base_env(**(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = open(self.dir / "stdout", "wb")  # noqa: SIM115 - closed in stop()
        err = open(self.dir / "stderr", "wb")  # noqa: SIM115 - closed in stop()
        self._files = [out, err]
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=REPO, stdout=out, stderr=err, start_new_session=True
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until `/readyz` answers 200."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited ({self.proc.returncode}): {self.output}")
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout:.0f}s: {self.output[-2000:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send a signal to the server's main process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process ends (AssertionError past `timeout`)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout}s") from None

    @property
    def stdout(self) -> str:
        return (self.dir / "stdout").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.dir / "stderr").read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def stop(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and close the files."""
        if self.proc is not None and self.proc.poll() is None:
            pgid = os.getpgid(self.proc.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for file in self._files:
            file.close()
        self._files = []

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running(
    database_url: str, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A `cbstop serve` on `database_url`, ready, stopped afterwards."""
    with started(Server(database_url, workers=workers, env=env)) as server:
        yield server


AnyServer = TypeVar("AnyServer", bound=Server)


@contextmanager
def started(server: AnyServer) -> Iterator[AnyServer]:
    """`server` started and ready; stopped and cleaned up afterwards."""
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        server.cleanup()


def envelope_code(response: httpx.Response) -> str | None:
    """The first error code of an envelope answer, or None."""
    try:
        body: Any = response.json()
        return str(body["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class RevocationWatch:
    """Notes when a key's revocation becomes visible to another database session."""

    def __init__(self, database_url: str, key_id: str) -> None:
        self.database_url = database_url
        self.key_id = key_id
        self.seen: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> RevocationWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        sql = "SELECT revoked FROM api_keys WHERE id = ?"
        while not self._stop.is_set():
            rows = query(self.database_url, sql, self.key_id)
            if rows and rows[0][0]:
                self.seen = time.monotonic()
                return
            time.sleep(0.005)
