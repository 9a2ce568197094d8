"""Metrics that add up across workers: a real `cbstop serve --workers 2`, scraped over and over
on new connections (so both workers answer), shows the sum of every worker's requests, exactly,
and never less than before, even after a worker is killed with SIGKILL and restarted."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.helpers import json_lines, samples, wait_for_workers
from tests.reliability.processes import Server, running

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

PROCESS_METRICS = (
    "cbstop_process_resident_memory_bytes",
    "cbstop_process_cpu_seconds",
    "cbstop_process_open_fds",
    "cbstop_process_start_time_seconds",
)


def _worker(response: httpx.Response) -> str:
    """Which worker answered: the request ids it issues start with its own prefix."""
    return response.headers["x-request-id"].rsplit("-", 1)[0]


class Scrapes:
    """Requests and scrapes, each on a new connection, with what was sent so far."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sent = Counter[str]()  # requests sent per route
        self.workers: set[str] = set()  # request-id prefixes of the workers that answered
        self.scrapers: set[str] = set()  # ...and of those that answered a scrape
        self.totals: list[int] = []  # cbstop_requests_total summed, scrape by scrape
        self.replacing = False  # whether every worker is being replaced (SIGHUP)

    def get(self, path: str) -> httpx.Response:
        """GET on a new connection. While workers are being replaced (SIGHUP) a connection a
        retiring worker accepted as it stopped may be closed unanswered: that request never
        reached the app (not counted), so it is sent again."""
        for _ in range(5):
            try:
                return httpx.get(self.server.url + path, timeout=10)
            except httpx.RemoteProtocolError:
                if not self.replacing:
                    raise
        raise AssertionError(f"GET {path} closed unanswered five times")

    def healthz(self, n: int) -> None:
        for _ in range(n):
            answer = self.get("/healthz")
            assert answer.status_code == 200
            self.sent["/healthz"] += 1
            self.workers.add(_worker(answer))

    def scrape(self) -> dict[tuple[str, str], float]:
        """One scrape: requests_total by (route, status), plus the process metrics' pids."""
        answer = self.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert list(text_string_to_metric_families(answer.text))  # Prometheus's own parser
        self.workers.add(_worker(answer))
        self.scrapers.add(_worker(answer))
        by_route: dict[tuple[str, str], float] = defaultdict(float)
        for name, labels, value in samples(answer.text):
            if name == "cbstop_requests_total":
                by_route[labels["route"], labels["status"]] += value
            elif name in PROCESS_METRICS:
                by_route["pid", labels["pid"]] = value
        total = int(sum(v for (route, _), v in by_route.items() if route != "pid"))
        assert not self.totals or total > self.totals[-1], (self.totals, total)
        self.totals.append(total)
        # The scrape counts once it is answered: the ones before it are in it, itself not.
        assert by_route["/metrics", "200"] == self.sent["/metrics"], by_route
        assert by_route["/healthz", "200"] == self.sent["/healthz"], by_route
        self.sent["/metrics"] += 1
        return by_route


def _pids(scraped: dict[tuple[str, str], float]) -> set[int]:
    return {int(pid) for route, pid in scraped if route == "pid"}


def test_two_workers_metrics_add_up_exactly_and_never_go_down(database_url: str) -> None:
    with running(database_url, workers=2, env={"CBSTOP_ACCESS_LOG": "false"}) as server:
        wait_for_workers(server, 2)
        run = Scrapes(server)
        # Requests from before the first scrape (the readiness probes of `running`) are in
        # every total; from then on each total is the first plus what this test sent since.
        run.healthz(20)
        first = run.scrape()
        base = run.totals[0] - 20
        for round_ in range(5):
            run.healthz(3 + round_)
            run.scrape()
        six = list(run.totals)
        # After 20, +3, +4, +5, +6, +7 health checks, each scrape counting those before it.
        healthz = [20, 23, 27, 32, 38, 45]
        assert six == [base + h + k for k, h in enumerate(healthz)]
        assert len(run.workers) == 2, run.workers  # both workers answered requests
        # Every worker's scrape shows the same sums: scrape until the other one answers one.
        for _ in range(40):
            if len(run.scrapers) == 2:
                break
            run.scrape()
        assert len(run.scrapers) == 2, run.scrapers

        # Kill one worker: uvicorn restarts it; nothing it counted is lost.
        pids = _pids(first)
        assert len(pids) == 2, first
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            run.healthz(1)
            scraped = run.scrape()
            now = _pids(scraped)
            if victim not in now and len(now) == 2:
                break
            assert time.monotonic() < deadline, f"worker {victim} not replaced: {now}"
            time.sleep(0.2)
        assert now - pids and pids - now == {victim}, (pids, now)
        run.healthz(10)
        run.scrape()
        killed = len(run.totals)

        # SIGHUP: uvicorn replaces every worker; the old ones' gauges go, their counts stay.
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        run.replacing = True
        deadline = time.monotonic() + 60
        while True:
            run.healthz(1)
            latest = _pids(run.scrape())
            if len(latest) == 2 and not latest & now:
                break
            assert time.monotonic() < deadline, f"workers not replaced: {now} -> {latest}"
            time.sleep(0.2)
        print(f"\nsix consecutive scrape totals with two workers: {six}")
        print(
            f"all scrape totals (worker {victim} killed after the 6th, every worker replaced "
            f"by SIGHUP after the {killed}th): {run.totals}"
        )
        server.stop()
        stderr = server.stderr

    lines = json_lines(stderr)
    died = [line for line in lines if line.get("worker") == victim]
    assert len(died) == 1, died
    assert died[0]["level"] == "warning" and died[0]["exitcode"] == -signal.SIGKILL
    assert died[0]["restarted_as"] in now
    uvicorn_died = [line for line in lines if line["message"] == f"Child process [{victim}] died"]
    assert len(uvicorn_died) == 1 and uvicorn_died[0]["logger"] == "uvicorn.error"


def test_the_metrics_directory_is_private_and_removed_when_the_server_exits(
    database_url: str,
) -> None:
    with running(database_url, workers=2) as server:
        assert server.proc is not None
        environ = _environ(server.proc.pid)
        directory = environ["PROMETHEUS_MULTIPROC_DIR"]
        assert os.path.isdir(directory)
        assert os.stat(directory).st_mode & 0o077 == 0  # only the server's user may read it
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 200
        assert any(name.startswith("counter_") for name in os.listdir(directory))
        server.stop()
        assert server.proc.returncode == 0, server.stderr
    assert not os.path.exists(directory)


def _environ(pid: int) -> dict[str, str]:
    """The environment a worker of the server `pid` got (the supervisor's as it spawned)."""
    children = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == pid and b"spawn_main" in _cmdline(int(p))
    ]
    assert children, f"no worker of {pid}"
    raw = Path(f"/proc/{children[0]}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
