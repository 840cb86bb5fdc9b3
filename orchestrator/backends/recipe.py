"""The node recipe (``images/node``) and the Debian root filesystem made from it.

Shared by the docker backend's image (docker/image.py: the offline ``tcplab/base``) and
the vm backend's root filesystem (vm/rootfs.py): both run ``debootstrap
--variant=minbase`` of :data:`DEBIAN_SUITE` with the recipe's packages, from the mirror
apt is configured with. No Docker here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError, RunError

DEBIAN_SUITE = "bookworm"
PACKAGES_FILE = "packages.txt"
#: Where the debootstrap root filesystem is made (needs about 300 MB).
DEBOOTSTRAP_PARENT = Path("/var/tmp")
#: debootstrap's output of the last offline build, kept for diagnosis.
DEBOOTSTRAP_LOG = DEBOOTSTRAP_PARENT / "tcplab-debootstrap.log"

Log = Callable[[str], None]


def node_recipe_dir(images_dir: Path) -> Path:
    """The node recipe directory: ``images_dir/node``, or ``images_dir`` itself
    when it already holds the Dockerfile (so both ``images`` and ``images/node``
    may be passed)."""
    images_dir = Path(images_dir)
    for candidate in (images_dir / "node", images_dir):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise InputError(f"no node image recipe in {images_dir}: expected {images_dir}/node/Dockerfile")


def recipe_hash(images_dir: Path) -> str:
    """SHA-256 (hex) over the relative path and content of every file of the node
    recipe, in sorted path order. Independent of mtimes, modes and the absolute
    location, so equal recipes give equal hashes on every machine."""
    root = node_recipe_dir(images_dir)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def recipe_packages(images_dir: Path) -> list[str]:
    """The Debian packages the node image needs (``packages.txt``)."""
    text = (node_recipe_dir(images_dir) / PACKAGES_FILE).read_text()
    return [w for line in text.splitlines() for w in line.split("#", 1)[0].split()]


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Stanzas of a deb822 file as {lower-case field: value}; continuation lines
    (starting with a blank) are joined to their field, comments dropped."""
    stanza: dict[str, str] = {}
    field = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, field = {}, None
            continue
        if raw[0] in " \t" and field is not None:
            stanza[field] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        field = name.strip().lower()
        stanza[field] = value.strip()
    if stanza:
        yield stanza


def _usable_uri(uri: str) -> bool:
    """debootstrap can fetch from http(s), ftp and file URIs only."""
    return re.match(r"^(https?|ftp|file):", uri) is not None


def parse_deb822_mirror(text: str, suite: str = DEBIAN_SUITE) -> str | None:
    """The first URI of an enabled ``Types: deb`` stanza listing ``suite``
    (exactly: ``bookworm-security`` is not ``bookworm``), or None."""
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        if suite not in stanza.get("suites", "").split():
            continue
        for uri in stanza.get("uris", "").split():
            if _usable_uri(uri):
                return uri.rstrip("/")
    return None


def parse_sources_list_mirror(text: str, suite: str = DEBIAN_SUITE) -> str | None:
    """The URI of the first ``deb URI suite ...`` line of a one-line-style
    sources.list (``[options]`` allowed), or None."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        rest = words[1:]
        if rest[0].startswith("["):
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2 and rest[1] == suite and _usable_uri(rest[0]):
            return rest[0].rstrip("/")
    return None


def debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = DEBIAN_SUITE) -> str:
    """The Debian mirror apt is configured with for ``suite``.

    Looks at ``sources.list.d/*.sources`` (deb822), then ``sources.list`` and
    ``sources.list.d/*.list`` (one-line style). Raises InputError when none is found.
    """
    apt_dir = Path(apt_dir)
    parts = apt_dir / "sources.list.d"
    candidates: list[tuple[Path, Callable[[str, str], str | None]]] = [
        (p, parse_deb822_mirror) for p in sorted(parts.glob("*.sources"))
    ]
    candidates.append((apt_dir / "sources.list", parse_sources_list_mirror))
    candidates += [(p, parse_sources_list_mirror) for p in sorted(parts.glob("*.list"))]
    for path, parse in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        uri = parse(text, suite)
        if uri:
            return uri
    raise InputError(
        f"no Debian mirror for suite {suite!r} in {parts}/*.sources or "
        f"{apt_dir}/sources.list: configure apt with a {suite} mirror "
        "(needed to build the lab image without a container registry)"
    )


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def run_debootstrap(rootfs: Path, mirror: str, packages: list[str]) -> None:
    """Run debootstrap; its output goes to DEBOOTSTRAP_LOG, which outlives the
    (always removed) target directory."""
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        DEBIAN_SUITE,
        str(rootfs),
        mirror,
    ]
    with open(DEBOOTSTRAP_LOG, "w") as out:
        proc = subprocess.run(
            cmd,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if proc.returncode != 0:
        lines = DEBOOTSTRAP_LOG.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith(("E:", "W:"))]
        last = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
        raise RunError(
            f"debootstrap of {DEBIAN_SUITE} from {mirror} failed (exit {proc.returncode}): "
            f"{_one_line(last)}; check that apt reaches the mirror (apt-get update), "
            f"full output in {DEBOOTSTRAP_LOG}"
        )


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        if point == str(path) or point.startswith(prefix):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_rootfs(rootfs: Path, log: Log) -> None:
    """Remove the debootstrap directory, never following a mount out of it.

    An interrupted debootstrap can leave /proc or /sys mounted inside the
    target; deleting through such a mount would touch the host, so everything
    mounted below is unmounted first and nothing is deleted if that fails.
    """
    for point in _mounts_under(rootfs):
        subprocess.run(
            ["umount", "-l", point], check=False, stdin=subprocess.DEVNULL, capture_output=True
        )
    left = _mounts_under(rootfs)
    if left:
        log(f"warning: left {rootfs} in place: still mounted below it: {', '.join(left)}")
        return
    shutil.rmtree(rootfs, ignore_errors=True)
    if rootfs.exists():
        log(f"warning: could not remove all of {rootfs}")
