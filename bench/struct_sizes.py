#!/usr/bin/env python3
"""Sizes of the structs a TCP connection lives in, read from each kernel's own BTF.

    python3 bench/struct_sizes.py                      # every cached kernel + host, Markdown
    python3 bench/struct_sizes.py 6.1 6.12 host        # these kernels only
    python3 bench/struct_sizes.py --diff 6.1 6.12 tcp_sock   # members added/removed/changed
    python3 bench/struct_sizes.py --json FILE          # the sizes as JSON too
    python3 bench/struct_sizes.py --excerpt 6.1 file   # raw-dump lines for test data

Prints two Markdown tables: sizeof(struct) per kernel, and the slab object size each
cache's struct gives (CACHES below), to compare with the objsize a run records.

Kernels: every `kernel.json` under the lab's kernel cache (TCPLAB_CACHE_DIR, default
/var/cache/tcplab, folder kernels/; fetch them with `make lab KERNELS=...`) and `host`
(/sys/kernel/btf/vmlinux). A kernel is named by its label (`6.12`) or release
(`6.12.118+deb13-cloud-amd64`); with two releases of one label, the newest wins.

How: the vmlinuz is a bzImage; its setup header gives the compressed payload, which `zstd`
or `lz4` (or Python's lzma/gzip) unpacks to the ELF vmlinux; its `.BTF` section is written
to a raw BTF file (cached in --work) and `bpftool btf dump file F format raw` lists the
types; pahole is not needed (Debian 12's pahole 1.24 cannot read 7.x BTF). Needs bpftool,
zstd and lz4 (Debian packages `bpftool`, `zstd`, `lz4`); no root.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST_BTF = Path("/sys/kernel/btf/vmlinux")
# The structs a connection's slab objects are made of (cache in the comment).
STRUCTS = [
    "sock_common", "sock", "inet_sock", "inet_connection_sock", "tcp_sock",  # TCP
    "socket", "inode", "socket_alloc",                                        # sock_inode_cache
    "file", "dentry",                                                         # filp, dentry
    "request_sock", "inet_request_sock", "tcp_request_sock",                  # request_sock_TCP
    "inet_timewait_sock", "tcp_timewait_sock",                                # tw_sock_TCP
    "inet_bind_bucket", "inet_bind2_bucket",                                  # tcp_bind*_bucket
    "sk_buff", "skb_shared_info",                                             # skbuff_*
    # parts of the LSM blobs (lsm_inode_cache, lsm_file_cache), per security module
    "landlock_inode_security", "bpf_storage_blob", "ipe_inode", "evm_iint_cache",
    "aa_file_ctx", "landlock_file_security",
]
# Slab caches a connection uses: (cache, struct, alignment, free pointer outside the object?).
# SLUB puts its free pointer outside objects of SLAB_TYPESAFE_BY_RCU caches and caches with
# a constructor (8 B), unless the struct has a freeptr_t member for it; SLAB_HWCACHE_ALIGN
# rounds to 64 B. /proc/slabinfo's objsize is that slab size, not sizeof(struct).
CACHES: list[tuple[str, str, int, Callable[[Btf], bool]]] = [
    ("TCP", "tcp_sock", 64, lambda b: not b.has_member("sock", "sk_freeptr")),
    ("sock_inode_cache", "socket_alloc", 64, lambda b: True),      # constructor
    ("filp", "file", 64, lambda b: False),  # RCU from 6.7; f_freeptr inside from 6.12
    ("dentry", "dentry", 8, lambda b: False),
    ("tw_sock_TCP", "tcp_timewait_sock", 8, lambda b: True),       # TYPESAFE_BY_RCU
    ("request_sock_TCP", "tcp_request_sock", 8, lambda b: True),   # TYPESAFE_BY_RCU
    ("tcp_bind_bucket", "inet_bind_bucket", 64, lambda b: False),
    ("tcp_bind2_bucket", "inet_bind2_bucket", 64, lambda b: False),
]
MAGIC = [(b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]), (b"\x02\x21\x4c\x18", ["lz4", "-dcq"]),
         (b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gzip")]
_TYPE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_MEMBER = re.compile(r"^\t'([^']*)' type_id=(\d+)(?: bits_offset=(\d+))?(?: bitfield_size=(\d+))?")
_ATTR = re.compile(r"(\w+)=(\S+)")


class StructSizeError(Exception):
    """What went wrong, said so that the user knows what to do next."""


# --- from bzImage to raw BTF ---------------------------------------------------------------

def bzimage_payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage (boot protocol 2.08+: payload_offset/length)."""
    if image[0x202:0x206] != b"HdrS":
        raise StructSizeError("not a bzImage (no HdrS setup header): give a vmlinuz")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def decompress(payload: bytes) -> bytes:
    """The ELF vmlinux from a payload; the build appends the unpacked size (4 bytes)."""
    for magic, how in MAGIC:
        if not payload.startswith(magic):
            continue
        if how == "xz":
            return lzma.LZMADecompressor().decompress(payload)
        if how == "gzip":
            return gzip.GzipFile(fileobj=io.BytesIO(payload)).read()
        try:
            out = subprocess.run(how, input=payload[:-4], capture_output=True).stdout
        except FileNotFoundError:
            raise StructSizeError(f"{how[0]} not found: apt-get install {how[0]}") from None
        if out[:4] == b"\x7fELF":
            return out
        raise StructSizeError(f"{how[0]} did not unpack the kernel payload")
    raise StructSizeError(f"unknown kernel compression (payload starts {payload[:4].hex()})")


