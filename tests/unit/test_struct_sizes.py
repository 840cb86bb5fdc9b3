"""Tests of bench/struct_sizes.py: the bpftool raw-dump parser on real output, and the
bzImage/ELF unpacking on small built inputs.

tests/data/btf/raw-6.1.txt and raw-6.12.txt are excerpts of `bpftool btf dump file F
format raw` of Debian's 6.1.0-57 and 6.12.118+deb13 cloud kernels (struct
inet_bind2_bucket, file, tcp_request_sock and the types they need), made with
`python3 bench/struct_sizes.py --excerpt 6.1 inet_bind2_bucket file tcp_request_sock`.
"""

from __future__ import annotations

import importlib.util
import lzma
import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("struct_sizes", ROOT / "bench" / "struct_sizes.py")
assert _spec and _spec.loader
ss = importlib.util.module_from_spec(_spec)
sys.modules["struct_sizes"] = ss
_spec.loader.exec_module(ss)

DATA = ROOT / "tests" / "data" / "btf"


def btf(kernel: str) -> ss.Btf:
    return ss.Btf(ss.parse_raw((DATA / f"raw-{kernel}.txt").read_text()))


def test_struct_sizes_as_the_kernels_have_them() -> None:
    old, new = btf("6.1"), btf("6.12")
    assert (old.size("inet_bind2_bucket"), new.size("inet_bind2_bucket")) == (64, 72)
    assert (old.size("file"), new.size("file")) == (232, 184)
    assert (old.size("tcp_request_sock"), new.size("tcp_request_sock")) == (304, 304)
    assert old.size("no_such_struct") is None


def test_members_are_flattened_through_anonymous_unions() -> None:
    members = {m.name: m for m in btf("6.12").members("file")}
    # f_task_work and f_freeptr share an anonymous union at offset 152
    assert members["f_task_work"] == ss.Member("f_task_work", "struct callback_head", 152, 16)
    assert members["f_freeptr"] == ss.Member("f_freeptr", "freeptr_t", 152, 8)
    assert members["f_owner"] == ss.Member("f_owner", "struct fown_struct *", 128, 8)
    assert len(members) == 23


def test_diff_names_the_members_that_made_a_struct_grow() -> None:
    d = ss.diff(btf("6.1"), btf("6.12"), "inet_bind2_bucket")
    assert [(m.name, m.type, m.size) for m in d["added"]] == [
        ("addr_type", "short unsigned int", 2), ("bhash_node", "struct hlist_node", 16)]
    assert [m.name for m in d["removed"]] == ["family", "rcv_saddr", "deathrow"]
    assert d["changed"] == []
    assert [m.name for m in ss.diff(btf("6.1"), btf("6.12"), "tcp_request_sock")["added"]] \
        == ["req_usec_ts"]


def test_padding_counts_bytes_no_member_covers() -> None:
    assert btf("6.1").padding("file") == 4
    assert btf("6.12").padding("file") == 0
    assert btf("6.1").padding("inet_bind2_bucket") == 0


def test_excerpt_of_an_excerpt_is_the_same() -> None:
    text = (DATA / "raw-6.12.txt").read_text()
    assert ss.excerpt(text, ["inet_bind2_bucket", "file", "tcp_request_sock"]) == text


def bzimage(payload: bytes, setup_sects: int = 2) -> bytes:
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", head, 0x248, 16, len(payload))
    return bytes(head) + b"\0" * 16 + payload + b"tail"


