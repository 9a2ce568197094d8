"""What the benchmark's tests build jobs from: a 1k world, the run's arguments, and servers
that are never started."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.procs import Server
from bench.worlds import BenchWorld, generate_world


def world() -> BenchWorld:
    """The 1k world the benchmark generates."""
    return generate_world(1000)[1]


def run_args(**over: Any) -> argparse.Namespace:
    """`bench.run`'s arguments as `build_jobs` reads them."""
    values = {"threads": 1, "connections": 32, "deep_offset": 10_000, "only": None, **over}
    return argparse.Namespace(**values)


def servers(tmp_path: Path, *kinds: str) -> dict[str, Server]:
    """One (unstarted) server of each kind, on ports of their own."""
    return {
        kind: Server(kind, ["true"], {}, 1000 + i, tmp_path / f"{kind}.log")
        for i, kind in enumerate(kinds)
    }
