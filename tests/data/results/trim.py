"""Copy real tcplab results here, trimmed to what the report and compare tests need.

    .venv/bin/python tests/data/results/trim.py /tmp/res/RUN_DIR ...

Kept whole: status, scenario, profile, lab, timeline, checkpoints (states, sockstat,
buffers, per-connection totals) and the metadata fields the report shows. Trimmed:
``by_cache`` keeps every attributed row and the 8 largest other rows (the stored
totals, drift included, are the analysis' own and still cover every row);
``slab_aliases`` and ``objsize`` keep the caches named in those rows; ``net_sysctls``
(and ``machine_net_sysctls``, where the run recorded it) keeps net.core.*, net.ipv4.tcp_*
and ip_local_port_range.

Several measured kernels (vm and ssh backends): each checkpoint's ``per_kernel`` entry
is trimmed the same way (its own ``by_cache`` rows; its ``objsize`` keeps the caches named
in any kept row plus ``KEY_CACHES``, the caches a connection lives in, so object sizes
that differ between the sides stay comparable), and ``metadata.kernels[*].slab_aliases``
keeps the named caches. The per-kernel totals are kept as stored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP_OTHER_ROWS = 8
# as orchestrator.report.kernels.KEY_CACHES (this script stands alone)
KEY_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "tw_sock_TCP", "request_sock_TCP",
              "skbuff_head_cache", "tcp_bind_bucket", "tcp_bind2_bucket", "lsm_inode_cache",
              "lsm_file_cache", "eventpoll_epi", "TCPv6")


def keep_sysctl(name: str) -> bool:
    return (name.startswith(("net.core.", "net.ipv4.tcp_"))
            or name == "net.ipv4.ip_local_port_range")


def trim_rows(pcb: dict) -> set[str]:
    """Keep every attributed row and the largest others; return the caches kept."""
    rows = pcb["by_cache"]
    kept = [r for r in rows if r["attributed"]]
    others = sorted((r for r in rows if not r["attributed"]), key=lambda r: -abs(r["bytes"]))
    kept += others[:KEEP_OTHER_ROWS]
    pcb["by_cache"] = sorted(kept, key=lambda r: -abs(r["bytes"]))
    return {r["cache"] for r in pcb["by_cache"]}


def trim(result: dict) -> dict:
    named: set[str] = set()
    for cp in result.get("checkpoints", []):
        pcb = cp.get("per_connection_bytes")
        if not pcb:
            continue
        named |= trim_rows(pcb)
        for kernel in (cp.get("per_kernel") or {}).values():
            named |= trim_rows(kernel["per_connection_bytes"])
    for cp in result.get("checkpoints", []):
        for kernel in (cp.get("per_kernel") or {}).values():
            kernel["objsize"] = {k: v for k, v in (kernel.get("objsize") or {}).items()
                                 if k in named or k in KEY_CACHES}
    meta = result["metadata"]
    for kernel in (meta.get("kernels") or {}).values():
        if "slab_aliases" in kernel:
            kernel["slab_aliases"] = {k: v for k, v in (kernel["slab_aliases"] or {}).items()
                                      if k in named}
    meta["slab_aliases"] = {k: v for k, v in (meta.get("slab_aliases") or {}).items() if k in named}
    meta["objsize"] = {k: v for k, v in (meta.get("objsize") or {}).items() if k in named}
    if meta.get("machine_net_sysctls"):
        meta["machine_net_sysctls"] = {k: v for k, v in meta["machine_net_sysctls"].items()
                                       if keep_sysctl(k)}
    for host in meta.get("hosts", {}).values():
        host["net_sysctls"] = {k: v for k, v in host.get("net_sysctls", {}).items()
                               if keep_sysctl(k)}
    return result


def main(argv: list[str]) -> None:
    for arg in argv:
        src = Path(arg)
        data = json.loads((src / "result.json").read_text())
        out = HERE / src.name
        out.mkdir(exist_ok=True)
        (out / "result.json").write_text(json.dumps(trim(data), indent=1) + "\n")
        print(out / "result.json", (out / "result.json").stat().st_size)


if __name__ == "__main__":
    main(sys.argv[1:])
