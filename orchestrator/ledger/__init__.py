"""The allocation ledger (``--ledger``): live slab objects and pages per lab host, from the
kernel's kmem tracepoints through bpftrace. tracer.py runs bpftrace, parse.py reads its
dumps, attribution.py turns them into the result's ``ledger`` section."""
