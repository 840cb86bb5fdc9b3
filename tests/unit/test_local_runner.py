"""LocalRunner (this machine, netns): ``python3`` is run as the interpreter it names,
resolved once, not through a version manager's shim at every call."""

from __future__ import annotations

import os
import shutil
import subprocess

from orchestrator.runner import LocalRunner, local_python3


def test_python3_is_the_interpreter_the_path_names() -> None:
    exe = local_python3()
    assert os.path.isabs(exe) and os.access(exe, os.X_OK)
    via_path = subprocess.run([shutil.which("python3") or "python3", "-c",
                               "import sys; print(sys.executable)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert exe == via_path  # the same interpreter, without the shim in front
    assert local_python3() is exe  # resolved once


def test_only_python3_in_first_place_is_replaced() -> None:
    ns = LocalRunner("server", ["ip", "netns", "exec", "tcplab-x-server"])
    assert ns._argv(["python3", "-c", "print(1)"]) == [
        "ip", "netns", "exec", "tcplab-x-server", local_python3(), "-c", "print(1)"]
    assert ns._argv(["cat", "python3"]) == ["ip", "netns", "exec", "tcplab-x-server", "cat",
                                           "python3"]
    assert LocalRunner("here")._argv("python3 -V") == ["sh", "-c", "python3 -V"]
    result = LocalRunner("here").run(["python3", "-c", "import sys; print(sys.version_info[0])"])
    assert result.stdout.strip() == "3"
