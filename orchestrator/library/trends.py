"""Per-scenario trends and steps: how a setup's figures moved from run to run.

A *setup* is what makes runs repetitions of one another (scenario, profile, backend,
kernel, N, BYTES, family: ``RunEntry.setup``). For every scenario, each setup is one
series per checkpoint: the run's total bytes per connection, in time order.

A *step* (asv's regression detection, simplified to what a handful of runs supports):
a run whose figure lies outside the spread (min..max) of the earlier runs of the same
setup, widened by a tolerance (``REL_TOL`` of their median, at least ``ABS_TOL`` bytes:
slab pages fill in whole objects, so a few bytes per connection move between runs).
It needs ``MIN_HISTORY`` earlier runs: with one, there is no spread to leave.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .catalog import RunEntry

MIN_HISTORY = 2
REL_TOL = 0.02
ABS_TOL = 16.0


@dataclass(frozen=True)
class Step:
    """A figure beyond the spread of its setup's earlier runs."""

    scenario: str
    setup: str
    checkpoint: str
    run_id: str
    path: str
    value: float
    low: float  # spread of the earlier runs
    high: float
    median: float  # of the earlier runs
    earlier: int  # how many earlier runs

    @property
    def change(self) -> float:
        return self.value - self.median

    @property
    def direction(self) -> str:
        return "up" if self.change > 0 else "down"

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "setup": self.setup, "checkpoint": self.checkpoint,
                "run_id": self.run_id, "path": self.path, "value": self.value,
                "earlier_min": self.low, "earlier_max": self.high,
                "earlier_median": self.median, "earlier_runs": self.earlier,
                "change": self.change}


def tolerance(median: float) -> float:
    return max(REL_TOL * abs(median), ABS_TOL)


def step_indexes(values: list[float], min_history: int = MIN_HISTORY) -> list[int]:
    """Indexes of the values outside the widened spread of all values before them."""
    out = []
    for i in range(min_history, len(values)):
        earlier = values[:i]
        tol = tolerance(statistics.median(earlier))
        if values[i] < min(earlier) - tol or values[i] > max(earlier) + tol:
            out.append(i)
    return out


@dataclass
class Series:
    """One setup's runs of a scenario, oldest first."""

    key: tuple[Any, ...]
    name: str
    entries: list[RunEntry] = field(default_factory=list)

    def values(self, checkpoint: str) -> list[tuple[RunEntry, float]]:
        return [(e, e.figures[checkpoint]) for e in self.entries if checkpoint in e.figures]


@dataclass
class ScenarioTrend:
    scenario: str
    checkpoints: list[str]
    series: list[Series]
    steps: list[Step]

    @property
    def runs(self) -> int:
        return sum(len(s.entries) for s in self.series)


def scenario_trends(entries: list[RunEntry]) -> dict[str, ScenarioTrend]:
    """Scenario -> its series (complete runs only) and steps, scenarios by name."""
    by_scenario: dict[str, dict[tuple[Any, ...], Series]] = {}
    for e in sorted(entries, key=lambda e: (e.started or 0, e.run_id)):
        if e.status != "complete" or not e.figures:
            continue
        series = by_scenario.setdefault(e.scenario, {})
        key = e.setup()
        if key not in series:
            series[key] = Series(key, e.setup_name())
        series[key].entries.append(e)
    out = {}
    for scenario in sorted(by_scenario):
        series = list(by_scenario[scenario].values())
        checkpoints: list[str] = []
        for s in series:
            for e in s.entries:
                checkpoints += [c for c in e.figures if c not in checkpoints]
        steps = []
        for s in series:
            for cp in checkpoints:
                points = s.values(cp)
                values = [v for _, v in points]
                for i in step_indexes(values):
                    earlier = values[:i]
                    e = points[i][0]
                    steps.append(Step(scenario, s.name, cp, e.run_id, e.path, values[i],
                                      min(earlier), max(earlier), statistics.median(earlier), i))
        out[scenario] = ScenarioTrend(scenario, checkpoints, series, steps)
    return out
