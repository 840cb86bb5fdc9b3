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

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import __version__, resources
from .errors import InputError, LabError
from .results import check_schema

SCHEMA = "tcplab.bundle/1"
MANIFEST = "bundle.json"
RESULTS = "results"
SETUP = "setup"
LAB_FILE = f"{SETUP}/lab.yaml"
PROFILE_FILE = f"{SETUP}/profile.yaml"
PROFILE_FILES_DIR = f"{SETUP}/profile-files"
SCENARIO_FILE = f"{SETUP}/scenario.yaml"
IMAGE_DIR = f"{SETUP}/images/node"

MAX_MANIFEST_BYTES = 16 * 2**20
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 8 * 2**30
MAX_PROFILE_BYTES = 2**20
CHUNK = 1 << 20

#: PEM and PGP private keys: ``-----BEGIN OPENSSH PRIVATE KEY-----``, ``... RSA PRIVATE KEY``,
#: ``... ENCRYPTED PRIVATE KEY``, ``-----BEGIN PGP PRIVATE KEY BLOCK-----``.
KEY_TEXT = re.compile(rb"-----BEGIN[ A-Z0-9]*PRIVATE KEY[ A-Z]*-----")
#: File names of keys: id_rsa, id_ed25519(_sk), ssh_host_*_key, *.pem, *.key, *.p12, *.pfx, *.ppk.
KEY_NAME = re.compile(r"^(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|ssh_host_.*_key"
                      r"|.*\.(pem|key|p12|pfx|ppk))$", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")
BACKENDS = ("netns", "docker", "auto", "ssh", "vm")


# -- secrets -----------------------------------------------------------------------------------

def secret_reason(name: str, data: bytes) -> str | None:
    """Why a file must not travel in a bundle, or None."""
    if KEY_NAME.match(name):
        return f"named like a key file ({name})"
    if KEY_TEXT.search(data):
        return "looks like a private key (-----BEGIN ... PRIVATE KEY-----)"
    if name.endswith(".gz"):
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
        if KEY_TEXT.search(inner):
            return "holds a private key once decompressed (-----BEGIN ... PRIVATE KEY-----)"
    return None


def _refuse_secret(where: str, name: str, data: bytes) -> None:
    reason = secret_reason(name, data)
    if reason:
        raise InputError(f"{where}: {reason}; a bundle never holds keys: remove it and export "
                         "again")


# -- export ------------------------------------------------------------------------------------

@dataclass
class _Member:
    path: str  # inside the bundle
    data: bytes | None = None  # generated content
    source: Path | None = None  # or a file on disk, read when packed
    sha256: str = ""
    size: int = 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes; symbolic links and special files are refused."""
    if path.is_symlink():
        raise InputError(f"{path}: a symbolic link; a bundle holds regular files only: replace "
                         "it with the file or remove it")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; a bundle holds regular files only")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _run_members(run_dir: Path, name: str) -> list[_Member]:
    """result.json, report.html if present, raw/ (every file, no links): nothing else."""
    out = []
    for rel in ("result.json", "report.html"):
        path = run_dir / rel
        if rel == "report.html" and not (path.exists() or path.is_symlink()):
            continue
        out.append(_Member(f"{RESULTS}/{name}/{rel}", source=path))
    raw = run_dir / "raw"
    if raw.is_symlink():
        _read_regular(raw)  # refuses with the message about links
    if raw.is_dir():
        for dirpath, dirnames, filenames in os.walk(raw):
            for d in sorted(dirnames):
                if (Path(dirpath) / d).is_symlink():
                    _read_regular(Path(dirpath) / d)
            dirnames.sort()
            for f in sorted(filenames):
                path = Path(dirpath) / f
                rel = path.relative_to(run_dir).as_posix()
                out.append(_Member(f"{RESULTS}/{name}/{rel}", source=path))
    return out


def _yaml(data: Any, header: str) -> bytes:
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return ("".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
            + body).encode()


def scenario_document(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario file that reproduces ``result["scenario"]`` (connections, bytes as run)."""
    steps = []
    for step in scenario.get("steps", []):
        step = dict(step)
        if "checkpoint" in step:  # {"checkpoint": name, "expect": {...}} -> one key
            body: Any = step["checkpoint"]
            if "expect" in step:
                body = {"name": body, "expect": {
                    side: {st: ("all" if c == -1 else c) for st, c in counts.items()}
                    for side, counts in step["expect"].items()}}
            steps.append({"checkpoint": body})
            continue
        ((action, body),) = step.items()
        if action in ("accept", "join") and isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "side"}
        steps.append({action: body})
    doc = {"description": scenario.get("description") or None,  # "" is not a description
           "connections": scenario["connections"], "bytes": scenario["bytes"], "steps": steps}
    return {k: v for k, v in doc.items() if v is not None}


