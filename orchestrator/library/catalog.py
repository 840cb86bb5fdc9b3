"""The runs of a results folder: scan, summarise, filter (``tcplab runs``).

A library is a results folder: local runs are ``results/<run-id>/``, a colleague's
imported runs are ``results/imported/<origin>/<run-id>/`` (importing.py). ``scan`` reads
every ``result.json`` once into a flat ``RunEntry`` (one table row); a run folder without
a result (the run died before writing it) or with an unreadable one is listed as
``failed`` with the reason, never skipped, so a broken run shows up where people look.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, LabError
from ..results import RESULT_FILE, load_result
from ..results.model import Result

IMPORTED = "imported"
RUN_DIR = re.compile(r"^\d{8}-\d{6}-")
STATUSES = ("complete", "incomplete", "failed")


@dataclass(frozen=True)
class RunEntry:
    """One saved run as the library lists it."""

    run_id: str
    path: str  # relative to the results folder: <run-id> or imported/<origin>/<run-id>
    origin: str = "local"
    status: str = "complete"
    started: float | None = None
    scenario: str = "?"
    profile: str = "?"
    backend: str = "?"
    kernels: tuple[str, ...] = ()
    connections: int = 0
    nbytes: int = 0
    family: str = "ipv4"
    headline: float | None = None  # bytes per connection at the last measured checkpoint
    checkpoint: str | None = None  # that checkpoint's name
    error: str | None = None
    figures: dict[str, float] = field(default_factory=dict)  # checkpoint -> total B/conn

    @property
    def when(self) -> str:
        if not self.started:
            return "–"
        return dt.datetime.fromtimestamp(self.started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")

    @property
    def kernel(self) -> str:
        return " + ".join(self.kernels) or "?"

    def setup(self) -> tuple[Any, ...]:
        """What makes two runs repetitions of one setup (as compare groups them)."""
        return (self.scenario, self.profile, self.backend, self.kernel, self.connections,
                self.nbytes, self.family)

    def setup_name(self) -> str:
        return (f"{self.scenario} · {self.profile} · {self.backend} · {self.kernel} · "
                f"N={self.connections:,} · BYTES={self.nbytes:,}"
                + (f" · {self.family}" if self.family != "ipv4" else ""))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["kernels"] = list(self.kernels)
        out["when_utc"] = self.when
        return out


def kernels_of(result: Result) -> tuple[str, ...]:
    """The kernel releases the run measured: each VM's or remote host's, else the host's."""
    cp = result.last_measured()
    releases = [s.release for s in cp.per_kernel.values() if s.release] if cp else []
    releases = list(dict.fromkeys(releases))
    if not releases and result.metadata.kernel.release:
        releases = [result.metadata.kernel.release]
    return tuple(releases)


def entry_of(result: Result, rel: str, origin: str) -> RunEntry:
    cp = result.last_measured()
    family = result.metadata.get("family") or (result.lab.get("family") if result.lab else None)
    return RunEntry(
        run_id=result.run_id, path=rel, origin=origin,
        status="complete" if result.status == "complete" else "incomplete",
        started=result.started, scenario=result.scenario.name, profile=result.profile.name,
        backend=result.metadata.backend or "?", kernels=kernels_of(result),
        connections=result.scenario.connections, nbytes=result.scenario.bytes,
        family=str(family or "ipv4"),
        headline=cp.per_connection().total if cp else None, checkpoint=cp.name if cp else None,
        error=result.error,
        figures={c.name: c.per_connection().total for c in result.measured()})


