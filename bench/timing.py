"""Does a 404 say whether the integration exists in another tenant? Timing, measured.

CONTRACT: an integration (or organisation) outside the key's scope is indistinguishable from
one that does not exist, in its answer and with no measurable timing difference worth
exploiting. This starts a real `cbstop serve` (one worker) on a fresh database loaded with a
benchmark world (bench/worlds.py), and for each key asked for (an organisation's, an admin
group's, a non-admin group's; all of partner `ptr_bench`):

- GET: `GET /v1/integrations/{id}` of integrations of other tenants (outside `ptr_bench`)
  against ids of the same shapes that exist nowhere (`int_` + as many hex digits);
- POST: `POST /v1/integrations` with other tenants' `organisation_id`s against ids of the
  same shapes that exist nowhere; the rest of the body valid and the same;
- PATCH: `PATCH /v1/integrations/{id}` `{"name": ...}`, the ids of GET.

Each side uses `--ids` ids in turn (8 by default), so that what one id costs on its own
(where it falls in the index, which heap page holds the row after it) does not pass for the
difference between the sides: two ids that both exist nowhere differ by up to z = 1.3 with
3,000 requests each. Every answer must be 404 with the same body for both sides. The two
sides alternate (in a random order within each pair) over one keep-alive connection of raw
sockets, after a warm-up; the latency of each is from just before it is sent to its last
byte read. It reports each side's
median, the difference, and the Mann-Whitney U test's z (normal approximation, corrected for
ties): positive when the other tenant's answer is slower. |z| < 2 is what equal distributions
give 95 % of the time.

Not a CI gate: latencies on a shared machine drift by more than the effect being looked for,
so a single run can cross any threshold. Run it a few times and read the z's together
(docs/performance.md, "Timing of not-found answers").

    .venv/bin/python -m bench.timing                       # 3,000 pairs per key and method
    .venv/bin/python -m bench.timing --scopes organisation --requests 10000 --json
    CBSTOP_BENCH_CBSTOP=/tmp/cbstop-old/.venv/bin/cbstop .venv/bin/python -m bench.timing
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import socket
import sqlite3
import statistics
import string
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.procs import (
    BenchError,
    Server,
    build_identity,
    cbstop,
    cbstop_command,
    create_database,
    drop_database,
    free_port,
    log,
    vacuum_analyze,
)
from bench.run import CACHE, DEFAULT_POSTGRES, parse_size, serve_argv, server_env
from bench.worlds import PARTNER, BenchWorld, cached_world

SCOPES = ("organisation", "partner", "group")
METHODS = ("GET", "POST", "PATCH")

# --- the statistic ----------------------------------------------------------------------------


def ranks(values: list[float]) -> tuple[list[float], list[int]]:
    """The rank of each value (1-based, ties sharing their average rank) and the size of
    every group of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = rank
        ties.append(j - i + 1)
        i = j + 1
    return out, ties


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample: how often one of its values beats one of the second's
    z: float  # (U - mean) / sd under "same distribution"; > 0: the first sample is larger
    p: float  # two-sided


def mann_whitney(first: list[float], second: list[float]) -> MannWhitney:
    """Mann-Whitney U of `first` against `second`, normal approximation with tie correction."""
    n1, n2 = len(first), len(second)
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need values")
    rank, ties = ranks([*first, *second])
    u = sum(rank[:n1]) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:  # every value equal
        return MannWhitney(u, 0.0, 1.0)
    z = (u - mean) / math.sqrt(variance)
    return MannWhitney(u, z, math.erfc(abs(z) / math.sqrt(2)))


# --- one keep-alive connection ----------------------------------------------------------------


