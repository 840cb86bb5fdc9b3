"""Turn user input into a validated plan. Nothing is created here.

Every check that can fail on bad input happens in :func:`make_plan`, so a mistake
exits with code 2 before a namespace, container or file exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import resources, sysctls, topology
from .conditions import Link, choose, parse_text
from .config import Lab, Profile, load_lab, load_profile
from .errors import InputError, LabError
from .scenario import Scenario, load_scenario
from .yamlfile import key_path

BASE_PORT = 5000
PORT_SHARE = 0.5  # use at most half the ephemeral range per (client, server port): see NOTES


@dataclass
class RunOptions:
    scenario: str
    root: Path  # the working directory (results/ by default); tcplab's own files: resources
    profile: str | None = None
    backend: str | None = None
    connections: int | None = None
    nbytes: int | None = None
    lab_file: Path | None = None
    allow_host_sysctls: bool = False
    results_dir: Path | None = None
    stall: float = 30.0
    per_worker: int = 0  # 0: as many sockets per worker as the fd limit allows
    levels: int = 1  # ramp in this many equal steps, with a checkpoint after each
    server_model: str = "blocking"  # or "epoll": accepted sockets registered in an epoll set
    family: str = "ipv4"
    kernel: str | None = None  # vm backend: boot every host with this kernel (--kernels)
    clients: int | None = None  # --clients/CLIENTS: this many client hosts (topology.derive)
    router: str | None = None  # --router/ROUTER: none, plain or nat
    bundle: dict[str, Any] | None = None  # run --bundle: the setup's origin (metadata.bundle)
    lock_wait: float | None = None  # --wait: seconds to queue for the machine-wide lock
    ledger: bool = False  # --ledger: trace live allocations per host (orchestrator/ledger)
    release_wait: bool = True  # --no-release-wait: never wait for the kernel to free sockets
    #: --sweep: a sweep point's sysctls, set over the profile's (checked by orchestrator.sweep)
    sysctl_overrides: dict[str, str] = field(default_factory=dict)
    link: str | None = None  # --link/LINK: conditions text (overrides the lab file's link)
    link_engine: str = "auto"  # --link-engine/LINK_ENGINE: auto, netem or fallback

    @property
    def lab_path(self) -> Path:
        return self.lab_file or resources.default_lab()


@dataclass
class Plan:
    options: RunOptions
    lab: Lab
    profile: Profile
    scenario: Scenario
    backend: str
    host_sysctls: dict[str, dict[str, str]]  # per lab host: pinned in its namespace
    global_sysctls: dict[str, str]  # host-wide, applied only with --allow-host-sysctls
    shards: list[list[int]]  # the server's: [[server port, connections], ...]
    notes: list[str] = field(default_factory=list)
    #: each client's own shards (topology.split); their per-port sums are ``shards``
    client_shards: dict[str, list[list[int]]] = field(default_factory=dict)
    #: the link conditions, queue sized (None: a perfect link), and the engine giving them
    link: Link | None = None
    link_asked: Link | None = None
    link_engine: str = ""
    link_why: str = ""

    def shards_of(self, host: str) -> list[list[int]]:
        """The shards a host's side is configured with: a client's own, else the server's."""
        return self.client_shards.get(host, self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "host_sysctls": self.host_sysctls,
                "global_sysctls": self.global_sysctls, "shards": self.shards,
                "client_shards": self.client_shards}


def port_range(values: dict[str, str], defaults: dict[str, str]) -> tuple[int, int]:
    text = values.get("net.ipv4.ip_local_port_range") or defaults.get(
        "net.ipv4.ip_local_port_range", "32768 60999")
    low, high = (int(x) for x in text.split())
    return low, high


def choose_backend(requested: str) -> tuple[str, str]:
    """Resolve ``auto``: docker when a daemon answers, else netns. Returns (name, why)."""
    if requested != "auto":
        return requested, "requested"
    try:
        from .backends.docker.client import ping

        ping(timeout=3).close()
        return "docker", "auto: a Docker daemon answers"
    except Exception:
        return "netns", "auto: no Docker daemon answers"


