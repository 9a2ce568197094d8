"""Comparing two builds: the baseline's scenarios paired with the current build's in every round,
and the before/after rows (median req/s of each, current ÷ baseline, every round, a mark under
0.95: issue 8's "no more than 5% below before").

Pure functions of jobs and measurements, tested on synthetic numbers in
tests/bench/test_compare.py; `bench.run --baseline` starts the servers, `report.markdown`
renders the rows.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.report import (
    BASELINE,
    BASELINE_SQLITE,
    CBSTOP,
    CBSTOP_SQLITE,
    SCENARIO_LABELS,
    SCENARIO_TWINS,
    Measurement,
)

T = TypeVar("T")

# Each current-build server and the baseline server on the same database beside it.
COUNTERPART = {CBSTOP: BASELINE, CBSTOP_SQLITE: BASELINE_SQLITE}
DATABASE = {CBSTOP: "postgresql", CBSTOP_SQLITE: "sqlite"}
# "No more than 5% below before".
THRESHOLD = 0.95


def paired_units(items: Sequence[T], key: Callable[[T], tuple[str, str]]) -> list[list[T]]:
    """The items to schedule, each current-build one with its baseline twin right after it,
    and a scenario of SCENARIO_TWINS right after the scenario it is measured against (on the
    same server: patch_if_match after patch), so a ratio's two sides meet the same machine.

    `key` gives an item's (server kind, scenario). Without a baseline or twins every unit is
    one item, in the order given.
    """
    by_key = {key(item): item for item in items}
    twins = {(COUNTERPART[kind], scenario) for kind, scenario in by_key if kind in COUNTERPART}
    units: list[list[T]] = []
    for item in items:
        kind, scenario = key(item)
        if (kind, scenario) in twins:
            continue  # scheduled with its current-build twin
        twin = by_key.get((COUNTERPART.get(kind, ""), scenario))
        units.append([item] if twin is None else [item, twin])
    # Then each scenario's unit joins its reference's (same server kind), if that one runs.
    heads = {key(unit[0]): unit for unit in units}
    joined: list[list[T]] = []
    for unit in units:
        kind, scenario = key(unit[0])
        reference = heads.get((kind, SCENARIO_TWINS.get(scenario, "")))
        if reference is not None and reference is not unit:
            reference.extend(unit)
        else:
            joined.append(unit)
    return joined


def round_order(units: Sequence[Sequence[T]], round_: int) -> list[T]:
    """The order of one round: the units rotated by one per round, each unit reversed on odd
    rounds (a pair's two builds swapped, a scenario and its twin swapped).

    The rotation is the harness's own (drift on a shared machine hits every scenario alike).
    A pair runs back to back so both builds meet the same machine, and who goes first
    alternates by round so neither always inherits the other's leftovers: a warmer cache, or
    an organisation a few thousand creates larger.
    """
    if not units:
        return []
    shift = round_ % len(units)
    rotated = [*units[shift:], *units[:shift]]
    return [item for unit in rotated for item in (unit[::-1] if round_ % 2 else unit)]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(current: float | None, baseline: float | None) -> float | None:
    return round(current / baseline, 3) if current is not None and baseline else None


@dataclass(frozen=True)
class Comparison:
    """One scenario at one size on one database: req/s of every round on both builds."""

    size: int
    database: str
    scenario: str
    baseline: list[float]
    current: list[float]

    @property
    def baseline_rps(self) -> float | None:
        return _median(self.baseline)

    @property
    def current_rps(self) -> float | None:
        return _median(self.current)

    @property
    def ratio(self) -> float | None:
        """Median current ÷ median baseline."""
        return _ratio(self.current_rps, self.baseline_rps)

    @property
    def below(self) -> bool | None:
        """Whether the current build is more than 5% below the baseline (None: no ratio)."""
        return None if self.ratio is None else self.ratio < THRESHOLD

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "database": self.database,
            "scenario": self.scenario,
            "baseline_rps": self.baseline_rps,
            "current_rps": self.current_rps,
            "ratio": self.ratio,
            "below": self.below,
            "rounds": [
                {"baseline": b, "current": c, "ratio": _ratio(c, b)}
                for b, c in zip(self.baseline, self.current, strict=False)
            ],
        }


def compare(measurements: list[Measurement]) -> list[Comparison]:
    """A row for every current-build scenario that the baseline also ran."""
    table = {(m.size, m.server, m.scenario): m for m in measurements}
    order = list(SCENARIO_LABELS)
    rows: list[Comparison] = []
    for (size, server, scenario), current in table.items():
        twin = table.get((size, COUNTERPART.get(server, ""), scenario))
        if twin is None:
            continue
        rows.append(
            Comparison(
                size,
                DATABASE[server],
                scenario,
                [r.rps for r in twin.repeats],
                [r.rps for r in current.repeats],
            )
        )
    rank = {db: i for i, db in enumerate(DATABASE.values())}
    rows.sort(
        key=lambda r: (
            r.size,
            rank[r.database],
            order.index(r.scenario) if r.scenario in order else len(order),
            r.scenario,
        )
    )
    return rows
