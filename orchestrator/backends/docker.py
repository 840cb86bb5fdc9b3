"""docker backend: each lab host is a container of the node image on a user-defined bridge.

Mirrors the netns backend through the same facade. Differences that matter:

* Commands reach a host over SSH (:class:`~orchestrator.ssh.SshRunner`) with a key pair
  made for the run in the run's journal directory. The SSH protocol is carried by a
  Docker exec stream of ``sshd -i`` (inetd mode), not by TCP to the container's address:
  a TCP control connection would be a socket in the very namespace being measured, and
  every state count (``ESTAB``), queue sum and ``sockstat inuse`` would include it.
  sshd on the lab address (PID 1) stays up; it is what the run waits for.
* Per-namespace sysctls are pinned by Docker when the container is created
  (``sysctls=``), then read back over SSH and compared with what was asked.
* Every network and container carries the label ``tcplab.run=<run id>`` and is
  journalled before it is created. Cleanup removes an object only when it carries the
  label of the run being cleaned: unlabelled objects are never touched.
* Per-host memory comes from each container's memory cgroup (read on this machine).

Only the Docker SDK talks to the daemon; there is no ``docker`` CLI call.
"""

from __future__ import annotations

import io
import ipaddress
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import faults, resources
from ..errors import InputError, RunError
from ..journal import LOCAL_HANDLERS, alive, process_start_time, state_root
from ..runner import LocalRunner
from ..ssh import SshRunner
from .base import Backend, LabHost
from .netns import ACK_DROP_RULESET, LAB_QDISC, LAB_QDISC_ARGV, short_id

LABEL_RUN = "tcplab.run"
LABEL_LAB = "tcplab.lab"
LABEL_ROLE = "tcplab.role"
LABEL_OWNER = "tcplab.owner"  # "<pid>:<start time>" of the orchestrator that made it
LABEL_STATE = "tcplab.state"  # the state directory holding the run's journal

