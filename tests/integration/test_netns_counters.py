"""Kernel counters per host and goodput per transfer, on network namespaces: each asserts
a number the kernel or the clock must give, not just the keys."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from .facts import checkpoint
from .test_netns_scenarios import run_ok

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]

MIB = 1 << 20


def test_synack_retransmissions_are_counted_on_the_server_only(tmp_path: Path) -> None:
    """The client's final ACKs are dropped (block_acks): the server retransmits each SYN-ACK
    after 1 s (the next one at 3 s). Its own namespace counts them; the client's, which
    retransmits nothing, does not; nobody's listener overflowed."""
    n = 200
    scenario = tmp_path / "synretrans.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        description: half-open connections, then 2 s for the first SYN-ACK retransmission
        connections: {n}
        bytes: 0
        steps:
          - checkpoint: baseline
          - block_acks: client
          - connect: {{accept: false}}
          - wait: 2
          - checkpoint: syn_recv
        """))
    result = run_ok(str(scenario), tmp_path, n=n)
    cp = checkpoint(result, "syn_recv")
    assert cp["states"] == {"server": {"SYN-RECV": n}, "client": {"ESTAB": n}}
    server, client = cp["counters"]["server"], cp["counters"]["client"]
    print(f"server moved: {server}\nclient moved: {client}")
    assert n <= server["TcpExtTCPSynRetrans"] <= 2 * n
    assert server["TcpRetransSegs"] == server["TcpExtTCPSynRetrans"]
    assert "TcpPassiveOpens" not in server  # no handshake completed there (0: omitted)
    assert "TcpRetransSegs" not in client and "TcpExtTCPSynRetrans" not in client
    assert client["TcpActiveOpens"] == n
    assert not any(k in c for c in (server, client)
                   for k in ("TcpExtListenOverflows", "TcpExtListenDrops"))
    assert checkpoint(result, "baseline")["counters"] == {"server": {}, "client": {}}
    assert result["metadata"]["counters"]["omitted"] == "counters whose delta is zero"


def test_bulk_goodput_matches_the_pace_and_the_orchestrators_clock(tmp_path: Path) -> None:
    """bulk: the client reads at 32 MiB/s per connection (``read: {rate}``). Each
    connection's goodput must be that pace within 10%. The sides' span must lie within
    the orchestrator's (from issuing the send to the join's reply) and differ from it by
    little: the transfer (160 MiB per connection: 5 s) outlasts the `wait: 3` and the
    checkpoint, so the join waits for it; what is left is the messages' latency (tens of
    ms), within 5% of 5 s."""
    n, nbytes, rate = 2, 160 * MIB, 32 * MIB
    result = run_ok("bulk", tmp_path, "--bytes", str(nbytes), n=n)
    (t,) = result["transfers"]
    print({k: v for k, v in t.items() if k != "hosts"})
    assert (t["sender"], t["receiver"], t["background"], t["rate"]) == ("server", "client",
                                                                       True, rate)
    assert t["connections"] == n and t["bytes"] == n * nbytes
    per = t["per_connection"]
    for value in (per["mean"], per["min"], per["max"]):
        assert 0.9 * rate <= value <= 1.1 * rate, per
    assert 0.9 * n * rate <= t["goodput"] <= 1.1 * n * rate
    assert t["seconds"] <= t["from_first_sent_seconds"] <= t["orchestrator_seconds"]
    seen = n * nbytes / t["orchestrator_seconds"]
    assert 0.95 * t["goodput"] <= seen <= t["goodput"], (seen, t["goodput"])


def test_an_unpaced_transfer_records_goodput_per_connection(tmp_path: Path) -> None:
    """Send and read as fast as they go, in the background, joined at once: goodput is
    bytes over the readers' span, which the orchestrator's own span contains."""
    n, nbytes = 4, 32 * MIB
    scenario = tmp_path / "fast.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        description: an unpaced transfer, joined at once
        connections: {n}
        bytes: {nbytes}
        steps:
          - checkpoint: baseline
          - connect: {{}}
          - checkpoint: established
          - send: {{side: client, background: true}}
          - read: {{side: server, background: true}}
          - join: {{}}
          - checkpoint: done
        """))
    result = run_ok(str(scenario), tmp_path, n=n)
    (t,) = result["transfers"]
    print({k: v for k, v in t.items() if k != "hosts"})
    assert (t["sender"], t["receiver"], t["rate"], t["step"]) == ("client", "server", None, 4)
    assert t["connections"] == n and t["bytes"] == n * nbytes
    assert t["goodput"] == pytest.approx(n * nbytes / t["seconds"], rel=1e-3)
    per = t["per_connection"]
    assert per["min"] <= per["mean"] <= per["max"]
    assert per["min"] >= nbytes / t["seconds"] * 0.999  # no connection took longer than all
    assert t["seconds"] <= t["from_first_sent_seconds"] <= t["orchestrator_seconds"]
    # the data crossed the veth: the server's namespace counted at least the bytes read
    done = checkpoint(result, "done")
    assert done["counters"]["server"]["IpExtInOctets"] >= n * nbytes
