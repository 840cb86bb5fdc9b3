"""One scenario on several kernels, side by side (``make lab KERNELS="6.1 6.12 host"``).

Reads only saved results (one per kernel). For the last measured checkpoint of each:

* bytes per connection: the attributed total, objects x objsize, meminfo Slab, and per
  side (server, client) where the run measured each side's kernel on its own (VMs,
  remote hosts: ``per_kernel``);
* object sizes of the caches a connection lives in (TCP, sock_inode_cache, filp,
  dentry, tw_sock_TCP, bind buckets, LSM blobs...), with what grew and what shrank
  against the first kernel;
* bytes per connection of every cache counted as socket memory on any kernel.

A cache that one kernel's SLUB merged into another line is shown as ``in <line>``.
``report()`` also writes the comparison as markdown and JSON beside the runs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..results.model import Result
from . import findings, published

SCHEMA = "tcplab.kernels/1"
KEY_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "tw_sock_TCP", "request_sock_TCP",
              "skbuff_head_cache", "tcp_bind_bucket", "tcp_bind2_bucket", "lsm_inode_cache",
              "lsm_file_cache", "eventpoll_epi", "TCPv6")


def label_of(result: Result) -> str:
    meta = result.metadata
    if meta.kernel_label:
        return str(meta.kernel_label)
    if meta.backend in ("netns", "docker"):
        return "host"
    return str(meta.kernel.release or "?")


def _aliases(result: Result) -> dict[str, list[str]]:
    """SLUB merges of the measured kernel(s): per-kernel ones when the backend read them."""
    out: dict[str, list[str]] = {}
    kernels = result.metadata.kernels
    found = [k.get("slab_aliases") for k in kernels.values() if k.get("slab_aliases")]
    for groups in found or [result.metadata.slab_aliases]:
        for cache, others in groups.items():
            out[cache] = sorted(set(out.get(cache, [])) | set(others))
    return out


def objsize_of(result: Result, cache: str) -> dict[str, Any]:
    """{"size": bytes or None, "line": the slabinfo line that counts it}."""
    sizes = result.metadata.objsize
    if cache in sizes:
        return {"size": sizes[cache], "line": cache}
    for line, others in _aliases(result).items():
        if cache in others and line in sizes:
            return {"size": sizes[line], "line": line}
    return {"size": None, "line": None}


def by_version(results: list[Result]) -> list[Result]:
    """The runs ordered by kernel version (oldest first; a release without one last)."""
    def key(result: Result) -> tuple[int, tuple[int, ...]]:
        version = version_of(result.metadata.kernel.release)
        return (0, version) if version else (1, ())
    return sorted(results, key=key)


def checkpoint_figures(result: Result) -> dict[str, dict[str, Any]]:
    """Every measured checkpoint's bytes per connection: total, per side, by cache."""
    out = {}
    for cp in result.measured():
        pcb = cp.per_connection()
        out[cp.name] = {"connections": cp.connections, "total": pcb.total,
                        "objects_total": pcb.objects_total, "sides": result.side_totals(cp),
                        "by_cache": pcb.attributed()}
    return out


def compare(results: list[Result]) -> dict[str, Any]:
    """The kernels side by side, oldest version first (``host`` by its release)."""
    results = by_version(results)
    kernels = []
    socket_caches: list[str] = []
    for result in results:
        cp = result.last_measured()
        entry: dict[str, Any] = {
            "label": label_of(result),
            "release": result.metadata.kernel.release,
            "backend": result.metadata.backend,
            "run_id": result.run_id,
            "status": result.status,
            "checkpoint": cp.name if cp else None,
            "connections": cp.connections if cp else None,
        }
        if cp:
            pcb = cp.per_connection()
            entry.update(total=pcb.total, objects_total=pcb.objects_total,
                         meminfo_slab=pcb.meminfo_slab, sides=result.side_totals(cp))
            entry["by_cache"] = pcb.of_category("socket")
            socket_caches += [c for c in entry["by_cache"] if c not in socket_caches]
        entry["objsize"] = {}
        entry["checkpoints"] = checkpoint_figures(result)
        entry["findings"] = findings.verdicts(result)
        kernels.append(entry)
    caches = list(KEY_CACHES) + [c for c in socket_caches if c not in KEY_CACHES]
    for entry, result in zip(kernels, results, strict=False):
        entry["objsize"] = {c: objsize_of(result, c) for c in caches}
    caches = [c for c in caches if any(k["objsize"][c]["size"] for k in kernels)]
    changes = []
    first = kernels[0] if kernels else None
    for entry in kernels[1:]:
        for cache in caches:
            a, b = first["objsize"][cache]["size"], entry["objsize"][cache]["size"]
            if a and b and a != b:
                changes.append({"cache": cache, "from": first["label"], "to": entry["label"],
                                "before": a, "after": b, "delta": b - a,
                                "change": "grew" if b > a else "shrank"})
    names: list[str] = []
    for entry in kernels:
        names += [n for n in entry["checkpoints"] if n not in names]
    return {"schema": SCHEMA, "created": time.time(), "kernels": kernels, "caches": caches,
            "socket_caches": socket_caches, "objsize_changes": changes,
            "checkpoints": names, "published": published.for_checkpoints(names),
            "recycling": recycling(results)}