def _levels(result: dict[str, Any]) -> int:
    names = [c.get("name", "") for c in result.get("checkpoints", [])]
    count = sum(1 for n in names if re.fullmatch(r"level\d+", n))
    return count + 1 if count else 1


def rerun_settings(result: dict[str, Any]) -> dict[str, Any]:
    meta = result.get("metadata", {})
    sc = result["scenario"]
    return {
        "scenario": sc.get("name"),
        "profile": result["profile"].get("name"),
        "backend": meta.get("backend") or result["lab"].get("backend") or "auto",
        "connections": sc.get("connections"),
        "bytes": sc.get("bytes"),
        "family": meta.get("family") or "ipv4",
        "server_model": meta.get("server_model") or "blocking",
        "levels": _levels(result),
        "needs_allow_host_sysctls": bool(meta.get("host_sysctls")),
    }


def _safe_name(text: Any, fallback: str) -> str:
    return text if isinstance(text, str) and SAFE_NAME.match(text) and text not in (".", "..") \
        else fallback


def _profile_members(result: dict[str, Any], tmp: Path) -> tuple[list[_Member], dict[str, Any]]:
    """The profile files of the run, copied by content when they still are profiles, and
    whether they still resolve to the sysctls of the run."""
    from .config import load_profile
    from .yamlfile import Doc

    members: list[_Member] = []
    info: list[dict[str, Any]] = []
    used: set[str] = set()
    work = tmp / "profiles"
    work.mkdir()
    for i, text in enumerate(result["profile"].get("files", [])):
        path = Path(str(text))
        entry: dict[str, Any] = {"original": str(text), "path": None}
        info.append(entry)
        try:
            st = path.stat()
        except OSError:
            entry["reason"] = "no longer on this machine"
            continue
        if (not path.name.endswith((".yaml", ".yml")) or not path.is_file()
                or st.st_size > MAX_PROFILE_BYTES):
            entry["reason"] = "not a profile file (not packed)"
            continue
        data = path.read_bytes()
        try:
            Doc.load(path).only(["description", "include", "sysctls"])
        except InputError:
            entry["reason"] = "not a profile file (not packed)"
            continue
        _refuse_secret(str(path), path.name, data)
        name = path.name if path.name not in used else f"{i}-{path.name}"
        used.add(name)
        entry["path"] = f"{PROFILE_FILES_DIR}/{name}"
        entry["sha256"] = _sha(data)
        members.append(_Member(entry["path"], data=data))
        (work / name).write_bytes(data)
    summary: dict[str, Any] = {"files": info, "matches_run": None}
    last = info[-1] if info else None
    if last and last["path"] and all(e["path"] for e in info):
        try:
            prof = load_profile(str(work / last["path"].rsplit("/", 1)[1]), work)
            summary["matches_run"] = prof.sysctls == result["profile"].get("sysctls")
        except InputError as exc:
            summary["note"] = f"the files do not resolve here: {exc}"
    return members, summary


