"""Every writable value under /proc/sys/net, and what changed between two dumps.

One implementation for the integration tests (an autouse fixture compares the host
before and after every test, tests/integration/conftest.py) and for CI, which dumps the
host before and after the whole suite (``python3 tests/integration/netsysctls.py dump
FILE`` / ``compare FILE``). Standard library only: CI calls it before any venv exists.

Read-only files are counters (nf_conntrack_count moves with any traffic), not settings.
Per-interface keys (``conf/<if>/``, ``neigh/<if>/``) of an interface that came or went
meanwhile are not compared: a run's own bridges and veths live only while it runs, and
interfaces left behind are the leak checks' business. Any other key that appears or
disappears is a change (a module loaded, a subsystem turned on).
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = "/proc/sys/net"
_PER_INTERFACE = ("/conf/", "/neigh/")


def values(root: str = ROOT) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            try:
                if os.stat(path).st_mode & 0o200:
                    out[path] = Path(path).read_text()
            except OSError:
                pass  # an interface that went away while we walked
    return out


def ruleset() -> str:
    """This machine's nftables ruleset without counters (``nft -s``), iptables-nft's rules
    (dockerd's) included; "" where nft is not installed."""
    try:
        out = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def ruleset_diff(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        "before", "after", n=1))


def _interface_key(path: str) -> bool:
    rest = path[len(ROOT):]
    return any(marker in rest for marker in _PER_INTERFACE) and not any(
        f"{marker}{name}/" in rest for marker in _PER_INTERFACE for name in ("all", "default"))


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """{path: (before, after)} for every value that differs; None where a key is missing."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if (old is None or new is None) and _interface_key(key):
            continue
        out[key] = (old, new)
    return out


def shown(changed: dict[str, tuple[str | None, str | None]], limit: int = 40) -> str:
    lines = [f"  {k[len('/proc/sys/'):].replace('/', '.')}: {_v(a)} -> {_v(b)}"
             for k, (a, b) in list(changed.items())[:limit]]
    more = len(changed) - limit
    return "\n".join(lines + ([f"  ... {more} more"] if more > 0 else []))


def _v(value: str | None) -> str:
    return "(absent)" if value is None else " ".join(value.split())


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("dump", "compare"):
        print("usage: netsysctls.py dump|compare FILE", file=sys.stderr)
        return 2
    command, path = argv
    if command == "dump":
        Path(path).write_text(json.dumps(values(), indent=0, sort_keys=True))
        return 0
    changed = changes(json.loads(Path(path).read_text()), values())
    if changed:
        print(f"host /proc/sys/net changed since {path}:\n{shown(changed)}")
        return 1
    print(f"host /proc/sys/net: unchanged since {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
