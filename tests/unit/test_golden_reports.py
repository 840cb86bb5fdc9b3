"""Every stored result re-renders byte-identical to the output kept in
tests/data/results/golden/ (made by the code before the typed result model): the
terminal report (table, markdown; json is the stored file itself), the HTML report, the comparisons the tests
make, the kernel comparison, repetition summary and the bundle's rerun settings.

Regenerate (only when a report is meant to change):
``.venv/bin/python -m tests.unit.test_golden_reports``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import bundle, cli, repeats
from orchestrator.report import html as report_html
from orchestrator.report import kernels as kernels_compare
from orchestrator.results import load_result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
GOLDEN = RESULTS / "golden"
RUNS = sorted(p.name for p in RESULTS.iterdir() if (p / "result.json").is_file())
C2S, TIMEWAIT, S2C, S2C_SMALL = RUNS[0], RUNS[1], RUNS[2], RUNS[3]
VM, DOCKER, VM_C2S, HOST_C2S = RUNS[4], RUNS[5], RUNS[6], RUNS[7]
PAIRS = {"s2c-pair": (S2C, S2C_SMALL), "vm-docker": (VM, DOCKER),
         "netns-docker": (C2S, DOCKER), "netns-vm": (C2S, VM),
         "c2s-kernels": (VM_C2S, HOST_C2S), "timewait-c2s": (TIMEWAIT, C2S)}
KERNEL_SETS = {"c2s-6.1-host": (VM_C2S, HOST_C2S), "idle-6.1-host": (VM, C2S)}


def _cli(*argv: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(list(argv)) == 0
    return buf.getvalue()


def outputs() -> dict[str, Callable[[], str]]:
    """File name in GOLDEN -> how to render it now."""
    out: dict[str, Callable[[], str]] = {}
    for run in RUNS:
        path = str(RESULTS / run)
        for form in ("table", "markdown"):
            out[f"{run}.report.{form}.txt"] = lambda p=path, f=form: _cli("report", p, "--format", f)
        out[f"{run}.report.html.gz"] = lambda p=path: report_html.render_html(load_result(Path(p)))
        out[f"{run}.per_side.txt"] = lambda p=path: str(
            kernels_compare.per_side_text(load_result(Path(p))))
        out[f"{run}.rerun.json"] = lambda p=path: json.dumps(
            {"rerun": bundle.rerun_settings(load_result(Path(p))),
             "scenario": bundle.scenario_document(
                 json.loads((Path(p) / "result.json").read_text())["scenario"])},
            indent=1)
    for name, (a, b) in PAIRS.items():
        for form in ("table", "markdown", "json", "html"):
            out[f"compare.{name}.{form}.txt"] = lambda a=a, b=b, f=form: _cli(
                "compare", str(RESULTS / a), str(RESULTS / b), "--format", f)
    out["compare.all.table.txt"] = lambda: _cli("compare", str(RESULTS), "--format", "table")
    for name, runs in KERNEL_SETS.items():
        out[f"kernels.{name}.txt"] = lambda runs=runs: kernels_compare.render(
            kernels_compare.compare([load_result(RESULTS / r) for r in runs]))
        out[f"kernels.{name}.md"] = lambda runs=runs: kernels_compare.render(
            kernels_compare.compare([load_result(RESULTS / r) for r in runs]), "github")
    out["repeats.all.txt"] = lambda: repeats.render(
        repeats.summarize([load_result(RESULTS / r) for r in RUNS]))
    return out


@pytest.mark.parametrize("run", RUNS)
def test_report_json_is_the_stored_file(run: str) -> None:
    """``tcplab report --format json`` prints the result exactly as stored (its golden
    output is the file itself)."""
    assert _cli("report", str(RESULTS / run), "--format", "json") == \
        (RESULTS / run / "result.json").read_text()


def _read(name: str) -> str:
    path = GOLDEN / name
    data = path.read_bytes()
    return (gzip.decompress(data) if name.endswith(".gz") else data).decode()


def _write(name: str, text: str) -> None:
    data = text.encode()
    (GOLDEN / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


@pytest.mark.parametrize("name", sorted(outputs()))
def test_rerenders_byte_identical(name: str) -> None:
    got, want = outputs()[name](), _read(name)
    if got != want:
        lines_got, lines_want = got.splitlines(), want.splitlines()
        first = next((i for i, (x, y) in enumerate(zip(lines_got, lines_want, strict=False)) if x != y),
                     min(len(lines_got), len(lines_want)))
        pytest.fail(f"{name} differs from its golden output at line {first + 1}:\n"
                    f"  now:    {lines_got[first] if first < len(lines_got) else '<end>'}\n"
                    f"  golden: {lines_want[first] if first < len(lines_want) else '<end>'}")


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for name, render in outputs().items():
        _write(name, render())
    print(f"{len(outputs())} golden files in {GOLDEN}")
