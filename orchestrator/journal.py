"""The run journal: every resource a run creates is written down before it is created.

Teardown, Ctrl-C and ``tcplab wipe`` after a crash all use the same undo: walk the
journal backwards and remove or restore each entry. Nothing that is not in a journal
(or, for Docker, not labelled ``tcplab.run``) is ever touched.

State lives in ``/run/tcplab`` (tmpfs: it goes away at reboot, like namespaces and
sysctl changes do); ``TCPLAB_STATE_DIR`` overrides it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

Entry = dict[str, Any]
UndoFn = Callable[[Entry], None]


def state_root() -> Path:
    return Path(os.environ.get("TCPLAB_STATE_DIR", "/run/tcplab"))


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot, or None if it is gone.

    Stored with every pid we record, so a recycled pid is never mistaken for ours.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, start: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start is None or now == start)


@dataclass
class Journal:
    """The append-only record of one run's resources."""

    run_id: str
    dir: Path

    @property
    def path(self) -> Path:
        return self.dir / "journal.jsonl"

    @classmethod
    def create(cls, run_id: str) -> Journal:
        directory = state_root() / "runs" / run_id
        directory.mkdir(parents=True, exist_ok=False)
        directory.chmod(0o700)
        journal = cls(run_id, directory)
        owner = {"pid": os.getpid(), "start": process_start_time(os.getpid()),
                 "created": time.time()}
        (directory / "owner.json").write_text(json.dumps(owner))
        return journal

    def record(self, kind: str, **fields: Any) -> Entry:
        entry = {"kind": kind, **fields}
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a crash: the resource was not created yet
        return out

    def owner(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "owner.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def is_stale(self) -> bool:
        owner = self.owner()
        return not owner or not alive(int(owner.get("pid", 0)), owner.get("start"))

    def undo(self, handlers: dict[str, UndoFn], log: Callable[[str], None]) -> list[str]:
        """Undo every entry, newest first. Returns the problems (never raises)."""
        problems = []
        for entry in reversed(self.entries()):
            handler = handlers.get(entry["kind"])
            if handler is None:
                problems.append(f"no handler to undo {entry}")
                continue
            try:
                handler(entry)
            except Exception as exc:  # keep going: undo as much as possible
                problems.append(f"{entry['kind']} {entry.get('name') or entry.get('id')}: {exc}")
        if not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        for p in problems:
            log(f"cleanup: {p}")
        return problems


def journals() -> Iterator[Journal]:
    runs = state_root() / "runs"
    if runs.is_dir():
        for d in sorted(runs.iterdir()):
            if d.is_dir():
                yield Journal(d.name, d)


def stale_runs() -> list[Journal]:
    return [j for j in journals() if j.is_stale()]


# --- undo handlers for what the local machine holds -------------------------------

def undo_netns(entry: Entry) -> None:
    name = entry["name"]
    if Path("/run/netns", name).exists():
        for pid in _netns_pids(name):
            _kill(pid)
        subprocess.run(["ip", "netns", "delete", name], check=True, capture_output=True)


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def undo_link(entry: Entry) -> None:
    name = entry["name"]
    if Path("/sys/class/net", name).exists():
        subprocess.run(["ip", "link", "delete", name], check=True, capture_output=True)


def undo_host_sysctl(entry: Entry) -> None:
    from . import sysctls  # local import: journal is imported by everything

    sysctls.write_host(entry["name"], entry["old"])


def undo_process(entry: Entry) -> None:
    pid, start = int(entry["pid"]), entry.get("start")
    if alive(pid, start):
        _kill(pid)


def undo_path(entry: Entry) -> None:
    path = Path(entry["path"])
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def undo_mount(entry: Entry) -> None:
    """A tracefs mount the ledger made; left alone if still busy (umount fails)."""
    path = Path(entry["path"])
    if (path / "events").is_dir():
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if process_start_time(pid) is None:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


LOCAL_HANDLERS: dict[str, UndoFn] = {
    "netns": undo_netns,
    "link": undo_link,
    "host_sysctl": undo_host_sysctl,
    "process": undo_process,
    "path": undo_path,
    "mount": undo_mount,
}


class HostLock:
    """One measuring run per machine: slab counters are global.

    An flock on a file: the kernel drops it when the holder dies, so a crashed run
    cannot leave it stuck.
    """

    def __init__(self, label: str, wait: float | None = None,
                 note: Callable[[str], None] | None = None) -> None:
        self.label = label
        # --wait SECONDS (inf: no limit); else TCPLAB_LOCK_WAIT, the older spelling
        self.wait = wait if wait is not None else float(os.environ.get("TCPLAB_LOCK_WAIT", "0")
                                                         or 0)
        self.note = note
        self.fd: int | None = None
        self.shared = False  # held by the sweep this run belongs to (inherited)

    @staticmethod
    def path() -> Path:
        """Machine-wide on purpose (not under the state dir): slab counters are."""
        return Path(os.environ.get("TCPLAB_LOCK", "/run/lock/tcplab.lock"))

    def inherited(self) -> bool:
        """A sweep that runs VM kernels at once holds the lock and hands its descriptor to
        its children (``TCPLAB_LOCK_FD``): the same open file, so the lock is already ours.
        Only a descriptor of the lock file itself counts."""
        value = os.environ.get("TCPLAB_LOCK_FD", "")
        if not value.isdigit():
            return False
        fd = int(value)
        try:
            mine, lock = os.fstat(fd), os.stat(self.path())
            if (mine.st_dev, mine.st_ino) != (lock.st_dev, lock.st_ino):
                return False
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds at once
        except OSError:
            return False
        self.shared = True
        return True

    def acquire(self) -> None:
        if self.inherited():
            return
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another run"
                if time.monotonic() < deadline:
                    if not told and self.note is not None:
                        self.note(f"waiting for the machine-wide lock ({holder})")
                        told = True
                    time.sleep(0.5)
                    continue
            os.close(fd)
            waited = f" (waited {self.wait:g} s)" if self.wait else ""
            raise InputError(
                f"another tcplab run is measuring on this machine ({holder}){waited}; slab "
                "counters are machine-wide: wait for it to finish, or pass --wait [SECONDS] "
                "to queue behind it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.label}, pid {os.getpid()}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.shared:  # the sweep's lock: it releases it once all its runs are done
            return
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
