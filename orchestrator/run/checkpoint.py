"""Checkpoints: wait until the hosts hold the expected socket states, settle, snapshot.

A scenario's expectations are by role (``Expect``); each host of a role is held to its
share of them (:func:`per_host`). Before waiting, expected tw socks are capped at each
host's ``tcp_max_tw_buckets`` (:func:`tw_capped`); after the snapshot, the states it saw
are checked again, and a change while it was taken is said (``changed_while_taken``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import faults
from ..backends import Backend, LabHost
from ..errors import RunError
from ..ledger.session import LedgerSession
from ..measure import analysis, probes
from ..measure.kernel import MeasuredKernel
from ..measure.parsers import SsSummary
from ..measure.snapshot import Snapshot
from ..measure.timeline import Sampler
from ..scenario import Expect
from ..ui import UI
from .sides import Sides

Count = int | tuple[int, int]  # an exact count or an inclusive range
#: host -> ss state -> count wanted
Wanted = dict[str, dict[str, Count]]
TW_STATES = ("TIME-WAIT", "FIN-WAIT-2")


def _share(value: Count, index: int, weights: list[int]) -> Count:
    """Host ``index``'s part of ``value``, in proportion to its weight (its connections),
    cumulative so the parts add up: a role's whole N gives each host exactly its own."""
    if isinstance(value, tuple):
        return (_share(value[0], index, weights), _share(value[1], index, weights))  # type: ignore[return-value]
    total = sum(weights) or 1
    before = sum(weights[:index])
    return value * (before + weights[index]) // total - value * before // total


def per_host(expect: Expect, roles: dict[str, str],
             weights: dict[str, int] | None = None) -> Wanted:
    """Each host's share of its role's expected states (all of it for a role's only host).

    ``weights``: connections per host (clients of a topology, which need not be equal);
    equal shares without. A key of ``expect.states`` that names a host is that host's own,
    unless it is also a role: a lab file may name a client host ``client`` beside
    ``client2`` (ssh), and ``client`` is then the role, shared by both.
    """
    out: Wanted = {}
    taken = set(roles.values())
    for role, wanted in expect.states.items():
        if role in roles and role not in taken:
            out[role] = dict(wanted)
            continue
        members = [h for h, r in roles.items() if r == role]
        w = [(weights or {}).get(h, 1) for h in members]
        for i, host in enumerate(members):
            out[host] = {st: _share(c, i, w) for st, c in wanted.items()}
    return out


