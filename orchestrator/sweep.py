"""Sweeps: one scenario over a list of values of ONE thing (``--sweep``/``SWEEP=``).

    SWEEP="net.core.somaxconn=128,4096"                    # a sysctl, comma-separated
    SWEEP="net.ipv4.tcp_rmem=4096 131072 {1M,4M,32M}"      # braces expand one field
    SWEEP="delay=0ms,10ms,50ms,100ms"                      # a link condition key

Each value is one sweep point: one run (times ``--repeat``) with the sysctl applied like
a profile override (per host in the lab's own namespaces; a host-wide one only with
``--allow-host-sysctls``), or with the link condition merged into ``--link``. Every
point is parsed and checked here, before anything is created (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import sysctls
from .errors import InputError

WHAT = "--sweep/SWEEP"
#: The link condition keys (the ``link`` work's ``--link "delay=25ms rate=..."``).
LINK_KEYS = ("delay", "jitter", "loss", "rate", "queue")
#: Size suffixes a sweep value may carry (binary, as the kernel's buffers count).
SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE = re.compile(r"([0-9]+)([kKmMgG])")
_USAGE = ("expected KEY=V1,V2,... (a sysctl like net.core.somaxconn=128,4096, or a link "
          "condition like delay=0ms,10ms,50ms)")


@dataclass(frozen=True)
class Sweep:
    """What is swept: ``kind`` "sysctl" or "link", the key, and each point's value."""

    kind: str
    key: str
    values: tuple[str, ...]  # normalised: as the kernel prints a sysctl, as given for link
    labels: tuple[str, ...]  # as the user wrote each point (1M, 10ms): axis labels

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "values": list(self.values),
                "labels": list(self.labels)}

    def varying(self, value: str) -> str:
        """The field that varies between the points (tcp_rmem's max), for axis labels."""
        return value.split()[self.field] if self.field is not None else value

    @property
    def field(self) -> int | None:
        """Index of the one field the braces expanded in a several-field value."""
        split = [v.split() for v in self.values]
        if len(split[0]) < 2 or any(len(s) != len(split[0]) for s in split):
            return None
        differ = [i for i in range(len(split[0])) if len({s[i] for s in split}) > 1]
        return differ[0] if len(differ) == 1 else None


def expand(text: str) -> list[str]:
    """``"4096 131072 {1M,4M}"`` -> ["4096 131072 1M", "4096 131072 4M"]; else split on commas."""
    opens, closes = text.count("{"), text.count("}")
    if opens != closes or (opens and text.index("{") > text.index("}")):
        raise InputError(f"{WHAT}: unbalanced braces in {text!r}; write one group like "
                         "\"4096 131072 {1M,4M,32M}\"")
    if opens > 1:
        raise InputError(f"{WHAT}: braces may expand one field only, got {opens} groups in "
                         f"{text!r}")
    if opens == 1:
        head, rest = text.split("{", 1)
        inner, tail = rest.split("}", 1)
        return [f"{head}{item.strip()}{tail}".strip() for item in inner.split(",")]
    return [item.strip() for item in text.split(",")]


def _sizes(value: str) -> str:
    """1M -> 1048576, 4k -> 4096 in every field of a sysctl value."""
    return _SIZE.sub(lambda m: str(int(m.group(1)) * SUFFIX[m.group(2).lower()]), value)


def parse(text: str, allow_host_sysctls: bool = False, backend: str | None = None) -> Sweep:
    """Parse and check a sweep; every point's value is validated here."""
    key, sep, rest = (text or "").partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip():
        raise InputError(f"{WHAT}: {_USAGE}, got {text!r}")
    labels = expand(rest)
    if any(not v for v in labels):
        raise InputError(f"{WHAT}: {key}: an empty value in {rest.strip()!r}; separate values "
                         "with single commas")
    if len(labels) < 2:
        raise InputError(f"{WHAT}: {key}: expected at least two values to sweep, got "
                         f"{len(labels)} ({labels[0]!r}); for one value use a profile or --link")
    if key in LINK_KEYS:
        return _link_sweep(key, labels)
    if "." not in key:
        raise InputError(f"{WHAT}: {key!r} is neither a sysctl (net.ipv4.tcp_rmem) nor a link "
                         f"condition ({', '.join(LINK_KEYS)})")
    return _sysctl_sweep(key, labels, allow_host_sysctls, backend)


def _sysctl_sweep(key: str, labels: list[str], allow_host: bool, backend: str | None) -> Sweep:
    if not sysctls.sysctl_path(key).is_file():
        raise InputError(f"{WHAT}: {key}: this kernel has no such sysctl; check the spelling")
    values = []
    for label in labels:
        try:
            values.append(sysctls.normalize_value(key, _sizes(label), WHAT))
        except InputError as exc:  # "--sweep/SWEEP: sysctls."net.x": ..." -> "--sweep/SWEEP: net.x: ..."
            text = str(exc).replace(f'sysctls."{key}"', key, 1)
            raise InputError(f"{text} (sweep value {label!r})") from None
    _no_twice(key, labels, values)
    if backend not in ("vm",) and not allow_host:
        if sysctls.classify([key])[key] == "host":
            raise InputError(
                f"{WHAT}: {key} is host-wide on this kernel (not per namespace); add "
                "--allow-host-sysctls to set it for each run (journalled and restored "
                "afterwards), or sweep it on the vm backend, where each VM has its own")
    return Sweep("sysctl", key, tuple(values), tuple(labels))


def _link_sweep(key: str, labels: list[str]) -> Sweep:
    _no_twice(key, labels, labels)
    return Sweep("link", key, tuple(labels), tuple(labels))


def _no_twice(key: str, labels: list[str], values: list[str]) -> None:
    seen: dict[str, str] = {}
    for label, value in zip(labels, values, strict=True):
        if value in seen:
            same = "" if seen[value] == label else f" (as {seen[value]!r})"
            raise InputError(f"{WHAT}: {key}: the value {label!r} is given twice{same}; "
                             "each point must differ")
        seen[value] = label


def merged_link(user: str | None, key: str, value: str) -> str:
    """The ``--link`` text of one point: the user's conditions with ``key`` set to ``value``."""
    words = [w for w in (user or "").split() if w.partition("=")[0] != key]
    return " ".join(words + [f"{key}={value}"])


def overrides(sweep: Sweep, value: str) -> dict[str, str]:
    """The sysctls one point sets over the profile (none for a link sweep)."""
    return {sweep.key: value} if sweep.kind == "sysctl" else {}
