"""What the real-conditions scenarios state: each measured figure against what is expected.

Computed from a saved result alone, like the article's findings (findings.py), and shown
after them (text and HTML) where they apply:

* **slow readers** - a checkpoint taken while a paced read (``read: {rate: R}``) runs:
  the reader's receive memory and the sender's send queue per socket (median), against
  the bandwidth-delay product (link rate × RTT, or the reader's pace × RTT over a link
  with a delay and no rate) and against
  ``tcp_rmem[2]``/``tcp_wmem[2]``. Holds when both stay within the limits.
* **tcp_mem pressure** - where ``tcp_mem`` is known and the run aimed at it (scenario
  ``pressure``) or reached its low mark: the sockstat ``mem`` peak from the timeline
  against the three marks, the time spent above the pressure mark, and what the kernel
  did (TcpExt counters, where the run recorded them). Holds when the peak crossed the
  pressure mark.
* **loss** - where the run's link had loss (or the scenario is ``lossy``): the
  retransmission and out-of-order counters. Holds when retransmissions occurred and the
  receiver queued segments out of order.

Two inputs come from other work and are read defensively: the link of a run
(:func:`link_of`) and the per-checkpoint kernel counters (:func:`counters`).
"""

from __future__ import annotations

from typing import Any

from ..results.model import Checkpoint, Result, Scenario
from .findings import FAILS, HOLDS, MARK, UNTESTED, first_host

F_SLOW = "slow readers: buffers against the BDP and the limits"
F_PRESSURE = "tcp_mem: the pressure mark is crossed"
F_LOSS = "loss fills the retransmit and out-of-order queues"
LIMIT_SLACK = 65536  # one skb's truesize over the limit is still "within"
#: TcpExt/Tcp counters that tell what the kernel did under memory pressure or loss.
PRESSURE_COUNTERS = ("TCPMemoryPressures", "TCPMemoryPressuresChrono", "PruneCalled",
                     "RcvPruned", "OfoPruned", "TCPRcvCollapsed", "TCPRcvQDrop",
                     "TCPAbortOnMemory", "TCPOFODrop")
LOSS_COUNTERS = ("RetransSegs", "TCPLostRetransmit", "TCPFastRetrans", "TCPSlowStartRetrans",
                 "TCPTimeouts", "TCPSACKReorder", "TCPOFOQueue", "TCPOFODrop", "TCPOFOMerge")


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _verdict(finding: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"finding": finding, "verdict": verdict, "evidence": evidence}


# -- inputs from the link and counters work ----------------------------------------------

def link_of(result: Result) -> dict[str, Any] | None:
    """The run's link conditions where the result records them (the ``link`` work:
    ``metadata.link.link`` with ``delay_us`` one-way, ``rate_bps``, ``loss_pct``...), else
    None (a perfect link)."""
    link = result.metadata.raw.get("link") if isinstance(result.metadata.raw, dict) else None
    if isinstance(link, dict):
        inner = link.get("link")
        return inner if isinstance(inner, dict) and inner else (link or None)
    return None