def make_plan(opts: RunOptions) -> Plan:
    lab = topology.derive(load_lab(opts.lab_path), opts.clients, opts.router)
    profile = load_profile(opts.profile or lab.profile, resources.profiles_dir())
    if opts.sysctl_overrides:  # a sweep point: like a profile that includes this one
        profile = dataclasses.replace(profile, sysctls={**profile.sysctls,
                                                        **opts.sysctl_overrides})
    scenario = load_scenario(opts.scenario, resources.scenarios_dir())
    if opts.connections is not None and opts.connections < 1:
        raise InputError(f"-n/N: expected a number of connections >= 1, got {opts.connections}")
    if opts.nbytes is not None and opts.nbytes < 0:
        raise InputError(f"--bytes/BYTES: expected a byte count >= 0, got {opts.nbytes}")
    scenario = scenario.with_overrides(opts.connections, opts.nbytes)
    if not 1 <= opts.levels <= 20:
        raise InputError(f"--levels/LEVELS: expected 1 to 20 levels, got {opts.levels}")
    if opts.levels > 1 and not any(s.action == "connect" for s in scenario.steps):
        raise InputError(f"--levels/LEVELS: scenario {scenario.name} has no connect step to ramp")
    requested = opts.backend or lab.backend
    if requested not in ("netns", "docker", "auto", "ssh", "vm"):
        raise InputError(f"--backend/BACKEND: expected netns, docker, auto, ssh or vm, "
                         f"got {requested!r}")
    backend, why = choose_backend(requested)
    _check_capabilities(backend, scenario)
    _check_topology(backend, lab, opts)
    link = _link(opts, lab, backend)
    if opts.ledger:
        from .ledger.tracer import refuse_unless_ready

        refuse_unless_ready(backend)
    if backend in ("ssh", "vm"):
        return link(_remote_plan(opts, lab, profile, scenario, backend, why))

    classes = sysctls.classify(list(profile.sysctls) + [k for h in lab.hosts for k in h.sysctls])
    global_sysctls = {k: v for k, v in profile.sysctls.items() if classes[k] == "host"}
    for host in lab.hosts:
        for key in host.sysctls:
            if classes[key] == "host":
                raise InputError(
                    f"{lab.path}: hosts.{host.name}.{key_path('sysctls', key)} is host-wide on this "
                    "kernel (not per namespace); move it to a profile and run with "
                    "--allow-host-sysctls, or remove it")
    if global_sysctls and not opts.allow_host_sysctls:
        key = next(iter(global_sysctls))
        where = next((f for f in reversed(profile.files) if key in _keys_of(f)), profile.path)
        raise InputError(
            f"{where}: {key_path('sysctls', key)} is host-wide on this kernel (not per "
            f"{'container' if backend == 'docker' else 'namespace'}); add --allow-host-sysctls "
            "to change it for the run (it is restored afterwards), or remove it")
    if backend == "docker" and opts.family == "ipv6" and not opts.allow_host_sysctls:
        raise InputError(
            "--family/FAMILY ipv6 on the docker backend: dockerd turns on IPv6 forwarding for "
            "the whole host (net.ipv6.conf.all.forwarding and every interface's) when it "
            "creates an IPv6 network, and leaves it on; add --allow-host-sysctls to let "
            "tcplab save those values and restore them after the run, or use --backend netns")
    per_ns = {k: v for k, v in profile.sysctls.items() if classes[k] == "namespace"}
    host_sysctls = {h.name: {**h.sysctls, **per_ns} for h in lab.hosts}
    _check_congestion_control(lab, profile)
    for name, pinned in topology.router_sysctls(lab).items():
        host_sysctls[name].update(pinned)

    shards, client_shards = _shards(lab, host_sysctls, scenario)
    _check_memory(scenario)
    if backend == "docker":
        # behind a router each connection crosses two Docker bridges: two host entries
        _check_conntrack(scenario, global_sysctls, 2 if lab.router else 1)
    _check_environment()
    _check_backend(backend, lab, opts.root)
    _check_disk(opts.results_dir or opts.root / "results")
    plan = Plan(opts, lab, profile, scenario, backend, host_sysctls, global_sysctls, shards,
                client_shards=client_shards)
    plan.notes.append(f"backend {backend} ({why})")
    return link(plan)


