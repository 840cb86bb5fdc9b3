"""Where tcplab finds its own files: $TCPLAB_ROOT file by file, then the checkout, then the
wheel's package data (the wheel itself: tests/integration/test_wheel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import resources
from orchestrator.errors import LabError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCPLAB_ROOT", raising=False)


def installed(monkeypatch: pytest.MonkeyPatch, data: Path | None) -> None:
    """As if installed from the wheel: no checkout, package data in ``data``."""
    monkeypatch.setattr(resources, "checkout", lambda: None)
    monkeypatch.setattr(resources, "package_data", lambda: data)


def test_a_checkout_uses_its_own_files() -> None:
    assert resources.checkout() == REPO
    assert resources.package_data() is None  # the wheel's _data/ exists only in the wheel
    assert resources.side_script() == REPO / "scenarios" / "side.py"
    assert resources.sockdiag_script() == REPO / "scenarios" / "sockdiag.py"
    assert resources.scenarios_dir() == REPO / "scenarios"
    assert resources.profiles_dir() == REPO / "lab" / "profiles"
    assert resources.default_lab() == REPO / "lab" / "default.yaml"
    assert (resources.images_dir() / "node" / "Dockerfile").is_file()
    assert (resources.templates_dir() / "report.html.j2").is_file()


def test_tcplab_root_replaces_file_by_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "mine.yaml").write_text("description: mine\n")
    monkeypatch.setenv("TCPLAB_ROOT", str(tmp_path))
    assert resources.scenarios_dir() == tmp_path / "scenarios"
    assert resources.side_script() == REPO / "scenarios" / "side.py"  # not in the override
    assert resources.profiles_dir() == REPO / "lab" / "profiles"


def test_an_installed_package_uses_its_package_data(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "_data"
    (data / "scenarios").mkdir(parents=True)
    (data / "scenarios" / "side.py").write_text("")
    (data / "lab" / "profiles").mkdir(parents=True)
    installed(monkeypatch, data)
    assert resources.bases() == [data]
    assert resources.side_script() == data / "scenarios" / "side.py"
    assert resources.profiles_dir() == data / "lab" / "profiles"


def test_a_missing_file_names_where_it_looked(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, tmp_path)
    with pytest.raises(LabError) as exc:
        resources.default_lab()
    assert str(exc.value) == (
        f"tcplab's own file lab/default.yaml is missing (looked in {tmp_path}): reinstall "
        "tcplab (pip install tcplab-*.whl) or run it from a complete checkout")
    installed(monkeypatch, None)
    with pytest.raises(LabError, match=r"looked in nowhere \(a zipped install\?\)"):
        resources.side_script()
