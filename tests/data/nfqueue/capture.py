"""Capture real nfnetlink_queue messages of this kernel for tests/unit/test_delayline.py.

    sudo .venv/bin/python tests/data/nfqueue/capture.py --out tests/data/nfqueue   # ~5 s

Two namespaces joined by a veth (tests/integration/delaylab.py), queue 3 bound in the
second on PREROUTING of its veth, with scenarios/delayline.py's own message builders.
Saved, as hex, every datagram the kernel sent: the acknowledgements of the bind and the
GSO flag, the refusal of a second bind (which echoes the request), a UDP packet (copied
whole), a TCP GSO packet (cut at the copy range: NFQA_CAP_LEN, NFQA_SKB_INFO), the error
for a verdict on an unknown id; and /proc/net/netfilter/nfnetlink_queue.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.integration.delaylab import LinkLab, sh, wait_listening  # noqa: E402

spec = importlib.util.spec_from_file_location("delayline", ROOT / "scenarios" / "delayline.py")
dl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dl)  # type: ignore[union-attr]
QUEUE = 3


def recv_one(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(65536)


def setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def in_namespace(ns: str) -> None:
    """Enter a network namespace (this thread: the capture side)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    setns(fd)
    os.close(fd)


def capture(out: Path) -> None:
    got: dict[str, dict] = {}

    def keep(name: str, data: bytes, what: str) -> None:
        got[name] = {"what": what, "hex": data.hex()}

    with LinkLab(f"tlcap{os.getpid() % 10000}") as lab:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        in_namespace(lab.ns["b"])
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, dl.NETLINK_NETFILTER)
        sock.bind((0, 0))
        sock.sendto(dl.bind_message(QUEUE, 11, 500), (0, 0))
        keep("bind_ack", recv_one(sock), "answer to bind_message(3, seq 11, maxlen 500): error 0")
        sock.sendto(dl.flags_message(QUEUE, 12, dl.NFQA_CFG_F_GSO, dl.NFQA_CFG_F_GSO), (0, 0))
        keep("flags_ack", recv_one(sock), "answer to flags_message(3, seq 12, GSO, GSO): error 0")
        other = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, dl.NETLINK_NETFILTER)
        other.bind((0, 0))
        other.sendto(dl.bind_message(QUEUE, 13, 500), (0, 0))
        keep("bind_refused", recv_one(other), "a second socket binding queue 3 (seq 13): EPERM, "
             "the request echoed")
        other.close()
        sh("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", lab.dev["b"], "-j", "NFQUEUE",
           "--queue-num", str(QUEUE))
        setns(home)
        sink = lab.tool("b", "sink", 5001)
        wait_listening(lab, "b", 5001)
        sender = lab.exec("a", sys.executable, "-c",
                          "import socket,time;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                          f"s.sendto(b'tcplab-udp-probe',('{lab.B_ADDR}',9));time.sleep(0.2);"
                          f"t=socket.create_connection(('{lab.B_ADDR}',5001));"
                          "t.sendall(b'x'*2000000);t.close()")
        deadline = time.monotonic() + 30
        while sender.poll() is None and time.monotonic() < deadline:
            try:
                data = recv_one(sock, 0.2)
            except TimeoutError:
                continue
            for kind, _flags, body in dl.split_messages(data):
                if kind != dl.PACKET_TYPE:
                    continue
                pkt = dl.parse_packet(body)
                if pkt.head[9:10] == b"\x11" and "packet_udp" not in got:
                    keep("packet_udp", data, "a 44-byte UDP datagram (16 bytes of data), copied whole")
                if pkt.gso and "packet_gso" not in got:
                    keep("packet_gso", data, "a TCP GSO packet, cut at the 128-byte copy range")
                sock.sendto(dl.verdict_message(QUEUE, pkt.id, dl.NF_ACCEPT), (0, 0))
        sender.wait(30)
        sink.communicate(timeout=30)
        sock.sendto(dl.verdict_message(QUEUE, 999999, dl.NF_ACCEPT), (0, 0))
        keep("verdict_unknown_id", recv_one(sock), "verdict on id 999999 (none queued): ENOENT")
        in_namespace(lab.ns["b"])
        proc = Path("/proc/net/netfilter/nfnetlink_queue").read_text()
        setns(home)
        sock.close()
    (out / "nfnetlink_queue.txt").write_text(proc)
    manifest = {"kernel": platform.release(), "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "queue": QUEUE, "copy_range": dl.COPY_RANGE, "messages": got}
    (out / "messages.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"captured {sorted(got)} into {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp()))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    capture(args.out)


if __name__ == "__main__":
    main()
