"""Unit tests resolve kernel versions against the captured package index (no network).

A plan for the vm backend checks its kernels in Debian's index (tcplab's private apt
lists under the cache directory). Here that directory is a fresh one per session whose
lists are tests/data/vm/packages/ and whose refresh stamp is new, so no test runs
apt-get or depends on the machine's cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.backends.vm import archive

_CACHE = Path(tempfile.mkdtemp(prefix="tcplab-unit-cache-"))
os.environ["TCPLAB_CACHE_DIR"] = str(_CACHE)
_DATA = Path(__file__).resolve().parents[1] / "data" / "vm" / "packages"
archive.setup(_CACHE / "apt")
for _url, _suite in archive.SUITES:
    _name = _url.split("://", 1)[1].replace("/", "_")
    shutil.copy(_DATA / f"{_suite}.Packages",
                _CACHE / "apt" / "lists" / f"{_name}_dists_{_suite}_main_binary-amd64_Packages")
(_CACHE / "apt" / "updated").write_text("captured index (tests/unit/conftest.py)\n")


def pytest_sessionfinish() -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)
