"""Result files: versioned JSON, written atomically, never overwritten (like pyperf).

Reports and comparisons read only these files, through ``load_result`` (a typed
``Result``, results/model.py). The schema is documented in
docs/results.md; bump SCHEMA when a field changes meaning.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, LabError
from .model import Result

SCHEMA = "tcplab.result/1"
RESULT_FILE = "result.json"
REQUIRED = ("run_id", "status", "scenario", "profile", "lab", "metadata", "checkpoints")


def new_run_dir(results: Path, scenario: str, profile: str, now: float | None = None) -> Path:
    """``results/<YYYYmmdd-HHMMSS>-<scenario>-<profile>``, never an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return new_dir(results, f"{stamp}-{scenario}-{profile}", "runs")


def new_dir(results: Path, base: str, what: str) -> Path:
    """``results/<base>``, or ``<base>-2``... : a new directory, never an existing one."""
    results.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = results / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise LabError(f"{results}: too many {what} named {base}; remove some")


def write_json_atomic(path: Path, data: Any, overwrite: bool = False) -> None:
    """Write to a temporary file in the same directory, fsync, then rename into place."""
    if path.exists() and not overwrite:
        raise LabError(f"{path} exists; results are never overwritten")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if a result appeared meanwhile: never clobber
            os.unlink(tmp)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, FileExistsError):
            raise LabError(f"{path} exists; results are never overwritten") from None
        raise LabError(f"cannot write {path}: {exc.strerror}; free some disk space or choose "
                       "another results directory") from None


def result_path(run: Path) -> Path:
    return run / RESULT_FILE if run.is_dir() else run


def check_schema(schema: Any, current: str, where: str, not_it: str, noun: str = "") -> int:
    """The version N of a ``family/N`` schema string, checked against ``current``
    (``tcplab.result/1``, ``tcplab.bundle/1``): a foreign one raises ``not_it``, a newer
    one says to upgrade tcplab."""
    family = current.rsplit("/", 1)[0]
    if not isinstance(schema, str) or not schema.startswith(family + "/"):
        raise InputError(not_it)
    try:
        version = int(schema.rsplit("/", 1)[1])
    except ValueError:
        raise InputError(f"{where}: unreadable {noun}schema {schema!r}") from None
    if version > int(current.rsplit("/", 1)[1]):
        raise InputError(f"{where}: {noun}schema {schema} is newer than this tcplab understands "
                         f"({current}); upgrade tcplab to read it")
    return version


def load_result(run: Path) -> Result:
    """Read a saved result; refuse unknown or newer schemas with a clear message."""
    path = result_path(run)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no result here; pass a run directory under results/") from None
    except UnicodeDecodeError as exc:  # a bundle or other binary file under that name
        raise InputError(f"{path}: not a readable tcplab result (not UTF-8 text: byte "
                         f"{exc.start}); a bundle (.tar.gz) is read by `tcplab compare` "
                         "or `run --bundle`, or `tcplab import` it first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable tcplab result ({exc})") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    check_schema(schema, SCHEMA, str(path), f"{path}: not a tcplab result (schema {schema!r})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"{path}: not a complete tcplab result: missing {', '.join(missing)}; "
                         "was it written by hand or cut short?")
    return Result.from_dict(data)
