"""Topologies for real: 4 clients x 2,500 connections through a router, netns and docker.

Each backend: a plain two-host run of the same N, a NAT run and a plain-router run, in one
test (about 40 s of runs on netns, 30 s on docker with the image cached, plus any wait
for the machine lock). Asserts what the server
sees (10,000 ESTAB from the router's address with NAT; the four client addresses
without), the router's conntrack entries (0.98-1.02 per connection with NAT, none
without), the per-connection socket memory equal to the two-host figure within 2%, and
that nothing is left behind (the autouse fixture also checks host sysctls and rulesets).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.backends.common import short_id

ROOT = Path(__file__).resolve().parents[2]
N = 10_000
CLIENTS = 4

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root")]


def run(backend: str, tmp_path: Path, name: str, *extra: str) -> tuple[dict, Path]:
    results, state = tmp_path / name / "results", tmp_path / name / "state"
    env = {**os.environ, "TCPLAB_STATE_DIR": str(state),
           "TCPLAB_LOCK_WAIT": os.environ.get("TCPLAB_LOCK_WAIT", "900")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-s", "idle",
                           "-n", str(N), "-b", backend, *extra, "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(results.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert_clean(backend, run_dir.name, state)
    return result, run_dir


def assert_clean(backend: str, run_id: str, state: Path) -> None:
    sid = short_id(run_id)
    assert f"tcplab-{sid}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                  text=True).stdout
    assert f"tl{sid}" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                            text=True).stdout
    assert not (state / "runs").exists() or not list((state / "runs").iterdir())
    if backend == "docker":
        import docker

        client = docker.from_env()
        flt = {"label": f"tcplab.run={run_id}"}
        assert client.containers.list(all=True, filters=flt) == []
        assert client.networks.list(filters=flt) == []


def peers(run_dir: Path, host: str, checkpoint: str = "established") -> Counter:
    """Remote addresses of a host's ESTAB sockets, from the raw ss text the run saved."""
    out: Counter = Counter()
    with gzip.open(run_dir / "raw" / checkpoint / f"{host}-ss.txt.gz", "rt") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == "ESTAB":
                out[fields[4].rsplit(":", 1)[0]] += 1
    return out


def established(result: dict) -> dict:
    return next(cp for cp in result["checkpoints"] if cp["name"] == "established")


def socket_bytes(result: dict) -> float:
    return established(result)["per_connection_bytes"]["total"]


@pytest.mark.parametrize("backend", ["netns", "docker"])
def test_four_clients_through_a_router(backend: str, tmp_path: Path) -> None:
    if backend == "docker":
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            if os.environ.get("CI"):
                pytest.fail("no Docker daemon under CI")
            pytest.skip("no Docker daemon")
    two, _ = run(backend, tmp_path, "two")
    nat, nat_dir = run(backend, tmp_path, "nat", "--clients", str(CLIENTS), "--router", "nat")
    plain, plain_dir = run(backend, tmp_path, "plain", "--clients", str(CLIENTS),
                           "--router", "plain")

    hosts = nat["metadata"]["topology"]["hosts"]
    router_addr = hosts["router"]["addresses"][1]
    client_addrs = {hosts[f"client{i}"]["addresses"][0] for i in range(1, CLIENTS + 1)}
    # the split: each client its quarter, recorded in the result
    assert {c: v["connections"] for c, v in nat["metadata"]["clients"].items()} == {
        f"client{i}": N // CLIENTS for i in range(1, CLIENTS + 1)}
    # with NAT the server sees every connection from the router's address
    assert peers(nat_dir, "server") == Counter({router_addr: N})
    assert established(nat)["states"]["server"] == {"ESTAB": N}
    for i in range(1, CLIENTS + 1):
        assert established(nat)["states"][f"client{i}"] == {"ESTAB": N // CLIENTS}
    cost = established(nat)["router"]["router"]
    assert 0.98 <= cost["entries_per_connection"] <= 1.02, cost
    # without NAT: the four client addresses, and a netns router tracks nothing. Docker
    # puts its embedded-DNS nat rules in every container, which turns conntrack on in each
    # container's namespace: there the plain router holds an entry per connection too.
    assert peers(plain_dir, "server") == Counter({a: N // CLIENTS for a in client_addrs})
    plain_entries = established(plain)["router"]["router"]["entries_per_connection"]
    if backend == "netns":
        assert plain_entries == 0
    else:
        assert 0.98 <= plain_entries <= 1.02, plain_entries
    # the client and server ends cost what they cost between two hosts
    for other in (nat, plain):
        assert abs(socket_bytes(other) - socket_bytes(two)) / socket_bytes(two) < 0.02, (
            socket_bytes(other), socket_bytes(two))
