"""Bundles (orchestrator.bundle): export, manifest and checksums, no keys, safe unpacking.

Every bad bundle goes through ``orchestrator.cli.main`` and must end with exit 2 and one
line on stderr naming the bundle, with nothing unpacked left behind (the temporary
directory of the test stays empty) and no results directory created. Runs never start:
``labrun.run_plan`` fails the test if reached. The results packed are the real ones in
tests/data/results.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import bundle, cli, plan
from orchestrator.config import load_lab, load_profile
from orchestrator.run import labrun
from orchestrator.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "results"
S2C = "20261126-012656-s2c-default"
S2C_SMALL = "20261126-012700-s2c-small-buffers"
FAKE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
            "-----END OPENSSH PRIVATE KEY-----\n")


# -- fixtures and helpers --------------------------------------------------------------------

class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runs = tmp / "runs"
        self.out = tmp / "out"
        self.results = tmp / "results"
        self.tmpdir = tmp / "tmp"  # tempfile's directory: unpacked bundles go here
        for d in (self.runs, self.out, self.tmpdir, tmp / "state"):
            d.mkdir()

    def run_dir(self, name: str, raw: bool = True) -> Path:
        """A copy of a saved run, its profile files pointing into this checkout."""
        run = self.runs / name
        if run.exists():
            return run
        run.mkdir()
        result = json.loads((DATA / name / "result.json").read_text())
        result["profile"]["files"] = [str(REPO / "lab" / "profiles" / Path(f).name)
                                      for f in result["profile"]["files"]]
        (run / "result.json").write_text(json.dumps(result, indent=1))
        if raw:
            (run / "report.html").write_text("<html><body>report</body></html>\n")
            cp = run / "raw" / "established"
            cp.mkdir(parents=True)
            (cp / "slabinfo.txt.gz").write_bytes(gzip.compress(b"slabinfo - version: 2.1\n"))
            (cp / "meminfo.txt").write_text("Slab: 123456 kB\n")
            (cp / "server-ss.txt.gz").write_bytes(gzip.compress(b"State Recv-Q Send-Q\n"))
        return run

    def export(self, *runs: Path, name: str = "b.tar.gz") -> Path:
        out = self.out / name
        assert cli.main(["export", *map(str, runs), "-o", str(out)]) == 0
        return out


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    e = Env(tmp_path)
    monkeypatch.setenv("TCPLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(tempfile, "tempdir", str(e.tmpdir))

    def must_not_run(*args: object, **kw: object) -> None:
        raise AssertionError("a bad bundle reached run_plan: a run would have started")

    monkeypatch.setattr(labrun, "run_plan", must_not_run)
    return e


def fail(env: Env, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI: exit 2, one line on stderr, nothing left behind. The message."""
    if argv[0] == "run":
        argv = [*argv, "--results", str(env.results)]
    capsys.readouterr()  # what came before (an export of the fixture)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err!r}"
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("tcplab: error: ")
    assert list(env.tmpdir.iterdir()) == [], "an unpacked bundle was left behind"
    assert not env.results.exists(), "the results directory was created"
    assert not (env.tmp / "evil").exists() and not (env.tmp.parent / "evil").exists()
    return lines[0][len("tcplab: error: "):]


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()}


