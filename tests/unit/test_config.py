"""orchestrator.config: lab files and profiles, include resolution, strict validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "lab" / "profiles"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def message(fn, *args) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    return str(info.value)


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "profiles"
    d.mkdir()
    return d


# --------------------------------------------------------------------------
# shipped profiles
# --------------------------------------------------------------------------

def test_default_profile_changes_nothing() -> None:
    prof = config.load_profile("default", PROFILES)
    assert prof.sysctls == {}
    assert prof.files == (PROFILES / "default.yaml",)
    assert prof.name == "default"


def test_lean_server_resolves_two_levels_of_includes() -> None:
    prof = config.load_profile("lean-server", PROFILES)
    assert prof.files == (PROFILES / "default.yaml", PROFILES / "small-buffers.yaml",
                          PROFILES / "lean-server.yaml")
    assert prof.sysctls == {
        "net.ipv4.tcp_rmem": "4096 16384 65536",  # from small-buffers
        "net.ipv4.tcp_wmem": "4096 16384 65536",
        "net.ipv4.tcp_max_tw_buckets": "32768",
        "net.ipv4.tcp_fin_timeout": "15",
        "net.ipv4.tcp_sack": "0",
        "net.ipv4.tcp_timestamps": "0",
    }
    assert prof.description.startswith("Memory-lean server")


def test_large_buffers_values_are_normalised_strings(tmp_path: Path) -> None:
    prof = config.load_profile("large-buffers", PROFILES)
    assert prof.sysctls["net.ipv4.tcp_rmem"] == "4096 262144 67108864"
    ints = tmp_path / "ints.yaml"
    ints.write_text("sysctls:\n  net.core.somaxconn: 8192\n")  # an int in YAML
    assert config.load_profile(str(ints), PROFILES).sysctls["net.core.somaxconn"] == "8192"
    assert prof.to_dict()["files"] == [str(PROFILES / "default.yaml"),
                                       str(PROFILES / "large-buffers.yaml")]


def test_every_shipped_profile_loads() -> None:
    names = [n for n, _ in config.list_profiles(PROFILES)]
    assert names == ["conntrack-large", "default", "fixed-buffers", "large-buffers", "lean-server", "small-buffers",
                     "small-tcp-mem", "tw-reuse"]
    for name in names:
        assert config.load_profile(name, PROFILES).files[0] == PROFILES / "default.yaml"


def test_profile_by_path() -> None:
    prof = config.load_profile(str(PROFILES / "tw-reuse.yaml"), PROFILES)
    assert prof.name == "tw-reuse"
    assert prof.sysctls == {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.tcp_fin_timeout": "15"}


# --------------------------------------------------------------------------
# include order
# --------------------------------------------------------------------------

def test_later_includes_override_earlier_and_own_sysctls_override_includes(pdir: Path) -> None:
    write(pdir / "first.yaml", "sysctls:\n  net.ipv4.tcp_fin_timeout: 10\n"
                               "  net.core.somaxconn: 1024\n  net.ipv4.tcp_sack: 0\n")
    write(pdir / "second.yaml", "sysctls:\n  net.ipv4.tcp_fin_timeout: 20\n"
                                "  net.core.somaxconn: 2048\n")
    write(pdir / "top.yaml", "include: [first, second]\n"
                             "sysctls:\n  net.ipv4.tcp_fin_timeout: 30\n")
    prof = config.load_profile("top", pdir)
    assert prof.sysctls == {
        "net.ipv4.tcp_fin_timeout": "30",  # own value wins over both includes
        "net.core.somaxconn": "2048",      # second (later) include wins over first
        "net.ipv4.tcp_sack": "0",          # only in first: kept
    }
    assert [f.name for f in prof.files] == ["first.yaml", "second.yaml", "top.yaml"]
    # reversed order: the other include wins
    write(pdir / "top2.yaml", "include: [second, first]\n")
    assert config.load_profile("top2", pdir).sysctls["net.core.somaxconn"] == "1024"


def test_diamond_include_is_not_a_cycle(pdir: Path) -> None:
    write(pdir / "base.yaml", "sysctls:\n  net.core.somaxconn: 1024\n")
    write(pdir / "left.yaml", "include: [base]\nsysctls:\n  net.ipv4.tcp_sack: 0\n")
    write(pdir / "right.yaml", "include: [base]\nsysctls:\n  net.ipv4.tcp_timestamps: 0\n")
    write(pdir / "top.yaml", "include: [left, right]\n")
    prof = config.load_profile("top", pdir)
    assert [f.name for f in prof.files] == ["base.yaml", "left.yaml", "right.yaml", "top.yaml"]
    assert prof.sysctls == {"net.core.somaxconn": "1024", "net.ipv4.tcp_sack": "0",
                            "net.ipv4.tcp_timestamps": "0"}


def test_include_by_path(pdir: Path, tmp_path: Path) -> None:
    other = write(tmp_path / "elsewhere" / "x.yaml", "sysctls:\n  net.core.somaxconn: 512\n")
    write(pdir / "top.yaml", f"include: [{other}]\n")
    assert config.load_profile("top", pdir).sysctls == {"net.core.somaxconn": "512"}


def test_include_cycle_a_b_a(pdir: Path) -> None:
    write(pdir / "a.yaml", "include: [b]\n")
    write(pdir / "b.yaml", "include: [a]\n")
    msg = message(config.load_profile, "a", pdir)
    assert msg == (f"{pdir / 'a.yaml'}: include: cycle a.yaml -> b.yaml -> a.yaml; "
                   "remove one of these includes")


def test_include_cycle_longer_and_self(pdir: Path) -> None:
    write(pdir / "a.yaml", "include: [b]\n")
    write(pdir / "b.yaml", "include: [default, c]\n")
    write(pdir / "c.yaml", "include: [a]\n")
    write(pdir / "default.yaml", "sysctls: {}\n")
    msg = message(config.load_profile, "a", pdir)
    assert msg == (f"{pdir / 'a.yaml'}: include: cycle a.yaml -> b.yaml -> c.yaml -> a.yaml; "
                   "remove one of these includes")
    # entered from b, the cycle is reported from b
    assert "cycle b.yaml -> c.yaml -> a.yaml -> b.yaml" in message(config.load_profile, "b", pdir)
    write(pdir / "self.yaml", "include: [self]\n")
    assert "cycle self.yaml -> self.yaml" in message(config.load_profile, "self", pdir)


def test_include_of_an_unknown_profile_names_the_include(pdir: Path) -> None:
    write(pdir / "top.yaml", "include: [default, nope]\n")
    write(pdir / "default.yaml", "")
    msg = message(config.load_profile, "top", pdir)
    assert msg.startswith(f"{pdir / 'top.yaml'}: include[1]: unknown profile 'nope': ")
    assert msg.endswith("known profiles: default, top")


@pytest.mark.parametrize(("text", "want"), [
    ("include: default\n", "include: expected a list, got \"default\""),
    ("include: [3]\n", "include[0]: expected a profile name, got 3"),
    ("sysctls: [a]\n", "sysctls: expected a mapping, got ['a']"),
    ("sysctls:\n  tcp_rmem: 1\n",
     "sysctls.tcp_rmem: expected a sysctl name like net.ipv4.tcp_rmem"),
    ("sysctl: {}\n", "sysctl: unknown key; expected one of description, include, sysctls"),
    ("- a\n", "expected a mapping at the top level, got ['a']"),
])
def test_profile_structure_errors(pdir: Path, text: str, want: str) -> None:
    path = write(pdir / "p.yaml", text)
    assert message(config.load_profile, "p", pdir) == f"{path}: {want}"


def test_profile_value_error_names_the_included_file(pdir: Path) -> None:
    bad = write(pdir / "bad.yaml", 'sysctls:\n  net.ipv4.tcp_rmem: "1 2"\n')
    write(pdir / "top.yaml", "include: [bad]\n")
    assert message(config.load_profile, "top", pdir) == (
        f'{bad}: sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", '
        'got "1 2"')


def test_unknown_profile_lists_the_known_ones() -> None:
    msg = message(config.load_profile, "huge", PROFILES)
    assert msg == (f"unknown profile 'huge': no {PROFILES / 'huge.yaml'}; known profiles: "
                   "conntrack-large, default, fixed-buffers, large-buffers, lean-server, small-buffers, small-tcp-mem, tw-reuse")
    assert message(config.load_profile, "/nonexistent/p.yaml", PROFILES) == (
        "/nonexistent/p.yaml: profile file not found")


def test_list_profiles_marks_invalid_files(pdir: Path) -> None:
    write(pdir / "ok.yaml", "description: fine\n")
    write(pdir / "broken.yaml", "description: [\n")
    rows = dict(config.list_profiles(pdir))
    assert rows["ok"] == "fine"
    assert rows["broken"].startswith("(invalid: ") and "malformed YAML" in rows["broken"]


# --------------------------------------------------------------------------
# lab files
# --------------------------------------------------------------------------

def test_default_lab() -> None:
    lab = config.load_lab(REPO / "lab" / "default.yaml")
    assert (lab.name, lab.backend, lab.subnet, lab.profile) == (
        "default", "auto", "198.18.0.0/24", "default")
    assert lab.host("server").address == "198.18.0.2"
    assert lab.host("client").address == "198.18.0.3"
    assert lab.host("server").sysctls == {"net.core.somaxconn": "65535",
                                          "net.ipv4.tcp_max_syn_backlog": "65535"}
    assert lab.host("client").sysctls == {"net.ipv4.ip_local_port_range": "1024 65535"}
    d = lab.to_dict()
    assert d["network"] == {"subnet": "198.18.0.0/24", "subnet6": "fd00:198:18::/64"}
    assert d["hosts"]["client"]["role"] == "client"


LAB = """\
backend: netns
network:
  subnet: {subnet}
