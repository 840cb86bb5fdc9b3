"""The ssh backend as a new user meets it, without hosts: login failure texts, the refusal
naming the file a host-wide sysctl came from, interfaces compared by role, a shared kernel
said in the report, and the wait for tw sockets an earlier run left before a baseline.
(The same, against real sshd hosts: tests/integration/test_ssh_backend.py.)
"""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from orchestrator.errors import InputError
from orchestrator.plan import RunOptions, make_plan
from orchestrator.report.compare import OTHER_INTERFACES, by_interface_role
from orchestrator.report.text import ends
from orchestrator.results import load_result
from orchestrator.ssh import SshRunner, _describe

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def _runner() -> SshRunner:
    return SshRunner("server", "10.1.0.12", "/keys/lab", user="lab", port=2222)


def _no_connection(code: int) -> Exception:
    return paramiko.ssh_exception.NoValidConnectionsError(
        {("10.1.0.12", 2222): OSError(code, "x")})


@pytest.mark.parametrize(("exc", "text"), [
    (_no_connection(errno.EHOSTUNREACH),
     "no route to the host (nothing answers at that address): is the host up and "
     "ssh.address right?"),
    (_no_connection(errno.ECONNREFUSED),
     "connection refused on port 2222: is sshd running there, on that port?"),
    (TimeoutError("timed out"),
     "no answer within 10 s: is the host up, or does a firewall drop port 2222?"),
    (paramiko.AuthenticationException("Authentication failed."),
     "the key /keys/lab was not accepted for user lab: add /keys/lab.pub to "
     "~lab/.ssh/authorized_keys on the host, or fix ssh.user / ssh.key"),
    (paramiko.SSHException("not a valid OPENSSH private key file"),
     "/keys/lab is not a private key (a .pub file?): ssh.key needs the private half of the "
     "key pair"),
    (paramiko.PasswordRequiredException("private key file is encrypted"),
     "the key /keys/lab is encrypted: give a key without a passphrase "
     "(ssh-keygen -p -N '' -f /keys/lab)"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/keys/lab"),
     "cannot read the key /keys/lab (No such file or directory): fix ssh.key"),
])
def test_login_failures_say_what_to_do(exc: Exception, text: str) -> None:
    assert _describe(exc, _runner()) == text


def _ssh_lab(tmp_path: Path, client_sysctls: str = "") -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "lab").write_text("a private key\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text(
        "description: mine\ninclude: []\nsysctls:\n  net.ipv4.tcp_fin_timeout: 20\n")
    lab = tmp_path / "two-machines.yaml"
    lab.write_text(f"""name: two-machines
backend: ssh
network:
  subnet: 10.20.0.0/24
hosts:
  server:
    role: server
    address: 10.20.0.2
    ssh: {{address: 10.1.0.12, key: keys/lab}}
  client:
    role: client
    address: 10.20.0.3
    ssh: {{address: 10.1.0.13, key: keys/lab}}
{client_sysctls}""")
    return lab


def test_host_sysctl_refusal_names_the_profile_it_came_from(tmp_path: Path) -> None:
    lab = _ssh_lab(tmp_path)
    profile = tmp_path / "profiles" / "mine.yaml"
    with pytest.raises(InputError) as err:
        make_plan(RunOptions(scenario="idle", root=tmp_path, lab_file=lab,
                             profile=str(profile)))
    assert str(err.value) == (
        f"{profile}: the ssh backend sets sysctls on real hosts, where they are host-wide "
        "(net.ipv4.tcp_fin_timeout); add --allow-host-sysctls to change them for the run "
        "(journalled on each host and restored afterwards), or remove them from that file")


def test_host_sysctl_refusal_names_the_lab_file_for_its_own(tmp_path: Path) -> None:
    lab = _ssh_lab(tmp_path, "    sysctls:\n      net.ipv4.ip_local_port_range: \"1024 65535\"\n")
    with pytest.raises(InputError) as err:
        make_plan(RunOptions(scenario="idle", root=tmp_path, lab_file=lab))
    assert str(err.value).startswith(f"{lab}: the ssh backend sets sysctls on real hosts, "
                                     "where they are host-wide (net.ipv4.ip_local_port_range)")