# -- "newer kernels recycle buffers faster" ------------------------------------------------

F_RECYCLE = "newer kernels recycle buffers faster"
SAME = "no difference measured"
MARKS = {**findings.MARK, SAME: "="}


def version_of(release: str | None) -> tuple[int, ...] | None:
    """(6, 1, 0) from "6.1.0-56-cloud-amd64"; None when it does not start with a version."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


def recycling(results: list[Result]) -> dict[str, Any]:
    """The article's "newer kernels recycle buffers faster", across the compared kernels.

    Per kernel, from its own saved result: the receiver's median rmem_alloc while the data
    sat unread and after the read, and how long after the read began the receiver's
    sockstat TCP mem fell back (``findings.release_time``: from the timeline, so to within
    one sample). The oldest and newest kernel versions are compared: faster by more than
    one sample interval holds, slower by more does not, otherwise no difference measured;
    the kernels between them are listed in the evidence.
    Scenarios without data read after sitting unread (idle, timewait) are not tested.
    """
    rows = []
    for result in results:
        pair = findings.read_pair(result)
        if pair is None:
            continue
        drop = findings.release_time(result, pair)
        release = result.metadata.kernel.release
        rows.append({
            "label": label_of(result), "release": release, "run_id": result.run_id,
            "receiver": pair.receiver,
            "rmem_unread": pair.unread.buffers[pair.receiver].rmem_alloc.median,
            "rmem_read": pair.read.buffers[pair.receiver].rmem_alloc.median,
            "seconds": drop["seconds"] if drop else None,
            "interval": drop["interval"] if drop else None,
        })
    timed = sorted((r for r in rows if r["seconds"] is not None and version_of(r["release"])),
                   key=lambda r: version_of(r["release"]))
    out: dict[str, Any] = {"finding": F_RECYCLE, "kernels": rows}
    if len(timed) < 2 or version_of(timed[0]["release"]) == version_of(timed[-1]["release"]):
        why = ("no run read data after it sat unread (try SCENARIO=c2s or s2c)" if not rows
               else "needs the release time on two kernel versions or more")
        return {**out, "verdict": findings.UNTESTED, "evidence": why}
    old, new = timed[0], timed[-1]
    resolution = max(old["interval"], new["interval"])
    gained = old["seconds"] - new["seconds"]
    evidence = (f"receive memory fell back {new['seconds']:.1f} s after the read began on "
                f"{new['label']} ({new['release']}) and {old['seconds']:.1f} s on {old['label']} "
                f"({old['release']}); sampled every {resolution:.1f} s; median rmem_alloc "
                f"{old['rmem_unread']:,.0f} -> {old['rmem_read']:,.0f} B on {old['label']}, "
                f"{new['rmem_unread']:,.0f} -> {new['rmem_read']:,.0f} B on {new['label']}")
    if gained > resolution:
        verdict = findings.HOLDS
    elif gained < -resolution:
        verdict = findings.FAILS
    else:
        verdict, evidence = SAME, evidence + ": the same to within one sample"
    if len(timed) > 2:  # the verdict is the two ends'; the kernels between are shown
        evidence += "; in between: " + ", ".join(
            f"{k['label']} ({k['release']}) {k['seconds']:.1f} s" for k in timed[1:-1])
        spread = max(k["seconds"] for k in timed) - min(k["seconds"] for k in timed)
        worst = max(k["interval"] for k in timed)
        evidence += (f"; over all {len(timed)} kernels the release times span "
                     f"{spread:.1f} s" + (" (within one sample: no kernel stands out)"
                                          if spread <= worst else
                                          f" ({spread / worst:.0f} samples)"))
    return {**out, "verdict": verdict, "evidence": evidence}


def _b(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def render(cmp: dict[str, Any], fmt: str = "simple") -> str:
    ks = cmp["kernels"]
    heads = [f"{k['label']}" + (f" ({k['release']})" if k["release"] else "") for k in ks]
    scenario = ks[0].get("checkpoint") if ks else None
    parts = [f"Kernel comparison · checkpoint {scenario} · N="
             f"{ks[0]['connections']:,}" if ks and ks[0].get("connections") else
             "Kernel comparison", ""]
    rows = [["total per connection (attributed)", *[_b(k.get("total")) for k in ks]],
            ["  objects x objsize", *[_b(k.get("objects_total")) for k in ks]],
            ["  Slab (meminfo)", *[_b(k.get("meminfo_slab")) for k in ks]],
            ["  server side", *[_b((k.get("sides") or {}).get("server")) for k in ks]],
            ["  client side", *[_b((k.get("sides") or {}).get("client")) for k in ks]]]
    parts += ["Bytes per connection (both ends)",
              tabulate(rows, ["", *heads], tablefmt=fmt,
                       colalign=("left",) + ("right",) * len(ks)),
              "server/client side: each side's own kernel (VMs); '-' where both ends share "
              "one kernel (host)", ""]
    rows = []
    for cache in cmp["caches"]:
        cells = []
        for k in ks:
            o = k["objsize"][cache]
            text = _b(o["size"])
            if o["size"] and o["line"] != cache:
                text += f" (in {o['line']})"
            cells.append(text)
        rows.append([cache, *cells])
    parts += ["Object sizes, bytes", tabulate(rows, ["cache", *heads], tablefmt=fmt,
                                              colalign=("left",) + ("right",) * len(ks)), ""]
    rows = []
    for cache in cmp["socket_caches"]:
        rows.append([cache, *[_b((k.get("by_cache") or {}).get(cache)) for k in ks]])
    if rows:
        parts += ["Bytes per connection by cache (socket memory)",
                  tabulate(rows, ["cache", *heads], tablefmt=fmt,
                           colalign=("left",) + ("right",) * len(ks)), ""]
    parts += sweep_tables(cmp, heads, fmt)
    grew = [c for c in cmp["objsize_changes"] if c["change"] == "grew"]
    shrank = [c for c in cmp["objsize_changes"] if c["change"] == "shrank"]
    for word, items in (("grew", grew), ("shrank", shrank)):
        if items:
            parts.append(f"{word}: " + "; ".join(
                f"{c['cache']} {c['before']} -> {c['after']} ({c['delta']:+d}) {c['from']} -> "
                f"{c['to']}" for c in items))
    if not grew and not shrank and len(ks) > 1:
        parts.append("object sizes: no difference")
    if len(ks) > 1 and all(k.get("total") is not None for k in ks):
        base = ks[0]["total"]
        parts.append("total per connection: " + "; ".join(
            f"{k['label']} {k['total'] - base:+,.0f} B vs {ks[0]['label']}" for k in ks[1:]))
    for fail in cmp.get("failed") or []:
        parts.append(f"not measured: kernel {fail['kernel']}: its run failed: {fail['error']}")
    rec = cmp.get("recycling")
    if rec:
        parts += ["", "Finding (source article)",
                  f" {MARKS.get(rec['verdict'], '?')} {rec['finding']}: {rec['verdict']} — "
                  f"{rec['evidence']}"]
    return "\n".join(parts).rstrip() + "\n"


def sweep_tables(cmp: dict[str, Any], heads: list[str], fmt: str) -> list[str]:
    """Every checkpoint across the kernels (with the article's published row where it
    measured the same state), the findings per kernel and the receive-memory release."""
    ks, pub = cmp["kernels"], cmp.get("published") or {}
    shown = pub.get("checkpoints") or {}
    parts: list[str] = []
    extra = [f"{pub['label']}*"] if shown else []
    rows = []
    for name in cmp.get("checkpoints") or []:
        cells = [_b(((k.get("checkpoints") or {}).get(name) or {}).get("total")) for k in ks]
        rows.append([name, *cells, *([_b(shown[name]["total"]) if name in shown else "-"]
                                     if shown else [])])
    if rows:
        parts += ["Bytes per connection at every checkpoint (both ends)",
                  tabulate(rows, ["checkpoint", *heads, *extra], tablefmt=fmt,
                           colalign=("left",) + ("right",) * (len(ks) + len(extra)))]
        if shown:
            parts.append(f"* {pub['note']}: kernel {pub['kernel']}, "
                         + "; ".join(f"{n}: {f['state']}, server {_b(f['sides']['server'])} / "
                                     f"client {_b(f['sides']['client'])}"
                                     for n, f in shown.items())
                         + f" ({pub['units']}). Source: {pub['source']}")
        parts.append("")
    rows = []
    for i, finding in enumerate(f["finding"] for f in (ks[0].get("findings") or []) if ks):
        cells = []
        for k in ks:
            v = (k.get("findings") or [])[i] if len(k.get("findings") or []) > i else None
            cells.append(f"{findings.MARK.get(v['verdict'], '?')} {v['verdict']}" if v else "-")
        rows.append([finding, *cells])
    if rows:
        parts += ["Findings of the source article, per kernel",
                  tabulate(rows, ["finding", *heads], tablefmt=fmt), ""]
    rec = {r.get("run_id"): r for r in (cmp.get("recycling") or {}).get("kernels") or []}
    if rec:
        rows = [["receiver median rmem_alloc unread -> read",
                 *[f"{_b(rec[k['run_id']]['rmem_unread'])} -> {_b(rec[k['run_id']]['rmem_read'])}"
                   if k["run_id"] in rec else "-" for k in ks]],
                ["receive memory back after the read began (s)",
                 *[release_text(rec.get(k["run_id"])) for k in ks]]]
        parts += ["Buffer release per kernel (from each run's own timeline)",
                  tabulate(rows, ["", *heads], tablefmt=fmt,
                           colalign=("left",) + ("right",) * len(ks)), ""]
    return parts


def release_text(row: dict[str, Any] | None) -> str:
    if not row or row.get("seconds") is None:
        return "-"
    return f"{row['seconds']:.2f} (±{row['interval']:.1f})"


def render_html(cmp: dict[str, Any]) -> str:
    """The sweep as one self-contained page: trend charts (kernel_charts) and tables."""
    from .compare_render import fmt
    from .html import environment
    from .kernel_charts import caches_of, sweep_charts

    ks = cmp["kernels"]
    pub = cmp.get("published") or {"label": "", "checkpoints": {}}
    caches_at = {name: caches_of(ks, name) for name in cmp.get("checkpoints") or []}
    first = ks[0].get("findings") or [] if ks else []
    finding_rows = [{"finding": f["finding"],
                     "cells": [(k.get("findings") or [None] * len(first))[i] for k in ks]}
                    for i, f in enumerate(first)]
    rec = cmp.get("recycling") or {}
    return environment().get_template("kernels.html.j2").render(
        cmp=cmp, ks=ks, pub=pub, charts=sweep_charts(cmp), caches_at=caches_at,
        scenario=cmp.get("scenario") or "", n=ks[0].get("connections") if ks else None,
        changes=cmp.get("objsize_changes") or [], finding_rows=finding_rows,
        rec=rec if rec.get("kernels") else None,
        rec_by={r.get("run_id"): r for r in rec.get("kernels") or []},
        marks=MARKS, fmt=fmt, release_text=release_text)


def report(results: list[Result], run_dirs: list[Path], results_dir: Path,
           failed: dict[str, str] | None = None) -> tuple[str, Path]:
    """Render the comparison and write it (markdown + JSON) into results_dir.

    ``failed``: kernel label -> why its run failed; the comparison lists them as not
    measured.
    """
    from .html import write_text_atomic

    cmp = compare(results)
    cmp["scenario"] = results[0].scenario.name if results else None
    cmp["runs"] = [str(d) for d in run_dirs]
    cmp["failed"] = [{"kernel": k, "error": e} for k, e in (failed or {}).items()]
    text = render(cmp)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scenario = results[0].scenario.name if results else "run"
    labels = "-".join(k["label"].replace("/", "_") for k in cmp["kernels"])[:60]
    stem = f"kernels-{stamp}-{scenario}-{labels}"  # labels hold dots: no with_suffix
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    md, js = results_dir / f"{stem}.md", results_dir / f"{stem}.json"
    write_text_atomic(md, render(cmp, "github"))
    write_text_atomic(js, json.dumps(cmp, indent=1) + "\n")
    write_text_atomic(results_dir / f"{stem}.html", render_html(cmp))
    return text, md


def per_side_text(result: Result) -> str | None:
    """For one run that measured several kernels: each side's figures on its own."""
    cp = result.last_measured()
    if not cp or not cp.per_kernel:
        return None
    rows = []
    top: dict[str, dict[str, float]] = {}
    for label, share in cp.per_kernel.items():
        pcb = share.per_connection
        side = ", ".join(f"{h} ({result.role_of(h) or '?'})" for h in share.hosts)
        rows.append([label, side, share.release or "-", _b(pcb.total),
                     _b(pcb.objects_total), _b(pcb.meminfo_slab)])
        top[label] = pcb.of_category("socket")
    parts = [f"Per side ({cp.name}): each host's own kernel, bytes per connection",
             tabulate(rows, ["kernel", "hosts", "release", "total", "objects x objsize",
                             "Slab (meminfo)"], tablefmt="simple")]
    caches = []
    for values in top.values():
        caches += [c for c in sorted(values, key=lambda c: -abs(values[c])) if c not in caches]
    if caches:
        labels = list(top)
        parts += ["", tabulate([[c, *[_b(top[lb].get(c)) for lb in labels]] for c in caches],
                               ["cache", *labels], tablefmt="simple",
                               colalign=("left",) + ("right",) * len(labels))]
    return "\n".join(parts)
