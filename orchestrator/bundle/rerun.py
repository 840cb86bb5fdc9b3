"""Rerunning a bundle's setup here (``tcplab run --bundle``) and reading its runs."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .layout import BACKENDS, LAB_FILE, MANIFEST, PROFILE_FILE, SCENARIO_FILE, safe_name
from .unpack import unpack


@dataclass
class Unpacked:
    """A checked bundle, unpacked in a temporary directory (removed on leaving ``opened``)."""

    bundle: Path
    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    def run_dirs(self) -> list[Path]:
        dirs = []
        for run in self.manifest["runs"]:
            rel = f"{run.get('dir')}/result.json" if isinstance(run, dict) else None
            if not rel or rel not in {e["path"] for e in self.manifest["files"]}:
                raise InputError(f"{self.bundle}: {MANIFEST}: runs: {str(run)[:80]} has no "
                                 "result.json in the bundle")
            dirs.append(self.root / run["dir"])
        return dirs

    def section(self, *keys: str) -> dict[str, Any]:
        """A mapping of the manifest (``rerun``, ``setup``, ``setup.profile``); {} when absent.
        Anything else there is a damaged or hand-edited manifest: refused, naming the key."""
        doc: Any = self.manifest
        for depth, key in enumerate(keys):
            doc = doc.get(key) or {}
            if not isinstance(doc, dict):
                raise InputError(f"{self.bundle}: {MANIFEST}: {'.'.join(keys[:depth + 1])}: "
                                 f"expected a mapping, got {str(doc)[:60]!r}; ask for the "
                                 "bundle again")
        return doc

    def setting(self, key: str, check: Any, expected: str) -> Any:
        value = self.section("rerun").get(key)
        if not check(value):
            raise InputError(f"{self.bundle}: {MANIFEST}: rerun.{key}: expected {expected}, got "
                             f"{value!r}")
        return value

    def rerun_files(self) -> dict[str, Path]:
        """The lab, profile and scenario files to run, named as in the original run."""
        listed = {e["path"] for e in self.manifest["files"]}
        for path in (LAB_FILE, PROFILE_FILE, SCENARIO_FILE):
            if path not in listed:
                raise InputError(f"{self.bundle}: no {path} in the bundle; it holds runs but no "
                                 "setup to rerun")
        profile = safe_name(self.section("setup", "profile").get("name"), "profile")
        scenario = safe_name(self.section("setup", "scenario").get("name"), "scenario")
        where = self.root / ".rerun"
        (where / "profiles").mkdir(parents=True)
        (where / "scenarios").mkdir()
        files = {"lab": self.root / LAB_FILE,
                 "profile": where / "profiles" / f"{profile}.yaml",
                 "scenario": where / "scenarios" / f"{scenario}.yaml"}
        shutil.copyfile(self.root / PROFILE_FILE, files["profile"])
        shutil.copyfile(self.root / SCENARIO_FILE, files["scenario"])
        return files

    def shown(self, text: str) -> str:
        """A message with the temporary paths written as BUNDLE:member."""
        where = self.root / ".rerun"
        for path, member in ((where / "profiles", PROFILE_FILE),
                             (where / "scenarios", SCENARIO_FILE)):
            text = re.sub(re.escape(str(path)) + r"/[^:\s]+", f"{self.bundle}:{member}", text)
        return text.replace(f"{self.root}/", f"{self.bundle}:")

    def provenance(self, overridden: list[str]) -> dict[str, Any]:
        """``metadata.bundle`` of a run made from this bundle."""
        return {"file": str(self.bundle.resolve()), "manifest_sha256": self.manifest_sha256,
                "schema": self.manifest.get("schema"),
                "created": self.manifest.get("created"),
                "tcplab_version": self.manifest.get("tcplab_version"),
                "source_runs": [r.get("run_id") for r in self.manifest["runs"]
                                if isinstance(r, dict)],
                "setup_from_run": self.section("setup").get("from_run"),
                "overridden": overridden}


@contextlib.contextmanager
def opened(bundle: Path) -> Iterator[Unpacked]:
    """Check and unpack a bundle into a private temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tcplab-bundle-") as tmp:
        manifest, sha = unpack(Path(bundle), Path(tmp))
        yield Unpacked(Path(bundle), Path(tmp), manifest, sha)


def apply_to_run_args(b: Unpacked, args: Any) -> list[str]:
    """Fill the ``tcplab run`` arguments not given on the command line from the bundle.

    Returns the names of the settings the command line overrode.
    """
    def is_int(low: int, high: int | None = None):
        return lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= low
                          and (high is None or v <= high))

    settings = {
        "backend": b.setting("backend", lambda v: v in BACKENDS, " or ".join(BACKENDS)),
        "connections": b.setting("connections", is_int(1), "an integer >= 1"),
        "nbytes": b.setting("bytes", is_int(0), "an integer >= 0"),
        "family": b.setting("family", lambda v: v in ("ipv4", "ipv6"), "ipv4 or ipv6"),
        "server_model": b.setting("server_model", lambda v: v in ("blocking", "epoll"),
                                  "blocking or epoll"),
        "levels": b.setting("levels", is_int(1, 20), "an integer from 1 to 20"),
        "link": b.setting("link", lambda v: v is None or isinstance(v, str),
                          "link conditions like \"delay=25ms rate=40mbit\""),
    }
    files = b.rerun_files()
    overridden = []
    for attr, value in (("scenario", str(files["scenario"])), ("profile", [str(files["profile"])]),
                        ("lab", files["lab"]), *settings.items()):
        if getattr(args, attr, None) is not None:
            overridden.append(attr)
            continue
        if attr == "backend" and getattr(args, "kernels", None):
            continue  # --kernels chooses vm or this machine per kernel
        setattr(args, attr, value)
    return overridden