def elf_section(elf: bytes, name: str) -> bytes:
    """One section of a 64-bit little-endian ELF file, by name."""
    if elf[:5] != b"\x7fELF\x02":
        raise StructSizeError("not a 64-bit ELF vmlinux")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        sh_name, = struct.unpack_from("<I", elf, shoff + i * shentsize)
        sh_offset, sh_size = struct.unpack_from("<QQ", elf, shoff + i * shentsize + 0x18)
        return sh_name, sh_offset, sh_size

    _, stroff, _ = header(shstrndx)
    for i in range(shnum):
        sh_name, off, size = header(i)
        end = elf.index(b"\0", stroff + sh_name)
        if elf[stroff + sh_name:end].decode() == name:
            return elf[off:off + size]
    raise StructSizeError(f"no {name} section: the kernel was built without CONFIG_DEBUG_INFO_BTF")


def raw_btf(vmlinuz: Path, work: Path) -> Path:
    """The kernel's BTF as a raw file in `work` (kept: keyed by the vmlinuz's hash)."""
    image = vmlinuz.read_bytes()
    out = work / (hashlib.sha256(image).hexdigest()[:16] + ".btf")
    if not out.exists():
        work.mkdir(parents=True, exist_ok=True)
        btf = elf_section(decompress(bzimage_payload(image)), ".BTF")
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(btf)
        tmp.replace(out)
    return out


def bpftool_raw(btf: Path) -> str:
    try:
        run = subprocess.run(["bpftool", "btf", "dump", "file", str(btf), "format", "raw"],
                             capture_output=True, text=True)
    except FileNotFoundError:
        raise StructSizeError("bpftool not found: apt-get install bpftool") from None
    if run.returncode:
        raise StructSizeError(f"bpftool could not read {btf}: {run.stderr.strip()}")
    return run.stdout


# --- parsing `bpftool btf dump format raw` --------------------------------------------------

@dataclass
class BtfType:
    kind: str
    name: str
    attrs: dict[str, str]
    members: list[tuple[str, int, int, int]] = field(default_factory=list)
    # (name, type_id, bits_offset, bitfield_size)


@dataclass(frozen=True)
class Member:
    name: str     # dotted through anonymous structs/unions is not needed: their members
    type: str     # are lifted to the parent, as C does
    offset: int   # bytes
    size: int     # bytes (bitfields: rounded up to whole bytes)


def parse_raw(text: str) -> dict[int, BtfType]:
    """Types by id from bpftool's raw dump (member lines follow their STRUCT/UNION)."""
    types: dict[int, BtfType] = {}
    current: BtfType | None = None
    for line in text.splitlines():
        m = _TYPE.match(line)
        if m:
            current = BtfType(m.group(2), m.group(3), dict(_ATTR.findall(m.group(4))))
            types[int(m.group(1))] = current
            continue
        m = _MEMBER.match(line)
        if m and current is not None and current.kind in ("STRUCT", "UNION"):
            current.members.append((m.group(1), int(m.group(2)), int(m.group(3) or 0),
                                    int(m.group(4) or 0)))
    return types


