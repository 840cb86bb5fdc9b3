"""Exit codes as shells expect: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal)."""

from __future__ import annotations

import signal

import pytest

from orchestrator import cli
from orchestrator.errors import LabError
from orchestrator.run import labrun
from orchestrator.run.labrun import Interrupted

from .fuzz_support import project


def test_interrupted_exits_128_plus_the_signal():
    assert Interrupted("x").exit_code == 130
    assert Interrupted("x", signal.SIGINT).exit_code == 130
    assert Interrupted("x", signal.SIGTERM).exit_code == 143


def test_a_signal_inside_code_that_tolerates_lab_errors_still_stops_the_run():
    """The handler raises wherever the run is; a probe's ``except LabError`` must not eat it."""
    def probe_that_tolerates_failures() -> None:
        try:
            labrun._raise_interrupt(signal.SIGTERM, None)
        except LabError:
            pass

    with pytest.raises(Interrupted) as caught:
        probe_that_tolerates_failures()
    assert caught.value.exit_code == 143


@pytest.mark.root
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_exits_with_the_signal_code(capsys, sig, code):
    def interrupted(*_args, **_kw):
        raise Interrupted(f"interrupted by {sig.name}; cleaned up", sig)

    with project():  # replaces run_plan, and puts the original back on leaving
        labrun.run_plan = interrupted
        assert cli.main(["run", "-b", "netns", "-s", "idle", "-n", "100"]) == code
    assert labrun.run_plan.__name__ == "run_plan"
    assert capsys.readouterr().err.endswith(f"tcplab: error: interrupted by {sig.name}; "
                                            "cleaned up\n")


def test_ctrl_c_outside_a_run_exits_130(monkeypatch, capsys):
    def ctrl_c(*_args, **_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_scenarios", ctrl_c)
    monkeypatch.setitem(cli.COMMANDS, "scenarios", ctrl_c)
    assert cli.main(["scenarios"]) == 130
    assert capsys.readouterr().err == "tcplab: interrupted\n"


def test_help_lists_the_exit_codes(capsys):
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        out = capsys.readouterr().out
        assert "130  interrupted by Ctrl-C (SIGINT)" in out
        assert "143  stopped by SIGTERM" in out
