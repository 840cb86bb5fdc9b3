"""scenarios/side.py as a module, for unit tests of its pure parts.

It is a stand-alone script run on lab hosts (standard library only), not a package module.
Its helpers (side_worker.py, side_timeline.py) sit beside it and are imported by name, as
when it runs from a checkout: the scenarios folder goes on sys.path first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
if str(SCENARIOS) not in sys.path:
    sys.path.insert(0, str(SCENARIOS))

_SPEC = importlib.util.spec_from_file_location("side", SCENARIOS / "side.py")
side = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(side)
