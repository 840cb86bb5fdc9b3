"""netem against the fallback (the delay line) on ONE kernel: the same scenario and link in
two pairs of TCG VMs booting Debian's 6.1 cloud kernel, once with ``--link-engine netem``
and once with ``--link-engine fallback`` (the delay line inside each VM), and the
per-connection buffers compared (docs/conditions.md, "netem against the fallback").

Opt-in (TCPLAB_VM_TESTS=1): two VM runs of a few minutes each. The link is slow
(5 Mbit/s, RTT 100 ms) so that the link, not the emulated CPUs, is the bottleneck with
either engine: at 20 Mbit/s the TCG VMs themselves carried only 9.6 Mbit/s with netem.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from .test_conditions import in_flight, sockets
from .test_vm_backend import assert_clean, opt_in, tcplab
from .test_vm_backend import pytestmark as VM_MARKS

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "integration" / "scenarios" / "link-xcheck.yaml"
RENO = ROOT / "tests" / "integration" / "profiles" / "reno.yaml"
LINK = "delay=50ms rate=5mbit"
TRANSFERRING = ("transferring1", "transferring2", "transferring3")
#: What the two engines may differ by. Only in flight is compared, and only as a sanity
#: bound: it is three snapshots of a Reno sawtooth a run (netem's own runs differed by up
#: to 55%; the engines' medians by 11%). The rest is printed, not compared, because at
#: N=2 in TCG VMs each measure's own spread exceeds the issue's 10%:
#: the sender's sockstat ``mem`` is bimodal (about 60 or 280 pages: the kernel's per-CPU
#: forward-allocation reserve of 256 pages), ``wmem_queued`` keeps the largest window a
#: run reached (1.7x between the two fallback runs), and the per-connection total includes
#: the emulators' own held packets (slab with the delay line, page fragments with netem). See
#: docs/conditions.md, "netem against the fallback, on one kernel".
TOLERANCE = {"in flight": 0.40}

#: test_vm_backend's markers (root, qemu), and opt-in: two VM runs of minutes each
pytestmark = [*VM_MARKS, opt_in]


def measures(run_dir: Path) -> dict[str, float]:
    """Per connection: the sender's sockstat ``mem`` (median of the timeline's samples while
    it held data, pages × 4096 ÷ connections); the median over the checkpoints while
    transferring of the sender's in flight (tcp_packets_in_flight × MSS) and wmem_queued,
    the reader's rmem_alloc and the kernel memory per connection (both VMs)."""
    result = json.loads((run_dir / "result.json").read_text())
    points = {cp["name"]: cp for cp in result["checkpoints"]}
    flight, wmem, rmem, total = [], [], [], []
    for name in TRANSFERRING:
        senders = [s for s in sockets(run_dir, "server", name) if s.get("bytes_sent")]
        assert senders, f"{run_dir.name}: no sender at {name}: the transfer ended too soon"
        flight.append(sum(in_flight(s) for s in senders) / len(senders))
        buffers = points[name]["buffers"]
        wmem.append(buffers["server"]["wmem_queued"]["median"])
        rmem.append(buffers["client"]["rmem_alloc"]["median"])
        total.append(points[name]["per_connection_bytes"]["total"])
    held = [m for m in result["timeline"]["columns"]["server.mem"] if m and m > 10]
    return {"sender mem": statistics.median(held) * 4096 / result["checkpoints"][1][
                "connections"],
            "in flight": statistics.median(flight), "wmem_queued": statistics.median(wmem),
            "rmem_alloc": statistics.median(rmem), "total": statistics.median(total)}


def run_engine(tmp_path: Path, engine: str) -> tuple[Path, dict]:
    out = tmp_path / engine
    proc = tcplab(tmp_path, "run", "--backend", "vm", "--kernels", "6.1", "-s", str(SCENARIO),
                  "-p", str(RENO), "--link", LINK, "--link-engine", engine,
                  "--stall", "600",  # join waits for a ~95 s transfer at 5 Mbit/s
                  "--results", str(out), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    (run_dir,) = list(out.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metadata"]["link"]["engine"] == engine
    assert_clean(tmp_path, run_dir.name)
    return run_dir, result


def test_netem_and_the_delay_line_give_the_same_buffers_on_one_kernel(tmp_path: Path) -> None:
    netem_dir, netem = run_engine(tmp_path, "netem")
    fallback_dir, fallback = run_engine(tmp_path, "fallback")
    applied = fallback["metadata"]["link"]["applied"]
    assert [a["host"] for a in applied] == ["server", "client"]
    assert all(a["how"].startswith("delay line inside the VM on NFQUEUE 1") and
               a["process"]["pid"] > 1 for a in applied)
    a, b = measures(netem_dir), measures(fallback_dir)
    goodput = {e: r["transfers"][0]["goodput"] * 8 for e, r in (("netem", netem),
                                                                ("fallback", fallback))}
    (tmp_path / "crosscheck.json").write_text(json.dumps(
        {"netem": a, "fallback": b, "goodput_bps": goodput}, indent=1))
    print("netem", a, "fallback", b, "goodput", goodput)
    # netem carries the link's rate: TCP goodput 0.956 R (full frames), within 10%
    assert goodput["netem"] == pytest.approx(0.956 * 5e6, rel=0.10), goodput
    # the delay line in a TCG VM releases late (docs/conditions.md): most of the rate
    assert goodput["fallback"] > 0.5 * 5e6, goodput
    for key, tolerance in TOLERANCE.items():
        assert abs(b[key] - a[key]) <= tolerance * a[key], (key, a, b)
