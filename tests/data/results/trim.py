"""Copy real tcplab results here, trimmed to what the report and compare tests need.

    .venv/bin/python tests/data/results/trim.py /tmp/res/RUN_DIR ...

Kept whole: status, scenario, profile, lab, timeline, checkpoints (states, sockstat,
buffers, per-connection totals) and the metadata fields the report shows. Trimmed:
``by_cache`` keeps every attributed row and the 8 largest other rows (the stored
totals, drift included, are the analysis' own and still cover every row);
``slab_aliases`` and ``objsize`` keep the caches named in those rows; ``net_sysctls``
keeps net.core.*, net.ipv4.tcp_* and ip_local_port_range.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP_OTHER_ROWS = 8


def keep_sysctl(name: str) -> bool:
    return (name.startswith(("net.core.", "net.ipv4.tcp_"))
            or name == "net.ipv4.ip_local_port_range")


def trim(result: dict) -> dict:
    named: set[str] = set()
    for cp in result.get("checkpoints", []):
        pcb = cp.get("per_connection_bytes")
        if not pcb:
            continue
        rows = pcb["by_cache"]
        kept = [r for r in rows if r["attributed"]]
        others = sorted((r for r in rows if not r["attributed"]), key=lambda r: -abs(r["bytes"]))
        kept += others[:KEEP_OTHER_ROWS]
        pcb["by_cache"] = sorted(kept, key=lambda r: -abs(r["bytes"]))
        named |= {r["cache"] for r in pcb["by_cache"]}
    meta = result["metadata"]
    meta["slab_aliases"] = {k: v for k, v in (meta.get("slab_aliases") or {}).items() if k in named}
    meta["objsize"] = {k: v for k, v in (meta.get("objsize") or {}).items() if k in named}
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
