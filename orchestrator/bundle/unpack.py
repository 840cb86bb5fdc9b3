"""Unpacking a bundle: every member checked (paths, kinds, manifest, sha256) before and
while it is written; nothing outside the manifest, no links, no devices."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..results import check_schema
from .layout import CHUNK, MANIFEST, MAX_MANIFEST_BYTES, MAX_MEMBERS, MAX_TOTAL_BYTES, SCHEMA, sha


def is_bundle(path: Path) -> bool:
    """A file named like a bundle, or any gzip file (a result.json is plain JSON)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.endswith((".tar.gz", ".tgz")):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _path_problem(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of the bundle (..)"
    if any(p in ("", ".") for p in parts) or "\\" in name or "\x00" in name \
            or any(ord(c) < 32 for c in name):
        return "has an unusual path"
    return None


def _kind(member: tarfile.TarInfo) -> str | None:
    """What a non-regular member is, or None for a regular file."""
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.isdir():
        return "a directory"
    if not member.isreg():
        return "not a regular file"
    return None


class _Corrupt(Exception):
    pass


def _check_manifest(bundle: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{bundle}: {MANIFEST} is not valid JSON ({exc}); not a tcplab "
                         "bundle") from None
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    check_schema(schema, SCHEMA, str(bundle),
                 f"{bundle}: not a tcplab bundle ({MANIFEST} schema {schema!r}, expected {SCHEMA})",
                 noun="bundle ")
    files = manifest.get("files")
    if not isinstance(files, list) or not isinstance(manifest.get("runs"), list):
        raise InputError(f"{bundle}: {MANIFEST}: expected lists `files` and `runs`; not a "
                         "complete tcplab bundle")
    seen: set[str] = set()
    for entry in files:
        if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
                or isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int)
                or entry["size"] < 0):
            raise InputError(f"{bundle}: {MANIFEST}: files: expected entries "
                             f"{{path, sha256, size}}, got {str(entry)[:80]}")
        problem = _path_problem(entry["path"])
        if problem or entry["path"] == MANIFEST:
            raise InputError(f"{bundle}: {MANIFEST} lists {entry['path']!r}, which "
                             f"{problem or 'is the manifest itself'}; refusing the bundle")
        if entry["path"] in seen:
            raise InputError(f"{bundle}: {MANIFEST} lists {entry['path']!r} twice")
        seen.add(entry["path"])
    if len(files) > MAX_MEMBERS or sum(e["size"] for e in files) > MAX_TOTAL_BYTES:
        raise InputError(f"{bundle}: {MANIFEST} lists more than {MAX_MEMBERS:,} files or "
                         f"{MAX_TOTAL_BYTES / 2**30:.0f} GiB; refusing the bundle")
    return manifest


def unpack(bundle: Path, dest: Path) -> tuple[dict[str, Any], str]:
    """Check every member of ``bundle`` and write its files under ``dest`` (empty).

    Returns the manifest and the sha256 of bundle.json. Any problem is an InputError
    naming the bundle; files already written are the caller's to remove (``opened``).
    """
    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such bundle file")
    try:
        _check_gzip(bundle)
        with _open_tar(bundle) as tar:
            return _unpack(bundle, tar, dest)
    except _Corrupt as exc:
        raise InputError(f"{bundle}: not a readable tcplab bundle (corrupt gzip or tar: "
                         f"{exc}); ask for the bundle again") from None


def _check_gzip(bundle: Path) -> None:
    """Read the whole gzip stream once: a damaged or truncated one fails its CRC or length
    check here, and an oversized one stops before anything is written."""
    total = 0
    try:
        with gzip.open(bundle, "rb") as fh:
            while chunk := fh.read(CHUNK):
                total += len(chunk)
                if total > MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES:
                    raise _Corrupt(f"more than {MAX_TOTAL_BYTES / 2**30:.0f} GiB uncompressed")
    except (EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _open_tar(bundle: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(bundle, mode="r:gz")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:120]


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    out = []
    try:
        for member in tar:
            out.append(member)
            if len(out) > MAX_MEMBERS + 1:
                break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None
    return out


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> Iterator[bytes]:
    try:
        fh = tar.extractfile(member)
        if fh is None:
            raise _Corrupt(f"{member.name}: no data")
        total = 0
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _Corrupt(f"{member.name}: longer than its header says")
            yield chunk
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _unpack(bundle: Path, tar: tarfile.TarFile, dest: Path) -> tuple[dict[str, Any], str]:
    members = _members(tar)
    if not members:
        raise InputError(f"{bundle}: an empty archive; not a tcplab bundle")
    heads = [m for m in members if m.name == MANIFEST]
    if not heads:
        raise InputError(f"{bundle}: no {MANIFEST} manifest in the archive; not a tcplab bundle")
    if len(heads) > 1 or _kind(heads[0]) or heads[0].size > MAX_MANIFEST_BYTES:
        raise InputError(f"{bundle}: {MANIFEST} is not a single regular file of at most "
                         f"{MAX_MANIFEST_BYTES // 2**20} MiB; refusing the bundle")
    manifest_data = b"".join(_read_member(tar, heads[0], MAX_MANIFEST_BYTES))
    manifest = _check_manifest(bundle, manifest_data)
    listed = {e["path"]: e for e in manifest["files"]}
    parents = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}

    seen: set[str] = set()
    for m in members:
        if m is heads[0]:
            continue
        problem = _path_problem(m.name)
        if problem:
            raise InputError(f"{bundle}: member {m.name!r} {problem}; refusing the bundle")
        kind = _kind(m)
        if kind == "a directory" and m.name in parents:
            continue
        if kind:
            raise InputError(f"{bundle}: member {m.name!r} is {kind}; a bundle holds regular files "
                             "only: refusing it")
        if m.name not in listed:
            raise InputError(f"{bundle}: member {m.name!r} is not listed in {MANIFEST}; refusing "
                             "the bundle")
        if m.name in seen:
            raise InputError(f"{bundle}: member {m.name!r} appears twice; refusing the bundle")
        seen.add(m.name)
        if m.size != listed[m.name]["size"]:
            raise InputError(f"{bundle}: member {m.name!r} has {m.size:,} bytes, {MANIFEST} says "
                             f"{listed[m.name]['size']:,}: changed after export; ask for the "
                             "bundle again")
    missing = sorted(set(listed) - seen)
    if missing:
        raise InputError(f"{bundle}: {MANIFEST} lists {missing[0]!r} but the archive has no such "
                         "member; ask for the bundle again")

    dest = Path(dest)
    for m in members:
        if m is heads[0] or not m.isreg():
            continue
        target = dest / m.name
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            for chunk in _read_member(tar, m, m.size):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != listed[m.name]["sha256"]:
            raise InputError(f"{bundle}: member {m.name!r}: sha256 does not match {MANIFEST} "
                             "(changed or damaged after export); ask for the bundle again")
    (dest / MANIFEST).write_bytes(manifest_data)
    return manifest, sha(manifest_data)

