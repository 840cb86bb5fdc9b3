"""Many ssh hosts at once: Fabric's group API (``ThreadingGroup``) over the run's connections.

One command on every host in parallel, each host's answer as an
:class:`~orchestrator.runner.Result` (from Fabric's ``GroupResult``); the parallel half
of a checkpoint's snapshot (each host's sockstat and socket summary), timed against the
same reads host after host; and the clock offset of every host against this machine
(round trips on one open channel per host, all hosts at once: a group command per
reading would put a session's setup, hundreds of ms on a loaded machine, in the bound).

The group is made of the hosts' own connections (``ThreadingGroup.from_connections``):
no second login, and each connection keeps its settings (key, no agent, no ssh_config).
Hosts whose command line differs (``sudo -n`` for a non-root login, another sshd port
to filter out) form one group each; those groups run at the same time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fabric import ThreadingGroup
from fabric.exceptions import GroupException

from ...errors import RunError
from ...runner import Command, Result, trace
from .transport import HostRunner

#: Round trips of the clock reading; the one with the shortest round trip is kept.
CLOCK_ROUNDS = 9
#: On a host: answer every line read with the host's clock (a JSON line), until EOF.
CLOCK_ECHO = r"""
import json, sys, time
print(json.dumps({"hello": 1}), flush=True)
for _ in sys.stdin:
    print(json.dumps({"clock": time.time()}), flush=True)
