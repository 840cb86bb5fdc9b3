"""The source article's three conclusions, checked against one saved result.

Each verdict is computed from the result file alone (see docs/report.md):

* **buffers are released promptly** - tested where a scenario leaves data unread at one
  checkpoint and reads it before the next. Holds when the receiver's median
  ``rmem_alloc`` per socket at the read checkpoint is about zero (at most 5 % of what it
  was while the data sat unread). The timeline adds how long after the read began the
  machine-wide sockstat TCP ``mem`` fell back.
* **the real buffer can be far below tcp_rmem[0]** - tested where each receiving socket
  holds less than ``tcp_rmem[0]`` bytes. Holds when the receiver's median ``rmem_alloc``
  at the unread checkpoint is below ``tcp_rmem[0]`` (read back from the receiving host).
* **TIME_WAIT sheds socket objects** - tested where a checkpoint has the connections in
  TIME-WAIT. Holds when ``sock_inode_cache``, ``filp`` and ``dentry`` per connection are
  below 10 % of their value at the established checkpoint while ``tw_sock_TCP`` grew by
  about one object per TIME-WAIT socket (0.8 to 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..results.model import Checkpoint, Result, Scenario

HOLDS, FAILS, UNTESTED = "holds", "does not hold", "not tested"
MARK = {HOLDS: "✓", FAILS: "✗", UNTESTED: "–"}

F_RELEASED = "buffers are released promptly"
F_BELOW_RMEM = "the real buffer can be far below tcp_rmem[0]"
F_TIMEWAIT = "TIME_WAIT sheds socket objects"

RELEASED_MAX_SHARE = 0.05  # rmem at read, as a share of rmem while unread
SHED_MAX_SHARE = 0.10  # socket objects at time_wait, as a share of established
SHED_CACHES = ("sock_inode_cache", "filp", "dentry")
TW_CACHE = "tw_sock_TCP"
TW_PER_SOCKET = (0.8, 1.2)
DROP_SHARE = 0.10  # sockstat mem counts as dropped once within 10 % of the drop from its peak


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _verdict(finding: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"finding": finding, "verdict": verdict, "evidence": evidence}


# -- reading the result ------------------------------------------------------------------

@dataclass
class ReadPair:
    """An unread checkpoint, the read step after it and the checkpoint after that."""

    unread: Checkpoint
    read: Checkpoint
    receiver: str  # host name
    sender: str | None


def first_host(result: Result, role: str) -> str | None:
    """The first host of a role: with several clients each holds its share alike, so
    the first stands for them all in the findings."""
    return (result.hosts_by_role().get(role) or [result.host(role)])[0]


def read_pair(result: Result) -> ReadPair | None:
    """Find ``send`` → checkpoint (data unread) → ``read`` → checkpoint in the steps."""
    sent_by: str | None = None
    unread_name: str | None = None
    reader: str | None = None
    for action, arg in result.scenario.actions():
        if action == "send":
            sent_by, unread_name, reader = Scenario.side(arg), None, None
        elif action == "checkpoint":
            name = arg if isinstance(arg, str) else None
            if reader is not None and unread_name is not None:
                unread, read = result.checkpoint(unread_name), result.checkpoint(name or "")
                if unread and read and unread.buffers and read.buffers:
                    receiver = first_host(result, reader)
                    sender = first_host(result, sent_by) if sent_by else None
                    if receiver in unread.buffers and receiver in read.buffers:
                        return ReadPair(unread, read, receiver, sender)
                reader = None
            elif sent_by is not None and unread_name is None:
                unread_name = name
        elif action == "read" and unread_name is not None:
            reader = Scenario.side(arg)
    return None


def unread_checkpoint(result: Result) -> tuple[Checkpoint, str] | None:
    """The first checkpoint taken while sent data sat unread, and the receiving host."""
    sent_by: str | None = None
    for action, arg in result.scenario.actions():
        if action == "send":
            sent_by = Scenario.side(arg)
        elif action == "read":
            sent_by = None
        elif action == "checkpoint" and sent_by is not None:
            cp = result.checkpoint(arg if isinstance(arg, str) else "")
            receiver = first_host(result, "client" if sent_by == "server" else "server")
            if cp and receiver and receiver in cp.buffers:
                return cp, receiver
            return None
    return None


def release_time(result: Result, pair: ReadPair) -> dict[str, float] | None:
    """When sockstat TCP mem fell back after the read began, from the timeline.

    The read is sent right after the unread checkpoint is collected: it starts when that
    snapshot began (its ``time``; the timeline mark is earlier when the run waited for the
    caches to settle) plus its ``collect_seconds``. "Fell back" is the first sample after
    that within ``DROP_SHARE`` of the drop from the peak (the unread checkpoint's sockstat
    mem) to where it settled (the read checkpoint's, or the level before the unread
    checkpoint when higher): sockets keep a small forward-allocated reserve after a read,
    so the level before the data came is not always reached.
    """
    timeline = result.timeline
    cols = timeline.columns
    column = cols.get(f"{pair.receiver}.mem") or next(
        (v for k, v in cols.items() if k.endswith(".mem")), None)
    times = cols.get("t")
    start_mark = timeline.mark_time(pair.unread.name)
    if not column or not times or start_mark is None:
        return None
    began = start_mark
    if pair.unread.time and timeline.start:
        began = max(began, float(pair.unread.time) - float(timeline.start))
    start = began + float(pair.unread.collect_seconds or 0)
    peak = pair.unread.sockstat_mem(pair.receiver)
    previous = result.before(pair.unread)
    before = previous.sockstat_mem(pair.receiver) if previous else None
    if peak is None:
        return None
    if before is None:
        before = min(column)
    settled = pair.read.sockstat_mem(pair.receiver)
    floor = max(before, settled) if settled is not None else before
    threshold = floor + DROP_SHARE * max(peak - floor, 0)
    for t, mem in zip(times, column, strict=False):
        if t >= start and mem <= threshold:
            return {"start": round(start, 3), "dropped_at": float(t),
                    "seconds": round(max(float(t) - start, 0.0), 3),
                    "interval": float(timeline.interval or 0.1),
                    "from_pages": peak, "to_pages": mem}
    return None


def _objects(cp: Checkpoint, cache: str) -> tuple[float, float]:
    """(objects, bytes) per connection of a cache at a checkpoint; absent = unchanged = 0."""
    row = cp.per_connection().row(cache)
    return (row.objects_per_connection, row.bytes_per_connection) if row else (0.0, 0.0)


def timewait_checkpoint(result: Result) -> Checkpoint | None:
    """The first measured checkpoint with most connections in TIME-WAIT on some host."""
    n = result.scenario.connections
    for cp in result.measured():
        tw = cp.sockets_in("TIME-WAIT")
        if n and tw >= 0.9 * n:
            return cp
        if not n and cp.name.replace("_", "").lower() == "timewait":
            return cp
    return None


def established_checkpoint(result: Result) -> Checkpoint | None:
    """The first measured checkpoint where every socket is ESTABLISHED."""
    return next((cp for cp in result.measured() if cp.live_states() == {"ESTAB"}), None)


# -- the three verdicts ------------------------------------------------------------------

def released_promptly(result: Result) -> dict[str, str]:
    pair = read_pair(result)
    if pair is None:
        return _verdict(F_RELEASED, UNTESTED, "not tested by this scenario: no data is read "
                        "after sitting unread (try --scenario c2s or s2c)")
    at_unread = pair.unread.buffers[pair.receiver].rmem_alloc.median
    at_read = pair.read.buffers[pair.receiver].rmem_alloc.median
    if at_unread <= 0:
        return _verdict(F_RELEASED, UNTESTED, f"not tested: {pair.receiver} held no receive "
                        f"memory at {pair.unread.name} (BYTES=0?)")
    text = (f"{pair.receiver} receive memory per socket (median rmem_alloc) "
            f"{_n(at_unread)} B at {pair.unread.name} → {_n(at_read)} B at "
            f"{pair.read.name}")
    if pair.sender and pair.sender in pair.unread.buffers:
        w0 = pair.unread.buffers[pair.sender].wmem_queued.median
        sent = pair.read.buffers.get(pair.sender)
        w1 = sent.wmem_queued.median if sent else 0
        if w0 > 0:
            text += f"; {pair.sender} send queue (wmem_queued) {_n(w0)} → {_n(w1)} B"
    drop = release_time(result, pair)
    if drop is not None:
        when = (f"within one sample ({drop['interval']:.1f} s)"
                if drop["seconds"] <= drop["interval"] else f"{drop['seconds']:.1f} s")
        text += (f"; sockstat TCP mem fell {_n(drop['from_pages'])} → {_n(drop['to_pages'])} "
                 f"pages {when} after the read began")
    holds = at_read <= RELEASED_MAX_SHARE * at_unread
    return _verdict(F_RELEASED, HOLDS if holds else FAILS, text)


def below_rmem_min(result: Result) -> dict[str, str]:
    found = unread_checkpoint(result)
    if found is None:
        return _verdict(F_BELOW_RMEM, UNTESTED, "not tested by this scenario: no socket holds "
                        "unread data (try --scenario c2s)")
    cp, receiver = found
    buf = cp.buffers[receiver]
    rmem = result.sysctl_ints(receiver, "net.ipv4.tcp_rmem")
    if not rmem:
        return _verdict(F_BELOW_RMEM, UNTESTED, f"not tested: net.ipv4.tcp_rmem of {receiver} "
                        "is not in the result")
    held = buf.queued_per_socket() or result.scenario.bytes
    if held >= rmem[0]:
        return _verdict(F_BELOW_RMEM, UNTESTED, f"not tested: each {receiver} socket holds "
                        f"{_n(held)} bytes, not less than tcp_rmem[0] {_n(rmem[0])} B; the "
                        "finding is about a socket holding a little data (try BYTES=13)")
    real = buf.rmem_alloc.median
    if real <= 0:
        return _verdict(F_BELOW_RMEM, UNTESTED, f"not tested: {receiver} sockets hold no "
                        f"receive memory at {cp.name}")
    fwd = buf.fwd_alloc.median
    holds = real < rmem[0]
    sign = "<" if holds else "≥"
    text = (f"receive memory per socket holding {_n(held)} bytes: {_n(real)} B {sign} "
            f"tcp_rmem[0] {_n(rmem[0])} B ({receiver}, median rmem_alloc at {cp.name})")
    if fwd:
        text += (f"; forward allocation {_n(fwd)} B rounds the charge up to whole pages "
                 "(sockstat mem)")
    return _verdict(F_BELOW_RMEM, HOLDS if holds else FAILS, text)


def timewait_sheds(result: Result) -> dict[str, str]:
    tw_cp = timewait_checkpoint(result)
    if tw_cp is None:
        return _verdict(F_TIMEWAIT, UNTESTED, "not tested by this scenario: no checkpoint has "
                        "the connections in TIME-WAIT (try --scenario timewait)")
    est = established_checkpoint(result)
    if est is None:
        return _verdict(F_TIMEWAIT, UNTESTED, "not tested: no ESTABLISHED checkpoint to "
                        "compare the TIME-WAIT one with")
    n = max(tw_cp.connections or 1, 1)
    tw_sockets = tw_cp.sockets_in("TIME-WAIT")
    parts, shed = [], True
    for cache in SHED_CACHES:
        now, _ = _objects(tw_cp, cache)
        then, _ = _objects(est, cache)
        ok = then > 0 and now < SHED_MAX_SHARE * then
        shed = shed and ok
        parts.append(f"{cache} {now:.2f} (established {then:.2f})")
    tw_objs, tw_bytes = _objects(tw_cp, TW_CACHE)
    per_tw = tw_objs * n / tw_sockets if tw_sockets else 0.0
    grew = TW_PER_SOCKET[0] <= per_tw <= TW_PER_SOCKET[1]
    total = tw_cp.per_connection().total
    text = (f"at {tw_cp.name}, objects per connection: {', '.join(parts)}; "
            f"{TW_CACHE} +{tw_objs:.2f} ({_n(tw_bytes)} B) for {tw_sockets:,} TIME-WAIT "
            f"sockets; {_n(total)} B per connection in all")
    return _verdict(F_TIMEWAIT, HOLDS if (shed and grew) else FAILS, text)


def verdicts(result: Result) -> list[dict[str, str]]:
    """One verdict per article conclusion, in the article's order."""
    return [released_promptly(result), below_rmem_min(result), timewait_sheds(result)]


def findings_text(result: Result) -> str:
    """The verdicts as terminal lines, for the end of the text report."""
    lines = ["Findings (source article)"]
    for v in verdicts(result):
        if v["verdict"] == UNTESTED:
            lines.append(f" {MARK[v['verdict']]} {v['finding']}: {v['evidence']}")
        else:
            lines.append(f" {MARK[v['verdict']]} {v['finding']} — {v['verdict']}: {v['evidence']}")
    return "\n".join(lines)
