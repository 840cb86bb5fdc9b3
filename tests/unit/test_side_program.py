"""The one side program lab hosts get (orchestrator/resources.py side_program): it runs as
``python3 -c <text>`` and from a file anywhere, with no scenarios/ folder beside it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from orchestrator import resources

HELLO = {"role": "server", "address": "127.0.0.1", "peer": "127.0.0.1", "shards": [[0, 0]],
         "stall": 5, "sample": 0.05}
OPS = [{"op": "prepare"}, {"op": "timeline"}, {"op": "exit"}]


def talk(argv: list[str], cwd: Path) -> list[dict]:
    text = "".join(json.dumps(m) + "\n" for m in [HELLO, *OPS])
    out = subprocess.run(argv, input=text, capture_output=True, text=True, cwd=cwd,
                         timeout=30, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def check(replies: list[dict]) -> None:
    assert replies[0]["hello"]["role"] == "server"
    assert [r["op"] for r in replies[1:]] == ["prepare", "timeline"]
    assert all(r["ok"] for r in replies[1:]), replies
    assert replies[1]["workers"] == 0
    assert replies[2]["interval"] == 0.05


def test_the_program_embeds_every_side_module() -> None:
    tree = ast.parse(resources.side_program())
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    scenarios = resources.scenarios_dir()
    assert values["_TCPLAB_MAIN"] == (scenarios / "side.py").read_text()
    assert dict(values["_TCPLAB_MODULES"]) == {
        name: (scenarios / f"{name}.py").read_text() for name in resources.SIDE_MODULES}
    # every module side.py imports from beside it is embedded
    side_imports = {node.module for node in ast.parse(values["_TCPLAB_MAIN"]).body
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("side")}
    assert side_imports == set(resources.SIDE_MODULES)


def test_the_program_runs_with_python_c(tmp_path: Path) -> None:
    check(talk([sys.executable, "-c", resources.side_program(), "--run", "t1"], tmp_path))


def test_the_program_runs_from_a_file_alone(tmp_path: Path) -> None:
    program = tmp_path / "side.py"
    program.write_text(resources.side_program())
    check(talk([sys.executable, str(program), "--run", "t2"], tmp_path))


def test_side_py_still_runs_from_the_checkout(tmp_path: Path) -> None:
    check(talk([sys.executable, str(resources.side_script()), "--run", "t3"], tmp_path))