"""
#: A snapshot's first read: the host's clock, then its sockstat (one session).
SOCKSTAT = ["sh", "-c", "date +%s.%N; cat /proc/net/sockstat"]


class Fanout:
    """The run's ssh hosts as Fabric groups: ``run`` one command on all of them at once."""

    def __init__(self, runners: Sequence[HostRunner]) -> None:
        self.runners = list(runners)
        #: by host: the clock offset measured by :meth:`measure_clocks` (see there)
        self.clocks: dict[str, dict[str, float]] = {}

    def run(self, cmd: Command, *, timeout: float | None = 60,
            check: bool = True) -> dict[str, Result]:
        """``cmd`` on every host in parallel (each host's command line: ``sudo`` and the
        socket filter as its runner adds them); by host name."""
        for runner in self.runners:
            runner.connect()
        by_command: dict[str, list[HostRunner]] = {}
        for runner in self.runners:
            line = runner.command(cmd)
            by_command.setdefault(line, []).append(runner)
        if len(by_command) == 1:
            ((line, runners),) = by_command.items()
            out = _group_run(line, runners, timeout)
        else:
            with ThreadPoolExecutor(max_workers=len(by_command)) as pool:
                parts = pool.map(lambda item: _group_run(item[0], item[1], timeout),
                                 by_command.items())
                out = {k: v for part in parts for k, v in part.items()}
        return {name: result.check() if check else result for name, result in out.items()}

    def measure_clocks(self, rounds: int = CLOCK_ROUNDS) -> dict[str, dict[str, float]]:
        """Each host's clock against this machine's: ``rounds`` round trips on one SSH
        channel per host (all hosts at once), to a python3 loop that answers each line
        with its clock.

        A reading taken between our ``t0`` and ``t1`` gives ``offset = remote - (t0 + t1)
        / 2`` (the host's clock minus ours) to within ``(t1 - t0) / 2`` whatever the path's
        asymmetry: the bound is ``error_s``. The round with the shortest round trip is kept;
        ``spread_s`` is how far the rounds' offsets scatter (their range). One open channel,
        not a command per round: a new session costs tens of ms (hundreds on a loaded
        machine) that would all be in the bound.
        """
        with ThreadPoolExecutor(max_workers=max(1, len(self.runners))) as pool:
            readings = dict(zip([r.host for r in self.runners],
                                pool.map(lambda r: _round_trips(r, rounds), self.runners),
                                strict=True))
        self.clocks = {}
        for host, pairs in readings.items():
            offset, error = min(pairs, key=lambda p: p[1])
            offsets = [p[0] for p in pairs]
            self.clocks[host] = {"offset_s": round(offset, 6), "error_s": round(error, 6),
                                 "spread_s": round(max(offsets) - min(offsets), 6),
                                 "median_offset_s": round(statistics.median(offsets), 6),
                                 "rounds": len(pairs)}
        return self.clocks

    def to_local(self, host: str, remote: float) -> float:
        """A time read on ``host``'s clock, on this machine's (its measured offset)."""
        return remote - self.clocks.get(host, {}).get("offset_s", 0.0)

    def snapshot(self, names: Sequence[str],
                 summary_argv: list[str], serial_limit: int
                 ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
        """The per-host half of a checkpoint, on every host at once: sockstat (with the
        host's clock, so its moment is known on ours) and the socket summary.

        Returns (sockstat text, summary JSON text, timing) by host. ``timing`` has the
        parallel wall time of the two reads and, while the hosts hold at most
        ``serial_limit`` sockets together, the same reads done host after host
        (``serial_seconds``), so the result shows what the fan-out saves; ``read_at``: each
        host's sockstat moment on this machine's clock, relative to the first.
        """
        group = Fanout([r for r in self.runners if r.host in names])
        group.clocks = self.clocks
        start = time.monotonic()
        stats = group.run(SOCKSTAT, timeout=60)
        summaries = group.run(summary_argv, timeout=120)
        parallel = time.monotonic() - start
        sockstat, moments = {}, {}
        for host, result in stats.items():
            first, _, rest = result.stdout.partition("\n")
            sockstat[host] = rest
            moments[host] = self.to_local(host, _clock_text(first, result))
        first_moment = min(moments.values())
        timing: dict[str, Any] = {
            "hosts": len(stats), "parallel_seconds": round(parallel, 4),
            "read_at": {h: round(t - first_moment, 4) for h, t in sorted(moments.items())}}
        sockets = sum(_sockets(r.stdout) for r in summaries.values())
        if sockets <= serial_limit:
            start = time.monotonic()
            for runner in group.runners:
                runner.run(SOCKSTAT, timeout=60)
                runner.run(summary_argv, timeout=120)
            timing["serial_seconds"] = round(time.monotonic() - start, 4)
        return sockstat, {h: r.stdout for h, r in summaries.items()}, timing


def _group_run(line: str, runners: list[HostRunner], timeout: float | None
               ) -> dict[str, Result]:
    """One command line on a group of hosts (Fabric ``ThreadingGroup``): by host name."""
    for runner in runners:
        trace(runner.host, line)  # what `tcplab -v` shows, as for one host's run
    started = time.monotonic()
    group = ThreadingGroup.from_connections([r.connection for r in runners])
    try:
        results: Mapping[Any, Any] = group.run(line, warn=True, hide=True, pty=False,
                                               in_stream=False,
                                               timeout=int(timeout) if timeout else None)
    except GroupException as exc:  # some hosts raised: their entry is the exception
        results = exc.result
    out = {}
    for runner in runners:
        if runner.connection not in results:
            raise RunError(f"{runner.host}: no answer from the SSH group to `{line[:80]}`")
        out[runner.host] = runner.outcome(line, results[runner.connection], started, timeout)
    return out


def _round_trips(runner: HostRunner, rounds: int, timeout: float = 30.0
                 ) -> list[tuple[float, float]]:
    """(offset, bound) of each round trip to the host's clock loop (see measure_clocks)."""
    channel = runner.spawn(["python3", "-c", CLOCK_ECHO])
    try:
        if not channel.receive(timeout=timeout):
            raise RunError(f"{runner.host}: the clock probe did not start within {timeout:.0f} s")
        out = []
        for _ in range(rounds):
            t0 = time.time()
            channel.send({})
            reply = channel.receive(timeout=timeout)
            t1 = time.time()
            if not reply or not isinstance(reply.get("clock"), (int, float)):
                raise RunError(f"{runner.host}: no clock reading within {timeout:.0f} s "
                               f"(got {reply!r})")
            out.append((reply["clock"] - (t0 + t1) / 2, (t1 - t0) / 2))
        return out
    finally:
        channel.close()


def _clock_text(text: str, result: Result) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise RunError(f"{result.host}: cannot read its clock (`{result.command[:60]}` "
                       f"printed {text.strip()[:60]!r}); the host needs GNU date or "
                       "python3") from None


def _sockets(summary_json: str) -> int:
    try:
        return sum(json.loads(summary_json).get("states", {}).values())
    except ValueError:
        return 0