def bdp(link: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(bytes/s, RTT s, BDP bytes) of a link with a rate and a delay (RTT = 2 × the one-way
    delay: the lab's own RTT is well under a millisecond)."""
    if not link:
        return None
    rate = float(link.get("rate_bps") or 0) / 8
    rtt = 2 * float(link.get("delay_us") or 0) / 1e6
    if not rate or not rtt:
        return None
    return rate, rtt, rate * rtt


def loss_of(link: dict[str, Any] | None) -> float:
    """The link's loss in percent (0 without)."""
    return float((link or {}).get("loss_pct") or 0)


def _bare(name: str) -> str:
    """``TcpExtTCPMemoryPressures`` (nstat's name) -> ``TCPMemoryPressures``."""
    for section in ("TcpExt", "IpExt", "Tcp"):
        if name.startswith(section) and len(name) > len(section) and name[len(section)].isupper():
            return name[len(section):]
    return name


def counters(result: Result, cp: Checkpoint) -> dict[str, dict[str, int]] | None:
    """Kernel counter deltas since the baseline at a checkpoint, per host, by bare name
    (the ``counters`` work: ``checkpoint.counters`` = {host: {nstat name: delta}});
    None when the run recorded none."""
    raw = cp.raw.get("counters") if isinstance(cp.raw, dict) else None
    if not isinstance(raw, dict) or not raw:
        return None
    return {host: {_bare(k): int(v) for k, v in (moved or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for host, moved in raw.items() if isinstance(moved, dict)}


def _counter_text(result: Result, names: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """The counters of ``names`` that moved, per host (each the largest delta since the
    baseline over the measured checkpoints), and their sums over the hosts."""
    peak: dict[str, dict[str, int]] = {}
    seen = False
    for cp in result.measured():
        got = counters(result, cp)
        if got is None:
            continue
        seen = True
        for host, flat in got.items():
            for name in names:
                if flat.get(name):
                    mine = peak.setdefault(host, {})
                    mine[name] = max(mine.get(name, 0), flat[name])
    if not seen:
        return "kernel counters: not recorded in this result", {}
    if not peak:
        return "kernel counters: none of " + ", ".join(names[:4]) + " ... moved", {}
    summed: dict[str, int] = {}
    parts = []
    for host, flat in peak.items():
        parts.append(f"{host}: " + ", ".join(f"{k} {_n(v)}" for k, v in flat.items()))
        for k, v in flat.items():
            summed[k] = summed.get(k, 0) + v
    return "kernel counters " + "; ".join(parts), summed


# -- slow readers ------------------------------------------------------------------------

def paced_read(result: Result) -> tuple[float, str, Checkpoint] | None:
    """(rate B/s per connection, reader role, first checkpoint while it runs)."""
    reading: tuple[float, str] | None = None
    for action, arg in result.scenario.actions():
        if action == "read" and isinstance(arg, dict) and arg.get("rate") and \
                arg.get("background"):
            reading = (float(arg["rate"]), Scenario.side(arg) or "client")
        elif action == "join":
            reading = None
        elif action == "checkpoint" and reading is not None:
            cp = result.checkpoint(arg if isinstance(arg, str) else str((arg or {}).get("name")))
            if cp is not None and cp.buffers:
                return reading[0], reading[1], cp
    return None


def slow_readers(result: Result) -> dict[str, str] | None:
    found = paced_read(result)
    if found is None:
        return None
    rate, reader_role, cp = found
    reader = first_host(result, reader_role)
    sender = first_host(result, "server" if reader_role == "client" else "client")
    rbuf, sbuf = cp.buffers.get(reader or ""), cp.buffers.get(sender or "")
    rmem = result.sysctl_ints(reader or "", "net.ipv4.tcp_rmem")
    wmem = result.sysctl_ints(sender or "", "net.ipv4.tcp_wmem")
    if rbuf is None or sbuf is None or not rmem or not wmem:
        return _verdict(F_SLOW, UNTESTED, f"not tested: no socket buffers or tcp_rmem/tcp_wmem "
                        f"of both sides at {cp.name}")
    # the larger of median and mean: sockets a reader serves unevenly hold unevenly
    held_r = max(rbuf.rmem_alloc.median, rbuf.rmem_alloc.per_socket)
    held_s = max(sbuf.wmem_queued.median, sbuf.wmem_queued.per_socket)
    parts = [f"at {cp.name}, the {reader_role}s read {_n(rate)} B/s per connection",
             f"{reader} holds {_n(held_r)} B per socket (rmem_alloc, median "
             f"{_n(rbuf.rmem_alloc.median)}, mean {_n(rbuf.rmem_alloc.per_socket)}) = "
             f"{held_r / rmem[2]:.1%} of tcp_rmem[2] {_n(rmem[2])} B "
             f"({held_r / rmem[1]:.1f}× tcp_rmem[1] {_n(rmem[1])})",
             f"{sender} queues {_n(held_s)} B per socket (wmem_queued, median "
             f"{_n(sbuf.wmem_queued.median)}, mean {_n(sbuf.wmem_queued.per_socket)}) = "
             f"{held_s / wmem[2]:.1%} of tcp_wmem[2] {_n(wmem[2])} B"]
    conditions = link_of(result)
    link = bdp(conditions)
    rtt_only = 2 * float((conditions or {}).get("delay_us") or 0) / 1e6
    if link is not None:
        rate_l, rtt, product = link
        parts.append(f"BDP = {_n(rate_l)} B/s × {rtt * 1000:.1f} ms = {_n(product)} B: the "
                     f"receiver holds {held_r / product:.2f}× and the sender "
                     f"{held_s / product:.2f}× the BDP")
    elif rtt_only:  # a delay and no rate: the reader's pace is each connection's rate
        product = rate * rtt_only
        parts.append(f"BDP = {_n(rate)} B/s (the reader's pace; the link has no rate) × "
                     f"{rtt_only * 1000:.1f} ms = {_n(product)} B: the receiver holds "
                     f"{held_r / product:.2f}× and the sender {held_s / product:.2f}× the BDP")
    else:
        parts.append("no link in this run (RTT well under 1 ms on the lab's veth): the BDP is "
                     "about 0, so what the sockets hold is set by the reader's pace and the "
                     "limits alone (a link: --link \"delay=25ms rate=...\")")
    within = held_r <= rmem[2] + LIMIT_SLACK and held_s <= wmem[2] + LIMIT_SLACK
    return _verdict(F_SLOW, HOLDS if within else FAILS, "; ".join(parts))


# -- tcp_mem pressure -----------------------------------------------------------------------

def tcp_mem(result: Result) -> list[int] | None:
    """tcp_mem (pages: low, pressure, high) as the run had it: set for the run (host-wide),
    read back on the measured host (a VM's own), else this machine's."""
    meta = result.metadata
    host = first_host(result, "server") or ""
    value = (meta.host_sysctls.get("net.ipv4.tcp_mem") or result.sysctl(host, "net.ipv4.tcp_mem")
             or (meta.raw.get("machine_net_sysctls") or {}).get("net.ipv4.tcp_mem"))
    try:
        marks = [int(p) for p in str(value).split()] if value else []
    except ValueError:
        return None
    return marks if len(marks) == 3 else None


def mem_series(result: Result) -> tuple[list[float], list[float]]:
    """(seconds, sockstat TCP mem pages) of the timeline (the first host's; machine-wide
    on one kernel)."""
    cols = result.timeline.columns
    t = cols.get("t") or []
    host = first_host(result, "server") or ""
    mem = cols.get(f"{host}.mem") or next((v for k, v in cols.items() if k.endswith(".mem")), [])
    n = min(len(t), len(mem))
    return list(t[:n]), list(mem[:n])


def pressure(result: Result) -> dict[str, str] | None:
    marks = tcp_mem(result)
    t, mem = mem_series(result)
    if not marks or not mem:
        return None
    low, press, high = marks
    peak = max(mem)
    if peak < low and result.scenario.name != "pressure":
        return None
    interval = float(result.timeline.interval or 0.1)
    above = sum(1 for v in mem if v >= press) * interval
    page = result.metadata.page_size or 4096
    text = (f"sockstat TCP mem peaked at {_n(peak)} pages ({peak * page / 2**20:,.1f} MiB) "
            f"against tcp_mem low {_n(low)} / pressure {_n(press)} / high {_n(high)} pages; "
            f"above the pressure mark for about {above:.1f} s"
            + (f", at or above the high mark for {sum(1 for v in mem if v >= high) * interval:.1f} s"
               if peak >= high else ""))
    said, summed = _counter_text(result, PRESSURE_COUNTERS)
    text += f"; {said}"
    if summed and not summed.get("TCPMemoryPressures") and peak >= press:
        text += " (TCPMemoryPressures did not move: the per-CPU reserve can hide a short crossing)"
    return _verdict(F_PRESSURE, HOLDS if peak >= press else FAILS, text)


# -- loss --------------------------------------------------------------------------------

def lossy(result: Result) -> dict[str, str] | None:
    link = link_of(result)
    loss = loss_of(link)
    if not loss and result.scenario.name != "lossy":
        return None
    if not loss:
        return _verdict(F_LOSS, UNTESTED, "not tested: the run had no link loss (run it with "
                        "LINK=\"delay=10ms loss=1%\", --link)")
    said, summed = _counter_text(result, LOSS_COUNTERS)
    if not summed:
        return _verdict(F_LOSS, UNTESTED, f"link loss {loss:g}%; {said}")
    retrans = summed.get("RetransSegs", 0) + summed.get("TCPFastRetrans", 0)
    ofo = summed.get("TCPOFOQueue", 0)
    holds = retrans > 0 and ofo > 0
    return _verdict(F_LOSS, HOLDS if holds else FAILS, f"link loss {loss:g}%; {said}")


def statements(result: Result) -> list[dict[str, str]]:
    """The real-conditions verdicts that apply to this run (none for most scenarios)."""
    return [v for v in (slow_readers(result), pressure(result), lossy(result)) if v]


def conditions_text(result: Result) -> str:
    """The statements as terminal lines; "" when none applies."""
    found = statements(result)
    if not found:
        return ""
    lines = ["Findings (real conditions: measured against expected)"]
    for v in found:
        lines.append(f" {MARK[v['verdict']]} {v['finding']} — {v['verdict']}: {v['evidence']}")
    return "\n".join(lines)
