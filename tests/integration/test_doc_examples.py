"""Every command example of README.md and docs/*.md, followed literally at small N, so the
docs cannot drift from the program (about 3-5 minutes on 2 cores: 11 small netns runs,
plus the wait for the machine-wide lock when other runs hold it).

The examples are found in the pages' code blocks (lines starting with ``make`` or
``.venv/bin/tcplab``); each one is either run here or named in ``ELSEWHERE`` with the test
that covers it. A new example in the docs fails ``test_every_example_is_accounted_for``
until it is added to one or the other. Changes to the literal command, all for time:
``N`` is small (``N=100000`` becomes ``N=400``), runs use the netns backend (``BACKEND``
from the environment; the docker backend is tested in test_docker_*.py), queue for the
lock and write their results into a temporary directory (``ARGS="--wait ... --results
..."``); placeholders such as ``RUN_A`` or ``<their-run>`` name runs made just before.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for network namespaces")]

PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]

#: Examples not run here, each with the test that follows it.
ELSEWHERE = {
    "make test": "the suite itself",
    "make wheel": "tests/integration/test_wheel.py",
    "make lab SCENARIO=pingpong": "tests/integration/test_netns_more_scenarios.py (the page's own YAML)",
    'make lab SCENARIO=idle KERNELS="6.1 host" N=5000': "tests/integration/test_vm_backend.py",
    'make lab SCENARIO=idle KERNELS="6.1 6.12 host"': "tests/integration/test_vm_backend.py",
    "make lab SCENARIO=timewait BACKEND=vm KERNELS=6.12 N=4000":
        "tests/integration/test_vm_kernels.py (opt-in: this very command)",
    'make lab SCENARIO=s2c KERNELS="5.10 6.1 6.12 6.16 6.18 7 host" N=2000':
        "run once for docs/kernels.md (11 min); tests/unit/test_kernel_sweep.py renders its "
        "report, tests/integration/test_report_browser.py draws it",
    'make lab SCENARIO=idle KERNELS="5.10 6.1 6.12 6.16 6.18 7 host" N=2000':
        "run for docs/performance.md (~5 min cached); tests/integration/test_vm_backend.py "
        "runs a two-kernel sweep",
    "make lab SCENARIO=idle KERNELS=all N=2000":
        "tests/unit/test_vm_kernel_index.py resolves `all` against the captured index",
    ".venv/bin/tcplab run -s idle -b vm -n 2000 --kernels /path/to/vmlinuz":
        "tests/integration/test_vm_backend.py",
    ".venv/bin/tcplab run --bundle idle.tar.gz [-b docker] [-n 100000] ...":
        "a syntax summary; README's literal form runs here",
    ".venv/bin/tcplab compare results/<run-a> results/<run-b> [--format table|markdown|json|html] [-o FILE]":
        "a syntax summary; README's literal form runs here",
    ".venv/bin/tcplab import alice-idle.tar.gz": "tests/unit/test_library.py (a colleague's bundle)",
    ".venv/bin/tcplab import bob.tar.gz --origin bob --results lab-results":
        "tests/unit/test_library.py (a colleague's bundle)",
    "make site": "tests/unit/test_site_build.py, tests/integration/test_site_browser.py",
    "make site RESULTS=results SITE=site": "tests/unit/test_site_build.py",
    ".venv/bin/tcplab site": "tests/unit/test_site_build.py, tests/integration/test_site_browser.py",
    ".venv/bin/tcplab site lab-results -o /srv/www/tcplab": "tests/unit/test_site_build.py",
    ".venv/bin/tcplab runs other/results --origin alice --format json":
        "tests/unit/test_library.py (imported runs)",
    ".venv/bin/tcplab doctor": "tests/integration/test_wheel.py (doctor from /)",
    ".venv/bin/tcplab run --scenario s2c -n 2000 --bytes 65536 --backend netns \\":
        "tests/unit/test_compare.py (the runs it made, stored in tests/data/repeats)",
    ".venv/bin/tcplab compare tests/data/repeats/": "tests/unit/test_compare.py",
    ".venv/bin/tcplab topology --clients 4 --router nat": "tests/unit/test_topology.py",
    ".venv/bin/tcplab run -s idle -n 10000 --clients 4 --router nat":
        "tests/integration/test_topologies.py (4 x 2,500 through NAT)",
    "make lab SCENARIO=idle N=10000 CLIENTS=4 ROUTER=nat": "tests/integration/test_topologies.py",
    'make lab SCENARIO=bulk LINK="delay=25ms rate=40mbit"':
        "tests/integration/test_conditions.py (the same link, a scenario that keeps the link busy)",
    '.venv/bin/tcplab run -s bulk --link "delay=25ms jitter=2ms loss=0.5% rate=200mbit '
    'queue=2000"': "tests/unit/test_conditions.py (every key parsed), test_conditions.py (runs)",
    '.venv/bin/tcplab run -b netns -s tests/integration/scenarios/link-bulk.yaml -p '
    'tests/integration/profiles/reno.yaml --link "delay=25ms rate=40mbit"':
        "tests/integration/test_conditions.py (this very run, with its bounds)",
    '.venv/bin/tcplab run -b vm --kernels 6.1 -s tests/integration/scenarios/link-xcheck.yaml '
    '-p tests/integration/profiles/reno.yaml --link "delay=50ms rate=5mbit" --link-engine netem '
    '--stall 600': "tests/integration/test_vm_link_crosscheck.py (opt-in: this very pair)",
    '.venv/bin/tcplab run -b vm --kernels 6.1 -s tests/integration/scenarios/link-xcheck.yaml '
    '-p tests/integration/profiles/reno.yaml --link "delay=50ms rate=5mbit" --link-engine '
    'fallback --stall 600': "tests/integration/test_vm_link_crosscheck.py (opt-in: this very pair)",
    '.venv/bin/tcplab run -s bulk --link "delay=25ms rate=40mbit" --link-engine fallback':
        "tests/integration/test_conditions.py (the fallback is what runs on this kernel)",
    ".venv/bin/tcplab run -s idle -n 10000 -b netns": "tests/integration/test_topologies.py",
    ".venv/bin/tcplab run -s idle -n 10000 -b netns --clients 4 --router plain":
        "tests/integration/test_topologies.py",
    ".venv/bin/tcplab run -s idle -n 10000 -b netns --clients 4 --router nat":
        "tests/integration/test_topologies.py",
    ".venv/bin/tcplab run -s idle -b netns -n 2000000 --clients 4":
        "run once (4,000,000 sockets, ~10 min, 15 GB); tests/integration/test_topologies.py "
        "runs the same topology at N=10,000",
    ".venv/bin/tcplab run -s idle -b netns -n 1000000 --clients 4 --router nat \\":
        "run once (~25 min with the lock wait); tests/integration/test_topologies.py runs the "
        "NAT topology at N=10,000",
    ".venv/bin/tcplab run -s idle -b vm --kernels 6.1 -n 400 --clients 2 --router nat":
        "tests/integration/test_vm_topology.py (opt-in: four VMs)",
    ".venv/bin/tcplab run -s idle -b vm --kernels 6.1 -n 400 --clients 2 --router plain":
        "run once (70 s, four VMs); tests/unit/test_vm_topology.py checks its routes and "
        "that nothing masquerades",
    'make lab SCENARIO=bulk SWEEP="net.ipv4.tcp_rmem=4096 131072 {1M,4M,32M}" REPEAT=3':
        "tests/integration/test_netns_sweep.py (a tcp_rmem sweep at small N)",
    '.venv/bin/tcplab run -s s2c --bytes 65536 --sweep "net.core.somaxconn=128,4096"':
        "tests/integration/test_netns_sweep.py",
    "make lab SCENARIO=pressure PROFILE=small-tcp-mem ARGS=--allow-host-sysctls":
        "tests/integration/test_netns_pressure.py",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 5 --link "delay=10ms rate=100mbit" '
    '--repeat 5': "run once for docs/conditions.md (Determinism); tests/unit/test_repeats.py "
                  "renders the --repeat table",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 5 -p tests/integration/profiles/reno.yaml '
    '--link "delay=10ms rate=100mbit" --repeat 5': "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s slow-readers --link "delay=10ms rate=200mbit" --repeat 5':
        "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s bulk --bytes 33554432 --link "delay=10ms rate=50mbit" '
    '--repeat 5': "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s bulk --link "delay=10ms rate=200mbit" --repeat 5':
        "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 10 -p fixed-buffers --link '
    '"delay=10ms rate=100mbit" --repeat 5': "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s tests/integration/scenarios/slow-readers-256k.yaml -p '
    'fixed-buffers --link "delay=10ms rate=100mbit" --repeat 5':
        "run once for docs/conditions.md (Determinism)",
    '.venv/bin/tcplab run -b netns -s bulk -n 4 --bytes 33554432 -p fixed-buffers --link '
    '"delay=10ms rate=50mbit" --repeat 5': "run once for docs/conditions.md (Determinism)",
    ".venv/bin/tcplab run -b netns -s pressure -p small-tcp-mem --allow-host-sysctls":
        "tests/integration/test_netns_pressure.py (the same run, tcp_mem restored)",
    ".venv/bin/tcplab run -b vm -s pressure -n 400 -p small-tcp-mem":
        "tests/integration/test_vm_backend.py (opt-in: the same run in TCG VMs)",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 16 --bytes 25165824 -p default '
    '--sweep "delay=0ms,5ms,25ms,50ms"':
        "run for docs/conditions.md's RTT tables (~10 min each); "
        "tests/integration/test_netns_sweep.py runs a link sweep with loss at small N",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 16 --bytes 25165824 -p default '
    '--link "loss=1%" --sweep "delay=0ms,5ms,25ms,50ms"': "the same",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 16 --bytes 25165824 -p large-buffers '
    '--sweep "delay=0ms,5ms,25ms,50ms"': "the same",
    '.venv/bin/tcplab run -b netns -s slow-readers -n 16 --bytes 25165824 -p large-buffers '
    '--link "loss=1%" --sweep "delay=0ms,5ms,25ms,50ms"': "the same",
}

#: Read-only examples, run on a copy of tests/data/results (no root, seconds).
READ_ONLY = [
    ".venv/bin/tcplab runs --scenario idle --kernel 6.1 --since 2026-11-20",
    ".venv/bin/tcplab runs",
    ".venv/bin/tcplab runs --scenario idle,c2s --backend docker",
    ".venv/bin/tcplab runs --kernel 6.1 --since 2026-11-20 --until '2026-11-30 12:00'",
    ".venv/bin/tcplab runs --status incomplete --status failed",
    ".venv/bin/tcplab runs --scenario c2s",
]

#: The examples run here, in this order (later ones use the runs of earlier ones).
RUN_HERE = [
    "make lab SCENARIO=s2c",
    "make lab SCENARIO=idle",
    'make lab SCENARIO=s2c BYTES=65536 PROFILES="default small-buffers"',
    "make lab SCENARIO=idle N=100000 LEVELS=4",
    "make lab SCENARIO=idle REPEAT=5",
    ".venv/bin/tcplab compare results/RUN_A results/RUN_B --format markdown",
    ".venv/bin/tcplab report results/<run> --format html",
    ".venv/bin/tcplab report results/<run>",
    ".venv/bin/tcplab compare results/",
    ".venv/bin/tcplab export results/20261126-012955-idle-default -o idle.tar.gz",
    ".venv/bin/tcplab run --bundle idle.tar.gz",
    ".venv/bin/tcplab compare results/<their-run> idle.tar.gz",
]


def examples() -> list[str]:
    """Commands in the pages' code blocks (fenced, or indented by four spaces)."""
    found: list[str] = []
    for page in PAGES:
        fenced = False
        for line in (ROOT / page).read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced
                continue
            text = line if fenced else (line[4:] if line.startswith("    ") else "")
            text = text.strip().removeprefix("$ ")
            if re.match(r"(make |\.venv/bin/tcplab )", text):
                command = text.split("  #")[0].strip()
                if command not in found:
                    found.append(command)
    return found


