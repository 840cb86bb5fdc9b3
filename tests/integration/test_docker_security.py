"""Security properties of the docker backend, checked on a live run.

One run (idle, small N) is paused at teardown: measuring is over, the sides have exited
and the containers still exist, so probing them (including a TCP connection to sshd on
the lab address) cannot disturb a measurement. While it is paused:

* each container is not privileged, shares no namespace with this machine (network,
  pid, ipc, uts, mount), has no added capability (its PID 1's effective set is within
  Docker's default set), keeps the default seccomp filter, has no device, bind mount or
  published port, and sits on an ``internal`` network;
* sshd accepts public keys only: a password (and an unknown key) is refused; it listens
  on the lab address port 22 and nowhere else (the only other listener is Docker's
  embedded DNS resolver on 127.0.0.11, which belongs to dockerd, not to the container);
  root's authorized_keys holds the run's public key alone (mode 0600);
* the run's private key is a file of mode 0600 in a directory of mode 0700.

After the run: the key pair is gone with the run's journal directory, and no file under
results/<run>/ (gzipped ones read uncompressed) holds "PRIVATE KEY" or any line of the key.

Needs root and a Docker daemon: skipped without one unless env CI is set (then it fails).
"""

from __future__ import annotations

import gzip
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("docker")
paramiko = pytest.importorskip("paramiko")

from .dockerlab import Run, assert_left_nothing, docker_client  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

#: Docker's default capability set (moby oci/caps/defaults.go): CHOWN DAC_OVERRIDE FSETID
#: FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL
#: AUDIT_WRITE.
DOCKER_DEFAULT_CAPS = sum(1 << bit for bit in (0, 1, 4, 3, 27, 13, 6, 7, 31, 8, 10, 18, 5, 29))
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE = 12, 21, 16, 19
NAMESPACES = ("net", "pid", "ipc", "uts", "mnt")


