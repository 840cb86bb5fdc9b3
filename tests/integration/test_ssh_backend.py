"""The ssh backend against real sshd hosts: two network namespaces, each running its own
sshd on its lab address, joined by a bridge (in a third namespace) that this machine
reaches through one veth pair.

Checks: a whole run over SSH (preflight, side scripts, per-host snapshots over SSH, the
control connection kept out of the state counts), host sysctls journalled on the host
before the change and restored after, `tcplab wipe --lab` restoring them after the
orchestrator was killed, and the refusals (no --allow-host-sysctls, a lab address the
host does not have). Needs root, iproute2 and openssh-server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.sshhost import REMOTE_DIR

ROOT = Path(__file__).resolve().parents[2]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
N = 600

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path(SSHD).exists(), reason="needs openssh-server (sshd)"),
]

SSHD_CONFIG = """\
Port 22
ListenAddress {address}
HostKey {hostkey}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PidFile {pidfile}
MaxStartups 64:30:256
MaxSessions 64
"""


def sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ns_sysctl(ns: str, name: str) -> str:
    path = "/proc/sys/" + name.replace(".", "/")
    return " ".join(sh("ip", "netns", "exec", ns, "cat", path).split())


class SshLab:
    """sshd hosts in namespaces on 198.19.<k>.2 (server), .3 (client), .4 (client2)...;
    this machine on .1. ``clients``: how many client hosts (named client, client2, ...)."""

    def __init__(self, tmp: Path, clients: int = 1) -> None:
        self.tmp = tmp
        self.sid = f"{random.randrange(16**4):04x}"
        self.k = random.randrange(1, 250)
        self.subnet = f"198.19.{self.k}.0/24"
        self.names = ["server", "client", *(f"client{i}" for i in range(2, clients + 1))]
        self.addr = {name: f"198.19.{self.k}.{i}" for i, name in enumerate(self.names, 2)}
        self.short = {name: name[0] + name[6:] for name in self.names}  # s, c, c2, ...
        self.ns = {name: f"tlsh-{self.sid}-{self.short[name]}" for name in self.names}
        self.ns["switch"] = f"tlsh-{self.sid}-w"
        self.root_link = f"tlsh{self.sid}r"
        self.procs: list[subprocess.Popen] = []
        self.key = tmp / "id_ed25519"

    def up(self) -> SshLab:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
        sw = self.ns["switch"]
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        pairs = {"root": self.root_link,
                 **{name: f"tlsh{self.sid}{self.short[name]}" for name in self.names}}
        for role, dev in pairs.items():
            port = f"p{self.short.get(role, 'r')}"
            sh("ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}x")
            sh("ip", "link", "set", f"{dev}x", "netns", sw)
            sh("ip", "-n", sw, "link", "set", f"{dev}x", "name", port)
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            if role == "root":
                sh("ip", "addr", "add", f"198.19.{self.k}.1/24", "dev", dev)
                sh("ip", "link", "set", dev, "up")
            else:
                ns = self.ns[role]
                sh("ip", "link", "set", dev, "netns", ns)
                sh("ip", "-n", ns, "link", "set", dev, "name", "eth0")
                sh("ip", "-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.tmp / "hostkey"))
        (self.tmp / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        for role in self.names:
            cfg = self.tmp / f"sshd-{role}.conf"
            cfg.write_text(SSHD_CONFIG.format(address=self.addr[role],
                                              hostkey=self.tmp / "hostkey",
                                              authorized=self.tmp / "authorized_keys",
                                              pidfile=self.tmp / f"sshd-{role}.pid"))
            # An empty /root for the sessions: sshd runs each command through root's login
            # shell, and bash sources ~/.bashrc under sshd; this machine's initialises pyenv
            # (0.16 s per command, 4-6 s per run) - a plain host's does not.
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns[role], "unshare", "--mount",
                 "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs -o mode=0700 tcplab-test-root /root && exec "$@"', "sshd",
                 SSHD, "-D", "-e", "-f", str(cfg)],
                stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"sshd-{role}.log", "w")))
        for role in self.names:
            self._wait_port(self.addr[role])
        return self

    def _wait_port(self, address: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((address, 22), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd on {address} did not come up")

    def lab_file(self, sysctls: bool = True, server_address: str | None = None) -> Path:
        path = self.tmp / "lab-ssh.yaml"
        lines = ["name: ssh-test", "backend: ssh", "network:", f"  subnet: {self.subnet}",
                 "hosts:"]
        for role in self.names:
            address = server_address if role == "server" and server_address else self.addr[role]
            lines += [f"  {role}:", f"    role: {role.rstrip('0123456789')}",
                      f"    address: {address}",
                      f"    ssh: {{address: {self.addr[role]}, user: root, port: 22, "
                      f"key: {self.key}}}"]
            if sysctls:
                lines.append("    sysctls:")
                if role == "server":
                    lines.append("      net.core.somaxconn: 8191")
                else:
                    lines.append('      net.ipv4.ip_local_port_range: "2000 65000"')
        path.write_text("\n".join(lines) + "\n")
        return path

    def down(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for role in self.names:
            pidfile = self.tmp / f"sshd-{role}.pid"
            if pidfile.exists():  # `ip netns exec` execs sshd: the same pid, already gone
                try:
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in self.ns.values():
            pids = sh("ip", "netns", "pids", ns).split() if Path("/run/netns", ns).exists() else []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.root_link], capture_output=True)


@pytest.fixture
def ssh_lab(tmp_path: Path):
    lab = SshLab(tmp_path)
    try:
        yield lab.up()
    finally:
        lab.down()


def tcplab(tmp: Path, *args: str, state: str = "state", timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp / state), **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def side_processes(run_id: str) -> str:
    return subprocess.run(["pgrep", "-f", f"--run {run_id}"], capture_output=True,
                          text=True).stdout.strip()


def remote_journals(run_id: str) -> list[Path]:
    return sorted(Path(REMOTE_DIR).glob(f"{run_id}-*.json"))


def test_ssh_run_snapshots_over_ssh_and_restores_sysctls(ssh_lab: SshLab, tmp_path: Path) -> None:
    before = {"server": ns_sysctl(ssh_lab.ns["server"], "net.core.somaxconn"),
              "client": ns_sysctl(ssh_lab.ns["client"], "net.ipv4.ip_local_port_range")}
    assert before["server"] != "8191" and before["client"] != "2000 65000"
    lab = ssh_lab.lab_file()
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", str(N), "--lab", str(lab),
                  "--allow-host-sysctls", "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((tmp_path / "results").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    meta = result["metadata"]
    assert meta["backend"] == "ssh"
    # Both hosts are namespaces of this machine: one kernel (same boot_id), read over SSH.
    assert list(meta["kernels"]) == ["server+client"]
    assert meta["kernel"]["release"] == os.uname().release
    for role in ("server", "client"):
        host = meta["hosts"][role]
        assert host["ssh"] == {"address": ssh_lab.addr[role], "user": "root", "port": 22}
        # the lab's sysctls were set on the host and read back there
    assert meta["hosts"]["server"]["net_sysctls"]["net.core.somaxconn"] == "8191"
    assert meta["hosts"]["client"]["net_sysctls"]["net.ipv4.ip_local_port_range"] == "2000 65000"
    est = next(c for c in result["checkpoints"] if c["name"] == "established")
    # The SSH control connections are not counted: exactly the lab's connections.
    assert est["states"] == {"server": {"ESTAB": N}, "client": {"ESTAB": N}}
    base = next(c for c in result["checkpoints"] if c["name"] == "baseline")
    assert base["states"] == {"server": {}, "client": {}}
    total = est["per_connection_bytes"]["total"]
    assert 2500 < total < 20000, total
    by_cache = {r["cache"]: r for r in est["per_connection_bytes"]["by_cache"]}
    assert by_cache["TCP"]["objects_per_connection"] == pytest.approx(2.0, abs=0.1)
    # Per-host snapshots, taken over SSH on each host.
    for role in ("server", "client"):
        assert (run_dir / "raw" / "established" / f"{role}-sockstat.txt").read_text().startswith(
            "sockets:")
    assert (run_dir / "raw" / "established" / "slabinfo.txt.gz").exists()
    # Sysctls restored on both hosts, their journal files gone, no side process left.
    assert ns_sysctl(ssh_lab.ns["server"], "net.core.somaxconn") == before["server"]
    assert ns_sysctl(ssh_lab.ns["client"], "net.ipv4.ip_local_port_range") == before["client"]
    assert remote_journals(run_dir.name) == []
    assert side_processes(run_dir.name) == ""
    runs = tmp_path / "state" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_ssh_killed_run_is_restored_by_wipe_with_the_lab_file(ssh_lab: SshLab,
                                                              tmp_path: Path) -> None:
    server_ns = ssh_lab.ns["server"]
    before = ns_sysctl(server_ns, "net.core.somaxconn")
    lab = ssh_lab.lab_file()
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state"), "TCPLAB_PAUSE_AT": "ramp",
           "TCPLAB_PAUSE_SECONDS": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "--scenario",
                             "idle", "-n", "200", "--lab", str(lab), "--allow-host-sysctls",
                             "--results", str(tmp_path / "results")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "paused at ramp" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "run ended before the pause"
            assert time.monotonic() < deadline
        (run_dir,) = list((tmp_path / "results").iterdir())
        run_id = run_dir.name
        # Journalled on the host before the change, with the old value.
        files = remote_journals(run_id)
        assert [f.name for f in files] == [f"{run_id}-client.json", f"{run_id}-server.json"]
        record = json.loads(files[1].read_text())
        assert record["old"] == {"net.core.somaxconn": before}
        assert record["new"] == {"net.core.somaxconn": "8191"}
        assert ns_sysctl(server_ns, "net.core.somaxconn") == "8191"
        proc.kill()  # no teardown at all
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The side processes end with their SSH sessions.
    deadline = time.monotonic() + 20
    while side_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert side_processes(run_id) == ""
    assert ns_sysctl(server_ns, "net.core.somaxconn") == "8191"
    # wipe from another state directory (this machine's journal lost): the hosts' own files.
    out = tcplab(tmp_path, "wipe", "--lab", str(lab), state="other-state")
    assert out.returncode == 0, out.stderr
    assert f"server: restored 1 sysctl(s) of run {run_id}" in out.stdout, out.stdout
    assert ns_sysctl(server_ns, "net.core.somaxconn") == before
    assert remote_journals(run_id) == []
    # wipe with the run's own journal: the remote entries undo cleanly (already restored).
    out = tcplab(tmp_path, "wipe")
    assert out.returncode == 0, out.stderr
    assert f"{run_id}:" in out.stdout and "cleaned" in out.stdout, out.stdout
    assert ns_sysctl(server_ns, "net.core.somaxconn") == before


def test_ssh_wipe_uses_the_local_journal(ssh_lab: SshLab, tmp_path: Path) -> None:
    """Killed mid-run, then a plain `tcplab wipe`: restored from this machine's journal."""
    client_ns = ssh_lab.ns["client"]
    before = ns_sysctl(client_ns, "net.ipv4.ip_local_port_range")
    lab = ssh_lab.lab_file()
    env = {**os.environ, "TCPLAB_STATE_DIR": str(tmp_path / "state"),
           "TCPLAB_PAUSE_AT": "setup", "TCPLAB_PAUSE_SECONDS": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "--scenario",
                             "idle", "-n", "100", "--lab", str(lab), "--allow-host-sysctls",
                             "--results", str(tmp_path / "results")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = ""
        while "paused at setup" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ns_sysctl(client_ns, "net.ipv4.ip_local_port_range") == "2000 65000"
    out = tcplab(tmp_path, "wipe")
    assert out.returncode == 0, out.stderr
    assert "cleaned" in out.stdout, out.stdout
    assert ns_sysctl(client_ns, "net.ipv4.ip_local_port_range") == before
    (run_dir,) = list((tmp_path / "results").iterdir())
    assert remote_journals(run_dir.name) == []


def test_ssh_refuses_host_sysctls_without_the_flag(ssh_lab: SshLab, tmp_path: Path) -> None:
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", "10", "--lab",
                  str(ssh_lab.lab_file()), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2
    assert "--allow-host-sysctls" in proc.stderr
    assert "net.core.somaxconn" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_ssh_preflight_names_a_missing_lab_address(ssh_lab: SshLab, tmp_path: Path) -> None:
    lab = ssh_lab.lab_file(sysctls=False, server_address=f"198.19.{ssh_lab.k}.77")
    proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", "10", "--lab", str(lab),
                  "--results", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    assert f"lab address 198.19.{ssh_lab.k}.77 is not configured on the host" in proc.stderr
    assert "server (root@" in proc.stderr


# -- the ssh backend as a new user meets it (issue 13, item 7) ---------------------------------

def docs_example(ssh_lab: SshLab, tmp: Path) -> tuple[Path, list[list[str]]]:
    """The lab file and the commands of docs/ssh.md, followed literally on the test hosts:
    only the addresses and the key change (and the login user: the test sshd takes root)."""
    text = (ROOT / "docs" / "ssh.md").read_text()
    lab_text = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    commands = text.split("```sh\n", 1)[1].split("```", 1)[0]
    subs = {"10.20.0.0/24": ssh_lab.subnet, "10.20.0.2": ssh_lab.addr["server"],
            "10.20.0.3": ssh_lab.addr["client"], "10.1.0.12": ssh_lab.addr["server"],
            "10.1.0.13": ssh_lab.addr["client"], "~/.ssh/lab_ed25519": str(ssh_lab.key),
            "keys/lab": str(ssh_lab.key), "user: lab": "user: root"}
    for old, new in subs.items():
        assert old in lab_text, old
        lab_text = lab_text.replace(old, new)
    lab = tmp / "two-machines.yaml"
    lab.write_text(lab_text)
    argvs = []
    for line in commands.strip().splitlines():
        argv = line.split()
        assert argv[0] == "tcplab", line
        argvs.append([str(lab) if a == "two-machines.yaml" else a for a in argv[1:]])
    return lab, argvs


def tw_sockets(ns: str) -> int:
    return len(sh("ip", "netns", "exec", ns, "ss", "-tanH", "state", "time-wait").splitlines())


def test_ssh_docs_example_runs_as_written(ssh_lab: SshLab, tmp_path: Path) -> None:
    """docs/ssh.md's lab file and commands: doctor passes, the run pins the default lab's
    queues, says that both hosts are one kernel, and ends without a silent wait."""
    lab, (doctor, run) = docs_example(ssh_lab, tmp_path)
    proc = tcplab(tmp_path, *doctor)
    for role in ("server", "client"):
        for check in ("reachable", "key accepted", "python3", "root", "/proc/slabinfo",
                      "lab address"):
            assert f" ✓ {role}: {check}" in proc.stdout, proc.stdout
    proc = tcplab(tmp_path, *run, "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((tmp_path / "results").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    server = result["metadata"]["hosts"]["server"]
    assert server["net_sysctls"]["net.core.somaxconn"] == "65535"
    assert server["net_sysctls"]["net.ipv4.tcp_max_syn_backlog"] == "65535"
    assert server["lab_interface"] == "eth0"
    assert "server and client share one kernel (same boot_id" in proc.stderr
    assert ("(client + server ends, one kernel: the ssh hosts server and client share one "
            "kernel (same boot_id), so there are no per-side figures)") in proc.stdout
    assert "waiting up to 60 s" not in proc.stderr


def test_ssh_repeats_without_the_60_s_wait(ssh_lab: SshLab, tmp_path: Path) -> None:
    """timewait at N=500, twice: the run ends its own TIME_WAIT sockets (ss -K), so the
    second run starts at once and finds none at its baseline; nothing waits 60 s."""
    lab = ssh_lab.lab_file()
    proc = tcplab(tmp_path, "run", "--scenario", "timewait", "-n", "500", "--repeat", "2",
                  "--lab", str(lab), "--allow-host-sysctls",
                  "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((d / "result.json").read_text())
               for d in sorted((tmp_path / "results").iterdir())]
    assert len(results) == 2
    for result in results:
        tw = next(c for c in result["checkpoints"] if c["name"] == "time_wait")
        assert tw["states"]["client"] == {"TIME-WAIT": 500}
    assert "waiting up to 60 s" not in proc.stderr
    assert "baseline: waiting" not in proc.stderr
    assert tw_sockets(ssh_lab.ns["client"]) == 0 and tw_sockets(ssh_lab.ns["server"]) == 0
    # from the end of the first run's measurement to the start of the second: teardown, no
    # 60 s wait (the lock is held by this command throughout unless another run queued)
    gap = results[1]["started"] - results[0]["finished"]
    assert gap < 30, f"{gap:.0f} s between the runs"


def test_ssh_login_failures_are_one_line_and_leave_nothing(ssh_lab: SshLab,
                                                           tmp_path: Path) -> None:
    """Unreachable host, sshd not listening, a key not accepted, a .pub key: exit 2, one
    line saying what to do, no results directory, nothing in the state directory."""
    good = ssh_lab.lab_file(sysctls=False).read_text()
    server = ssh_lab.addr["server"]
    other_key = tmp_path / "other"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key))
    at = "server: cannot log in over SSH to root@"
    cases = {
        "unreachable": (f"ssh: {{address: {server},", f"ssh: {{address: 198.19.{ssh_lab.k}.9,",
                        f"{at}198.19.{ssh_lab.k}.9:22: no route to the host (nothing answers "
                        "at that address): is the host up and ssh.address right?"),
        "refused": (f"ssh: {{address: {server}, user: root, port: 22",
                    f"ssh: {{address: {server}, user: root, port: 2222",
                    f"{at}{server}:2222: connection refused on port 2222: is sshd running "
                    "there, on that port?"),
        "key": (f"{server}, user: root, port: 22, key: {ssh_lab.key}",
                f"{server}, user: root, port: 22, key: {other_key}",
                f"{at}{server}:22: the key {other_key} was not accepted for user root: add "
                f"{other_key}.pub to ~root/.ssh/authorized_keys on the host, or fix ssh.user "
                "/ ssh.key"),
        "pub": (f"{server}, user: root, port: 22, key: {ssh_lab.key}",
                f"{server}, user: root, port: 22, key: {ssh_lab.key}.pub",
                f"{at}{server}:22: {ssh_lab.key}.pub is not a private key (a .pub file?): "
                "ssh.key needs the private half of the key pair"),
    }
    for name, (old, new, message) in cases.items():
        assert old in good, name
        lab = tmp_path / f"{name}.yaml"
        lab.write_text(good.replace(old, new, 1))
        proc = tcplab(tmp_path, "run", "--scenario", "idle", "-n", "10", "--lab", str(lab),
                      "--results", str(tmp_path / "results"), state=f"state-{name}")
        assert proc.returncode == 2, (name, proc.stderr)
        assert proc.stderr == f"tcplab: error: {message} (hosts.server.ssh in {lab})\n", name
        assert not (tmp_path / "results").exists(), name
        state = tmp_path / f"state-{name}"
        assert not state.exists() or not any(state.rglob("*.json*")), name
    # doctor says the same, one line per check, and stops at the failed one
    proc = tcplab(tmp_path, "doctor", "--lab", str(tmp_path / "pub.yaml"))
    assert proc.returncode == 1
    assert f" ✓ server: reachable      sshd answers at {server}:22" in proc.stdout
    assert (f" ✗ server: key accepted   {ssh_lab.key}.pub is not a private key (a .pub "
            "file?): ssh.key needs the private half of the key pair") in proc.stdout
    assert " server: python3" not in proc.stdout
    assert " ✓ client: /proc/slabinfo" in proc.stdout
