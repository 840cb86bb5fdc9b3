"""Unit tests of the node image (backends/docker/image.py, backends/recipe.py) that need
no Docker daemon."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from orchestrator.backends import recipe
from orchestrator.backends.docker import image as images
from orchestrator.backends.docker.image import ensure_image
from orchestrator.backends.recipe import (
    debian_mirror,
    parse_deb822_mirror,
    parse_sources_list_mirror,
    recipe_hash,
)
from orchestrator.errors import InputError, RunError

REPO_IMAGES = Path(__file__).resolve().parents[2] / "images"

# The shape of Debian 12's /etc/apt/sources.list.d/debian.sources.
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def make_recipe(root: Path) -> Path:
    node = root / "images" / "node"
    node.mkdir(parents=True)
    (node / "Dockerfile").write_text("ARG BASE=debian:bookworm-slim\nFROM ${BASE}\n")
    (node / "entrypoint.sh").write_text("#!/bin/sh\nexec sshd -D -e\n")
    (node / "conf").mkdir()
    (node / "conf" / "sshd_config").write_text("UseDNS no\n")
    return root / "images"


# ------------------------------------------------------------------ recipe_hash


def test_recipe_hash_is_deterministic_and_location_independent(tmp_path: Path) -> None:
    first = make_recipe(tmp_path / "a")
    second = make_recipe(tmp_path / "b")
    digest = recipe_hash(first)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert recipe_hash(first) == digest
    assert recipe_hash(second) == digest
    # images/ and images/node name the same recipe.
    assert recipe_hash(first / "node") == digest


def test_recipe_hash_ignores_mtime_and_mode(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    before = recipe_hash(recipe)
    script = recipe / "node" / "entrypoint.sh"
    script.chmod(0o755)
    script.touch()
    assert recipe_hash(recipe) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda node: (node / "Dockerfile").write_text("FROM scratch\n"),
        lambda node: (node / "conf" / "sshd_config").write_text("UseDNS yes\n"),
        lambda node: (node / "extra.txt").write_text(""),
        lambda node: (node / "entrypoint.sh").rename(node / "start.sh"),
        lambda node: (node / "conf" / "sshd_config").rename(node / "conf" / "sshd_confi"),
    ],
    ids=["content", "nested-content", "new-empty-file", "rename", "rename-nested"],
)
def test_recipe_hash_changes_with_any_file(tmp_path: Path, change: Any) -> None:
    recipe = make_recipe(tmp_path)
    before = recipe_hash(recipe)
    change(recipe / "node")
    assert recipe_hash(recipe) != before


def test_recipe_hash_without_recipe_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Dockerfile"):
        recipe_hash(tmp_path)


def test_repository_recipe_lists_the_node_packages() -> None:
    packages = recipe.recipe_packages(REPO_IMAGES)
    assert set(packages) >= {"python3", "iproute2", "procps", "openssh-server"}
    lines = (REPO_IMAGES / "node" / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line.strip() and not line.startswith("#")]
    assert instructions[:2] == ["ARG BASE=debian:bookworm-slim", "FROM ${BASE}"]


# ------------------------------------------------------------------ mirror parsing


def test_deb822_picks_the_bookworm_stanza_not_security() -> None:
    assert parse_deb822_mirror(DEBIAN_SOURCES) == "http://deb.debian.org/debian"
    assert (
        parse_deb822_mirror(DEBIAN_SOURCES, "bookworm-security")
        == "http://deb.debian.org/debian-security"
    )
    assert parse_deb822_mirror(DEBIAN_SOURCES, "trixie") is None


def test_deb822_skips_disabled_source_and_non_deb_types() -> None:
    text = """\
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

types: deb-src deb
uris:
 cdrom:[Debian]/
 https://mirror.example/debian/
suites: bookworm
"""
    assert parse_deb822_mirror(text) == "https://mirror.example/debian"


def test_one_line_sources_list() -> None:
    text = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://ftp.example/debian/ bookworm main
"""
    assert parse_sources_list_mirror(text) == "http://ftp.example/debian"
    assert parse_sources_list_mirror("deb [ arch=amd64 ] file:/srv/debian bookworm main") == (
        "file:/srv/debian"
    )
    assert parse_sources_list_mirror("") is None