class RawClient:
    """HTTP/1.1 over one socket: send prepared bytes, read one answer, time it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        self.buffer += chunk

    def exchange(self, request: bytes) -> tuple[int, int, bytes]:
        """(nanoseconds from send to the answer's last byte, status, body)."""
        started = time.perf_counter_ns()
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = self.buffer[:end].split(b"\r\n")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise BenchError(f"an answer without Content-Length: {head[0]!r}")
        while len(self.buffer) < end + 4 + length:
            self._fill()
        took = time.perf_counter_ns() - started
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        return took, int(head[0].split()[1]), body


def _get(port: int, key: str, integration_id: str) -> bytes:
    return (
        f"GET /v1/integrations/{integration_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()


def _with_body(method: str, path: str, port: int, key: str, body: dict[str, Any]) -> bytes:
    content = orjson.dumps(body)
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    ).encode() + content


def _post(port: int, key: str, organisation_id: str, merchant_ids: list[str]) -> bytes:
    body = {
        "organisation_id": organisation_id,
        "name": "timing probe",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": merchant_ids,
    }
    return _with_body("POST", "/v1/integrations", port, key, body)


def _patch(port: int, key: str, integration_id: str) -> bytes:
    path = f"/v1/integrations/{integration_id}"
    return _with_body("PATCH", path, port, key, {"name": "timing probe"})


# --- one comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    scope: str
    method: str
    elsewhere: list[str]  # ids of another tenant
    nowhere: list[str]  # ids that exist nowhere, one of the same shape for each
    requests: int
    elsewhere_median_us: float
    nowhere_median_us: float
    difference_us: float  # elsewhere - nowhere
    u: float
    z: float
    p: float


def compare(
    client: RawClient,
    *,
    scope: str,
    method: str,
    elsewhere: list[tuple[str, bytes]],
    nowhere: list[tuple[str, bytes]],
    requests: int,
    warmup: int,
    rng: random.Random,
) -> Comparison:
    """`requests` pairs, each in a random order, after `warmup` unrecorded pairs; pair n sends
    the (n mod k)th request of each side."""
    times: dict[str, list[float]] = {"elsewhere": [], "nowhere": []}
    bodies: dict[str, bytes] = {}
    sides = {"elsewhere": elsewhere, "nowhere": nowhere}
    for n in range(warmup + requests):
        order = ["elsewhere", "nowhere"]
        rng.shuffle(order)
        for side in order:
            requests_of_side = sides[side]
            took, status, body = client.exchange(requests_of_side[n % len(requests_of_side)][1])
            if status != 404:
                raise BenchError(f"{scope} {method} {side}: answered {status}, not 404: {body!r}")
            if bodies.setdefault(side, body) != body:
                raise BenchError(f"{scope} {method} {side}: the 404 body changed: {body!r}")
            if n >= warmup:
                times[side].append(took / 1000)
    if bodies["elsewhere"] != bodies["nowhere"]:
        raise BenchError(
            f"{scope} {method}: the two 404 bodies differ: "
            f"{bodies['elsewhere']!r} / {bodies['nowhere']!r}"
        )
    test = mann_whitney(times["elsewhere"], times["nowhere"])
    a, b = statistics.median(times["elsewhere"]), statistics.median(times["nowhere"])
    return Comparison(
        scope,
        method,
        [i for i, _ in elsewhere],
        [i for i, _ in nowhere],
        requests,
        a,
        b,
        a - b,
        test.u,
        test.z,
        test.p,
    )


# --- the world and the server -----------------------------------------------------------------


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _absent(url: str, table: str, like: str, rng: random.Random, alphabet: str) -> str:
    """An id of `like`'s prefix and length that `table` does not hold."""
    prefix, _, rest = like.partition("_")
    while True:
        candidate = f"{prefix}_" + "".join(rng.choice(alphabet) for _ in rest)
        # The candidate is made of `alphabet` alone: safe as a literal.
        if not _query(url, f"SELECT 1 FROM {table} WHERE id = '{candidate}'"):
            return candidate


@dataclass(frozen=True)
class Targets:
    """Ids of another tenant (outside partner `ptr_bench`), and for each one of its shape
    (prefix and length) that exists nowhere."""

    integrations_elsewhere: list[str]
    integrations_nowhere: list[str]
    organisations_elsewhere: list[str]
    organisations_nowhere: list[str]


def targets(url: str, rng: random.Random, count: int) -> Targets:
    """`count` of each (fewer if the world has fewer), drawn with `rng`."""
    found: dict[str, list[str]] = {}
    for table in ("integrations", "organisations"):
        rows = _query(
            url,
            f"SELECT id FROM {table} WHERE partner_id IS DISTINCT FROM '{PARTNER}' ORDER BY id",
        )
        if not rows:
            raise BenchError(f"the world has no {table} outside {PARTNER}: use a larger --size")
        ids = [row[0] for row in rows]
        found[table] = rng.sample(ids, min(count, len(ids)))
    integrations, organisations = found["integrations"], found["organisations"]
    hex_digits, letters = string.digits + "abcdef", string.ascii_lowercase
    return Targets(
        integrations,
        [_absent(url, "integrations", i, rng, hex_digits) for i in integrations],
        organisations,
        [_absent(url, "organisations", o, rng, letters) for o in organisations],
    )


def keys(world: BenchWorld) -> dict[str, str]:
    return {"organisation": world.org_key, "partner": world.admin_key, "group": world.desk_key}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    world_file, world = cached_world(args.size, CACHE)
    work = Path(tempfile.mkdtemp(prefix="cbstop-timing-"))
    db_name = f"cbstop_timing_{os.getpid()}"
    server: Server | None = None
    rng = random.Random(args.seed)
    try:
        env = server_env()
        if args.sqlite:
            url = f"sqlite:///{work / 'timing.db'}"
        else:
            url = create_database(args.postgres, db_name)
        cbstop(["migrate", "--database-url", url], env)
        took = cbstop(["load", str(world_file), "--database-url", url], env)
        log(f"world {args.size} loaded in {took:.1f}s")
        if not args.sqlite:
            vacuum_analyze(url)
        aim = targets(url, rng, args.ids)
        port = free_port()
        server = Server("cbstop", serve_argv(url, port, 1), env, port, work / "server.log")
        server.start()
        server.wait_ready()
        client = RawClient(port)
        results: list[Comparison] = []
        try:
            for scope in args.scopes:
                key = keys(world)[scope]
                for method in args.methods:
                    if method == "GET":
                        pair = (aim.integrations_elsewhere, aim.integrations_nowhere)
                        make = [[(i, _get(port, key, i)) for i in ids] for ids in pair]
                    elif method == "PATCH":
                        pair = (aim.integrations_elsewhere, aim.integrations_nowhere)
                        make = [[(i, _patch(port, key, i)) for i in ids] for ids in pair]
                    else:
                        pair = (aim.organisations_elsewhere, aim.organisations_nowhere)
                        merchants = world.org_key_merchants
                        make = [[(o, _post(port, key, o, merchants)) for o in ids] for ids in pair]
                    result = compare(
                        client,
                        scope=scope,
                        method=method,
                        elsewhere=make[0],
                        nowhere=make[1],
                        requests=args.requests,
                        warmup=args.warmup,
                        rng=rng,
                    )
                    log(
                        f"{scope:12} {method:4} elsewhere {result.elsewhere_median_us:7.1f} us  "
                        f"nowhere {result.nowhere_median_us:7.1f} us  z {result.z:+6.2f}"
                    )
                    results.append(result)
        finally:
            client.close()
        return {
            "database": "sqlite" if args.sqlite else "postgresql",
            "size": args.size,
            "requests": args.requests,
            "warmup": args.warmup,
            "seed": args.seed,
            "build": build_identity(cbstop_command(), env, work),
            "loadavg": os.getloadavg()[0],
            "comparisons": [asdict(r) for r in results],
        }
    finally:
        if server is not None:
            server.stop()
        if not args.sqlite:
            drop_database(args.postgres, db_name)
        shutil.rmtree(work, ignore_errors=True)


def table(out: dict[str, Any]) -> str:
    build = out["build"]
    lines = [
        f"{out['database']}, world {out['size']}, {out['requests']} interleaved pairs each "
        f"(load average {out['loadavg']:.1f}); cbstop from {build['source']} "
        f"at {build['commit']}",
        "",
        "| key | request | elsewhere p50 µs | nowhere p50 µs | difference µs | z |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in out["comparisons"]:
        lines.append(
            f"| {c['scope']} | {c['method']} | {c['elsewhere_median_us']:.1f} | "
            f"{c['nowhere_median_us']:.1f} | {c['difference_us']:+.1f} | {c['z']:+.2f} |"
        )
    return "\n".join(lines)


def _list(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        wrong = [c for c in chosen if c not in allowed]
        if wrong or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return chosen

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.timing",
        description="Median latency and Mann-Whitney z of a 404 for another tenant's "
        "integration (GET) or organisation (POST) against one that exists nowhere. "
        "Noisy by nature: not a CI gate.",
    )
    p.add_argument("--requests", type=int, default=3000, help="pairs measured (default 3000)")
    p.add_argument("--warmup", type=int, default=300, help="unrecorded pairs first (300)")
    p.add_argument("--size", type=parse_size, default=1000, help="world size (default 1k)")
    p.add_argument(
        "--scopes",
        type=_list(SCOPES),
        default=list(SCOPES),
        help="keys to use: organisation,partner,group (default all)",
    )
    p.add_argument(
        "--methods", type=_list(METHODS), default=list(METHODS), help="GET,POST,PATCH (all)"
    )
    p.add_argument(
        "--ids",
        type=int,
        default=8,
        help="ids per side, used in turn, so no one id's own cost decides (default 8)",
    )
    p.add_argument("--sqlite", action="store_true", help="serve a SQLite file instead")
    p.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL, no database")
    p.add_argument("--seed", type=int, default=1, help="of the ids and the pair orders")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = p.parse_args(argv)
    try:
        out = measure(args)
    except BenchError as exc:
        print(f"timing: error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() if args.json else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
