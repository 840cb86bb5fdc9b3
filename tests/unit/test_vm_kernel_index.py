"""Kernel versions resolved against a captured Debian package index (tests/data/vm/packages/:
the cloud-kernel stanzas of each suite's Packages file, 2026-12-01), and the private apt
configuration's files. No apt, no network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.backends.vm import archive, kernels
from orchestrator.backends.vm.debindex import (
    KernelIndex,
    compare_versions,
    depends,
    parse_packages,
)
from orchestrator.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "vm" / "packages"
SERIES = ["5.10", "6.1", "6.12", "6.16", "6.17", "6.18", "7.2", "7.3"]


def captured() -> KernelIndex:
    return KernelIndex({p.name.removesuffix(".Packages"): parse_packages(p.read_text())
                        for p in sorted(DATA.glob("*.Packages"))})


def test_parse_keeps_kernel_stanzas_only() -> None:
    stanzas = parse_packages((DATA / "bullseye.Packages").read_text())
    names = [s["Package"] for s in stanzas]
    assert "0ad" not in names and "linux-image-cloud-amd64" not in names  # no digit after
    assert "linux-image-5.10.0-32-cloud-amd64" in names
    st = next(s for s in stanzas if s["Package"] == "linux-image-5.10.0-32-cloud-amd64")
    assert st["Version"] == "5.10.223-1" and len(st["SHA256"]) == 64 and int(st["Size"]) > 10**7


@pytest.mark.parametrize("spec, package, version, suite", [
    ("5.10", "linux-image-5.10.0-46-cloud-amd64", "5.10.262-1", "bullseye-security"),
    # bookworm-security's 6.1.0-57, not bullseye-security's 6.1.0-0.deb11.52 nor 6.12
    ("6.1", "linux-image-6.1.0-57-cloud-amd64", "6.1.192-3", "bookworm-security"),
    # newest 6.12 across bookworm-backports, bookworm-security, trixie, trixie-security
    ("6.12", "linux-image-6.12.118+deb13-cloud-amd64", "6.12.118-1", "trixie-security"),
    ("6.16", "linux-image-6.16.12+deb13-cloud-amd64", "6.16.12-1~bpo13+1", "trixie-backports"),
    ("6.17", "linux-image-6.17.13+deb13-cloud-amd64", "6.17.13-1~bpo13+1", "trixie-backports"),
    ("6.18", "linux-image-6.18.15+deb13-cloud-amd64", "6.18.15-1~bpo13+1", "trixie-backports"),
    ("7", "linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", "trixie-backports"),
    ("7.2", "linux-image-7.2.12+deb13-cloud-amd64", "7.2.12-1~bpo13+1", "trixie-backports"),
    ("6.1.0-50", "linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", "bookworm"),
    # 6.12.95 is in trixie-security and (a backport, ~bpo12) in bookworm-backports
    ("6.12.95", "linux-image-6.12.95+deb13-cloud-amd64", "6.12.95-1", "trixie-security"),
    ("6.12.95+deb12", "linux-image-6.12.95+deb12-cloud-amd64", "6.12.95-1~bpo12+1",
     "bookworm-backports"),
    ("linux-image-5.10.0-32-cloud-amd64", "linux-image-5.10.0-32-cloud-amd64", "5.10.223-1",
     "bullseye"),
])
def test_resolve_newest(spec: str, package: str, version: str, suite: str) -> None:
    found = captured().resolve(spec)
    assert found is not None
    assert (found.package, found.version, found.suite) == (package, version, suite)


def test_single_package_kernels_are_one_deb() -> None:
    for spec in ("5.10", "6.1", "6.12", "6.18"):
        found = captured().resolve(spec)
        assert [d.package for d in found.debs] == [found.package]


def test_from_6_19_the_image_is_a_meta_package() -> None:
    found = captured().resolve("7")
    assert [d.package for d in found.debs] == [
        "linux-image-7.3.4+deb13-cloud-amd64", "linux-base-7.3.4+deb13-cloud-amd64",
        "linux-binary-7.3.4+deb13-cloud-amd64", "linux-modules-7.3.4+deb13-cloud-amd64"]
    assert {d.version for d in found.debs} == {"7.3.4-1~bpo13+1"}
    sizes = {d.package.split("-")[1]: d.size for d in found.debs}
    assert sizes["image"] < 10_000 < sizes["binary"] < sizes["modules"]
    assert found.debs[2].filename == ("pool/main/l/linux-signed-amd64/linux-binary-7.3.4+deb13-"
                                      "cloud-amd64_7.3.4-1~bpo13+1_amd64.deb")


def test_series_are_the_fetchable_ones() -> None:
    index = captured()
    assert index.series() == SERIES
    assert [k.upstream for k in index.newest_per_series()] == [
        "5.10.262", "6.1.192", "6.12.118", "6.16.12", "6.17.13", "6.18.15", "7.2.12", "7.3.4"]


@pytest.mark.parametrize("spec, why", [
    # the index lists 6.19, 7.0 and 7.1 images, but not the modules packages they need
    ("6.19", "linux-image-6.19.14+deb13-cloud-amd64 6.19.14-1~bpo13+1 (trixie-backports) "
             "depends on linux-modules-6.19.14+deb13-cloud-amd64 (= 6.19.14-1~bpo13+1), which "
             "the index does not have; kernels available: " + ", ".join(SERIES)),
    ("7.0", "linux-image-7.0.13+deb13-cloud-amd64 7.0.13-1~bpo13+1 (trixie-backports) "
            "depends on linux-modules-7.0.13+deb13-cloud-amd64 (= 7.0.13-1~bpo13+1), which "
            "the index does not have; kernels available: " + ", ".join(SERIES)),
    ("4.19", "no linux-image-4.19*-cloud-amd64 in Debian's archive; kernels available: "
             + ", ".join(SERIES)),
])
def test_unavailable_versions_say_why(spec: str, why: str) -> None:
    index = captured()
    assert index.resolve(spec) is None
    assert index.why_not(spec) == why


def test_meta_dbg_and_other_flavours_never_resolve() -> None:
    index = captured()
    names = {k.package for k in index.kernels}
    assert not {n for n in names if n.endswith("-dbg") or "-cloud-amd64" not in n}
    assert "linux-image-6.1-cloud-amd64" not in names  # bullseye-security's meta package
    assert index.resolve("linux-image-6.1-cloud-amd64") is None
    assert index.resolve("6") .upstream == "6.18.15"


def test_unknown_version_error_and_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_INDEX", captured())
    with pytest.raises(InputError) as err:
        kernels.resolve("4.19")
    assert str(err.value) == ("kernel '4.19': no linux-image-4.19*-cloud-amd64 in Debian's "
                              "archive; kernels available: 5.10, 6.1, 6.12, 6.16, 6.17, 6.18, "
                              "7.2, 7.3; or give a path to a vmlinuz")
    assert kernels.expand(["all"]) == SERIES + ["host"]
    assert kernels.expand(["6.1", "all"]) == ["6.1", "5.10"] + SERIES[2:] + ["host"]
    assert kernels.expand(["host", "all"]) == ["host"] + SERIES
    assert kernels.expand(["6.1", "host"]) == ["6.1", "host"]


def test_cache_key_is_the_exact_packages() -> None:
    index = captured()
    one, split = index.resolve("6.1"), index.resolve("7")
    assert kernels.cache_key(one) == one.debs[0].sha256  # as before: the .deb's SHA256
    key = kernels.cache_key(split)
    assert len(key) == 64 and key not in {d.sha256 for d in split.debs}
    assert kernels.cache_key(index.resolve("7.2")) != key


@pytest.mark.parametrize("a, b, want", [
    ("6.12.95-1~bpo12+1", "6.12.95-1", -1), ("1.0~rc1-1", "1.0-1", -1),
    ("7.3.4-1~bpo13+1", "7.2.12-1~bpo13+1", 1), ("1:1.0-1", "2.0-1", 1),
    ("6.1.192-3", "6.1.192-3", 0), ("6.1.192-10", "6.1.192-9", 1), ("1.0a-1", "1.0-1", 1),
    ("1.0+b1", "1.0", 1),
])
def test_debian_version_order(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want
    assert compare_versions(b, a) == -want


def test_depends_keeps_exact_versions_and_drops_alternatives() -> None:
    st = {"Depends": "dracut | initramfs-tools (>= 0.120), kmod, linux-base-7.3.4+deb13-cloud-"
                     "amd64 (= 7.3.4-1~bpo13+1)"}
    assert depends(st) == [("kmod", None),
                           ("linux-base-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1")]


def test_private_apt_configuration_names_no_machine_path(tmp_path: Path) -> None:
    conf = archive.setup(tmp_path)
    text = conf.read_text()
    assert 'Dir::Etc::Main "/dev/null";' in text  # /etc/apt/apt.conf unread
    assert f'Dir::Etc::Parts "{tmp_path}/apt.conf.d";' in text  # /etc/apt/apt.conf.d unread
    assert f'Dir::State::status "{tmp_path}/status";' in text  # dpkg's status unread
    for line in text.splitlines():
        if line.startswith("Dir::") and '"' in line:
            value = line.split('"')[1]
            assert value in ("", "/dev/null") or value.startswith(str(tmp_path)), line
    sources = (tmp_path / "sources.list").read_text().splitlines()
    assert [line.split()[-2] for line in sources] == [
        "bullseye", "bullseye-security", "bookworm", "bookworm-security", "bookworm-backports",
        "trixie", "trixie-security", "trixie-backports"]
    assert all(f"[signed-by={archive.KEYRING}]" in line for line in sources)
    assert sources[1].split()[2] == "http://security.debian.org/debian-security"


def test_index_from_cached_lists_without_apt(tmp_path: Path) -> None:
    shutil.copytree(archive.apt_dir(), tmp_path / "apt")  # tests/unit/conftest.py's lists
    root = tmp_path / "apt"
    (root / "index.json").unlink(missing_ok=True)
    os.utime(root / "updated")  # refreshed now: apt-get is not run
    index = archive.load_index(print, root)
    assert index.series() == SERIES
    assert (root / "index.json").is_file()  # the parsed stanzas, kept
    again = archive.load_index(print, root)
    assert again.resolve("7").package == index.resolve("7").package
