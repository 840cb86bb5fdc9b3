"""tcplab side script, the timeline: samples the lab host's own kernel from inside the
side process. Standard library only, Python >= 3.7 (it runs on lab hosts).
"""

from __future__ import annotations

import threading
import time

SAMPLE_KEYS = ("inuse", "tw", "orphan", "mem")
MAX_SAMPLES = 200_000  # about 5.5 hours at 10 Hz: older samples are dropped beyond it


class Timeline:
    """Samples this host's own kernel: /proc/net/sockstat's TCP line (this network
    namespace) and meminfo Slab, every ``interval`` s, in a thread of the side process.

    Used where the orchestrator cannot read the host's /proc itself (VMs, remote
    hosts). Times are this host's wall clock; the reply to the ``timeline`` operation
    carries the clock's reading (``now``) so the orchestrator can shift them onto its own.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.columns: dict = {"t": [], "slab_kb": [], **{k: [] for k in SAMPLE_KEYS}}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        with open("/proc/net/sockstat") as fh:
            tcp = next((line.split()[1:] for line in fh if line.startswith("TCP:")), [])
        values = dict(zip(tcp[::2], (int(v) for v in tcp[1::2])))
        with open("/proc/meminfo") as fh:
            slab = next((int(line.split()[1]) for line in fh if line.startswith("Slab:")), 0)
        cols = self.columns
        if len(cols["t"]) >= MAX_SAMPLES:
            for column in cols.values():
                del column[0]
        cols["t"].append(round(time.time(), 3))
        cols["slab_kb"].append(slab)
        for key in SAMPLE_KEYS:
            cols[key].append(values.get(key, 0))

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.sample()
            except (OSError, ValueError):
                pass

    def reply(self) -> dict:
        return {"now": time.time(), "interval": self.interval,
                "columns": {k: list(v) for k, v in self.columns.items()}}
