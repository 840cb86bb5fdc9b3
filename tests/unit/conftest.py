"""Unit tests resolve kernel versions against the captured package index (no network).

A plan for the vm backend checks its kernels in Debian's index (tcplab's private apt
lists under the cache directory). Here that directory is a fresh one per session whose
lists are tests/data/vm/packages/ and whose refresh stamp is new, so no test runs
apt-get or depends on the machine's cache.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from orchestrator.backends.vm import archive

_DATA = Path(__file__).resolve().parents[1] / "data" / "vm" / "packages"
_CACHE: Path | None = None


def _captured_cache() -> Path:
    """One cache directory per session whose apt lists are the captured index."""
    global _CACHE
    if _CACHE is None:
        _CACHE = Path(tempfile.mkdtemp(prefix="tcplab-unit-cache-"))
        archive.setup(_CACHE / "apt")
        for url, suite in archive.SUITES:
            name = url.split("://", 1)[1].replace("/", "_")
            shutil.copy(_DATA / f"{suite}.Packages",
                        _CACHE / "apt" / "lists" / f"{name}_dists_{suite}_main_binary-amd64_Packages")
        (_CACHE / "apt" / "updated").write_text("captured index (tests/unit/conftest.py)\n")
    return _CACHE


@pytest.fixture(autouse=True)
def _unit_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per unit test, not per process: set at import time, this variable leaked into the
    integration tests of the same session, whose VM runs then missed the machine's kernel
    cache and tried to download from the captured (unsigned) index."""
    monkeypatch.setenv("TCPLAB_CACHE_DIR", str(_captured_cache()))


def pytest_sessionfinish() -> None:
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)
