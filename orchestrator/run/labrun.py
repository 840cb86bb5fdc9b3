"""Execute a plan: create hosts, drive the sides through the steps, snapshot, save.

Teardown is the journal's undo and runs on success, on error, on Ctrl-C and on
SIGTERM. A run that fails part-way still saves what it measured, marked incomplete.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, faults, resources, sysctls
from ..backends import Backend, LabHost, backend_class
from ..errors import LabError, RunError
from ..journal import HostLock, Journal
from ..measure import analysis, probes
from ..measure.parsers import SsSummary
from ..plan import Plan
from ..results import SCHEMA, new_run_dir, write_json_atomic
from ..runner import LineChannel
from ..scenario import Expect, Step
from ..ui import UI, Ticker


class Interrupted(RunError):
    """SIGINT or SIGTERM arrived; the run stops and cleans up."""


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; cleaned up")


class Sides:
    """The two side processes of a run, spoken to in JSON lines."""

    def __init__(self, channels: dict[str, LineChannel], hosts: dict[str, LabHost],
                 stall: float) -> None:
        self.channels = channels  # by role
        self.hosts = hosts
        self.stall = stall
        #: by role: our clock minus the side's, the smallest over its replies (each carries
        #: the side's clock when sent): off by the quickest reply's latency
        self.offsets: dict[str, float] = {}

    def send(self, role: str, msg: dict) -> None:
        self.channels[role].send(msg)

    def wait(self, roles: list[str], op: str, ticker: Ticker | None = None,
             progress_role: str | None = None) -> dict[str, dict]:
        """Wait for each role's reply to ``op``; a silent side for ``stall`` s fails the run."""
        replies: dict[str, dict] = {}
        last = {r: time.monotonic() for r in roles}
        while len(replies) < len(roles):
            for role in roles:
                if role in replies:
                    continue
                msg = self.channels[role].receive(timeout=0.05)
                if msg is None:
                    if time.monotonic() - last[role] > self.stall:
                        raise RunError(f"{self.channels[role].host} ({role}): no answer to {op} "
                                       f"for {self.stall:.0f} s; the side stalled")
                    continue
                last[role] = time.monotonic()
                if "progress" in msg:
                    if ticker is not None and role == progress_role:
                        ticker.advance(int(msg["progress"]))
                    continue
                if not msg.get("ok"):
                    raise RunError(f"{self.channels[role].host} ({role}): {op} failed: "
                                   f"{msg.get('error')}")
                replies[role] = msg
                if isinstance(msg.get("clock"), (int, float)):
                    offset = time.time() - msg["clock"]
                    self.offsets[role] = min(offset, self.offsets.get(role, offset))
        return replies

    def do(self, roles: list[str], msg: dict, **kw: Any) -> dict[str, dict]:
        for role in roles:
            self.send(role, msg)
        return self.wait(roles, msg["op"], **kw)

    def check_alive(self, during: str) -> None:
        """Fail the run when a side has gone since its last answer (see ended_error)."""
        for channel in self.channels.values():
            problem = channel.ended_error()
            if problem:
                raise RunError(f"{problem}; {during} discarded")

    def close(self) -> None:
        for channel in self.channels.values():
            try:
                channel.send({"op": "exit"})
            except LabError:
                pass
            channel.close()


def unmet(expect: Expect, quick: dict[str, SsSummary], n: int, app_pending: bool) -> list[str]:
    """What a checkpoint still waits for (empty: reached). Pure, for tests."""
    problems = []
    for role, wanted in expect.states.items():
        have = {k: v for k, v in quick[role].states.items() if k != "LISTEN"}
        for state in sorted(set(wanted) | set(have)):
            want = wanted.get(state, 0)
            low, high = want if isinstance(want, tuple) else (want, want)
            if not low <= have.get(state, 0) <= high:
                shown = f"{low:,}" if low == high else f"{low:,}..{high:,}"
                problems.append(f"{role}: {state} {have.get(state, 0):,} of {shown}")
    if not app_pending:
        for direction, per_conn in expect.queued.items():
            sender, receiver = direction.split(">")
            in_kernel = (sum(s.get("recv_q", 0) for s in quick[receiver].sums.values())
                         + sum(s.get("send_q", 0) for s in quick[sender].sums.values()))
            if in_kernel != per_conn * n:
                problems.append(f"{sender}->{receiver}: {in_kernel:,} bytes queued of "
                                f"{per_conn * n:,}")
    return problems


