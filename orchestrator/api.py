"""tcplab from Python (a notebook, a script): run, load, compare; results as tidy rows.

    from orchestrator import api
    result = api.load("results/20261126-012650-c2s-default")   # a typed Result
    rows = api.rows([result])                                   # list of flat dicts
    pandas.DataFrame(rows)                                      # as is, no reshaping

``run`` does what ``tcplab run`` does (as root) and returns the saved result; ``load``
reads a run directory or a ``result.json``; ``compare`` gives the figures ``tcplab
compare --format json`` prints. The objects are the typed, read-only model of
``orchestrator.results.model`` (``Result``, ``Checkpoint``, ``PerConnection``...).
Documented with a worked example in docs/api.md, which a test executes.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .results.model import Checkpoint, Result

#: The columns of ``rows`` (and of ``tcplab report --format csv``), in order.
COLUMNS = ("run", "scenario", "profile", "backend", "kernel", "checkpoint", "connections",
           "host", "cache", "category", "attributed", "bytes_per_connection",
           "objects_per_connection")

RunLike = Result | str | os.PathLike[str]


def load(path: str | os.PathLike[str]) -> Result:
    """A saved run: its directory (``results/<run-id>``) or its ``result.json``."""
    from .results import load_result

    return load_result(Path(path))


def run(scenario: str, *, connections: int | None = None, nbytes: int | None = None,
        profile: str | None = None, backend: str | None = None,
        lab: str | os.PathLike[str] | None = None,
        results: str | os.PathLike[str] | None = None, levels: int = 1,
        family: str = "ipv4", server: str = "blocking", quiet: bool = True,
        wait: float | None = None, link: str | None = None,
        link_engine: str = "auto") -> Result:
    """Run ``scenario`` once, as ``tcplab run`` would (needs root), and return its result.

    Arguments mirror the command's options (``connections`` is ``-n``, ``nbytes`` is
    ``--bytes``, ``results`` is ``--results``, ``wait`` is ``--wait``, ``link`` is
    ``--link`` like ``"delay=25ms rate=40mbit"``). Progress lines go
    to stderr unless ``quiet``. Bad input raises ``InputError`` before anything is
    created; a failed run raises ``RunError`` after cleaning up (its partial result is
    saved, marked incomplete).
    """
    from .plan import RunOptions, make_plan
    from .report.html import write_report
    from .run.labrun import run_plan
    from .ui import UI

    opts = RunOptions(scenario=scenario, root=Path.cwd(), profile=profile, backend=backend,
                      connections=connections, nbytes=nbytes,
                      lab_file=Path(lab) if lab is not None else None,
                      results_dir=Path(results) if results is not None else None,
                      levels=levels, family=family, server_model=server, lock_wait=wait,
                      link=link, link_engine=link_engine)
    run_dir = run_plan(make_plan(opts), UI(phases=4, quiet=quiet))
    write_report(run_dir)
    return load(run_dir)


def _result(item: RunLike) -> Result:
    return item if isinstance(item, Result) else load(item)


def compare(runs: Iterable[RunLike]) -> dict[str, Any]:
    """Runs side by side (groups of repeats, differences, sysctls and metadata that
    differ): the document ``tcplab compare --format json`` prints."""
    from .report import compare as comparing

    results = [_result(r) for r in runs]
    if len(results) < 2:
        from .errors import InputError

        raise InputError(f"compare: got {len(results)} result; pass at least two runs")
    return comparing.compare(results)


def _hosts(result: Result, cp: Checkpoint) -> list[tuple[str, Any]]:
    """(host label, PerConnection): one per measured kernel (VMs, remote hosts), else one
    for the shared kernel labelled with every host on it (``server+client``)."""
    if cp.per_kernel:
        return [("+".join(share.hosts) or label, share.per_connection)
                for label, share in cp.per_kernel.items()]
    hosts = list(result.metadata.hosts) or [h for hs in result.hosts_by_role().values()
                                            for h in hs]
    return [("+".join(hosts) or "all", cp.per_connection())]


def rows(runs: Iterable[RunLike]) -> list[dict[str, Any]]:
    """Tidy rows, one per run, measured checkpoint, host and slab cache, with the columns
    of ``COLUMNS``: ``pandas.DataFrame(api.rows(...))`` takes them as they are."""
    out: list[dict[str, Any]] = []
    for item in runs:
        result = _result(item)
        meta = result.metadata
        for cp in result.measured():
            for host, pcb in _hosts(result, cp):
                for row in pcb.by_cache:
                    out.append({
                        "run": result.run_id, "scenario": result.scenario.name,
                        "profile": result.profile.name, "backend": meta.backend,
                        "kernel": meta.kernel.release, "checkpoint": cp.name,
                        "connections": cp.connections, "host": host, "cache": row.cache,
                        "category": row.category, "attributed": row.attributed,
                        "bytes_per_connection": row.bytes_per_connection,
                        "objects_per_connection": row.objects_per_connection,
                    })
    return out


def rows_csv(runs: Iterable[RunLike]) -> str:
    """``rows`` as CSV text with a header line (``tcplab report --format csv``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(runs))
    return buf.getvalue()
