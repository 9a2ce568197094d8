"""`make bench`: cbstop under wrk at three world sizes, beside its references and a textbook peer.

For each world size: generate the world file (cached in bench/results/tmp), create a fresh
PostgreSQL database, `cbstop migrate` + `cbstop load` it (and a SQLite copy for the smaller
sizes), start every server at once on its own port (cbstop on PostgreSQL and on SQLite, the
textbook peer, bare get, bare write, bare hello; same uvicorn, same worker count), check each
scenario answers as it should (post_replay first stores the answers it replays), warm each up,
then run the repeats interleaved (every scenario of every server once per round, the order
rotated each round) and keep the medians. Results go to bench/results/<stamp>.json, .md and .png;
see docs/performance.md.

With `--baseline CMD`, another build's `cbstop` serves the same databases beside the current
one, each of its scenarios paired with the current build's in every round, and the report
gains a before/after table (bench/compare.py).

    python -m bench.run                      # the full run (long: the lead runs it)
    python -m bench.run --smoke              # CI: 1,000 world, 1 s runs, results to a temp dir
    python -m bench.run --sizes 1k,100k --duration 5 --repeats 3 --scenarios get_one,list_admin
    python -m bench.run --baseline /tmp/cbstop-old/.venv/bin/cbstop --baseline-label before
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import ceilings, compare, report
from bench.events import generate_events
from bench.jobs import (
    AUTH_FAILURES,
    LIMITED,
    QUOTA,
    Job,
    build_jobs,
    client_for_checks,
    probe,
    scope_count,
    settled_count,
)
from bench.procs import (
    BIN,
    PYTHON,
    REPO,
    BenchError,
    Server,
    analyze,
    build_identity,
    cbstop,
    cbstop_command,
    create_database,
    drop_database,
    ensure_peer_path,
    ensure_wrk,
    free_port,
    log,
    vacuum_analyze,
)
from bench.report import (
    BARE_GET,
    BARE_WRITE,
    BASELINE,
    BASELINE_SQLITE,
    CBSTOP,
    CBSTOP_SQLITE,
    GET_REDIS,
    HELLO,
    PEER,
    Measurement,
)
from bench.webhooks import measure_delivery
from bench.worlds import BenchWorld, cached_world
from bench.wrk import WrkResult, run_wrk

RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "tmp"
KEY_SECRET = "bench-key-secret-not-for-production-0123456789"
DEFAULT_POSTGRES = os.environ.get("CBSTOP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DEFAULT_REDIS = os.environ.get("CBSTOP_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    for suffix, factor in (("m", 1_000_000), ("k", 1000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description="Benchmark cbstop.")
    p.add_argument("--smoke", action="store_true", help="CI: 1k world, 1 s runs, temp output")
    p.add_argument("--sizes", type=parse_sizes, default=None, help="e.g. 1k,100k,1M")
    p.add_argument("--sqlite-sizes", type=parse_sizes, default=None, help="default: 1k,100k")
    p.add_argument("--duration", type=int, default=None, help="seconds per run (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="seconds of warm-up (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers per server")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--deep-offset", type=int, default=10_000, help="offset of list_deep")
    p.add_argument("--scenarios", default=None, help="only these scenarios (comma list)")
    p.add_argument(
        "--no-refs", action="store_true", help="skip bare hello / bare get / bare write / peer"
    )
    p.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL, no database")
    p.add_argument("--redis", default=DEFAULT_REDIS, help="the Redis of get_one_redis")
    p.add_argument(
        "--no-redis", action="store_true", help="skip get_one_redis (no Redis on this machine)"
    )
    p.add_argument("--output-dir", type=Path, default=None, help="default bench/results")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="CMD",
        help="another build's cbstop command (e.g. /tmp/old/.venv/bin/cbstop): served beside "
        "the current one, every cbstop scenario paired with it, a before/after table",
    )
    p.add_argument(
        "--baseline-label", default=None, help="its name in the report (default: its commit)"
    )
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="CBSTOP_NAME=VALUE",
        help="a setting for every server (repeatable), e.g. CBSTOP_IDEMPOTENCY_CACHE_SIZE=0 "
        "to replay keys from the database only",
    )
    p.add_argument(
        "--events",
        type=parse_size,
        default=None,
        help="events generated in each database after the load (default: one per integration)",
    )
    p.add_argument(
        "--no-webhooks", action="store_true", help="skip the webhook delivery measurement"
    )
    args = p.parse_args(argv)
    for setting in args.setting:
        name, sep, value = setting.partition("=")
        if not sep or not name.startswith("CBSTOP_"):
            p.error(f"--setting {setting!r}: give CBSTOP_NAME=VALUE")
        SETTINGS[name] = value
    args.baseline_command = shlex.split(args.baseline) if args.baseline else None
    if args.smoke:
        args.sizes = args.sizes or [1000]
        args.sqlite_sizes = args.sqlite_sizes if args.sqlite_sizes is not None else [1000]
        args.duration = args.duration or 1
        args.warmup = args.warmup if args.warmup is not None else 1
        args.repeats = args.repeats or 1
        args.output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="cbstop-bench-"))
    else:
        args.sizes = args.sizes or [1000, 100_000, 1_000_000]
        args.sqlite_sizes = args.sqlite_sizes if args.sqlite_sizes is not None else [1000, 100_000]
        args.duration = args.duration or 10
        args.warmup = args.warmup if args.warmup is not None else 3
        args.repeats = args.repeats or 3
        args.output_dir = args.output_dir or RESULTS
    args.only = set(args.scenarios.split(",")) if args.scenarios else None
    return args


def _meta(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "stamp": stamp,
        "commit": git("rev-parse", "--short", "HEAD")
        + (" (dirty)" if git("status", "--porcelain", "--", "cbstop") else ""),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": os.getloadavg()[0],
        "smoke": args.smoke,
        "sizes": args.sizes,
        "sqlite_sizes": args.sqlite_sizes,
        "workers": args.workers,
        "connections": args.connections,
        "threads": args.threads,
        "duration": args.duration,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "settings": dict(SETTINGS),
        "limits_on": {"CBSTOP_RATE_LIMIT": QUOTA, "CBSTOP_AUTH_FAILURE_LIMIT": AUTH_FAILURES},
        "deep_offset": args.deep_offset,
        "events": args.events,
    }


# Settings given with --setting, for every server and command of the run.
SETTINGS: dict[str, str] = {}


def server_env(**extra: str) -> dict[str, str]:
    """The environment of every server and `cbstop` command: production settings, no access
    log, rate limits off (the bench's own requests would spend the default quota at once; the
    limits scenarios turn them on), and the run's --setting values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}
    env.update(
        CBSTOP_KEY_SECRET=KEY_SECRET,
        CBSTOP_ACCESS_LOG="false",
        CBSTOP_PRODUCTION="true",
        CBSTOP_RATE_LIMIT="off",
        CBSTOP_AUTH_FAILURE_LIMIT="off",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(SETTINGS)
    env.update(extra)
    return env


def _baseline_env(command: list[str]) -> dict[str, str]:
    """The current build's settings, with the baseline's own bin first and no PYTHONPATH."""
    exe = shutil.which(command[0])
    if exe is None:
        raise BenchError(f"--baseline: {command[0]} is not an executable")
    env = server_env(PATH=f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    return env


def _builds(args: argparse.Namespace) -> dict[str, dict[str, str | None]]:
    """The code each build imports and its commit, asked outside this checkout."""
    with tempfile.TemporaryDirectory(prefix="cbstop-bench-") as neutral:
        current = build_identity(cbstop_command(), server_env(), Path(neutral))
        baseline = build_identity(
            args.baseline_command, _baseline_env(args.baseline_command), Path(neutral)
        )
    if baseline["source"] is None:
        raise BenchError(f"--baseline: could not import cbstop with {args.baseline}")
    if baseline["source"] == current["source"]:
        log(f"baseline and current both run {current['source']}: an A/A run")
    current["label"] = "current"
    baseline["label"] = args.baseline_label or baseline["commit"] or "baseline"
    return {"current": current, "baseline": baseline}


def _uvicorn(app: str, port: int, workers: int) -> list[str]:
    return [
        PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def serve_argv(url: str, port: int, workers: int, command: list[str] | None = None) -> list[str]:
    """`cbstop serve` of this build (or `command`, another build's) on `url`."""
    return [
        *(command or cbstop_command()), "serve", "--database-url", url,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def limits_env(redis: str | None = None, prefix: str = "") -> dict[str, str]:
    """The settings of a limits scenario's server: a quota the bench never reaches, the
    default auth-failure budget, in-process or (`redis`) in Redis under `prefix`."""
    env = {"CBSTOP_RATE_LIMIT": QUOTA, "CBSTOP_AUTH_FAILURE_LIMIT": AUTH_FAILURES}
    if redis is not None:
        env.update(CBSTOP_REDIS_URL=redis, CBSTOP_REDIS_PREFIX=prefix)
    return env


def _redis_sees(url: str, prefix: str, request: Callable[[], object]) -> bool:
    """Whether Redis runs a command under `prefix` (the store's hash tag) while `request` is
    sent: watched with MONITOR, for a few seconds at most."""
    import redis

    tag = "{" + prefix + "}:"
    deadline = time.monotonic() + 5
    with redis.Redis.from_url(url, socket_timeout=1) as client, client.monitor() as monitor:
        sender = threading.Thread(target=request)
        sender.start()
        try:
            while time.monotonic() < deadline:
                try:
                    command = monitor.next_command()
                except redis.TimeoutError:
                    continue
                if tag in command.get("command", ""):
                    return True
            return False
        finally:
            sender.join()


def _redis_clear(url: str, prefix: str) -> None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
            if keys:
                client.delete(*keys)
    except redis.RedisError as exc:
        log(f"could not remove the run's keys from Redis: {exc}")


def _require_redis(url: str) -> None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        raise BenchError(
            f"get_one_redis needs Redis at {url} ({exc}); give --redis URL, or --no-redis to "
            "skip it"
        ) from exc


def _drive(job: Job, wrk: str, args: argparse.Namespace, seconds: int) -> WrkResult:
    before = settled_count(job)
    result = run_wrk(
        wrk,
        job.server.url,
        job.script,
        job.args,
        duration=seconds,
        connections=args.connections,
        threads=args.threads,
    )
    if result.requests == 0 or result.status_errors >= result.requests:
        raise BenchError(
            f"{job.server_kind} {job.scenario}: every request failed "
            f"({result.requests} sent, {result.status_errors} errors); see {job.server.log_path}"
        )
    after = scope_count(job)
    if before != after:
        raise BenchError(
            f"{job.server_kind} {job.scenario}: the integrations in scope went from {before} "
            f"to {after} in a run that must write nothing; see {job.server.log_path}"
        )
    if job.check is not None:
        with client_for_checks() as client:
            job.check(client, job, result)
    return result


# The webhook delivery measurement, as --scenarios names it.
WEBHOOKS = "webhook_delivery"


def _events(
    url: str, size: int, database: str, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    """Generate the world's events in `url` (bench/events.py), timed and reported."""
    started = time.perf_counter()
    n = generate_events(url, args.events)
    took = time.perf_counter() - started
    log(f"world {size}: {n} events generated in {database} in {took:.1f}s")
    out["events"].append({"size": size, "database": database, "events": n, "seconds": took})


def _deliveries(
    server: Server,
    kind: str,
    database_url: str,
    size: int,
    world: BenchWorld,
    wrk: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One webhook delivery run on `server` (bench/webhooks.py): the report's row."""

    def create() -> WrkResult:
        merchants = ",".join(world.org_key_merchants)
        return run_wrk(
            wrk,
            server.url,
            "post.lua",
            [world.org_key, world.org_key_organisation, merchants],
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
        )

    row = measure_delivery(server.url, database_url, world, create)
    log(
        f"world {size}: {kind} webhook delivery: {row['delivered']}/{row['expected']} events, "
        f"{row['delivered_per_s']} events/s, lag p50 {row['lag_p50_ms']} ms "
        f"p99 {row['lag_p99_ms']} ms"
    )
    return {"size": size, "server": kind, **row}


def _processes(servers: dict[str, Server]) -> list[Server]:
    """Each server process once (one may be measured as two kinds: bare get and bare write)."""
    return list({id(server): server for server in servers.values()}.values())


def run_size(
    size: int, args: argparse.Namespace, wrk: str, peer_path: str | None, out: dict[str, Any]
) -> None:
    world_file, world = cached_world(size, CACHE)
    work = Path(tempfile.mkdtemp(prefix=f"cbstop-bench-{size}-"))
    db_name = f"cbstop_bench_{size}_{os.getpid()}"
    # get_one_redis's keys: this run's own, removed afterwards.
    redis_prefix = f"cbstop-bench-{os.getpid()}-{size}"
    wanted = {
        scenario
        for scenario in (s for twins in LIMITED.values() for s in twins)
        if (args.only is None or scenario in args.only)
        and not (scenario == GET_REDIS and args.no_redis)
    }
    servers: dict[str, Server] = {}
    log(f"world {size}: database {db_name}")
    try:
        url = create_database(args.postgres, db_name)
        env = server_env()
        cbstop(["migrate", "--database-url", url], env)
        took = cbstop(["load", str(world_file), "--database-url", url], env)
        log(f"world {size}: loaded into PostgreSQL in {took:.1f}s")
        out["loads"].append({"size": size, "database": "postgresql", "seconds": took})
        _events(url, size, "postgresql", args, out)
        vacuum_analyze(url)
        with_sqlite = size in args.sqlite_sizes
        sqlite_url = f"sqlite:///{work / 'bench.db'}"
        if with_sqlite:
            cbstop(["migrate", "--database-url", sqlite_url], env)
            took = cbstop(["load", str(world_file), "--database-url", sqlite_url], env)
            log(f"world {size}: loaded into SQLite in {took:.1f}s")
            out["loads"].append({"size": size, "database": "sqlite", "seconds": took})
            _events(sqlite_url, size, "sqlite", args, out)

        # The baseline build migrates and loads its own copy of the world: its migrations
        # may be older than this build's, and a server refuses a database migrated past the
        # revisions it knows.
        baseline_urls: dict[str, str] = {}
        if args.baseline_command:
            base_env = _baseline_env(args.baseline_command)
            baseline_urls[url] = create_database(args.postgres, f"{db_name}_baseline")
            targets = [(url, baseline_urls[url])]
            if with_sqlite:
                baseline_urls[sqlite_url] = f"sqlite:///{work / 'baseline.db'}"
                targets.append((sqlite_url, baseline_urls[sqlite_url]))
            for _, target in targets:
                for step in (["migrate"], ["load", str(world_file)]):
                    cbstop([*step, "--database-url", target], base_env, args.baseline_command, work)
                # The same events, where its schema has them (an A/A run; none before issue 13).
                generate_events(target, args.events)
            vacuum_analyze(baseline_urls[url])
            log(f"world {size}: loaded the baseline's own copy")

        def add(kind: str, argv: list[str], port: int, extra_env: dict[str, str]) -> None:
            servers[kind] = Server(kind, argv, server_env(**extra_env), port, work / f"{kind}.log")

        w = args.workers
        databases = [(CBSTOP, BASELINE, url)]
        if with_sqlite:
            databases.append((CBSTOP_SQLITE, BASELINE_SQLITE, sqlite_url))
        if GET_REDIS in wanted:
            _require_redis(args.redis)
        for kind, baseline_kind, database_url in databases:
            port = free_port()
            add(kind, serve_argv(database_url, port, w), port, {})
            # The same build, database and workers with the rate limits on (issue 12).
            for scenario, limited_kind in LIMITED[kind].items():
                if scenario in wanted:
                    redis = args.redis if scenario == GET_REDIS else None
                    port = free_port()
                    add(
                        limited_kind,
                        serve_argv(database_url, port, w),
                        port,
                        limits_env(redis, redis_prefix),
                    )
            if args.baseline_command:
                # The same world in its own copy, same settings and workers; its own code, run
                # from outside this checkout (see Server.cwd).
                port = free_port()
                argv = serve_argv(baseline_urls[database_url], port, w, args.baseline_command)
                servers[baseline_kind] = Server(
                    baseline_kind,
                    argv,
                    _baseline_env(args.baseline_command),
                    port,
                    work / f"{baseline_kind}.log",
                    cwd=work,
                )
        if not args.no_refs:
            pythonpath = os.pathsep.join(p for p in (str(REPO), peer_path) if p)
            ref_env = {"CBSTOP_DATABASE_URL": url, "PYTHONPATH": pythonpath}
            for kind, app in (
                (PEER, "bench.peers.textbook:app"),
                (BARE_GET, "bench.refs.bare:app"),
                (HELLO, "bench.refs.hello:app"),
            ):
                port = free_port()
                add(kind, _uvicorn(app, port, w), port, ref_env)
            # Bare write is the same process as bare get (one pool, as cbstop's): every server
            # of the run shares the database's max_connections.
            servers[BARE_WRITE] = servers[BARE_GET]
        for server in _processes(servers):
            server.start()
        for server in _processes(servers):
            server.wait_ready()
        log(f"world {size}: servers ready: {', '.join(servers)}")

        jobs = build_jobs(
            servers,
            world,
            work,
            args,
            redis_sees=lambda request: _redis_sees(args.redis, redis_prefix, request),
        )
        for job in jobs:
            job.measurement.size = size
        jobs = probe(jobs)
        if args.warmup > 0:
            for job in jobs:
                _drive(job, wrk, args, args.warmup)
        units = compare.paired_units(jobs, key=lambda job: (job.server_kind, job.scenario))
        for round_ in range(args.repeats):
            # What autovacuum would have done by now (it is off on the machines this runs on):
            # the write scenarios grow one organisation by thousands of integrations, and
            # with statistics from the load a generic plan checks each merchant row's foreign
            # key by walking that organisation's page index (docs/performance.md, issue 14).
            for database in (url, *baseline_urls.values()):
                if database.startswith("postgresql"):
                    analyze(database)
            for job in compare.round_order(units, round_):
                result = _drive(job, wrk, args, args.duration)
                job.measurement.repeats.append(result)
                log(
                    f"world {size} round {round_ + 1}/{args.repeats}: {job.server_kind:15} "
                    f"{job.scenario:14} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms  "
                    f"errors {result.status_errors + result.socket_errors}"
                )
        out["measurements"] += [job.measurement for job in jobs]
        for kind, server in servers.items():
            if kind == BARE_WRITE:
                continue  # bare get's process
            out["rss"].append({"size": size, "server": kind, "workers_bytes": server.worker_rss()})
        # Last, so its deliveries disturb no round: webhook delivery on each database.
        if not args.no_webhooks and (args.only is None or WEBHOOKS in args.only):
            for kind, database_url in ((CBSTOP, url), (CBSTOP_SQLITE, sqlite_url)):
                if kind in servers:
                    out["webhooks"].append(
                        _deliveries(servers[kind], kind, database_url, size, world, wrk, args)
                    )
    finally:
        started = time.monotonic()
        for server in _processes(servers):
            server.terminate()
        for server in _processes(servers):
            server.stop()
        log(f"world {size}: servers stopped in {time.monotonic() - started:.1f}s")
        drop_database(args.postgres, db_name)
        if GET_REDIS in wanted:
            _redis_clear(args.redis, redis_prefix)
        if args.baseline_command:
            drop_database(args.postgres, f"{db_name}_baseline")
        if os.environ.get("CBSTOP_BENCH_KEEP_WORKDIR"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def write_results(results: dict[str, Any], directory: Path, stamp: str) -> list[Path]:
    """<stamp>.json, <stamp>.md and <stamp>.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stamp}.json"
    md_path = directory / f"{stamp}.md"
    png_path = directory / f"{stamp}.png"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    md_path.write_text(report.markdown(results))
    report.plot(results, png_path)
    return [json_path, md_path, png_path]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    started = time.monotonic()
    try:
        wrk = ensure_wrk()
        peer_path = None if args.no_refs else ensure_peer_path()
        out: dict[str, Any] = {
            "measurements": [],
            "rss": [],
            "loads": [],
            "events": [],
            "webhooks": [],
        }
        meta = _meta(args, stamp)
        builds = _builds(args) if args.baseline_command else None
        for size in args.sizes:
            run_size(size, args, wrk, peer_path, out)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    measurements: list[Measurement] = out["measurements"]
    meta["seconds"] = round(time.monotonic() - started, 1)
    results = {
        "meta": meta,
        "measurements": [m.to_json() for m in measurements],
        "ratios": [r.to_json() for r in report.compute_ratios(measurements)],
        "ceilings": [c.to_json() for c in ceilings.compute_ceilings(measurements)],
        "latency_targets": [t.to_json() for t in ceilings.compute_latency_targets(measurements)],
        "rss": out["rss"],
        "loads": out["loads"],
        "events": out["events"],
        "webhooks": out["webhooks"],
    }
    if builds is not None:
        rows = compare.compare(measurements)
        results["comparison"] = {
            **builds,
            "threshold": compare.THRESHOLD,
            "rows": [row.to_json() for row in rows],
        }
    paths = write_results(results, args.output_dir, stamp)
    print(report.markdown(results))
    log(f"done in {meta['seconds']}s: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