class LabRun:
    def __init__(self, plan: Plan, ui: UI) -> None:
        self.plan = plan
        self.ui = ui
        self.root = plan.options.root
        self.results_dir = plan.options.results_dir or self.root / "results"
        self.run_dir: Path | None = None
        self.backend: Backend | None = None
        self.hosts: dict[str, LabHost] = {}
        self.by_role: dict[str, LabHost] = {}
        self.sides: Sides | None = None
        self.snapshots: list[probes.Snapshot] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.aliases: dict[str, list[str]] = {}
        self.events: dict[str, Any] = {}
        self.sampler: probes.Sampler | None = None
        self.side_sampling = False
        self.app_pending = False
        self.unread = {"server": 0, "client": 0}  # bytes per connection sent, not yet read

    # -- top level ------------------------------------------------------------------------
    def execute(self) -> Path:
        plan = self.plan
        lock = HostLock(f"{plan.scenario.name}/{plan.profile.name}")
        lock.acquire()  # before anything is created: a refused run leaves nothing behind
        try:
            self.run_dir = new_run_dir(self.results_dir, plan.scenario.name, plan.profile.name)
            journal = Journal.create(self.run_dir.name)
        except BaseException:
            lock.release()
            raise
        run_id = self.run_dir.name
        self.backend = backend_class(plan.backend)(plan.lab, run_id, journal, self.root,
                                                   self.ui.line, family=plan.options.family)
        old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        started = time.time()
        error: LabError | None = None
        try:
            self.backend.preflight()
            self._up()
            self._steps()
        except LabError as exc:
            error = self._explained(exc)
        except KeyboardInterrupt:
            error = Interrupted("interrupted; cleaned up")
        finally:
            for s in old:
                signal.signal(s, signal.SIG_IGN)  # teardown must finish
            try:
                self._save(started, error)
            finally:
                if self.sides is not None:
                    self.sides.close()
                faults.pause("teardown")
                problems = self.backend.down()
                if self.snapshots and not problems:
                    released = probes.wait_released(self.snapshots[0].slab,
                                                    self.backend.kernel_runner())
                    if not released:
                        self.ui.line("note: the kernel is still freeing this run's sockets; "
                                     "a run started now would count them")
                lock.release()
                for s, handler in old.items():
                    signal.signal(s, handler)
                if problems:
                    self.ui.line(f"cleanup left problems; run `tcplab wipe` ({problems[0]})")
        if error is not None:
            raise error
        return self.run_dir

    def _explained(self, error: LabError) -> LabError:
        """The error, led by what the backend knows of hosts that died (a killed container).

        When a host dies, whichever side notices first reports a symptom (the server's SSH
        link dropped, or the client's connections were reset): the cause comes first, so
        the message reads the same whichever symptom won the race.
        """
        if isinstance(error, Interrupted) or self.backend is None:
            return error
        try:
            notes = [n for n in self.backend.diagnose() if n not in str(error)]
        except Exception:  # noqa: BLE001 - a diagnosis never hides the error itself
            return error
        return RunError(f"{'; '.join(notes)}; what the run saw: {error}") if notes else error

    # -- phases ---------------------------------------------------------------------------
    def _up(self) -> None:
        plan = self.plan
        assert self.backend is not None
        self.ui.phase("hosts", f"creating {', '.join(h.name for h in plan.lab.hosts)} "
                      f"({plan.backend})")
        for name, value in plan.global_sysctls.items():
            old = sysctls.read_host(name)
            self.backend.journal.record("host_sysctl", name=name, old=old, new=value)
            sysctls.write_host(name, value)
            self.ui.note(f"host sysctl {name}: {old} -> {value} (restored at the end)")
        self.hosts = self.backend.up(plan.host_sysctls)
        faults.pause("setup")
        self.by_role = {h.role: h for h in self.hosts.values()}
        pinned = sum(len(v) for v in plan.host_sysctls.values())
        self.ui.note(", ".join(f"{h.name} {h.address}" for h in self.hosts.values())
                     + f" · {pinned} sysctls pinned, verified")
        self.aliases = probes.read_slab_aliases()
        server, client = self.by_role["server"], self.by_role["client"]
        channels = {}
        six = plan.options.family == "ipv6"
        # Hosts on kernels of their own (VMs, remote machines): their sides sample their
        # kernel's counters themselves; this machine's /proc knows nothing of them.
        self.side_sampling = self.backend.kernel_runner() is not None
        for host, peer in ((server, client), (client, server)):
            channel = self.backend.start_side(host)
            channels[host.role] = channel
            channel.send({"role": host.role,
                          "address": host.spec.address6 if six else host.address,
                          "peer": peer.spec.address6 if six else peer.address,
                          "shards": plan.shards, "stall": plan.options.stall,
                          "per_worker": plan.options.per_worker,
                          "fault": faults.side_fault(host.role),
                          "server_model": plan.options.server_model,
                          "sample": probes.SAMPLE_INTERVAL if self.side_sampling else 0})
        self.sides = Sides(channels, self.hosts, plan.options.stall)
        paths = {}
        for role, channel in channels.items():
            pid = self.backend.netns_pid(self.by_role[role], channel)
            if pid:
                paths[self.by_role[role].name] = Path(f"/proc/{pid}/net/sockstat")
        self.sampler = probes.Sampler(paths).start()
        for role in ("server", "client"):
            hello = channels[role].receive(timeout=plan.options.stall)
            if not hello or "hello" not in hello:
                raise RunError(f"{self.by_role[role].name}: side script did not start: {hello}")
        prepared = self.sides.do(["server", "client"], {"op": "prepare"})
        self.events["workers"] = {r: p["workers"] for r, p in prepared.items()}

    def _steps(self) -> None:
        plan = self.plan
        n = plan.scenario.connections
        expectations = plan.scenario.expectations()
        assert self.sides is not None
        self.ui.phase("ramp", f"{n:,} connections over {len(plan.shards)} server port(s), "
                      f"{self.events['workers']['client']} client worker(s)")
        for step in plan.scenario.steps:
            if step.action == "checkpoint":
                self._checkpoint(step, expectations[step.name])
            else:
                self._act(step)

    def _act(self, step: Step) -> None:
        assert self.sides is not None
        n = self.plan.scenario.connections
        if step.action == "connect":
            seconds = 0.0
            levels = level_plans(self.plan.shards, self.plan.options.levels)
            done = 0
            with self.ui.progress("connect", n) as ticker:
                for i, ports in enumerate(levels, 1):
                    done += sum(ports.values())
                    start = time.monotonic()
                    msg = {"op": "connect", "ports": ports, "accept": step.accept}
                    self.sides.send("server", msg)
                    self.sides.send("client", msg)
                    faults.pause("ramp")
                    self.sides.wait(["server", "client"], "connect", ticker, "client")
                    seconds += time.monotonic() - start
                    if i < len(levels):  # a level checkpoint: N*i/L connections
                        self._checkpoint(Step("checkpoint", name=f"level{i}"), Expect(
                            {"server": {"ESTAB": done}, "client": {"ESTAB": done}}, {}), done)
            self.events["ramp"] = {"seconds": round(seconds, 3), "rate": round(n / seconds, 1)}
            self.ui.note(f"{n:,}/{n:,} connected in {seconds:.2f} s · {n / seconds:,.0f} conn/s")
            self.ui.phase("measure", "checkpoints")
        elif step.action == "accept":
            with self.ui.progress("accept", n) as ticker:
                self.sides.do(["server"], {"op": "accept"}, ticker=ticker, progress_role="server")
        elif step.action == "join":
            roles = ["server", "client"]
            self.sides.do(roles, {"op": "join"})
            self.app_pending = False
        elif step.action == "block_acks":
            self.backend.block_final_acks(self.by_role[step.side])
        elif step.action == "send":
            nbytes = step.bytes if step.bytes is not None else self.plan.scenario.bytes
            reply = self.sides.do([step.side], {"op": "send", "bytes": nbytes,
                                                "background": step.background})[step.side]
            self.unread[step.side] += nbytes
            self.app_pending = reply.get("pending", 0) > 0 and not step.background
            if self.app_pending:
                self.ui.note(f"{step.side}: {reply['pending']:,} bytes wait in the application: "
                             "the kernel's buffers are full")
        elif step.action == "read":
            peer = "client" if step.side == "server" else "server"
            self.sides.do([step.side], {"op": "read", "bytes": self.unread[peer],
                                        "rate": step.rate, "background": step.background})
            self.unread[peer] = 0
            self.app_pending = False
        elif step.action == "close":
            self.sides.do([step.side], {"op": "close"})
        elif step.action == "wait":
            time.sleep(step.seconds)

    def _tw_capped(self, expect: Expect) -> tuple[Expect, dict[str, int]]:
        """Cap expected TIME-WAIT/FIN-WAIT-2 (tw socks) at each host's tcp_max_tw_buckets.

        Past it the kernel closes the socket instead of keeping a tw sock (counted as
        TCPTimeWaitOverflow): the checkpoint must expect that, and the result says so.
        """
        dropped: dict[str, int] = {}
        states = {}
        for role, wanted in expect.states.items():
            host = self.by_role[role]
            limit = int(host.sysctls.get("net.ipv4.tcp_max_tw_buckets", 0) or 0)
            capped = dict(wanted)
            tw = sum(c for st, c in wanted.items() if st in ("TIME-WAIT", "FIN-WAIT-2"))
            if limit and tw > limit:
                # a few orphans may stay full sockets instead: a small range, not one number
                for st in ("TIME-WAIT", "FIN-WAIT-2"):
                    if st in capped and capped[st] > limit:
                        capped[st] = (limit, limit + max(5, limit // 100))
                dropped[host.name] = tw - limit
            states[role] = capped
        return Expect(states, expect.queued, expect.moving), dropped

    def _checkpoint(self, step: Step, expect: Expect, connections: int | None = None) -> None:
        n = self.plan.scenario.connections if connections is None else connections
        expect, tw_dropped = self._tw_capped(expect)
        if tw_dropped:
            self.ui.note(f"{step.name}: tcp_max_tw_buckets reached: the kernel drops "
                         + ", ".join(f"{h} {c:,}" for h, c in tw_dropped.items())
                         + " tw sockets instead of holding them")
        if not self.snapshots:  # the baseline: not while an earlier namespace is being freed
            waited = probes.quiesce(self.backend.kernel_runner() if self.backend else None)
            if waited > 2:
                self.ui.note(f"waited {waited:.0f} s for the kernel to free the sockets of "
                             "namespaces deleted just before this run")
        deadline = time.monotonic() + self.plan.options.stall
        previous: Any = None
        stable = 0
        while True:
            quick = {h.role: probes.quick_summary(h) for h in self.hosts.values()}
            problems = unmet(expect, quick, n, self.app_pending)
            if not problems and self.app_pending:
                key = [(q.states, q.sums) for q in quick.values()]
                stable = stable + 1 if key == previous else 0
                previous = key
                problems = [] if stable >= 3 else ["queues still moving"]
            if not problems:
                break
            if time.monotonic() > deadline:
                raise RunError(f"checkpoint {step.name}: not reached after "
                               f"{self.plan.options.stall:.0f} s: {'; '.join(problems[:4])}")
            time.sleep(0.1)
        assert self.run_dir is not None and self.backend is not None
        if self.sampler:
            self.sampler.mark(step.name)
        faults.pause("checkpoint")
        if not expect.moving:
            probes.settle(n, self.backend.kernel_runner())
        memory_of = getattr(self.backend, "per_host_memory", None)
        snap = probes.take(step.name, self.hosts, self.run_dir / "raw",
                           self.backend.kernel_runner(), memory_of)
        if self.sides is not None:  # a side that died meanwhile took its sockets with it
            self.sides.check_alive(f"checkpoint {step.name}")
        self.snapshots.append(snap)
        connections = 0 if step.name == "baseline" else n
        if self.snapshots[0] is not snap:
            self.checkpoints.append(analysis.checkpoint(self.snapshots[0], snap, connections,
                                                        self.aliases))
        else:
            self.checkpoints.append({"name": snap.name, "time": snap.time, "connections": 0,
                                     "collect_seconds": round(snap.seconds, 3),
                                     "states": {h: dict(s.ss.states) for h, s in snap.hosts.items()},
                                     "sockstat": {h: s.sockstat for h, s in snap.hosts.items()},
                                     "memory": {h: s.memory for h, s in snap.hosts.items()
                                                if s.memory is not None}})
        if tw_dropped:
            self.checkpoints[-1]["tw_dropped"] = tw_dropped
        # The states waited for, as the snapshot itself saw them: a change while it was
        # taken (the kernel dropping half-open connections, say) is said, not hidden.
        changed = unmet(Expect(expect.states, {}),
                        {h.role: snap.hosts[h.name].ss for h in self.hosts.values()}, n, True)
        if changed:
            self.checkpoints[-1]["changed_while_taken"] = changed
            self.ui.note(f"{step.name}: states changed while the snapshot was taken: "
                         + "; ".join(changed[:4]))
        self.checkpoints[-1]["tw_overflow"] = {
            h.name: _netstat(h, "TCPTimeWaitOverflow") for h in self.hosts.values()}
        total = self.checkpoints[-1].get("per_connection_bytes", {}).get("total")
        shown = f"{total:,.0f} B/connection" if total is not None else "reference"
        self.ui.note(f"{step.name:<12} ✓ {shown} ({snap.seconds:.2f} s to collect)")

    # -- result ---------------------------------------------------------------------------
    def _timeline(self, error: LabError | None) -> dict[str, Any] | None:
        """The run's timeline: this machine's sampler, or each side's own kernel's samples
        shifted onto this machine's clock (VMs, remote hosts)."""
        if self.sampler is None:
            return None
        local = self.sampler.stop()
        if not self.side_sampling or self.sides is None or error is not None:
            return local
        try:
            replies = self.sides.do(["server", "client"], {"op": "timeline"})
        except LabError as exc:
            self.ui.note(f"timeline: the sides' samples could not be read ({exc})")
            return local
        by_host = {self.by_role[role].name: reply for role, reply in replies.items()}
        offsets = {self.by_role[role].name: offset
                   for role, offset in self.sides.offsets.items()}
        kernels = {label: names for label, (_, names) in self.backend.kernels().items()} \
            if self.backend else {}
        return probes.merge_side_timelines(local, by_host, offsets, kernels)

    def _save(self, started: float, error: LabError | None) -> None:
        if self.run_dir is None:
            return
        plan = self.plan
        hosts_meta = {
            h.name: {"role": h.role, "address": h.address,
                     "sysctls_pinned": plan.host_sysctls.get(h.name, {}),
                     "net_sysctls": h.sysctls, **h.info}
            for h in self.hosts.values()
        }
        first = self.snapshots[0].slab if self.snapshots else {}
        result = {
            "schema": SCHEMA,
            "run_id": self.run_dir.name,
            "status": "complete" if error is None else "incomplete",
            "error": None if error is None else str(error),
            "started": started,
            "finished": time.time(),
            "scenario": plan.scenario.to_dict(),
            "profile": plan.profile.to_dict(),
            "lab": plan.lab.to_dict(),
            "metadata": {
                "tool_version": __version__,
                "git_commit": _git_commit(resources.checkout()) if resources.checkout() else None,
                "kernel": {"release": platform.release(), "version": platform.version(),
                           "machine": platform.machine()},
                "hostname": socket.gethostname(),
                "python": platform.python_version(),
                **(self.backend.metadata() if self.backend else {"backend": plan.backend}),
                "backend_choice": plan.notes[0] if plan.notes else plan.backend,
                "hosts": hosts_meta,
                "host_sysctls": plan.global_sysctls,
                # every host-wide net.* value of this machine, when the lab runs on it
                "machine_net_sysctls": (sysctls.host_wide_values()
                                        if self.backend and self.backend.kernel_runner() is None
                                        else None),
                "shards": plan.shards,
                "workers": self.events.get("workers"),
                "page_size": os.sysconf("SC_PAGE_SIZE"),
                # SLUB merges of the measured kernel(s): this machine's, or the union of
                # the VMs'/remote hosts' own when the lab measured other kernels
                "slab_aliases": (self.snapshots[0].aliases
                                 if self.snapshots and self.snapshots[0].aliases is not None
                                 else self.aliases),
                "objsize": {k: v.objsize for k, v in first.items()},
                "idle_pair_estimate": (analysis.idle_pair_estimate(first, plan.options.family)
                                       if first else None),
                "family": plan.options.family,
                "server_model": plan.options.server_model,
                **({"bundle": plan.options.bundle} if plan.options.bundle else {}),
            },
            "ramp": self.events.get("ramp"),
            "slope": analysis.fit_levels(self.checkpoints) if plan.options.levels > 1 else None,
            "timeline": self._timeline(error),
            "checkpoints": self.checkpoints,
        }
        write_json_atomic(self.run_dir / "result.json", result)


def _netstat(host: LabHost, key: str) -> int | None:
    """A TcpExt counter of the host's network namespace (/proc/net/netstat)."""
    try:
        text = host.runner.run(["cat", "/proc/net/netstat"], timeout=30).stdout
    except LabError:
        return None
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and key in names.split():
            return int(values.split()[names.split().index(key)])
    return None


def level_plans(shards: list[list[int]], levels: int) -> list[dict[str, int]]:
    """Per level, the connections to add on each server port ({port: count}).

    Level i brings every port to round(count * i / levels), so after the last level
    each port holds its whole shard and the levels add up exactly.
    """
    levels = max(1, levels)
    out = []
    for i in range(1, levels + 1):
        out.append({str(port): round(count * i / levels) - round(count * (i - 1) / levels)
                    for port, count in shards})
    return out


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_plan(plan: Plan, ui: UI, on_done: Callable[[Path], None] | None = None) -> Path:
    run_dir = LabRun(plan, ui).execute()
    if on_done:
        on_done(run_dir)
    return run_dir
