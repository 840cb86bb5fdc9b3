"""orchestrator.results.model on the stored results of tests/data/results (written by the
tcplab before the typed model): they load, give back exactly the JSON read, and answer
the accessors every report uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.errors import InputError
from orchestrator.results import Result, load_result
from orchestrator.results.model import UPGRADES

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
RUNS = sorted(p.name for p in RESULTS.iterdir() if (p / "result.json").is_file())
C2S = "20261126-012650-c2s-default"
VM = "20261126-021137-idle-default"
DOCKER = "20261126-041441-idle-default"


def stored(name: str) -> dict:
    return json.loads((RESULTS / name / "result.json").read_text())


@pytest.mark.parametrize("name", RUNS)
def test_round_trip_gives_back_the_json_read(name: str) -> None:
    data = stored(name)
    result = Result.from_dict(data)
    assert result.to_dict() == data
    assert json.dumps(result.to_dict(), indent=1) == json.dumps(data, indent=1)  # key order too
    assert Result.from_dict(result.to_dict()) == result
    assert load_result(RESULTS / name) == result


def test_a_result_written_by_the_previous_version_loads(tmp_path: Path) -> None:
    """The c2s fixture was written by tcplab before the model existed (schema /1)."""
    result = load_result(RESULTS / C2S)
    assert isinstance(result, Result) and result.schema == "tcplab.result/1"
    assert (result.run_id, result.status, result.scenario.name) == (C2S, "complete", "c2s")
    assert [c.name for c in result.checkpoints] == ["baseline", "established", "unread", "read"]
    assert result.checkpoint("baseline").measured is False
    unread = result.checkpoint("unread")
    assert unread.per_connection().total == 8482.8
    assert unread.buffers["server"].rmem_alloc.median == 845
    assert unread.buffers["server"].queued_per_socket() == 13
    assert result.last_measured().name == "read"
    assert [c.name for c in result.measured()] == ["established", "unread", "read"]
    with pytest.raises(InputError, match="baseline is not measured"):
        result.checkpoint("baseline").per_connection()
    # the CLI's JSON output is the file as stored
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text((RESULTS / C2S / "result.json").read_text())
    assert cli.main(["report", str(tmp_path / "run"), "--format", "json"]) == 0


def test_hosts_by_role_and_sysctls() -> None:
    result = load_result(RESULTS / C2S)
    assert result.hosts_by_role() == {"server": ["server"], "client": ["client"]}
    assert result.host("server") == "server" and result.role_of("client") == "client"
    assert result.flow() == ("client", "server")  # the client sends, the server receives
    assert result.sysctl_ints("server", "net.ipv4.tcp_rmem")[0] == 4096
    assert result.sysctl("nowhere", "net.ipv4.tcp_rmem") is None
    assert result.metadata.hosts["server"].where  # its network namespace


def test_several_hosts_in_one_role() -> None:
    data = stored(C2S)
    hosts = data["metadata"]["hosts"]
    hosts["client2"] = dict(hosts["client"], address="198.18.0.4")
    hosts["router"] = {"role": "router", "address": "198.18.0.1"}
    result = Result.from_dict(data)
    assert result.hosts_by_role() == {"server": ["server"], "client": ["client", "client2"],
                                      "router": ["router"]}
    assert result.host("router") == "router"
    with pytest.raises(InputError, match=r"2 hosts play client \(client, client2\); name the "
                                         "host instead of the role"):
        result.host("client")
    assert result.host("gateway") is None


def test_per_side_accessors() -> None:
    vm = load_result(RESULTS / VM)
    cp = vm.last_measured()
    assert set(cp.per_kernel) == {"server", "client"}
    assert cp.per_kernel["server"].hosts == ("server",)
    assert vm.side_totals(cp) == {"server": pytest.approx(3729.8, abs=0.1),
                                  "client": pytest.approx(3915.7, abs=0.1)}
    docker = load_result(RESULTS / DOCKER)
    assert docker.side_totals(docker.last_measured()) == {"server": None, "client": None}
    assert docker.last_measured().memory_per_connection["server"]["kmem"] == 1222.7


def test_format_history() -> None:
    assert set(UPGRADES) == {1}
    data = stored(C2S)
    data["schema"] = "tcplab.result/7"
    with pytest.raises(InputError, match=r"schema 'tcplab.result/7' is not one this tcplab "
                                         r"reads \(/1\)"):
        Result.from_dict(data)


def test_objects_are_read_only() -> None:
    result = load_result(RESULTS / C2S)
    with pytest.raises(AttributeError):
        result.status = "incomplete"  # type: ignore[misc]
    result.to_dict()["status"] = "changed"  # a copy: the result is unchanged
    assert result.status == "complete" and result.to_dict()["status"] == "complete"


def test_fields_the_model_does_not_name_are_kept_and_ignored() -> None:
    """A /1 result with keys a later tcplab may add still loads, renders and round-trips."""
    from orchestrator.report import text as report_text

    data = stored(C2S)
    data["links"] = [{"from": "client", "to": "server", "delay_ms": 5}]
    data["checkpoints"][2]["ledger"] = {"TCP": 2000}
    data["metadata"]["hosts"]["server"]["numa_node"] = 0
    result = Result.from_dict(data)
    assert result.to_dict() == data
    assert result.checkpoint("unread").raw["ledger"] == {"TCP": 2000}
    assert result.metadata.hosts["server"].raw["numa_node"] == 0
    assert report_text.render(result) == report_text.render(load_result(RESULTS / C2S))
