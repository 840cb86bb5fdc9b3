"""Per-VM limits sized from N (the VM is the lab's own kernel): the sizing function and the
plan that sets them, with the lab file's own values winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backends.vm.limits import sized_sysctls
from orchestrator.plan import RunOptions, make_plan

LAB = """backend: vm
network: {{subnet: 198.18.0.0/24}}
hosts:
  server: {{role: server, address: 198.18.0.2}}
  client:
    role: client
    address: 198.18.0.3
{client}"""


def test_sized_from_n() -> None:
    assert sized_sysctls(10_000) == {"net.ipv4.tcp_max_tw_buckets": "12274",
                                     "net.ipv4.tcp_max_orphans": "49096",
                                     "net.ipv4.tcp_max_syn_backlog": "10000"}
    small = sized_sysctls(200)
    assert small["net.ipv4.tcp_max_tw_buckets"] == "1249"
    assert small["net.ipv4.tcp_max_syn_backlog"] == "1024"
    assert sized_sysctls(10**6)["net.ipv4.tcp_max_syn_backlog"] == "65536"
    for n in (1, 4096, 10_000, 100_000):  # room for every connection in TIME-WAIT at once
        assert int(sized_sysctls(n)["net.ipv4.tcp_max_tw_buckets"]) > n


def test_timewait_plan_at_10000_sizes_both_vms(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.format(client=""))
    plan = make_plan(RunOptions(scenario="timewait", root=tmp_path, lab_file=lab,
                                connections=10_000, kernel="6.12"))
    for host in ("server", "client"):
        assert plan.host_sysctls[host]["net.ipv4.tcp_max_tw_buckets"] == "12274"
        assert plan.host_sysctls[host]["net.ipv4.tcp_max_orphans"] == "49096"


def test_the_lab_files_value_wins(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.format(client="    sysctls: {net.ipv4.tcp_max_tw_buckets: \"2000\"}\n"))
    plan = make_plan(RunOptions(scenario="timewait", root=tmp_path, lab_file=lab,
                                connections=10_000))
    assert plan.host_sysctls["client"]["net.ipv4.tcp_max_tw_buckets"] == "2000"
    assert plan.host_sysctls["server"]["net.ipv4.tcp_max_tw_buckets"] == "12274"


def test_other_backends_are_not_sized(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.format(client="").replace("backend: vm", "backend: netns"))
    plan = make_plan(RunOptions(scenario="idle", root=tmp_path, lab_file=lab, connections=10))
    assert "net.ipv4.tcp_max_tw_buckets" not in plan.host_sysctls["client"]


def test_a_sysctl_the_vms_kernel_lacks_is_named(tmp_path: Path) -> None:
    # probed through the host's runner (here this machine's python3 and /proc/sys)
    from orchestrator.backends.base import LabHost
    from orchestrator.backends.vm.backend import _refuse_missing
    from orchestrator.config import load_lab
    from orchestrator.errors import RunError
    from orchestrator.runner import LocalRunner

    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.format(client=""))
    host = LabHost(load_lab(lab).host("server"), LocalRunner("server"))
    _refuse_missing(host, {"net.ipv4.tcp_max_tw_buckets": "1", "net.core.somaxconn": "1"},
                    "6.18.44")
    with pytest.raises(RunError) as err:
        _refuse_missing(host, {"net.ipv4.tcp_max_tw_buckets": "1",
                               "net.ipv4.tcp_from_the_future": "1"}, "5.10.0-46-cloud-amd64")
    assert str(err.value) == (
        "server: kernel 5.10.0-46-cloud-amd64 has no sysctl net.ipv4.tcp_from_the_future (set "
        "by the lab file or the profile); leave it out for this kernel or boot one that has it")
