"""orchestrator.sysctls: value normalisation, existence checks, per-namespace classification."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import sysctls
from orchestrator.errors import InputError

WHERE = "lab/profiles/x.yaml"


def norm(name: str, value: object) -> str:
    return sysctls.normalize_value(name, value, WHERE)


def error(name: str, value: object) -> str:
    with pytest.raises(InputError) as info:
        norm(name, value)
    return str(info.value)


# --------------------------------------------------------------------------
# normalize_value: good values
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "want"), [
    ("net.ipv4.tcp_rmem", "4096 131072 33554432", "4096 131072 33554432"),
    ("net.ipv4.tcp_rmem", "  4096\t87380    6291456 ", "4096 87380 6291456"),
    ("net.ipv4.tcp_rmem", "4096 4096 4096", "4096 4096 4096"),  # equal is in order
    ("net.ipv4.tcp_wmem", "4096 16384 4194304", "4096 16384 4194304"),
    ("net.ipv4.tcp_mem", "287898 383866 575796", "287898 383866 575796"),
    ("net.ipv4.udp_mem", "0 0 0", "0 0 0"),
    ("net.ipv4.ip_local_port_range", "1024 65535", "1024 65535"),
    ("net.ipv4.ip_local_port_range", "32768 60999", "32768 60999"),
    ("net.ipv4.ip_local_port_range", "1 1", "1 1"),
    ("net.core.somaxconn", 65535, "65535"),
    ("net.core.somaxconn", "4096", "4096"),
    ("net.ipv4.tcp_fin_timeout", 0, "0"),
    ("net.ipv4.tcp_sack", "0", "0"),
    # written as the kernel prints it: plain decimal, no sign on zero, no leading zeros
    ("net.ipv4.tcp_rmem", "-0 1 2", "0 1 2"),
    ("net.ipv4.tcp_rmem", "04096 0131072 33554432", "4096 131072 33554432"),
    ("net.core.somaxconn", "007", "7"),
])
def test_normalize_good(name: str, value: object, want: str) -> None:
    assert norm(name, value) == want


# --------------------------------------------------------------------------
# normalize_value: bad values, with the exact messages
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "message"), [
    ("net.ipv4.tcp_rmem", "abc",
     'sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", got "abc"'),
    ("net.ipv4.tcp_rmem", "4096 131072",
     'sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", got "4096 131072"'),
    ("net.ipv4.tcp_rmem", 4096,
     'sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", got 4096'),
    ("net.ipv4.tcp_rmem", "4096 131072 33554432 1",
     ('sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", '
     'got "4096 131072 33554432 1"')),
    ("net.ipv4.tcp_rmem", "8192 4096 65536",
     'sysctls."net.ipv4.tcp_rmem": expected min <= default <= max, got "8192 4096 65536"'),
    ("net.ipv4.tcp_rmem", "4096 131072 65536",
     'sysctls."net.ipv4.tcp_rmem": expected min <= default <= max, got "4096 131072 65536"'),
    ("net.ipv4.tcp_wmem", "-1 16384 65536",
     'sysctls."net.ipv4.tcp_wmem": expected min <= default <= max, got "-1 16384 65536"'),
    ("net.ipv4.tcp_wmem", "4k 16k 64k",
     'sysctls."net.ipv4.tcp_wmem": expected three integers "min default max", got "4k 16k 64k"'),
    ("net.ipv4.tcp_mem", "300 200 100",
     'sysctls."net.ipv4.tcp_mem": expected low <= pressure <= high, got "300 200 100"'),
    ("net.ipv4.tcp_mem", "1.5 2 3",
     'sysctls."net.ipv4.tcp_mem": expected three integers "low pressure high", got "1.5 2 3"'),
    ("net.ipv4.ip_local_port_range", "70000 80000",
     ('sysctls."net.ipv4.ip_local_port_range": expected ports between 1 and 65535, '
     'got "70000 80000"')),
    ("net.ipv4.ip_local_port_range", "0 1000",
     'sysctls."net.ipv4.ip_local_port_range": expected ports between 1 and 65535, got "0 1000"'),
    ("net.ipv4.ip_local_port_range", "1024 65536",
     ('sysctls."net.ipv4.ip_local_port_range": expected ports between 1 and 65535, '
     'got "1024 65536"')),
    ("net.ipv4.ip_local_port_range", "60999 32768",
     'sysctls."net.ipv4.ip_local_port_range": expected low <= high, got "60999 32768"'),
    ("net.ipv4.ip_local_port_range", "1024",
     'sysctls."net.ipv4.ip_local_port_range": expected two integers "low high", got "1024"'),
    ("net.core.somaxconn", "lots",
     'sysctls."net.core.somaxconn": expected an integer or integers, got "lots"'),
    # the kernel refuses "1_000" and "+5" and reads "0x10" as hex: only plain decimals
    ("net.core.somaxconn", "1_000",
     'sysctls."net.core.somaxconn": expected an integer or integers, got "1_000"'),
    ("net.core.somaxconn", "+5",
     'sysctls."net.core.somaxconn": expected an integer or integers, got "+5"'),
    ("net.core.somaxconn", "0x10",
     'sysctls."net.core.somaxconn": expected an integer or integers, got "0x10"'),
    ("net.ipv4.tcp_rmem", "4_096 131_072 33_554_432",
     ('sysctls."net.ipv4.tcp_rmem": expected three integers "min default max", '
     'got "4_096 131_072 33_554_432"')),
    ("net.core.somaxconn", "",
     'sysctls."net.core.somaxconn": expected an integer or integers, got ""'),
    ("net.core.somaxconn", True,
     'sysctls."net.core.somaxconn": expected an integer or a string of integers, got True'),
    ("net.core.somaxconn", None,
     'sysctls."net.core.somaxconn": expected an integer or a string of integers, got None'),
    ("net.core.somaxconn", 1.5,
     'sysctls."net.core.somaxconn": expected an integer or a string of integers, got 1.5'),
    ("net.ipv4.tcp_rmem", [4096, 131072, 33554432],
     ('sysctls."net.ipv4.tcp_rmem": expected an integer or a string of integers, '
     'got [4096, 131072, 33554432]')),
])
def test_normalize_bad(name: str, value: object, message: str) -> None:
    assert error(name, value) == f"{WHERE}: {message}"


def test_normalize_names_the_keys_above_sysctls() -> None:
    with pytest.raises(InputError) as info:
        sysctls.normalize_value("net.ipv4.ip_local_port_range", "70000 80000", "lab.yaml",
                                ("hosts", "client"))
    assert str(info.value) == ('lab.yaml: hosts.client.sysctls."net.ipv4.ip_local_port_range": '
                               'expected ports between 1 and 65535, got "70000 80000"')


# --------------------------------------------------------------------------
# existence and paths
# --------------------------------------------------------------------------

def test_sysctl_path() -> None:
    assert sysctls.sysctl_path("net.ipv4.tcp_rmem") == Path("/proc/sys/net/ipv4/tcp_rmem")
    assert sysctls.sysctl_path("net.core.somaxconn", Path("/x")) == Path("/x/net/core/somaxconn")


@pytest.mark.parametrize("name", ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_mem",
                                  "net.ipv4.ip_local_port_range", "net.core.somaxconn"])
def test_check_exists_on_this_kernel(name: str) -> None:
    sysctls.check_exists(name, WHERE)  # no exception


@pytest.mark.parametrize("name", ["net.ipv4.tcp_nonexistent", "net.ipv4", "net.ipv4.tcp_rmem.x"])
def test_check_exists_refuses_what_the_kernel_lacks(name: str) -> None:
    with pytest.raises(InputError) as info:
        sysctls.check_exists(name, WHERE)
    assert str(info.value) == (
        f'{WHERE}: sysctls."{name}": this kernel ({os.uname().release}) has no such sysctl; '
        "check the spelling or remove it")


def test_check_exists_with_another_root(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "made_up").write_text("1\n")
    sysctls.check_exists("net.ipv4.made_up", WHERE, tmp_path)
    with pytest.raises(InputError):
        sysctls.check_exists("net.ipv4.tcp_rmem", WHERE, tmp_path)


def test_differs() -> None:
    live = {"net.ipv4.tcp_rmem": "4096\t131072\t33554432", "net.core.somaxconn": "4096"}
    wanted = {"net.ipv4.tcp_rmem": "4096 131072 33554432", "net.core.somaxconn": "65535",
              "net.ipv4.tcp_sack": "0"}
    assert sysctls.differs(live, wanted) == {
        "net.core.somaxconn": ("65535", "4096"),
        "net.ipv4.tcp_sack": ("0", "<missing>"),
    }
    assert sysctls.differs(live, {}) == {}


def test_read_host() -> None:
    value = sysctls.read_host("net.ipv4.tcp_mem")
    assert len(value.split()) == 3 and "\t" not in value
    assert value == norm("net.ipv4.tcp_mem", value)


# --------------------------------------------------------------------------
# classification on the running kernel (unshare --net: root)
# --------------------------------------------------------------------------

@pytest.mark.root
def test_classify_on_the_running_kernel() -> None:
    got = sysctls.classify(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_mem",
                            "net.core.somaxconn", "net.ipv4.ip_local_port_range",
                            "net.ipv4.udp_mem", "vm.overcommit_memory"])
    assert got == {
        "net.ipv4.tcp_rmem": "namespace",   # per namespace since 4.15
        "net.ipv4.tcp_wmem": "namespace",
        "net.ipv4.tcp_mem": "host",         # one TCP memory pool for the machine
        "net.core.somaxconn": "namespace",
        "net.ipv4.ip_local_port_range": "namespace",
        "net.ipv4.udp_mem": "host",
        "vm.overcommit_memory": "host",
    }


@pytest.mark.root
def test_namespace_defaults_are_a_fresh_namespace() -> None:
    defaults = sysctls.namespace_defaults()
    assert "net.ipv4.tcp_mem" not in defaults
    for name in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        value = defaults[name]
        assert norm(name, value) == value  # three ordered integers, as the kernel prints them
        assert value.split()[0] == "4096"
    low, high = (int(x) for x in defaults["net.ipv4.ip_local_port_range"].split())
    assert 1 <= low <= high <= 65535
    assert int(defaults["net.core.somaxconn"]) >= 128
    # every key is a net.* sysctl, named with dots
    assert all(k.startswith("net.") and "/" not in k for k in defaults)
