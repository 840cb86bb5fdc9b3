"""Per-VM limits sized from N (the VM is the lab's own kernel): the sizing function and the
plan that sets them, with the lab file's own values winning."""

from __future__ import annotations

from pathlib import Path

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
                                     "net.ipv4.tcp_max_orphans": "12274",
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
        assert plan.host_sysctls[host]["net.ipv4.tcp_max_orphans"] == "12274"


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
