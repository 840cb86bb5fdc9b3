"""What the fuzz tests (test_fuzz_*.py) share: a project copy, the CLI run in-process,
and the one property every generated input must have.

The property: ``tcplab ...`` ends with exit 0 (the input was accepted: the run would
start) or with exit 2 and exactly one line on stderr, ``tcplab: error: ...``; never a
traceback (any other exception fails the test), and a refused input creates nothing: no
results directory, nothing in the state directory, no file in the working directory, no
unpacked bundle left in the temporary directory.

``labrun.run_plan`` is replaced by a function that raises ``Accepted``, so an accepted
input never starts a real run (no namespace, no container). Runs are in-process, like
tests/unit/test_bad_input.py.

How many inputs each test generates: ``TCPLAB_FUZZ_EXAMPLES`` (default 150 per test,
which keeps the suite under a minute; set 2000 or more for a long session).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context

from orchestrator.cli import main
from orchestrator.run import labrun

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("TCPLAB_FUZZ_EXAMPLES", "150"))
MEMORY_LIMIT = 8 << 30  # address space while fuzzing

settings.register_profile(
    "tcplab-fuzz", max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large])
FUZZ = settings.get_profile("tcplab-fuzz")


class Accepted(BaseException):
    """Raised in place of a real run: the input passed every check."""


def _accepted(*_args: object, **_kw: object) -> None:
    raise Accepted


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def accepted(self) -> bool:
        return self.code == 0


@dataclass
class Project:
    """A copy of lab/ and scenarios/ (TCPLAB_ROOT), a state directory, a working directory."""

    root: Path
    state: Path
    work: Path

    @property
    def results(self) -> Path:
        return self.work / "results"

    def write(self, rel: str, data: str | bytes) -> Path:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path

    def run(self, argv: list[str], inputs: tuple[Path, ...] = ()) -> Outcome:
        """Run the CLI in ``work``; check the property; remove ``inputs`` afterwards."""
        before = _tmp_bundles()
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.work)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except Accepted:
                    code = 0
                except SystemExit as exc:  # argparse's --help and --version
                    code = exc.code if isinstance(exc.code, int) else 2
        finally:
            os.chdir(cwd)
        outcome = Outcome(code, out.getvalue(), err.getvalue())
        if currently_in_test_context():  # --hypothesis-show-statistics: accepted vs refused
            event(f"exit {code}")
        try:
            check(outcome, argv)
            created = self.created(set(inputs))
            assert not _tmp_bundles() - before, "an unpacked bundle was left in the temp dir"
            if not outcome.accepted:
                assert not created, f"refused, yet created {created}: {argv}"
        finally:
            self.clean()
        return outcome

    def created(self, inputs: set[Path]) -> list[str]:
        found = [str(p) for p in self.work.rglob("*") if p not in inputs and p.is_file()]
        found += [str(p) for p in self.state.iterdir()]
        return found

    def clean(self) -> None:
        for path in self.work.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for path in self.state.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def check(outcome: Outcome, argv: list[str]) -> None:
    """Exit 0, or exit 2 with one ``tcplab: error:`` line; nothing else."""
    if outcome.code == 0:
        return
    assert outcome.code == 2, f"exit {outcome.code} for {argv}: {outcome.err!r}"
    lines = outcome.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr for {argv}, got {outcome.err!r}"
    assert lines[0].startswith("tcplab: error: "), lines[0]
    assert "Traceback" not in outcome.err


def _tmp_bundles() -> set[str]:
    """Unpacked bundles in the temporary directory (private to the fuzz run: ``project``)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("tcplab-bundle-*")}


@contextlib.contextmanager
def project() -> Iterator[Project]:
    """The project copy, the environment pointing at it, run_plan replaced."""
    import pytest

    with tempfile.TemporaryDirectory(prefix="tcplab-fuzz-") as tmp, \
            pytest.MonkeyPatch.context() as mp:
        base = Path(tmp)
        root = base / "root"
        shutil.copytree(REPO / "lab", root / "lab")
        shutil.copytree(REPO / "scenarios", root / "scenarios")
        (base / "state").mkdir()
        (base / "work").mkdir()
        mp.setenv("TCPLAB_ROOT", str(root))
        mp.setenv("TCPLAB_STATE_DIR", str(base / "state"))
        mp.setattr(labrun, "run_plan", _accepted)
        (base / "tmp").mkdir()  # bundles unpack here, away from other sessions' bundles
        mp.setattr(tempfile, "tempdir", str(base / "tmp"))
        # An input that makes tcplab allocate without bound (N=10**20 once built a list of
        # 10**15 ports) fails with MemoryError here instead of the OOM killer ending pytest.
        limit = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, limit[1]))
        try:
            # No namespace check: a run journals a namespace in the state directory before
            # it creates it, and every input is checked to leave that directory empty.
            yield Project(root, base / "state", base / "work")
        finally:
            resource.setrlimit(resource.RLIMIT_AS, limit)

