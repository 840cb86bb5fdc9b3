"""tcplab as an installed package: build the wheel, install it into a fresh venv outside the
checkout, and use it from other directories.

Proves the wheel carries what a run needs (side scripts, scenarios, profiles, the default
lab file, the image recipe) and declares every library it imports: the venv has no system
site-packages and the checkout is nowhere on its path. Dependencies come from PyPI through
pip's own cache. Everything (sources copy, wheel, venv, results, journal) lives in one
temporary directory, removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .facts import checkpoint

ROOT = Path(__file__).resolve().parents[2]
N = 500

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]

# Not part of the sources: what a checkout accumulates while it is used (the top-level
# names only at the top: orchestrator/results/ is a package).
TOP_LEVEL_JUNK = {".git", ".venv", "build", "dist", "results"}
ANYWHERE_JUNK = shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache",
                                       ".ruff_cache")


def _not_sources(folder: str, names: list[str]) -> set[str]:
    junk = set(ANYWHERE_JUNK(folder, names))
    return junk | (TOP_LEVEL_JUNK & set(names)) if Path(folder) == ROOT else junk


def _env(state: Path) -> dict[str, str]:
    """The caller's environment without anything that would point back at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TCPLAB_ROOT", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "TCPLAB_STATE_DIR": str(state)}


def _check(argv: list[str], cwd: Path, env: dict[str, str], timeout: float
           ) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """(venv bin, a scratch directory, environment): the wheel installed in a fresh venv."""
    with tempfile.TemporaryDirectory(prefix="tcplab-wheel-") as tmp_name:
        tmp = Path(tmp_name)
        env = _env(tmp / "state")
        (tmp / "state").mkdir()
        # Built from a copy, so the checkout gets no build/ or *.egg-info and no stale
        # build/lib of an earlier build can slip into the wheel.
        src = tmp / "src"
        shutil.copytree(ROOT, src, ignore=_not_sources)
        _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                "-q", str(src), "-w", str(tmp / "dist")], tmp, env, 600)
        (wheel,) = (tmp / "dist").glob("tcplab-*.whl")
        venv = tmp / "venv"
        _check([sys.executable, "-m", "venv", str(venv)], tmp, env, 300)
        # --no-compile: byte-compiling matplotlib & co. is a third of the install's time.
        _check([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                "--disable-pip-version-check", str(wheel)], tmp, env, 900)
        yield venv / "bin", tmp, env


def test_installed_package_is_not_the_checkout(installed: tuple[Path, Path, dict]) -> None:
    bin_dir, tmp, env = installed
    code = ("import sys, orchestrator; from orchestrator import resources as r; "
            "print(orchestrator.__file__); print(r.checkout()); print(r.side_script()); "
            "print('class Worker' in r.side_program()); "
            "print([p for p in sys.path if p.endswith(('site-packages', 'dist-packages')) "
            "and not p.startswith(sys.prefix)])")
    out = _check([str(bin_dir / "python"), "-c", code], tmp, env, 60).stdout.splitlines()
    venv = str(bin_dir.parent)
    assert out[0].startswith(venv) and out[1] == "None", out
    assert out[2].startswith(venv), out
    assert out[2].endswith("/site-packages/orchestrator/_data/scenarios/side.py"), out
    assert out[3] == "True", out  # the one side program embeds the worker module
    assert out[4] == "[]", f"the venv sees site-packages outside it: {out}"


def test_every_module_imports_with_the_declared_dependencies(
        installed: tuple[Path, Path, dict]) -> None:
    """Only what pyproject.toml declares is installed: an undeclared import fails here."""
    bin_dir, tmp, env = installed
    code = ("import importlib, pkgutil, orchestrator; names = [m.name for m in "
            "pkgutil.walk_packages(orchestrator.__path__, 'orchestrator.')]; "
            "[importlib.import_module(n) for n in names]; print(len(names))")
    imported = int(_check([str(bin_dir / "python"), "-c", code], tmp, env, 120).stdout)
    here = len(list((ROOT / "orchestrator").rglob("*.py"))) - 1  # but orchestrator/__init__
    assert imported == here, f"imported {imported} modules, the checkout has {here} files"


def test_doctor_scenarios_profiles_from_root_dir(installed: tuple[Path, Path, dict]) -> None:
    bin_dir, _tmp, env = installed
    tcplab = str(bin_dir / "tcplab")
    doctor = _check([tcplab, "doctor"], Path("/"), env, 120).stdout
    assert "ready for lab runs" in doctor, doctor
    scenarios = _check([tcplab, "scenarios"], Path("/"), env, 60).stdout.split()
    for name in ("idle", "c2s", "s2c", "timewait", "synrecv"):
        assert name in scenarios, scenarios
    profiles = _check([tcplab, "profiles", "show", "small-buffers"], Path("/"), env, 60).stdout
    assert "net.ipv4.tcp_rmem" in profiles and "4096" in profiles, profiles


def test_idle_run_from_another_directory(installed: tuple[Path, Path, dict]) -> None:
    """The first snapshot runs sockdiag.py from the package data (it used to be missing)."""
    bin_dir, tmp, env = installed
    work = tmp / "work"
    work.mkdir()
    _check([str(bin_dir / "tcplab"), "run", "--scenario", "idle", "-n", str(N),
            "--backend", "netns"], work, env, 900)
    (run_dir,) = list((work / "results").iterdir())  # results default to ./results
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete", result.get("error")
    established = checkpoint(result, "established")
    assert established["connections"] == N
    assert established["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N}}
    assert result["metadata"]["git_commit"] is None  # installed, not run from a checkout
    assert (run_dir / "report.html").is_file()  # templates found in the package
    runs = tmp / "state" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "the run left its journal behind"
