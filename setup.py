"""Package layout only; everything else is in pyproject.toml.

A checkout keeps scenarios/, lab/ and images/ at the top, where users read and edit them.
The wheel carries the same trees as package data under orchestrator/_data/: the package
names orchestrator._data.<folder> are mapped onto the top-level folders (package_dir), so
setuptools copies them into the wheel and the sdist with no copy step and no duplicate in
the tree. pyproject.toml alone cannot do this: its package list is either found
(which cannot add mapped names) or fixed (which new subpackages would have to be added to).
`pip install -e .` needs none of it: orchestrator/resources.py prefers the checkout's own
folders, and the editable finder maps the same names onto them anyway.
"""

from setuptools import find_namespace_packages, setup

# orchestrator._data.<name> -> top-level folder, and the files of each to carry.
DATA_TREES = {
    "scenarios": ["*.yaml"],  # side*.py and sockdiag.py go in as the package's modules
    "lab": ["*.yaml"],
    "lab.profiles": ["*.yaml"],
    "images.node": ["*"],
}

setup(
    packages=find_namespace_packages(include=["orchestrator", "orchestrator.*"],
                                     exclude=["*.__pycache__"])
    + [f"orchestrator._data.{name}" for name in DATA_TREES],
    package_dir={f"orchestrator._data.{top}": top for top in ("scenarios", "lab", "images")},
    package_data={
        "orchestrator.report.templates": ["*"],
        "orchestrator.results": ["*.json"],  # result.schema.json
        "orchestrator.report": ["*.json"],  # published-3.10.json
        "orchestrator.ledger": ["*.bt"],
        **{f"orchestrator._data.{name}": globs for name, globs in DATA_TREES.items()},
    },
)
