"""CPU per check of the Redis rate-limit store, by number of concurrent callers.

    python -m bench.ratelimit_store [--redis URL] [--checks N] [CALLERS ...]

Each caller admits one key after another (both limits on, a quota never reached) against the
machine's Redis, on uvloop as the server runs; the CPU is this process's alone (Redis's own
is not counted). The keys are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis
import uvloop

from cbstop.ratelimit.policy import Limit
from cbstop.ratelimit.redis_store import RedisStore
from cbstop.settings import Settings


async def measure(url: str, checks: int, callers: list[int]) -> None:
    prefix = "bench-store-" + uuid.uuid4().hex
    settings = Settings(redis_url=url, redis_prefix=prefix)
    running = [0]
    # As in the server: a batch waits for company only while other checks are in flight.
    store = RedisStore(settings, Limit(10**7, 60), Limit(20, 60), lambda: running[0] > 1)
    await store.start()
    try:
        for count in callers:

            async def caller(k: int, count: int = count) -> None:
                for _ in range(checks // count):
                    admission = await store.admit(f"10.0.0.{k}", f"org{k}|GET /v1/x")
                    if admission is None or admission.quota is None:
                        raise SystemExit(f"Redis did not answer: {store.last_error}")

            running[0] = count
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(caller(k) for k in range(count)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{count:4d} concurrent callers: {cpu / checks * 1e6:6.1f} us CPU per check, "
                f"{wall / checks * 1e6:7.1f} us wall"
            )
    finally:
        await store.close()
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match="{" + prefix + "}:*"))
            if keys:
                client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("callers", nargs="*", type=int, default=[1, 4, 16, 50])
    args = parser.parse_args()
    uvloop.run(measure(args.redis, args.checks, args.callers))


if __name__ == "__main__":
    main()
