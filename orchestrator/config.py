"""Lab files and sysctl profiles: load, validate strictly, resolve includes.

Nothing here creates anything; every problem is an :class:`InputError` naming the
file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sysctls
from .conditions.link import Link
from .conditions.parse import parse_map
from .errors import InputError
from .yamlfile import Doc, show

BACKENDS = ("netns", "docker", "auto", "ssh", "vm")
ROLES = ("server", "client", "router")
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")
#: IPv6 lab networks: unique-local (fd00::/8) or documentation (2001:db8::/32) space only.
LAB_NETWORKS6 = (ipaddress.ip_network("fd00::/8"), ipaddress.ip_network("2001:db8::/32"))
DEFAULT_SUBNET6 = "fd00:198:18::/64"


@dataclass(frozen=True)
class HostSpec:
    name: str
    role: str
    address: str
    sysctls: dict[str, str] = field(default_factory=dict)
    # ssh backend: how to log in ({address, user, port, key}); vm backend: the kernel to
    # boot (a version like 6.1, a vmlinuz path), extra kernel command-line options and
    # the VM's size ({memory: MiB, cpus: N}). None/empty when not given.
    ssh: dict[str, Any] | None = None
    kernel: str | None = None
    cmdline: str = ""
    vm: dict[str, int] | None = None
    address6: str = ""  # IPv6 lab address (FAMILY=ipv6); derived from subnet6 when not given
    # router only: its address on the server's network (``address`` is on the clients'),
    # and whether it masquerades the clients (nftables NAT in its own namespace)
    server_address: str = ""
    nat: bool = False

    def extra_dict(self) -> dict[str, Any]:
        """The optional keys that were given (none: the lab file's dict is unchanged)."""
        out: dict[str, Any] = {}
        if self.ssh is not None:
            out["ssh"] = dict(self.ssh)
        if self.kernel is not None:
            out["kernel"] = self.kernel
        if self.cmdline:
            out["cmdline"] = self.cmdline
        if self.vm is not None:
            out["vm"] = dict(self.vm)
        if self.role == "router":
            out["server_address"] = self.server_address
            out["nat"] = self.nat
        return out


@dataclass(frozen=True)
class Lab:
    path: Path
    name: str
    backend: str
    subnet: str
    hosts: tuple[HostSpec, ...]
    profile: str
    subnet6: str = DEFAULT_SUBNET6
    #: the server's network when a router joins it to the clients' (``subnet``); "" without
    server_subnet: str = ""
    #: network.link: the conditions of the path between the clients and the server (on the
    #: router when there is one); None when the file gives none (docs/conditions.md)
    link: Link | None = None

    def host(self, role: str) -> HostSpec:
        """The first host of a role (the only one for server and router)."""
        return next(h for h in self.hosts if h.role == role)

    def of(self, role: str) -> list[HostSpec]:
        return [h for h in self.hosts if h.role == role]

    @property
    def router(self) -> HostSpec | None:
        return next((h for h in self.hosts if h.role == "router"), None)

    def to_dict(self) -> dict[str, Any]:
        network = {"subnet": self.subnet, "subnet6": self.subnet6}
        if self.server_subnet:
            network["server_subnet"] = self.server_subnet
        if self.link is not None:
            network["link"] = self.link.to_lab()
        return {
            "name": self.name,
            "backend": self.backend,
            "network": network,
            "profile": self.profile,
            "hosts": {
                h.name: {"role": h.role, "address": h.address, "address6": h.address6,
                         "sysctls": dict(h.sysctls), **h.extra_dict()}
                for h in self.hosts
            },
        }


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    sysctls: dict[str, str]
    files: tuple[Path, ...]  # this profile and every included one, in resolution order

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "sysctls": dict(self.sysctls),
            "files": [str(f) for f in self.files],
        }


def _sysctl_map(doc: Doc, key: str = "sysctls") -> dict[str, str]:
    raw = doc.map(key)
    out: dict[str, str] = {}
    for name, value in raw.data.items():
        if not isinstance(name, str) or name.count(".") < 1:
            raise raw.fail(str(name), "a sysctl name like net.ipv4.tcp_rmem")
        sysctls.check_exists(name, str(doc.file), prefix=doc.prefix)
        out[name] = sysctls.normalize_value(name, value, str(doc.file), doc.prefix)
    return out


