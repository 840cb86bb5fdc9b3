"""A topology on the vm backend for real: 2 client VMs x 200 connections through a NAT
router VM to a server VM (kernel 6.1, TCG).

Opt-in with TCPLAB_VM_TESTS=1 like the other VM tests beyond CI's (four VMs boot under
TCG: about 3 minutes here, see docs/vm.md). Asserts what the server sees (400 ESTAB
from the router's address), the router VM's conntrack entries (about one per
connection) and their cost on its own kernel, per-host figures for every VM, and that
no qemu, switch process, run directory or journal is left. Without NAT the server sees
the clients' own addresses: tests/unit/test_vm_topology.py checks the commands that
decide it (a second four-VM run would double the time).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.backends.common import short_id

ROOT = Path(__file__).resolve().parents[2]
N = 400
CLIENTS = 2

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="needs qemu-system-x86 and qemu-utils"),
    pytest.mark.skipif(os.environ.get("TCPLAB_VM_TESTS") != "1",
                       reason="opt-in: TCPLAB_VM_TESTS=1 (four VMs, minutes; see docs/vm.md)"),
]


def lab_peers(run_dir: Path, host: str) -> Counter:
    """Remote lab addresses of a host's ESTAB sockets (the raw ss text of the run; the
    VM's own SSH control connection is on 10.0.2.15, not a lab address)."""
    out: Counter = Counter()
    with gzip.open(run_dir / "raw" / "established" / f"{host}-ss.txt.gz", "rt") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == "ESTAB" and fields[4].startswith("198.18."):
                out[fields[4].rsplit(":", 1)[0]] += 1
    return out


def left_behind(run_id: str) -> list[str]:
    """qemu and switch processes of the run still alive."""
    out = subprocess.run(["pgrep", "-af", f"tcplab-{short_id(run_id)}-|tcplab-vm-"
                          f"{short_id(run_id)}/"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_two_client_vms_through_a_nat_router_vm(tmp_path: Path) -> None:
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state"),
           "TCPLAB_LOCK_WAIT": os.environ.get("TCPLAB_LOCK_WAIT", "1800")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-s", "idle",
                           "-b", "vm", "--kernels", "6.1", "-n", str(N), "--clients",
                           str(CLIENTS), "--router", "nat", "--results",
                           str(tmp_path / "results")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=2400)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    (run_dir,) = list((tmp_path / "results").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    meta = result["metadata"]
    hosts = meta["topology"]["hosts"]
    assert set(meta["kernels"]) == {"server", "router", "client1", "client2"}
    est = next(cp for cp in result["checkpoints"] if cp["name"] == "established")
    # the split, and what the server sees: every connection from the router's address
    assert {c: v["connections"] for c, v in meta["clients"].items()} == {
        "client1": N // CLIENTS, "client2": N // CLIENTS}
    assert est["states"]["server"] == {"ESTAB": N}
    assert est["states"]["client1"] == est["states"]["client2"] == {"ESTAB": N // CLIENTS}
    assert lab_peers(run_dir, "server") == Counter({hosts["router"]["addresses"][1]: N})
    # the router VM: one conntrack entry per connection (its own SSH session is tracked
    # too, before the baseline), costed on its own kernel
    cost = est["router"]["router"]
    assert 0.98 <= cost["entries_per_connection"] <= 1.02, cost
    assert N <= cost["conntrack"] <= N + 10, cost
    assert cost["own_kernel"] is True
    assert 300 <= cost["kernel_bytes_per_connection"] <= 1000, cost
    assert cost["kernel_conntrack_per_connection"] >= 256, cost
    # every VM its own kernel: per-host figures; the server's end as between two VMs
    sides = est["per_kernel"]
    assert 3000 < sides["server"]["per_connection_bytes"]["total"] < 6000, sides["server"]
    clients = sum(sides[c]["per_connection_bytes"]["total"] for c in ("client1", "client2"))
    assert 3000 < clients < 6500, clients
    assert "Each VM is its own kernel" in proc.stdout
    print(f"\n{seconds:.0f} s; router {cost}; server "
          f"{sides['server']['per_connection_bytes']['total']} B, clients {clients} B; "
          f"boots {meta['vm']['boot_seconds']}; timings {meta['vm']['timings']}")
    deadline = time.monotonic() + 15
    while left_behind(run_dir.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left_behind(run_dir.name) == []
    assert not Path(f"/var/tmp/tcplab-vm-{short_id(run_dir.name)}").exists()
    runs = tmp_path / "state" / "runs"
    assert not runs.exists() or not list(runs.iterdir())
