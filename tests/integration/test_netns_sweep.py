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