def _setup_members(result: dict[str, Any], root: Path, tmp: Path
                   ) -> tuple[list[_Member], dict[str, Any]]:
    from .scenario import load_scenario

    run_id = result.get("run_id")
    members: list[_Member] = []
    lab = result["lab"]
    members.append(_Member(LAB_FILE, data=_yaml(lab, (
        f"The resolved lab file of run {run_id} (tcplab export).\n"
        "tcplab run --bundle uses it unless --lab is given."))))

    prof = result["profile"]
    members.append(_Member(PROFILE_FILE, data=_yaml(
        {**({"description": prof["description"]} if prof.get("description") else {}),
         "include": [], "sysctls": dict(prof.get("sysctls") or {})},
        f"Profile {prof.get('name')} of run {run_id}, resolved: the final sysctls, no includes.\n"
        "Made from: " + " -> ".join(Path(str(f)).name for f in prof.get("files", [])))))
    prof_members, prof_info = _profile_members(result, tmp)
    members += prof_members

    doc = scenario_document(result["scenario"])
    data = _yaml(doc, f"Scenario {result['scenario'].get('name')} as run in {run_id} "
                      "(connections and bytes as run).")
    check = tmp / "scenario.yaml"
    check.write_bytes(data)
    try:
        rebuilt = load_scenario(str(check), tmp).to_dict()
    except InputError as exc:
        raise InputError(f"run {run_id}: its scenario cannot be written back as a scenario file "
                         f"({exc}); this bundle could not be rerun") from None
    want = {k: v for k, v in result["scenario"].items() if k != "name"}
    if {k: v for k, v in rebuilt.items() if k != "name"} != want:
        raise InputError(f"run {run_id}: its scenario does not survive being written back as a "
                         "scenario file; this bundle could not be rerun")
    members.append(_Member(SCENARIO_FILE, data=data))

    image: dict[str, Any] = {"recipe": None, "recipe_hash": None}
    recipe_root = resources.images_dir() / "node"
    if (recipe_root / "Dockerfile").is_file():
        from .backends.docker.image import recipe_hash

        for path in sorted(p for p in recipe_root.rglob("*") if p.is_file()):
            members.append(_Member(f"{IMAGE_DIR}/{path.relative_to(recipe_root).as_posix()}",
                                   source=path))
        image = {"recipe": IMAGE_DIR, "recipe_hash": recipe_hash(recipe_root)}
    meta = result.get("metadata", {})
    ran = {k: meta.get(f"image{suffix}") for k, suffix in
           (("tag", ""), ("digest", "_digest"), ("recipe_hash", "_recipe_hash"),
            ("method", "_method"))}
    image["run"] = ran if any(ran.values()) else None
    if ran.get("recipe_hash") and image["recipe_hash"]:
        image["recipe_matches_run"] = ran["recipe_hash"] == image["recipe_hash"]

    settings = rerun_settings(result)
    setup = {
        "from_run": run_id,
        "lab": LAB_FILE,
        "profile": {"name": prof.get("name"), "file": PROFILE_FILE,
                    "sysctls": dict(prof.get("sysctls") or {}), **prof_info},
        "scenario": {"name": result["scenario"].get("name"), "file": SCENARIO_FILE},
        "image": image,
        "kernel": meta.get("kernel"),
    }
    return members, {"setup": setup, "rerun": settings}


