"""Two scenarios in one command on one kernel: the VMs boot once, the second run gets them
reset (the first run's sockets drained, its sysctls undone) and measures on its own.

Opt-in with TCPLAB_VM_TESTS=1 (two TCG runs on one boot: about 3 minutes), like the other
VM tests beyond the one CI runs (docs/vm.md). Each scenario brings its own N (scenario
files written here), so the sysctls sized from N differ between the two runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.vm.limits import sized_sysctls

ROOT = Path(__file__).resolve().parents[2]
N_S2C, N_IDLE = 300, 200

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="needs qemu-system-x86 and qemu-utils"),
    pytest.mark.skipif(os.environ.get("TCPLAB_VM_TESTS") != "1",
                       reason="opt-in: TCPLAB_VM_TESTS=1 (minutes; see docs/vm.md)"),
]


def test_two_scenarios_share_one_boot_and_measure_independently(tmp_path: Path) -> None:
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state")}
    before = set(Path("/var/tmp").glob("tcplab-vm-*"))
    # s2c first: its teardown leaves TIME-WAIT sockets and sysctls sized for its N behind
    s2c = (ROOT / "scenarios" / "s2c.yaml").read_text().replace("connections: 10000",
                                                                f"connections: {N_S2C}")
    idle = (ROOT / "scenarios" / "idle.yaml").read_text().replace("connections: 10000",
                                                                  f"connections: {N_IDLE}")
    (tmp_path / "s2c-small.yaml").write_text(s2c)
    (tmp_path / "idle-small.yaml").write_text(idle)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--scenario",
         f"{tmp_path / 's2c-small.yaml'} {tmp_path / 'idle-small.yaml'}", "--backend", "vm",
         "--kernels", "6.1", "--json", "--results", str(tmp_path / "results")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = json.loads(proc.stdout)["runs"]
    assert [r["scenario"] for r in runs] == ["s2c-small", "idle-small"]
    first, second = (json.loads((ROOT / r["result"]).read_text()) for r in runs)
    assert first["status"] == second["status"] == "complete"

    # booted once: the same kernel boot in both runs, the second says whose VMs it reused
    for name in ("server", "client"):
        a, b = first["metadata"]["hosts"][name], second["metadata"]["hosts"][name]
        assert a["boot_id"] and a["boot_id"] == b["boot_id"]
        assert "reused" not in a["vm"]
        assert b["vm"]["reused"]["booted_by"] == first["run_id"]
        assert b["vm"]["reused"]["run_on_vms"] == 2
        assert b["vm"]["qemu"] == a["vm"]["qemu"]
    assert second["metadata"]["vm"]["timings"]["boot"] == 0.0
    assert "the VMs of run" in proc.stderr

    # complete: every checkpoint of each scenario reached
    assert [c["name"] for c in first["checkpoints"]] == [
        "baseline", "established", "unread", "read"]
    assert first["checkpoints"][1]["states"] == {"server": {"ESTAB": N_S2C},
                                                 "client": {"ESTAB": N_S2C}}

    # independent: the idle run starts from an empty VM (the s2c run's sockets ended) with
    # the sysctls a fresh boot for its own N gets, and counts only its own connections
    base, est = second["checkpoints"][0], second["checkpoints"][1]
    assert base["states"] == {"server": {}, "client": {}} or all(
        set(s) <= {"LISTEN"} for s in base["states"].values()), base["states"]
    assert est["states"] == {"server": {"ESTAB": N_IDLE}, "client": {"ESTAB": N_IDLE}}
    tw = "net.ipv4.tcp_max_tw_buckets"  # sized from N (the profile may pin the others)
    for name in ("server", "client"):
        for result, n in ((first, N_S2C), (second, N_IDLE)):
            host = result["metadata"]["hosts"][name]
            assert host["sysctls_pinned"][tw] == sized_sysctls(n)[tw]
            for key, value in host["sysctls_pinned"].items():  # read back in the VM
                assert host["net_sysctls"][key] == value, (name, key)
        assert sized_sysctls(N_IDLE)[tw] != sized_sysctls(N_S2C)[tw]
    for side in ("server", "client"):
        total = est["per_kernel"][side]["per_connection_bytes"]["total"]
        assert 3000 < total < 6000, (side, total)

    # nothing left: the pool's VMs, their directory and every journal are gone
    qemu_name = first["metadata"]["hosts"]["server"]["vm"]["qemu"].rsplit("-", 1)[0]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and subprocess.run(
            ["pgrep", "-f", qemu_name + "-"], capture_output=True).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", qemu_name + "-"], capture_output=True).returncode == 1
    assert set(Path("/var/tmp").glob("tcplab-vm-*")) <= before
    state = tmp_path / "state" / "runs"
    assert not state.exists() or not list(state.iterdir())