hosts:
  srv:
    role: server
    address: {server}
  cli:
    role: client
    address: {client}
    sysctls:
      net.ipv4.ip_local_port_range: "{ports}"
"""


def lab_file(tmp_path: Path, subnet: str = "198.18.0.0/24", server: str = "198.18.0.2",
             client: str = "198.18.0.3", ports: str = "1024 65535") -> Path:
    return write(tmp_path / "lab.yaml", LAB.format(subnet=subnet, server=server, client=client,
                                                   ports=ports))


def test_lab_defaults_and_names(tmp_path: Path) -> None:
    lab = config.load_lab(lab_file(tmp_path, subnet="198.19.255.0/24", server="198.19.255.1",
                                   client="198.19.255.254"))
    assert lab.name == "lab"  # the file's stem
    assert lab.profile == "default"
    assert [h.name for h in lab.hosts] == ["srv", "cli"]


@pytest.mark.parametrize(("kw", "want"), [
    ({"subnet": "10.0.0.0/24"},
     ('network.subnet: expected a network inside 198.18.0.0/15 (reserved for benchmarks), '
     'got "10.0.0.0/24"')),
    ({"subnet": "198.16.0.0/14"},
     ('network.subnet: expected a network inside 198.18.0.0/15 (reserved for benchmarks), '
     'got "198.16.0.0/14"')),
    ({"subnet": "2001:db8::/64"},
     ('network.subnet: expected a network inside 198.18.0.0/15 (reserved for benchmarks), '
      'got "2001:db8::/64"')),
    ({"subnet": "198.18.0.1/24"},
     'network.subnet: expected a network like 198.18.0.0/24, got "198.18.0.1/24"'),
    ({"server": "198.18.1.2"},
     ('hosts.srv.address: expected a host address inside network.subnet 198.18.0.0/24, '
     'got "198.18.1.2"')),
    ({"server": "198.18.0.0"},
     ('hosts.srv.address: expected a host address inside network.subnet 198.18.0.0/24, '
     'got "198.18.0.0"')),
    ({"client": "198.18.0.255"},
     ('hosts.cli.address: expected a host address inside network.subnet 198.18.0.0/24, '
     'got "198.18.0.255"')),
    ({"client": "server"}, 'hosts.cli.address: expected an IP address, got "server"'),
    ({"client": "198.18.0.2"}, "hosts: expected a different address for each host"),
    ({"ports": "70000 80000"},
     ('hosts.cli.sysctls."net.ipv4.ip_local_port_range": expected ports between 1 and 65535, '
     'got "70000 80000"')),
])
def test_lab_errors(tmp_path: Path, kw: dict, want: str) -> None:
    path = lab_file(tmp_path, **kw)
    assert message(config.load_lab, path) == f"{path}: {want}"


@pytest.mark.parametrize(("edit", "want"), [
    (("role: client", "role: server"),
     ('hosts: expected exactly one host with role server and at least one with role client, '
     'got "server, server"')),
    (("role: client", "role: router"),
     "hosts.cli: a router joins two networks and this lab has one: add network.server_subnet "
     "(like 198.18.1.0/24) for the server's side, or remove the router"),
    (("hosts:", "  server_subnet: 198.18.1.0/24\nhosts:"),
     "network.server_subnet: a second network needs a host with role router joining it to "
     "network.subnet; add one or remove server_subnet"),
    (("role: client", "role: gateway"), 'hosts.cli.role: expected server, client or router, '
     'got "gateway"'),
    (("backend: netns", "backend: kvm"), 'backend: expected one of netns, docker, auto, ssh, vm, got "kvm"'),
    (("backend: netns", "backend: netns\nhostz: 1"),
     "hostz: unknown key; expected one of name, description, backend, network, hosts, profile"),
    (("    role: server\n", "    role: server\n    adress: x\n"),
     "hosts.srv.adress: unknown key; expected one of role, address, address6, sysctls, ssh, kernel, cmdline, vm, server_address, nat"),
    (("net.ipv4.ip_local_port_range", "net.ipv4.tcp_nonexistent"),
     'hosts.cli.sysctls."net.ipv4.tcp_nonexistent": this kernel'),
])
def test_lab_structure_errors(tmp_path: Path, edit: tuple[str, str], want: str) -> None:
    path = lab_file(tmp_path)
    path.write_text(path.read_text().replace(*edit))
    assert message(config.load_lab, path).startswith(f"{path}: {want}")


def test_lab_without_hosts(tmp_path: Path) -> None:
    path = write(tmp_path / "lab.yaml", "backend: netns\n")
    assert message(config.load_lab, path) == f"{path}: hosts: missing; this key is required"
    empty = write(tmp_path / "empty.yaml", "")
    assert message(config.load_lab, empty) == (
        f"{empty}: expected a mapping at the top level, got None")


def test_lab_copy_of_the_default_is_valid(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    shutil.copy(REPO / "lab" / "default.yaml", copy)
    assert config.load_lab(copy).name == "default"
