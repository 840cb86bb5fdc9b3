"""The source article's own figures (kernel 3.10), as an external row of the kernel sweep.

They come from ``published-3.10.json`` beside this module (with their source), are
published, not measured here, and are always labelled so. Published in KB per
connection per side (slabtop's KB, 1,024 B); here in bytes, both ends added up like
tcplab's own totals, with each side kept.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("published-3.10.json")
SIDES = ("server", "client")


@cache
def load() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def figures(checkpoint: str) -> dict[str, Any] | None:
    """{"total", "sides": {server, client}, "by_cache", "state"} in bytes, or None when
    the article published nothing for a checkpoint of that name."""
    data = load()
    cp = data["checkpoints"].get(checkpoint)
    if cp is None:
        return None
    kb = data["kb"]
    by_cache: dict[str, float] = {}
    for side in SIDES:
        for cache_name, value in cp[side]["by_cache"].items():
            by_cache[cache_name] = by_cache.get(cache_name, 0.0) + value * kb
    sides = {side: cp[side]["total"] * kb for side in SIDES}
    return {"state": cp["state"], "total": sum(sides.values()), "sides": sides,
            "by_cache": by_cache, "note": cp.get("note")}


def for_checkpoints(names: list[str]) -> dict[str, Any]:
    """The published row for the checkpoints of a sweep that the article also measured."""
    data = load()
    found = {name: f for name in names if (f := figures(name)) is not None}
    return {"label": data["label"], "kernel": data["kernel"], "note": data["note"],
            "source": data["source"], "units": data["units"], "checkpoints": found}