def export(run_args: list[Path], output: Path, root: Path,
           now: float | None = None) -> dict[str, Any]:
    """Write the bundle of these runs to ``output`` (never overwritten); return its manifest."""
    from .report.compare import expand_runs
    from .results import load_result

    output = Path(output)
    if output.exists() or output.is_symlink():
        raise InputError(f"{output} exists; a bundle is never overwritten: choose another "
                         "-o FILE or remove it")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such directory for -o {output}")
    created = time.time() if now is None else now
    members: list[_Member] = []
    runs: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for run in expand_runs(run_args):
        run_dir = run if run.is_dir() else run.parent
        result = load_result(run)
        name = run_dir.resolve().name
        if not SAFE_NAME.match(name):
            raise InputError(f"{run_dir}: a run directory name like 20261126-012955-idle-default "
                             f"is expected, got {name!r}")
        if any(r["run_id"] == name for r in runs):
            raise InputError(f"{run_dir}: run {name} is given twice")
        members += _run_members(run_dir, name)
        results.append(result)
        sc, meta = result["scenario"], result["metadata"]
        runs.append({"run_id": name, "dir": f"{RESULTS}/{name}", "status": result.get("status"),
                     "scenario": sc.get("name"), "profile": result["profile"].get("name"),
                     "connections": sc.get("connections"), "bytes": sc.get("bytes"),
                     "backend": meta.get("backend"),
                     "kernel": (meta.get("kernel") or {}).get("release")})
    with tempfile.TemporaryDirectory(prefix="tcplab-export-") as tmp:
        setup_members, setup = _setup_members(results[0], root, Path(tmp))
    members += setup_members

    # Read everything once: refuse keys, links and special files before writing anything.
    for m in members:
        data = m.data if m.data is not None else _read_regular(m.source)  # type: ignore[arg-type]
        where = str(m.source) if m.source else f"{output}:{m.path}"
        _refuse_secret(where, m.path.rsplit("/", 1)[1], data)
        m.sha256, m.size = _sha(data), len(data)

    manifest = {
        "schema": SCHEMA,
        "tcplab_version": __version__,
        "created": created,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "runs": runs,
        **setup,
        "how_to_rerun": f"tcplab run --bundle {output.name}  (any of -b, -n, --bytes, -p, "
                        "--lab, -s, --family, --server, --levels overrides the bundle's)",
        "files": [{"path": m.path, "sha256": m.sha256, "size": m.size}
                  for m in sorted(members, key=lambda m: m.path)],
    }
    manifest_data = (json.dumps(manifest, indent=1) + "\n").encode()
    _refuse_secret(f"{output}:{MANIFEST}", MANIFEST, manifest_data)
    _write_archive(output, manifest_data, members, created)
    return manifest


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_archive(output: Path, manifest: bytes, members: list[_Member], mtime: float) -> None:
    """Temporary file in the same directory, fsync, hard link into place (never clobber)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with (gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=int(mtime)) as gz,
                  tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
                tar.addfile(_tarinfo(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
                for m in sorted(members, key=lambda m: m.path):
                    data = m.data if m.data is not None else _read_regular(m.source)  # type: ignore
                    if _sha(data) != m.sha256:
                        raise LabError(f"{m.source}: changed while it was being exported; "
                                       "export again")
                    tar.addfile(_tarinfo(m.path, len(data), mtime), io.BytesIO(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, output)  # fails if the file appeared meanwhile: never clobber
    except FileExistsError:
        raise InputError(f"{output} exists; a bundle is never overwritten: choose another "
                         "-o FILE or remove it") from None
    except OSError as exc:
        raise LabError(f"cannot write {output}: {exc.strerror}; free some disk space or choose "
                       "another -o FILE") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# -- unpack ------------------------------------------------------------------------------------

def is_bundle(path: Path) -> bool:
    """A file named like a bundle, or any gzip file (a result.json is plain JSON)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.endswith((".tar.gz", ".tgz")):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _path_problem(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of the bundle (..)"
    if any(p in ("", ".") for p in parts) or "\\" in name or "\x00" in name \
            or any(ord(c) < 32 for c in name):
        return "has an unusual path"
    return None


def _kind(member: tarfile.TarInfo) -> str | None:
    """What a non-regular member is, or None for a regular file."""
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.isdir():
        return "a directory"
    if not member.isreg():
        return "not a regular file"
    return None


class _Corrupt(Exception):
    pass


def _check_manifest(bundle: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{bundle}: {MANIFEST} is not valid JSON ({exc}); not a tcplab "
                         "bundle") from None
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    check_schema(schema, SCHEMA, str(bundle),
                 f"{bundle}: not a tcplab bundle ({MANIFEST} schema {schema!r}, expected {SCHEMA})",
                 noun="bundle ")
    files = manifest.get("files")
    if not isinstance(files, list) or not isinstance(manifest.get("runs"), list):
        raise InputError(f"{bundle}: {MANIFEST}: expected lists `files` and `runs`; not a "
                         "complete tcplab bundle")
    seen: set[str] = set()
    for entry in files:
        if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
                or isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int)
                or entry["size"] < 0):
            raise InputError(f"{bundle}: {MANIFEST}: files: expected entries "
                             f"{{path, sha256, size}}, got {str(entry)[:80]}")
        problem = _path_problem(entry["path"])
        if problem or entry["path"] == MANIFEST:
            raise InputError(f"{bundle}: {MANIFEST} lists {entry['path']!r}, which "
                             f"{problem or 'is the manifest itself'}; refusing the bundle")
        if entry["path"] in seen:
            raise InputError(f"{bundle}: {MANIFEST} lists {entry['path']!r} twice")
        seen.add(entry["path"])
    if len(files) > MAX_MEMBERS or sum(e["size"] for e in files) > MAX_TOTAL_BYTES:
        raise InputError(f"{bundle}: {MANIFEST} lists more than {MAX_MEMBERS:,} files or "
                         f"{MAX_TOTAL_BYTES / 2**30:.0f} GiB; refusing the bundle")
    return manifest


def unpack(bundle: Path, dest: Path) -> tuple[dict[str, Any], str]:
    """Check every member of ``bundle`` and write its files under ``dest`` (empty).

    Returns the manifest and the sha256 of bundle.json. Any problem is an InputError
    naming the bundle; files already written are the caller's to remove (``opened``).
    """
    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such bundle file")
    try:
        _check_gzip(bundle)
        with _open_tar(bundle) as tar:
            return _unpack(bundle, tar, dest)
    except _Corrupt as exc:
        raise InputError(f"{bundle}: not a readable tcplab bundle (corrupt gzip or tar: "
                         f"{exc}); ask for the bundle again") from None