@pytest.fixture(scope="module")
def daemon() -> Iterator[object]:
    yield from docker_client()


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _try_password(address: str) -> dict[str, Any]:
    """Log in as root with a password, then with a key the run does not know."""
    seen: dict[str, Any] = {}
    sock = socket.create_connection((address, 22), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        try:
            transport.auth_none("root")
            seen["none"] = "accepted"
        except paramiko.BadAuthenticationType as exc:
            seen["allowed"] = list(exc.allowed_types)
        try:
            transport.auth_password("root", "root")
            seen["password"] = "accepted"
        except paramiko.BadAuthenticationType as exc:
            seen["password"] = f"refused: {exc}"
        except paramiko.AuthenticationException as exc:
            seen["password"] = f"refused: {exc}"
        try:
            transport.auth_publickey("root", paramiko.RSAKey.generate(2048))
            seen["other_key"] = "accepted"
        except paramiko.AuthenticationException as exc:
            seen["other_key"] = f"refused: {exc}"
    finally:
        transport.close()
    return seen


@pytest.fixture(scope="module")
def live(daemon: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a paused run looks like from outside, then the run finished and checked clean."""
    tmp = tmp_path_factory.mktemp("docker-security")
    run = Run(tmp, "--scenario", "idle", "-n", "200",
              env={"TCPLAB_PAUSE_AT": "teardown", "TCPLAB_PAUSE_SECONDS": "10"})
    facts: dict[str, Any] = {"containers": {}}
    try:
        run.wait_for("paused at teardown")
        run_id = run.run_dir.name
        facts["run_id"] = run_id
        key_dir = run.state / "runs" / run_id
        key = key_dir / "id_ed25519"
        facts["key_mode"] = stat.S_IMODE(key.stat().st_mode)
        facts["pub_mode"] = stat.S_IMODE(key.with_suffix(".pub").stat().st_mode)
        facts["key_dir_mode"] = stat.S_IMODE(key_dir.stat().st_mode)
        facts["key_lines"] = [line for line in key.read_text().splitlines()
                              if line and "PRIVATE KEY" not in line]
        facts["public_key"] = key.with_suffix(".pub").read_text().strip()
        for role, container in run.containers(daemon).items():
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            network_name = container.attrs["HostConfig"]["NetworkMode"]
            listeners = container.exec_run(["ss", "-Htlnup"])
            keys = container.exec_run(["sh", "-c", "stat -c %a /root/.ssh/authorized_keys; "
                                       "cat /root/.ssh/authorized_keys"])
            facts["containers"][role] = {
                "name": container.name,
                "attrs": container.attrs,
                "network": daemon.networks.get(network_name).attrs,
                "status": _status(pid),
                "namespaces": {ns: (os.readlink(f"/proc/{pid}/ns/{ns}"),
                                    os.readlink(f"/proc/self/ns/{ns}")) for ns in NAMESPACES},
                "listeners": listeners.output.decode(),
                "authorized_keys": keys.output.decode().splitlines(),
                "address": container.attrs["NetworkSettings"]["Networks"][network_name][
                    "IPAddress"],
            }
        server = facts["containers"]["server"]
        facts["login"] = _try_password(server["address"])
    finally:
        code = run.finish()
    assert code == 0, run.stderr[-3000:]
    facts["key_after"] = key.exists() or key.with_suffix(".pub").exists()
    assert_left_nothing(run, daemon)
    facts["results"] = {}
    for path in run.run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            facts["results"][str(path.relative_to(run.run_dir))] = data.decode(errors="replace")
    return facts


def test_containers_not_privileged(live: dict[str, Any]) -> None:
    for role, c in live["containers"].items():
        host = c["attrs"]["HostConfig"]
        assert host["Privileged"] is False, role
        assert not host.get("CapAdd"), (role, host.get("CapAdd"))
        assert not host.get("Devices"), (role, host.get("Devices"))
        assert not host.get("SecurityOpt"), (role, host.get("SecurityOpt"))  # no unconfined
        assert not host.get("Binds") and not c["attrs"]["Mounts"], (role, c["attrs"]["Mounts"])
        assert not host.get("PortBindings"), (role, host.get("PortBindings"))
        assert not any(c["attrs"]["NetworkSettings"].get("Ports") or {}), role
        assert not host.get("UsernsMode"), role  # not "host"


def test_no_host_namespace(live: dict[str, Any]) -> None:
    for role, c in live["containers"].items():
        host = c["attrs"]["HostConfig"]
        assert host["NetworkMode"] not in ("host", "default", "bridge"), (role, host["NetworkMode"])
        assert host["PidMode"] in ("", None), (role, host["PidMode"])
        assert host["IpcMode"] in ("private", "shareable", "", None), (role, host["IpcMode"])
        assert host["UTSMode"] in ("", None), (role, host["UTSMode"])
        # and in fact: each namespace of the container's PID 1 differs from this process's
        for ns, (theirs, ours) in c["namespaces"].items():
            assert theirs != ours, (role, ns, theirs)
        assert c["network"]["Internal"] is True, role
        assert c["network"]["Labels"]["tcplab.run"] == live["run_id"], role


def test_no_added_capabilities(live: dict[str, Any]) -> None:
    for role, c in live["containers"].items():
        status = c["status"]
        effective = int(status["CapEff"], 16)
        bounding = int(status["CapBnd"], 16)
        assert effective & ~DOCKER_DEFAULT_CAPS == 0, (role, hex(effective))
        assert bounding & ~DOCKER_DEFAULT_CAPS == 0, (role, hex(bounding))
        for cap in (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE):
            assert not effective & (1 << cap), (role, cap)
        assert status["Seccomp"] == "2", (role, status["Seccomp"])  # a filter is on


def test_sshd_refuses_passwords(live: dict[str, Any]) -> None:
    login = live["login"]
    assert login["allowed"] == ["publickey"], login
    assert login["password"].startswith("refused"), login
    assert login["other_key"].startswith("refused"), login


def test_sshd_listens_only_on_the_lab_address(live: dict[str, Any]) -> None:
    for role, c in live["containers"].items():
        rows = [line.split() for line in c["listeners"].splitlines() if line.strip()]
        sshd = [r for r in rows if "sshd" in " ".join(r)]
        assert [r[4] for r in sshd] == [f"{c['address']}:22"], (role, c["listeners"])
        others = [r for r in rows if r not in sshd]
        # Docker's embedded DNS resolver (dockerd's sockets, no process in the container)
        assert all(r[4].startswith("127.0.0.11:") and len(r) < 7 for r in others), \
            (role, c["listeners"])


def test_only_the_run_key_is_authorized(live: dict[str, Any]) -> None:
    for role, c in live["containers"].items():
        mode, *keys = c["authorized_keys"]
        assert mode == "600", role
        assert keys == [live["public_key"]], (role, keys)


def test_private_key_mode_and_lifetime(live: dict[str, Any]) -> None:
    assert live["key_mode"] == 0o600, oct(live["key_mode"])
    assert live["pub_mode"] == 0o600, oct(live["pub_mode"])
    assert live["key_dir_mode"] == 0o700, oct(live["key_dir_mode"])
    assert live["key_after"] is False  # deleted with the run's journal directory


def test_no_private_key_in_results(live: dict[str, Any]) -> None:
    assert live["results"], "the run saved nothing"
    assert "result.json" in live["results"]
    body = [line for line in live["key_lines"] if len(line) > 20]
    assert body, "the key file had no body lines"
    for name, text in live["results"].items():
        assert "PRIVATE KEY" not in text, name
        assert not any(line in text for line in body), name
