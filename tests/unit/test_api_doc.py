"""docs/api.md is executed: every ``python`` block, in order, in one namespace, from the top
of the checkout (the ``api.run`` block runs only as root, in tests/integration). Also: the
API's tidy rows and ``tcplab report --format csv`` agree, and importing tcplab leaves
matplotlib's backend alone."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import api, cli

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests/data/results/20261126-045425-c2s-default"  # a vm run: hosts apart


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs/api.md").read_text(), re.S)


def run_doc(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    for block in doc_blocks():
        exec(compile(block, str(REPO / "docs/api.md"), "exec"), namespace)  # noqa: S102
    return namespace


def test_api_doc_executes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pandas")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the run block: integration test
    assert len(doc_blocks()) == 4
    ns = run_doc(monkeypatch)
    out = capsys.readouterr().out
    assert "unread        2,000 connections   8,482.8 B/connection" in out
    assert ns["totals"].loc[("default", "established")] == pytest.approx(7485.4, abs=0.5)


def test_rows_are_tidy_and_match_csv(capsys: pytest.CaptureFixture[str]) -> None:
    rows = api.rows([RUN])
    assert all(list(r) == list(api.COLUMNS) for r in rows)
    assert {r["host"] for r in rows} == {"server", "client"}  # each VM its own kernel
    tcp = [r for r in rows if r["checkpoint"] == "established" and r["cache"] == "TCP"]
    assert {r["host"]: r["bytes_per_connection"] for r in tcp}["server"] == 2326.5
    assert cli.main(["report", str(RUN), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(parsed) == len(rows)
    assert parsed[0]["run"] == rows[0]["run"] and float(parsed[0]["bytes_per_connection"]) \
        == rows[0]["bytes_per_connection"]


def test_shared_kernel_rows_name_both_hosts() -> None:
    rows = api.rows([REPO / "tests/data/results/20261126-012650-c2s-default"])
    assert {r["host"] for r in rows} == {"server+client"}
    assert {r["checkpoint"] for r in rows} == {"established", "unread", "read"}


def test_compare_needs_two_runs() -> None:
    from orchestrator.errors import InputError

    with pytest.raises(InputError, match="compare: got 1 result; pass at least two runs"):
        api.compare([RUN])


def test_import_keeps_matplotlib_backend() -> None:
    code = ("import matplotlib; b = matplotlib.get_backend(); import orchestrator, "
            "orchestrator.api, orchestrator.report.html, orchestrator.report.charts, "
            "orchestrator.report.compare_charts, orchestrator.library.site, "
            "orchestrator.cli; assert matplotlib.get_backend() == b, matplotlib.get_backend(); "
            "import sys; assert 'matplotlib.pyplot' not in sys.modules; print(b)")
    for backend in ("pdf", "svg"):  # a notebook's choice, which Agg must not replace
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=REPO, env={**os.environ, "MPLBACKEND": backend}, check=True)
        assert out.stdout.strip() == backend


def test_html_report_renders_without_pyplot() -> None:
    code = ("import sys; from orchestrator.report.html import render_html; "
            "from orchestrator.results import load_result; "
            "from pathlib import Path; "
            f"html = render_html(load_result(Path({str(RUN)!r})), None); "
            "assert '<svg' in html; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