def _check_gzip(bundle: Path) -> None:
    """Read the whole gzip stream once: a damaged or truncated one fails its CRC or length
    check here, and an oversized one stops before anything is written."""
    total = 0
    try:
        with gzip.open(bundle, "rb") as fh:
            while chunk := fh.read(CHUNK):
                total += len(chunk)
                if total > MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES:
                    raise _Corrupt(f"more than {MAX_TOTAL_BYTES / 2**30:.0f} GiB uncompressed")
    except (EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _open_tar(bundle: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(bundle, mode="r:gz")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:120]


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    out = []
    try:
        for member in tar:
            out.append(member)
            if len(out) > MAX_MEMBERS + 1:
                break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None
    return out


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> Iterator[bytes]:
    try:
        fh = tar.extractfile(member)
        if fh is None:
            raise _Corrupt(f"{member.name}: no data")
        total = 0
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _Corrupt(f"{member.name}: longer than its header says")
            yield chunk
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _Corrupt(_why(exc)) from None


def _unpack(bundle: Path, tar: tarfile.TarFile, dest: Path) -> tuple[dict[str, Any], str]:
    members = _members(tar)
    if not members:
        raise InputError(f"{bundle}: an empty archive; not a tcplab bundle")
    heads = [m for m in members if m.name == MANIFEST]
    if not heads:
        raise InputError(f"{bundle}: no {MANIFEST} manifest in the archive; not a tcplab bundle")
    if len(heads) > 1 or _kind(heads[0]) or heads[0].size > MAX_MANIFEST_BYTES:
        raise InputError(f"{bundle}: {MANIFEST} is not a single regular file of at most "
                         f"{MAX_MANIFEST_BYTES // 2**20} MiB; refusing the bundle")
    manifest_data = b"".join(_read_member(tar, heads[0], MAX_MANIFEST_BYTES))
    manifest = _check_manifest(bundle, manifest_data)
    listed = {e["path"]: e for e in manifest["files"]}
    parents = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}

    seen: set[str] = set()
    for m in members:
        if m is heads[0]:
            continue
        problem = _path_problem(m.name)
        if problem:
            raise InputError(f"{bundle}: member {m.name!r} {problem}; refusing the bundle")
        kind = _kind(m)
        if kind == "a directory" and m.name in parents:
            continue
        if kind:
            raise InputError(f"{bundle}: member {m.name!r} is {kind}; a bundle holds regular files "
                             "only: refusing it")
        if m.name not in listed:
            raise InputError(f"{bundle}: member {m.name!r} is not listed in {MANIFEST}; refusing "
                             "the bundle")
        if m.name in seen:
            raise InputError(f"{bundle}: member {m.name!r} appears twice; refusing the bundle")
        seen.add(m.name)
        if m.size != listed[m.name]["size"]:
            raise InputError(f"{bundle}: member {m.name!r} has {m.size:,} bytes, {MANIFEST} says "
                             f"{listed[m.name]['size']:,}: changed after export; ask for the "
                             "bundle again")
    missing = sorted(set(listed) - seen)
    if missing:
        raise InputError(f"{bundle}: {MANIFEST} lists {missing[0]!r} but the archive has no such "
                         "member; ask for the bundle again")

    dest = Path(dest)
    for m in members:
        if m is heads[0] or not m.isreg():
            continue
        target = dest / m.name
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            for chunk in _read_member(tar, m, m.size):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != listed[m.name]["sha256"]:
            raise InputError(f"{bundle}: member {m.name!r}: sha256 does not match {MANIFEST} "
                             "(changed or damaged after export); ask for the bundle again")
    (dest / MANIFEST).write_bytes(manifest_data)
    return manifest, _sha(manifest_data)


