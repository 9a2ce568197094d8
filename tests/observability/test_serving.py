"""What `serve` tells uvicorn (keep-alive, proxy trust), that an idle kept-alive connection is
closed after CBSTOP_KEEP_ALIVE_TIMEOUT, and that `cbstop serve` fails (exit 3, as with one
worker) when a worker of several cannot start, instead of exiting 0."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from uvicorn.config import STARTUP_FAILURE

from cbstop.server import uvicorn_config
from cbstop.settings import Settings
from tests.observability.helpers import messages
from tests.reliability.processes import Server, running

# Makes a spawned worker's settings name a database it cannot open; the supervisor (which
# migrates the real database) imports this before `serve` hands the settings down: untouched.
BREAK_WORKERS = """
import json, os
given = os.environ.get("CBSTOP_WORKER_SETTINGS")
if given:
    values = json.loads(given)
    values["database_url"] = "mysql://nowhere/cbstop"
    os.environ["CBSTOP_WORKER_SETTINGS"] = json.dumps(values)
"""


def test_uvicorn_gets_the_keep_alive_and_proxy_settings() -> None:
    default = uvicorn_config(Settings(), host="127.0.0.1", port=8000, workers=2)
    assert default.timeout_keep_alive == 65  # above a load balancer's usual 60 s idle timeout
    assert (default.proxy_headers, default.forwarded_allow_ips) == (False, "127.0.0.1")
    given = Settings(keep_alive_timeout=75.5, proxy_headers=True, forwarded_allow_ips="10.0.0.1")
    config = uvicorn_config(given, host="127.0.0.1", port=8000, workers=1)
    assert config.timeout_keep_alive == 75.5
    assert (config.proxy_headers, config.forwarded_allow_ips) == (True, "10.0.0.1")
    assert (config.access_log, config.log_config) == (False, None)  # the logs are ours


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    database_url: str,
) -> None:
    with (
        running(database_url, env={"CBSTOP_KEEP_ALIVE_TIMEOUT": "1"}) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += sock.recv(65536)
        answered = time.monotonic()
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"connection: close" not in answer.lower()  # kept alive...
        assert sock.recv(65536) == b""  # ...until the server closed it
        idle = time.monotonic() - answered
    assert 0.8 <= idle <= 5, idle


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_serve_exits_non_zero_when_a_worker_cannot_start(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BREAK_WORKERS)
    server = Server(database_url, workers=2, env={"PYTHONPATH": str(tmp_path)})
    server.start()
    try:
        code = server.wait(timeout=60)
        stderr = server.stderr
    finally:
        server.stop()
        server.cleanup()

    assert code == STARTUP_FAILURE, stderr
    lines = messages(stderr)
    failed = [line for line in lines if "failed to start, stopping the parent" in line["message"]]
    assert len(failed) == 1 and failed[0]["level"] == "error", lines
    startup = [line for line in lines if line["message"] == "startup failed"]
    assert startup and "unsupported database URL" in startup[0]["exception"]
