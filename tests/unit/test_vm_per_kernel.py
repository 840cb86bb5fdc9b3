"""Several measured kernels (VMs, remote hosts): per-kernel snapshots, per-side figures,
the sum at the top level, and the kernel comparison. Built from the real captures."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from orchestrator import results
from orchestrator.measure import analysis, parsers, probes
from orchestrator.measure.kernel import (
    KernelSet,
    RemoteKernel,
    meminfo_text,
    merge_slab,
    slabinfo_text,
)
from orchestrator.measure.snapshot import KernelSnapshot, Snapshot
from orchestrator.report import kernels as kernels_compare
from orchestrator.runner import Result, Runner

N = 2000


class FileRunner(Runner):
    """A 'remote kernel' whose /proc files are given texts."""

    def __init__(self, host: str, files: dict[str, str]) -> None:
        self.host = host
        self.files = files
        self.calls: list[str] = []

    def run(self, cmd, *, check=True, timeout=60, stdin=None):
        if list(cmd[:2]) == ["sh", "-c"]:  # RemoteKernel.shrink_caches
            assert "/sys/kernel/slab/$c/shrink" in cmd[2]
            self.calls.append("shrink")
            return Result(" ".join(cmd), self.host, 0, "", "")
        assert list(cmd[:1]) == ["cat"]
        self.calls.append(cmd[1])
        return Result(" ".join(cmd), self.host, 0, self.files[cmd[1]], "")

    def spawn(self, cmd):
        raise NotImplementedError


def two_kernels(capture, name: str) -> Snapshot:
    """A snapshot whose server and client each ran on their own kernel: both kernels
    hold the same capture (each then counts both ends: enough to check the arithmetic)."""
    snap = capture(name)
    per = {}
    for host in ("server", "client"):
        per[host] = KernelSnapshot(host, [host], copy.deepcopy(snap.slab), dict(snap.meminfo),
                                   "6.1.0-56-cloud-amd64", {})
    return Snapshot(snap.name, snap.time, merge_slab([k.slab for k in per.values()]),
                    {k: 2 * v for k, v in snap.meminfo.items()}, snap.hosts, kernels=per,
                    aliases={})


def test_per_kernel_figures_and_the_sum(capture) -> None:
    base, est = two_kernels(capture, "baseline"), two_kernels(capture, "established")
    one = analysis.checkpoint(capture("baseline"), capture("established"), N, {})
    cp = analysis.checkpoint(base, est, N, {})
    assert set(cp["per_kernel"]) == {"server", "client"}
    for label in ("server", "client"):
        side = cp["per_kernel"][label]
        assert side["hosts"] == [label] and side["release"] == "6.1.0-56-cloud-amd64"
        assert side["per_connection_bytes"]["total"] == one["per_connection_bytes"]["total"]
        assert side["objsize"]["TCP"] > 0
    # the top level stays the sum of the kernels
    total = cp["per_connection_bytes"]["total"]
    assert total == pytest.approx(2 * one["per_connection_bytes"]["total"], rel=0.01)
    assert cp["per_connection_bytes"]["meminfo_slab"] == pytest.approx(
        2 * one["per_connection_bytes"]["meminfo_slab"], rel=0.01)


def test_one_kernel_checkpoints_are_unchanged(capture, slab_aliases) -> None:
    cp = analysis.checkpoint(capture("baseline"), capture("established"), N, slab_aliases)
    assert "per_kernel" not in cp
    assert set(cp) == {"name", "time", "connections", "collect_seconds", "states",
                       "per_connection_bytes", "buffers", "sockstat", "memory", "memory_per_connection",
                       "counters"}


def test_merge_slab_and_text_round_trip(capture) -> None:
    slab = capture("established").slab
    merged = merge_slab([slab, slab])
    assert merged["TCP"].active_objs == 2 * slab["TCP"].active_objs
    assert merged["TCP"].bytes() == 2 * slab["TCP"].bytes()
    again = parsers.parse_slabinfo(slabinfo_text(merged))
    assert again["TCP"] == merged["TCP"]
    mem = parsers.parse_meminfo(meminfo_text([capture("established").meminfo] * 2))
    assert mem["Slab"] == 2 * capture("established").meminfo["Slab"]


def test_kernel_set_reads_every_kernel_and_takes_per_kernel_snapshots(
        capture, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data"
    files = {"/proc/slabinfo": (data / "slabinfo-established-2000.txt").read_text(),
             "/proc/meminfo": (data / "meminfo-established-2000.txt").read_text()}
    ks = KernelSet([RemoteKernel(FileRunner("server", files), "server", ["server"], "6.1"),
                    RemoteKernel(FileRunner("client", files), "client", ["client"], "6.1")])
    for k in ks.kernels:
        k.aliases_read = {}  # no /sys/kernel/slab to read here
    text = ks.read("/proc/slabinfo")
    one = parsers.parse_slabinfo(files["/proc/slabinfo"])
    assert parsers.parse_slabinfo(text)["TCP"].active_objs == 2 * one["TCP"].active_objs
    for k in ks.kernels:
        k.runner.calls.clear()
    snap = probes.take("x", {}, tmp_path, ks)
    for k in ks.kernels:  # each kernel's per-CPU slabs flushed, then read
        assert k.runner.calls[:2] == ["shrink", "/proc/slabinfo"]
    assert set(snap.kernels) == {"server", "client"}
    assert (tmp_path / "x" / "server-slabinfo.txt.gz").exists()
    assert (tmp_path / "x" / "client-meminfo.txt").exists()
    assert snap.slab["TCP"].active_objs == 2 * one["TCP"].active_objs
    # no kernel left (VMs gone): an empty reading, nothing to wait for
    assert probes.wait_released(one, KernelSet([]), timeout=1)
    # one kernel: its own text, no per-kernel part
    single = KernelSet([RemoteKernel(FileRunner("vm", files), "vm", ["server", "client"])])
    single.kernels[0].aliases_read = {"TCP": ["x"]}
    snap1 = probes.take("y", {}, tmp_path, single)
    assert snap1.kernels == {} and snap1.aliases == {"TCP": ["x"]}
    assert snap1.slab == one


def _result(label: str, backend: str, release: str, objsize: dict[str, int], total: float,
            per_kernel: dict | None = None) -> results.Result:
    return results.Result.from_dict(_document(label, backend, release, objsize, total, per_kernel))


def _document(label: str, backend: str, release: str, objsize: dict[str, int], total: float,
              per_kernel: dict | None = None) -> dict:
    cp = {"name": "established", "connections": 5000,
          "per_connection_bytes": {"total": total, "objects_total": total - 100,
                                   "meminfo_slab": total + 50,
                                   "by_cache": [{"cache": "TCP", "category": "socket",
                                                 "bytes_per_connection": objsize["TCP"] * 2},
                                                {"cache": "filp", "category": "socket",
                                                 "bytes_per_connection":
                                                     objsize.get("filp", 0) * 2}]}}
    if per_kernel:
        cp["per_kernel"] = per_kernel
    meta = {"backend": backend, "kernel": {"release": release}, "objsize": objsize,
            "hosts": {"server": {"role": "server"}, "client": {"role": "client"}},
            "slab_aliases": {}}
    if backend == "vm":
        meta["kernel_label"] = label
    return {"run_id": label, "status": "complete", "scenario": {"name": "idle"},
            "metadata": meta, "checkpoints": [{"name": "baseline", "connections": 0}, cp]}


def test_kernel_comparison_shows_what_grew_and_shrank(tmp_path: Path) -> None:
    per = {"server": {"hosts": ["server"], "per_connection_bytes": {"total": 3715.0}},
           "client": {"hosts": ["client"], "per_connection_bytes": {"total": 3721.0}}}
    vm = _result("6.1", "vm", "6.1.0-56-cloud-amd64",
                 {"TCP": 2304, "filp": 256, "tw_sock_TCP": 272}, 7436.0, per)
    host = _result("host", "netns", "6.18.44", {"TCP": 2368, "filp": 192, "tw_sock_TCP": 256},
                   7800.0)
    cmp = kernels_compare.compare([vm, host])
    assert [k["label"] for k in cmp["kernels"]] == ["6.1", "host"]
    assert cmp["kernels"][0]["sides"] == {"server": 3715.0, "client": 3721.0}
    changes = {c["cache"]: (c["change"], c["delta"]) for c in cmp["objsize_changes"]}
    assert changes == {"TCP": ("grew", 64), "filp": ("shrank", -64),
                       "tw_sock_TCP": ("shrank", -16)}
    text = kernels_compare.render(cmp)
    assert "grew: TCP 2304 -> 2368 (+64) 6.1 -> host" in text
    assert "filp 256 -> 192 (-64)" in text
    assert "3,715" in text and "3,721" in text
    _, path = kernels_compare.report([vm, host], [tmp_path / "a", tmp_path / "b"], tmp_path)
    assert path.exists() and path.name.endswith("-idle-6.1-host.md")
    assert (tmp_path / path.name.replace(".md", ".json")).exists()
    assert "| TCP" in path.read_text()


def test_merged_caches_are_shown_in_their_line() -> None:
    d = _document("6.1", "vm", "6.1", {"TCP": 2304, "pid": 128}, 100.0)
    d["metadata"]["kernels"] = {"server": {"slab_aliases": {"pid": ["tcp_bind_bucket"]}}}
    r = results.Result.from_dict(d)
    assert kernels_compare.objsize_of(r, "tcp_bind_bucket") == {"size": 128, "line": "pid"}
    assert kernels_compare.objsize_of(r, "nothing") == {"size": None, "line": None}


def test_per_side_text() -> None:
    per = {"server": {"hosts": ["server"], "release": "6.1",
                      "per_connection_bytes": {"total": 3715.0, "objects_total": 3645.0,
                                               "meminfo_slab": 3823.0,
                                               "by_cache": [{"cache": "TCP", "category": "socket",
                                                             "bytes_per_connection": 2326.5}]}}}
    r = _result("6.1", "vm", "6.1", {"TCP": 2304}, 100.0, per)
    text = kernels_compare.per_side_text(r)
    assert "server (server)" in text and "3,715" in text and "TCP" in text
    assert kernels_compare.per_side_text(_result("h", "netns", "6.18", {"TCP": 1}, 1.0)) is None


def test_analysis_counts_bind_buckets_merged_into_a_process_cache(capture) -> None:
    """On 6.1 the 'pid' line also counts tcp_bind_bucket: tracking N, it is socket memory."""
    base, est = capture("baseline"), capture("established")
    est = copy.deepcopy(est)
    line = est.slab["pid"]
    est.slab["pid"] = parsers.SlabLine("pid", line.active_objs + N, line.num_objs + N,
                                       line.objsize, line.objperslab, line.pagesperslab,
                                       line.active_slabs + 50, line.num_slabs + 50)
    rows = {r["cache"]: r for r in analysis.cache_deltas(base.slab, est.slab, N,
                                                         {"pid": ["tcp_bind_bucket"]})}
    assert rows["pid"]["category"] == "socket"
    assert "tcp_bind_bucket" in rows["pid"]["reason"]
    rows = {r["cache"]: r for r in analysis.cache_deltas(base.slab, est.slab, N, {})}
    assert rows["pid"]["category"] == "drift"
