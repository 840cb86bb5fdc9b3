"""Run the ledger's bpftrace program for one run: readiness, start, dumps, stop.

Why bpftrace (Debian 0.17): it attaches to the kmem tracepoints (stable across kernels,
unlike kprobe-based bcc tools, and this kernel has no kprobes), reads BTF types (sk_buff,
net_device, task_struct) without kernel headers, and prints maps on demand. A dump is
asked for by calling getpgid() with a magic pid the program watches for: synchronous, with
an end marker, no signal races. The process and any tracefs mount it needed are
journalled, so teardown, Ctrl-C and ``tcplab wipe`` remove them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import InputError, RunError
from ..journal import Journal, process_start_time

TRACEFS = Path("/sys/kernel/tracing")
BTF = Path("/sys/kernel/btf/vmlinux")
SCRIPT = Path(__file__).with_name("ledger.bt")
TRACEPOINTS = ("kmem/kmem_cache_alloc", "kmem/kmem_cache_free", "kmem/kmalloc", "kmem/kfree",
               "kmem/mm_page_alloc", "kmem/mm_page_free", "net/netif_receive_skb",
               "irq/softirq_exit", "syscalls/sys_enter_getpgid")
MAGIC_BASE = 0x7A000000  # getpgid(MAGIC_BASE + pid of tcplab) asks for a dump


def tracefs_mounted() -> bool:
    return (TRACEFS / "events").is_dir()


def readiness() -> list[str]:
    """What stops the ledger on this machine (empty: ready). Never changes anything."""
    missing = []
    if shutil.which("bpftrace") is None:
        missing.append("bpftrace is not installed (apt-get install bpftrace)")
    if not BTF.exists():
        missing.append(f"the kernel has no BTF ({BTF} missing; CONFIG_DEBUG_INFO_BTF)")
    if os.geteuid() != 0:
        missing.append("the ledger needs root (BPF programs)")
    if not tracefs_mounted():
        if not TRACEFS.is_dir() or "tracefs" not in Path("/proc/filesystems").read_text():
            missing.append("the kernel has no tracefs (CONFIG_FTRACE)")
        return missing  # tracepoints cannot be listed before the mount (done by the run)
    events = TRACEFS / "events"
    absent = [t for t in TRACEPOINTS if not (events / t).is_dir()]
    if absent:
        missing.append(f"tracepoints missing: {', '.join(absent)}")
    fmt = events / "kmem/kmem_cache_alloc/format"
    if fmt.is_file() and "name;" not in fmt.read_text():
        missing.append("kmem:kmem_cache_alloc has no `name` field (kernels before 6.10): "
                       "cache names cannot be read")
    return missing


def refuse_unless_ready(backend: str) -> None:
    """Before anything starts: the ledger traces this machine's kernel only."""
    if backend not in ("netns", "docker"):
        raise InputError(f"--ledger/LEDGER: the {backend} backend's hosts run on kernels of "
                         "their own, which the ledger cannot trace yet; use --backend netns "
                         "or docker, or run without --ledger")
    missing = readiness()
    if missing:
        raise InputError(f"--ledger/LEDGER: not possible here: {'; '.join(missing)}; "
                         "`tcplab doctor` shows ledger readiness")


def script(netns: list[int], magic: int) -> str:
    lab = "\n".join(f"  @lab[{n}] = 1;" for n in sorted(set(netns)))
    return SCRIPT.read_text().replace("//LAB//", lab).replace("//MAGIC//", str(magic))


class Tracer:
    """One bpftrace process tracing the given network namespaces."""

    def __init__(self, journal: Journal, raw_dir: Path, netns: list[int],
                 max_objects: int) -> None:
        self.journal, self.raw_dir = journal, raw_dir
        self.netns, self.max_objects = netns, max_objects
        self.magic = MAGIC_BASE + os.getpid()
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = raw_dir / "ledger.out"
        self.seq = 0
        self.offset = 0

    def start(self, timeout: float = 60) -> float:
        """Mount tracefs if needed (journalled), start bpftrace, wait until attached.
        Returns the seconds it took."""
        started = time.monotonic()
        if not tracefs_mounted():
            self.journal.record("mount", path=str(TRACEFS))
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True,
                           capture_output=True)
        missing = readiness()
        if missing:
            raise RunError(f"ledger: {'; '.join(missing)}")
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        program = self.raw_dir / "ledger.bt"
        program.write_text(script(self.netns, self.magic))
        env = dict(os.environ, BPFTRACE_MAP_KEYS_MAX=str(self.max_objects),
                   BPFTRACE_STRLEN="64")
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(["bpftrace", str(program)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.journal.record("process", pid=self.proc.pid,
                            start=process_start_time(self.proc.pid), name="bpftrace (ledger)")
        self._wait_for("LEDGER READY", timeout)
        return time.monotonic() - started

    def _wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.out.read_text(errors="replace")
            at = text.find(marker, self.offset)
            if at >= 0:
                chunk = text[self.offset:at]
                self.offset = at + len(marker)
                return chunk
            if self.proc is not None and self.proc.poll() is not None:
                raise RunError(f"ledger: bpftrace exited ({self.proc.returncode}): "
                               f"{text[-600:].strip()}")
            if time.monotonic() > deadline:
                raise RunError(f"ledger: bpftrace did not print {marker!r} within "
                               f"{timeout:.0f} s; its output is in {self.out}")
            time.sleep(0.05)

    def dump(self, timeout: float = 120) -> tuple[str, float]:
        """The live objects now (bpftrace's map print) and the seconds the dump took."""
        started = time.monotonic()
        self.seq += 1
        try:
            os.getpgid(self.magic)
        except OSError:
            pass  # no such process: expected, the tracepoint saw the call
        text = self._wait_for(f"LEDGER END {self.seq}\n", timeout)
        return text, time.monotonic() - started

    def missed(self) -> int:
        """Tracepoint events the kernel did not run the program for, since the start.

        A BPF program on a tracepoint does not run while another BPF program runs on the
        same CPU (a softirq interrupting one, say); each skip is counted in the program's
        ``recursion_misses`` (its fdinfo). A missed alloc or free is an object the ledger
        lacks or still counts."""
        if self.proc is None:
            return 0
        total = 0
        for info in Path(f"/proc/{self.proc.pid}/fdinfo").glob("*"):
            try:
                text = info.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("recursion_misses:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        """Stop bpftrace now (the journal's undo would too, later)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

