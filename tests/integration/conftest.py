"""Fixtures of every integration test: the host's network sysctls are left as found.

Every test here that creates hosts (namespaces, containers, VMs, sshd) is checked: all
writable values under /proc/sys/net, and this machine's nftables/iptables ruleset, before
the test equal those after it (see netsysctls.py), whatever the backend, daemon or tool
that changed them (dockerd adds and removes rules for each network it creates). A test that needs
a particular starting value sets it with ``host_sysctl`` and gets the old one back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import netsysctls
from .dockerlab import snapshot_when_idle


@pytest.fixture(autouse=True)
def host_net_sysctls_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    if os.geteuid() != 0:  # nothing here can change them; the tests themselves skip
        yield
        return
    before, rules = snapshot_when_idle(_host_state)
    yield
    after, rules_after = snapshot_when_idle(_host_state)
    changed = netsysctls.changes(before, after)
    problems = [netsysctls.shown(changed)] if changed else []
    if rules_after != rules:
        problems.append("nftables/iptables ruleset:\n" + netsysctls.ruleset_diff(rules, rules_after))
    if problems:
        pytest.fail(f"{request.node.nodeid} left the host changed (a run must leave it as it "
                    "found it):\n" + "\n".join(problems), pytrace=False)


def _host_state() -> tuple[dict[str, str], str]:
    return netsysctls.values(), netsysctls.ruleset()


@pytest.fixture
def host_sysctl() -> Iterator[Callable[[str, str], None]]:
    """``host_sysctl("net.ipv6.conf.all.forwarding", "0")``: set a host value for this test
    (the test must not depend on what an earlier test or run left); restored after."""
    saved: list[tuple[Path, str]] = []

    def set_value(name: str, value: str) -> None:
        path = Path("/proc/sys", *name.split("."))
        saved.append((path, path.read_text()))
        path.write_text(value + "\n")

    yield set_value
    for path, old in reversed(saved):
        path.write_text(old)