def load_lab(path: Path) -> Lab:
    doc = Doc.load(path, empty_ok=False)
    doc.only(["name", "description", "backend", "network", "hosts", "profile"])
    backend = doc.str("backend", "auto")
    if backend not in BACKENDS:
        raise doc.fail("backend", "one of " + ", ".join(BACKENDS), backend)
    net = doc.map("network")
    net.only(["subnet", "subnet6", "server_subnet", "link"])
    link = parse_map(net.map("link")) if "link" in net.data else None
    subnet = _subnet(net, "subnet", "198.18.0.0/24", backend)
    server_subnet = _subnet(net, "server_subnet", "", backend) if "server_subnet" in net.data \
        else None
    if server_subnet is not None and server_subnet.overlaps(subnet):
        raise net.fail("server_subnet", f"a network apart from network.subnet {subnet}",
                       str(server_subnet))
    subnet6_text = net.str("subnet6", DEFAULT_SUBNET6)
    try:
        subnet6 = ipaddress.ip_network(subnet6_text)
    except ValueError:
        raise net.fail("subnet6", "an IPv6 network like fd00:198:18::/64", subnet6_text) from None
    if subnet6.version != 6 or not any(subnet6.subnet_of(n) for n in LAB_NETWORKS6):  # type: ignore[arg-type]
        raise net.fail("subnet6", "an IPv6 network inside fd00::/8 or 2001:db8::/32",
                       subnet6_text)
    hosts_doc = doc.map("hosts", required=True)
    hosts: list[HostSpec] = []
    if server_subnet is not None and not any(
            isinstance(h, dict) and h.get("role") == "router" for h in hosts_doc.data.values()):
        raise InputError(f"{path}: network.server_subnet: a second network needs a host with "
                         "role router joining it to network.subnet; add one or remove "
                         "server_subnet")
    for name in hosts_doc.data:
        h = hosts_doc.map(str(name))
        h.only(["role", "address", "address6", "sysctls", "ssh", "kernel", "cmdline", "vm",
                "server_address", "nat"])
        role = h.str("role", required=True)
        if role not in ROLES:
            raise h.fail("role", "server, client or router", role)
        topo = _topology_keys(h, role, subnet, server_subnet)
        if role == "server" and server_subnet is not None:  # behind the router
            address = _host_address(h, "address", server_subnet, "network.server_subnet")
        else:
            address = _host_address(h, "address", subnet, "network.subnet")
        address6 = h.str("address6", "") or str(
            subnet6.network_address + int(ipaddress.ip_address(address)) % 65536)
        try:
            ip6 = ipaddress.ip_address(address6)
        except ValueError:
            raise h.fail("address6", "an IPv6 address", address6) from None
        if ip6 not in subnet6:
            raise h.fail("address6", f"an address inside network.subnet6 {subnet6}", address6)
        hosts.append(HostSpec(str(name), role, address, _sysctl_map(h), **_host_extras(h, path),
                              address6=address6, **topo))
    _check_roles(hosts_doc, hosts)
    addresses = [h.address for h in hosts] + [h.server_address for h in hosts if h.server_address]
    if len(set(addresses)) != len(addresses):
        raise hosts_doc.fail(None, "a different address for each host")
    return Lab(
        path=path,
        name=doc.str("name", path.stem),
        backend=backend,
        subnet=str(subnet),
        hosts=tuple(hosts),
        profile=doc.str("profile", "default"),
        subnet6=str(subnet6),
        server_subnet=str(server_subnet) if server_subnet is not None else "",
        link=link,
    )


Net = ipaddress.IPv4Network


def _subnet(net: Doc, key: str, default: str, backend: str) -> Net:
    text = net.str(key, default)
    try:
        subnet = ipaddress.ip_network(text)
    except ValueError:
        raise net.fail(key, "a network like 198.18.0.0/24", text) from None
    # Real hosts (ssh backend) keep the addresses they have; every lab this machine
    # builds itself stays in the range reserved for benchmarks.
    if subnet.version != 4 or (backend != "ssh"
                               and not subnet.subnet_of(LAB_NETWORK)):  # type: ignore[arg-type]
        raise net.fail(key, "a network inside 198.18.0.0/15 (reserved for benchmarks)", text)
    return subnet  # type: ignore[return-value]


def _host_address(h: Doc, key: str, subnet: Net, subnet_key: str) -> str:
    address = h.str(key, required=True)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise h.fail(key, "an IP address", address) from None
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        raise h.fail(key, f"a host address inside {subnet_key} {subnet}", address)
    return address


def _topology_keys(h: Doc, role: str, subnet: Net, server_subnet: Net | None) -> dict[str, Any]:
    """A router's second address and its NAT switch; refused on any other host."""
    nat = h.data.get("nat", False)
    if not isinstance(nat, bool):
        raise h.fail("nat", "true or false", nat)
    if role != "router":
        if nat:
            raise InputError(f"{h.where('nat')}: NAT needs a router: nat: true belongs on the "
                             "host with role router (add one, with network.server_subnet for "
                             "the server's side) or remove nat")
        if "server_address" in h.data:
            raise InputError(f"{h.where('server_address')}: only a router has an address on "
                             "the server's network; remove it")
        return {}
    if server_subnet is None:
        raise InputError(f"{h.where(None)}: a router joins two networks and this lab has one: "
                         "add network.server_subnet (like 198.18.1.0/24) for the server's side, "
                         "or remove the router")
    return {"nat": nat, "server_address": _host_address(h, "server_address", server_subnet,
                                                        "network.server_subnet")}


def _check_roles(hosts_doc: Doc, hosts: list[HostSpec]) -> None:
    count = {r: sum(1 for h in hosts if h.role == r) for r in ROLES}
    if count["server"] != 1 or count["client"] < 1:
        roles = ", ".join(sorted(h.role for h in hosts))
        raise hosts_doc.fail(None, "exactly one host with role server and at least one with "
                             "role client", roles or "none")
    if count["router"] > 1:
        raise hosts_doc.fail(None, "at most one host with role router",
                             f"{count['router']} routers")


