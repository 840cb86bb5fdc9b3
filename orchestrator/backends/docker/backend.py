"""docker backend: each lab host is a container of the node image on a user-defined bridge.

Mirrors the netns backend through the same facade. Differences that matter:

* Commands reach a host over SSH (:class:`~orchestrator.ssh.SshRunner`) with a key pair
  made for the run in the run's journal directory. The SSH protocol is carried by a
  Docker exec stream of ``sshd -i`` (inetd mode), not by TCP to the container's address:
  a TCP control connection would be a socket in the very namespace being measured, and
  every state count (``ESTAB``), queue sum and ``sockstat inuse`` would include it
  (exec.py). sshd on the lab address (PID 1) stays up; it is what the run waits for.
* Per-namespace sysctls are pinned by Docker when the container is created
  (``sysctls=``), then read back over SSH and compared with what was asked.
* Every network and container carries the label ``tcplab.run=<run id>`` and is
  journalled before it is created. Cleanup removes an object only when it carries the
  label of the run being cleaned: unlabelled objects are never touched (cleanup.py).
* Per-host memory comes from each container's memory cgroup (read on this machine,
  cgroup.py).

Only the Docker SDK talks to the daemon (client.py); there is no ``docker`` CLI call.
The node image is built or pulled by image.py.
"""

from __future__ import annotations

import io
import ipaddress
import os
import tarfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ... import faults, resources, sysctls
from ...errors import InputError, RunError
from ...journal import LOCAL_HANDLERS, process_start_time, state_root
from ...runner import LocalRunner
from ...ssh import SshRunner
from ..base import Backend, LabHost
from ..common import (
    Member,
    close_runners,
    lab_networks,
    make_key,
    nat_ruleset,
    object_name,
    read_fd_limits,
    route_argvs,
)
from ..netns import ACK_DROP_RULESET, LAB_QDISC, qdisc_argv
from .cgroup import cgroup_of, read_cgroup_memory
from .cleanup import (
    LABEL_LAB,
    LABEL_OWNER,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_STATE,
    cleanup_handlers,
)
from .client import connect, sdk, short_error
from .exec import exec_transport

