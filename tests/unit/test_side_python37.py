"""Side scripts run on lab hosts with python3 >= 3.7 (standard library only): their syntax
parses as 3.7, they name no 3.8+ standard-library API, and the ssh preflight refuses an
older python3 by the version its probe reports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator import resources
from orchestrator.backends.sshhost.backend import check_python
from orchestrator.errors import InputError

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SIDE_FILES = sorted(SCENARIOS.glob("*.py"))

#: Standard-library names new in 3.8 or later, as they would be written in a side script.
NEWER_APIS = (r"functools\.cache\b", r"\bcached_property\b", r"math\.prod\b", r"math\.isqrt\b",
              r"math\.dist\b", r"\.removeprefix\(", r"\.removesuffix\(", r"\bshlex\.join\b",
              r"\bzoneinfo\b", r"\bgraphlib\b", r"statistics\.fmean\b", r"\bTypedDict\b",
              r"\bLiteral\b", r"\bFinal\b", r"\bProtocol\b", r"\bimportlib\.metadata\b",
              r"\bitertools\.pairwise\b", r"\bos\.pidfd_open\b", r"\bsys\.orig_argv\b",
              r"\bint\.bit_count\b", r"\.bit_count\(", r"\bstrict=", r"\bmultiprocessing\.shared_memory\b")


def test_the_side_files_are_the_ones_checked() -> None:
    names = {p.name for p in SIDE_FILES}
    assert {"side.py", "sockdiag.py"} | {f"{m}.py" for m in resources.SIDE_MODULES} <= names


@pytest.mark.parametrize("path", SIDE_FILES, ids=lambda p: p.name)
def test_parses_as_python_37(path: Path) -> None:
    """No walrus, positional-only parameters, parenthesised context managers, match ..."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 7))


@pytest.mark.parametrize("path", SIDE_FILES, ids=lambda p: p.name)
def test_no_newer_standard_library_names(path: Path) -> None:
    text = path.read_text()
    found = [pattern for pattern in NEWER_APIS if re.search(pattern, text)]
    assert found == []


@pytest.mark.parametrize("path", SIDE_FILES, ids=lambda p: p.name)
def test_annotations_are_never_evaluated(path: Path) -> None:
    """``list[int]`` or ``X | None`` in an annotation is fine on 3.7 only when annotations
    stay strings (PEP 563); outside annotations such subscripts would run."""
    tree = ast.parse(path.read_text())
    futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    uses = any(isinstance(n, (ast.AnnAssign, ast.arg)) and getattr(n, "annotation", None)
               for n in ast.walk(tree)) or any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns for n in ast.walk(tree))
    assert not uses or any(a.name == "annotations" for f in futures for a in f.names)
    # the program's loader, run before any of them, is 3.7 too
    ast.parse(resources.side_program(), feature_version=(3, 7))


def test_preflight_refuses_a_python_older_than_37() -> None:
    with pytest.raises(InputError) as exc:
        check_python("server (root@10.0.0.1)", {"python": "3.6.15", "python_version": [3, 6, 15]})
    assert str(exc.value) == ("server (root@10.0.0.1): python3 is 3.6.15, the side script "
                              "needs 3.7 or newer: install a newer python3 on that host")
    check_python("server", {"python": "3.7.0", "python_version": [3, 7, 0]})
    check_python("server", {"python": "3.12.1"})  # an older probe without the tuple


def oldest_python() -> str | None:
    """A Python 3.7 interpreter on this machine (pyenv), or $TCPLAB_OLDEST_PYTHON."""
    import glob
    import os

    found = os.environ.get("TCPLAB_OLDEST_PYTHON") or next(
        iter(sorted(glob.glob("/root/.pyenv/versions/3.7*/bin/python3.7"))), None)
    return found


def test_the_side_program_holds_connections_under_python_37(tmp_path: Path) -> None:
    """The program lab hosts get, under a real 3.7: 50 loopback connections, data both
    ways, then close (a run's steps, in one process pair)."""
    import json
    import socket
    import subprocess

    python = oldest_python()
    if python is None:
        pytest.skip("no Python 3.7 here (set TCPLAB_OLDEST_PYTHON); the syntax tests above "
                    "still hold")
    program = tmp_path / "side.py"
    program.write_text(resources.side_program())
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    def start(role: str) -> subprocess.Popen:
        proc = subprocess.Popen([python, str(program), "--run", "py37"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        send(proc, {"role": role, "address": "127.0.0.1", "peer": "127.0.0.1",
                    "shards": [[port, 50]], "stall": 10})
        assert json.loads(proc.stdout.readline())["hello"]["python"].startswith("3.7.")
        return proc

    def send(proc: subprocess.Popen, msg: dict) -> None:
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()

    def reply(proc: subprocess.Popen) -> dict:
        while True:
            line = json.loads(proc.stdout.readline())
            if "ok" in line:
                assert line["ok"], line
                return line

    server, client = start("server"), start("client")
    try:
        for msgs in ([{"op": "prepare"}] * 2, [{"op": "connect"}] * 2,
                     [{"op": "send", "bytes": 1000}, {"op": "read", "bytes": 1000}][::-1],
                     [{"op": "close"}] * 2):
            send(server, msgs[0])
            send(client, msgs[1])
            replies = reply(server), reply(client)
            if msgs[0]["op"] == "connect":
                assert [r["connections"] for r in replies] == [50, 50]
            if msgs[0]["op"] == "read":
                assert replies[0]["read"] == 50_000 and replies[1]["written"] == 50_000
    finally:
        for proc in (server, client):
            send(proc, {"op": "exit"})
            proc.wait(timeout=10)