def _link(opts: RunOptions, lab: Lab, backend: str) -> Callable[[Plan], Plan]:
    """The link conditions (``--link`` wins over the lab file's ``network.link``), their
    queue sized and their engine chosen, all checked before anything exists; returns the
    function that puts them in the plan."""
    asked = parse_text(opts.link) if opts.link is not None else lab.link
    if asked is None or asked.empty:
        if opts.link_engine != "auto":
            raise InputError(f"--link-engine/LINK_ENGINE {opts.link_engine}: there are no link "
                             "conditions to apply; give some with --link/LINK or network.link "
                             "in the lab file, or drop --link-engine")
        return lambda plan: plan
    if backend == "ssh":
        raise InputError("--link/LINK on the ssh backend is not supported yet: netem there would "
                         "change a real host's interface for everything it carries; use "
                         "BACKEND=netns, docker or vm")
    engine, why = choose(opts.link_engine, asked, backend)

    def put(plan: Plan) -> Plan:
        plan.link, plan.link_asked = asked.sized(), asked
        plan.link_engine, plan.link_why = engine, why
        return plan
    return put


def _check_topology(backend: str, lab: Lab, opts: RunOptions) -> None:
    """What a backend or family cannot build yet is refused before anything exists."""
    if backend == "ssh" and lab.router is not None:
        raise InputError(
            "the ssh backend drives server and client hosts but not a router: tcplab would "
            "have to turn on forwarding, add routes and a NAT table on machines it does not "
            "own, host-wide; use BACKEND=netns, docker or vm for a router, or drop "
            "--router (several ssh clients work)")
    if lab.router is not None and opts.family == "ipv6":
        raise InputError("--family/FAMILY ipv6 with a router is not supported yet (the "
                         "router forwards and masquerades IPv4 only); use FAMILY=ipv4 or "
                         "drop the router")


def _shards(lab: Lab, host_sysctls: dict[str, dict[str, str]],
            scenario: Scenario) -> tuple[list[list[int]], dict[str, list[list[int]]]]:
    """Server ports and connections per port, and each client's share of them, from the
    clients' port range (the narrowest); checks backlog."""
    defaults = sysctls.namespace_defaults()
    ranges = {c.name: port_range(host_sysctls[c.name], defaults) for c in lab.of("client")}
    client = min(lab.of("client"), key=lambda c: ranges[c.name][1] - ranges[c.name][0])
    low, high = ranges[client.name]
    per_port = max(1, int((high - low + 1) * PORT_SHARE))
    nat = bool(lab.router and lab.router.nat)
    # counted before the lists are built, in ints: N=10**20 must not fill the memory
    ports = topology.ports_needed(scenario.connections, len(ranges), per_port, nat)
    if ports > 2000:
        raise InputError(
            f"{scenario.connections:,} connections need {ports} server ports with the "
            f"client's ip_local_port_range {low} {high}; widen it in {lab.path} "
            f"(hosts.{client.name}.sysctls) or lower N")
    shards, client_shards = topology.split(scenario.connections, list(ranges), per_port, nat,
                                           BASE_PORT)
    _check_backlog(lab, host_sysctls, defaults, scenario)
    return shards, client_shards


