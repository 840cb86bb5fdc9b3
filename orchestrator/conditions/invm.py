"""The fallback engine inside a VM: the delay line runs in the VM that carries the direction.

On the vm backend each host is its own kernel, so the delay line cannot run on this
machine: it is copied into the VM over SSH and run there, bound to an NFQUEUE of the VM's
kernel, and fed by an nftables rule (the VM image has nftables; Debian's cloud kernels
build ``nfnetlink_queue`` and ``nft_queue`` as modules, loaded here first):

1. ``modprobe nfnetlink_queue nft_queue``; the script goes to :data:`REMOTE_DIR` (a tmpfs);
2. the delay line starts in its own session (``setsid``), writes ``--ready`` once bound;
3. ``nft -f -`` adds, in a table of its own, a chain at the mangle priority (-150) of
   ``prerouting`` (an end's ingress: ``iifname DEV queue num Q``) or ``forward`` (a
   router's direction: ``oifname DEV queue num Q``) - the hooks and priority of the
   iptables ``mangle`` rules the netns fallback uses;
4. at every checkpoint SIGUSR1 makes it write ``--stats``, read back over SSH.

Nothing here is journalled on this machine: the process, its files and the rules live in
the VM and die with it (teardown still stops the process politely first). The pid in the
VM is recorded in ``metadata.link.applied``.

The pure parts (command text) are tested in tests/unit/test_link_invm.py.
"""

from __future__ import annotations

import json
import shlex
from pathlib import PurePosixPath
from typing import Any

from ..errors import RunError
from ..runner import Runner
from . import fallback
from .link import Link
from .placement import Attachment

REMOTE_DIR = "/run/tcplab-link"
TABLE = "tcplab_link"
MODULES = ("nfnetlink_queue", "nft_queue")
READY_TIMEOUT_S = 60  # a TCG VM starts python3 slowly (seconds)
STATS_TIMEOUT_S = 15


def nft_rules(attachment: Attachment, dev: str, family: str) -> str:
    """``nft -f -`` input sending one direction's packets to NFQUEUE ``Q`` (idempotent
    table and chain: a router's two directions share them)."""
    table = "inet" if family == "ipv6" else "ip"
    hook, match = (("forward", "oifname") if attachment.hook == "forward"
                   else ("prerouting", "iifname"))
    return (f"add table {table} {TABLE}\n"
            f"add chain {table} {TABLE} {hook} "
            f"{{ type filter hook {hook} priority -150; policy accept; }}\n"
            f"add rule {table} {TABLE} {hook} {match} \"{dev}\" "
            f"queue num {attachment.queue_num}\n")


def describe(attachment: Attachment, dev: str) -> str:
    hook, match = (("forward", "oifname") if attachment.hook == "forward"
                   else ("prerouting", "iifname"))
    return (f"delay line inside the VM on NFQUEUE {attachment.queue_num} "
            f"(nft {hook} priority -150, {match} {dev})")


def _paths(attachment: Attachment) -> tuple[str, str, str]:
    """(stats, ready, log) paths in the VM."""
    base = PurePosixPath(REMOTE_DIR)
    return (str(fallback.stats_path(base, attachment)),
            str(fallback.ready_path(base, attachment)),
            str(fallback.log_path(base, attachment)))


def start_script(attachment: Attachment, link: Link, seed: int) -> str:
    """The shell text that starts one direction's delay line in the VM and prints its pid
    once it is bound (exit 3: it died; 4: not ready in time; the log's tail on stderr)."""
    stats, ready, log = _paths(attachment)
    base = PurePosixPath(REMOTE_DIR)
    argv = fallback.delayline_argv(base / fallback.SCRIPT, attachment, link, base, seed)
    loops = READY_TIMEOUT_S * 10
    return (f"rm -f {ready} {stats}\n"
            f"setsid {shlex.join(argv)} >{log} 2>&1 </dev/null &\n"
            "pid=$!\n"
            "i=0\n"
            f"while [ ! -e {ready} ]; do\n"
            f"  kill -0 $pid 2>/dev/null || {{ tail -n 3 {log} >&2; exit 3; }}\n"
            "  i=$((i + 1))\n"
            f"  [ $i -gt {loops} ] && {{ tail -n 3 {log} >&2; exit 4; }}\n"
            "  sleep 0.1\n"
            "done\n"
            "echo $pid\n")


def stats_script(attachment: Attachment, pid: int) -> str:
    """SIGUSR1, then the --stats file once rewritten (empty output: no answer)."""
    stats = _paths(attachment)[0]
    loops = STATS_TIMEOUT_S * 10
    return (f"rm -f {stats}\n"
            f"kill -USR1 {pid} || exit 0\n"
            "i=0\n"
            f"while [ ! -e {stats} ] && [ $i -lt {loops} ]; do sleep 0.1; i=$((i + 1)); done\n"
            f"cat {stats} 2>/dev/null || true\n")


def stop_script(pid: int) -> str:
    """SIGTERM (the delay line releases what it holds and exits), up to 10 s, then KILL."""
    return (f"kill -TERM {pid} 2>/dev/null || exit 0\n"
            "i=0\n"
            f"while kill -0 {pid} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n"
            f"kill -KILL {pid} 2>/dev/null || true\n")


def start(runner: Runner, program: str, attachment: Attachment, dev: str, link: Link,
          family: str, seed: int) -> int:
    """Load the modules, copy the script, start the delay line, add the rule: its pid."""
    modules = runner.run(["modprobe", "-a", *MODULES], check=False, timeout=60)
    if not modules.ok:
        raise RunError(f"{attachment.host}: `modprobe -a {' '.join(MODULES)}` failed "
                       f"({modules.stderr.strip()[-160:]}): the delay line needs NFQUEUE "
                       "support (nfnetlink_queue, nft_queue) in the VM's kernel; use "
                       "--link-engine netem, or a kernel that has them")
    # in the command line, not on stdin: fabric's stdin writer races a short command's
    # exit ("Socket is closed") with a text this long (27 KB; sshd takes up to 128 KB)
    runner.run(f"mkdir -p {REMOTE_DIR} && printf '%s' {shlex.quote(program)} "
               f"> {REMOTE_DIR}/{fallback.SCRIPT}", timeout=60)
    result = runner.run(start_script(attachment, link, seed), check=False,
                        timeout=READY_TIMEOUT_S + 30)
    if not result.ok or not result.stdout.strip().isdigit():
        tail = " | ".join(result.stderr.strip().splitlines()[-3:]) or "no output"
        state = {3: "exited", 4: f"was not ready after {READY_TIMEOUT_S} s"}.get(
            result.exit_code, f"could not be started (exit {result.exit_code})")
        raise RunError(f"{attachment.host}: the delay line inside the VM (NFQUEUE "
                       f"{attachment.queue_num}) {state}: {tail}")
    pid = int(result.stdout.strip())
    runner.run(["nft", "-f", "-"], stdin=nft_rules(attachment, dev, family), timeout=60)
    return pid


def read_stats(runner: Runner, attachment: Attachment, pid: int) -> dict[str, Any]:
    """The delay line's statistics now, under netem's names ({} when it does not answer)."""
    text = runner.run(stats_script(attachment, pid), check=False,
                      timeout=STATS_TIMEOUT_S + 30).stdout
    try:
        return fallback.normalize(json.loads(text))
    except json.JSONDecodeError:
        return {}


def stop(runner: Runner, pid: int) -> None:
    runner.run(stop_script(pid), check=False, timeout=60)
