"""The node image against a real Docker daemon: build (or find) it, then run a
container from it and log in over SSH with a key made here.

Skipped when no daemon answers, except under CI (env CI set), where a missing
daemon is a failure: CI must start one (.ci/setup-docker.sh).
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")
paramiko = pytest.importorskip("paramiko")

from orchestrator.backends.docker.image import ImageInfo, ensure_image  # noqa: E402 - after the skips

from .dockerlab import docker_client  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
# Benchmarking range (RFC 2544); a few /24s in case one is taken by a parallel run.
CANDIDATE_SUBNETS = [f"198.18.{n}.0/24" for n in range(200, 216)]
SSH_READY_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    yield from docker_client(need_root=False)  # the docker group is enough here


@pytest.fixture(scope="module")
def image(client: docker.DockerClient) -> ImageInfo:
    return ensure_image(client, IMAGES_DIR, log=print)


@pytest.fixture(scope="module")
def run_label() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def network(client: docker.DockerClient, run_label: str) -> Iterator[object]:
    """A user-defined bridge in 198.18.0.0/15, labelled and removed afterwards."""
    from docker.types import IPAMConfig, IPAMPool

    last_error: Exception | None = None
    for subnet in CANDIDATE_SUBNETS:
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
        try:
            net = client.networks.create(
                f"tcplab-{run_label}",
                driver="bridge",
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=gateway)]),
                labels={"tcplab.run": run_label},
                check_duplicate=True,
            )
            break
        except docker.errors.APIError as exc:  # subnet in use: try the next one
            last_error = exc
    else:
        pytest.fail(f"no free subnet among {CANDIDATE_SUBNETS}: {last_error}")
    try:
        net.reload()
        yield net
    finally:
        net.remove()


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tcplab-test", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return key


@pytest.fixture(scope="module")
def node(
    client: docker.DockerClient,
    image: ImageInfo,
    network: object,
    ssh_key: Path,
    run_label: str,
) -> Iterator[tuple[object, str]]:
    """A container of the node image (not privileged) and its lab address."""
    subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
    address = str(ipaddress.ip_network(subnet).network_address + 10)
    container = client.containers.create(
        image.tag,
        name=f"tcplab-{run_label}-node",
        labels={"tcplab.run": run_label},
        environment={
            "TCPLAB_AUTHORIZED_KEY": ssh_key.with_suffix(".pub").read_text().strip(),
            "TCPLAB_LISTEN_ADDRESS": address,
        },
        network=network.name,
        networking_config={network.name: client.api.create_endpoint_config(ipv4_address=address)},
        privileged=False,
    )
    try:
        container.start()
        yield container, address
    finally:
        container.remove(force=True)


def ssh_connect(address: str, key: Path) -> paramiko.SSHClient:
    """Connect as root with the key, retrying while sshd starts."""
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
    deadline = time.monotonic() + SSH_READY_TIMEOUT_S
    while True:
        ssh = paramiko.SSHClient()
        # Each container makes a fresh host key: nothing to pin in a test.
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            ssh.connect(
                address,
                port=22,
                username="root",
                pkey=pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=3,
                banner_timeout=3,
                auth_timeout=5,
            )
            return ssh
        except (OSError, paramiko.SSHException):
            ssh.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def run(ssh: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _stdin, stdout, stderr = ssh.exec_command(command, timeout=20)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out


def test_second_ensure_is_cached(client: docker.DockerClient, image: ImageInfo) -> None:
    assert image.tag == f"tcplab/node:{image.recipe_hash[:12]}"
    assert image.digest.startswith("sha256:")
    assert image.method in ("registry", "debootstrap")
    messages: list[str] = []
    again = ensure_image(client, IMAGES_DIR, log=messages.append)
    assert again.cached is True
    assert again.digest == image.digest
    assert again.tag == image.tag and again.method == image.method
    labels = client.images.get(image.tag).labels
    assert labels["tcplab.recipe"] == image.recipe_hash
    assert messages, "ensure_image must say what it did"


def test_container_has_tools_and_sshd(node: tuple[object, str]) -> None:
    container, _address = node
    for command in (
        "python3 -c 'import sys; print(sys.version_info[0])'",
        "ss -V",
        "ip -V",
        "ps -V",
    ):
        code, out = container.exec_run(["sh", "-c", command])
        assert code == 0, f"{command}: {out.decode()}"
    container.reload()
    assert container.attrs["HostConfig"]["Privileged"] is False
    code, out = container.exec_run(["ps", "-o", "pid=,comm=", "-p", "1"])
    assert code == 0 and out.decode().split() == ["1", "sshd"], out.decode()


def test_ssh_login_with_generated_key(node: tuple[object, str], ssh_key: Path) -> None:
    _container, address = node
    ssh = ssh_connect(address, ssh_key)
    try:
        code, out = run(ssh, "id -u && python3 -c 'print(6*7)' && ss -Htln")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[:2] == ["0", "42"]
        # Docker's embedded DNS (127.0.0.11) also listens in a user-defined network.
        listening = [line.split()[3] for line in lines[2:] if line.strip()]
        ssh_ports = [local for local in listening if local.endswith(":22")]
        assert ssh_ports == [f"{address}:22"], f"sshd must listen only on {address}:22: {out}"

        code, out = run(
            ssh,
            "stat -c '%a %n' /root/.ssh /root/.ssh/authorized_keys && "
            "grep -c . /root/.ssh/authorized_keys",
        )
        assert code == 0, out
        assert out.split() == ["700", "/root/.ssh", "600", "/root/.ssh/authorized_keys", "1"]
    finally:
        ssh.close()


def test_sshd_rejects_passwords_and_other_keys(
    node: tuple[object, str], ssh_key: Path, tmp_path: Path
) -> None:
    _container, address = node
    other = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    ssh_connect(address, ssh_key).close()  # waits until sshd answers
    transport = paramiko.Transport((address, 22))
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "root")
        assert refused.value.allowed_types == ["publickey"]
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey("root", paramiko.Ed25519Key.from_private_key_file(str(other)))
    finally:
        transport.close()


def test_orphans_are_reaped(node: tuple[object, str], ssh_key: Path) -> None:
    """sshd is PID 1 and must reap processes orphaned by finished sessions."""
    _container, address = node
    ssh = ssh_connect(address, ssh_key)
    try:
        code, out = run(ssh, "(sleep 0.5 >/dev/null 2>&1 </dev/null &) ; echo started")
        assert code == 0 and "started" in out
        time.sleep(1.5)
        code, out = run(ssh, "ps -eo stat=,ppid=,comm=")
        assert code == 0, out
        zombies = [line for line in out.splitlines() if line.strip().startswith("Z")]
        assert zombies == [], out
    finally:
        ssh.close()