def _remote_plan(opts: RunOptions, lab: Lab, profile: Profile, scenario: Scenario,
                 backend: str, why: str) -> Plan:
    """ssh and vm backends: every host runs its own kernel, so every sysctl, per namespace
    or not, is set on the host itself (none on this machine).

    On a real host (ssh) that changes the host for everyone: only with
    --allow-host-sysctls, journalled there first and restored after. In a VM of the run
    nothing outlives the run, so no flag is needed.
    """
    host_sysctls = {h.name: {**h.sysctls, **profile.sysctls} for h in lab.hosts}
    if backend == "ssh":
        missing = [h.name for h in lab.hosts if h.ssh is None]
        if missing:
            raise InputError(f"{lab.path}: hosts.{missing[0]}.ssh: expected a mapping "
                             "{address, user, port, key} for the ssh backend")
        if host_sysctls and any(host_sysctls.values()) and not opts.allow_host_sysctls:
            where, keys = _ssh_sysctl_source(lab, profile)
            raise InputError(
                f"{where}: the ssh backend sets sysctls on real hosts, where they are "
                f"host-wide ({', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}); add "
                "--allow-host-sysctls to change them for the run (journalled on each host and "
                "restored afterwards), or remove them from that file")
        _check_backend(backend, lab, opts.root)  # logs in to every host: before anything exists
    if backend == "vm" and opts.kernel is not None:
        from .backends.vm.kernels import is_path

        if is_path(opts.kernel) and not Path(opts.kernel).expanduser().is_file():
            raise InputError(f"--kernels/KERNELS: {opts.kernel}: no such file (expected a "
                             "kernel version like 6.1, a path to a vmlinuz, or host)")
        # The command line's kernel for every host: the result's lab says what booted.
        lab = dataclasses.replace(lab, hosts=tuple(dataclasses.replace(h, kernel=opts.kernel)
                                                   for h in lab.hosts))
    if backend == "vm":
        for name, pinned in topology.router_sysctls(lab).items():
            host_sysctls[name].update(pinned)
        if lab.router is not None and lab.router.nat:
            # the router VM's own table: by default its size follows the VM's memory
            # (4,096 entries in 512 MiB); nothing outlives the VM
            host_sysctls[lab.router.name].setdefault(
                CONNTRACK_MAX, str(max(65536, 2 * scenario.connections)))
    shards, client_shards = _shards(lab, host_sysctls, scenario)
    if backend == "vm":
        from .backends.vm.limits import with_sized

        _check_vm_memory(lab, scenario, client_shards)
        _check_vm_kernels(lab)
        host_sysctls = with_sized(host_sysctls, scenario.connections)  # the VM's own kernel
    plan = Plan(opts, lab, profile, scenario, backend, host_sysctls, {}, shards,
                client_shards=client_shards)
    plan.notes.append(f"backend {backend} ({why})")
    return plan


CONNTRACK_MAX = "net.netfilter.nf_conntrack_max"
#: A NAT router VM's memory per connection: a conntrack entry and its NAT extension (384 B
#: at their slab footprints, docs/topologies.md), its hash bucket, with room to spare.
ROUTER_BYTES = 1024


def _check_vm_memory(lab: Lab, scenario: Scenario,
                     client_shards: dict[str, list[list[int]]]) -> None:
    """Each VM holds its own share: the server one end of every connection, each client
    one end of its own, a NAT router one conntrack entry per connection (a plain router
    nothing). Each share must fit in its VM's memory, and all the VMs in this machine's."""
    from .backends.vm.backend import vm_size

    per_side = memory_estimate(scenario) // 2 + 2048  # + the side process's share per socket
    total_mb = 0
    for host in lab.hosts:
        mb = vm_size(host)[0]
        total_mb += mb
        if host.role == "client":
            held, each = sum(n for _, n in client_shards.get(host.name, [])), per_side
        elif host.role == "router":
            held, each = (scenario.connections if host.nat else 0), ROUTER_BYTES
        else:
            held, each = scenario.connections, per_side
        need = 192 * 2**20 + held * each
        if need > 0.8 * mb * 2**20:
            fits = int((0.8 * mb * 2**20 - 192 * 2**20) / each)
            raise InputError(
                f"{lab.path}: hosts.{host.name}.vm.memory: {held:,} connections "
                f"need about {need / 2**20:,.0f} MiB in the {host.name} VM ({mb} MiB); raise "
                f"it (vm: {{memory: {int(need / 0.8 / 2**20) + 1}}}) or lower N (about "
                f"{max(fits, 0):,} fit)")
    avail = _mem_available()
    if avail and total_mb * 2**20 > 0.8 * avail:
        raise InputError(
            f"{lab.path}: the {len(lab.hosts)} VMs of this lab ask for {total_mb:,} MiB and this "
            f"machine has {avail / 2**20:,.0f} MiB available; size them down (hosts.NAME.vm: "
            "{memory: MiB}) or use fewer clients")