def elf(sections: dict[str, bytes]) -> bytes:
    """A 64-bit little-endian ELF with these sections (and .shstrtab) only."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    body, offsets = bytearray(), []
    for data in [*sections.values(), names]:
        offsets.append(64 + len(body))
        body += data
    shoff = 64 + len(body)
    head = bytearray(64)
    head[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", head, 0x28, shoff)
    struct.pack_into("<HHH", head, 0x3A, 64, len(sections) + 2, len(sections) + 1)
    table = bytearray(64)  # section 0: null
    name_at = 1
    for (name, data), off in zip([*sections.items(), (".shstrtab", names)], offsets, strict=True):
        entry = bytearray(64)
        struct.pack_into("<I", entry, 0, name_at)
        struct.pack_into("<QQ", entry, 0x18, off, len(data))
        table += entry
        name_at += len(name) + 1
    return bytes(head + body + table)


def test_btf_section_from_an_xz_bzimage() -> None:
    vmlinux = elf({".text": b"\x90" * 10, ".BTF": b"\x9f\xeb\x01\0btf"})
    payload = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    payload += struct.pack("<I", len(vmlinux))  # the build appends the unpacked size
    image = bzimage(payload)
    assert ss.bzimage_payload(image) == payload
    assert ss.elf_section(ss.decompress(ss.bzimage_payload(image)), ".BTF") == \
        b"\x9f\xeb\x01\0btf"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ss.bzimage_payload(b"\0" * 1024), "not a bzImage (no HdrS setup header): give a vmlinuz"),
    (lambda: ss.decompress(b"LZO?xxxx"), "unknown kernel compression (payload starts 4c5a4f3f)"),
    (lambda: ss.elf_section(elf({".text": b"x"}), ".BTF"),
     "no .BTF section: the kernel was built without CONFIG_DEBUG_INFO_BTF"),
])
def test_bad_kernels_say_what_is_wrong(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ss.StructSizeError) as e:
        call()
    assert str(e.value) == message


def test_slab_object_size_from_struct_size() -> None:
    # inet_bind2_bucket 64 -> 72 B: SLAB_HWCACHE_ALIGN makes the object 64 -> 128 B
    assert (btf("6.1").slab_size("tcp_bind2_bucket"), btf("6.12").slab_size("tcp_bind2_bucket")) \
        == (64, 128)
    # request socks: SLAB_TYPESAFE_BY_RCU puts the 8-byte free pointer after the object
    assert btf("6.12").slab_size("request_sock_TCP") == 304 + 8
    assert btf("6.12").slab_size("TCP") is None  # tcp_sock is not in this excerpt


def test_cached_kernels_are_ordered_and_a_label_names_its_newest(tmp_path: Path) -> None:
    for d, label, release, version in [("a", "6.12", "6.12.118+deb13-cloud-amd64", "6.12.118-1"),
                                       ("b", "7", "7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
                                       ("c", "6.12", "6.12.117+deb12-cloud-amd64",
                                        "6.12.117-1~deb12u1"),
                                       ("d", "6.1", "6.1.0-57-cloud-amd64", "6.1.192-3")]:
        (tmp_path / "kernels" / d).mkdir(parents=True)
        (tmp_path / "kernels" / d / "kernel.json").write_text(
            f'{{"label": "{label}", "release": "{release}", "version": "{version}"}}')
        (tmp_path / "kernels" / d / "vmlinuz").write_bytes(b"")
    kernels = ss.cached_kernels(tmp_path)
    assert [k for k in kernels if "-" not in k and "+" not in k] == ["6.1", "6.12", "7"]
    assert kernels["6.12"] == tmp_path / "kernels" / "a" / "vmlinuz"
    assert kernels["6.12.117+deb12-cloud-amd64"] == tmp_path / "kernels" / "c" / "vmlinuz"


def test_an_unknown_kernel_is_refused_with_what_is_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kernels" / "a").mkdir(parents=True)
    (tmp_path / "kernels" / "a" / "kernel.json").write_text(
        '{"label": "6.1", "release": "6.1.0-57-cloud-amd64", "version": "6.1.192-3"}')
    (tmp_path / "kernels" / "a" / "vmlinuz").write_bytes(b"")
    monkeypatch.setenv("TCPLAB_CACHE_DIR", str(tmp_path))
    assert ss.main(["--diff", "6.1", "9.9", "file"]) == 2
    assert capsys.readouterr().err == (
        "struct_sizes: no cached kernel '9.9'; cached: 6.1, 6.1.0-57-cloud-amd64 (and host)\n")
