"""Reading what a real server wrote: its stderr as JSON lines, its metrics as samples."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tests.reliability.processes import Server, started

SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of stderr, each of which must be one JSON object."""
    lines = []
    for line in stderr.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def messages(stderr: str) -> list[dict[str, Any]]:
    """The server's own lines (not access lines)."""
    return [line for line in json_lines(stderr) if "request_id" not in line]


def access_lines(stderr: str) -> list[dict[str, Any]]:
    """The access lines, one per request."""
    return [line for line in json_lines(stderr) if "request_id" in line]


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        yield match.group(1), labels, float(match.group(3))


@contextmanager
def serving(
    database_url: str,
    *,
    args: Sequence[str] = (),
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`running`, with more arguments to `cbstop serve`."""
    server = Server(database_url, workers=workers, env=env)
    server.argv += list(args)
    with started(server):
        yield server


def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send bytes as they are on a new connection; what came back until it closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def wait_for_workers(server: Server, workers: int, timeout: float = 30) -> None:
    """Until every worker has started (`running` waits for the first one only)."""
    deadline = time.monotonic() + timeout
    while server.stderr.count("Application startup complete.") < workers:
        assert time.monotonic() < deadline, server.stderr[-3000:]
        time.sleep(0.1)
