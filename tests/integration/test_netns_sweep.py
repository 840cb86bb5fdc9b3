"""A sweep for real on network namespaces: one run per value, each host running with the
value (read back in its namespace), one sweep directory with its report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .test_netns_scenarios import assert_clean, tcplab

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]


def test_tcp_rmem_sweep_runs_each_value_and_reports_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = tcplab("run", "--scenario", "s2c", "-n", "200", "--bytes", "65536", "--backend",
                  "netns", "--sweep", "net.ipv4.tcp_rmem=4096 131072 {1M,4M}", "--json",
                  results=results, state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = list(results.iterdir())
    assert sweep_dir.name.startswith("sweep-") and sweep_dir.name.endswith("-s2c-tcp_rmem")
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(runs) == 2
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["sweep"]["values"] == ["4096 131072 1048576", "4096 131072 4194304"]
    for run, value in zip(runs, doc["sweep"]["values"], strict=True):
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "complete"
        assert result["profile"]["sysctls"]["net.ipv4.tcp_rmem"] == value
        for host in ("server", "client"):  # applied in each namespace, read back there
            assert result["metadata"]["hosts"][host]["net_sysctls"]["net.ipv4.tcp_rmem"] == value
        assert (run / "report.html").is_file()
        assert_clean(run.name, tmp_path / "state")
    assert doc["runs"] == {"4096 131072 1M": [runs[0].name], "4096 131072 4M": [runs[1].name]}
    assert {"slab", "rmem_client"} <= set(doc["figures"])
    assert (sweep_dir / "sweep.html").read_text().count("<svg") >= 2
    assert "Sweep of net.ipv4.tcp_rmem (sysctl)" in (sweep_dir / "sweep.txt").read_text()
    printed = json.loads(proc.stdout)
    assert printed["sweep"]["values"] == ["4096 131072 1M", "4096 131072 4M"]
    assert len(printed["runs"]) == 2


def test_link_sweep_with_loss_runs_each_delay_and_names_the_link(tmp_path: Path) -> None:
    """``--link "loss=1%" --sweep "delay=0ms,25ms"`` (docs/conditions.md's RTT tables at
    small N): each point runs over the user's link with its delay, and the sweep report
    says which, with the goodput of each point (the reader's pace)."""
    results = tmp_path / "results"
    proc = tcplab("run", "--scenario", "slow-readers", "-n", "4", "--bytes", str(6 << 20),
                  "--backend", "netns", "--link", "loss=1%", "--sweep", "delay=0ms,25ms",
                  "--json", results=results, state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = list(results.iterdir())
    assert sweep_dir.name.endswith("-slow-readers-delay")
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["links"] == {"0ms": "loss 1%", "25ms": "delay 25 ms each way (RTT 50 ms), loss 1%"}
    for label, delay_us in (("0ms", 0), ("25ms", 25000)):
        (run_id,) = doc["runs"][label]
        result = json.loads((sweep_dir / run_id / "result.json").read_text())
        assert result["status"] == "complete"
        link = result["metadata"]["link"]["link"]
        assert (link["delay_us"], link["loss_pct"]) == (delay_us, 1.0)
        assert_clean(run_id, tmp_path / "state")
    goodput = {r["point"]: r["median"] for r in doc["rows"] if r["figure"] == "goodput"}
    for point in (0, 1):  # four readers at 1 MiB/s each: 4.19 MB/s, loss or not
        assert goodput[point] == pytest.approx(4 * 1048576 / 1e6, rel=0.05)
    text = (sweep_dir / "sweep.txt").read_text()
    assert "link at each point:\n  delay=0ms: loss 1%\n" in text
    assert (sweep_dir / "sweep.html").read_text().count("<svg") == 3
