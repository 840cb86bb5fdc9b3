"""Fuzzed lab files, profiles and scenarios through ``tcplab run`` (see fuzz_support).

Each document is YAML text built from a valid one with some values replaced by
generated ones: YAML 1.1 traps (``6.10``, ``060``, ``on``, ``yes``, ``1_000``, ``1:30``,
dates), other types, garbage, deleted and extra keys; or arbitrary text. Every one must be
accepted (exit 0) or refused with one line and exit 2, creating nothing. The traps have
their own exact tests at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .fuzz_support import FUZZ, Project, project

pytestmark = pytest.mark.root  # sysctl classification (unshare --net), ip netns

#: Scalars as a user might type them, YAML 1.1 traps first.
TRAPS = ["6.10", "5.10", "060", "0777", "0o17", "0x1F", "0b101", "1_000", "1:30", "on", "off",
         "yes", "no", "Yes", "ON", "y", "n", "~", "null", ".inf", "-.inf", ".nan", "1e3",
         "2026-01-01", "true", "false", "'060'", '"6.10"', '"on"', "''", "[]", "{}",
         "[1, 2]", "{a: 1}", "!!binary aGVsbG8=", "!!python/object:os.system x", "&a 1",
         "*nowhere", "|\n  text", "-1", "0", "1", "65535", "70000", "99999999999999999999",
         "4096 16384 65536", '"4096 16384 65536"', '"8192 4096 1"', "a b c", "déjà",
         "\t", "@at", "`tick`", "%percent", "null\x00byte"]

scalar = st.one_of(
    st.sampled_from(TRAPS),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.from_regex(r"[A-Za-z0-9_.\-/ :]{0,16}", fullmatch=True),
)


def maybe(original: str) -> st.SearchStrategy[str]:
    """The original value most of the time, a generated one otherwise."""
    return st.one_of(st.just(original), st.just(original), scalar)


def lines(key: str, value: str | None, indent: str) -> Iterator[str]:
    if value is not None:
        yield f"{indent}{key}: {value}"


@st.composite
def lab_file(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=200))
    v = {k: draw(st.one_of(maybe(orig), st.none())) if draw(st.booleans()) else orig
         for k, orig in [("name", "mine"), ("backend", "netns"), ("profile", "default"),
                         ("subnet", "198.18.0.0/24"), ("srole", "server"),
                         ("saddr", "198.18.0.2"), ("crole", "client"), ("caddr", "198.18.0.3"),
                         ("somaxconn", "65535"), ("range", '"1024 65535"')]}
    extra_key = draw(st.sampled_from(["", "kernel", "cmdline", "address6", "vm", "ssh",
                                      "hostz", "on", "060"]))
    extra_val = draw(scalar)
    sys_key = draw(st.sampled_from(["net.core.somaxconn", "net.ipv4.tcp_fin_timeout",
                                    "net.ipv4.tcp_rmem", "net.ipv4.tcp_mem", "kernel.pid_max",
                                    "net.ipv4.nope", "on", "6.10"]))
    out = [*lines("name", v["name"], ""), "description: fuzzed",
           *lines("backend", v["backend"], ""), *lines("profile", v["profile"], ""),
           "network:", *lines("subnet", v["subnet"], "  "), "hosts:",
           "  server:", *lines("role", v["srole"], "    "), *lines("address", v["saddr"], "    "),
           "    sysctls:", *lines(sys_key, v["somaxconn"], "      "),
           "  client:", *lines("role", v["crole"], "    "), *lines("address", v["caddr"], "    "),
           *lines(extra_key, extra_val if extra_key else None, "    "),
           "    sysctls:", *lines("net.ipv4.ip_local_port_range", v["range"], "      ")]
    return "\n".join(out) + "\n"


SYSCTLS = ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_fin_timeout",
           "net.core.somaxconn", "net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_tw_reuse",
           "net.ipv4.tcp_mem", "net.ipv4.tcp_sack", "net.ipv4.ip_local_port_range",
           "net.core.rmem_max", "net.ipv4.tcp_nonexistent", "kernel.pid_max", "net..x", "on",
           "060", '"6.10"']


@st.composite
def profile_file(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=200))
    out = []
    if draw(st.booleans()):
        out.append(f"description: {draw(maybe('fuzzed'))}")
    if draw(st.booleans()):
        names = draw(st.lists(st.one_of(st.sampled_from(["default", "small-buffers", "nope",
                                                          "../default"]), scalar), max_size=3))
        out.append(f"include: [{', '.join(names)}]")
    if draw(st.integers(0, 9)) == 0:
        out.append(f"sysctls: {draw(scalar)}")
    else:
        out.append("sysctls:")
        for key in draw(st.lists(st.sampled_from(SYSCTLS), max_size=4, unique=True)):
            out.append(f"  {key}: {draw(scalar)}")
    if draw(st.integers(0, 9)) == 0:
        out.append(f"{draw(st.sampled_from(['sysctl', 'extra', 'on']))}: {draw(scalar)}")
    return "\n".join(out) + "\n"


STEP_KEYS = ["side", "bytes", "background", "rate", "accept", "name", "expect", "x"]


@st.composite
def step(draw: st.DrawFn) -> str:
    action = draw(st.sampled_from(["connect", "accept", "send", "read", "join", "close", "wait",
                                   "block_acks", "checkpoint", "shutdown", "on", "060"]))
    form = draw(st.integers(0, 3))
    if form == 0:
        return f"  - {action}"
    if form == 1:
        return f"  - {action}: {draw(scalar)}"
    body = ", ".join(f"{k}: {draw(scalar)}"
                     for k in draw(st.lists(st.sampled_from(STEP_KEYS), max_size=3, unique=True)))
    return f"  - {action}: {{{body}}}"


@st.composite
def scenario_file(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=200))
    out = [f"description: {draw(maybe('fuzzed'))}",
           f"connections: {draw(st.one_of(st.sampled_from(['100', '2000']), scalar))}",
           f"bytes: {draw(st.one_of(st.sampled_from(['0', '13']), scalar))}", "steps:"]
    valid = ["  - checkpoint: baseline", "  - connect: {}", "  - checkpoint: established",
             "  - send: client", "  - checkpoint: sent", "  - close: client",
             "  - checkpoint: closed"]
    steps = list(valid)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(steps)))
        if draw(st.booleans()) and steps:
            steps[min(at, len(steps) - 1)] = draw(step())
        else:
            steps.insert(at, draw(step()))
    return "\n".join(out + steps) + "\n"


@pytest.fixture(scope="module")
def proj() -> Iterator[Project]:
    with project() as p:
        yield p


def _run(proj: Project, argv: list[str], rel: str, text: str) -> None:
    path = proj.write(rel, text)
    proj.run(["run", "-b", "netns", "-n", "100", *[a.format(path=path) for a in argv]],
             inputs=(path, *path.parents))


@FUZZ
@given(text=lab_file())
def test_fuzz_lab_file(proj: Project, text: str) -> None:
    _run(proj, ["-s", "idle", "--lab", "{path}"], "in/lab.yaml", text)


@FUZZ
@given(text=profile_file())
def test_fuzz_profile(proj: Project, text: str) -> None:
    _run(proj, ["-s", "idle", "-p", "{path}"], "in/profile.yaml", text)


@FUZZ
@given(text=scenario_file())
def test_fuzz_scenario(proj: Project, text: str) -> None:
    _run(proj, ["-s", "{path}"], "in/fuzzed.yaml", text)


# -- the YAML 1.1 traps, exactly ----------------------------------------------------------------

def _message(proj: Project, argv: list[str], rel: str, text: str) -> str:
    path = proj.write(rel, text)
    outcome = proj.run(["run", "-b", "netns", "-n", "100", *argv, str(path)],
                       inputs=(path, *path.parents))
    assert outcome.code == 2, outcome
    return outcome.err.strip().removeprefix("tcplab: error: ").replace(str(path), "FILE")


@pytest.mark.parametrize("value,message", [
    ("060", "FILE:2: YAML 1.1 reads 060 as the octal number 48; write the number without "
            "the leading 0, or quote it (\"060\") to keep the text"),
    ("1:30", "FILE:2: YAML 1.1 reads 1:30 as the number 90 (base 60); write 90, or quote it "
             "(\"1:30\") to keep the text"),
    ("on", "FILE:2: YAML 1.1 reads on as true; write true or false, or quote it (\"on\") to "
           "keep the text"),
    ("yes", "FILE:2: YAML 1.1 reads yes as true; write true or false, or quote it (\"yes\") "
            "to keep the text"),
], ids=["060", "1:30", "on", "yes"])
def test_yaml_traps_in_sysctl_values_are_refused(proj: Project, value: str, message: str) -> None:
    text = f"sysctls:\n  net.ipv4.tcp_fin_timeout: {value}\n"
    assert _message(proj, ["-s", "idle", "-p"], "in/p.yaml", text) == message


def test_float_sysctl_value_names_what_the_user_wrote(proj: Project) -> None:
    text = "sysctls:\n  net.ipv4.tcp_fin_timeout: 6.10\n"
    assert _message(proj, ["-s", "idle", "-p"], "in/p.yaml", text) == (
        'FILE: sysctls."net.ipv4.tcp_fin_timeout": expected an integer or a string of '
        "integers, got 6.10 (YAML reads it as the number 6.1; quote it to keep the text)")


def test_numeric_profile_name_in_lab_names_what_the_user_wrote(proj: Project) -> None:
    lab = (proj.root / "lab" / "default.yaml").read_text().replace(
        "profile: default", "profile: 6.10")
    assert _message(proj, ["-s", "idle", "--lab"], "in/lab.yaml", lab) == (
        "FILE: profile: expected a non-empty string, got 6.10 (YAML reads it as the number "
        "6.1; quote it to keep the text)")


def test_quoted_values_keep_the_text(proj: Project) -> None:
    """Quoted, the same values are text: the sysctl check sees "060", not 48."""
    from orchestrator.yamlfile import load_yaml

    path = proj.write("in/q.yaml", 'a: "060"\nb: "6.10"\nc: "on"\nd: 60\ne: 6.5\nf: true\n')
    try:
        assert load_yaml(path) == {"a": "060", "b": "6.10", "c": "on", "d": 60, "e": 6.5,
                                   "f": True}
    finally:
        proj.clean()


def test_scenario_accept_yes_is_refused(proj: Project) -> None:
    text = ("connections: 10\nsteps:\n  - checkpoint: baseline\n  - connect: {accept: yes}\n"
            "  - checkpoint: x\n")
    message = _message(proj, ["-s"], "in/s.yaml", text)
    assert re.fullmatch(r"FILE:4: YAML 1\.1 reads yes as true; .*", message), message
