"""A bundle end to end on network namespaces: run, export, rerun elsewhere, compare.

"Elsewhere" is what a colleague has: another results directory, another state directory
and another temporary directory (TMPDIR), with only the bundle file in common. Needs
root (namespaces, /proc/slabinfo); each run must leave nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.test_netns_scenarios import assert_clean

ROOT = Path(__file__).resolve().parents[2]
N = 500

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]


def tcplab(*args: str, home: Path) -> subprocess.CompletedProcess:
    """The CLI as the person at ``home`` runs it: their state and temporary directories."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCPLAB_STATE_DIR": str(home / "state"), "TMPDIR": str(home / "tmp")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def only_run(results: Path) -> Path:
    (run_dir,) = list(results.iterdir())
    return run_dir


def tamper(src: Path, dst: Path, member: str, old: bytes, new: bytes) -> None:
    """Copy a bundle, changing one member's content (the manifest is left as it was)."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == member:
                assert old in data
                data = data.replace(old, new)
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


def test_bundle_roundtrip(tmp_path: Path) -> None:
    me, colleague = tmp_path / "me", tmp_path / "colleague"
    release = os.uname().release

    # 1. my run, exported
    proc = tcplab("run", "--scenario", "idle", "-n", str(N), "--backend", "netns",
                  "--results", str(me / "results"), home=me)
    assert proc.returncode == 0, proc.stderr
    mine = only_run(me / "results")
    assert_clean(mine.name, me / "state")
    exported = me / "idle.tar.gz"
    proc = tcplab("export", str(mine), "-o", str(exported), home=me)
    assert proc.returncode == 0, proc.stderr
    assert f"rerun: tcplab run --bundle {exported}" in proc.stdout

    # 2. the colleague reruns it from the bundle file alone
    shared = colleague / "from-me.tar.gz"
    colleague.mkdir()
    shutil.copy(exported, shared)
    proc = tcplab("run", "--bundle", str(shared), "--results", str(colleague / "results"),
                  home=colleague)
    assert proc.returncode == 0, proc.stderr
    assert "· idle ·" in proc.stdout and f"N={N:,} · BYTES=0" in proc.stdout
    theirs = only_run(colleague / "results")
    assert_clean(theirs.name, colleague / "state")
    assert list((colleague / "tmp").iterdir()) == [], "the unpacked bundle was left behind"
    a = json.loads((mine / "result.json").read_text())
    b = json.loads((theirs / "result.json").read_text())
    assert b["status"] == "complete"
    assert b["scenario"] == a["scenario"]  # connections, bytes and steps as run
    assert b["profile"]["name"] == a["profile"]["name"] == "default"
    assert b["profile"]["sysctls"] == a["profile"]["sysctls"]
    assert b["lab"]["hosts"] == a["lab"]["hosts"]
    for key in ("backend", "family", "server_model"):
        assert b["metadata"][key] == a["metadata"][key]
    with tarfile.open(shared, "r:gz") as tar:
        manifest_data = tar.extractfile("bundle.json").read()  # type: ignore[union-attr]
    assert b["metadata"]["bundle"]["file"] == str(shared.resolve())
    assert b["metadata"]["bundle"]["manifest_sha256"] == hashlib.sha256(manifest_data).hexdigest()
    assert b["metadata"]["bundle"]["source_runs"] == [mine.name]
    assert b["metadata"]["bundle"]["overridden"] == []
    assert "bundle" not in a["metadata"]

    # 3. their run beside mine, straight from the bundle
    proc = tcplab("compare", str(theirs), str(shared), home=colleague)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert mine.name in out and theirs.name in out
    assert f"kernel {release}" in out
    assert "none: every net.* value is the same" in out
    proc = tcplab("compare", str(theirs), str(shared), "--format", "json", home=colleague)
    cmp = json.loads(proc.stdout)
    runs = {r: g["key"]["kernel"] for g in cmp["groups"] for r in g["runs"]}
    assert runs == {theirs.name: release, mine.name: release}
    assert cmp["sysctls"] == []
    assert list((colleague / "tmp").iterdir()) == []

    # 4. a bundle changed after export is refused, and nothing starts
    tampered = colleague / "tampered.tar.gz"
    tamper(shared, tampered, "setup/scenario.yaml", f"connections: {N}".encode(),
           f"connections: {N + 400}".encode())
    proc = tcplab("run", "--bundle", str(tampered), "--results", str(colleague / "results"),
                  home=colleague)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"tcplab: error: {tampered}: member 'setup/scenario.yaml': sha256 does not match "
        "bundle.json (changed or damaged after export); ask for the bundle again")
    assert [p.name for p in (colleague / "results").iterdir()] == [theirs.name]
    assert list((colleague / "tmp").iterdir()) == []
    runs_state = colleague / "state" / "runs"
    assert not runs_state.exists() or not list(runs_state.iterdir())
