"""Timelines sampled by the sides themselves (VMs, remote hosts) and merged onto this
machine's clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.measure.timeline import merge_side_timelines

from .sidescript import side


def test_side_samples_its_own_kernel() -> None:
    timeline = side.Timeline(0.02)
    try:
        time.sleep(0.2)
        reply = timeline.reply()
    finally:
        timeline.stop.set()
    cols = reply["columns"]
    assert 4 <= len(cols["t"]) <= 12
    assert all(len(v) == len(cols["t"]) for v in cols.values())
    slab = next(int(line.split()[1]) for line in open("/proc/meminfo")
                if line.startswith("Slab:"))
    assert abs(cols["slab_kb"][-1] - slab) < 0.2 * slab  # this kernel's Slab, in kB
    assert cols["inuse"][-1] >= 0 and reply["interval"] == 0.02
    assert abs(reply["now"] - time.time()) < 1


def reply(t0: float, clock_off: float, mem: list[int], slab: list[int]) -> dict:
    """A side whose clock runs ``clock_off`` s ahead of ours, sampling every 0.1 s."""
    n = len(mem)
    return {"now": t0 + 10 + clock_off, "interval": 0.1,
            "columns": {"t": [t0 + clock_off + 0.1 * i for i in range(n)],
                        "slab_kb": slab, "inuse": [5] * n, "tw": [0] * n, "orphan": [0] * n,
                        "mem": mem}}


def test_merge_shifts_each_side_onto_our_clock() -> None:
    start = 1000.0
    local = {"interval": 0.1, "start": start, "marks": [{"t": 0.25, "name": "baseline"}],
             "columns": {"t": [0.0], "slab_kb": [99]}}
    sides = {"server": reply(start, 7.0, [0, 0, 30, 30, 0], [100, 100, 130, 130, 100]),
             # the client's clock is behind by 2 s and it sampled once more
             "client": reply(start, -2.0, [0, 1, 2, 3, 4, 5], [200, 201, 202, 203, 204, 205])}
    merged = merge_side_timelines(local, sides, offsets={"server": -7.0, "client": 2.0},
                                  kernels={"server": ["server"], "client": ["client"]})
    cols = merged["columns"]
    assert cols["t"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert cols["server.mem"] == [0, 0, 30, 30, 0]
    assert cols["client.mem"] == [0, 1, 2, 3, 4]  # aligned on the server's sample times
    assert cols["slab_kb"] == [300, 301, 332, 333, 304]  # one Slab per kernel, summed
    assert merged["marks"] == local["marks"] and merged["source"] == "sides"


def test_merge_counts_a_shared_kernel_once() -> None:
    start = 0.0
    sides = {"a": reply(start, 0, [1, 2], [100, 110]), "b": reply(start, 0, [3, 4], [100, 110])}
    merged = merge_side_timelines({"interval": 0.1, "start": start, "marks": [], "columns": {}},
                                  sides, offsets={"a": 0.0, "b": 0.0}, kernels={"a+b": ["a", "b"]})
    assert merged["columns"]["slab_kb"] == [100, 110]
    assert merged["columns"]["b.mem"] == [3, 4]


def test_merge_without_samples_keeps_the_local_timeline() -> None:
    local = {"interval": 0.1, "start": 0.0, "marks": [], "columns": {"t": [0.0]}}
    assert merge_side_timelines(local, {"a": {"now": 1.0, "columns": {"t": []}}}, {}, {}) is local


def test_sides_read_each_side_clock_from_its_replies() -> None:
    """A real side process on this machine: every reply carries its clock, and the offset
    kept is the smallest seen (our clock minus the side's: about 0 here, never below 0
    by more than clock noise since a reply is received after it is sent)."""
    import sys

    from orchestrator.run.sides import Sides
    from orchestrator.runner import LocalChannel

    script = str(Path(__file__).resolve().parents[2] / "scenarios" / "side.py")
    channel = LocalChannel("here", [sys.executable, script])
    try:
        channel.send({"role": "server", "address": "127.0.0.1", "peer": "127.0.0.1",
                      "shards": [], "stall": 5, "sample": 0.05})
        assert "hello" in channel.receive(timeout=10)
        sides = Sides({"server": channel}, {}, stall=10)
        seen = []
        for _ in range(5):
            reply = sides.do(["server"], {"op": "timeline"})["server"]
            assert isinstance(reply["clock"], float) and reply["now"] <= reply["clock"]
            seen.append(sides.offsets["server"])
            time.sleep(0.05)
        assert seen == sorted(seen, reverse=True)  # the minimum so far: never grows
        assert -0.005 < seen[-1] < 0.05, seen
    finally:
        channel.send({"op": "exit"})
        channel.close()
