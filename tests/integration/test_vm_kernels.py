"""Debian's kernels for real: the private apt configuration, old and new kernels booting,
the VM limits sized from N.

* `apt-get update` of the four small suites that hold kernels (security and backports:
  about 3 MB to fetch; the three main suites add 30 MB and took 1 to 7 minutes here) and
  `apt-get download` of one small package into a temporary cache, then: the machine's apt
  (/etc/apt, /var/lib/apt, /var/cache/apt, dpkg's status) is byte for byte what it was.
  Needs root and deb.debian.org; runs under CI or with TCPLAB_VM_TESTS=1.
* Opt-in (TCPLAB_VM_TESTS=1; minutes each under TCG): the oldest and the newest Debian
  kernel (5.10 and 7.x) boot on the one root filesystem and are measured; docs/vm.md's
  `timewait` example (N=4,000 in 6.12 VMs) runs as written; at N=10,000 every connection
  has a TIME-WAIT bucket (xfail under TCG: docs/vm.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.vm import archive
from orchestrator.backends.vm.debindex import IndexKernel

MACHINE_APT = (Path("/etc/apt"), Path("/var/lib/apt"), Path("/var/cache/apt"),
               Path("/var/lib/dpkg/status"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("TCPLAB_VM_TESTS") == "1"),
                       reason="runs under CI or with TCPLAB_VM_TESTS=1 (deb.debian.org, ~1 min)"),
]


def tree_hash(path: Path) -> dict[str, str]:
    """Every file's content hash, every link's target, every directory, under ``path``."""
    out: dict[str, str] = {}
    paths = [path] if not path.is_dir() else [path, *sorted(path.rglob("*"))]
    for p in paths:
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p)] = f"dir {p.stat().st_mode:o}"
    return out


#: The suites the test fetches: one per kernel series family, the small ones.
SMALL_SUITES = tuple((url, suite) for url, suite in archive.SUITES
                     if suite.endswith(("-security", "-backports")))


def test_private_index_and_download_leave_the_machines_apt_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "SUITES", SMALL_SUITES)
    before = {str(p): tree_hash(p) for p in MACHINE_APT if p.exists()}
    root = tmp_path / "apt"
    archive.refresh(print, force=True, root=root)
    assert (root / "updated").is_file()
    assert set(archive.list_files(root)) == {suite for _, suite in archive.SUITES}
    index = archive.load_index(print, root)
    assert {"5.10", "6.1", "6.12"} <= set(index.series())
    newest = index.resolve(index.series()[-1])
    # the smallest .deb of the newest kernel (from 6.19: the image meta package, ~2 KB)
    deb = min(newest.debs, key=lambda d: d.size)
    one = IndexKernel(deb.package, newest.abi, deb.version, newest.upstream, newest.series,
                      deb.suite, [deb])
    [path] = archive.download(one, print, root)
    assert path.parent == root / "debs"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == deb.sha256
    after = {str(p): tree_hash(p) for p in MACHINE_APT if p.exists()}
    assert after == before


ROOT = Path(__file__).resolve().parents[2]
opt_in = pytest.mark.skipif(os.environ.get("TCPLAB_VM_TESTS") != "1",
                            reason="opt-in: TCPLAB_VM_TESTS=1 (minutes of TCG VMs)")


def tcplab(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp / "state")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)


@opt_in
def test_oldest_and_newest_debian_kernels_boot(tmp_path: Path) -> None:
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "--kernels", "5.10 7", "-n", "200",
                  "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    releases = {}
    for run in sorted(p for p in (tmp_path / "results").iterdir() if p.is_dir()):
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "complete"
        vm = result["metadata"]["vm"]
        releases[result["metadata"]["kernel_label"]] = result["metadata"]["kernel"]["release"]
        assert all(0 < s < 120 for s in vm["boot_seconds"].values()), vm["boot_seconds"]
        est = next(c for c in result["checkpoints"] if c["name"] == "established")
        assert est["states"] == {"server": {"ESTAB": 200}, "client": {"ESTAB": 200}}
    assert releases["5.10"].startswith("5.10.0-") and releases["7"].startswith("7.")


@opt_in
def test_timewait_doc_example_in_612_vms(tmp_path: Path) -> None:
    """docs/vm.md's one-kernel example as written (N=4,000): every client connection in
    TIME-WAIT, the VMs' limits sized from N (68 s here under TCG)."""
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "lab",
                           "SCENARIO=timewait", "BACKEND=vm", "KERNELS=6.12", "N=4000",
                           f"ARGS=--results {tmp_path / 'results'}"],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "tcp_max_tw_buckets reached" not in proc.stdout + proc.stderr
    (run,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    result = json.loads((run / "result.json").read_text())
    assert result["metadata"]["kernel"]["release"].startswith("6.12")
    for host in ("server", "client"):
        pinned = result["metadata"]["hosts"][host]["sysctls_pinned"]
        assert pinned["net.ipv4.tcp_max_tw_buckets"] == str(4000 + 500 + 1024)
    tw = next(c for c in result["checkpoints"] if c["name"] == "time_wait")
    assert tw["states"]["client"] == {"TIME-WAIT": 4000}, tw["states"]


@opt_in
@pytest.mark.xfail(reason="under TCG on a loaded machine the server's close of 10,000 sockets "
                          "ends more than tcp_fin_timeout (60 s) after the client's: the "
                          "client's FIN-WAIT-2 sockets expire first (TcpExt TW=10000, no "
                          "resets); see docs/vm.md", strict=False)
def test_timewait_at_10000_has_a_bucket_for_every_connection(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = tcplab(tmp_path, "run", "--scenario", "timewait", "--backend", "vm", "--kernels",
                  "6.12", "-n", "10000", "--results", str(tmp_path / "results"))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "tcp_max_tw_buckets reached" not in proc.stdout + proc.stderr
    (run,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    result = json.loads((run / "result.json").read_text())
    for host in ("server", "client"):
        meta = result["metadata"]["hosts"][host]
        assert meta["sysctls_pinned"]["net.ipv4.tcp_max_tw_buckets"] == "12274"
        assert meta["net_sysctls"]["net.ipv4.tcp_max_orphans"] == "49096"
    tw = next(c for c in result["checkpoints"] if c["name"] == "time_wait")
    assert tw["states"]["client"].get("TIME-WAIT") == 10000, tw["states"]
    print(f"timewait N=10,000 in 6.12 VMs: {seconds:.0f} s")