SIDE_PATH = "/opt/tcplab/side.py"
SSH_READY_TIMEOUT_S = 15.0
#: After a failure, how long to watch for a container that is dying (see diagnose).
DIAGNOSE_WAIT_S = 1.0


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None
        self.image: Any = None  # image.ImageInfo
        self.network_name = object_name(self.run_id)
        self.networks: list[str] = []  # every network made, the first named network_name
        self.containers: dict[str, Any] = {}  # host name -> Container
        self.runners: dict[str, SshRunner] = {}

    # -- checks ---------------------------------------------------------------------------
    def preflight(self) -> None:
        self.client = connect()

    def container_name(self, host_name: str) -> str:
        return object_name(self.run_id, host_name)

    def labels(self, role: str) -> dict[str, str]:
        pid = os.getpid()
        return {LABEL_RUN: self.run_id, LABEL_LAB: self.lab.name, LABEL_ROLE: role,
                LABEL_OWNER: f"{pid}:{process_start_time(pid)}",
                LABEL_STATE: str(state_root().resolve())}

    # -- lifecycle --------------------------------------------------------------------------
    def up(self, sysctls: Mapping[str, Mapping[str, str]]) -> dict[str, LabHost]:
        from .image import ensure_image

        if self.client is None:
            self.preflight()
        client = self.client
        # Fault point for the interrupt tests: the phase in which the image would be built.
        # Before the check, so a test reaches it without forcing a (90 s) rebuild.
        faults.pause("image")
        self.image = ensure_image(client, resources.images_dir(), lambda m: self.log(f"      {m}"))
        key = make_key(self.journal.dir, self.run_id)
        public = key.with_suffix(".pub").read_text().strip()
        if self.family == "ipv6":
            self._journal_ipv6_forwarding()
        nets = lab_networks(self.lab)
        networks = [self._create_network(i, net, members) for i, (net, members) in enumerate(nets)]
        side_tar = _side_archive(resources.side_program().encode())
        for spec in self.lab.hosts:
            mine = [(n, a) for n, (_, members) in zip(networks, nets, strict=True)
                    for h, a, _ in members if h.name == spec.name]
            network = mine[0][0]
            container = self._create_container(spec, network, sysctls.get(spec.name, {}), public)
            for other, address in mine[1:]:  # the router: on the server's network too
                self.client.api.connect_container_to_network(container.id, other.id,
                                                             ipv4_address=address)
            container.put_archive("/", side_tar)
            container.start()
            container.reload()
            self.containers[spec.name] = container
        for spec in self.lab.hosts:
            container = self.containers[spec.name]
            why_down = partial(container_down, self.client, container.id, container.name,
                               spec.name)
            runner = SshRunner(spec.name, spec.address, str(key),
                               sock_factory=exec_transport(self.client, container, spec.name,
                                                           why_down))
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
            in_netns = self._in_netns(spec.name, pid)
            for dev in (("eth0", "eth1") if spec.role == "router" else ("eth0",)):
                in_netns.run(qdisc_argv(dev))
            info["qdisc"] = LAB_QDISC
            # routes via the router and its NAT, also from this machine (see block_acks);
            # no default route: nothing leaves the lab networks (see _create_network)
            if self.lab.router is not None:
                in_netns.run(["ip", "route", "del", "default"], check=False)
            for argv in route_argvs(self.lab, spec):
                in_netns.run(argv)
            if spec.nat:
                in_netns.run(["nft", "-f", "-"], stdin=nat_ruleset(self.lab))
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
            read_fd_limits(host)
        nofile = ", ".join(sorted({"/".join(h.info["nofile"].split())
                                   for h in self.hosts.values()}))
        self.log(f"      containers {', '.join(c.name for c in self.containers.values())} "
                 f"from {self.image.tag}; SSH over docker exec; nofile soft/hard {nofile} "
                 "(the side shards over workers)")
        return self.hosts

    def _journal_ipv6_forwarding(self) -> None:
        """Save every ``net.ipv6.conf.*.forwarding`` before an IPv6 network exists.

        dockerd turns IPv6 forwarding on for the whole host when it creates a network with
        IPv6 and never turns it back off (with forwarding on, the kernel ignores router
        advertisements: a host that takes its IPv6 route from them loses it minutes later).
        The plan allows this only with --allow-host-sysctls; the undo restores each value
        after the network is gone. Recorded interfaces first, then ``default``, then
        ``all``: undone newest first, ``all`` (which rewrites every interface and the
        default) is restored before the per-interface values it would clobber.
        """
        conf = Path("/proc/sys/net/ipv6/conf")
        names = sorted(d.name for d in conf.iterdir() if d.name not in ("all", "default"))
        for name in [*names, "default", "all"]:
            key = sysctls.name_of(conf / name / "forwarding")
            try:
                old = sysctls.read_host(key)
            except OSError:
                continue  # an interface that went away meanwhile
            self.journal.record("host_sysctl", name=key, old=old, new="1", why="dockerd")

    def _create_network(self, index: int = 0, subnet: str = "",
                        members: list[Member] | None = None) -> Any:
        """One Docker network per lab network: the clients' (or the only one), then the
        server's behind a router. The first keeps the run's name."""
        docker = sdk()
        from docker.types import IPAMConfig, IPAMPool

        six = self.family == "ipv6"
        routed = self.lab.router is not None
        name = self.network_name if index == 0 else f"{self.network_name}-net{index}"
        families = [(subnet or self.lab.subnet,
                     [a for _, a, _ in members] if members else [h.address for h in self.lab.hosts])]
        if six:
            families.append((self.lab.subnet6, [h.address6 for h in self.lab.hosts]))
        pools = []
        for net, addresses in families:
            subnet = ipaddress.ip_network(net)
            used = {ipaddress.ip_address(a) for a in addresses}
            gateway = next(ip for ip in subnet.hosts() if ip not in used)
            pools.append(IPAMPool(subnet=str(subnet), gateway=str(gateway)))
        shown = " and ".join(net for net, _ in families)
        self.journal.record("network", name=name, run=self.run_id)
        self.networks.append(name)
        try:
            network = self.client.networks.create(
                name, driver="bridge", check_duplicate=True,
                # internal: no route and no NAT out of the lab. The containers reach each
                # other; the orchestrator talks to them over Docker exec streams. Behind a
                # router that is not enough: dockerd drops what enters an internal network's
                # bridge for an address outside its subnet (bridge netfilter), i.e. every
                # packet to the router for the server. Then the networks are plain bridges
                # without NAT out, and each container loses its default route (up()): still
                # no way out of the lab.
                internal=not routed,
                options=({"com.docker.network.bridge.enable_ip_masquerade": "false"}
                         if routed else None),
                # IPv6 only for FAMILY=ipv6: dockerd then turns the host's IPv6
                # forwarding on (see _journal_ipv6_forwarding). Docker adds the addresses
                # without duplicate address detection (nodad).
                enable_ipv6=six,
                ipam=IPAMConfig(pool_configs=pools),
                labels=self.labels("network"),
            )
        except docker.errors.APIError as exc:
            hint = ""
            if "overlap" in short_error(exc).lower():
                hint = (f"; another network already uses {shown}: "
                        "`tcplab wipe` removes one left by a crashed run, or change "
                        "network.subnet / network.subnet6 in the lab file")
            raise RunError(f"creating Docker network {name} on {shown} failed: "
                           f"{short_error(exc)}{hint}") from None
        self.log(f"      network {name} ({shown}, {'no NAT out' if routed else 'internal'})")
        return network

    def _create_container(self, spec: Any, network: Any, sysctls: Mapping[str, str],
                          public_key: str) -> Any:
        docker = sdk()
        api = self.client.api
        name = self.container_name(spec.name)
        self.journal.record("container", name=name, run=self.run_id, host=spec.name)
        host_config = api.create_host_config(
            network_mode=network.name,
            sysctls=dict(sysctls),  # per-namespace values, pinned by Docker at creation
            privileged=False,
        )
        networking = api.create_networking_config(
            {network.name: api.create_endpoint_config(
                ipv4_address=spec.address,
                ipv6_address=spec.address6 if self.family == "ipv6" else None)})
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
                           f"{short_error(exc)}") from None
        return self.client.containers.get(created["Id"])

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
        close_runners(self.runners.values(), self.log)  # the containers go away next
        return super().down()

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        handlers = dict(LOCAL_HANDLERS)
        client = self.client
        if client is None:
            try:
                client = connect()
            except InputError:
                return handlers  # no daemon: container entries stay, undo reports them
        handlers.update(cleanup_handlers(client))
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

    def link_runner(self, host: LabHost) -> LocalRunner:
        """The link conditions, like block_acks, from this machine in the container's
        network namespace: the container gets no extra capability."""
        pid = host.info.get("pid")
        if not pid:
            raise RunError(f"{host.name}: no process of container "
                           f"{self.container_name(host.name)} to reach its network namespace")
        return self._in_netns(host.name, pid)

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
            "networks": list(self.networks),
            "subnet": self.lab.subnet,
            "containers": {name: c.id for name, c in self.containers.items()},
        }



def container_down(client: Any, container_id: str, name: str, host_name: str) -> str | None:
    """None while the container runs; otherwise what became of it, in one line."""
    docker = sdk()
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


def _side_archive(data: bytes) -> bytes:
    """A tar holding opt/tcplab/side.py (the one side program), for put_archive to /."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("opt/tcplab")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(folder)
        info = tarfile.TarInfo(SIDE_PATH.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