def _failed(run: Path, rel: str, origin: str, why: str) -> RunEntry:
    stamp = None
    try:
        stamp = dt.datetime.strptime(run.name[:15], "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        pass
    parts = run.name.split("-", 3)
    return RunEntry(run_id=run.name, path=rel, origin=origin, status="failed", started=stamp,
                    scenario=parts[2] if len(parts) > 2 else "?", error=why)


def run_dirs(results: Path) -> list[tuple[Path, str]]:
    """(run folder, origin) of every run below ``results``: local ones, then imported."""
    out: list[tuple[Path, str]] = []
    if not results.is_dir():
        return out
    for child in sorted(results.iterdir()):
        if child.is_dir() and (RUN_DIR.match(child.name) or (child / RESULT_FILE).is_file()):
            out.append((child, "local"))
    imported = results / IMPORTED
    if imported.is_dir():
        for origin in sorted(p for p in imported.iterdir() if p.is_dir()):
            out += [(run, origin.name) for run in sorted(origin.iterdir())
                    if run.is_dir() and (run / RESULT_FILE).is_file()]
    return out


def read_entry(run: Path, results: Path, origin: str) -> tuple[RunEntry, Result | None]:
    """One run's row (and its result when readable)."""
    rel = run.relative_to(results).as_posix()
    if not (run / RESULT_FILE).is_file():
        return _failed(run, rel, origin, "no result.json: the run stopped before writing it"), None
    try:
        result = load_result(run)
    except LabError as exc:
        return _failed(run, rel, origin, str(exc)), None
    return entry_of(result, rel, origin), result


def scan(results: Path) -> list[RunEntry]:
    """Every run below ``results``, oldest first."""
    results = Path(results)
    if not results.is_dir():
        raise InputError(f"{results}: no such results folder; run a scenario first "
                         "(make lab) or pass the folder holding your runs")
    entries = [read_entry(run, results, origin)[0] for run, origin in run_dirs(results)]
    return sorted(entries, key=lambda e: (e.started or 0, e.run_id))


# -- filters ---------------------------------------------------------------------------------

def parse_date(text: str, option: str) -> float:
    """``2026-11-26`` or ``2026-11-26 04:14`` (UTC) -> a timestamp."""
    for form in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text.strip(), form).replace(
                tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
    raise InputError(f"{option}: expected a date like 2026-11-26 or '2026-11-26 04:14' (UTC), "
                     f"got {text!r}")


def kernel_matches(release: str, wanted: str) -> bool:
    """``6.1`` matches 6.1.0-56-cloud-amd64 but not 6.18.44: whole version parts only."""
    return release == wanted or release.startswith((wanted + ".", wanted + "-"))


@dataclass
class Filters:
    """``tcplab runs`` filters: each list means any of; an empty one means all."""

    scenario: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    backend: list[str] = field(default_factory=list)
    kernel: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.status if s not in STATUSES]
        if bad:
            raise InputError(f"--status: unknown status {bad[0]!r}; expected one of "
                             f"{', '.join(STATUSES)}")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InputError("--until is before --since; nothing could match: swap them")

    def match(self, e: RunEntry) -> bool:
        checks = [(self.scenario, e.scenario), (self.profile, e.profile),
                  (self.backend, e.backend), (self.origin, e.origin), (self.status, e.status)]
        if any(wanted and value not in wanted for wanted, value in checks):
            return False
        if self.kernel and not any(kernel_matches(k, w) for k in e.kernels for w in self.kernel):
            return False
        if self.since is not None and (e.started or 0) < self.since:
            return False
        return self.until is None or (e.started or 0) < self.until

    def apply(self, entries: Iterable[RunEntry]) -> list[RunEntry]:
        return [e for e in entries if self.match(e)]


def split_values(values: list[str] | None) -> list[str]:
    """``--scenario a,b --scenario c`` -> [a, b, c]."""
    return [v for text in values or [] for v in text.replace(",", " ").split()]


def until_value(text: str) -> float:
    """--until DAY includes that whole day."""
    stamp = parse_date(text, "--until")
    return stamp + 86400 if len(text.strip()) == 10 else stamp


# -- the table ------------------------------------------------------------------------------

HEADERS = ["run", "when (UTC)", "scenario", "profile", "backend", "kernel", "N", "status",
           "B/conn", "at"]


def table_rows(entries: list[RunEntry]) -> list[list[Any]]:
    rows = []
    for e in entries:
        status = e.status.upper() if e.status != "complete" else "ok"
        rows.append([e.path, e.when, e.scenario, e.profile, e.backend, e.kernel,
                     f"{e.connections:,}" if e.connections else "–", status,
                     f"{e.headline:,.0f}" if e.headline is not None else "–",
                     e.checkpoint or "–"])
    return rows


def render_table(entries: list[RunEntry], total: int) -> str:
    from tabulate import tabulate

    if not entries:
        return f"no run matches ({total} in the library)"
    text = tabulate(table_rows(entries), HEADERS, tablefmt="simple",
                    colalign=("left",) * 6 + ("right", "left", "right", "left"))
    bad = [e for e in entries if e.status != "complete"]
    foot = f"{len(entries)} of {total} runs"
    if bad:
        foot += (f"; {len(bad)} not complete (INCOMPLETE: stopped after some checkpoints; "
                 "FAILED: no readable result)")
    return text + "\n" + foot
