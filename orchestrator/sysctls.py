"""Sysctl names and values: validation, normalisation, and per-namespace classification.

Whether a sysctl is per network namespace or host-wide depends on the kernel version,
so it is probed, not listed: a key that exists under ``/proc/sys/net`` inside a fresh
network namespace is per-namespace; every other key is host-global.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError, RunError
from .yamlfile import key_path, show

PROC_SYS = Path("/proc/sys")

#: Keys whose values are a fixed number of integers, with an ordering rule.
_TRIPLES = {
    "net.ipv4.tcp_rmem": "min default max",
    "net.ipv4.tcp_wmem": "min default max",
    "net.ipv4.tcp_mem": "low pressure high",
    "net.ipv4.udp_mem": "low pressure high",
}
_PAIRS = {"net.ipv4.ip_local_port_range": "low high"}


def sysctl_path(name: str, root: Path = PROC_SYS) -> Path:
    """``net.ipv4.tcp_mem`` -> /proc/sys/net/ipv4/tcp_mem. As sysctl(8) writes it, a dot
    inside one component (an interface ``eth0.100``) is given as ``/``:
    ``net.ipv6.conf.eth0/100.forwarding``."""
    return root.joinpath(*(part.replace("/", ".") for part in name.split(".")))


def name_of(path: Path, root: Path = PROC_SYS) -> str:
    """The sysctl name of a file under /proc/sys (the inverse of :func:`sysctl_path`)."""
    return ".".join(part.replace(".", "/") for part in path.relative_to(root).parts)


def normalize_value(name: str, value: Any, where: str, prefix: tuple[str, ...] = ()) -> str:
    """Return the value as the kernel prints it (integers joined by one space).

    ``where`` is the file named in error messages, ``prefix`` the keys above ``sysctls``
    (``("hosts", "client")`` in a lab file).
    """
    label = f"{where}: {key_path(*prefix, 'sysctls', name)}"
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict, float)):
        raise InputError(f"{label}: expected an integer or a string of integers, got {show(value)}")
    text = str(value).strip()
    parts = text.split()
    if name in _TRIPLES or name in _PAIRS:
        shape = _TRIPLES.get(name) or _PAIRS[name]
        count = len(shape.split())
        words = {2: "two", 3: "three"}[count]
        if len(parts) != count or not all(_is_int(p) for p in parts):
            raise InputError(f'{label}: expected {words} integers "{shape}", got {show(value)}')
        numbers = [int(p) for p in parts]
        if numbers != sorted(numbers) or numbers[0] < 0:
            order = " <= ".join(shape.split())
            raise InputError(f"{label}: expected {order}, got {show(value)}")
        if name in _PAIRS and not (1 <= numbers[0] and numbers[1] <= 65535):
            raise InputError(f"{label}: expected ports between 1 and 65535, got {show(value)}")
        return " ".join(str(n) for n in numbers)
    if _is_text_sysctl(name):  # e.g. tcp_congestion_control = "cubic"
        if not parts or len(parts) != 1 or not isinstance(value, str):
            raise InputError(f"{label}: expected one word (like the kernel's value "
                             f"{show(read_host(name))}), got {show(value)}")
        return text
    if not parts or not all(_is_int(p) for p in parts):
        raise InputError(f"{label}: expected an integer or integers, got {show(value)}")
    return " ".join(str(int(p)) for p in parts)


def _is_text_sysctl(name: str) -> bool:
    """A sysctl whose live value is a word, not numbers (read from the running kernel)."""
    try:
        live = read_host(name).split()
    except OSError:
        return False
    return bool(live) and not all(_is_int(p) for p in live)


_DECIMAL = re.compile(r"-?[0-9]+")


def _is_int(text: str) -> bool:
    """A plain decimal integer: the kernel reads "1_000" as invalid, "010" as octal."""
    return _DECIMAL.fullmatch(text) is not None


def check_exists(name: str, where: str, root: Path = PROC_SYS,
                 prefix: tuple[str, ...] = ()) -> None:
    if not sysctl_path(name, root).is_file():
        raise InputError(
            f"{where}: {key_path(*prefix, 'sysctls', name)}: this kernel "
            f"({os.uname().release}) has no such sysctl; check the spelling or remove it"
        )


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[dict[str, str], frozenset[str]]:
    """Every sysctl of a fresh network namespace: its value, and whether it is writable."""
    code = (
        "import os\n"
        "for d, _, fs in os.walk('/proc/sys/net'):\n"
        "    for f in fs:\n"
        "        p = os.path.join(d, f)\n"
        "        try: v = ' '.join(open(p).read().split())\n"
        "        except OSError: continue\n"
        "        w = 'w' if os.stat(p).st_mode & 0o200 else 'r'\n"
        "        print(w + p[10:].replace('/', '.') + '=' + v)\n"
    )
    try:
        out = subprocess.run(
            ["unshare", "--net", "--", "python3", "-c", code],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except FileNotFoundError:
        raise InputError("unshare (util-linux) is not installed: apt-get install util-linux") from None
    except subprocess.CalledProcessError as exc:
        raise RunError(
            f"could not probe per-namespace sysctls with unshare --net: {exc.stderr.strip()[-200:]}; "
            "tcplab needs root"
        ) from None
    values: dict[str, str] = {}
    writable = set()
    for line in out.stdout.splitlines():
        if "=" not in line:
            continue
        name, value = line[1:].split("=", 1)
        values[name] = value
        if line[0] == "w":
            writable.add(name)
    return values, frozenset(writable)


def namespace_defaults() -> dict[str, str]:
    """Every sysctl of a fresh network namespace with its value (probed once).

    The values are what a new namespace starts with: kernel defaults, not the host's
    values (except the few read-only keys that mirror the host).
    """
    return _probe()[0]


def classify(names: list[str]) -> dict[str, str]:
    """Map each name to ``"namespace"`` or ``"host"``.

    Per-namespace means present *and writable* in a fresh namespace. Some keys exist
    there read-only and follow the host's value (net.core.rmem_max on 6.18): host-wide.
    """
    writable = _probe()[1]
    return {name: ("namespace" if name in writable else "host") for name in names}


def host_wide_values(root: Path = PROC_SYS / "net") -> dict[str, str]:
    """This machine's value of every net.* sysctl that is not per namespace.

    Lab hosts in namespaces or containers read back their own values; these (tcp_mem,
    tcp_max_orphans, nf_conntrack_max, ...) apply to all of them and are recorded apart.
    """
    writable = _probe()[1]
    out = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(PROC_SYS)).replace("/", ".")
        if path.is_file() and name not in writable:
            try:
                out[name] = " ".join(path.read_text().split())
            except OSError:
                continue
    return out


def read_host(name: str) -> str:
    return " ".join(sysctl_path(name).read_text().split())


def write_host(name: str, value: str) -> None:
    try:
        sysctl_path(name).write_text(value + "\n")
    except OSError as exc:
        raise RunError(f"cannot set host sysctl {name}={value}: {exc.strerror}") from None


def differs(live: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Keys whose live value is not the wanted one: {name: (wanted, live)}."""
    return {
        k: (v, live.get(k, "<missing>"))
        for k, v in wanted.items()
        if " ".join(str(live.get(k, "")).split()) != v
    }
