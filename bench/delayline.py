#!/usr/bin/env python3
"""How fast scenarios/delayline.py stays faithful on this machine (root; about 3 minutes).

    sudo .venv/bin/python bench/delayline.py [--seconds S] [--json FILE]

Two namespaces joined by a veth (tests/integration/delaylab.py), the delay line in the
receiving one on PREROUTING of its veth, 10 ms of delay (5 ms for TCP). Three series:

1. packet rate: UDP datagrams of 1472 bytes of data (1514-byte frames) at rising rates,
   no link rate: what arrives, the one-way delay above the configured one, the delay
   line's lateness (verdict sent minus due time) and its CPU;
2. link rate: a TCP bulk transfer through --rate-bps R, with and without GSO: goodput
   against R x 1448/1514 (the payload share of a full frame);
3. capacity: the same transfer with no link rate: what the delay line passes at most.

Faithful: nothing lost that the link did not drop, goodput within 10% of the expected, and
99% of packets released within 1 ms of their due time. Prints a Markdown table per series.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.delaylab import LinkLab, result, wait_listening  # noqa: E402

PAYLOAD = 1448 / 1514
FAITHFUL_P99_US = 1000


def cpu_share(line, before: float, seconds: float) -> float:  # noqa: ANN001 - DelayLineProcess
    return (line.cpu_seconds() - before) / seconds


def packet_rate(lab: LinkLab, tmp: Path, pps: int, seconds: float, *options: str) -> dict:
    line = lab.delay_line("b", tmp, "--delay-us", "10000", *options)
    meter = lab.tool("b", "meter", 9000, 30, rt=True)
    wait_listening(lab, "b", 9000, udp=True)
    cpu, start = line.cpu_seconds(), time.monotonic()
    flood = result(lab.tool("a", "flood", lab.B_ADDR, 9000, pps, 1500, seconds))
    took = time.monotonic() - start
    got = result(meter)
    share = cpu_share(line, cpu, took)
    stats = line.stop()
    late = stats["lateness_us"]
    achieved = flood["sent"] / flood["seconds"]
    return {"series": "packet rate", "pps_asked": pps, "pps_sent": round(achieved),
            "mbit": round(achieved * 1514 * 8 / 1e6, 1), "sent": flood["sent"],
            "received": got["received"], "dropped_by_limit": stats["dropped_by_limit"],
            "undelivered": stats["dropped_undelivered"], "enobufs": stats["enobufs"],
            "extra_one_way_us": {k: (got[k + "_us"] - 10000) if got[k + "_us"] is not None else None
                                 for k in ("p50", "p99", "p99_9")},
            "lateness_us": late, "cpu": round(share, 3),
            "faithful": got["received"] == flood["sent"] and (late["p99"] or 0) <= FAITHFUL_P99_US}


def bulk(lab: LinkLab, tmp: Path, rate: int, seconds: float, *options: str) -> dict:
    rate_opts = ("--rate-bps", str(rate)) if rate else ()
    line = lab.delay_line("b", tmp, "--delay-us", "5000", "--limit", "10000", *rate_opts, *options)
    sink = lab.tool("b", "sink", 5001)
    wait_listening(lab, "b", 5001)
    cpu, start = line.cpu_seconds(), time.monotonic()
    result(lab.tool("a", "send", lab.B_ADDR, 5001, seconds), timeout=seconds + 60)
    took = time.monotonic() - start
    samples = result(sink)["samples"]
    share = cpu_share(line, cpu, took)
    stats = line.stop()
    first = next(s for s in samples if s[0] >= 1.0)
    last = samples[-2] if len(samples) > 2 else samples[-1]
    goodput = (last[1] - first[1]) * 8 / max(1e-9, last[0] - first[0])
    late = stats["lateness_us"]
    row = {"series": "link rate" if rate else "capacity", "rate_mbit": rate / 1e6 if rate else None,
           "gso": "--no-gso" not in options, "goodput_mbit": round(goodput / 1e6, 1),
           "packets": stats["packets"], "gso_packets": stats["gso_packets"],
           "pps": round(stats["packets"] / took), "dropped_by_limit": stats["dropped_by_limit"],
           "lateness_us": late, "cpu": round(share, 3)}
    if rate:
        row["goodput_share"] = round(goodput / (rate * PAYLOAD), 3)
        row["faithful"] = abs(goodput / (rate * PAYLOAD) - 1) <= 0.10 and (late["p99"] or 0) <= FAITHFUL_P99_US
    return row


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _title, key in columns:
            value = row
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each transfer (4)")
    parser.add_argument("--json", type=Path, help="also write every row here (JSON lines)")
    parser.add_argument("--pps", default="1000,5000,10000,20000,40000",
                        help="packet rates of series 1 (comma-separated)")
    parser.add_argument("--rates", default="100,200,500,1000", help="link rates of series 2, Mbit/s")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/delayline.py: needs root (network namespaces, NFQUEUE)")
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="delayline-bench-"))
    with LinkLab(f"tlbd{os.getpid() % 10000}") as lab:
        for pps in [int(p) for p in args.pps.split(",") if p]:
            rows.append(packet_rate(lab, tmp, pps, args.seconds))
            print(json.dumps(rows[-1]), flush=True)
        for mbit in [int(r) for r in args.rates.split(",") if r]:
            for options in ((), ("--no-gso",)):
                rows.append(bulk(lab, tmp, mbit * 1_000_000, args.seconds, *options))
                print(json.dumps(rows[-1]), flush=True)
        for options in ((), ("--no-gso",)):
            rows.append(bulk(lab, tmp, 0, args.seconds, *options))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    late = [("lateness p50/p99/p99.9 µs", "lateness_us.p50"), ("", "lateness_us.p99"),
            ("", "lateness_us.p99_9")]
    print("\n" + table([r for r in rows if r["series"] == "packet rate"], [
        ("packets/s", "pps_sent"), ("Mbit/s", "mbit"), ("sent", "sent"), ("received", "received"),
        ("one-way above delay p50/p99 µs", "extra_one_way_us.p50"), ("", "extra_one_way_us.p99"),
        *late, ("CPU", "cpu"), ("faithful", "faithful")]))
    print("\n" + table([r for r in rows if r["series"] != "packet rate"], [
        ("rate Mbit/s", "rate_mbit"), ("GSO", "gso"), ("goodput Mbit/s", "goodput_mbit"),
        ("of expected", "goodput_share"), ("packets/s", "pps"), *late, ("CPU", "cpu"),
        ("faithful", "faithful")]))


if __name__ == "__main__":
    main()
