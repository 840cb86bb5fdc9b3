"""Debian's kernels through a private apt configuration: the machine's apt is never touched.

Everything lives under ``<cache>/apt/`` (``/var/cache/tcplab/apt``):

* ``apt.conf``: the whole configuration, given to apt with ``APT_CONFIG``. It points
  apt's configuration parts, sources, preferences, state, lists and archives at this
  folder, so neither ``/etc/apt`` (sources, ``apt.conf.d`` hooks) nor ``/var/lib/apt``,
  ``/var/cache/apt`` nor dpkg's status is read or written;
* ``sources.list``: :data:`SUITES` from deb.debian.org and security.debian.org, signed
  by the Debian archive keyring (``debian-archive-keyring`` carries the bullseye,
  bookworm and trixie keys);
* ``lists/``: the suites' ``Packages`` files (``apt-get update``, at most once per
  :data:`MAX_AGE` unless asked: ``TCPLAB_KERNEL_INDEX=refresh``; offline, the lists
  already there are used however old they are);
* ``debs/``: every downloaded ``.deb``, kept (older suites leave the archive in time),
  checked against the index's SHA256.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import InputError, RunError
from .cache import cache_dir, cache_lock, sha256_file
from .debindex import Deb, IndexKernel, KernelIndex, parse_packages

DEBIAN = "http://deb.debian.org/debian"
SECURITY = "http://security.debian.org/debian-security"
#: (archive, suite): every suite carrying cloud kernels from 5.10 to 7.x.
SUITES = ((DEBIAN, "bullseye"), (SECURITY, "bullseye-security"),
          (DEBIAN, "bookworm"), (SECURITY, "bookworm-security"), (DEBIAN, "bookworm-backports"),
          (DEBIAN, "trixie"), (SECURITY, "trixie-security"), (DEBIAN, "trixie-backports"))
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MAX_AGE = 24 * 3600  # seconds between index refreshes
Log = Callable[[str], None]


def apt_dir() -> Path:
    return cache_dir() / "apt"


def sources_text() -> str:
    return "".join(f"deb [signed-by={KEYRING}] {url} {suite} main\n" for url, suite in SUITES)


def config_text(root: Path) -> str:
    """apt.conf of the private configuration rooted at ``root``."""
    d = {"parts": root / "apt.conf.d", "srcparts": root / "sources.list.d",
         "prefparts": root / "preferences.d"}
    lines = [
        f'Dir::Etc::Parts "{d["parts"]}";', 'Dir::Etc::Main "/dev/null";',
        f'Dir::Etc::SourceList "{root / "sources.list"}";',
        f'Dir::Etc::SourceParts "{d["srcparts"]}";',
        'Dir::Etc::Preferences "/dev/null";', f'Dir::Etc::PreferencesParts "{d["prefparts"]}";',
        f'Dir::Etc::TrustedParts "{root / "trusted.gpg.d"}";',
        f'Dir::State "{root}";', f'Dir::State::Lists "{root / "lists"}";',
        f'Dir::State::status "{root / "status"}";',
        f'Dir::Cache "{root}";', f'Dir::Cache::Archives "{root / "archives"}";',
        'Dir::Cache::pkgcache "";', 'Dir::Cache::srcpkgcache "";', f'Dir::Log "{root}";',
        'Acquire::Languages "none";', 'Acquire::GzipIndexes "false";',
        'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";',
        'APT::Architecture "amd64";', 'APT::Architectures { "amd64"; };',
    ]
    return "\n".join(lines) + "\n"


def setup(root: Path | None = None) -> Path:
    """Write the private configuration (idempotent); returns its apt.conf."""
    root = root or apt_dir()
    for sub in ("apt.conf.d", "sources.list.d", "preferences.d", "trusted.gpg.d",
                "lists/partial", "archives/partial", "debs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_if_changed(root / "sources.list", sources_text())
    _write_if_changed(root / "apt.conf", config_text(root))
    status = root / "status"
    if not status.exists():
        status.write_text("")
    return root / "apt.conf"


def apt(argv: list[str], root: Path | None = None, cwd: Path | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    conf = setup(root)
    env = {**os.environ, "APT_CONFIG": str(conf)}
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=cwd)
    except FileNotFoundError:
        raise InputError(f"{argv[0]} not found: kernels by version need Debian's apt "
                         "(or give a path to a vmlinuz)") from None


def list_files(root: Path | None = None) -> dict[str, Path]:
    """suite -> its Packages file in lists/ (suites never fetched are absent)."""
    lists = (root or apt_dir()) / "lists"
    out = {}
    for url, suite in SUITES:
        host_path = url.split("://", 1)[1].replace("/", "_")
        found = sorted(lists.glob(f"{host_path}_dists_{suite}_main_binary-amd64_Packages*"))
        if found:
            out[suite] = found[0]
    return out


def refresh(log: Log = print, force: bool | None = None, root: Path | None = None) -> None:
    """``apt-get update`` of the private lists when older than a day (or forced)."""
    root = root or apt_dir()
    if force is None:
        force = os.environ.get("TCPLAB_KERNEL_INDEX") == "refresh"
    stamp = root / "updated"
    with cache_lock("kernel-index"):
        have = list_files(root)
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < MAX_AGE
        if have and fresh and not force:
            return
        if not KEYRING.is_file():
            raise InputError(f"{KEYRING} missing: apt-get install debian-archive-keyring")
        log("kernel index: apt-get update (private configuration under "
            f"{root}: {', '.join(s for _, s in SUITES)})")
        proc = apt(["apt-get", "-q", "update"], root, timeout=600)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if line.startswith(("E:", "Err:", "W: Failed"))]
        have = list_files(root)
        if proc.returncode == 0 and not errors:
            stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            return
        tail = " | ".join(errors[-2:] or proc.stderr.strip().splitlines()[-2:])
        if not have:
            raise RunError(f"kernel index: apt-get update failed: {tail}; kernels by version "
                           "need deb.debian.org once (then the cached index serves offline)")
        age = (f"{(time.time() - stamp.stat().st_mtime) / 3600:.0f} h old"
               if stamp.exists() else "of unknown age")
        log(f"kernel index: apt-get update failed ({tail}); using the cached index, {age}")


def load_index(log: Log = print, root: Path | None = None) -> KernelIndex:
    """The kernel index of the private lists, refreshed first when due.

    The kernel stanzas are kept in ``index.json`` beside the lists, keyed by each list
    file's size and mtime, so only a refreshed list is parsed again (about 4 s for all).
    """
    root = root or apt_dir()
    refresh(log, root=root)
    files = list_files(root)
    stamps = {suite: [p.name, p.stat().st_size, p.stat().st_mtime_ns]
              for suite, p in files.items()}
    memo = root / "index.json"
    try:
        data = json.loads(memo.read_text())
        if data.get("lists") == stamps:
            return KernelIndex(data["stanzas"])
    except (OSError, ValueError):
        pass
    suites = {suite: parse_packages(path.read_text(errors="replace"))
              for suite, path in files.items()}
    _write_atomic(memo, json.dumps({"lists": stamps, "stanzas": suites}))
    return KernelIndex(suites)


def download(kernel: IndexKernel, log: Log = print, root: Path | None = None) -> list[Path]:
    """The kernel's .debs in ``debs/``, downloaded (one ``apt-get download``) unless already
    there with the index's SHA256; each checked against it."""
    root = root or apt_dir()
    debs_dir = root / "debs"
    setup(root)
    paths = [debs_dir / deb_file(deb) for deb in kernel.debs]
    with cache_lock(f"debs-{kernel.package}"):
        missing = [deb for deb, path in zip(kernel.debs, paths, strict=True)
                   if not (path.is_file() and sha256_file(path) == deb.sha256)]
        if missing:
            _download(missing, debs_dir, log, root)
    return paths


