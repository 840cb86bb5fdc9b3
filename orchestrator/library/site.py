"""``tcplab site``: every run of a library as one static, self-contained site.

Layout of the output folder (every link relative, nothing fetched from outside)::

    index.html                      all runs: sortable, filterable; trends, comparisons, steps
    runs/<run path>/report.html     each run's own report (copied, or rendered when missing)
    trends/<scenario>.html          per-connection figures by checkpoint, run after run
    compare/<scenario>-<N>-<BYTES>-<family>.html   runs of one scenario and size compared
    manifest.json                   what each page was made from (for incremental rebuilds)

Incremental: ``manifest.json`` records, per run, its result's mtime, size and sha256 and
its catalog row, and per page a key (the sha256 of its inputs and ``SITE_VERSION``).
A rebuild reads only results whose mtime or size changed, renders only pages whose key
changed, always rewrites the index (cheap: no chart), and removes pages whose runs are
gone. ``--force`` renders everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..report.html import REPORT_FILE, environment, render_html, write_text_atomic
from ..results import RESULT_FILE, load_result
from ..results.model import Result
from . import catalog, trend_chart, trends
from .catalog import RunEntry

SITE_VERSION = "1"  # bump when pages change shape: every page is rendered again
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "tcplab.site/1"


@dataclass
class BuildStats:
    runs: int = 0
    read: int = 0  # results read (new or changed)
    rendered: list[str] = field(default_factory=list)
    reused: int = 0
    removed: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.runs} runs ({self.read} read); {len(self.rendered)} page"
                f"{'s' if len(self.rendered) != 1 else ''} rendered, {self.reused} unchanged, "
                f"{self.removed} removed; {self.seconds:.1f} s")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(*parts: Any) -> str:
    return _sha(json.dumps([SITE_VERSION, *parts], sort_keys=True, default=str).encode())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def report_href(entry: RunEntry) -> str:
    return f"runs/{entry.path}/{REPORT_FILE}"


def trend_href(scenario: str) -> str:
    return f"trends/{slug(scenario)}.html"


def compare_key(e: RunEntry) -> tuple[Any, ...]:
    return (e.scenario, e.connections, e.nbytes, e.family)


def compare_href(key: tuple[Any, ...]) -> str:
    scenario, n, nbytes, family = key
    return f"compare/{slug(scenario)}-N{n}-B{nbytes}-{family}.html"


# -- reading the library, incrementally -----------------------------------------------------

class Library:
    """The runs below ``results``, read through the previous manifest's cache."""

    def __init__(self, results: Path, cached: dict[str, Any]) -> None:
        self.results = results
        self.entries: list[RunEntry] = []
        self.shas: dict[str, str] = {}  # run path -> sha256 of result.json
        self.records: dict[str, Any] = {}
        self.read = 0
        self._loaded: dict[str, Result] = {}
        for run, origin in catalog.run_dirs(results):
            rel = run.relative_to(results).as_posix()
            path = run / RESULT_FILE
            try:
                st = path.stat()
                stamp = f"{st.st_mtime_ns}:{st.st_size}"
            except OSError:
                stamp = "missing"
            old = cached.get(rel)
            if old and old.get("stamp") == stamp and stamp != "missing":
                entry = _entry_from_json(old["entry"])
                sha = old["sha"]
            else:
                entry, result = catalog.read_entry(run, results, origin)
                sha = _sha(path.read_bytes()) if stamp != "missing" else ""
                if result is not None:
                    self._loaded[rel] = result
                self.read += 1
            self.entries.append(entry)
            self.shas[rel] = sha
            self.records[rel] = {"stamp": stamp, "sha": sha, "entry": entry.to_json()}
        self.entries.sort(key=lambda e: (e.started or 0, e.run_id))

    def result(self, entry: RunEntry) -> Result:
        if entry.path not in self._loaded:
            self._loaded[entry.path] = load_result(self.results / entry.path)
        return self._loaded[entry.path]


def _entry_from_json(d: dict[str, Any]) -> RunEntry:
    d = {k: v for k, v in d.items() if k != "when_utc"}
    d["kernels"] = tuple(d.get("kernels") or ())
    return RunEntry(**d)


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not out.exists():
        return {}
    if not path.is_file():
        if any(out.iterdir()):
            raise InputError(f"{out}: exists and is not a tcplab site (no {MANIFEST}); choose "
                             "another -o DIR (the site never writes into other folders)")
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # unreadable: rebuild everything
    return data if data.get("schema") == MANIFEST_SCHEMA else {}


# -- pages ------------------------------------------------------------------------------------

@dataclass
class Page:
    path: str
    key: str
    render: Any  # () -> str, or a Path to copy


def _pages(lib: Library) -> list[Page]:
    pages: list[Page] = []
    ok = [e for e in lib.entries if e.status != "failed"]
    for e in ok:
        existing = lib.results / e.path / REPORT_FILE
        if existing.is_file():
            pages.append(Page(report_href(e), _key("copy", _sha(existing.read_bytes())), existing))
        else:
            pages.append(Page(report_href(e), _key("render", lib.shas[e.path]),
                              lambda e=e: render_html(lib.result(e))))
    trend_set = trends.scenario_trends(lib.entries)
    for scenario, trend in trend_set.items():
        inputs = [(e.path, lib.shas[e.path]) for s in trend.series for e in s.entries]
        pages.append(Page(trend_href(scenario), _key("trend", inputs),
                          lambda t=trend: render_trend(t, compare_links(lib.entries))))
    for ckey, runs in comparisons(lib.entries).items():
        inputs = [(e.path, lib.shas[e.path]) for e in runs]
        pages.append(Page(compare_href(ckey), _key("compare", inputs),
                          lambda k=ckey, r=runs: render_comparison(lib, k, r)))
    return pages