@dataclass
class Unpacked:
    """A checked bundle, unpacked in a temporary directory (removed on leaving ``opened``)."""

    bundle: Path
    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    def run_dirs(self) -> list[Path]:
        dirs = []
        for run in self.manifest["runs"]:
            rel = f"{run.get('dir')}/result.json" if isinstance(run, dict) else None
            if not rel or rel not in {e["path"] for e in self.manifest["files"]}:
                raise InputError(f"{self.bundle}: {MANIFEST}: runs: {str(run)[:80]} has no "
                                 "result.json in the bundle")
            dirs.append(self.root / run["dir"])
        return dirs

    def setting(self, key: str, check: Any, expected: str) -> Any:
        value = (self.manifest.get("rerun") or {}).get(key)
        if not check(value):
            raise InputError(f"{self.bundle}: {MANIFEST}: rerun.{key}: expected {expected}, got "
                             f"{value!r}")
        return value

    def rerun_files(self) -> dict[str, Path]:
        """The lab, profile and scenario files to run, named as in the original run."""
        listed = {e["path"] for e in self.manifest["files"]}
        for path in (LAB_FILE, PROFILE_FILE, SCENARIO_FILE):
            if path not in listed:
                raise InputError(f"{self.bundle}: no {path} in the bundle; it holds runs but no "
                                 "setup to rerun")
        setup = self.manifest.get("setup") or {}
        profile = _safe_name((setup.get("profile") or {}).get("name"), "profile")
        scenario = _safe_name((setup.get("scenario") or {}).get("name"), "scenario")
        where = self.root / ".rerun"
        (where / "profiles").mkdir(parents=True)
        (where / "scenarios").mkdir()
        files = {"lab": self.root / LAB_FILE,
                 "profile": where / "profiles" / f"{profile}.yaml",
                 "scenario": where / "scenarios" / f"{scenario}.yaml"}
        shutil.copyfile(self.root / PROFILE_FILE, files["profile"])
        shutil.copyfile(self.root / SCENARIO_FILE, files["scenario"])
        return files

    def shown(self, text: str) -> str:
        """A message with the temporary paths written as BUNDLE:member."""
        where = self.root / ".rerun"
        for path, member in ((where / "profiles", PROFILE_FILE),
                             (where / "scenarios", SCENARIO_FILE)):
            text = re.sub(re.escape(str(path)) + r"/[^:\s]+", f"{self.bundle}:{member}", text)
        return text.replace(f"{self.root}/", f"{self.bundle}:")

    def provenance(self, overridden: list[str]) -> dict[str, Any]:
        """``metadata.bundle`` of a run made from this bundle."""
        return {"file": str(self.bundle.resolve()), "manifest_sha256": self.manifest_sha256,
                "schema": self.manifest.get("schema"),
                "created": self.manifest.get("created"),
                "tcplab_version": self.manifest.get("tcplab_version"),
                "source_runs": [r.get("run_id") for r in self.manifest["runs"]
                                if isinstance(r, dict)],
                "setup_from_run": (self.manifest.get("setup") or {}).get("from_run"),
                "overridden": overridden}


@contextlib.contextmanager
def opened(bundle: Path) -> Iterator[Unpacked]:
    """Check and unpack a bundle into a private temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tcplab-bundle-") as tmp:
        manifest, sha = unpack(Path(bundle), Path(tmp))
        yield Unpacked(Path(bundle), Path(tmp), manifest, sha)


def apply_to_run_args(b: Unpacked, args: Any) -> list[str]:
    """Fill the ``tcplab run`` arguments not given on the command line from the bundle.

    Returns the names of the settings the command line overrode.
    """
    def is_int(low: int, high: int | None = None):
        return lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= low
                          and (high is None or v <= high))

    settings = {
        "backend": b.setting("backend", lambda v: v in BACKENDS, " or ".join(BACKENDS)),
        "connections": b.setting("connections", is_int(1), "an integer >= 1"),
        "nbytes": b.setting("bytes", is_int(0), "an integer >= 0"),
        "family": b.setting("family", lambda v: v in ("ipv4", "ipv6"), "ipv4 or ipv6"),
        "server_model": b.setting("server_model", lambda v: v in ("blocking", "epoll"),
                                  "blocking or epoll"),
        "levels": b.setting("levels", is_int(1, 20), "an integer from 1 to 20"),
    }
    files = b.rerun_files()
    overridden = []
    for attr, value in (("scenario", str(files["scenario"])), ("profile", [str(files["profile"])]),
                        ("lab", files["lab"]), *settings.items()):
        if getattr(args, attr, None) is not None:
            overridden.append(attr)
            continue
        if attr == "backend" and getattr(args, "kernels", None):
            continue  # --kernels chooses vm or this machine per kernel
        setattr(args, attr, value)
    return overridden