def _mem_available() -> int:
    """MemAvailable of this machine in bytes (0 when unknown)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in meminfo.splitlines()
                 if line.startswith("MemAvailable:")), 0)


def _check_vm_kernels(lab: Lab) -> None:
    """Every kernel a VM boots exists (a version in Debian's archive, a vmlinuz with what
    the VM needs), before any kernel of a sweep runs."""
    from .backends.vm.backend import DEFAULT_KERNEL
    from .backends.vm.kernels import check_specs

    check_specs(h.kernel or DEFAULT_KERNEL for h in lab.hosts)


def _ssh_sysctl_source(lab: Lab, profile: Profile) -> tuple[Path, list[str]]:
    """The first file that sets sysctls on the ssh hosts, and the keys it sets there."""
    in_lab = sorted({k for h in lab.hosts for k in h.sysctls})
    if in_lab:
        return lab.path, in_lab
    for f in reversed(profile.files):
        keys = sorted(k for k in _keys_of(f) if k in profile.sysctls)
        if keys:
            return f, keys
    return profile.path, sorted(profile.sysctls)


CONGESTION_CONTROL = "net.ipv4.tcp_congestion_control"


def _check_congestion_control(lab: Lab, profile: Profile) -> None:
    """A network namespace takes only the algorithms the machine allows: the kernel says
    EPERM at the write, once a host-wide sysctl may already be changed; say it first."""
    asked = [(f"{lab.path}: hosts.{h.name}.{key_path('sysctls', CONGESTION_CONTROL)}",
              h.sysctls[CONGESTION_CONTROL]) for h in lab.hosts if CONGESTION_CONTROL in h.sysctls]
    if CONGESTION_CONTROL in profile.sysctls:
        where = next((f for f in reversed(profile.files) if CONGESTION_CONTROL in _keys_of(f)),
                     profile.path)
        asked.append((f"{where}: {key_path('sysctls', CONGESTION_CONTROL)}",
                      profile.sysctls[CONGESTION_CONTROL]))
    if not asked:
        return
    allowed = sysctls.read_host("net.ipv4.tcp_allowed_congestion_control")
    for where, value in asked:
        if value not in allowed.split():
            raise InputError(
                f"{where} {value!r}: outside the first network namespace the kernel takes only "
                f"the algorithms this machine allows (net.ipv4.tcp_allowed_congestion_control: "
                f"{allowed}); choose one of those, or add {value} to that list on the machine")


def _keys_of(path: Path) -> set[str]:
    from .yamlfile import Doc

    try:
        return set(Doc.load(path).data.get("sysctls") or {})
    except InputError:
        return set()


def _check_backlog(lab: Lab, host_sysctls: dict[str, dict[str, str]], defaults: dict[str, str],
                   scenario: Scenario) -> None:
    """Connections the server holds unaccepted at once must fit its listen backlog."""
    server = lab.host("server")
    somaxconn = int(host_sysctls[server.name].get("net.core.somaxconn",
                                                  defaults.get("net.core.somaxconn", "4096")))
    if somaxconn < 128:
        raise InputError(
            f"net.core.somaxconn {somaxconn} on the server is too small for a connection ramp; "
            f"raise it in {lab.path} (hosts.{server.name}.sysctls) to at least 128")


def memory_estimate(scenario: Scenario, slabinfo: str | None = None) -> int:
    """Kernel memory one connection of this scenario needs, both ends, in bytes.

    From the live object sizes (what an idle pair holds, plus 15% slab overhead), plus,
    when data is sent, twice the bytes (skb truesize) and a page of forward allocation.
    """
    from .measure.analysis import idle_pair_estimate
    from .measure.parsers import parse_slabinfo

    try:
        text = slabinfo if slabinfo is not None else Path("/proc/slabinfo").read_text()
        pair = idle_pair_estimate(parse_slabinfo(text))["total"]
    except (OSError, LabError):
        pair = 8_000
    # The kernel holds at most about tcp_rmem[2] + tcp_wmem[2] of it (32 + 4 MiB by
    # default); 64 MiB bounds any sane profile.
    data = min(_bytes_in_flight(scenario), 64 << 20)
    return int(pair * 1.15) + (2 * data + 4096 if data else 0)


def _check_memory(scenario: Scenario) -> None:
    """Refuse a run whose connections would not fit in available memory."""
    avail = _mem_available()
    per_conn = memory_estimate(scenario)
    need = scenario.connections * per_conn
    if avail and need > 0.8 * avail:
        fits = int(0.8 * avail / per_conn)
        raise InputError(
            f"{scenario.connections:,} connections need about {need / 2**30:.1f} GiB of kernel "
            f"memory ({per_conn:,} B each, both ends, from the live object sizes) and "
            f"{avail / 2**30:.1f} GiB is available; the largest N that fits is about {fits:,}")


CONNTRACK = Path("/proc/sys/net/netfilter")


def _check_conntrack(scenario: Scenario, global_sysctls: dict[str, str], per: int = 1) -> None:
    """Docker's bridge rules make the host track every lab connection: a full table drops SYNs.

    Measured: one host entry per connection; the ramp stalls at nf_conntrack_max.
    """
    try:
        limit = int(global_sysctls.get("net.netfilter.nf_conntrack_max")
                    or (CONNTRACK / "nf_conntrack_max").read_text())
        used = int((CONNTRACK / "nf_conntrack_count").read_text())
    except (OSError, ValueError):
        return  # conntrack not loaded: nothing is tracked
    if scenario.connections * per + used > limit:
        raise InputError(
            f"{scenario.connections:,} connections on the docker backend need "
            f"{'twice ' if per == 2 else ''}as many host "
            f"connection-tracking entries; net.netfilter.nf_conntrack_max is {limit:,} with "
            f"{used:,} in use. Raise it in a profile (sysctls: net.netfilter.nf_conntrack_max) "
            f"and run with --allow-host-sysctls, use BACKEND=netns, or lower N below "
            f"{max(limit - used, 0):,}")


def _bytes_in_flight(scenario: Scenario) -> int:
    return scenario.bytes + sum(s.bytes or 0 for s in scenario.steps if s.action == "send")


def _check_backend(backend: str, lab: Lab, root: Path) -> None:
    """The backend's own preflight (docker: a daemon answers), before anything exists."""
    from .backends import backend_class

    backend_class(backend)(lab, "preflight", None, root, lambda _msg: None).preflight()


def _check_capabilities(backend: str, scenario: Scenario) -> None:
    """Steps a backend cannot carry out are refused before anything is created."""
    from .backends import backend_class
    from .backends.base import Backend

    if any(s.action == "block_acks" for s in scenario.steps) \
            and backend_class(backend).block_final_acks is Backend.block_final_acks:
        raise InputError(f"{scenario.path}: steps: block_acks filters packets on a lab host, "
                         f"which the {backend} backend cannot do; run this scenario with "
                         "BACKEND=netns or BACKEND=docker")


MIN_FREE = 64 << 20  # a run writes a few MB of raw snapshots and reports


def _check_disk(results: Path) -> None:
    import shutil

    probe = results
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE:
        raise InputError(f"{results}: only {free / 2**20:.1f} MiB free on its filesystem; a run "
                         f"needs about {MIN_FREE >> 20} MiB for its results: free some space or "
                         "pass --results DIR elsewhere")


def _check_environment() -> None:
    from . import doctor

    doctor.essential()