def deb_file(deb: Deb) -> str:
    return f"{deb.package}_{deb.version.replace(':', '%3a')}_amd64.deb"


def _download(debs: list[Deb], debs_dir: Path, log: Log, root: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="partial-", dir=debs_dir))  # one per download
    os.chmod(work, 0o777)  # apt's _apt user writes the download here (sandboxed)
    mb = sum(deb.size for deb in debs) / 2**20
    names = [f"{deb.package}={deb.version}" for deb in debs]
    log(f"apt-get download {' '.join(names)} ({debs[0].suite}, {mb:.0f} MB)")
    try:
        proc = apt(["apt-get", "download", "-q", *names], root, cwd=work)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise RunError(f"apt-get download {' '.join(names)} failed: {tail}; check that "
                           "deb.debian.org is reachable")
        for deb in debs:
            got = work / deb_file(deb)
            if not got.is_file():
                raise RunError(f"apt-get download left no {got.name}")
            if deb.sha256 and sha256_file(got) != deb.sha256:
                raise RunError(f"{got.name}: SHA256 differs from the package index; refresh it "
                               "(TCPLAB_KERNEL_INDEX=refresh) and try again")
            os.chmod(got, 0o644)
            got.rename(debs_dir / deb_file(deb))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        _write_atomic(path, text)


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file of this writer's own: runs fetching kernels in parallel
    may write the same file at once."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
