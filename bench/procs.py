"""Processes the harness drives: databases, `cbstop` commands, servers, wrk itself."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = sys.executable


class BenchError(Exception):
    """A failure that makes the run meaningless; reported as one line."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- tools ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package first if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: installing it with apt-get")
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run([*sudo, *argv], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise BenchError(f"could not install wrk ({' '.join(argv)}): {' '.join(tail)}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


# SQLAlchemy's asyncio layer needs greenlet, which the service itself does not depend on.
PEER_REQUIREMENT = "greenlet>=3.1,<4"


def ensure_peer_path() -> str | None:
    """An extra PYTHONPATH entry holding what the textbook peer needs beyond the lock.

    It lives inside the venv (so `make clean` removes it) but outside site-packages, so the
    service's own environment stays exactly as locked.
    """
    check = subprocess.run([PYTHON, "-c", "import greenlet"], capture_output=True)
    if check.returncode == 0:
        return None
    target = Path(sys.prefix) / "bench-peer-site"
    if not (target / "greenlet").is_dir():
        log(f"installing {PEER_REQUIREMENT} for the textbook peer into {target}")
        done = subprocess.run(
            [PYTHON, "-m", "pip", "install", "-q", "--target", str(target), PEER_REQUIREMENT],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"could not install {PEER_REQUIREMENT}: {done.stderr.strip()}")
    return str(target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- databases ------------------------------------------------------------------------------


def create_database(server: str, name: str) -> str:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def drop_database(server: str, name: str) -> None:
    try:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:
        log(f"could not drop database {name}: {exc}")


def vacuum_analyze(url: str) -> None:
    """Fresh statistics and visibility map after a bulk load, as an operator would do."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def analyze(url: str) -> None:
    """Fresh statistics, as autovacuum keeps them on a server where it is on."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def cbstop_command() -> list[str]:
    """The `cbstop` command: $CBSTOP_BENCH_CBSTOP if set (another build), else the venv's."""
    override = os.environ.get("CBSTOP_BENCH_CBSTOP")
    if override:
        return override.split()
    exe = BIN / "cbstop"
    return [str(exe) if exe.exists() else "cbstop"]


def build_identity(command: Sequence[str], env: dict[str, str], cwd: Path) -> dict[str, str | None]:
    """Where the `cbstop` of `command` imports its code from, and that tree's git commit.

    Asked of the interpreter beside the command (a venv's bin/python) with the environment and
    working directory its server gets, so the report names the code that actually ran.
    """
    found = shutil.which(command[0], path=env.get("PATH"))
    python = Path(found).parent / "python" if found else None
    source = commit = None
    if python is not None and python.exists():
        code = "import os, cbstop; print(os.path.dirname(os.path.abspath(cbstop.__file__)))"
        done = subprocess.run([str(python), "-c", code], env=env, cwd=cwd, capture_output=True)
        source = done.stdout.decode().strip() or None
    if source:

        def git(*args: str) -> str:
            done = subprocess.run(["git", *args], cwd=source, capture_output=True, text=True)
            return done.stdout.strip() if done.returncode == 0 else ""

        commit = git("rev-parse", "--short", "HEAD") or None
        if commit and git("status", "--porcelain", "--", "."):
            commit += " (dirty)"
    return {"command": " ".join(command), "source": source, "commit": commit}


def cbstop(
    args: Sequence[str],
    env: dict[str, str],
    command: Sequence[str] | None = None,
    cwd: Path = REPO,
) -> float:
    """Run one `cbstop` command (of this build, or `command`: another's); its wall time in
    seconds."""
    argv = [*(command or cbstop_command()), *args]
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BenchError(f"`cbstop {' '.join(args[:1])}` failed ({done.returncode}): {tail}")
    return took


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """One HTTP server (cbstop or a reference) in its own process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    health: str = "/healthz"
    # Another build runs outside this checkout: started with `python -m` or `-c`, its
    # interpreter puts the working directory first on sys.path and would import this tree's
    # `cbstop` instead of its own.
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"server {self.name} exited ({self.proc.returncode}): {self.log_tail()}"
                    )
                try:
                    if client.get(self.url + self.health).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise BenchError(f"server {self.name} not ready after {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def worker_rss(self) -> list[int]:
        """Resident set size in bytes of each worker process of this server."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [rss_bytes(pid) for pid in worker_pids(self.proc.pid)]

    def terminate(self) -> None:
        """Ask the server's process group (ours: started in a new session) to stop."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Stop the server and wait for it; SIGKILL its group if it does not go in 20 s."""
        self.terminate()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """The processes of a server that serve requests.

    uvicorn with several workers runs a supervisor whose children (multiprocessing spawn) are
    the workers; with one worker, or no children, the root serves itself.
    """
    tree = _children()
    descendants: list[int] = []
    stack = [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            descendants.append(child)
            stack.append(child)
    workers = [pid for pid in descendants if "resource_tracker" not in _cmdline(pid)]
    spawned = [pid for pid in workers if "spawn_main" in _cmdline(pid)]
    if spawned:
        return sorted(spawned)
    leaves = [pid for pid in workers if not tree.get(pid)]
    return sorted(leaves) or [root]


def rss_bytes(pid: int) -> int:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
