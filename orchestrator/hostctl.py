"""Small programs run with ``python3 -c`` on a lab host (standard library only there).

Kept as code strings so one path works for every backend: a local namespace, a
container over SSH or a remote machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

#: Applies the sysctls given as JSON in argv[1] (failures collected, not fatal), then
#: prints {"errors": {...}, "values": {every net.* sysctl: value}}.
APPLY_AND_DUMP = r"""
import json, os, sys
wanted = json.loads(sys.argv[1])
errors = {}
for name, value in wanted.items():
    try:
        with open('/proc/sys/' + name.replace('.', '/'), 'w') as fh:
            fh.write(value + '\n')
    except OSError as exc:
        errors[name] = exc.strerror or str(exc)
values = {}
for d, _, files in os.walk('/proc/sys/net'):
    for f in files:
        path = os.path.join(d, f)
        try:
            with open(path) as fh:
                values[path[10:].replace('/', '.')] = ' '.join(fh.read().split())
        except OSError:
            pass
print(json.dumps({'errors': errors, 'values': values}))
"""


def apply_argv(wanted: Mapping[str, str]) -> list[str]:
    return ["python3", "-c", APPLY_AND_DUMP, json.dumps(dict(wanted))]