def entry(data: bytes, path: str) -> dict[str, Any]:
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def craft(path: Path, files: dict[str, bytes], manifest: dict[str, Any] | bytes | None,
          extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    """A .tar.gz with bundle.json (as given), ``files`` and ``extra`` raw members."""
    with tarfile.open(path, "w:gz") as tar:
        if manifest is not None:
            data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
            info = tarfile.TarInfo(bundle.MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def good(env: Env) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and files of a real export, to break one thing at a time."""
    files = members(env.export(env.run_dir(S2C), name="good.tar.gz"))
    manifest = json.loads(files.pop(bundle.MANIFEST))
    return manifest, files


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = 1, 3
    return info, None


# -- export: manifest, checksums ----------------------------------------------------------------

def test_export_manifest_and_checksums(env: Env, capsys: pytest.CaptureFixture) -> None:
    path = env.export(env.run_dir(S2C), env.run_dir(S2C_SMALL))
    out = capsys.readouterr().out
    assert "2 runs" in out and f"tcplab run --bundle {path}" in out
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        assert names[0] == bundle.MANIFEST  # first: `tar tzf | head` shows it
        assert all(m.isreg() and m.mode == 0o644 and m.uid == 0 for m in tar.getmembers())
    files = members(path)
    manifest = json.loads(files.pop(bundle.MANIFEST))
    assert manifest["schema"] == "tcplab.bundle/1"
    assert manifest["tcplab_version"] == cli.__version__
    assert isinstance(manifest["created"], float) and manifest["created_utc"].endswith("Z")
    assert [r["run_id"] for r in manifest["runs"]] == [S2C, S2C_SMALL]
    assert manifest["runs"][1] == {
        "run_id": S2C_SMALL, "dir": f"results/{S2C_SMALL}", "status": "complete",
        "scenario": "s2c", "profile": "small-buffers", "connections": 2000, "bytes": 65536,
        "backend": "netns", "kernel": "6.18.44-fc-v782"}
    # every member is listed with the sha256 and size of its content, and nothing else
    listed = {e["path"]: e for e in manifest["files"]}
    assert set(listed) == set(files)
    for name, data in files.items():
        assert listed[name] == entry(data, name)
    for run in (S2C, S2C_SMALL):
        for rel in ("result.json", "report.html", "raw/established/slabinfo.txt.gz",
                    "raw/established/meminfo.txt", "raw/established/server-ss.txt.gz"):
            assert f"results/{run}/{rel}" in files
    assert files[f"results/{S2C}/result.json"] == (env.runs / S2C / "result.json").read_bytes()
    # one setup: the first run's
    assert manifest["setup"]["from_run"] == S2C
    for rel in ("setup/lab.yaml", "setup/profile.yaml", "setup/scenario.yaml",
                "setup/profile-files/default.yaml", "setup/images/node/Dockerfile",
                "setup/images/node/packages.txt"):
        assert rel in files
    assert manifest["setup"]["profile"]["matches_run"] is True
    from orchestrator.backends.docker.image import recipe_hash

    assert manifest["setup"]["image"]["recipe_hash"] == recipe_hash(REPO / "images")
    assert manifest["rerun"] == {"scenario": "s2c", "profile": "default", "backend": "netns",
                                 "connections": 2000, "bytes": 65536, "family": "ipv4",
                                 "server_model": "blocking", "levels": 1,
                                 "needs_allow_host_sysctls": False}
    assert not list(env.out.glob(".*")), "a temporary file was left next to the bundle"


def test_setup_files_reproduce_the_run(env: Env) -> None:
    """lab.yaml, profile.yaml and scenario.yaml load back to what the run recorded."""
    run = env.run_dir(S2C_SMALL)
    files = members(env.export(run))
    result = json.loads((run / "result.json").read_text())
    setup = env.tmp / "setup"
    setup.mkdir()
    for name in ("lab.yaml", "profile.yaml", "scenario.yaml"):
        (setup / name).write_bytes(files[f"setup/{name}"])
    lab = load_lab(setup / "lab.yaml").to_dict()
    assert lab["hosts"] == {k: {**v, "address6": lab["hosts"][k]["address6"]}
                            for k, v in result["lab"]["hosts"].items()}
    assert load_profile(str(setup / "profile.yaml"), setup).sysctls == result["profile"]["sysctls"]
    sc = load_scenario(str(setup / "scenario.yaml"), setup).to_dict()
    assert {**sc, "name": "s2c"} == result["scenario"]
    # the original profile files travel too, by content
    assert files["setup/profile-files/small-buffers.yaml"] == \
        (REPO / "lab" / "profiles" / "small-buffers.yaml").read_bytes()


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "scenarios").glob("*.yaml")))
def test_every_scenario_survives_the_bundle(name: str, tmp_path: Path) -> None:
    sc = load_scenario(name, REPO / "scenarios").with_overrides(500, 7).to_dict()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bundle.scenario_document(sc), sort_keys=False))
    assert load_scenario(str(path), tmp_path).to_dict() == sc


def test_expect_all_survives_the_bundle(tmp_path: Path) -> None:
    src = tmp_path / "src.yaml"
    src.write_text("steps:\n  - checkpoint: baseline\n  - connect: {}\n  - close: client\n"
                   "  - checkpoint: {name: closing, expect: {client: {FIN-WAIT-2: all}, "
                   "server: {CLOSE-WAIT: 3}}}\n")
    sc = load_scenario(str(src), tmp_path).to_dict()
    path = tmp_path / "src2.yaml"
    path.write_text(yaml.safe_dump(bundle.scenario_document(sc)))
    assert {**load_scenario(str(path), tmp_path).to_dict(), "name": "src"} == sc


def test_levels_family_server_model_travel(env: Env) -> None:
    run = env.run_dir(S2C)
    result = json.loads((run / "result.json").read_text())
    result["metadata"].update(family="ipv6", server_model="epoll")
    result["checkpoints"][1:1] = [{**result["checkpoints"][1], "name": "level1"},
                                  {**result["checkpoints"][1], "name": "level2"}]
    (run / "result.json").write_text(json.dumps(result))
    manifest = json.loads(members(env.export(run))[bundle.MANIFEST])
    assert manifest["rerun"]["family"] == "ipv6"
    assert manifest["rerun"]["server_model"] == "epoll"
    assert manifest["rerun"]["levels"] == 3


# -- export: refusals ---------------------------------------------------------------------------

def test_export_never_overwrites(env: Env, capsys: pytest.CaptureFixture) -> None:
    out = env.out / "b.tar.gz"
    out.write_text("mine")
    msg = fail(env, capsys, ["export", str(env.run_dir(S2C)), "-o", str(out)])
    assert msg == (f"{out} exists; a bundle is never overwritten: choose another -o FILE or "
                   "remove it")
    assert out.read_text() == "mine"


def test_export_into_missing_directory(env: Env, capsys: pytest.CaptureFixture) -> None:
    out = env.tmp / "nowhere" / "b.tar.gz"
    msg = fail(env, capsys, ["export", str(env.run_dir(S2C)), "-o", str(out)])
    assert msg == f"{out.parent}: no such directory for -o {out}"


def test_export_same_run_twice(env: Env, capsys: pytest.CaptureFixture) -> None:
    run = env.run_dir(S2C)
    msg = fail(env, capsys, ["export", str(run), str(run / "result.json"), "-o",
                             str(env.out / "b.tar.gz")])
    assert msg == f"{run}: run {S2C} is given twice"


PEM = "looks like a private key (-----BEGIN ... PRIVATE KEY-----)"


def _key_cases(run: Path) -> dict[str, tuple[Path, str]]:
    cp = run / "raw" / "established"
    return {
        "key-in-raw-text": (cp / "notes.txt", PEM),
        "key-in-raw-gz": (cp / "client-ss.txt.gz", ("holds a private key once decompressed "
                          "(-----BEGIN ... PRIVATE KEY-----)")),
        "key-named-file": (cp / "id_ed25519", "named like a key file (id_ed25519)"),
        "pem-file": (cp / "host.pem", "named like a key file (host.pem)"),
        "key-in-report": (run / "report.html", PEM),
        "key-in-result": (run / "result.json", PEM),
    }


@pytest.mark.parametrize("case", list(_key_cases(Path("x"))))
def test_export_refuses_keys(env: Env, capsys: pytest.CaptureFixture, case: str) -> None:
    run = env.run_dir(S2C)
    path, reason = _key_cases(run)[case]
    if case == "key-in-raw-gz":
        path.write_bytes(gzip.compress(b"State\n" + FAKE_KEY.encode()))
    elif case == "key-in-result":
        result = json.loads(path.read_text())
        result["metadata"]["note"] = FAKE_KEY
        path.write_text(json.dumps(result))
    elif case in ("key-named-file", "pem-file"):
        path.write_text("nothing secret in here, but the name says key\n")
    else:
        path.write_text("<pre>\n" + FAKE_KEY)
    out = env.out / "b.tar.gz"
    msg = fail(env, capsys, ["export", str(run), "-o", str(out)])
    assert msg == f"{path}: {reason}; a bundle never holds keys: remove it and export again"
    assert list(env.out.iterdir()) == [], "a bundle or a temporary file was written"


def test_export_refuses_key_in_profile_file(env: Env, capsys: pytest.CaptureFixture) -> None:
    run = env.run_dir(S2C)
    prof = env.tmp / "profiles" / "mine.yaml"
    prof.parent.mkdir()
    prof.write_text("# " + FAKE_KEY.replace("\n", "\n# ") + "\ndescription: mine\nsysctls: {}\n")
    result = json.loads((run / "result.json").read_text())
    result["profile"]["files"] = [str(prof)]
    (run / "result.json").write_text(json.dumps(result))
    msg = fail(env, capsys, ["export", str(run), "-o", str(env.out / "b.tar.gz")])
    assert msg.startswith(f"{prof}: looks like a private key")
    assert list(env.out.iterdir()) == []


def test_export_refuses_links_in_raw(env: Env, capsys: pytest.CaptureFixture) -> None:
    run = env.run_dir(S2C)
    secret = env.tmp / "secret.txt"
    secret.write_text("host secret\n")
    link = run / "raw" / "established" / "slabinfo-extra.txt"
    link.symlink_to(secret)
    msg = fail(env, capsys, ["export", str(run), "-o", str(env.out / "b.tar.gz")])
    assert msg == (f"{link}: a symbolic link; a bundle holds regular files only: replace it "
                   "with the file or remove it")


def test_no_key_in_an_exported_bundle(env: Env) -> None:
    """Keys next to the runs (an ssh lab's key, a key file in the run directory, a listed
    "profile" that is a key) never reach the bundle; every packed file is scanned."""
    run = env.run_dir(S2C)
    key = env.tmp / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.write_text(FAKE_KEY)
    (run / "id_rsa").write_text(FAKE_KEY)  # in the run directory, but not a file a bundle holds
    (run / "raw" / "id_rsa.pub").write_text("ssh-ed25519 AAAAC3Nza public\n")
    result = json.loads((run / "result.json").read_text())
    result["lab"]["hosts"]["server"]["ssh"] = {"address": "10.0.0.2", "user": "root",
                                               "port": 22, "key": str(key)}
    result["profile"]["files"].insert(0, str(key))  # a result that lists a key as a profile
    (run / "result.json").write_text(json.dumps(result))
    path = env.export(run)
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if m.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert b"PRIVATE KEY" not in data, m.name
            assert not bundle.KEY_NAME.match(Path(m.name).name), m.name
            assert m.isreg(), m.name
    manifest = json.loads(members(path)[bundle.MANIFEST])
    skipped = manifest["setup"]["profile"]["files"][0]
    assert skipped == {"original": str(key), "path": None,
                       "reason": "not a profile file (not packed)"}


# -- unpacking: every unsafe or broken bundle is refused -------------------------------------------

def test_tampered_member(env: Env, capsys: pytest.CaptureFixture, good) -> None:
    manifest, files = good
    files["setup/scenario.yaml"] = files["setup/scenario.yaml"].replace(b"2000", b"9000")
    path = craft(env.tmp / "t.tar.gz", files, manifest)
    msg = fail(env, capsys, ["run", "--bundle", str(path)])
    assert msg == (f"{path}: member 'setup/scenario.yaml': sha256 does not match bundle.json "
                   "(changed or damaged after export); ask for the bundle again")
    assert fail(env, capsys, ["compare", str(path), str(env.run_dir(S2C))]) == msg


def test_tampered_size(env: Env, capsys: pytest.CaptureFixture, good) -> None:
    manifest, files = good
    files["setup/lab.yaml"] += b"# more\n"
    path = craft(env.tmp / "t.tar.gz", files, manifest)
    msg = fail(env, capsys, ["run", "--bundle", str(path)])
    assert re.fullmatch(rf"{re.escape(str(path))}: member 'setup/lab.yaml' has [\d,]+ bytes, "
                        r"bundle.json says [\d,]+: changed after export; ask for the bundle again",
                        msg), msg


UNSAFE = {
    # id: (extra member, expected message after "BUNDLE: ")
    "absolute-path": (lambda: (_file("/etc/evil"),), ("member '/etc/evil' has an absolute path; "
                      "refusing the bundle")),
    "dotdot": (lambda: (_file("../evil"),), ("member '../evil' climbs out of the bundle (..); "
               "refusing the bundle")),
    "dotdot-nested": (lambda: (_file("results/../../evil"),), ("member 'results/../../evil' "
                      "climbs out of the bundle (..); refusing the bundle")),
    "symlink": (lambda: (special("setup/shadow", tarfile.SYMTYPE, "/etc/shadow"),),
                ("member 'setup/shadow' is a symbolic link (to '/etc/shadow'); a bundle holds "
                "regular files only: refusing it")),
    "hardlink": (lambda: (special("setup/passwd", tarfile.LNKTYPE, "/etc/passwd"),),
                 ("member 'setup/passwd' is a hard link (to '/etc/passwd'); a bundle holds "
                 "regular files only: refusing it")),
    "char-device": (lambda: (special("setup/null", tarfile.CHRTYPE),),
                    ("member 'setup/null' is a device file; a bundle holds regular files only: "
                    "refusing it")),
    "block-device": (lambda: (special("setup/sda", tarfile.BLKTYPE),),
                     ("member 'setup/sda' is a device file; a bundle holds regular files only: "
                     "refusing it")),
    "fifo": (lambda: (special("setup/pipe", tarfile.FIFOTYPE),),
             "member 'setup/pipe' is a FIFO; a bundle holds regular files only: refusing it"),
    "not-in-manifest": (lambda: (_file("setup/extra.sh"),),
                        ("member 'setup/extra.sh' is not listed in bundle.json; refusing the "
                         "bundle")),
    "stray-directory": (lambda: (special("home", tarfile.DIRTYPE),),
                        ("member 'home' is a directory; a bundle holds regular files only: "
                        "refusing it")),
    "duplicate-member": (lambda: (_file("setup/lab.yaml", b"x"),),
                         "member 'setup/lab.yaml' appears twice; refusing the bundle"),
}


def _file(name: str, data: bytes = b"evil\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_member(env: Env, capsys: pytest.CaptureFixture, good, case: str) -> None:
    manifest, files = good
    extra, expected = UNSAFE[case]
    path = craft(env.tmp / f"{case}.tar.gz", files, manifest, list(extra()))
    assert fail(env, capsys, ["run", "--bundle", str(path)]) == f"{path}: {expected}"


def test_unsafe_member_in_compare(env: Env, capsys: pytest.CaptureFixture, good) -> None:
    manifest, files = good
    path = craft(env.tmp / "evil.tar.gz", files, manifest, [_file("../evil")])
    msg = fail(env, capsys, ["compare", str(path), str(env.run_dir(S2C_SMALL))])
    assert msg == f"{path}: member '../evil' climbs out of the bundle (..); refusing the bundle"


MANIFEST_CASES = {
    "newer-schema": (lambda m: {**m, "schema": "tcplab.bundle/2"},
                     ("bundle schema tcplab.bundle/2 is newer than this tcplab understands "
                     "(tcplab.bundle/1); upgrade tcplab to read it")),
    "much-newer-schema": (lambda m: {**m, "schema": "tcplab.bundle/10"},
                          ("bundle schema tcplab.bundle/10 is newer than this tcplab understands "
                          "(tcplab.bundle/1); upgrade tcplab to read it")),
    "not-a-bundle-schema": (lambda m: {**m, "schema": "tcplab.result/1"},
                            ("not a tcplab bundle (bundle.json schema 'tcplab.result/1', expected "
                            "tcplab.bundle/1)")),
    "unreadable-schema": (lambda m: {**m, "schema": "tcplab.bundle/x"},
                          "unreadable bundle schema 'tcplab.bundle/x'"),
    "not-json": (lambda m: b"{\"schema\": ", ("bundle.json is not valid JSON (Expecting value: "
                 "line 1 column 12 (char 11)); not a tcplab bundle")),
    "files-missing": (lambda m: {k: v for k, v in m.items() if k != "files"},
                      ("bundle.json: expected lists `files` and `runs`; not a complete tcplab "
                      "bundle")),
    "absolute-path-listed": (
        lambda m: {**m, "files": [*m["files"], entry(b"x", "/etc/passwd")]},
        "bundle.json lists '/etc/passwd', which has an absolute path; refusing the bundle"),
    "dotdot-listed": (lambda m: {**m, "files": [*m["files"], entry(b"x", "a/../../x")]},
                      ("bundle.json lists 'a/../../x', which climbs out of the bundle (..); "
                      "refusing the bundle")),
    "listed-but-missing": (lambda m: {**m, "files": [*m["files"], entry(b"x", "setup/gone.yaml")]},
                           ("bundle.json lists 'setup/gone.yaml' but the archive has no such "
                           "member; ask for the bundle again")),
    "bad-checksum-field": (lambda m: {**m, "files": [{**m["files"][0], "sha256": "abc"},
                                                     *m["files"][1:]]},
                           None),
    "bad-rerun-setting": (lambda m: {**m, "rerun": {**m["rerun"], "family": "ipx"}},
                          "bundle.json: rerun.family: expected ipv4 or ipv6, got 'ipx'"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_bad_manifest(env: Env, capsys: pytest.CaptureFixture, good, case: str) -> None:
    manifest, files = good
    change, expected = MANIFEST_CASES[case]
    path = craft(env.tmp / f"{case}.tar.gz", files, change(manifest))
    msg = fail(env, capsys, ["run", "--bundle", str(path)])
    if expected is None:
        assert msg.startswith(f"{path}: bundle.json: files: expected entries {{path, sha256, "
                              "size}, got")
    else:
        assert msg == f"{path}: {expected}"


def test_no_manifest(env: Env, capsys: pytest.CaptureFixture, good) -> None:
    _, files = good
    path = craft(env.tmp / "n.tar.gz", files, None)
    assert fail(env, capsys, ["run", "--bundle", str(path)]) == \
        f"{path}: no bundle.json manifest in the archive; not a tcplab bundle"


def _corrupt_cases(env: Env) -> dict[str, Path]:
    good = env.export(env.run_dir(S2C), name="whole.tar.gz")
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "random-bytes": os.urandom(4096),
        "gzip-of-text": gzip.compress(b"just some text, not a tar archive\n" * 20),
        "empty-file": b"",
        "bad-crc": data[:-8] + bytes(4) + data[-4:],
    }
    out = {}
    for name, blob in cases.items():
        out[name] = env.tmp / f"{name}.tar.gz"
        out[name].write_bytes(blob)
    plain = env.tmp / "plain.tar.gz"  # a tar, but not gzip-compressed
    with tarfile.open(plain, "w") as tar:
        tar.add(good, arcname="x")
    out["not-gzip"] = plain
    good.unlink()
    return out


@pytest.mark.parametrize("case", ["truncated", "random-bytes", "gzip-of-text", "empty-file",
                                  "bad-crc", "not-gzip"])
def test_corrupt_archive(env: Env, capsys: pytest.CaptureFixture, case: str) -> None:
    path = _corrupt_cases(env)[case]
    msg = fail(env, capsys, ["run", "--bundle", str(path)])
    assert msg.startswith(f"{path}: not a readable tcplab bundle (corrupt gzip or tar: ")
    assert msg.endswith("); ask for the bundle again")
    assert fail(env, capsys, ["compare", str(path), str(env.run_dir(S2C))]) == msg


def test_missing_bundle(env: Env, capsys: pytest.CaptureFixture) -> None:
    path = env.tmp / "nope.tar.gz"
    assert fail(env, capsys, ["run", "--bundle", str(path)]) == f"{path}: no such bundle file"


def test_run_needs_a_scenario_or_a_bundle(env: Env, capsys: pytest.CaptureFixture) -> None:
    assert fail(env, capsys, ["run", "-n", "10"]) == (
        "tcplab run: the following arguments are required: --scenario/-s (or --bundle FILE); "
        "see tcplab run --help")


# -- run --bundle: the setup as run, command-line options win ------------------------------------

class Stop(Exception):
    pass


def _capture_plan(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake_make_plan(opts: plan.RunOptions) -> None:
        # the setup files exist while the run is planned, and load
        sc = load_scenario(opts.scenario, opts.root / "scenarios")
        prof = load_profile(opts.profile, opts.root / "lab" / "profiles")
        lab = load_lab(opts.lab_path)
        seen.append({"opts": opts, "scenario": sc.name, "profile": prof.name,
                     "sysctls": prof.sysctls, "lab": lab.to_dict()["hosts"]})
        raise Stop

    monkeypatch.setattr(plan, "make_plan", fake_make_plan)
    return seen


def test_run_bundle_uses_the_setup(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    path = env.export(env.run_dir(S2C_SMALL), env.run_dir(S2C))
    manifest = json.loads(members(path)[bundle.MANIFEST])
    seen = _capture_plan(monkeypatch)
    with pytest.raises(Stop):
        cli.main(["run", "--bundle", str(path), "--results", str(env.results)])
    (got,) = seen
    opts = got["opts"]
    assert (got["scenario"], got["profile"]) == ("s2c", "small-buffers")
    assert got["sysctls"] == {"net.ipv4.tcp_rmem": "4096 16384 65536",
                              "net.ipv4.tcp_wmem": "4096 16384 65536"}
    assert got["lab"]["client"]["sysctls"] == {"net.ipv4.ip_local_port_range": "1024 65535"}
    assert (opts.backend, opts.connections, opts.nbytes) == ("netns", 2000, 65536)
    assert (opts.family, opts.server_model, opts.levels) == ("ipv4", "blocking", 1)
    assert opts.results_dir == env.results
    assert opts.bundle == {
        "file": str(path.resolve()),
        "manifest_sha256": hashlib.sha256(members(path)[bundle.MANIFEST]).hexdigest(),
        "schema": "tcplab.bundle/1", "created": manifest["created"],
        "tcplab_version": cli.__version__, "source_runs": [S2C_SMALL, S2C],
        "setup_from_run": S2C_SMALL, "overridden": []}
    assert list(env.tmpdir.iterdir()) == [], "the unpacked bundle was left behind"


def test_run_bundle_options_override(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    path = env.export(env.run_dir(S2C))
    seen = _capture_plan(monkeypatch)
    with pytest.raises(Stop):
        cli.main(["run", "--bundle", str(path), "-n", "10", "--bytes", "13", "-b", "docker",
                  "-p", "small-buffers", "--family", "ipv6", "--server", "epoll",
                  "--levels", "2", "--results", str(env.results)])
    opts = seen[0]["opts"]
    assert (opts.backend, opts.connections, opts.nbytes) == ("docker", 10, 13)
    assert (opts.family, opts.server_model, opts.levels) == ("ipv6", "epoll", 2)
    assert seen[0]["profile"] == "small-buffers" and seen[0]["scenario"] == "s2c"
    assert opts.bundle["overridden"] == ["profile", "backend", "connections", "nbytes",
                                         "family", "server_model", "levels"]


def test_run_bundle_errors_name_the_bundle(env: Env, capsys: pytest.CaptureFixture) -> None:
    """A setup that does not plan here names the bundle's file, not a temporary path."""
    run = env.run_dir(S2C)
    result = json.loads((run / "result.json").read_text())
    result["lab"]["hosts"]["server"]["sysctls"]["net.core.somaxconn"] = "64"
    (run / "result.json").write_text(json.dumps(result))
    path = env.export(run)
    msg = fail(env, capsys, ["run", "--bundle", str(path)])
    assert msg == (f"net.core.somaxconn 64 on the server is too small for a connection ramp; "
                   f"raise it in {path}:setup/lab.yaml (hosts.server.sysctls) to at least 128")


# -- compare with a bundle -----------------------------------------------------------------------

def test_compare_a_bundle(env: Env, capsys: pytest.CaptureFixture) -> None:
    path = env.export(env.run_dir(S2C), env.run_dir(S2C_SMALL))
    capsys.readouterr()
    assert cli.main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert S2C in out and S2C_SMALL in out
    assert re.search(r"server\s+net\.ipv4\.tcp_rmem\s+4096 131072 33554432\s+4096 16384 65536",
                     out)
    assert list(env.tmpdir.iterdir()) == []


def test_compare_a_bundle_beside_a_run(env: Env, capsys: pytest.CaptureFixture) -> None:
    path = env.export(env.run_dir(S2C_SMALL))
    mine = env.run_dir(S2C)
    capsys.readouterr()
    assert cli.main(["compare", str(mine), str(path), "--format", "json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert [g["runs"] for g in cmp["groups"]] == [[S2C], [S2C_SMALL]]
    assert {r["sysctl"] for r in cmp["sysctls"]} == {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
    shutil.rmtree(mine)
    assert list(env.tmpdir.iterdir()) == []
