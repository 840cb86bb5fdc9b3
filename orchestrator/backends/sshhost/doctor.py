"""``tcplab doctor --lab FILE``: are the ssh hosts of a lab file ready? One line per check.

Per host, in order (a failed check ends that host's list: the next ones cannot be told):
sshd reachable, the key accepted, python3 (3.7 or newer, for the side script), root or
passwordless sudo, /proc/slabinfo readable, the lab address configured there. Each failure
says the fix. Nothing is changed on the hosts (the same probe as a run's preflight).
"""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

from ...config import load_lab
from ...doctor import Check
from ...errors import LabError
from .backend import OLDEST_PYTHON, PROBE
from .transport import HostRunner, Target


def _unreachable(exc: OSError, target: Target) -> str:
    if isinstance(exc, socket.timeout):
        return f"no answer within 5 s at {target.address}:{target.port}"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route to {target.address} (nothing answers there)"
    if exc.errno == errno.ECONNREFUSED:
        return f"connection refused at {target.address}:{target.port} (nothing listens there)"
    return f"{target.address}:{target.port}: {exc.strerror or exc}"


def host_checks(lab_path: Path) -> list[Check]:
    """The checks of every ssh host of the lab file (none for a lab without ssh hosts)."""
    lab = load_lab(Path(lab_path))
    out: list[Check] = []
    for spec in lab.hosts:
        if spec.ssh is not None:
            out += _checks(spec.name, Target.of(spec.ssh), spec.address, lab.path)
    if not out:
        out.append(Check(f"{lab.path}", None, f"backend {lab.backend}: no ssh hosts to check"))
    return out


def _checks(name: str, target: Target, address: str, lab_path: Path) -> list[Check]:
    where = f"hosts.{name}.ssh in {lab_path}"
    try:
        socket.create_connection((target.address, target.port), timeout=5).close()
    except OSError as exc:
        return [Check(f"{name}: reachable", False, _unreachable(exc, target),
                      f"start the host and its sshd, or fix {where}")]
    checks = [Check(f"{name}: reachable", True, f"sshd answers at {target.address}:"
                    f"{target.port}")]
    runner = HostRunner(name, target)
    try:
        try:
            runner.connect()
        except LabError as exc:
            return [*checks, Check(f"{name}: key accepted", False, str(exc).split(": ", 2)[-1],
                                   f"fix {where}")]
        checks.append(Check(f"{name}: key accepted", True,
                            f"{target.user} logged in with {target.key}"))
        runner.sudo = False
        first = runner.run(["python3", "-c", PROBE, address], check=False, timeout=60)
        if first.exit_code == 127 or not first.ok:
            return [*checks, Check(f"{name}: python3", False,
                                   "not installed" if first.exit_code == 127
                                   else f"the probe failed: {first.stderr.strip()[-200:]}",
                                   "apt-get install python3-minimal on that host")]
        facts = json.loads(first.stdout)
        oldest = ".".join(map(str, OLDEST_PYTHON))
        checks.append(Check(f"{name}: python3",
                            tuple(facts.get("python_version") or (0,)) >= OLDEST_PYTHON,
                            f"python {facts['python']}",
                            f"the side script needs python {oldest} or newer on the host"))
        if facts["uid"] != 0:
            sudo = runner.run(["sudo", "-n", "true"], check=False, timeout=30).ok
            checks.append(Check(f"{name}: root", sudo,
                                f"{target.user} (uid {facts['uid']})"
                                + (" with passwordless sudo" if sudo else " without `sudo -n`"),
                                f"log in as root, or allow `sudo -n` for {target.user} "
                                "(NOPASSWD in sudoers)"))
            if not sudo:
                return checks
            runner.sudo = True
            facts = json.loads(runner.run(["python3", "-c", PROBE, address], timeout=60).stdout)
        else:
            checks.append(Check(f"{name}: root", True, "logged in as root"))
        checks.append(Check(f"{name}: /proc/slabinfo", facts["slabinfo"],
                            "readable" if facts["slabinfo"] else "not readable even as root",
                            "a kernel with SLUB statistics (CONFIG_SLUB_DEBUG) is needed"))
        checks.append(Check(f"{name}: lab address", facts["address_local"],
                            f"{address} on {facts.get('lab_interface')}" if facts["address_local"]
                            else f"{address} is not configured there",
                            f"set hosts.{name}.address in {lab_path} to one of its addresses"))
        return checks
    except LabError as exc:
        return [*checks, Check(f"{name}: probe", False, str(exc), f"fix {where}")]
    finally:
        runner.close()