def test_interfaces_compare_by_role() -> None:
    ssh_host = {"net.ipv4.conf.ens3.rp_filter": "0", "net.ipv4.conf.lo.rp_filter": "0",
                "net.ipv6.neigh.ens3.gc_stale_time": "60", "net.ipv4.conf.all.forwarding": "0",
                "net.ipv4.conf.mgmt0.rp_filter": "2", "net.core.somaxconn": "4096"}
    netns_host = {"net.ipv4.conf.eth0.rp_filter": "0", "net.ipv4.conf.lo.rp_filter": "0",
                  "net.ipv6.neigh.eth0.gc_stale_time": "60",
                  "net.ipv4.conf.all.forwarding": "0", "net.core.somaxconn": "4096"}
    ssh_roles = by_interface_role(ssh_host, "ens3")
    netns_roles = by_interface_role(netns_host, None)  # the one interface besides lo/all
    assert ssh_roles.pop(OTHER_INTERFACES) == "mgmt0"
    assert ssh_roles == netns_roles == {
        "net.ipv4.conf.<lab>.rp_filter": "0", "net.ipv4.conf.lo.rp_filter": "0",
        "net.ipv6.neigh.<lab>.gc_stale_time": "60", "net.ipv4.conf.all.forwarding": "0",
        "net.core.somaxconn": "4096"}


def test_compare_of_ssh_and_netns_shows_only_real_differences(tmp_path: Path) -> None:
    """A netns result and the same as an ssh run whose lab interface is ens3 (and which has
    a management interface): the per-interface rows line up by role; only the value that
    really differs, and the interface with no counterpart, are shown."""
    import json
    import shutil

    from orchestrator.report import compare

    per_if = {"net.ipv4.conf.{}.rp_filter": "0", "net.ipv6.conf.{}.mtu": "1500",
              "net.ipv4.neigh.{}.gc_stale_time": "60"}
    runs = []
    for name, lab_if, extra in (("netns", "eth0", []), ("ssh", "ens3", ["mgmt0"])):
        run = tmp_path / name
        shutil.copytree(RESULTS / "20261126-012650-c2s-default", run)
        data = json.loads((run / "result.json").read_text())
        data["metadata"]["backend"] = name
        for host in data["metadata"]["hosts"].values():
            if name == "ssh":
                host["lab_interface"] = lab_if
            for ifname in ("lo", "all", "default", lab_if, *extra):
                host["net_sysctls"].update({k.format(ifname): v for k, v in per_if.items()})
        if name == "ssh":
            data["metadata"]["hosts"]["server"]["net_sysctls"]["net.ipv4.conf.ens3.rp_filter"] = "2"
        (run / "result.json").write_text(json.dumps(data))
        runs.append(load_result(run))
    cmp = compare.compare(runs)
    assert [(r["host"], r["sysctl"], r["values"]) for r in cmp["sysctls"]] == [
        ("server", "net.ipv4.conf.<lab>.rp_filter", ["0", "2"]),
        ("server", OTHER_INTERFACES, [None, "mgmt0"]),
        ("client", OTHER_INTERFACES, [None, "mgmt0"])]
    text = compare.render(cmp, "table")
    assert "<lab> is the interface holding the host's lab address" in text


def test_shared_kernel_is_said() -> None:
    result = load_result(RESULTS / "20261126-012650-c2s-default")
    meta = result.metadata
    shared = SimpleNamespace(metadata=SimpleNamespace(
        backend="ssh", kernels={"server+client": {"hosts": ["server", "client"]}}),
        measured=result.measured)
    assert ends(shared) == ("client + server ends, one kernel: the ssh hosts server and "
                            "client share one kernel (same boot_id), so there are no "
                            "per-side figures")
    assert meta.backend == "netns" and ends(result) == "client + server ends, one kernel"


def test_baseline_waits_for_tw_sockets_an_earlier_run_left(monkeypatch) -> None:
    """Before its baseline a run finds TIME-WAIT sockets an earlier run left on a host (a
    real host keeps them 60 s): it says so and waits until they are gone."""
    from orchestrator.run import checkpoint
    from orchestrator.run.checkpoint import Checkpoints

    from .fakes import FakeRunner, lab_host

    monkeypatch.setattr(checkpoint.time, "sleep", lambda _s: None)
    hosts = {"server": lab_host("server", "server", FakeRunner("server", [{}])),
             "client": lab_host("client", "client", FakeRunner(
                 "client", [{"TIME-WAIT": 1500, "FIN-WAIT-2": 3}, {"TIME-WAIT": 700}, {}]))}
    notes: list[str] = []
    ui = SimpleNamespace(note=notes.append)
    cps = Checkpoints(ui, SimpleNamespace(), hosts, SimpleNamespace(slab_aliases=dict),
                      SimpleNamespace(), Path("."), 5, None)
    cps._await_leftovers()
    assert notes == ["baseline: waiting up to 65 s for the TIME-WAIT/FIN-WAIT-2 sockets an "
                     "earlier run left (client 1,503) to expire: counted now, they would "
                     "vanish during this run"]
    assert hosts["client"].runner.states_seq[0] == {}  # polled until none was left
