"""Parse the ledger program's dumps and /proc/kallsyms. Pure: tested on captured text."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

MASK = (1 << 64) - 1
KIND_CACHE, KIND_KMALLOC, KIND_PAGE, KIND_KMALLOC_CG = 1, 2, 3, 4

_LIVE = re.compile(r"^@live\[(-?\d+)\]: \((\d+), (-?\d+), (\d+), (\d+)\)$")
_CACHE = re.compile(r"^@cache\[(-?\d+)\]: (\S+)$")
_STACK = re.compile(r"^@pstack\[(\d+)\]:\s*$")
#: frames of the page allocator itself: a page's call site is the first frame after them
ALLOCATOR = ("__alloc_pages", "__alloc_frozen_pages", "alloc_pages", "__folio_alloc",
             "folio_alloc", "get_page_from_freelist", "alloc_frozen_pages", "__get_free_pages")
SLAB_PAGE = "slab pages"  # a new slab's pages: the objects in it are counted already


@dataclass(frozen=True)
class Live:
    """One object or page still allocated: where, by whom, how big."""

    netns: int
    site: int  # call site address (gfp flags for pages)
    bytes: int
    kind: int
    cache: str  # slab cache, kmalloc-N / kmalloc-cg-N, or for pages their call site


def parse_dump(text: str) -> dict[int, Live]:
    """``@live``/``@cache`` map lines -> live allocations by address (page frame number for
    pages). Lines that are neither (bpftrace's warnings) are skipped."""
    raw: dict[int, tuple[int, int, int, int]] = {}
    names: dict[int, str] = {}
    stacks: dict[int, list[str]] = {}
    frames: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        m = _STACK.match(line)
        if m:
            frames = stacks.setdefault(int(m.group(1)), [])
            continue
        if frames is not None and line and not line.startswith("@"):
            frames.append(line.split("+", 1)[0])
            continue
        frames = None
        m = _LIVE.match(line)
        if m:
            ptr, net, site, size, kind = (int(g) for g in m.groups())
            raw[ptr & MASK] = (net, site & MASK, size, kind)
            continue
        m = _CACHE.match(line)
        if m:
            names[int(m.group(1)) & MASK] = m.group(2)
    out = {}
    for ptr, (net, site, size, kind) in raw.items():
        if kind == KIND_CACHE:
            cache = names.get(ptr, "?")
        elif kind == KIND_PAGE:
            cache = page_site(stacks.get(ptr, []))
        else:
            cache = f"kmalloc-{'cg-' if kind == KIND_KMALLOC_CG else ''}{_kmalloc_name(size)}"
        out[ptr] = Live(net, site, size, kind, cache)
    return out


def _kmalloc_name(size: int) -> str:
    """kmalloc cache names as slabinfo shows them: kmalloc-1k, -2k, -4k, -8k above 512."""
    return f"{size // 1024}k" if size >= 1024 and size % 1024 == 0 else str(size)


class Symbols:
    """Address -> function name from /proc/kallsyms text (text symbols only)."""

    def __init__(self, kallsyms: str) -> None:
        pairs = []
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("T", "t", "W", "w"):
                addr = int(parts[0], 16)
                if addr:
                    pairs.append((addr, parts[2]))
        pairs.sort()
        self.addrs = [a for a, _ in pairs]
        self.names = [n for _, n in pairs]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.names[i] if i >= 0 else f"0x{addr:x}"


def page_site(frames: list[str]) -> str:
    """The call site of a page allocation from its kernel stack (innermost first): slab
    pages are said as such (their objects are counted by cache), skb data pages by the
    function that asked for them."""
    if any(f in ("allocate_slab", "new_slab") for f in frames):
        return SLAB_PAGE
    for frame in frames:
        if not frame.startswith(ALLOCATOR) and "alloc_pages" not in frame:
            return frame
    return "pages (no stack)"
