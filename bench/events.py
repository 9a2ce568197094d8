"""Events for the benchmark's worlds (issue 13): a loaded world has none, so after `cbstop load`
the harness writes them straight in SQL, already numbered and fanned out.

`GET /v1/events` is measured at the 1M world with 1M events: as many events as integrations,
spread over the world's organisations and integrations (one per integration, in the random
order of their ids, so every organisation's events are spread over the whole sequence), every
fifth an `integration.updated` (its `previous_attributes` a name), `data` the integration as
the API represents it (CONTRACT 3.4). `seq` runs 1..N in `created_at` order over the last day
(inside every retention the server purges by). `event_log` is set to N numbered and N fanned
out, so the sequencer finds nothing to do and no webhook delivery is made for them.

A database whose schema has no events (a baseline build from before issue 13) is left as it is.

    python -m bench.events postgresql://postgres@127.0.0.1:5432/db [--events N]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time

import psycopg

from bench.procs import log

# Events are spread over this span before now: far inside the 30-day retention, so the purge
# running in every server leaves them alone.
SPAN_US = 86_400 * 1_000_000

# %(n)s events, %(now)s now (µs), %(step)s µs between two events (psycopg's placeholders, so
# `%%` is SQL's `%`). Integrations are numbered in id order (ids are random, so organisations
# interleave); event g is about integration (g - 1) % count + 1. Inserted in `seq` order, so
# the table's rows lie in time order as a live system's do.
POSTGRES = """
WITH merchants AS (
    SELECT integration_id, json_agg(merchant_id ORDER BY position) AS ids
    FROM integration_merchants GROUP BY integration_id
), numbered AS (
    SELECT row_number() OVER (ORDER BY i.id) AS n, i.id, i.organisation_id, i.partner_id,
           json_build_object(
               'id', i.id, 'organisation_id', i.organisation_id, 'name', i.name,
               'type', i.type, 'status', i.status,
               'merchant_ids', COALESCE(m.ids, '[]'::json),
               'links', json_build_array(json_build_object(
                   'rel', 'self', 'uri', '/v1/integrations/' || i.id))) AS object
    FROM integrations i LEFT JOIN merchants m ON m.integration_id = i.id
), total AS (
    SELECT count(*) AS n FROM integrations
)
INSERT INTO events (id, seq, created_at, type, organisation_id, partner_id, integration_id,
                    data, request_id, idempotency_key, actor_type)
SELECT 'evt_' || left(md5('bench-event-' || g), 22), g,
       %(now)s - (%(n)s - g) * %(step)s,
       CASE WHEN g %% 5 = 0 THEN 'integration.updated' ELSE 'integration.created' END,
       i.organisation_id, i.partner_id, i.id,
       CASE WHEN g %% 5 = 0
           THEN json_build_object('object', i.object,
                                  'previous_attributes', json_build_object('name', 'Renamed ' || g))
           ELSE json_build_object('object', i.object) END::text,
       'bench-' || g,
       CASE WHEN g %% 7 = 0 THEN 'bench-key-' || g END,
       CASE WHEN g %% 3 = 0 THEN 'partner' ELSE 'organisation' END
FROM generate_series(1, %(n)s::bigint) g
JOIN numbered i ON i.n = (g - 1) %% (SELECT n FROM total) + 1
ORDER BY g
"""

# The same for SQLite (named parameters :n, :now, :step): a recursive CTE stands in for
# generate_series; json() keeps a nested value JSON (not a string) through the subquery.
SQLITE = """
WITH RECURSIVE series(g) AS (
    SELECT 1 UNION ALL SELECT g + 1 FROM series WHERE g < :n
), numbered AS (
    SELECT row_number() OVER (ORDER BY i.id) AS n, i.id, i.organisation_id, i.partner_id,
           json_object(
               'id', i.id, 'organisation_id', i.organisation_id, 'name', i.name,
               'type', i.type, 'status', i.status,
               'merchant_ids', json((SELECT json_group_array(merchant_id) FROM (
                   SELECT merchant_id FROM integration_merchants m
                   WHERE m.integration_id = i.id ORDER BY m.position))),
               'links', json_array(json_object('rel', 'self', 'uri', '/v1/integrations/' || i.id))
           ) AS object
    FROM integrations i
), total AS (
    SELECT count(*) AS n FROM integrations
)
INSERT INTO events (id, seq, created_at, type, organisation_id, partner_id, integration_id,
                    data, request_id, idempotency_key, actor_type)
SELECT 'evt_' || lower(hex(randomblob(11))), s.g, :now - (:n - s.g) * :step,
       CASE WHEN s.g % 5 = 0 THEN 'integration.updated' ELSE 'integration.created' END,
       i.organisation_id, i.partner_id, i.id,
       CASE WHEN s.g % 5 = 0
           THEN json_object('object', json(i.object),
                            'previous_attributes', json_object('name', 'Renamed ' || s.g))
           ELSE json_object('object', json(i.object)) END,
       'bench-' || s.g,
       CASE WHEN s.g % 7 = 0 THEN 'bench-key-' || s.g END,
       CASE WHEN s.g % 3 = 0 THEN 'partner' ELSE 'organisation' END
FROM series s
JOIN numbered i ON i.n = (s.g - 1) % (SELECT n FROM total) + 1
ORDER BY s.g
"""

# Nothing for the sequencer to number or fan out: every generated event is both.
SETTLED = "UPDATE event_log SET last_seq = {n}, fanned_out = {n} WHERE id = 1"


def _sqlite_path(url: str) -> str | None:
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else None


def has_events(url: str) -> bool:
    """Whether the database's schema has the events table (issue 13's migration)."""
    path = _sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            return found is not None
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
        return bool(row and row[0])


def generate_events(url: str, count: int | None = None, now_us: int | None = None) -> int:
    """Write `count` events (default: one per integration) into the freshly loaded, event-less
    database at `url`, numbered 1..count, and mark them numbered and fanned out; ANALYZE.
    Returns how many were written (0 if the schema has no events)."""
    if not has_events(url):
        log(f"no events table in {url}: no events generated (a build from before issue 13)")
        return 0
    now = now_us if now_us is not None else time.time_ns() // 1000
    path = _sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            if count is None:
                count = int(conn.execute("SELECT count(*) FROM integrations").fetchone()[0])
            if count:
                conn.execute(SQLITE, {"n": count, "now": now, "step": max(1, SPAN_US // count)})
            conn.execute(SETTLED.format(n=count))
            conn.execute("ANALYZE")
        return count
    with psycopg.connect(url) as conn:
        if count is None:
            row = conn.execute("SELECT count(*) FROM integrations").fetchone()
            count = int(row[0]) if row else 0
        if count:
            conn.execute(POSTGRES, {"n": count, "now": now, "step": max(1, SPAN_US // count)})
        conn.execute(SETTLED.format(n=count))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE events")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.events", description="Generate events in a loaded world."
    )
    parser.add_argument("url", help="the database (postgresql://... or sqlite:///...)")
    parser.add_argument("--events", type=int, default=None, help="default: one per integration")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    n = generate_events(args.url, args.events)
    print(f"{n} events in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
