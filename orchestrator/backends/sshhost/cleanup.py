"""Cleanup of the ssh backend: host sysctls journalled on the hosts, restored over SSH.

Before a change, the old values are written to a file on the host
(``/run/tcplab/remote/<run>-<host>.json``, by :data:`REMOTE_JOURNAL`) as well as to the
run's journal here; the undo, ``tcplab wipe`` and ``tcplab wipe --lab FILE`` restore them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from ...errors import LabError, RunError
from ...journal import alive
from .transport import HostRunner, Target

REMOTE_DIR = "/run/tcplab/remote"

#: The sysctl journal on a host: ``save PATH JSON`` | ``restore PATH [VALUES]`` | ``list DIR``.
REMOTE_JOURNAL = r"""
import json, os, sys
op, path = sys.argv[1], sys.argv[2]
def write(name, value):
    with open("/proc/sys/" + name.replace(".", "/"), "w") as fh:
        fh.write(value + "\n")
if op == "save":
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(sys.argv[3])
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    print(json.dumps({"saved": path}))
elif op == "restore":
    values = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    if values is None:
        try:
            values = json.load(open(path))["old"]
        except (OSError, ValueError, KeyError):
            values = {}
    errors = {}
    for name, value in values.items():
        try:
            write(name, value)
        except OSError as exc:
            errors[name] = exc.strerror or str(exc)
    if not errors:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    print(json.dumps({"restored": sorted(values), "errors": errors}))
elif op == "list":
    out = []
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.endswith(".json"):
                try:
                    out.append(dict(json.load(open(os.path.join(path, name))),
                                    path=os.path.join(path, name)))
                except (OSError, ValueError):
                    pass
    print(json.dumps(out))
"""


def _runner_for(entry: dict, runners: Mapping[str, HostRunner] | None = None) -> HostRunner:
    name = entry["host"]
    if runners and name in runners:
        return runners[name]
    target = Target.of(entry["target"])
    return HostRunner(name, target, ctl_port=entry.get("ctl_port"))


def restore(runner: HostRunner, path: str, old: Mapping[str, str] | None) -> list[str]:
    """Write the old values back on the host and remove its journal file. Returns names."""
    argv = ["python3", "-c", REMOTE_JOURNAL, "restore", path]
    if old is not None:
        argv.append(json.dumps(dict(old)))
    data = json.loads(runner.run(argv, timeout=60).stdout)
    if data["errors"]:
        raise RunError(f"{runner.host}: could not restore "
                       + ", ".join(f"{k} ({v})" for k, v in data["errors"].items()))
    return list(data["restored"])


def make_remote_undo(runners: Mapping[str, HostRunner] | None = None
                     ) -> Callable[[dict], None]:
    def undo_remote_sysctl(entry: dict) -> None:
        runner = _runner_for(entry, runners)
        try:
            restore(runner, entry["path"], entry.get("old"))
        finally:
            if not runners or entry["host"] not in runners:
                runner.close()

    return undo_remote_sysctl


def remote_undo_handlers() -> dict[str, Callable[[dict], None]]:
    """For ``tcplab wipe``: journal entries of remote sysctls, restored over SSH."""
    return {"remote_sysctl": make_remote_undo()}


def wipe_remote(lab_path: Path, keep_runs: set[str]) -> list[str]:
    """``tcplab wipe --lab FILE``: restore sysctls that runs journalled on the lab's ssh hosts.

    A journal file of a run in ``keep_runs`` (live here), or whose orchestrator still runs
    on this machine, is left alone.
    """
    from ...config import load_lab

    lab = load_lab(Path(lab_path))
    messages: list[str] = []
    here = socket.gethostname()
    for spec in lab.hosts:
        if spec.ssh is None:
            continue
        runner = HostRunner(spec.name, Target.of(spec.ssh))
        try:
            try:
                runner.sudo = runner.target.user != "root"
                files = json.loads(runner.run(["python3", "-c", REMOTE_JOURNAL, "list",
                                               REMOTE_DIR], timeout=60).stdout)
            except LabError as exc:
                messages.append(f"{spec.name}: not reachable over SSH ({exc}); its sysctls "
                                "not checked")
                continue
            if not files:
                messages.append(f"{spec.name}: no journalled sysctls")
            for record in files:
                run = record.get("run", "?")
                owner = record.get("owner") or {}
                live = run in keep_runs or (
                    owner.get("hostname") == here and owner.get("pid")
                    and alive(int(owner["pid"]), owner.get("start")))
                if live:
                    messages.append(f"{spec.name}: run {run} still running; its sysctls left "
                                    "alone")
                    continue
                try:
                    names = restore(runner, record["path"], None)
                    messages.append(f"{spec.name}: restored {len(names)} sysctl(s) of run {run} "
                                    f"({', '.join(names)})")
                except LabError as exc:
                    messages.append(f"{spec.name}: run {run}: {exc}")
        finally:
            runner.close()
    return messages
