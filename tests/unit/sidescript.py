"""scenarios/side.py as a module, for unit tests of its pure parts.

It is a stand-alone script run on lab hosts (standard library only), not a package module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "side", Path(__file__).resolve().parents[2] / "scenarios" / "side.py")
side = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(side)