def comparisons(entries: list[RunEntry]) -> dict[tuple[Any, ...], list[RunEntry]]:
    """(scenario, N, BYTES, family) -> its complete runs, where there are at least two."""
    groups: dict[tuple[Any, ...], list[RunEntry]] = {}
    for e in entries:
        if e.status == "complete":
            groups.setdefault(compare_key(e), []).append(e)
    return {k: v for k, v in sorted(groups.items(), key=lambda kv: str(kv[0])) if len(v) >= 2}


def compare_links(entries: list[RunEntry]) -> dict[str, list[tuple[str, str]]]:
    """Scenario -> [(title, href)] of its comparison pages."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key, runs in comparisons(entries).items():
        scenario, n, nbytes, family = key
        title = f"N={n:,} · BYTES={nbytes:,}{' · ' + family if family != 'ipv4' else ''} " \
                f"({len(runs)} runs)"
        out.setdefault(scenario, []).append((title, compare_href(key)))
    return out


def render_trend(trend: trends.ScenarioTrend, links: dict[str, list[tuple[str, str]]]) -> str:
    rows = []
    for i, s in enumerate(trend.series):
        for e in s.entries:
            rows.append({"e": e, "series": trend_chart.series_name(trend, s.name), "colour": trend_chart.colour(i),
                         "href": "../" + report_href(e),
                         "values": [e.figures.get(cp) for cp in trend.checkpoints]})
    steps = {(st.path, st.checkpoint) for st in trend.steps}
    return environment().get_template("site_trend.html.j2").render(
        t=trend, chart=trend_chart.trend_svg(trend), legend=trend_chart.legend_rows(trend),
        rows=rows, steps=steps, step_list=trend.steps, tol=trends,
        comparisons=[(title, "../" + href) for title, href in links.get(trend.scenario, [])],
        index="../index.html", report_href=lambda path: f"../runs/{path}/{REPORT_FILE}")


def render_comparison(lib: Library, key: tuple[Any, ...], runs: list[RunEntry]) -> str:
    from ..report.compare_charts import render_html as compare_html

    links = {"index": "../index.html", "trend": "../" + trend_href(key[0]),
             "runs": {e.run_id: "../" + report_href(e) for e in reversed(runs)}}
    return compare_html([lib.result(e) for e in runs], links)


def render_index(lib: Library, trend_set: dict[str, trends.ScenarioTrend]) -> str:
    entries = list(reversed(lib.entries))  # newest first
    values = {name: sorted({getattr(e, attr) for e in entries})
              for name, attr in (("scenario", "scenario"), ("profile", "profile"),
                                 ("backend", "backend"), ("kernel", "kernel"),
                                 ("origin", "origin"), ("status", "status"))}
    steps = [st for t in trend_set.values() for st in t.steps]
    return environment().get_template("site_index.html.j2").render(
        entries=entries, values=values, trends=trend_set, steps=steps,
        comparisons=compare_links(lib.entries), report_href=report_href,
        trend_href=trend_href, built=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        counts={k: len(v) for k, v in values.items()})


# -- building ---------------------------------------------------------------------------------

def _write(out: Path, rel: str, page: Page) -> None:
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(page.render, Path):
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(page.render, tmp)
        os.replace(tmp, target)
    else:
        write_text_atomic(target, page.render())


def _remove(out: Path, rel: str) -> None:
    target = out / rel
    try:
        target.unlink()
    except FileNotFoundError:
        return
    parent = target.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def build_site(results: Path, out: Path, force: bool = False) -> BuildStats:
    """Build (or bring up to date) the site of ``results`` in ``out``."""
    start = time.monotonic()
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise InputError(f"{results}: no such results folder; run a scenario first (make lab) "
                         "or pass the folder holding your runs")
    if out.resolve() == results.resolve() or (out / RESULT_FILE).exists():
        raise InputError(f"-o {out}: choose a folder of its own for the site")
    manifest = _read_manifest(out)
    if force:
        manifest = {}
    lib = Library(results, manifest.get("runs", {}))
    stats = BuildStats(runs=len(lib.entries), read=lib.read)
    out.mkdir(parents=True, exist_ok=True)
    old_pages: dict[str, str] = manifest.get("pages", {})
    new_pages: dict[str, str] = {}
    for page in _pages(lib):
        if old_pages.get(page.path) == page.key and (out / page.path).is_file():
            stats.reused += 1
        else:
            _write(out, page.path, page)
            stats.rendered.append(page.path)
        new_pages[page.path] = page.key
    for rel in sorted(set(old_pages) - set(new_pages)):
        _remove(out, rel)
        stats.removed += 1
    trend_set = trends.scenario_trends(lib.entries)
    write_text_atomic(out / "index.html", render_index(lib, trend_set))
    stats.rendered.append("index.html")
    doc = {"schema": MANIFEST_SCHEMA, "site_version": SITE_VERSION,
           "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": str(results), "runs": lib.records, "pages": new_pages,
           "steps": [st.to_json() for t in trend_set.values() for st in t.steps]}
    write_text_atomic(out / MANIFEST, json.dumps(doc, indent=1) + "\n")
    stats.seconds = time.monotonic() - start
    return stats
