"""The kernel comparison's verdict on "newer kernels recycle buffers faster", on real runs:
c2s (13 bytes, N=2,000) in two VMs booting Debian's 6.1 cloud kernel, and on this
machine's 6.18 (netns), from `make lab SCENARIO=c2s KERNELS="6.1 host" N=2000`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.report import findings
from orchestrator.report import kernels as kernels_compare
from orchestrator.results import Result

DATA = Path(__file__).resolve().parents[1] / "data" / "results"
VM_61 = "20261126-045425-c2s-default"    # vm backend, 6.1.0-56-cloud-amd64
HOST = "20261126-045545-c2s-default"     # netns, 6.18.44
IDLE_VM = "20261126-021137-idle-default"


def raw(name: str) -> dict:
    return json.loads((DATA / name / "result.json").read_text())


def load(name: str) -> Result:
    return Result.from_dict(raw(name))


def test_each_kernel_release_time_from_its_own_timeline() -> None:
    vm, host = load(VM_61), load(HOST)
    assert vm.timeline.source == "sides"  # the VMs' own sockstat, sampled by the sides
    drop_vm = findings.release_time(vm, findings.read_pair(vm))
    drop_host = findings.release_time(host, findings.read_pair(host))
    # 6.1: 2,048 pages while unread, settles at 260; 6.18: 1,862 -> 326 (a small reserve kept)
    assert (drop_vm["from_pages"], drop_vm["to_pages"]) == (2048, 260)
    assert (drop_host["from_pages"], drop_host["to_pages"]) == (1862, 326)
    assert drop_vm["seconds"] <= 0.1 and drop_host["seconds"] <= 0.2


def test_same_to_within_one_sample_on_6_1_and_6_18() -> None:
    rec = kernels_compare.recycling([load(VM_61), load(HOST)])
    assert rec["verdict"] == kernels_compare.SAME
    by = {k["label"]: k for k in rec["kernels"]}
    assert by["6.1"]["rmem_unread"] == 1280 and by["host"]["rmem_unread"] == 845
    assert by["6.1"]["rmem_read"] == 0 and by["host"]["rmem_read"] == 0
    assert "median rmem_alloc 1,280 -> 0 B on 6.1, 845 -> 0 B on host" in rec["evidence"]
    assert rec["evidence"].endswith("the same to within one sample")


def _slower(result: Result, seconds: float) -> Result:
    """The same run, with its receiver's sockstat mem held at the peak ``seconds`` longer."""
    out = result.to_dict()
    pair = findings.read_pair(result)
    drop = findings.release_time(result, pair)
    cols = out["timeline"]["columns"]
    for i, t in enumerate(cols["t"]):
        if drop["start"] <= t < drop["start"] + seconds:
            cols[f"{pair.receiver}.mem"][i] = drop["from_pages"]
    return Result.from_dict(out)


@pytest.mark.parametrize(("slow", "verdict"), [("old", findings.HOLDS), ("new", findings.FAILS)])
def test_faster_or_slower_by_more_than_a_sample(slow: str, verdict: str) -> None:
    vm, host = load(VM_61), load(HOST)
    if slow == "old":
        vm = _slower(vm, 1.0)
    else:
        host = _slower(host, 1.0)
    rec = kernels_compare.recycling([host, vm])  # ordered by kernel version, not by argument
    assert rec["verdict"] == verdict, rec["evidence"]


def test_not_tested_without_read_data_or_a_second_version() -> None:
    assert kernels_compare.recycling([load(IDLE_VM), load(HOST)])["verdict"] == findings.UNTESTED
    rec = kernels_compare.recycling([load(HOST), load(HOST)])
    assert rec["verdict"] == findings.UNTESTED
    assert rec["evidence"] == "needs the release time on two kernel versions or more"


def test_comparison_text_carries_the_verdict() -> None:
    text = kernels_compare.render(kernels_compare.compare([load(VM_61), load(HOST)]))
    assert "Finding (source article)" in text
    assert " = newer kernels recycle buffers faster: no difference measured — " in text


def test_version_of() -> None:
    assert kernels_compare.version_of("6.1.0-56-cloud-amd64") == (6, 1, 0)
    assert kernels_compare.version_of("6.18.44-fc-v782") == (6, 18, 44)
    assert kernels_compare.version_of("6.12") == (6, 12, 0)
    assert kernels_compare.version_of(None) is None


def test_kernels_between_the_oldest_and_newest_are_listed() -> None:
    middle = raw(VM_61)
    middle["metadata"]["kernel_label"] = "6.12"
    middle["metadata"]["kernel"]["release"] = "6.12.57-cloud-amd64"
    rec = kernels_compare.recycling([load(HOST), Result.from_dict(middle), load(VM_61)])
    assert rec["verdict"] == kernels_compare.SAME
    assert [k["label"] for k in rec["kernels"]] == ["host", "6.12", "6.1"]
    assert "on host (" in rec["evidence"] and "s on 6.1 (6.1.0" in rec["evidence"]
    assert rec["evidence"].endswith(
        "the same to within one sample; in between: 6.12 (6.12.57-cloud-amd64) 0.0 s; over "
        "all 3 kernels the release times span 0.1 s (within one sample: no kernel stands out)")
