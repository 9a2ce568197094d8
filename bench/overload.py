"""How many API requests one worker should admit at once (`CBSTOP_MAX_IN_FLIGHT`, issue 12).

One `cbstop serve` worker per database (rate limits off), the bench world, wrk at rising
connection counts on GET one and list: throughput, p50/p99 and how many answers were not 2xx
(the pool's 503s after `CBSTOP_POOL_TIMEOUT`), the median of the repeats, the connection
counts interleaved in every round. A sensible default admits enough requests to reach the
throughput plateau and few enough that an admitted one never waits near the pool timeout.

    python -m bench.overload                                    # shedding off (0)
    python -m bench.overload --max-in-flight 0,64 --connections 256,1024
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.jobs import LIST, write_lines
from bench.procs import (
    BenchError,
    Server,
    cbstop,
    create_database,
    drop_database,
    ensure_wrk,
    free_port,
    log,
    vacuum_analyze,
)
from bench.run import CACHE, DEFAULT_POSTGRES, parse_size, serve_argv, server_env
from bench.worlds import cached_world
from bench.wrk import WrkResult, run_wrk


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    p.add_argument("--size", type=parse_size, default=1000, help="world size (default 1k)")
    p.add_argument("--connections", type=_ints, default=[16, 64, 256, 1024])
    p.add_argument("--max-in-flight", type=_ints, default=[0], help="values to compare")
    p.add_argument("--databases", default="postgresql,sqlite")
    p.add_argument("--scenarios", default="get_one,list_org")
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--postgres", default=DEFAULT_POSTGRES)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    wrk = ensure_wrk()
    world_file, world = cached_world(args.size, CACHE)
    work = Path(tempfile.mkdtemp(prefix="cbstop-overload-"))
    db_name = f"cbstop_overload_{os.getpid()}"
    servers: list[Server] = []
    rows: dict[tuple[str, int, str, int], list[WrkResult]] = {}
    try:
        env = server_env(CBSTOP_RATE_LIMIT="off", CBSTOP_AUTH_FAILURE_LIMIT="off")
        urls = {}
        if "postgresql" in args.databases:
            urls["postgresql"] = create_database(args.postgres, db_name)
        if "sqlite" in args.databases:
            urls["sqlite"] = f"sqlite:///{work / 'bench.db'}"
        for url in urls.values():
            cbstop(["migrate", "--database-url", url], env)
            cbstop(["load", str(world_file), "--database-url", url], env)
        if "postgresql" in urls:
            vacuum_analyze(urls["postgresql"])
        paths = {
            "get_one": write_lines(
                work / "get.txt", [f"/v1/integrations/{i}" for i in world.org_key_integrations]
            ),
            "list_org": write_lines(work / "list.txt", [LIST]),
        }
        paths = {name: path for name, path in paths.items() if name in args.scenarios}
        targets: list[tuple[str, int, Server]] = []
        for database, url in urls.items():
            for slots in args.max_in_flight:
                port = free_port()
                name = f"{database}-{slots}"
                server = Server(
                    name,
                    serve_argv(url, port, 1),
                    {**env, "CBSTOP_MAX_IN_FLIGHT": str(slots)},
                    port,
                    work / f"{name}.log",
                )
                servers.append(server)
                targets.append((database, slots, server))
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        units = [
            (database, slots, server, scenario, conns)
            for database, slots, server in targets
            for scenario in paths
            for conns in args.connections
        ]
        for _, _, server, scenario, conns in units:  # warm-up
            run_wrk(wrk, server.url, "paths.lua", [world.org_key, paths[scenario]],
                    duration=1, connections=conns, threads=1)  # fmt: skip
        for round_ in range(args.repeats):
            shift = round_ % len(units)
            for database, slots, server, scenario, conns in [*units[shift:], *units[:shift]]:
                result = run_wrk(wrk, server.url, "paths.lua", [world.org_key, paths[scenario]],
                                 duration=args.duration, connections=conns, threads=1)  # fmt: skip
                rows.setdefault((database, slots, scenario, conns), []).append(result)
                log(
                    f"round {round_ + 1}: {database:10} max_in_flight {slots:4} {scenario:8} "
                    f"c={conns:5} {result.rps:7.0f} req/s p50 {result.p50_ms:7.1f} ms "
                    f"p99 {result.p99_ms:7.1f} ms non-2xx {result.status_errors} "
                    f"socket errors {result.socket_errors}"
                )
    except BenchError as exc:
        print(f"overload: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        if "postgresql" in args.databases:
            drop_database(args.postgres, db_name)
        shutil.rmtree(work, ignore_errors=True)
    print(
        "| database | max_in_flight | scenario | connections | 2xx req/s | p50 ms | p99 ms "
        "| non-2xx (503) % | socket errors |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for (database, slots, scenario, conns), results in rows.items():
        requests = sum(r.requests for r in results)
        good = statistics.median(
            r.rps * (1 - r.status_errors / max(r.requests, 1)) for r in results
        )
        bad = sum(r.status_errors for r in results)
        print(
            f"| {database} | {slots} | {scenario} | {conns} "
            f"| {good:.0f} "
            f"| {statistics.median(r.p50_ms for r in results):.1f} "
            f"| {statistics.median(r.p99_ms for r in results):.1f} "
            f"| {100 * bad / max(requests, 1):.1f} "
            f"| {sum(r.socket_errors for r in results)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