SIDE_PATH = "/opt/tcplab/side.py"
KEY_NAME = "id_ed25519"
PING_TIMEOUT_S = 5
#: Requests such as removing a container that holds 40,000 sockets take a while.
API_TIMEOUT_S = 300
SSH_READY_TIMEOUT_S = 15.0
#: After a failure, how long to watch for a container that is dying (see diagnose).
DIAGNOSE_WAIT_S = 1.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _docker():
    try:
        import docker
        import docker.errors
    except ImportError as exc:
        raise InputError("the docker backend needs the Docker SDK for Python "
                         f"({exc}): pip install docker, or use BACKEND=netns") from None
    return docker


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = " ".join(str(explanation or exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def connect(timeout: float = API_TIMEOUT_S):
    """A Docker client whose daemon answered a ping. Raises InputError otherwise."""
    docker = _docker()
    try:
        client = docker.from_env(timeout=PING_TIMEOUT_S)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon"
        raise InputError(f"no Docker daemon answers ({_short(exc)}): start it "
                         "(bash .ci/setup-docker.sh) or use BACKEND=netns") from None
    client.api.timeout = timeout
    return client


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None
        self.image: Any = None  # orchestrator.images.ImageInfo
        self.network_name = f"tcplab-{short_id(self.run_id)}"
        self.containers: dict[str, Any] = {}  # host name -> Container
        self.runners: dict[str, SshRunner] = {}

    # -- checks ---------------------------------------------------------------------------
    def preflight(self) -> None:
        self.client = connect()

    def container_name(self, host_name: str) -> str:
        return f"tcplab-{short_id(self.run_id)}-{host_name}"

    def labels(self, role: str) -> dict[str, str]:
        pid = os.getpid()
        return {LABEL_RUN: self.run_id, LABEL_LAB: self.lab.name, LABEL_ROLE: role,
                LABEL_OWNER: f"{pid}:{process_start_time(pid)}",
                LABEL_STATE: str(state_root().resolve())}

    # -- lifecycle --------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        from ..images import ensure_image

        if self.client is None:
            self.preflight()
        client = self.client
        # Fault point for the interrupt tests: the phase in which the image would be built.
        # Before the check, so a test reaches it without forcing a (90 s) rebuild.
        faults.pause("image")
        self.image = ensure_image(client, resources.images_dir(), lambda m: self.log(f"      {m}"))
        key = self._make_key()
        public = key.with_suffix(".pub").read_text().strip()
        network = self._create_network()
        side_tar = _side_archive(resources.side_script())
        server, client_spec = self.lab.host("server"), self.lab.host("client")
        for spec in (server, client_spec):
            container = self._create_container(spec, network, sysctls.get(spec.name, {}), public)
            container.put_archive("/", side_tar)
            container.start()
            container.reload()
            self.containers[spec.name] = container
        for spec in (server, client_spec):
            container = self.containers[spec.name]
            runner = SshRunner(spec.name, spec.address, str(key),
                               sock_factory=self._exec_transport(container, spec.name))
            self.runners[spec.name] = runner
            waited = self._wait_ssh(spec.name, runner, container)
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            info: dict[str, Any] = {"container": container.name, "container_id": container.id,
                                    "pid": pid, "ssh_ready_seconds": round(waited, 2)}
            try:
                kind, path = cgroup_of(pid, container.id)
                info["cgroup"] = {"version": kind, "path": str(path)}
            except RunError as exc:
                info["cgroup"] = {"error": str(exc)}
            # the queue the netns backend gives its interfaces (see LAB_QDISC), set from
            # this machine: the container stays unprivileged
            self._in_netns(spec.name, pid).run(LAB_QDISC_ARGV)
            info["qdisc"] = LAB_QDISC
            self.hosts[spec.name] = LabHost(spec, runner, info=info)
        for name, host in self.hosts.items():
            wanted = dict(sysctls.get(name, {}))
            values = self.apply_sysctls(host, {})
            bad = {k: v for k, v in wanted.items() if values.get(k) != v}
            if bad:
                detail = "; ".join(f"{k}: asked {v!r}, container has {values.get(k)!r}"
                                   for k, v in sorted(bad.items()))
                raise RunError(f"{name}: sysctls pinned at container creation did not take: "
                               f"{detail}")
            host.sysctls = values
            limits = host.runner.run(["sh", "-c", "ulimit -Sn; ulimit -Hn"], timeout=30).stdout
            host.info["nofile"] = " ".join(limits.split())
        nofile = ", ".join(sorted({"/".join(h.info["nofile"].split())
                                   for h in self.hosts.values()}))
        self.log(f"      containers {', '.join(c.name for c in self.containers.values())} "
                 f"from {self.image.tag}; SSH over docker exec; nofile soft/hard {nofile} "
                 "(the side shards over workers)")
        return self.hosts

    def _make_key(self) -> Path:
        """An ed25519 key pair for this run only, in the run's journal directory (0600).

        It goes away with the directory when the run's undo succeeds.
        """
        key = self.journal.dir / KEY_NAME
        proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                               f"tcplab-{self.run_id}", "-f", str(key)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RunError(f"ssh-keygen failed: {proc.stderr.strip()[-200:]}; "
                           "apt-get install openssh-client")
        for path in (key, key.with_suffix(".pub")):
            path.chmod(0o600)
        return key

    def _create_network(self) -> Any:
        docker = _docker()
        from docker.types import IPAMConfig, IPAMPool

        pools = []
        for net, addresses in ((self.lab.subnet, [h.address for h in self.lab.hosts]),
                               (self.lab.subnet6, [h.address6 for h in self.lab.hosts])):
            subnet = ipaddress.ip_network(net)
            used = {ipaddress.ip_address(a) for a in addresses}
            gateway = next(ip for ip in subnet.hosts() if ip not in used)
            pools.append(IPAMPool(subnet=str(subnet), gateway=str(gateway)))
        subnet = self.lab.subnet
        self.journal.record("network", name=self.network_name, run=self.run_id)
        try:
            network = self.client.networks.create(
                self.network_name, driver="bridge", check_duplicate=True,
                # internal: no route and no NAT out of the lab. The containers reach each
                # other; the orchestrator talks to them over Docker exec streams.
                internal=True,
                # IPv6 beside IPv4, as on netns, so FAMILY=ipv6 runs on the same network.
                # Docker adds the addresses without duplicate address detection (nodad).
                enable_ipv6=True,
                ipam=IPAMConfig(pool_configs=pools),
                labels=self.labels("network"),
            )
        except docker.errors.APIError as exc:
            hint = ""
            if "overlap" in _short(exc).lower():
                hint = (f"; another network already uses {subnet} or {self.lab.subnet6}: "
                        "`tcplab wipe` removes one left by a crashed run, or change "
                        "network.subnet / network.subnet6 in the lab file")
            raise RunError(f"creating Docker network {self.network_name} on {subnet} and "
                           f"{self.lab.subnet6} failed: "
                           f"{_short(exc)}{hint}") from None
        self.log(f"      network {self.network_name} ({subnet}, {self.lab.subnet6}, internal)")
        return network

    def _create_container(self, spec: Any, network: Any, sysctls: Mapping[str, str],
                          public_key: str) -> Any:
        docker = _docker()
        api = self.client.api
        name = self.container_name(spec.name)
        self.journal.record("container", name=name, run=self.run_id, host=spec.name)
        host_config = api.create_host_config(
            network_mode=network.name,
            sysctls=dict(sysctls),  # per-namespace values, pinned by Docker at creation
            privileged=False,
        )
        networking = api.create_networking_config(
            {network.name: api.create_endpoint_config(ipv4_address=spec.address,
                                                      ipv6_address=spec.address6)})
        try:
            created = api.create_container(
                self.image.tag, name=name, hostname=spec.name,
                labels=self.labels(spec.role),
                environment={"TCPLAB_AUTHORIZED_KEY": public_key,
                             "TCPLAB_LISTEN_ADDRESS": spec.address},
                host_config=host_config, networking_config=networking,
            )
        except docker.errors.APIError as exc:
            raise RunError(f"creating container {name} from {self.image.tag} failed: "
                           f"{_short(exc)}") from None
        return self.client.containers.get(created["Id"])

    def _exec_transport(self, container: Any, host_name: str) -> Callable[[], ExecStreamSocket]:
        docker = _docker()
        client, label = self.client, f"sshd -i in container {container.name}"

        def factory() -> ExecStreamSocket:
            try:
                return ExecStreamSocket(client, container.id, label)
            except docker.errors.APIError as exc:
                # a dead container refuses the exec (409): say that, not the HTTP error
                dead = container_down(client, container.id, container.name, host_name)
                raise RunError(f"{host_name}: cannot open an SSH session: "
                               f"{dead or f'starting {label} failed: {_short(exc)}'}") from None

        factory.label = label  # type: ignore[attr-defined]
        return factory

    def _wait_ssh(self, host_name: str, runner: SshRunner, container: Any) -> float:
        deadline = time.monotonic() + SSH_READY_TIMEOUT_S
        while True:
            try:
                return runner.wait_ready(timeout=1.0)
            except RunError as exc:
                container.reload()
                state = container.attrs["State"]
                if not state.get("Running") or time.monotonic() > deadline:
                    logs = container.logs(tail=5).decode(errors="replace").strip()
                    raise RunError(
                        f"{host_name}: sshd in container {container.name} did not answer within "
                        f"{SSH_READY_TIMEOUT_S:.0f} s (container {state.get('Status')}, exit "
                        f"{state.get('ExitCode')}): {exc}; container log: "
                        f"{' | '.join(logs.splitlines()) or 'empty'}") from None

    def diagnose(self, wait: float = DIAGNOSE_WAIT_S) -> list[str]:
        """Containers of the run that are no longer running (killed, exited, removed).

        A killed container's exec streams end a moment before the daemon records its
        exit (about 0.1 s here): look again for up to ``wait`` seconds.
        """
        if self.client is None or not self.containers:
            return []
        deadline = time.monotonic() + wait
        while True:
            notes = [note for name, c in self.containers.items()
                     if (note := container_down(self.client, c.id, c.name, name))]
            if notes or time.monotonic() > deadline:
                return notes
            time.sleep(0.1)

    def down(self) -> list[str]:
        for runner in self.runners.values():
            try:
                runner.close()
            except Exception as exc:  # noqa: BLE001 - the containers go away next anyway
                self.log(f"cleanup: closing SSH to {runner.host}: {exc}")
        return super().down()

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        handlers = dict(LOCAL_HANDLERS)
        client = self.client
        if client is None:
            try:
                client = connect()
            except InputError:
                return handlers  # no daemon: container entries stay, undo reports them
        handlers.update(_handlers(client))
        return handlers

    # -- on the hosts ---------------------------------------------------------------------
    def side_command(self, host: LabHost) -> list[str]:
        return ["python3", SIDE_PATH, "--run", self.run_id]

    def netns_pid(self, host: LabHost, side: Any) -> int | None:
        """The container's init (sshd) on this machine: it lives in the host's namespace."""
        return host.info.get("pid")

    def block_final_acks(self, host: LabHost) -> None:
        """The netns backend's nftables rule, loaded in the container's network namespace
        from this machine (nsenter into its init): the container itself stays unprivileged,
        and the rule goes away with the container."""
        pid = host.info.get("pid")
        if not pid:
            raise RunError(f"{host.name}: no process of container "
                           f"{self.container_name(host.name)} to reach its network namespace")
        self._in_netns(host.name, pid).run(["nft", "-f", "-"], stdin=ACK_DROP_RULESET)

    @staticmethod
    def _in_netns(host_name: str, pid: int) -> LocalRunner:
        """Commands run from this machine in the network namespace of a container's init."""
        return LocalRunner(host_name, ["nsenter", f"--target={pid}", "--net"])

    def per_host_memory(self, host: LabHost) -> dict[str, Any] | None:
        cgroup = host.info.get("cgroup") or {}
        if "path" not in cgroup:
            return None
        return read_cgroup_memory(cgroup["version"], Path(cgroup["path"]))

    def metadata(self) -> dict[str, Any]:
        image = self.image
        return {
            "backend": self.name,
            "image": image.tag if image else None,
            "image_digest": image.digest if image else None,
            "image_method": image.method if image else None,
            "image_recipe_hash": image.recipe_hash if image else None,
            "image_cached": image.cached if image else None,
            "network": self.network_name,
            "subnet": self.lab.subnet,
            "containers": {name: c.id for name, c in self.containers.items()},
        }


class ExecStreamSocket:
    """A socket-like object carrying SSH over a Docker exec stream of ``sshd -i``.

    The daemon multiplexes the exec's stdout and stderr on one hijacked connection in
    frames (8-byte header: stream, 3 zero bytes, big-endian length); stdin is written
    raw. ``recv`` returns stdout bytes only and keeps a tail of stderr (sshd's log).
    Raw bytes are buffered across calls, so a timeout in the middle of a frame (paramiko
    polls with a short timeout) loses nothing.
    """

    def __init__(self, client: Any, container_id: str, label: str) -> None:
        self.label = label
        exec_id = client.api.exec_create(container_id, ["/usr/sbin/sshd", "-i", "-e"],
                                         stdin=True, stdout=True, stderr=True)["Id"]
        stream = client.api.exec_start(exec_id, socket=True)
        self._sock = getattr(stream, "_sock", stream)  # SocketIO wraps the real socket
        self._stream = stream
        self._raw = bytearray()
        self._out = bytearray()
        self._eof = False
        self.stderr: list[bytes] = []
        self._closed = False  # paramiko's Transport looks at this

    def _parse(self) -> None:
        raw = self._raw
        while len(raw) >= 8:
            size = int.from_bytes(raw[4:8], "big")
            if len(raw) < 8 + size:
                break
            kind, payload = raw[0], bytes(raw[8:8 + size])
            del raw[:8 + size]
            if kind == 2:
                self.stderr.append(payload)
                del self.stderr[:-20]
            else:
                self._out += payload

    def recv(self, size: int) -> bytes:
        while not self._out and not self._eof:
            chunk = self._sock.recv(65536)  # socket.timeout propagates; state is kept
            if not chunk:
                self._eof = True
                break
            self._raw += chunk
            self._parse()
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for thing in (self._sock, self._stream):
                try:
                    thing.close()
                except OSError:
                    pass

    @property
    def closed(self) -> bool:
        return self._closed


def container_down(client: Any, container_id: str, name: str, host_name: str) -> str | None:
    """None while the container runs; otherwise what became of it, in one line."""
    docker = _docker()
    try:
        state = client.api.inspect_container(container_id)["State"]
    except docker.errors.NotFound:
        return f"container {name} ({host_name}) is gone (removed)"
    if state.get("Paused"):
        return f"container {name} ({host_name}) is paused (frozen: nothing in it answers)"
    if state.get("Running"):
        return None
    detail = f"{state.get('Status', 'stopped')}, exit code {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        detail += ", killed by the out-of-memory killer"
    elif state.get("ExitCode") == 137:
        detail += " (SIGKILL)"
    return f"container {name} ({host_name}) is not running: {detail}"


def _side_archive(side: Path) -> bytes:
    """A tar holding opt/tcplab/side.py, for put_archive to /."""
    data = side.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("opt/tcplab")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(folder)
        info = tarfile.TarInfo(SIDE_PATH.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- cgroups ------------------------------------------------------------------------------

def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount, from mountinfo."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rest[0], set(rest[2].split(","))))
    return out


def cgroup_of(pid: int, container_id: str) -> tuple[str, Path]:
    """The memory cgroup directory of a process: ("v1" | "v2", path on this machine).

    The path in /proc/<pid>/cgroup is relative to the reader's cgroup namespace root;
    when it does not exist under the mount, the container id is looked up instead.
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as exc:
        raise RunError(f"cannot read /proc/{pid}/cgroup: {exc}") from None
    mounts = _mounts()
    v1 = next((m for m, fs, opts in mounts if fs == "cgroup" and "memory" in opts), None)
    v2 = next((m for m, fs, _ in mounts if fs == "cgroup2"), None)
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(",") and v1:
            return "v1", _locate(Path(v1), rel, container_id)
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if hid == "0" and not controllers and v2 and Path(v2, "cgroup.controllers").exists():
            return "v2", _locate(Path(v2), rel, container_id)
    raise RunError(f"no memory cgroup found for pid {pid} in /proc/{pid}/cgroup")


def _locate(mount: Path, rel: str, container_id: str) -> Path:
    direct = mount / rel.lstrip("/")
    if (direct / "memory.stat").is_file():
        return direct
    for pattern in (f"*/{container_id}", f"*/*/{container_id}", f"*{container_id}*",
                    f"*/*{container_id}*"):
        for found in mount.glob(pattern):
            if found.is_dir():
                return found
    raise RunError(f"memory cgroup of container {container_id[:12]} not found under {mount} "
                   f"(/proc says {rel})")


def read_cgroup_memory(kind: str, path: Path) -> dict[str, Any]:
    """Flat ints from a memory cgroup, plus {"cgroup": kind, "path": path}.

    ``kmem`` and ``sock`` are the same idea on both versions: v1 ``memory.kmem.usage_in_bytes``
    and ``memory.kmem.tcp.usage_in_bytes``; v2 ``memory.stat`` ``kernel`` (or the sum of
    its parts on older kernels) and ``sock``.
    """
    out: dict[str, Any] = {"cgroup": kind, "path": str(path)}
    try:
        stat = _read_stat(path / "memory.stat")
    except OSError:
        return {**out, "error": "memory cgroup gone"}
    for key, value in stat.items():
        out[f"stat.{key}"] = value
    if kind == "v1":
        for name in ("memory.kmem.usage_in_bytes", "memory.kmem.tcp.usage_in_bytes",
                     "memory.usage_in_bytes", "memory.kmem.max_usage_in_bytes"):
            value = _read_int(path / name)
            if value is not None:
                out[name.removeprefix("memory.")] = value
        out["kmem"] = out.get("kmem.usage_in_bytes", 0)
        out["sock"] = out.get("kmem.tcp.usage_in_bytes", 0)
        out["usage"] = out.get("usage_in_bytes", 0)
    else:
        current = _read_int(path / "memory.current")
        if current is not None:
            out["current"] = current
        kernel = stat.get("kernel")
        if kernel is None:
            kernel = sum(stat.get(k, 0) for k in ("slab_reclaimable", "slab_unreclaimable",
                                                  "kernel_stack", "pagetables", "percpu",
                                                  "sock"))
        out["kmem"] = kernel
        out["sock"] = stat.get("sock", 0)
        out["usage"] = out.get("current", 0)
    return out


def _read_stat(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --- cleanup: journal undo and wipe -------------------------------------------------------

#: How long removing a container may keep failing. Docker gives up on a kill after ~10 s
#: ("did not receive an exit event") while the kernel is still closing the container's
#: sockets: a million of them take about half a minute. Retried, not given up.
REMOVE_WAIT_S = 180.0


def _remove_container(container: Any, wait: float = REMOVE_WAIT_S) -> None:
    docker = _docker()
    deadline = time.monotonic() + wait
    while True:
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)

def _handlers(client: Any) -> dict[str, Callable[[dict], None]]:
    docker = _docker()

    def undo_container(entry: dict) -> None:
        try:
            container = client.containers.get(entry["name"])
        except docker.errors.NotFound:
            return  # never created, or already gone
        if (container.labels or {}).get(LABEL_RUN) != entry.get("run"):
            return  # not ours (same name, other owner): never touched
        _remove_container(container)

    def undo_network(entry: dict) -> None:
        try:
            network = client.networks.get(entry["name"])
        except docker.errors.NotFound:
            return
        if (network.attrs.get("Labels") or {}).get(LABEL_RUN) != entry.get("run"):
            return
        try:
            network.remove()
        except docker.errors.NotFound:
            pass

    return {"container": undo_container, "network": undo_network}


def docker_undo_handlers() -> dict[str, Callable[[dict], None]]:
    """Undo handlers for container and network journal entries. Raises if no daemon answers."""
    return _handlers(connect())


def _owner_alive(labels: Mapping[str, str]) -> bool:
    owner = labels.get(LABEL_OWNER, "")
    pid, _, start = owner.partition(":")
    if not pid.isdigit():
        return False
    return alive(int(pid), int(start) if start.isdigit() else None)


def wipe_labelled(keep_runs: set[str]) -> list[str]:
    """Remove every container and network labelled ``tcplab.run`` of a run not in keep_runs.

    Objects of a run journalled in another state directory (``TCPLAB_STATE_DIR``) whose
    orchestrator still lives are left alone too: that run is working, not left behind.
    """
    docker = _docker()
    client = connect()
    here = str(state_root().resolve())
    messages: list[str] = []

    def keep(labels: Mapping[str, str], what: str) -> bool:
        run = labels.get(LABEL_RUN, "")
        if run in keep_runs:
            return True
        if labels.get(LABEL_STATE, here) != here and _owner_alive(labels):
            messages.append(f"docker: {what} of run {run} left alone: its orchestrator "
                            f"(pid {labels[LABEL_OWNER].split(':')[0]}) still runs")
            return True
        return False

    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        labels = container.labels or {}
        if keep(labels, f"container {container.name}"):
            continue
        try:
            _remove_container(container)
            messages.append(f"docker: removed container {container.name} "
                            f"(run {labels.get(LABEL_RUN)})")
        except docker.errors.APIError as exc:
            messages.append(f"docker: could not remove container {container.name}: {_short(exc)}")
    for network in client.networks.list(filters={"label": LABEL_RUN}):
        labels = network.attrs.get("Labels") or {}
        if keep(labels, f"network {network.name}"):
            continue
        try:
            network.remove()
            messages.append(f"docker: removed network {network.name} (run {labels.get(LABEL_RUN)})")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            messages.append(f"docker: could not remove network {network.name}: {_short(exc)}")
    return messages