def test_every_example_is_accounted_for() -> None:
    assert sorted(examples()) == sorted([*ELSEWHERE, *RUN_HERE, *READ_ONLY])


def test_no_example_assumes_tcplab_on_path() -> None:
    """A checkout's tcplab is .venv/bin/tcplab: an example saying `tcplab ...` fails there."""
    for page in PAGES:
        for line in (ROOT / page).read_text().splitlines():
            assert not re.match(r"(    |\$ )tcplab (run|report|compare|export|runs|import|site|"
                                r"wipe|doctor|images|profiles|scenarios)\b", line), (page, line)


def test_read_only_examples(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "tests/data/results", tmp_path / "results",
                    ignore=shutil.ignore_patterns("golden", "*.py", "*.md"))
    for example in READ_ONLY:
        command = example.replace(".venv/bin/tcplab", str(ROOT / ".venv/bin/tcplab"))
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{example}\n{proc.stdout}\n{proc.stderr}"


def test_examples_run_as_written(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "BACKEND": os.environ.get("TCPLAB_DOC_BACKEND", "netns"),
           "TCPLAB_STATE_DIR": str(tmp_path / "state")}
    runs: list[str] = []

    def sh(command: str, cwd: Path) -> str:
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=1800)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def new_runs() -> list[str]:
        made = sorted(p.name for p in results.iterdir() if p.is_dir()) if results.exists() else []
        fresh = [r for r in made if r not in runs]
        runs.extend(fresh)
        return fresh

    outputs: dict[str, str] = {}
    for example in RUN_HERE:
        if example.startswith("make lab"):
            command = re.sub(r"\bN=\d+", "N=400", example)
            if " N=" not in command:
                command += " N=200"
            command = command.replace("make lab", f"make -C {ROOT} --no-print-directory lab")
            command += f' ARGS="--wait 1500 --results {results}"'
            outputs[example] = sh(command, tmp_path)
            assert new_runs(), example
            continue
        idle = [r for r in runs if "-idle-" in r]
        command = (example.replace(".venv/bin/tcplab", str(ROOT / ".venv/bin/tcplab"))
                   .replace("RUN_A", idle[0]).replace("RUN_B", idle[1])
                   .replace("<run>", runs[0])
                   .replace("20261126-012955-idle-default", idle[0]))
        if "--bundle" in command:
            command += f" --wait 1500 --results {results}"
        if "<their-run>" in command:
            command = command.replace("<their-run>", runs[-1])
        outputs[example] = sh(command, tmp_path)
        new_runs()

    sample = outputs["make lab SCENARIO=idle"]
    assert "Kernel memory per connection (client + server ends, one kernel), bytes" in sample
    assert "Socket buffers per host" in sample and "report: " in sample
    assert "| total per connection (attributed)" in outputs[
        ".venv/bin/tcplab compare results/RUN_A results/RUN_B --format markdown"]
    assert (results / runs[0] / "report.html").is_file()
    assert (tmp_path / "idle.tar.gz").is_file()
    assert len([r for r in runs if "-idle-" in r]) == 1 + 1 + 5 + 1  # + the bundle's rerun
