"""Fuzzed command lines and bundles through the CLI, in-process (see fuzz_support).

Command lines: a subcommand (run, report, compare, export, scenarios, profiles; never
wipe, images or doctor, which act on the machine) with options and values drawn from
what users type, right and wrong. Bundles: a real bundle (``tcplab export`` of the
results in tests/data/results) with its manifest edited, members changed, added or
dropped, or its bytes cut or flipped, passed to ``run --bundle`` and ``compare``.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.bundle import export

from .fuzz_support import FUZZ, REPO, Project, project

pytestmark = pytest.mark.root  # sysctl classification (unshare --net), ip netns

DATA = REPO / "tests" / "data" / "results"
RUNS = sorted(p.name for p in DATA.iterdir() if (p / "result.json").is_file())


@pytest.fixture(scope="module")
def proj() -> Iterator[Project]:
    with project() as p:
        data = p.root.parent / "data"
        shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("golden", "*.py", "*.md"))
        export([data / RUNS[2], data / RUNS[3]], p.root.parent / "good.tar.gz", p.root.parent)
        yield p


# -- command lines -------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-5, 5), st.integers(-2**70, 2**70),
                    st.sampled_from(["1,000", "1_000", "10k", "0x10", "1e3", "", " ", "-0",
                                     "nan", "inf", "٣", "2000"])).map(str)
WORDS = st.one_of(
    st.sampled_from(["idle", "c2s", "s2c", "timewait", "synrecv", "orphan", "backlog", "bulk",
                     "default", "small-buffers", "lean-server", "nope", "../lab/default",
                     "netns", "docker", "ssh", "vm", "auto", "kvm", "ipv4", "ipv6", "epoll",
                     "blocking", "table", "markdown", "json", "html", "csv", "show", "6.1",
                     "host", "6.1 host", "6.1 6.1", "-", "--", "=", "results", "out/x.tar.gz",
                     "nowhere/file", "/dev/null", "/proc/self/status", "\x00", "é", "~"]),
    st.text(max_size=10))
VALUES = st.one_of(NUMBERS, WORDS)

OPTIONS = {
    "run": ["--scenario", "-s", "--profile", "-p", "--backend", "-b", "--kernels", "-n",
            "--connections", "--bytes", "--lab", "--allow-host-sysctls", "--stall", "--family",
            "--server", "--repeat", "--levels", "--per-worker", "--bundle", "--results"],
    "report": ["--format"],
    "compare": ["--format", "-o", "--output"],
    "export": ["-o", "--output"],
    "profiles": [],
    "scenarios": [],
}
FLAGS = {"--allow-host-sysctls"}


@st.composite
def command_line(draw: st.DrawFn, data: Path) -> list[str]:
    runs = st.sampled_from([str(data / r) for r in RUNS] + [str(data), str(data / "nope"),
                                                            str(data.parent / "good.tar.gz")])
    if draw(st.integers(0, 14)) == 0:
        return draw(st.lists(VALUES, max_size=4))
    command = draw(st.sampled_from([*OPTIONS, "wipes", "--version", "-h"]))
    argv = [command]
    if command not in OPTIONS:
        return argv + draw(st.lists(VALUES, max_size=2))
    if command in ("report", "compare", "export"):
        argv += draw(st.lists(st.one_of(runs, VALUES), min_size=0, max_size=3))
    if command == "profiles" and draw(st.booleans()):
        argv += ["show", *draw(st.lists(st.one_of(WORDS, st.just("default")), max_size=2))]
    for option in draw(st.lists(st.sampled_from(OPTIONS[command] or ["--help"]), max_size=5)):
        if option in FLAGS:
            argv.append(option)
        elif option == "--bundle":
            argv += [option, draw(runs)]
        elif option == "--results":
            argv += [option, draw(st.sampled_from(["results", "out/r"]))]
        else:
            argv += [option, draw(VALUES)]
    if command == "run" and draw(st.integers(0, 3)) > 0:  # mostly a scenario and netns
        argv += ["-s", draw(st.sampled_from(["idle", "c2s"])), "-b", "netns"]
    return argv


@FUZZ
@given(data=st.data())
def test_fuzz_command_line(proj: Project, data: st.DataObject) -> None:
    argv = data.draw(command_line(proj.root.parent / "data"))
    proj.run([a for a in argv if a != "--debug"])  # --debug shows tracebacks on purpose


# -- bundles -------------------------------------------------------------------------------------

def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]


def _pack(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info = tarfile.TarInfo(info.name) if isinstance(info, str) else info
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
              st.text(max_size=12), st.sampled_from(["netns", "vm", "idle", "default", "../x",
                                                     "results/x", "/etc/passwd", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _set(doc: dict, path: list[str], value: object) -> None:
    for key in path[:-1]:
        child = doc.get(key)
        if not isinstance(child, dict):
            child = doc[key] = {}
        doc = child
    doc[path[-1]] = value


MANIFEST_PATHS = [["rerun", k] for k in ("backend", "connections", "bytes", "family",
                                         "server_model", "levels")] + [
    ["setup", "profile", "name"], ["setup", "scenario", "name"], ["setup", "from_run"],
    ["schema"], ["runs"], ["files"], ["setup"], ["rerun"], ["tcplab_version"]]


@st.composite
def bundle_bytes(draw: st.DrawFn, good: Path) -> bytes:
    members = _members(good)
    kind = draw(st.sampled_from(["manifest", "manifest", "member", "drop", "add", "bytes"]))
    if kind == "bytes":
        raw = bytearray(good.read_bytes())
        if draw(st.booleans()):
            return bytes(raw[:draw(st.integers(0, len(raw)))])
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= draw(st.integers(1, 255))
        return bytes(raw)
    index = next(i for i, (m, _) in enumerate(members) if m.name == "bundle.json")
    if kind == "manifest":
        manifest = json.loads(members[index][1])
        for _ in range(draw(st.integers(1, 3))):
            _set(manifest, draw(st.sampled_from(MANIFEST_PATHS)), draw(JSON_VALUES))
        members[index] = (members[index][0], json.dumps(manifest).encode())
    elif kind == "member":
        i = draw(st.integers(0, len(members) - 1))
        members[i] = (members[i][0], draw(st.binary(max_size=64)))
    elif kind == "drop":
        del members[draw(st.integers(0, len(members) - 1))]
    else:
        name = draw(st.sampled_from(["../escape", "/abs", "setup/x.yaml", "results/new/a",
                                     "bundle.json", "setup/id_rsa", "a" * 300]))
        members.append((tarfile.TarInfo(name), draw(st.binary(max_size=64))))
    return _pack(members)


@FUZZ
@given(data=st.data())
def test_fuzz_bundle(proj: Project, data: st.DataObject) -> None:
    raw = data.draw(bundle_bytes(proj.root.parent / "good.tar.gz"))
    command = data.draw(st.sampled_from([["run", "-b", "netns", "-n", "100", "--bundle"],
                                         ["compare"]]))
    path = proj.write("in/b.tar.gz", raw)
    proj.run([*command, str(path)], inputs=(path, path.parent))


def test_huge_n_is_refused_without_building_the_ports(proj: Project) -> None:
    """Found by the fuzzer: -n 2**70 built a list of 4 * 10**16 server ports first."""
    outcome = proj.run(["run", "-b", "netns", "-s", "idle", "-n", str(10**30)])
    assert outcome.code == 2
    assert "connections need 31001984126984126984126985 server ports" in outcome.err


def test_the_good_bundle_is_accepted(proj: Project) -> None:
    good = proj.root.parent / "good.tar.gz"
    assert proj.run(["run", "-b", "netns", "-n", "100", "--bundle", str(good)]).accepted
    assert proj.run(["compare", str(good)]).accepted
