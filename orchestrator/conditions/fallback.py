"""The fallback engine: the delay line (``scenarios/delayline.py``) behind an NFQUEUE rule.

Per direction, in the lab namespace that carries it (a netns, or a container's network
namespace entered from this machine with nsenter: the container stays unprivileged):

1. the delay line starts in the background, bound to NFQUEUE ``Q`` of that namespace,
   and writes its ``--ready`` file once bound (only then does a rule send it packets);
2. ``iptables -t mangle -A PREROUTING -i DEV -j NFQUEUE --queue-num Q`` (an end's
   ingress) or ``... FORWARD -o DEV ...`` (a router's direction), and the same with
   ip6tables; the rules go away with the namespace;
3. at every checkpoint its ``--stats`` file says what it holds and what it dropped.

This module builds the commands; session.py runs them and journals the process.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path, PurePath
from typing import Any, TypeVar

from .link import Link
from .placement import Attachment

SCRIPT = "delayline.py"
P = TypeVar("P", bound=PurePath)  # a Path here, a PurePosixPath inside a VM (invm.py)


def delayline_argv(program: PurePath, attachment: Attachment, link: Link, files: PurePath,
                   seed: int) -> list[str]:
    """The delay line for one direction; ``files``: where its --stats and --ready go."""
    argv = ["python3", str(program), "--queue-num", str(attachment.queue_num),
            "--delay-us", str(link.delay_us), "--limit", str(link.hold_limit()),
            "--seed", str(seed), "--no-gso", "--stats", str(stats_path(files, attachment)),
            "--ready", str(ready_path(files, attachment))]
    if link.jitter_us:
        argv += ["--jitter-us", str(link.jitter_us)]
    if link.rate_bps:
        argv += ["--rate-bps", str(link.rate_bps)]
    if link.loss_pct:
        argv += ["--loss", f"{link.loss_pct / 100:g}"]  # the delay line takes a probability
    return argv


def _name(attachment: Attachment) -> str:
    return f"delayline-{attachment.host}-q{attachment.queue_num}"


def stats_path(files: P, attachment: Attachment) -> P:
    return files / f"{_name(attachment)}.stats.json"


def ready_path(files: P, attachment: Attachment) -> P:
    return files / f"{_name(attachment)}.ready"


def log_path(files: P, attachment: Attachment) -> P:
    return files / f"{_name(attachment)}.log"


def rule_argvs(attachment: Attachment, dev: str, family: str) -> list[list[str]]:
    """The NFQUEUE rules sending one direction's packets to the delay line."""
    chain, match = (("FORWARD", "-o") if attachment.hook == "forward" else ("PREROUTING", "-i"))
    rule = ["-t", "mangle", "-A", chain, match, dev, "-j", "NFQUEUE", "--queue-num",
            str(attachment.queue_num)]
    tools = ["iptables", "ip6tables"] if family == "ipv6" else ["iptables"]
    return [[tool, "-w", *rule] for tool in tools]


def read_stats(files: Path, attachment: Attachment, pid: int | None,
               timeout: float = 3.0) -> dict[str, Any]:
    """The delay line's statistics now: SIGUSR1 makes it write --stats; read once the file
    changed. {} when it does not answer (it died: the run notices elsewhere)."""
    path = stats_path(files, attachment)
    before = _mtime(path)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            return {}
        deadline = time.monotonic() + timeout
        while _mtime(path) == before and time.monotonic() < deadline:
            time.sleep(0.02)
    try:
        return normalize(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return {}


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def normalize(data: dict[str, Any]) -> dict[str, Any]:
    """The delay line's statistics under the names netem's are recorded with (held
    packets and bytes now; dropped so far: at the queue limit, lost, undelivered), plus
    its own counters that matter to a reader."""
    dropped = sum(int(data.get(k) or 0) for k in ("dropped_by_limit", "lost",
                                                  "dropped_undelivered"))
    out = {"held_packets": int(data.get("held_now") or 0),
           "held_bytes": int(data.get("held_bytes_now") or 0), "dropped": dropped,
           "sent_packets": int(data.get("released") or 0)}
    for key in ("dropped_by_limit", "lost", "max_held", "max_held_bytes", "gso_packets",
                "lateness_us"):
        if key in data:
            out[key] = data[key]
    return out
