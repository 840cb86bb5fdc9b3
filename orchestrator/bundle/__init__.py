"""Shareable bundles: saved runs plus one reproducible setup, in one ``.tar.gz``.

``tcplab export RUN... -o FILE`` packs, for each run, ``results/<run>/result.json``,
``report.html`` and ``raw/``; and once, the setup of the first run: the resolved lab file,
the profile (resolved, and the files it was made from), the scenario as run, the node
image recipe, and ``bundle.json`` (schema ``tcplab.bundle/1``) listing every file with
its sha256 and how to rerun. ``tcplab run --bundle FILE`` reruns that setup here;
``tcplab compare FILE ...`` reads the runs inside. Format and safety rules: docs/bundles.md.

Only the files named above are packed, never keys: a file that looks like a private key
(``-----BEGIN ... PRIVATE KEY-----``, also inside ``.gz`` snapshots) or is named like
one refuses the export. Unpacking checks every member before anything is written: no
absolute paths, no ``..``, no links or devices, nothing the manifest does not list, and
every sha256 must match.
"""

from .layout import (
    BACKENDS,
    KEY_NAME,
    KEY_TEXT,
    LAB_FILE,
    MANIFEST,
    PROFILE_FILE,
    SCENARIO_FILE,
    SCHEMA,
    secret_reason,
)
from .pack import export, rerun_settings, scenario_document
from .rerun import Unpacked, apply_to_run_args, opened
from .unpack import is_bundle, unpack

__all__ = ["BACKENDS", "KEY_NAME", "KEY_TEXT", "LAB_FILE", "MANIFEST", "PROFILE_FILE",
           "SCENARIO_FILE", "SCHEMA", "Unpacked", "apply_to_run_args", "export", "is_bundle",
           "opened", "rerun_settings", "scenario_document", "secret_reason", "unpack"]
