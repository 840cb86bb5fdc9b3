"""Every scenario for real on network namespaces, at small N, asserting the article's facts.

Needs root (namespaces, /proc/slabinfo). Each test checks that the run left no
namespace, link or process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.common import short_id

from . import facts
from .facts import cache, checkpoint

ROOT = Path(__file__).resolve().parents[2]
N = 1000

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]


def tcplab(*args: str, results: Path, state: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


def run_ok(scenario: str, tmp_path: Path, *extra: str, n: int = N) -> dict:
    results = tmp_path / "results"
    proc = tcplab("run", "--scenario", scenario, "-n", str(n), "--backend", "netns", *extra,
                  results=results, state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert_clean(run_dir.name, tmp_path / "state")
    return result


def assert_clean(run_id: str, state: Path) -> None:
    sid = short_id(run_id)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"tcplab-{sid}-" not in namespaces
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"tl{sid}" not in links
    procs = subprocess.run(["pgrep", "-f", f"side.py --run {run_id}"], capture_output=True,
                           text=True)
    assert procs.stdout.strip() == "", f"side processes left: {procs.stdout}"
    runs = state / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_idle_matches_object_sizes(tmp_path: Path) -> None:
    result = run_ok("idle", tmp_path)
    cp = checkpoint(result, "established")
    expected = result["metadata"]["idle_pair_estimate"]["total"]
    # At N=1,000 slab pages are too coarse (new objects fill partly free slabs): compare the
    # object bytes here; the page-based total is checked at N=10,000 by the benchmark.
    total = cp["per_connection_bytes"]["objects_total"]
    assert abs(total - expected) / expected < 0.10, (total, expected)
    assert 1.9 <= cache(cp, "TCP")["objects_per_connection"] <= 2.1
    assert cp["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N}}
    for host in ("server", "client"):
        buf = cp["buffers"][host]
        assert buf["rmem_alloc"]["sum"] == 0 and buf["wmem_queued"]["sum"] == 0
    # the lab widened the client's port range in its own namespace and recorded it
    client = result["metadata"]["hosts"]["client"]
    assert client["net_sysctls"]["net.ipv4.ip_local_port_range"] == "1024 65535"


def test_c2s_receive_buffer_below_rmem_min(tmp_path: Path) -> None:
    facts.receive_buffer_below_rmem_min(run_ok("c2s", tmp_path), N)


def test_s2c_64k_sender_released_receiver_holds(tmp_path: Path) -> None:
    facts.sender_released_receiver_holds(run_ok("s2c", tmp_path, "--bytes", "65536"), N, 65536)


def test_timewait_sheds_socket_objects(tmp_path: Path) -> None:
    # 4,000, as on docker: what remains is compared with 10% of what was there; other
    # processes open and close files, and SLUB counts free slots of per-CPU slabs as in
    # use (a clean-clone run saw tw_sock_TCP at 0.896 per connection at 2,000: ~200 objects).
    n = 4 * N
    facts.timewait_sheds_socket_objects(run_ok("timewait", tmp_path, n=n), n)


def test_sigint_during_ramp_cleans_up(tmp_path: Path) -> None:
    results, state = tmp_path / "results", tmp_path / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "--scenario", "idle", "-n", "40000",
         "--backend", "netns", "--results", str(results)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "ramp" in line:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "incomplete"
    assert_clean(run_dir.name, state)


def test_wipe_after_sigkill(tmp_path: Path) -> None:
    results, state = tmp_path / "results", tmp_path / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "--scenario", "idle", "-n", "40000",
         "--backend", "netns", "--results", str(results)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    for line in proc.stderr:
        if "ramp" in line:
            proc.kill()
            break
    proc.wait(timeout=30)
    (run_dir,) = list(results.iterdir())
    sid = short_id(run_dir.name)
    # the next command notices the stale run and points at wipe
    again = tcplab("run", "--scenario", "idle", "-n", "10", "--backend", "netns",
                   results=tmp_path / "other", state=state)
    assert again.returncode == 2 and "tcplab wipe" in again.stderr
    wiped = subprocess.run([sys.executable, "-m", "orchestrator.cli", "wipe"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert wiped.returncode == 0, wiped.stderr
    assert run_dir.name in wiped.stdout
    time.sleep(0.5)
    assert f"tcplab-{sid}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                  text=True).stdout
    assert_clean(run_dir.name, state)
