"""Issue 14's view of a run: each scenario as a fraction of its ceiling, and the p99 targets.

A ceiling is a reference doing a scenario's database work on cbstop's own pool with nothing
around it: bare get (`bench/refs/bare_get.py`) for the reads, bare write
(`bench/refs/bare_write.py`: cbstop's create statement) for the creates. The p99 targets are
SQLite's keyed POST under a fixed bound and, with `--baseline`, every scenario no worse than
the baseline build's.

Pure functions of the measurements, tested on synthetic numbers in
tests/bench/test_ceilings.py; `report.markdown` renders what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report import (
    BARE_GET,
    BARE_WRITE,
    BASELINE_OF,
    CBSTOP,
    CBSTOP_SQLITE,
    SCENARIO_LABELS,
    SQLITE_KEYED_P99_MS,
    TARGET_GET_VS_BARE,
    Measurement,
    Table,
    size_label,
)

# The ceiling of each cbstop scenario: creates against bare write, everything else against
# bare get (for PATCH and the mix, as information: no reference does their work alone).
WRITE_CEILING = frozenset({"create", "post_keyed"})
# The fractions with a target; the others are information.
CEILING_TARGETS = {"get_one": TARGET_GET_VS_BARE}


def ceiling_of(scenario: str) -> str:
    """The reference a scenario is divided by."""
    return BARE_WRITE if scenario in WRITE_CEILING else BARE_GET


@dataclass(frozen=True)
class Ceiling:
    """One cbstop scenario (on PostgreSQL) beside its ceiling at one world size."""

    size: int
    scenario: str
    rps: float
    ceiling: str
    ceiling_rps: float
    target: float | None

    @property
    def fraction(self) -> float:
        return round(self.rps / self.ceiling_rps, 3)

    @property
    def reached(self) -> bool | None:
        return None if self.target is None else self.fraction >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "scenario": self.scenario,
            "rps": self.rps,
            "ceiling": self.ceiling,
            "ceiling_rps": self.ceiling_rps,
            "fraction": self.fraction,
            "target": self.target,
            "reached": self.reached,
        }


def _order(scenario: str) -> tuple[int, str]:
    """The report's order of scenarios (SCENARIO_LABELS), unknown ones last."""
    known = list(SCENARIO_LABELS)
    return (known.index(scenario) if scenario in known else len(known), scenario)


def compute_ceilings(measurements: list[Measurement]) -> list[Ceiling]:
    """Every cbstop scenario on PostgreSQL whose ceiling ran at the same size."""
    table = Table(measurements)
    out: list[Ceiling] = []
    for n in table.sizes():
        for scenario in sorted(table.scenarios(n, CBSTOP), key=_order):
            ceiling = ceiling_of(scenario)
            rps = table.rps(n, CBSTOP, scenario)
            top = table.rps(n, ceiling, "create" if ceiling == BARE_WRITE else "get_one")
            if rps is None or not top:
                continue
            out.append(Ceiling(n, scenario, rps, ceiling, top, CEILING_TARGETS.get(scenario)))
    return out


@dataclass(frozen=True)
class LatencyTarget:
    """A median p99 that must stay within a bound: under a fixed one (`strict`), or at most
    another measurement's (the baseline build's p99 of the same scenario)."""

    name: str
    measured: str
    p99_ms: float | None
    bound: str
    bound_ms: float | None
    strict: bool

    @property
    def reached(self) -> bool | None:
        if self.p99_ms is None or self.bound_ms is None:
            return None
        if self.strict:
            return self.p99_ms < self.bound_ms
        return self.p99_ms <= self.bound_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "p99_ms": self.p99_ms,
            "bound": self.bound,
            "bound_ms": self.bound_ms,
            "strict": self.strict,
            "reached": self.reached,
        }


def _p99(table: Table, key: tuple[int, str, str]) -> float | None:
    m = table.by_key.get(key)
    return m.median()["p99_ms"] if m is not None and m.repeats else None


def compute_latency_targets(measurements: list[Measurement]) -> list[LatencyTarget]:
    """SQLite's keyed POST p99 under its bound at each size it ran; with a baseline build,
    every scenario both builds ran: p99 no worse than the baseline's."""
    table = Table(measurements)
    out: list[LatencyTarget] = []
    for n in table.sizes(CBSTOP_SQLITE):
        key = (n, CBSTOP_SQLITE, "post_keyed")
        if key in table.by_key:
            out.append(
                LatencyTarget(
                    f"POST keyed p99 (SQLite) @{size_label(n)}",
                    f"{CBSTOP_SQLITE} post_keyed @{size_label(n)}",
                    _p99(table, key),
                    f"{SQLITE_KEYED_P99_MS:g} ms",
                    SQLITE_KEYED_P99_MS,
                    strict=True,
                )
            )
    for n, server, scenario in sorted(table.by_key):
        base = BASELINE_OF.get(server)
        if base is None or (n, base, scenario) not in table.by_key:
            continue
        where = " (SQLite)" if server == CBSTOP_SQLITE else ""
        s = size_label(n)
        out.append(
            LatencyTarget(
                f"{scenario} p99 no worse than the baseline build{where} @{s}",
                f"{server} {scenario} @{s}",
                _p99(table, (n, server, scenario)),
                f"{base} {scenario} @{s}",
                _p99(table, (n, base, scenario)),
                strict=False,
            )
        )
    return out
