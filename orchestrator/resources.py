"""Where tcplab's own files are: side scripts, scenarios, profiles, the default lab file and
the node image recipe. The one place that knows; everything else asks here.

The files live at the top of a checkout (``scenarios/``, ``lab/``, ``images/``) where users
read and edit them. A wheel carries the same trees as package data under
``orchestrator/_data/`` (setup.py maps them there). Each lookup takes the first of:

1. ``$TCPLAB_ROOT``: a directory shaped like a checkout whose files replace the shipped
   ones, file by file (a path it lacks falls through to the next);
2. the checkout this code runs from (running from the tree, or ``pip install -e .``), so
   users' edits are what runs;
3. the package data of an installed wheel, through ``importlib.resources``.

Users' own files (results, lab files passed with ``--lab``) are not resources: they stay
relative to the current directory.
"""

from __future__ import annotations

import os
from importlib import resources as _importlib_resources
from pathlib import Path

from .errors import LabError

PACKAGE = "orchestrator"
DATA = "_data"  # the folder inside the installed package that holds the shipped trees
MARKER = "scenarios/side.py"  # a directory holding this (and pyproject.toml) is a checkout


def checkout() -> Path | None:
    """The source checkout this code runs from, or None for an installed wheel."""
    package = _importlib_resources.files(PACKAGE)
    if not isinstance(package, Path):
        return None
    parent = package.resolve().parent
    if (parent / "pyproject.toml").is_file() and (parent / MARKER).is_file():
        return parent
    return None


def bases() -> list[Path]:
    """The directories searched for a resource, first match wins (see the module doc)."""
    found: list[Path] = []
    env = os.environ.get("TCPLAB_ROOT")
    if env:
        found.append(Path(env).resolve())
    tree = checkout()
    if tree is not None:
        found.append(tree)
    data = package_data()
    if data is not None:
        found.append(data)
    return found


def package_data() -> Path | None:
    """``orchestrator/_data`` of an installed wheel; None in a checkout or a zipped install."""
    data = _importlib_resources.files(PACKAGE) / DATA
    return data if isinstance(data, Path) and data.is_dir() else None


def path(relative: str) -> Path:
    """The real path of a shipped file or folder, e.g. ``path("scenarios/side.py")``.

    Always an existing path on disk: side scripts are run by ``python3`` on lab hosts and
    copied there, so they cannot stay inside a zip.
    """
    searched = bases()
    for base in searched:
        candidate = base / relative
        if candidate.exists():
            return candidate
    where = ", ".join(str(b) for b in searched) or "nowhere (a zipped install?)"
    raise LabError(f"tcplab's own file {relative} is missing (looked in {where}): reinstall "
                   "tcplab (pip install tcplab-*.whl) or run it from a complete checkout")


def scenarios_dir() -> Path:
    return path("scenarios")


def profiles_dir() -> Path:
    return path("lab/profiles")


def images_dir() -> Path:
    """The folder holding the node image recipe (``node/Dockerfile``)."""
    return path("images")


def default_lab() -> Path:
    return path("lab/default.yaml")


def templates_dir() -> Path:
    """The report's HTML templates: inside the package itself, in a checkout and a wheel."""
    templates = _importlib_resources.files(PACKAGE) / "report" / "templates"
    if not isinstance(templates, Path):
        raise LabError("tcplab's report templates are inside a zip: install tcplab unzipped "
                       "(pip install tcplab-*.whl)")
    return templates


def side_script() -> Path:
    return path("scenarios/side.py")


SIDE_MODULES = ("side_timeline", "side_worker")  # helpers side.py imports, in load order

# The loader that starts the one program: stdlib only, Python >= 3.7 (it runs on lab hosts).
_LOADER = """\
import sys as _tcplab_sys, types as _tcplab_types
for _tcplab_name, _tcplab_text in _TCPLAB_MODULES:
    _tcplab_module = _tcplab_types.ModuleType(_tcplab_name)
    _tcplab_module.__file__ = _tcplab_name + ".py"
    _tcplab_sys.modules[_tcplab_name] = _tcplab_module
    exec(compile(_tcplab_text, _tcplab_name + ".py", "exec"), _tcplab_module.__dict__)
exec(compile(_TCPLAB_MAIN, "side.py", "exec"))
"""


def side_program() -> str:
    """The side script as ONE runnable text, for lab hosts that get a single program.

    The ssh and VM backends run it as ``python3 -c <text>``, Docker copies it into the
    container as /opt/tcplab/side.py and netns runs it from the run's directory. The text
    defines each helper module (``SIDE_MODULES``) in ``sys.modules`` from its embedded
    source, then runs side.py's source as ``__main__``, so side.py's own imports find them.
    """
    modules = [(name, path(f"scenarios/{name}.py").read_text()) for name in SIDE_MODULES]
    return ("# tcplab side program, built by orchestrator/resources.py from scenarios/side*.py\n"
            f"_TCPLAB_MODULES = {modules!r}\n"
            f"_TCPLAB_MAIN = {side_script().read_text()!r}\n" + _LOADER)


def sockdiag_script() -> Path:
    return path("scenarios/sockdiag.py")
