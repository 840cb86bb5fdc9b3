"""``tcplab import BUNDLE...``: a colleague's runs become runs of the local library.

The bundle is checked and unpacked by the bundle package (every member listed, every
sha256 matching, no links, no absolute paths), into a temporary folder; then each run's
``result.json``, ``report.html`` and ``raw/`` are copied to
``results/imported/<origin>/<run-id>/``, apart from local runs so a colleague's
``20261126-...-idle-default`` never collides with yours. Nothing from the bundle is
executed: the setup files (lab, profile, scenario, image recipe) are not even copied.
``import.json`` beside each run records where it came from. A run already imported with
the same result is skipped; a different one under the same name is refused (never
overwritten).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST, opened
from ..errors import InputError
from ..results import RESULT_FILE, load_result, write_json_atomic
from .catalog import IMPORTED

ORIGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
IMPORT_FILE = "import.json"
COPIED = (RESULT_FILE, "report.html", "raw")


@dataclass(frozen=True)
class Imported:
    run_id: str
    path: Path
    skipped: bool  # already there, same result


def origin_of(bundle: Path, origin: str | None) -> str:
    """The folder name the bundle's runs go under: --origin, else the bundle's file name."""
    name = origin or re.sub(r"(\.tar\.gz|\.tgz)$", "", bundle.name)
    if not ORIGIN.match(name) or name in (".", ".."):
        if origin:
            raise InputError(f"--origin {origin!r}: use letters, digits and . _ + - (at most 64, "
                             "not starting with a dot), e.g. --origin alice")
        name = re.sub(r"[^A-Za-z0-9_.+-]", "-", name).lstrip(".-")[:64] or "bundle"
    return name


def _sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_run(src: Path, dest: Path) -> None:
    """Copy the run's files through a temporary sibling, renamed into place at the end."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name in COPIED:
            item = src / name
            if item.is_dir():
                shutil.copytree(item, tmp / name, symlinks=False)
            elif item.is_file():
                shutil.copyfile(item, tmp / name)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def import_bundle(bundle: Path, results: Path, origin: str | None = None) -> list[Imported]:
    """Check ``bundle`` and copy its runs into ``results/imported/<origin>/``."""
    bundle = Path(bundle)
    where = origin_of(bundle, origin)
    out: list[Imported] = []
    with opened(bundle) as unpacked:
        runs = unpacked.run_dirs()
        for src in runs:
            result = load_result(src)  # refuses what is not a readable result, before copying
            run_id = src.name
            dest = Path(results) / IMPORTED / where / run_id
            if dest.exists():
                if (dest / RESULT_FILE).is_file() and \
                        _sha_file(dest / RESULT_FILE) == _sha_file(src / RESULT_FILE):
                    out.append(Imported(result.run_id, dest, True))
                    continue
                raise InputError(f"{dest}: a different run of that name was imported from "
                                 f"{where} before; imported runs are never overwritten: pass "
                                 "--origin NAME to keep this bundle's runs apart")
            _copy_run(src, dest)
            record: dict[str, Any] = {
                "schema": "tcplab.import/1", "origin": where, "bundle": bundle.name,
                "bundle_manifest_sha256": unpacked.manifest_sha256,
                "exported_utc": unpacked.manifest.get("created_utc"),
                "exported_by": unpacked.manifest.get("tcplab_version"),
                "imported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "result_sha256": _sha_file(dest / RESULT_FILE),
                "manifest": MANIFEST,
            }
            write_json_atomic(dest / IMPORT_FILE, record)
            out.append(Imported(result.run_id, dest, False))
    return out