def _host_extras(h: Doc, lab_path: Path) -> dict[str, Any]:
    """The optional ssh/vm keys of a lab host, validated (see docs/ssh.md, docs/vm.md)."""
    out: dict[str, Any] = {}
    if "ssh" in h.data:
        s = h.map("ssh")
        s.only(["address", "user", "port", "key"])
        address = s.str("address", required=True)
        user = s.str("user", "root")
        port = s.data.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise s.fail("port", "a TCP port number (1-65535)", port)
        key_text = s.str("key", required=True)
        key = Path(key_text).expanduser()
        if not key.is_absolute():
            key = (Path(lab_path).parent / key).resolve()
        if not key.is_file():
            raise s.fail("key", "an SSH private key file that exists", key_text)
        out["ssh"] = {"address": address, "user": user, "port": port, "key": str(key)}
    if "kernel" in h.data:
        kernel = h.data["kernel"]
        if isinstance(kernel, (int, float)) and not isinstance(kernel, bool):
            # YAML reads `kernel: 6.10` as the number 6.1 and `5.10` as 5.1: a number is
            # refused, never guessed at; the message quotes the text as written
            written = getattr(kernel, "yaml_text", "") or str(kernel)
            raise InputError(f"{h.where('kernel')}: YAML reads {written} as the number "
                             f"{kernel!r} (6.10 would become 6.1, 5.10 5.1); quote the "
                             f"version: kernel: \"{written}\"")
        if not isinstance(kernel, str) or not kernel.strip():
            raise h.fail("kernel", "a kernel version like \"6.1\", a path to a vmlinuz, or host",
                         kernel)
        out["kernel"] = kernel.strip()
    if "cmdline" in h.data:
        cmdline = h.data["cmdline"]
        if not isinstance(cmdline, str) or "tcplab." in cmdline:
            raise h.fail("cmdline", "kernel command-line options as one string "
                         "(like \"slab_nomerge\"), without tcplab.* options", cmdline)
        out["cmdline"] = " ".join(cmdline.split())
    if "vm" in h.data:
        v = h.map("vm")
        v.only(["memory", "cpus"])
        sizes: dict[str, int] = {}
        for key, low, high in (("memory", 256, 65536), ("cpus", 1, 64)):
            if key in v.data:
                value = v.data[key]
                if (isinstance(value, bool) or not isinstance(value, int)
                        or not low <= value <= high):
                    raise v.fail(key, f"an integer from {low} to {high}", value)
                sizes[key] = value
        out["vm"] = sizes
    return out


def profile_path(name_or_path: str, profiles_dir: Path) -> Path:
    """A profile is a name in ``lab/profiles`` or a path to a YAML file."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"{path}: profile file not found")
        return path
    path = profiles_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in profiles_dir.glob("*.yaml"))) or "none"
        raise InputError(f"unknown profile {name_or_path!r}: no {path}; known profiles: {known}")
    return path


def load_profile(name_or_path: str, profiles_dir: Path) -> Profile:
    path = profile_path(name_or_path, profiles_dir)
    values, files, description = _resolve(path, profiles_dir, ())
    return Profile(path.stem, path, description, values, tuple(files))


def _resolve(path: Path, profiles_dir: Path, stack: tuple[Path, ...]
             ) -> tuple[dict[str, str], list[Path], str]:
    real = path.resolve()
    if real in stack:
        cycle = " -> ".join(p.name for p in stack + (real,))
        raise InputError(f"{path}: include: cycle {cycle}; remove one of these includes")
    doc = Doc.load(path)
    doc.only(["description", "include", "sysctls"])
    description = doc.str("description", "")
    includes = doc.list("include", [])
    merged: dict[str, str] = {}
    files: list[Path] = []
    for i, inc in enumerate(includes):
        if not isinstance(inc, str) or not inc:
            raise doc.fail(f"include[{i}]", "a profile name", inc)
        try:
            inc_path = profile_path(inc, profiles_dir)
        except InputError as exc:
            raise InputError(f"{doc.where(f'include[{i}]')}: {exc}") from None
        values, inc_files, _ = _resolve(inc_path, profiles_dir, stack + (real,))
        merged.update(values)
        files += [f for f in inc_files if f not in files]
    merged.update(_sysctl_map(doc))
    files.append(path)
    return merged, files, description


def list_profiles(profiles_dir: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(profiles_dir.glob("*.yaml")):
        try:
            desc = Doc.load(path).data.get("description", "")
        except InputError as exc:
            desc = f"(invalid: {exc})"
        out.append((path.stem, str(desc)))
    return out


def check_scalar(doc: Doc, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise doc.fail(key, "one of " + ", ".join(allowed), value)
    return str(value)


__all__ = ["HostSpec", "Lab", "Profile", "list_profiles", "load_lab", "load_profile", "show"]
