"""Bad input through the real CLI, in-process: exit code 2, one line, nothing created.

Every case runs ``orchestrator.cli.main([...])`` on a temporary copy of lab/ and
scenarios/ (``TCPLAB_ROOT``), with ``TCPLAB_STATE_DIR`` and ``--results`` pointing at
temporary directories, and asserts that afterwards:

* the exit code is 2 and stderr is one line naming the file, the key and what was expected;
* no network namespace appeared in ``ip netns list``;
* the results directory was not created and the state directory is still empty.

``labrun.run_plan`` is replaced by a function that fails the test, so a case that is
wrongly accepted can never start a real run. The table in docs/errors.md lists these cases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.run import labrun

pytestmark = pytest.mark.root  # sysctl classification (unshare --net), ip netns

REPO = Path(__file__).resolve().parents[2]
RELEASE = os.uname().release


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def journalled_elsewhere() -> set[str]:
    """Namespaces journalled by concurrent runs: the default state directory and those of
    other pytest sessions (integration tests run tcplab with a state dir under tmp_path).

    A run journals a namespace before it creates it, so a live namespace of another run is
    always found here; one of ours would have to be journalled in our (empty) state dir.
    """
    names = set()
    pytest_tmp = Path(tempfile.gettempdir())
    journals = [*Path("/run/tcplab/runs").glob("*/journal.jsonl"),
                *pytest_tmp.glob("pytest-of-*/pytest-*/*/state/runs/*/journal.jsonl")]
    for journal in journals:
        try:
            lines = journal.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("kind") == "netns":
                names.add(entry["name"])
    return names


def new_namespaces(before: set[str]) -> set[str]:
    """Namespaces that appeared since ``before`` and that no other run journalled.

    Looked at up to three times: a concurrent run deletes its namespace just before its
    journal, so one pass can see the namespace but no longer the journal.
    """
    for _ in range(3):
        new = netns_names() - before
        new -= journalled_elsewhere()
        if not new:
            return new
        time.sleep(0.2)
    return new


@dataclass
class Lab:
    """A temporary project copy and the places a run would create things in."""

    root: Path
    results: Path
    state: Path
    netns_before: set[str]

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def edit(self, rel: str, old: str, new: str, to: str | None = None) -> Path:
        """Copy ``rel`` to ``to`` (default: in place) with ``old`` replaced by ``new``."""
        text = (self.root / rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        return self.write(to or rel, text.replace(old, new, 1))

    def fail(self, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
        """Run the CLI; assert exit 2, one line on stderr, nothing created. The message."""
        if argv[0] == "run":
            argv = [*argv, "--results", str(self.results)]
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2, f"exit {code}; stderr: {err!r}"
        lines = err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
        assert lines[0].startswith("tcplab: error: ")
        assert out == ""
        self.assert_nothing_created()
        return lines[0][len("tcplab: error: "):]

    def assert_nothing_created(self) -> None:
        new = new_namespaces(self.netns_before)
        assert not new, f"network namespaces appeared: {sorted(new)}"
        assert not self.results.exists(), "the results directory was created"
        assert list(self.state.iterdir()) == [], "files appeared in the state directory"


def _must_not_run(*args: object, **kw: object) -> None:
    raise AssertionError("bad input reached run_plan: a run would have started")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    root = tmp_path / "root"
    shutil.copytree(REPO / "lab", root / "lab")
    shutil.copytree(REPO / "scenarios", root / "scenarios")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("TCPLAB_ROOT", str(root))
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(state))
    monkeypatch.setattr(labrun, "run_plan", _must_not_run)
    return Lab(root, tmp_path / "results", state, netns_names())


@dataclass(frozen=True)
class Case:
    """One bad input: files to write in the project copy, the command, the message.

    ``files`` maps a path under the project copy to its text (or bytes), or to
    ``(source, old, new)`` for a copy of ``source`` with ``old`` replaced by ``new``.
    ``argv`` and ``message`` may use ``{root}`` (the project copy) and ``{release}``
    (the running kernel).
    ``message`` is the exact message, or a regular expression when ``regex`` is set.
    """

    id: str
    argv: tuple[str, ...]
    message: str
    files: tuple[tuple[str, object], ...] = ()
    regex: bool = False
    argv_fn: Callable[[], tuple[str, ...]] | None = None


LAB = "lab/default.yaml"
RUN = ("run", "-b", "netns")
ROUTER_HOST = ("hosts:\n  router:\n    role: router\n    address: 198.18.0.1\n"
               "    server_address: 198.18.1.1\n")


def _too_many_for_memory() -> tuple[str, ...]:
    """An N whose ~10 KB per connection exceeds the available memory on this machine."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    avail = next(int(line.split()[1]) * 1024 for line in meminfo
                 if line.startswith("MemAvailable:"))
    return (*RUN, "-s", "idle", "-n", str(avail // 10_000))


CASES = [
    Case("malformed-yaml",
         (*RUN, "-s", "{root}/scenarios/broken.yaml"),
         "{root}/scenarios/broken.yaml:4: malformed YAML (expected the node content, but found "
         "'<stream end>'); fix the syntax",
         files=(("scenarios/broken.yaml",
                 "steps:\n  - checkpoint: baseline\n  - connect: {\n"),)),
    Case("not-utf8",
         (*RUN, "-s", "{root}/scenarios/latin1.yaml"),
         "{root}/scenarios/latin1.yaml: not UTF-8 text (byte 16); save it as UTF-8",
         files=(("scenarios/latin1.yaml", "description: caf\xe9\n".encode("latin-1")),)),
    Case("duplicate-key",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         "{root}/mine.yaml:3: key 'sysctls' appears twice; keep one of them",
         files=(("mine.yaml", "sysctls: {}\ndescription: x\nsysctls: {}\n"),)),
    Case("lab-unknown-key",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hostz: unknown key; expected one of name, description, backend, "
         "network, hosts, profile",
         files=(("lab/mine.yaml", (LAB, "hosts:\n", "hostz:\n")),)),
    Case("profile-unknown-key",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         "{root}/mine.yaml: sysctl: unknown key; expected one of description, include, sysctls",
         files=(("mine.yaml", "description: typo\nsysctl:\n  net.core.somaxconn: 1024\n"),)),
    Case("scenario-unknown-key",
         (*RUN, "-s", "{root}/scenarios/mine.yaml"),
         "{root}/scenarios/mine.yaml: conections: unknown key; expected one of description, "
         "connections, bytes, steps",
         files=(("scenarios/mine.yaml",
                 ("scenarios/idle.yaml", "connections:", "conections:")),)),
    Case("scenario-connections-not-a-number",
         (*RUN, "-s", "{root}/scenarios/mine.yaml"),
         '{root}/scenarios/mine.yaml: connections: expected an integer >= 1, got "ten"',
         files=(("scenarios/mine.yaml",
                 ("scenarios/idle.yaml", "connections: 10000", 'connections: "ten"')),)),
    Case("scenario-send-before-connect",
         (*RUN, "-s", "{root}/scenarios/mine.yaml"),
         "{root}/scenarios/mine.yaml: steps[1]: expected send after a connect step",
         files=(("scenarios/mine.yaml",
                 "steps:\n  - checkpoint: baseline\n  - send: client\n  - connect: {}\n"),)),
    Case("scenario-unknown-action",
         (*RUN, "-s", "{root}/scenarios/mine.yaml"),
         '{root}/scenarios/mine.yaml: steps[2]: expected one of connect, accept, send, read, '
         'join, close, abort, wait, block_acks, checkpoint, got "shutdown"',
         files=(("scenarios/mine.yaml",
                 "steps:\n  - checkpoint: baseline\n  - connect: {}\n  - shutdown: client\n"),)),
    Case("unknown-scenario",
         (*RUN, "-s", "idel"),
         "unknown scenario 'idel': no {root}/scenarios/idel.yaml; known scenarios: backlog, "
         "bulk, c2s, idle, lossy, orphan, pressure, s2c, slow-readers, synrecv, timewait"),
    Case("unknown-profile",
         (*RUN, "-s", "idle", "-p", "small"),
         "unknown profile 'small': no {root}/lab/profiles/small.yaml; known profiles: conntrack-large, default, "
         "fixed-buffers, large-buffers, lean-server, small-buffers, small-tcp-mem, tw-reuse"),
    Case("unknown-backend",
         ("run", "-s", "idle", "-b", "kvm"),
         "tcplab run: argument --backend/-b: invalid choice: 'kvm' (choose from 'netns', "
         "'docker', 'auto', 'ssh', 'vm'); see tcplab run --help"),
    Case("include-cycle",
         (*RUN, "-s", "idle", "-p", "a"),
         "{root}/lab/profiles/a.yaml: include: cycle a.yaml -> b.yaml -> a.yaml; remove one of "
         "these includes",
         files=(("lab/profiles/a.yaml", "include: [b]\n"),
                ("lab/profiles/b.yaml", "include: [default, a]\n"))),
    Case("include-unknown-profile",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         "{root}/mine.yaml: include[0]: unknown profile 'smal-buffers': no "
         "{root}/lab/profiles/smal-buffers.yaml; known profiles: conntrack-large, default, fixed-buffers, large-buffers, "
         "lean-server, small-buffers, small-tcp-mem, tw-reuse",
         files=(("mine.yaml", "include: [smal-buffers]\n"),)),
    Case("sysctl-missing-on-kernel",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         '{root}/mine.yaml: sysctls."net.ipv4.tcp_nonexistent": this kernel ({release}) has no '
         "such sysctl; check the spelling or remove it",
         files=(("mine.yaml", "sysctls:\n  net.ipv4.tcp_nonexistent: 1\n"),)),
    Case("tcp_rmem-not-integers",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         '{root}/mine.yaml: sysctls."net.ipv4.tcp_rmem": expected three integers '
         '"min default max", got "abc"',
         files=(("mine.yaml", "sysctls:\n  net.ipv4.tcp_rmem: abc\n"),)),
    Case("tcp_rmem-min-above-default",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         '{root}/mine.yaml: sysctls."net.ipv4.tcp_rmem": expected min <= default <= max, '
         'got "8192 4096 65536"',
         files=(("mine.yaml", 'sysctls:\n  net.ipv4.tcp_rmem: "8192 4096 65536"\n'),)),
    Case("tcp_wmem-a-list",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         '{root}/mine.yaml: sysctls."net.ipv4.tcp_wmem": expected an integer or a string of '
         "integers, got [4096, 16384, 65536]",
         files=(("mine.yaml", "sysctls:\n  net.ipv4.tcp_wmem: [4096, 16384, 65536]\n"),)),
    Case("port-range-above-65535",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         '{root}/lab/mine.yaml: hosts.client.sysctls."net.ipv4.ip_local_port_range": expected '
         'ports between 1 and 65535, got "70000 80000"',
         files=(("lab/mine.yaml", (LAB, '"1024 65535"', '"70000 80000"')),)),
    Case("host-sysctl-in-profile",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         '{root}/mine.yaml: sysctls."net.ipv4.tcp_mem" is host-wide on this kernel (not per '
         "namespace); add --allow-host-sysctls to change it for the run (it is restored "
         "afterwards), or remove it",
         files=(("mine.yaml", 'sysctls:\n  net.ipv4.tcp_mem: "100000 150000 200000"\n'),)),
    Case("host-sysctl-in-lab",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml", "--allow-host-sysctls"),
         '{root}/lab/mine.yaml: hosts.server.sysctls."net.ipv4.tcp_mem" is host-wide on this '
         "kernel (not per namespace); move it to a profile and run with --allow-host-sysctls, "
         "or remove it",
         files=(("lab/mine.yaml", (LAB, "    sysctls:", ('    sysctls:\n      net.ipv4.tcp_mem: '
                                                       '"100000 150000 200000"'))),)),
    Case("docker-ipv6-without-opt-in",
         ("run", "-b", "docker", "-s", "idle", "--family", "ipv6"),
         "--family/FAMILY ipv6 on the docker backend: dockerd turns on IPv6 forwarding for the "
         "whole host (net.ipv6.conf.all.forwarding and every interface's) when it creates an "
         "IPv6 network, and leaves it on; add --allow-host-sysctls to let tcplab save those "
         "values and restore them after the run, or use --backend netns"),
    Case("subnet-outside-benchmark-range",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: network.subnet: expected a network inside 198.18.0.0/15 "
         '(reserved for benchmarks), got "10.0.0.0/24"',
         files=(("lab/mine.yaml", (LAB, "198.18.0.0/24 ", "10.0.0.0/24 ")),)),
    Case("subnet-ipv6",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: network.subnet: expected a network inside 198.18.0.0/15 "
         '(reserved for benchmarks), got "2001:db8::/64"',
         files=(("lab/mine.yaml", (LAB, "198.18.0.0/24 ", "2001:db8::/64 ")),)),
    Case("address-outside-subnet",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hosts.client.address: expected a host address inside "
         'network.subnet 198.18.0.0/24, got "198.18.1.3"',
         files=(("lab/mine.yaml", (LAB, "198.18.0.3", "198.18.1.3")),)),
    Case("two-servers",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hosts: expected exactly one host with role server and at least "
         'one with role client, got "server, server"',
         files=(("lab/mine.yaml", (LAB, "role: client", "role: server")),)),
    Case("router-one-network",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hosts.router: a router joins two networks and this lab has one: "
         "add network.server_subnet (like 198.18.1.0/24) for the server's side, or remove the "
         "router",
         files=(("lab/mine.yaml", (LAB, "hosts:\n", ROUTER_HOST)),)),
    Case("nat-without-router",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hosts.client.nat: NAT needs a router: nat: true belongs on the "
         "host with role router (add one, with network.server_subnet for the server's side) or "
         "remove nat",
         files=(("lab/mine.yaml", (LAB, "    role: client\n", "    role: client\n    nat: true\n")),)),
    Case("too-many-clients",
         (*RUN, "-s", "idle", "--clients", "300"),
         "--clients/CLIENTS: 300 clients need 300 addresses and network.subnet 198.18.0.0/24 of "
         "{root}/lab/default.yaml has 253 left (after the server's and the router's); use fewer "
         "clients or a larger network.subnet in a lab file (--lab)"),
    Case("router-on-ssh",
         ("run", "-b", "ssh", "-s", "idle", "--router", "nat"),
         "the ssh backend drives server and client hosts but not a router: tcplab would have "
         "to turn on forwarding, add routes and a NAT table on machines it does not own, "
         "host-wide; use BACKEND=netns, docker or vm for a router, or drop --router "
         "(several ssh clients work)"),
    Case("ipv6-with-router",
         (*RUN, "-s", "idle", "--router", "plain", "--family", "ipv6"),
         "--family/FAMILY ipv6 with a router is not supported yet (the router forwards and "
         "masquerades IPv4 only); use FAMILY=ipv4 or drop the router"),
    Case("vms-exceed-memory",
         ("run", "-b", "vm", "-s", "idle", "--clients", "200", "--router", "nat"),
         r"/\S+/lab/default.yaml: the 202 VMs of this lab ask for 206,336 MiB and this "
         r"machine has [\d,]+ MiB available; size them down \(hosts.NAME.vm: \{memory: MiB\}\) "
         r"or use fewer clients", regex=True),
    Case("hosts-not-a-mapping",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: hosts: expected a mapping, got ['server', 'client']",
         files=(("lab/mine.yaml", "hosts: [server, client]\n"),)),
    Case("empty-lab-file",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: expected a mapping at the top level, got None",
         files=(("lab/mine.yaml", "# nothing yet\n"),)),
    Case("somaxconn-too-small",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "net.core.somaxconn 64 on the server is too small for a connection ramp; raise it in "
         "{root}/lab/mine.yaml (hosts.server.sysctls) to at least 128",
         files=(("lab/mine.yaml", (LAB, "somaxconn: 65535", "somaxconn: 64")),)),
    Case("n-negative",
         (*RUN, "-s", "idle", "-n", "-5"),
         "tcplab run: argument -n/--connections: expected an integer >= 0, got '-5'; see "
         "tcplab run --help"),
    Case("n-zero",
         (*RUN, "-s", "idle", "-n", "0"),
         "tcplab run: argument -n/--connections: expected an integer >= 1, got '0'; see "
         "tcplab run --help"),
    Case("n-not-a-number",
         (*RUN, "-s", "idle", "-n", "ten"),
         "tcplab run: argument -n/--connections: expected an integer, got 'ten'; see "
         "tcplab run --help"),
    Case("bytes-negative",
         (*RUN, "-s", "c2s", "--bytes", "-13"),
         "tcplab run: argument --bytes: expected an integer >= 0, got '-13'; see "
         "tcplab run --help"),
    Case("n-too-large-for-memory",
         (), r"[\d,]+ connections need about [\d.]+ GiB of kernel memory \([\d,]+ B each, "
             r"both ends, from the live object sizes\) and [\d.]+ GiB is "
             r"available; the largest N that fits is about [\d,]+",
         regex=True, argv_fn=_too_many_for_memory),
    Case("n-too-large-for-ports",
         (*RUN, "-s", "idle", "-n", "100000000000"),
         "100,000,000,000 connections need 3100199 server ports with the client's "
         "ip_local_port_range 1024 65535; widen it in {root}/lab/default.yaml "
         "(hosts.client.sysctls) or lower N"),
    Case("report-missing-dir",
         ("report", "{root}/results/20261126-000000-idle-default"),
         "{root}/results/20261126-000000-idle-default: no result here; pass a run directory "
         "under results/"),
    Case("report-newer-schema",
         ("report", "{root}/run"),
         "{root}/run/result.json: schema tcplab.result/99 is newer than this tcplab understands "
         "(tcplab.result/1); upgrade tcplab to read it",
         files=(("run/result.json", '{"schema": "tcplab.result/99", "checkpoints": []}\n'),)),
    Case("report-corrupt-json",
         ("report", "{root}/run"),
         "{root}/run/result.json: not a readable tcplab result (Expecting ',' delimiter: line 1 "
         "column 30 (char 29))",
         files=(("run/result.json", '{"schema": "tcplab.result/1" "checkpoints": ['),)),
    Case("report-binary-result",
         ("report", "{root}/run"),
         "{root}/run/result.json: not a readable tcplab result (not UTF-8 text: byte 1); a "
         "bundle (.tar.gz) is read by `tcplab compare` or `run --bundle`, or `tcplab import` "
         "it first",
         files=(("run/result.json", b"\x1f\x8b\x08\x00 a gzip stream"),)),
    Case("report-not-a-result",
         ("report", "{root}/run"),
         "{root}/run/result.json: not a tcplab result (schema None)",
         files=(("run/result.json", "[1, 2, 3]\n"),)),
    Case("block-acks-on-ssh",
         ("run", "-b", "ssh", "-s", "synrecv"),
         "{root}/scenarios/synrecv.yaml: steps: block_acks filters packets on a lab host, which "
         "the ssh backend cannot do; run this scenario with BACKEND=netns or BACKEND=docker"),
    Case("ledger-on-ssh",
         ("run", "-b", "ssh", "-s", "idle", "--ledger"),
         "--ledger/LEDGER: the ssh backend's hosts run on kernels of their own, which the "
         "ledger cannot trace yet; use --backend netns or docker, or run without --ledger"),
    Case("sweep-one-value",
         (*RUN, "-s", "idle", "--sweep", "net.core.somaxconn=128"),
         "--sweep/SWEEP: net.core.somaxconn: expected at least two values to sweep, got 1 "
         "('128'); for one value use a profile or --link"),
    Case("sweep-no-key",
         (*RUN, "-s", "idle", "--sweep", "128,4096"),
         "--sweep/SWEEP: expected KEY=V1,V2,... (a sysctl like net.core.somaxconn=128,4096, or "
         "a link condition like delay=0ms,10ms,50ms), got '128,4096'"),
    Case("sweep-two-brace-groups",
         (*RUN, "-s", "idle", "--sweep", "net.ipv4.tcp_rmem=4096 {{1,2}} {{3,4}}"),
         "--sweep/SWEEP: braces may expand one field only, got 2 groups in '4096 {{1,2}} {{3,4}}'"),
    Case("sweep-unbalanced-braces",
         (*RUN, "-s", "idle", "--sweep", "net.ipv4.tcp_rmem=4096 131072 {{1M,4M"),
         "--sweep/SWEEP: unbalanced braces in '4096 131072 {{1M,4M'; write one group like "
         '"4096 131072 {{1M,4M,32M}}"'),
    Case("sweep-empty-value",
         (*RUN, "-s", "idle", "--sweep", "net.core.somaxconn=128,,4096"),
         "--sweep/SWEEP: net.core.somaxconn: an empty value in '128,,4096'; separate values "
         "with single commas"),
    Case("sweep-value-twice",
         (*RUN, "-s", "idle", "--sweep", "net.ipv4.tcp_rmem=4096 131072 {{1M,1024k}}"),
         "--sweep/SWEEP: net.ipv4.tcp_rmem: the value '4096 131072 1024k' is given twice (as "
         "'4096 131072 1M'); each point must differ"),
    Case("sweep-unknown-key",
         (*RUN, "-s", "idle", "--sweep", "dealy=0ms,10ms"),
         "--sweep/SWEEP: 'dealy' is neither a sysctl (net.ipv4.tcp_rmem) nor a link condition "
         "(delay, jitter, loss, rate, queue)"),
    Case("sweep-no-such-sysctl",
         (*RUN, "-s", "idle", "--sweep", "net.core.somaxcon=128,4096"),
         "--sweep/SWEEP: net.core.somaxcon: this kernel has no such sysctl; check the spelling"),
    Case("sweep-bad-value",
         (*RUN, "-s", "idle", "--sweep", "net.ipv4.tcp_rmem=4096 131072 {{64k,4M}}"),
         '--sweep/SWEEP: net.ipv4.tcp_rmem: expected min <= default <= max, got "4096 131072 '
         "65536\" (sweep value '4096 131072 64k')"),
    Case("sweep-host-wide",
         (*RUN, "-s", "idle", "--sweep", "net.ipv4.tcp_mem=1 2 3,4 5 6"),
         "--sweep/SWEEP: net.ipv4.tcp_mem is host-wide on this kernel (not per namespace); add "
         "--allow-host-sysctls to set it for each run (journalled and restored afterwards), or "
         "sweep it on the vm backend, where each VM has its own"),
    Case("sweep-point-refused",
         (*RUN, "-s", "idle", "--sweep", "net.core.somaxconn=4096,64"),
         "net.core.somaxconn 64 on the server is too small for a connection ramp; raise it in "
         "{root}/lab/default.yaml (hosts.server.sysctls) to at least 128"),
    Case("sweep-with-profiles",
         (*RUN, "-s", "idle", "-p", "default", "-p", "small-buffers", "--sweep",
          "net.core.somaxconn=128,4096"),
         "--sweep/SWEEP runs one setup over one key's values; got 2 profiles "
         "(--profile/PROFILES): sweep each profile on its own"),
    Case("sweep-with-scenarios",
         (*RUN, "-s", "idle s2c", "--sweep", "net.core.somaxconn=128,4096"),
         "--sweep/SWEEP runs one setup over one key's values; got 2 scenarios "
         "(--scenario/SCENARIO): sweep each scenario on its own"),
    Case("scenario-twice",
         (*RUN, "-s", "idle s2c idle"),
         "--scenario/SCENARIO: a scenario is named twice in 'idle s2c idle'; name each once"),
    Case("congestion-control-not-allowed",
         (*RUN, "-s", "idle", "-p", "{root}/mine.yaml"),
         "{root}/mine.yaml: sysctls.\"net.ipv4.tcp_congestion_control\" 'vegas': outside the "
         "first network namespace the kernel takes only the algorithms this machine allows "
         "(net.ipv4.tcp_allowed_congestion_control: {allowed}); choose one of those, or add "
         "vegas to that list on the machine",
         files=(("mine.yaml", "sysctls:\n  net.ipv4.tcp_congestion_control: vegas\n"),)),
    Case("link-unknown-key",
         (*RUN, "-s", "idle", "--link", "dealy=25ms"),
         "--link/LINK: dealy: unknown key; expected one of delay, jitter, loss, rate, queue"),
    Case("link-rate-in-bytes",
         (*RUN, "-s", "idle", "--link", "delay=25ms rate=25mbps"),
         "--link/LINK: rate: expected bits per second (tc's kbps, mbps and gbps are bytes per "
         'second): write kbit, mbit or gbit, like 200mbit, got "25mbps"'),
    Case("link-in-lab-file",
         (*RUN, "-s", "idle", "--lab", "{root}/lab/mine.yaml"),
         "{root}/lab/mine.yaml: network.link.loss: expected a loss percentage like 0.5% (0 to "
         'below 100), got "half"',
         files=(("lab/mine.yaml", (LAB, "  subnet: 198.18.0.0/24",
                                   "  link: {delay: 10ms, loss: half}\n  subnet: 198.18.0.0/24")),)),
    Case("link-engine-without-link",
         (*RUN, "-s", "idle", "--link-engine", "fallback"),
         "--link-engine/LINK_ENGINE fallback: there are no link conditions to apply; give some "
         "with --link/LINK or network.link in the lab file, or drop --link-engine"),
    Case("link-engine-netem-missing",
         (*RUN, "-s", "idle", "--link", "delay=25ms", "--link-engine", "netem"),
         "--link-engine netem: this kernel ({release}) has no sch_netem (tc qdisc netem); use "
         "--link-engine fallback (the delay line) or auto, or BACKEND=vm (Debian's VM kernels "
         "have netem)"),
    Case("link-rate-above-the-delay-line",
         (*RUN, "-s", "idle", "--link", "delay=1ms rate=1gbit"),
         "--link/LINK: rate 1 Gbit/s is above what the delay line (the fallback engine: this "
         "kernel ({release}) has no sch_netem) carries faithfully, 500 Mbit/s; lower the rate, "
         "or use a kernel with netem (BACKEND=vm)"),
    Case("link-on-ssh",
         ("run", "-b", "ssh", "-s", "idle", "--link", "delay=25ms"),
         "--link/LINK on the ssh backend is not supported yet: netem there would change a real "
         "host's interface for everything it carries; use BACKEND=netns, docker or vm"),
    Case("link-fallback-rate-in-vm",
         ("run", "-b", "vm", "-s", "idle", "--link", "delay=25ms rate=100mbit",
          "--link-engine", "fallback"),
         "--link/LINK: rate 100 Mbit/s is above what the delay line inside a VM (the fallback "
         "engine on the vm backend) carries faithfully, 5 Mbit/s (qemu without KVM); lower "
         "the rate, or use --link-engine netem"),
    Case("profiles-show-unknown",
         ("profiles", "show", "larg-buffers"),
         "unknown profile 'larg-buffers': no {root}/lab/profiles/larg-buffers.yaml; known "
         "profiles: conntrack-large, default, fixed-buffers, large-buffers, lean-server, small-buffers, small-tcp-mem, tw-reuse"),
    # kernels resolve against the captured Debian index (tests/unit/conftest.py)
    Case("kernel-not-in-archive",
         ("run", "-s", "idle", "--kernels", "6.1 4.19 host"),
         "kernel '4.19': no linux-image-4.19*-cloud-amd64 in Debian's archive; kernels "
         "available: 5.10, 6.1, 6.12, 6.16, 6.17, 6.18, 7.2, 7.3; or give a path to a vmlinuz"),
    Case("kernel-without-modules-package",
         ("run", "-s", "idle", "--kernels", "6.19"),
         "kernel '6.19': linux-image-6.19.14+deb13-cloud-amd64 6.19.14-1~bpo13+1 "
         "(trixie-backports) depends on linux-modules-6.19.14+deb13-cloud-amd64 (= "
         "6.19.14-1~bpo13+1), which the index does not have; kernels available: 5.10, 6.1, "
         "6.12, 6.16, 6.17, 6.18, 7.2, 7.3; or give a path to a vmlinuz"),
    Case("vmlinuz-without-modules",
         ("run", "-s", "idle", "--kernels", "{root}/k/vmlinuz-6.99.0-x"),
         "kernel {root}/k/vmlinuz-6.99.0-x: the VM needs virtio_net (CONFIG_VIRTIO_NET=m, no "
         "module); no modules tree (looked for {root}/k/lib/modules/6.99.0-x and "
         "{root}/lib/modules/6.99.0-x), config {root}/k/config-6.99.0-x. Put the kernel's "
         "modules in {root}/k/lib/modules/6.99.0-x (make modules_install "
         "INSTALL_MOD_PATH={root}/k) or build them in",
         files=(("k/vmlinuz-6.99.0-x", "not a bzImage\n"),
                ("k/config-6.99.0-x", "".join(f"CONFIG_{o}=y\n" for o in (
                    "BLK_DEV_NVME", "EXT4_FS", "DEVTMPFS", "SERIAL_8250_CONSOLE",
                    "MSDOS_PARTITION", "VIRTIO_PCI", "INET_DIAG", "INET_TCP_DIAG"))
                 + "CONFIG_VIRTIO_NET=m\n"))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(lab: Lab, capsys: pytest.CaptureFixture, case: Case) -> None:
    for rel, content in case.files:
        if isinstance(content, tuple):
            source, old, new = content
            lab.edit(source, old, new, to=rel)
        elif isinstance(content, bytes):
            (lab.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (lab.root / rel).write_bytes(content)
        else:
            lab.write(rel, str(content))
    allowed = " ".join(Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split())
    fill = {"root": str(lab.root), "release": RELEASE, "allowed": allowed}
    argv = case.argv_fn() if case.argv_fn else case.argv
    msg = lab.fail(capsys, [a.format(**fill) for a in argv])
    if case.regex:
        assert re.fullmatch(case.message, msg), msg
    else:
        assert msg == case.message.format(**fill)


def test_enough_cases() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


def test_tcp_rmem_message_is_exact(lab: Lab, capsys: pytest.CaptureFixture) -> None:
    """The message format every user-file error follows: FILE: KEY: expected WHAT, got VALUE."""
    path = lab.write("lab/profiles/mine.yaml", "sysctls:\n  net.ipv4.tcp_rmem: abc\n")
    msg = lab.fail(capsys, ["run", "-s", "idle", "-p", str(path)])
    assert msg == f'{path}: sysctls."net.ipv4.tcp_rmem": expected three integers ' \
                  '"min default max", got "abc"'
    # by name from lab/profiles/ too
    assert lab.fail(capsys, ["run", "-s", "idle", "-p", "mine"]) == msg


def test_report_result_missing_fields(lab: Lab, capsys: pytest.CaptureFixture) -> None:
    path = lab.write("run/result.json", '{"schema": "tcplab.result/1"}\n')
    msg = lab.fail(capsys, ["report", str(path.parent)])
    assert msg.startswith(f"{path}: ")


# --- the environment: checked before anything is created -----------------------------

def test_not_root(lab: Lab, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    msg = lab.fail(capsys, ["run", "-s", "idle", "-b", "netns"])
    assert msg == "root: uid 1000; run tcplab as root (sudo make lab ...)"


def test_slabinfo_unreadable(lab: Lab, capsys: pytest.CaptureFixture,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == "/proc/slabinfo"
                        else real(p, m))
    msg = lab.fail(capsys, ["run", "-s", "idle", "-b", "netns"])
    assert msg == ("/proc/slabinfo: not readable (mode 0400); run as root; slabinfo is readable "
                   "by root only")


def test_no_docker_daemon(lab: Lab, capsys: pytest.CaptureFixture,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{lab.root}/no-such-docker.sock")
    msg = lab.fail(capsys, ["run", "-s", "idle", "-b", "docker"])
    assert msg.startswith("no Docker daemon answers (")
    assert msg.endswith("): start it (bash .ci/setup-docker.sh) or use BACKEND=netns")


@pytest.mark.root
def test_disk_full_for_results(lab: Lab, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], check=True)
    try:
        code = main(["run", "-s", "idle", "-b", "netns", "--results", str(tiny / "results")])
        err = capsys.readouterr().err
        assert code == 2
        assert err.strip() == (f"tcplab: error: {tiny}/results: only 1.0 MiB free on its "
                               "filesystem; a run needs about 64 MiB for its results: free some "
                               "space or pass --results DIR elsewhere")
        assert not (tiny / "results").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=True)
