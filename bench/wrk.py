"""Running wrk with one of the Lua scripts in bench/lua and reading its one-line report."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.procs import BenchError

LUA = Path(__file__).resolve().parent / "lua"
MARK = "BENCH_JSON "


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and failures."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    # Non-2xx/3xx answers (wrk counts status >= 400) and socket errors/timeouts.
    status_errors: int
    socket_errors: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrkResult:
        return cls(**data)


def parse_report(stdout: str) -> WrkResult:
    """The WrkResult in the BENCH_JSON line that bench/lua/common.lua prints."""
    for line in stdout.splitlines():
        if line.startswith(MARK):
            raw = orjson.loads(line[len(MARK) :])
            seconds = max(raw["duration_us"] / 1e6, 1e-9)
            return WrkResult(
                requests=raw["requests"],
                seconds=round(seconds, 3),
                rps=round(raw["requests"] / seconds, 1),
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                mean_ms=round(raw["mean_us"] / 1000, 3),
                max_ms=raw["max_us"] / 1000,
                status_errors=raw["status_errors"],
                socket_errors=raw["connect_errors"]
                + raw["read_errors"]
                + raw["write_errors"]
                + raw["timeouts"],
            )
    raise BenchError(f"wrk printed no report: {stdout.strip()[-300:]!r}")


def run_wrk(
    wrk: str,
    url: str,
    script: str,
    args: list[str],
    *,
    duration: int,
    connections: int,
    threads: int,
) -> WrkResult:
    """Drive `url` for `duration` seconds at a fixed number of connections."""
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        script,
        url,
        "--",
        *args,
    ]
    done = subprocess.run(argv, cwd=LUA, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return parse_report(done.stdout)