class Btf:
    """Struct sizes and flattened member lists of one kernel's BTF."""

    def __init__(self, types: dict[int, BtfType]) -> None:
        self.types = types
        self.structs: dict[str, int] = {}
        for tid, t in types.items():
            # the first complete definition of a name wins (BTF dedups to one per name)
            if t.kind in ("STRUCT", "UNION") and t.name != "(anon)":
                self.structs.setdefault(t.name, tid)

    def size(self, name: str) -> int | None:
        tid = self.structs.get(name)
        return None if tid is None else int(self.types[tid].attrs["size"])

    def type_size(self, tid: int) -> int:
        t = self.types.get(tid)
        if t is None or tid == 0:
            return 0
        if t.kind == "PTR":
            return 8
        if "size" in t.attrs:
            return int(t.attrs["size"])
        if t.kind == "ARRAY":
            return int(t.attrs["nr_elems"]) * self.type_size(int(t.attrs["type_id"]))
        if "type_id" in t.attrs:  # TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG
            return self.type_size(int(t.attrs["type_id"]))
        return 0

    def type_name(self, tid: int) -> str:
        t = self.types.get(tid)
        if tid == 0 or t is None:
            return "void"
        if t.kind in ("STRUCT", "UNION", "ENUM", "ENUM64", "FWD"):
            word = {"STRUCT": "struct", "UNION": "union", "FWD": "struct"}.get(t.kind, "enum")
            return f"{word} {t.name}"
        if t.kind == "PTR":
            return self.type_name(int(t.attrs["type_id"])) + " *"
        if t.kind == "ARRAY":
            return f"{self.type_name(int(t.attrs['type_id']))}[{t.attrs['nr_elems']}]"
        if t.kind in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            return self.type_name(int(t.attrs["type_id"]))
        if t.kind == "FUNC_PROTO":
            return "function"
        return t.name

    def members(self, name: str) -> list[Member]:
        tid = self.structs.get(name)
        return [] if tid is None else self._flatten(tid, 0)

    def has_member(self, struct_name: str, member: str) -> bool:
        return any(m.name == member for m in self.members(struct_name))

    def slab_size(self, cache: str) -> int | None:
        """The object size SLUB gives `cache` (see CACHES), from the struct's size."""
        for name, struct_name, align, freeptr_outside in CACHES:
            size = self.size(struct_name)
            if name == cache and size is not None:
                size += 8 if freeptr_outside(self) else 0
                return -(-size // align) * align
        return None

    def padding(self, name: str) -> int | None:
        """Bytes of struct `name` that no member covers (holes and tail padding)."""
        size = self.size(name)
        if size is None:
            return None
        covered = bytearray(size)
        for m in self.members(name):
            covered[m.offset:m.offset + m.size] = b"\1" * len(covered[m.offset:m.offset + m.size])
        return size - sum(covered)

    def _flatten(self, tid: int, base_bits: int) -> list[Member]:
        out: list[Member] = []
        for mname, mtid, bits, bitfield in self.types[tid].members:
            target = self._strip(mtid)
            if mname == "(anon)" and self.types[target].kind in ("STRUCT", "UNION"):
                out += self._flatten(target, base_bits + bits)
                continue
            size = (bitfield + 7) // 8 if bitfield else self.type_size(mtid)
            out.append(Member(mname, self.type_name(mtid), (base_bits + bits) // 8, size))
        return out

    def _strip(self, tid: int) -> int:
        t = self.types.get(tid)
        while t is not None and t.kind in ("TYPEDEF", "CONST", "VOLATILE", "TYPE_TAG"):
            tid = int(t.attrs["type_id"])
            t = self.types.get(tid)
        return tid


def excerpt(text: str, names: list[str]) -> str:
    """The lines of a raw dump that `Btf` needs for structs `names`: their members, the
    chains to each member's type (named structs without their members) and anonymous
    structs/unions in full. Used to make small test files of real bpftool output."""
    lines = text.splitlines()
    starts: dict[int, int] = {}
    for i, line in enumerate(lines):
        m = _TYPE.match(line)
        if m:
            starts[int(m.group(1))] = i
    types = parse_raw(text)
    btf = Btf(types)
    full: set[int] = set()
    keep: set[int] = set()
    todo = [btf.structs[n] for n in names if n in btf.structs]
    full.update(todo)
    while todo:
        tid = todo.pop()
        if tid in keep or tid == 0:
            continue
        keep.add(tid)
        t = types[tid]
        if "type_id" in t.attrs:
            todo.append(int(t.attrs["type_id"]))
        if tid in full:
            for mname, mtid, _, _ in t.members:
                target = btf._strip(mtid)
                if mname == "(anon)" and types[target].kind in ("STRUCT", "UNION"):
                    full.add(target)
                todo.append(mtid)
    out = []
    for tid in sorted(keep):
        i = starts[tid]
        out.append(lines[i])
        if tid in full:
            j = i + 1
            while j < len(lines) and lines[j].startswith("\t"):
                out.append(lines[j])
                j += 1
    return "\n".join(out) + "\n"


def diff(old: Btf, new: Btf, name: str) -> dict[str, list[Member]]:
    """Members of struct `name` that appeared, went, or changed type/size between kernels
    (listed as they are in `new`; `removed` as they were in `old`)."""
    a = {m.name: m for m in old.members(name)}
    b = {m.name: m for m in new.members(name)}
    return {
        "added": [m for n, m in b.items() if n not in a],
        "removed": [m for n, m in a.items() if n not in b],
        "changed": [m for n, m in b.items() if n in a and (a[n].size, a[n].type)
                    != (m.size, m.type)],
    }


# --- kernels and output ----------------------------------------------------------------

def cached_kernels(cache: Path) -> dict[str, Path]:
    """label or release -> vmlinuz of the lab's cached kernels, oldest version first (with
    two releases of one label, the label names the newest)."""
    found: list[tuple[tuple[int, ...], str, str, Path]] = []
    for meta in cache.glob("kernels/*/kernel.json"):
        k = json.loads(meta.read_text())
        if (meta.parent / "vmlinuz").exists():
            key = tuple(int(x) for x in re.findall(r"\d+", k["version"]))
            found.append((key, k["label"], k["release"], meta.parent / "vmlinuz"))
    out: dict[str, Path] = {}
    for _, label, release, vmlinuz in sorted(found):
        out.pop(label, None)  # re-inserted: a label sits where its newest release does
        out[label] = out[release] = vmlinuz
    return out


def check_labels(labels: list[str], kernels: dict[str, Path]) -> None:
    """Refuse a kernel that is neither cached nor host, before anything is unpacked."""
    for label in labels:
        if label != "host" and label not in kernels:
            raise StructSizeError(f"no cached kernel {label!r}; cached: "
                                  f"{', '.join(kernels) or 'none'} (and host)")


def raw_text(label: str, kernels: dict[str, Path], work: Path) -> str:
    """bpftool's raw dump of kernel `label` (a cached kernel's label or release, or host)."""
    check_labels([label], kernels)
    return bpftool_raw(HOST_BTF if label == "host" else raw_btf(kernels[label], work))


def load(label: str, kernels: dict[str, Path], work: Path) -> Btf:
    return Btf(parse_raw(raw_text(label, kernels, work)))


def markdown(rows: list[str], sizes: dict[str, dict[str, int | None]]) -> str:
    labels = list(sizes)
    out = ["| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name in rows:
        cells = [sizes[k].get(name) for k in labels]
        out.append(f"| {name} | " + " | ".join("–" if c is None else f"{c:,}" for c in cells)
                   + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kernels", nargs="*", help="labels or releases (default: all cached + host)")
    ap.add_argument("--diff", nargs=3, metavar=("OLD", "NEW", "STRUCT"),
                    help="members of STRUCT added/removed/changed from kernel OLD to NEW")
    ap.add_argument("--json", type=Path, help="also write the sizes as JSON here")
    ap.add_argument("--excerpt", nargs="+", metavar=("KERNEL", "STRUCT"),
                    help="print the raw-dump lines of these structs (test data)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get(
        "TMPDIR", "/tmp")) / "tcplab-btf", help="where the raw BTF files are kept")
    args = ap.parse_args(argv)
    cache = Path(os.environ.get("TCPLAB_CACHE_DIR", "/var/cache/tcplab"))
    kernels = cached_kernels(cache)
    try:
        check_labels((args.diff or [])[:2] + (args.excerpt or [])[:1] + args.kernels, kernels)
        if args.excerpt:
            label, *names = args.excerpt
            print(excerpt(raw_text(label, kernels, args.work), names), end="")
            return 0
        if args.diff:
            old, new, name = args.diff
            a, b = load(old, kernels, args.work), load(new, kernels, args.work)
            print(f"struct {name}: {a.size(name)} -> {b.size(name)} B ({old} -> {new}); "
                  f"padding {a.padding(name)} -> {b.padding(name)} B")
            for what, members in diff(a, b, name).items():
                for m in members:
                    print(f"  {what:8} {m.name:40} {m.type:32} {m.size:5} B  @{m.offset}")
            return 0
        labels = args.kernels or [k for k in kernels if not re.search(r"[+-]", k)] + ["host"]
        sizes: dict[str, dict[str, int | None]] = {}
        slabs: dict[str, dict[str, int | None]] = {}
        for k in labels:
            b = load(k, kernels, args.work)
            sizes[k] = {name: b.size(name) for name in STRUCTS}
            slabs[k] = {c[0]: b.slab_size(c[0]) for c in CACHES}
    except StructSizeError as e:
        print(f"struct_sizes: {e}", file=sys.stderr)
        return 2
    print("sizeof(struct), bytes:\n\n" + markdown(STRUCTS, sizes))
    print("\nslab object size these give (objsize in /proc/slabinfo), bytes:\n\n"
          + markdown([c[0] for c in CACHES], slabs))
    if args.json:
        args.json.write_text(json.dumps({"structs": sizes, "slab_objects": slabs}, indent=1)
                             + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
