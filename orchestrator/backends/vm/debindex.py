"""Debian cloud kernels in a package index: which packages make a kernel, which is newest.

Pure (no apt, no network), so tests run it on a captured index (tests/data/vm/packages/).
Input is the text of apt's ``Packages`` files, one per suite; :func:`parse_packages` keeps
the stanzas of ``linux-image-*``, ``linux-binary-*``, ``linux-modules-*`` and
``linux-base-*`` and :class:`KernelIndex` resolves a version the user names:

* ``6.1``, ``5.10``, ``6.16``, ``7``, ``7.3``: the newest kernel of that series (by the
  package's upstream version, across every suite that carries it);
* ``6.1.0-50``, ``6.12.95``, ``7.3.4``: the newest whose ABI name or upstream version
  starts with it;
* a whole package name (``linux-image-6.12.95+deb12-cloud-amd64``): that package.

A kernel is the ``linux-image-<abi>-cloud-amd64`` package plus, from 6.19 on, the packages
it depends on that hold the kernel itself and its modules (``linux-binary-<abi>-…``,
``linux-modules-<abi>-…``): the image package is then a meta package of a few kilobytes.
A kernel whose binary or modules package the index does not have cannot be fetched and is
left out (:attr:`KernelIndex.incomplete` says why); ``linux-base-<abi>-…`` (base files)
is fetched when the index has it and not needed otherwise. Meta packages that
depend on another ``linux-image-*`` (``linux-image-6.1-cloud-amd64``), debug (``-dbg``)
and unsigned variants are never candidates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import zip_longest

FLAVOR = "cloud-amd64"
_IMAGE = re.compile(r"^linux-image-(?P<abi>\d+\.\d+(?:[.\-+~]\w+)*)-" + re.escape(FLAVOR) + "$")
_PARTS = ("linux-binary-", "linux-modules-", "linux-base-")
_OPTIONAL = ("linux-base-",)  # base files (config, System.map): fetched when listed
_KEEP = re.compile(r"^linux-(image|binary|modules|base)-\d")
_FIELDS = ("Package", "Version", "Depends", "Filename", "Size", "SHA256")


# -- Debian version comparison (deb-version(7)) -------------------------------------------
def _order(ch: str) -> int:
    if ch == "~":
        return -1
    if ch.isalpha():
        return ord(ch)
    return ord(ch) + 256


def _cmp_part(a: str, b: str) -> int:
    while a or b:
        na = re.match(r"^[^\d]*", a).group()
        nb = re.match(r"^[^\d]*", b).group()
        a, b = a[len(na):], b[len(nb):]
        for x, y in zip_longest(na, nb, fillvalue=""):
            ox = _order(x) if x else 0
            oy = _order(y) if y else 0
            if ox != oy:
                return -1 if ox < oy else 1
        da = re.match(r"^\d*", a).group()
        db = re.match(r"^\d*", b).group()
        a, b = a[len(da):], b[len(db):]
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian package version ``a`` sorts before, with or after ``b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


class DebVersion(str):
    """A package version that sorts like dpkg sorts it."""

    def __lt__(self, other: object) -> bool:
        return compare_versions(self, str(other)) < 0

    def __gt__(self, other: object) -> bool:
        return compare_versions(self, str(other)) > 0


# -- Packages files -------------------------------------------------------------------------
def parse_packages(text: str) -> list[dict[str, str]]:
    """The kernel stanzas (image, binary, modules, base) of a ``Packages`` file's text."""
    out = []
    for block in text.split("\n\n"):
        if not block.startswith("Package: linux-"):
            continue
        stanza: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                stanza[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
        if _KEEP.match(stanza.get("Package", "")) and "Version" in stanza:
            out.append({k: stanza[k] for k in _FIELDS if k in stanza})
    return out


def depends(stanza: dict[str, str]) -> list[tuple[str, str | None]]:
    """(package, exact version or None) of each plain dependency (alternatives left out)."""
    out = []
    for item in stanza.get("Depends", "").split(","):
        item = item.strip()
        if not item or "|" in item:
            continue
        m = re.match(r"^([^\s(]+)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", item)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


@dataclass
class Deb:
    package: str
    version: str
    suite: str
    filename: str
    size: int
    sha256: str


@dataclass
class IndexKernel:
    """One fetchable kernel: its image package and every package holding its files."""

    package: str  # linux-image-<abi>-cloud-amd64
    abi: str  # 6.1.0-50, 6.12.95+deb12, 7.3.4+deb13
    version: str  # the package version: 6.1.158-1, 7.3.4-1~bpo13+1
    upstream: str  # the kernel's version: 6.1.158, 7.3.4
    series: str  # 6.1, 7.3
    suite: str
    debs: list[Deb] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> tuple:
        return (_num(self.upstream), DebVersion(self.version), self.package)


def _num(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def _upstream(version: str) -> str:
    return re.match(r"^(?:\d+:)?(\d+(?:\.\d+)*)", version).group(1)


class KernelIndex:
    """The cloud kernels of one or more suites' package indexes."""

    def __init__(self, suites: dict[str, list[dict[str, str]]]) -> None:
        self.kernels: list[IndexKernel] = []
        self.incomplete: dict[str, str] = {}  # image package -> why it cannot be fetched
        pool: dict[str, dict[str, tuple[str, dict[str, str]]]] = {}  # name -> version -> ...
        for suite, stanzas in suites.items():
            for st in stanzas:
                pool.setdefault(st["Package"], {})[st["Version"]] = (suite, st)
        for name, versions in pool.items():
            m = _IMAGE.match(name)
            if not m:
                continue
            for version, (suite, st) in versions.items():
                kernel = self._kernel(name, m.group("abi"), version, suite, st, pool)
                if kernel is not None:
                    self.kernels.append(kernel)
        self.kernels.sort(key=IndexKernel.key)

    def _kernel(self, name: str, abi: str, version: str, suite: str, st: dict[str, str],
                pool: dict) -> IndexKernel | None:
        deps = depends(st)
        if any(dep.startswith("linux-image-") for dep, _ in deps):
            return None  # a meta package (linux-image-6.1-cloud-amd64)
        upstream = _upstream(version)
        kernel = IndexKernel(name, abi, version, upstream, ".".join(upstream.split(".")[:2]),
                             suite, [_deb(st, suite)])
        for dep, want in deps:
            if not dep.startswith(_PARTS):
                continue
            have = pool.get(dep, {})
            found = have.get(want) if want else (max(have.items(), key=lambda kv: DebVersion(
                kv[0]))[1] if have else None)
            if found is None and dep.startswith(_OPTIONAL):
                continue
            if found is None:
                self.incomplete.setdefault(
                    name, f"{name} {version} ({suite}) depends on {dep}"
                    + (f" (= {want})" if want else "") + ", which the index does not have")
                return None
            kernel.debs.append(_deb(found[1], found[0]))
        return kernel

    def series(self) -> list[str]:
        """Every kernel series (``5.10``, ``6.1``…) with a fetchable kernel, oldest first."""
        return sorted({k.series for k in self.kernels}, key=_num)

    def newest_per_series(self) -> list[IndexKernel]:
        return [self.resolve(s) for s in self.series()]  # type: ignore[misc]

    def resolve(self, spec: str) -> IndexKernel | None:
        """The newest kernel ``spec`` names, or None (see the module docstring)."""
        found = [k for k in self.kernels if _matches(spec, k)]
        return max(found, key=IndexKernel.key) if found else None

    def why_not(self, spec: str) -> str:
        """Why ``spec`` resolves to nothing, and what is there instead."""
        have = f"kernels available: {', '.join(self.series()) or 'none'}"
        blocked = [name for name in self.incomplete
                   if _matches(spec, IndexKernel(name, _IMAGE.match(name).group("abi"), "", "",
                                                 "", ""))]
        if blocked:
            return f"{self.incomplete[max(blocked, key=_num)]}; {have}"
        return f"no linux-image-{spec}*-{FLAVOR} in Debian's archive; {have}"


def _matches(spec: str, kernel: IndexKernel) -> bool:
    if spec == kernel.package:
        return True
    for have in (kernel.abi, kernel.upstream):
        if have and (have == spec or have.startswith((spec + ".", spec + "-", spec + "+"))):
            return True
    return False


def _deb(st: dict[str, str], suite: str) -> Deb:
    return Deb(st["Package"], st["Version"], suite, st.get("Filename", ""),
               int(st.get("Size", "0") or 0), st.get("SHA256", ""))