def test_debian_mirror_reads_deb822_first(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    (tmp_path / "sources.list").write_text("deb http://other.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "x.list.disabled").write_text("garbage")
    assert debian_mirror(tmp_path) == "http://deb.debian.org/debian"


def test_debian_mirror_falls_back_to_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://other.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def test_debian_mirror_none_is_input_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "node.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
    )
    with pytest.raises(InputError, match="no Debian mirror for suite 'bookworm'"):
        debian_mirror(tmp_path)


# ------------------------------------------------------------------ ensure_image logic


class FakeImages:
    def __init__(self, present: dict[str, Any]) -> None:
        self.present = present

    def get(self, ref: str) -> Any:
        if ref in self.present:
            return self.present[ref]
        raise docker.errors.ImageNotFound(f"No such image: {ref}")


class FakeClient:
    def __init__(self, present: dict[str, Any], pull: Any) -> None:
        self.images = FakeImages(present)
        self.api = SimpleNamespace(pull=pull)


def refuse_pull(*_args: Any, **_kwargs: Any) -> Any:
    raise docker.errors.APIError("500 Server Error", explanation="lookup registry: no such host")


def test_cached_image_builds_nothing() -> None:
    digest = recipe_hash(REPO_IMAGES)
    tag = f"tcplab/node:{digest[:12]}"
    found = SimpleNamespace(id="sha256:" + "ab" * 32, labels={"tcplab.method": "debootstrap"})

    def no_pull(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a cached image must not pull")

    info = ensure_image(FakeClient({tag: found}, no_pull), REPO_IMAGES, log=lambda _m: None)
    assert info == images.ImageInfo(tag, found.id, "debootstrap", True, digest)


def test_unreachable_registry_falls_back_to_debootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    messages: list[str] = []

    def fake_base(_client: Any, _node: Path, full: str, mirror: str, _log: Any) -> str:
        calls.append(("base", mirror))
        return f"tcplab/base:{full[:12]}"

    def fake_build(_client: Any, _node: Path, tag: str, base: str, _full: str, method: str) -> Any:
        calls.append(("build", base))
        return SimpleNamespace(id="sha256:" + "cd" * 32)

    monkeypatch.setattr(images, "debian_mirror", lambda: "http://mirror.example/debian")
    monkeypatch.setattr(images, "_ensure_debootstrap_base", fake_base)
    monkeypatch.setattr(images, "_build_node", fake_build)
    info = ensure_image(FakeClient({}, refuse_pull), REPO_IMAGES, log=messages.append)
    digest = recipe_hash(REPO_IMAGES)
    assert info.method == "debootstrap" and not info.cached
    assert calls == [
        ("base", "http://mirror.example/debian"),
        ("build", info.tag.replace("node", "base")),
    ]
    assert info.tag == f"tcplab/node:{digest[:12]}"
    said = "\n".join(messages)
    assert "no registry reachable" in said and "no such host" in said
    assert "http://mirror.example/debian" in said


def test_silent_registry_fails_fast() -> None:
    """A registry that never answers must not hold the build for minutes."""
    release = threading.Event()

    def hanging_pull(*_args: Any, **_kwargs: Any) -> Any:
        release.wait(30)
        return iter(())

    started = time.monotonic()
    try:
        with pytest.raises(images._RegistryUnavailable, match="no answer within"):
            images._pull_with_deadline(
                FakeClient({}, hanging_pull), "debian:bookworm-slim", answer_timeout=0.3
            )
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_pull_error_message_in_stream_is_reported() -> None:
    def pull(*_args: Any, **_kwargs: Any) -> Any:
        return iter([{"status": "Pulling"}, {"error": "manifest unknown"}])

    with pytest.raises(images._RegistryUnavailable, match="manifest unknown"):
        images._pull_with_deadline(FakeClient({}, pull), "debian:bookworm-slim")


def test_missing_debootstrap_is_run_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(RunError, match="apt-get install debootstrap"):
        images._ensure_debootstrap_base(
            FakeClient({}, refuse_pull), REPO_IMAGES / "node", "0" * 64, "http://m", print
        )


def test_remove_rootfs_removes_plain_directory(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("x\n")
    recipe.remove_rootfs(root, log=lambda _m: None)
    assert not root.exists()
