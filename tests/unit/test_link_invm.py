"""The fallback engine inside a VM (orchestrator/conditions/invm.py): its nftables rules,
its shell scripts (run for real with sh where no root is needed), the engine choice on vm,
and a session applying it through a recording runner (the real thing: the opt-in
cross-check in tests/integration/test_vm_backend.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.conditions import invm
from orchestrator.conditions.engines import FALLBACK_VM_MAX_RATE_BPS, choose
from orchestrator.conditions.parse import parse_text
from orchestrator.conditions.placement import attachments
from orchestrator.config import load_lab
from orchestrator.errors import InputError
from orchestrator.runner import Result
from orchestrator.topology import derive

from .test_conditions import _Backend, _session

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab" / "default.yaml"


def test_nft_rules_mirror_the_mangle_hooks() -> None:
    server_in, _client_in = attachments(load_lab(LAB))
    assert invm.nft_rules(server_in, "eth1", "ipv4") == (
        "add table ip tcplab_link\n"
        "add chain ip tcplab_link prerouting { type filter hook prerouting priority -150; "
        "policy accept; }\n"
        'add rule ip tcplab_link prerouting iifname "eth1" queue num 1\n')
    routed = attachments(derive(load_lab(LAB), 1, "plain"))
    text = invm.nft_rules(routed[1], "eth2", "ipv6")
    assert text.splitlines()[1].startswith("add chain inet tcplab_link forward { type filter "
                                           "hook forward priority -150;")
    assert text.splitlines()[2] == 'add rule inet tcplab_link forward oifname "eth2" queue num 2'
    assert invm.describe(routed[1], "eth2") == (
        "delay line inside the VM on NFQUEUE 2 (nft forward priority -150, oifname eth2)")


def test_scripts_are_valid_sh_and_carry_the_link() -> None:
    server_in = attachments(load_lab(LAB))[0]
    link = parse_text("delay=25ms loss=1% rate=10mbit").sized()
    start = invm.start_script(server_in, link, 1000)
    for text in (start, invm.stats_script(server_in, 42), invm.stop_script(42)):
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    assert ("setsid python3 /run/tcplab-link/delayline.py --queue-num 1 --delay-us 25000 "
            f"--limit {link.hold_limit()} --seed 1000 --no-gso --stats "
            "/run/tcplab-link/delayline-server-q1.stats.json --ready "
            "/run/tcplab-link/delayline-server-q1.ready --rate-bps 10000000 --loss 0.01 "
            ">/run/tcplab-link/delayline-server-q1.log") in start


def test_stop_script_ends_a_real_process() -> None:
    # an orphan, as the delay line is in the VM (its starting shell exits): init reaps it
    pid = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 </dev/null & echo $!"],
                             capture_output=True, text=True).stdout)
    try:
        started = time.monotonic()
        assert subprocess.run(["sh", "-c", invm.stop_script(pid)]).returncode == 0
        assert not Path(f"/proc/{pid}").exists()
        assert time.monotonic() - started < 5  # SIGTERM did it, not the KILL after 10 s
    finally:
        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)
    # a process already gone: nothing to do, exit 0
    assert subprocess.run(["sh", "-c", invm.stop_script(pid)]).returncode == 0


def test_choose_accepts_the_fallback_on_vm_within_its_rate() -> None:
    assert choose("fallback", parse_text("delay=50ms rate=5mbit"), "vm") == (
        "fallback", "forced (--link-engine fallback), inside the VMs")
    assert choose("auto", parse_text("delay=25ms"), "vm")[0] == "netem"
    too_fast = parse_text("delay=25ms rate=100mbit")
    assert too_fast.rate_bps > FALLBACK_VM_MAX_RATE_BPS
    with pytest.raises(InputError) as exc:
        choose("fallback", too_fast, "vm")
    assert "above what the delay line inside a VM" in str(exc.value)
    with pytest.raises(InputError) as exc:
        choose("fallback", parse_text("delay=25ms"), "ssh")
    assert str(exc.value).startswith("--link-engine fallback: the delay line runs on this "
                                     "machine's kernel or inside lab VMs")


class _VmRunner:
    """A VM host's runner: answers the address lookup and the start script (with a pid)
    and the stats script (with the delay line's JSON); records every command."""

    def __init__(self, host: str, modprobe_fails: bool = False) -> None:
        self.host, self.modprobe_fails, self.commands = host, modprobe_fails, []

    def run(self, cmd, *, check=True, timeout=60, stdin=None):
        self.commands.append((cmd, stdin))
        out, err, code = "", "", 0
        if isinstance(cmd, list) and cmd[:5] == ["ip", "-o", "addr", "show", "to"]:
            out = f"3: eth1    inet {cmd[5]}/24 scope global eth1\n"
        elif isinstance(cmd, list) and cmd[0] == "modprobe" and self.modprobe_fails:
            code, err = 1, "modprobe: FATAL: Module nft_queue not found"
        elif isinstance(cmd, str) and "setsid" in cmd:
            out = "4242\n"
        elif isinstance(cmd, str) and "kill -USR1" in cmd:
            out = '{"held_now": 3, "held_bytes_now": 4500, "released": 10, "lost": 1}'
        result = Result(str(cmd)[:60], self.host, code, out, err)
        return result.check() if check else result


class _VmBackend(_Backend):
    name = "vm"


def _vm_session(tmp_path: Path, modprobe_fails: bool = False):
    return _session(tmp_path, load_lab(LAB), engine="fallback", backend_cls=_VmBackend,
                    make_runner=lambda name: _VmRunner(name, modprobe_fails))


def test_a_vm_session_runs_the_delay_line_inside_each_vm(tmp_path: Path) -> None:
    session, hosts, record = _vm_session(tmp_path)
    session.apply()
    for name in ("server", "client"):
        cmds = hosts[name].runner.commands
        assert cmds[1][0] == ["modprobe", "-a", "nfnetlink_queue", "nft_queue"]
        assert cmds[2][0].startswith("mkdir -p /run/tcplab-link && printf '%s' ")
        assert "setsid python3 /run/tcplab-link/delayline.py" in cmds[3][0]
        assert cmds[4] == (["nft", "-f", "-"], invm.nft_rules(
            next(a for a in attachments(load_lab(LAB)) if a.host == name), "eth1", "ipv4"))
    assert [(a["host"], a["process"]["pid"], a["seed"]) for a in record["applied"]] == [
        ("server", 4242, 1000), ("client", 4242, 1001)]
    assert record["applied"][0]["how"].startswith("delay line inside the VM on NFQUEUE 1")
    assert not session.backend.journal.entries()  # nothing on this machine to undo
    stats = session.stats()
    assert stats["server ingress"] == {"held_packets": 3, "held_bytes": 4500, "dropped": 1,
                                       "sent_packets": 10, "lost": 1}
    session.close()
    assert hosts["client"].runner.commands[-1][0].startswith("kill -TERM 4242")


def test_a_vm_kernel_without_nfqueue_fails_the_run_naming_it(tmp_path: Path) -> None:
    from orchestrator.errors import RunError

    session, _hosts, _record = _vm_session(tmp_path, modprobe_fails=True)
    with pytest.raises(RunError) as exc:
        session.apply()
    assert str(exc.value) == (
        "server: `modprobe -a nfnetlink_queue nft_queue` failed (modprobe: FATAL: Module "
        "nft_queue not found): the delay line needs NFQUEUE support (nfnetlink_queue, "
        "nft_queue) in the VM's kernel; use --link-engine netem, or a kernel that has them")