def tw_capped(wanted: Wanted, hosts: dict[str, LabHost]) -> tuple[Wanted, dict[str, int]]:
    """Cap expected TIME-WAIT/FIN-WAIT-2 (tw socks) at each host's tcp_max_tw_buckets.

    Past it the kernel closes the socket instead of keeping a tw sock (counted as
    TCPTimeWaitOverflow): the checkpoint must expect that, and the result says so.
    """
    dropped: dict[str, int] = {}
    out: Wanted = {}
    for name, states in wanted.items():
        limit = int(hosts[name].sysctls.get("net.ipv4.tcp_max_tw_buckets", 0) or 0)
        capped = dict(states)
        tw = sum(c for st, c in states.items() if st in TW_STATES and isinstance(c, int))
        if limit and tw > limit:
            # a few orphans may stay full sockets instead: a small range, not one number
            for st in TW_STATES:
                have = capped.get(st)
                if isinstance(have, int) and have > limit:
                    capped[st] = (limit, limit + max(5, limit // 100))
            dropped[name] = tw - limit
        out[name] = capped
    return out, dropped


def unmet(wanted: Wanted, quick: dict[str, SsSummary], queued: dict[str, int],
          roles: dict[str, str], labels: dict[str, str], n: int) -> list[str]:
    """What a checkpoint still waits for (empty: reached). Pure, for tests.

    ``quick``: each host's socket summary; ``queued``: "sender>receiver" (roles) -> bytes
    per connection that must sit in the kernel's queues ({} while the application still
    holds some); ``labels``: how messages name each host.
    """
    problems = []
    for host, states in wanted.items():
        have = {k: v for k, v in quick[host].states.items() if k != "LISTEN"}
        for state in sorted(set(states) | set(have)):
            want = states.get(state, 0)
            low, high = want if isinstance(want, tuple) else (want, want)
            if not low <= have.get(state, 0) <= high:
                shown = f"{low:,}" if low == high else f"{low:,}..{high:,}"
                problems.append(f"{labels.get(host, host)}: {state} {have.get(state, 0):,} "
                                f"of {shown}")
    for direction, per_conn in queued.items():
        sender, receiver = direction.split(">")
        in_kernel = sum(sum(s.get("recv_q", 0) for s in quick[h].sums.values())
                        for h, r in roles.items() if r == receiver and h in quick) \
            + sum(sum(s.get("send_q", 0) for s in quick[h].sums.values())
                  for h, r in roles.items() if r == sender and h in quick)
        if in_kernel != per_conn * n:
            problems.append(f"{sender}->{receiver}: {in_kernel:,} bytes queued of "
                            f"{per_conn * n:,}")
    return problems


def found(quick: dict[str, SsSummary], labels: dict[str, str]) -> str:
    """What the sockets are in: a count per state, per host ("no socket" for none)."""
    parts = []
    for host, summary in quick.items():
        states = ", ".join(f"{st} {c:,}" for st, c in sorted(summary.states.items())
                           if c and st != "LISTEN")
        parts.append(f"{labels.get(host, host)}: {states or 'no socket'}")
    return "; ".join(parts)


def wait_for(name: str, check: Callable[[], list[str]], stall: float, settled: bool = True,
             poll: Callable[[], Any] | None = None, interval: float = 0.1,
             explain: Callable[[], str] | None = None) -> None:
    """Poll ``check`` until it reports nothing; after ``stall`` s fail with what is unmet
    (and ``explain()``: where the model expected the states from, what there is instead).

    ``settled`` False (the application still holds data): once nothing is unmet, also wait
    until ``poll`` (the hosts' queues) gives the same value three times running.
    """
    deadline = time.monotonic() + stall
    previous: Any = None
    stable = 0
    while True:
        problems = check()
        if not problems and not settled and poll is not None:
            key = poll()
            stable = stable + 1 if key == previous else 0
            previous = key
            problems = [] if stable >= 3 else ["queues still moving"]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise RunError(f"checkpoint {name}: not reached after {stall:.0f} s: "
                           f"{'; '.join(problems[:4])}" + (f"; {explain()}" if explain else ""))
        time.sleep(interval)


class Checkpoints:
    """Takes a run's checkpoints and keeps their snapshots and result records."""

    def __init__(self, ui: UI, backend: Backend, hosts: dict[str, LabHost],
                 kernel: MeasuredKernel, sides: Sides, raw_dir: Path, stall: float,
                 sampler: Sampler | None, ledger: LedgerSession | None = None,
                 weights: dict[str, int] | None = None) -> None:
        self.ui = ui
        self.ledger = ledger  # --ledger: started after the baseline, dumped at each checkpoint
        self.weights = weights  # connections per client host (topology.split)
        self.backend = backend
        self.hosts = hosts
        self.kernel = kernel
        self.sides = sides
        self.raw_dir = raw_dir
        self.stall = stall
        self.sampler = sampler
        self.aliases = kernel.slab_aliases()
        self.roles = {h.name: h.role for h in hosts.values()}
        self.snapshots: list[Snapshot] = []
        self.records: list[dict[str, Any]] = []
        #: the run's link conditions (conditions/session.py), read at every checkpoint
        self.link: Any = None

    def _await_leftovers(self, timeout: float = 65.0) -> None:
        """Before the baseline: tw sockets an earlier run left on these hosts (a real host
        keeps a TIME_WAIT socket 60 s) would vanish during this run. Wait, and say so."""
        def held() -> dict[str, int]:
            out = {}
            for host in self.hosts.values():
                states = probes.quick_summary(host).states
                count = sum(states.get(s, 0) for s in TW_STATES)
                if count:
                    out[host.name] = count
            return out

        left = held()
        if not left:
            return
        self.ui.note("baseline: waiting up to 65 s for the TIME-WAIT/FIN-WAIT-2 sockets an "
                     "earlier run left (" + ", ".join(f"{h} {c:,}" for h, c in left.items())
                     + ") to expire: counted now, they would vanish during this run")
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = held()

    def take(self, name: str, expect: Expect, n: int, app_pending: bool = False) -> None:
        wanted, tw_dropped = tw_capped(per_host(expect, self.roles, self.weights), self.hosts)
        labels = {h: self.sides.label(h) for h in self.hosts}
        if tw_dropped:
            self.ui.note(f"{name}: tcp_max_tw_buckets reached: the kernel drops "
                         + ", ".join(f"{h} {c:,}" for h, c in tw_dropped.items())
                         + " tw sockets instead of holding them")
        if not self.snapshots:  # the baseline: not while an earlier namespace is being freed
            waited = probes.quiesce(self.kernel)
            if waited > 2:
                self.ui.note(f"waited {waited:.0f} s for the kernel to free the sockets of "
                             "namespaces deleted just before this run")
            self._await_leftovers()
        quick: dict[str, SsSummary] = {}

        def check() -> list[str]:
            quick.clear()
            quick.update({h.name: probes.quick_summary(h) for h in self.hosts.values()})
            return unmet(wanted, quick, {} if app_pending else expect.queued, self.roles,
                         labels, n)

        def explain() -> str:
            cause = f"expected from {expect.cause}; " if expect.cause else ""
            return f"{cause}the sockets are in {found(quick, labels)}"

        wait_for(name, check, self.stall, settled=not app_pending,
                 poll=lambda: [(q.states, q.sums) for q in quick.values()], explain=explain)
        if self.sampler:
            self.sampler.mark(name)
        faults.pause("checkpoint")
        if not expect.moving:
            probes.settle(n, self.kernel)
        memory_of = getattr(self.backend, "per_host_memory", None)
        # what the emulated link holds (skbs of this kernel), read just before the snapshot
        link = self.link.stats() if self.link is not None else None
        snap = probes.take(name, self.hosts, self.raw_dir, self.kernel, memory_of,
                           getattr(self.backend, "read_hosts", None))
        self.sides.check_alive(f"checkpoint {name}")  # a side that died took its sockets
        self.snapshots.append(snap)
        record = self._record(snap, 0 if name == "baseline" else n)
        if tw_dropped:
            record["tw_dropped"] = tw_dropped
        if snap.fanout is not None:
            record["fanout"] = snap.fanout
        # The states waited for, as the snapshot itself saw them: a change while it was
        # taken (the kernel dropping half-open connections, say) is said, not hidden.
        changed = unmet(wanted, {h: s.ss for h, s in snap.hosts.items()}, {}, self.roles,
                        labels, n)
        if changed:
            record["changed_while_taken"] = changed
            self.ui.note(f"{name}: states changed while the snapshot was taken: "
                         + "; ".join(changed[:4]))
        record["tw_overflow"] = {h: (s.counters or {}).get("TcpExtTCPTimeWaitOverflow")
                                 for h, s in snap.hosts.items()}
        if self.ledger is not None:
            self._ledger(name, record)
        if link is not None:
            record["link"] = link
        self.records.append(record)
        total = record.get("per_connection_bytes", {}).get("total")
        shown = f"{total:,.0f} B/connection" if total is not None else "reference"
        self.ui.note(f"{name:<12} ✓ {shown} ({snap.seconds:.2f} s to collect)")

    def _ledger(self, name: str, record: dict[str, Any]) -> None:
        assert self.ledger is not None
        if len(self.snapshots) == 1:  # after the baseline: what it holds is not the lab's
            self.ledger.start()
            self.ui.note(f"ledger: bpftrace attached ({self.ledger.start_seconds:.1f} s)")
            return
        section = record["ledger"] = self.ledger.checkpoint(name, record)
        check = section["crosscheck"]
        pct = check["difference_pct"]
        self.ui.note(f"{name:<12}   ledger {section['bytes_per_connection']:,.0f} B/connection"
                     f" (slab vs slabinfo {check['ledger_per_connection']:,.0f} / "
                     f"{check['slabinfo_per_connection']:,.0f}"
                     + (f", {pct:+.1f}%" if pct is not None else "")
                     + f"; dump {section['dump_seconds']:.1f} s)")

    def _record(self, snap: Snapshot, connections: int) -> dict[str, Any]:
        if self.snapshots[0] is not snap:
            return analysis.checkpoint(self.snapshots[0], snap, connections, self.aliases)
        return {"name": snap.name, "time": snap.time, "connections": 0,
                "collect_seconds": round(snap.seconds, 3),
                "states": {h: dict(s.ss.states) for h, s in snap.hosts.items()},
                "sockstat": {h: s.sockstat for h, s in snap.hosts.items()},
                "memory": {h: s.memory for h, s in snap.hosts.items() if s.memory is not None},
                "counters": {h: {} for h, s in snap.hosts.items() if s.counters is not None},
                **({"router": {h: {"conntrack": s.conntrack} for h, s in snap.hosts.items()
                               if s.conntrack is not None}}
                   if any(s.conntrack is not None for s in snap.hosts.values()) else {})}

