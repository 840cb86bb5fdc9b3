"""Conventions and faults on real network namespaces (about 2-3 minutes, N of 300; each run
queues for the machine-wide lock with --wait):

- ``run --json -v``: stdout is one JSON document and nothing else; stderr shows each
  command with its host; the fresh result.json is valid against the shipped schema;
- docs/api.md's ``api.run`` block, as root;
- a run that fails part-way still writes report.html, with the INCOMPLETE banner;
- the results directory's filesystem filling during a run (a tmpfs filled while the
  hosts are up): a one-line error, no partial result, the lab cleaned up;
- the journal directory unwritable (a read-only tmpfs): a one-line error before anything
  exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.netns import short_id

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]


def tcplab(tmp: Path, *args: str, results: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp / "state"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args, "--backend", "netns", "--wait", "1200",
         "--results", str(results or tmp / "results")],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1500)


def lab_gone(run_id: str) -> None:
    sid = short_id(run_id)
    assert f"tcplab-{sid}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                  text=True).stdout
    assert f"tl{sid}" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                            text=True).stdout


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tcplab-test", str(where)],
                       check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_json_stdout_verbose_stderr_and_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from orchestrator.results.schema import load_schema

    proc = tcplab(tmp_path, "-v", "run", "-s", "idle", "-n", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout: the JSON alone
    (run,) = doc["runs"]
    assert run["status"] == "complete" and run["checkpoints"][0]["name"] == "established"
    assert 6000 < run["checkpoints"][0]["bytes_per_connection"] < 10000
    assert re.search(r"^      \$ \[server\] .*side\.py", proc.stderr, re.M), proc.stderr[-2000:]
    assert re.search(r"^      \$ \[client\] ", proc.stderr, re.M)
    path = Path(run["result"])
    result = json.loads((path if path.is_absolute() else ROOT / path).read_text())
    jsonschema.validate(result, load_schema())
    assert Path(tmp_path / "results" / run["run_id"] / "report.html").is_file()


def test_api_doc_run_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/api.md").read_text(), re.S)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(ROOT / "docs/api.md"), "exec"), namespace)  # noqa: S102
    assert namespace["fresh"].status == "complete"


def test_incomplete_run_writes_its_report_with_the_banner(tmp_path: Path) -> None:
    proc = tcplab(tmp_path, "run", "-s", "c2s", "-n", "300",
                  env={"TCPLAB_SIDE_FAULT": "client:send:crash"})
    assert proc.returncode == 1, proc.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "incomplete"
    assert f"report: {run_dir / 'report.html'} (incomplete run)" in proc.stderr
    assert "INCOMPLETE RUN" in (run_dir / "report.html").read_text()
    lab_gone(run_dir.name)


def test_results_filesystem_fills_during_the_run(tmp_path: Path, tmpfs: callable) -> None:
    """The preflight wants 64 MiB free (tests/unit: test_disk_full_for_results); here the
    filesystem passes it, then fills while the hosts are up (TCPLAB_PAUSE_AT=setup)."""
    results = tmpfs("results", "size=72m")
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state"),
           "TCPLAB_PAUSE_AT": "setup", "TCPLAB_PAUSE_SECONDS": "6"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "-s", "idle", "-n", "300",
         "--backend", "netns", "--wait", "1200", "--results", str(results)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("tcplab: paused at setup"):
            break
    subprocess.run(["dd", "if=/dev/zero", f"of={results / 'filler'}", "bs=1M"],
                   capture_output=True)  # ends with ENOSPC: the filesystem is full
    assert shutil.disk_usage(results).free < 64 << 10
    out, err = proc.communicate(timeout=600)
    err = "".join(seen) + err
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tcplab: error: cannot write ") and "No space left on device" in last
    assert "free some disk space or choose another results directory" in last
    assert "Traceback" not in err and out.strip() == ""
    assert [p.name for p in results.iterdir()] == ["filler"]  # no partial result
    run_id = re.search(r"(\d{8}-\d{6}-idle-default)", last).group(1)
    lab_gone(run_id)
    assert not list((tmp_path / "state" / "runs").iterdir())


def test_unwritable_journal_directory(tmp_path: Path, tmpfs: callable) -> None:
    state = tmpfs("state", "ro,size=1m")
    proc = tcplab(tmp_path, "run", "-s", "idle", "-n", "300", env={"TCPLAB_STATE_DIR": str(state)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tcplab: error: cannot create the run's journal in {state}: Read-only file system; "
        "tcplab records there what it creates so that it can always remove it: make it "
        "writable, or set TCPLAB_STATE_DIR to a writable directory")
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())
