"""Packing runs and their setup into a bundle (``tcplab export``)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__, resources
from ..errors import InputError, LabError
from ..results.model import Result
from .layout import (
    IMAGE_DIR,
    LAB_FILE,
    MANIFEST,
    MAX_PROFILE_BYTES,
    PROFILE_FILE,
    PROFILE_FILES_DIR,
    RESULTS,
    SAFE_NAME,
    SCENARIO_FILE,
    SCHEMA,
    refuse_secret,
    sha,
)


@dataclass
class _Member:
    path: str  # inside the bundle
    data: bytes | None = None  # generated content
    source: Path | None = None  # or a file on disk, read when packed
    sha256: str = ""
    size: int = 0



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


def _levels(result: Result) -> int:
    count = sum(1 for c in result.checkpoints if re.fullmatch(r"level\d+", c.name))
    return count + 1 if count else 1


def rerun_settings(result: Result) -> dict[str, Any]:
    meta = result.metadata
    sc = result.scenario
    return {
        "scenario": sc.name,
        "profile": result.profile.name,
        "backend": meta.backend or result.lab.get("backend") or "auto",
        "connections": sc.connections,
        "bytes": sc.bytes,
        "family": meta.get("family") or "ipv4",
        "server_model": meta.get("server_model") or "blocking",
        "levels": _levels(result),
        "needs_allow_host_sysctls": bool(meta.host_sysctls),
        # link conditions as asked (--link or the lab file's), rerun as --link
        **({"link": _link_text(meta.get("link"))} if meta.get("link") else {}),
    }


def _link_text(link: dict[str, Any]) -> str:
    from ..conditions.link import Link

    return Link.from_dict(link.get("asked")).to_text()



def _profile_members(result: Result, tmp: Path) -> tuple[list[_Member], dict[str, Any]]:
    """The profile files of the run, copied by content when they still are profiles, and
    whether they still resolve to the sysctls of the run."""
    from ..config import load_profile
    from ..yamlfile import Doc

    members: list[_Member] = []
    info: list[dict[str, Any]] = []
    used: set[str] = set()
    work = tmp / "profiles"
    work.mkdir()
    for i, text in enumerate(result.profile.files):
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
        refuse_secret(str(path), path.name, data)
        name = path.name if path.name not in used else f"{i}-{path.name}"
        used.add(name)
        entry["path"] = f"{PROFILE_FILES_DIR}/{name}"
        entry["sha256"] = sha(data)
        members.append(_Member(entry["path"], data=data))
        (work / name).write_bytes(data)
    summary: dict[str, Any] = {"files": info, "matches_run": None}
    last = info[-1] if info else None
    if last and last["path"] and all(e["path"] for e in info):
        try:
            prof = load_profile(str(work / last["path"].rsplit("/", 1)[1]), work)
            summary["matches_run"] = prof.sysctls == result.profile.sysctls
        except InputError as exc:
            summary["note"] = f"the files do not resolve here: {exc}"
    return members, summary


def _setup_members(result: Result, root: Path, tmp: Path
                   ) -> tuple[list[_Member], dict[str, Any]]:
    from ..scenario import load_scenario

    run_id = result.run_id
    members: list[_Member] = []
    lab = result.lab
    members.append(_Member(LAB_FILE, data=_yaml(lab, (
        f"The resolved lab file of run {run_id} (tcplab export).\n"
        "tcplab run --bundle uses it unless --lab is given."))))

    prof = result.profile
    members.append(_Member(PROFILE_FILE, data=_yaml(
        {**({"description": prof.description} if prof.description else {}),
         "include": [], "sysctls": dict(prof.sysctls)},
        f"Profile {prof.name} of run {run_id}, resolved: the final sysctls, no includes.\n"
        "Made from: " + " -> ".join(Path(str(f)).name for f in prof.files))))
    prof_members, prof_info = _profile_members(result, tmp)
    members += prof_members

    as_run = result.to_dict()["scenario"]
    doc = scenario_document(as_run)
    data = _yaml(doc, f"Scenario {result.scenario.name} as run in {run_id} "
                      "(connections and bytes as run).")
    check = tmp / "scenario.yaml"
    check.write_bytes(data)
    try:
        rebuilt = load_scenario(str(check), tmp).to_dict()
    except InputError as exc:
        raise InputError(f"run {run_id}: its scenario cannot be written back as a scenario file "
                         f"({exc}); this bundle could not be rerun") from None
    want = {k: v for k, v in as_run.items() if k != "name"}
    if {k: v for k, v in rebuilt.items() if k != "name"} != want:
        raise InputError(f"run {run_id}: its scenario does not survive being written back as a "
                         "scenario file; this bundle could not be rerun")
    members.append(_Member(SCENARIO_FILE, data=data))

    image: dict[str, Any] = {"recipe": None, "recipe_hash": None}
    recipe_root = resources.images_dir() / "node"
    if (recipe_root / "Dockerfile").is_file():
        from ..backends.docker.image import recipe_hash

        for path in sorted(p for p in recipe_root.rglob("*") if p.is_file()):
            members.append(_Member(f"{IMAGE_DIR}/{path.relative_to(recipe_root).as_posix()}",
                                   source=path))
        image = {"recipe": IMAGE_DIR, "recipe_hash": recipe_hash(recipe_root)}
    meta = result.metadata
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
        "profile": {"name": prof.name, "file": PROFILE_FILE,
                    "sysctls": dict(prof.sysctls), **prof_info},
        "scenario": {"name": result.scenario.name, "file": SCENARIO_FILE},
        "image": image,
        "kernel": meta.get("kernel"),
    }
    return members, {"setup": setup, "rerun": settings}


def export(run_args: list[Path], output: Path, root: Path,
           now: float | None = None) -> dict[str, Any]:
    """Write the bundle of these runs to ``output`` (never overwritten); return its manifest."""
    from ..report.compare import expand_runs
    from ..results import load_result

    output = Path(output)
    if output.exists() or output.is_symlink():
        raise InputError(f"{output} exists; a bundle is never overwritten: choose another "
                         "-o FILE or remove it")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such directory for -o {output}")
    created = time.time() if now is None else now
    members: list[_Member] = []
    runs: list[dict[str, Any]] = []
    results: list[Result] = []
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
        sc, meta = result.scenario, result.metadata
        runs.append({"run_id": name, "dir": f"{RESULTS}/{name}", "status": result.status,
                     "scenario": sc.name, "profile": result.profile.name,
                     "connections": sc.connections, "bytes": sc.bytes,
                     "backend": meta.backend, "kernel": meta.kernel.release})
    with tempfile.TemporaryDirectory(prefix="tcplab-export-") as tmp:
        setup_members, setup = _setup_members(results[0], root, Path(tmp))
    members += setup_members

    # Read everything once: refuse keys, links and special files before writing anything.
    for m in members:
        data = m.data if m.data is not None else _read_regular(m.source)  # type: ignore[arg-type]
        where = str(m.source) if m.source else f"{output}:{m.path}"
        refuse_secret(where, m.path.rsplit("/", 1)[1], data)
        m.sha256, m.size = sha(data), len(data)

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
    refuse_secret(f"{output}:{MANIFEST}", MANIFEST, manifest_data)
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
                    if sha(data) != m.sha256:
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

