"""The results library: catalog (tcplab runs), filters, step detection, import.

The library is a copy of the real runs in tests/data/results; bundles are exported from
them with ``tcplab export`` and imported with ``tcplab import`` through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.errors import InputError
from orchestrator.library import catalog, importing, trends
from orchestrator.library.catalog import Filters, RunEntry

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "results"
VM_IDLE = "20261126-021137-idle-default"
VM_C2S = "20261126-045425-c2s-default"
DOCKER_IDLE = "20261126-041441-idle-default"
S2C = "20261126-012656-s2c-default"
S2C_SMALL = "20261126-012700-s2c-small-buffers"


def library(tmp: Path, names: list[str] | None = None) -> Path:
    results = tmp / "results"
    results.mkdir()
    for run in sorted(DATA.glob("2*")) if names is None else [DATA / n for n in names]:
        shutil.copytree(run, results / run.name)
    return results


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- catalog ----------------------------------------------------------------------------------

def test_scan_reads_every_run(tmp_path: Path) -> None:
    entries = catalog.scan(library(tmp_path))
    assert len(entries) == 8
    assert [e.started for e in entries] == sorted(e.started for e in entries)
    by = {e.run_id: e for e in entries}
    vm = by[VM_IDLE]
    assert (vm.scenario, vm.profile, vm.backend, vm.connections) == ("idle", "default", "vm", 5000)
    assert vm.kernels == ("6.1.0-56-cloud-amd64",)
    assert vm.headline == pytest.approx(7645.5)
    assert vm.checkpoint == "established"
    assert by[DOCKER_IDLE].backend == "docker"
    assert by[DOCKER_IDLE].kernels == ("6.18.44-fc-v782",)
    assert by[S2C_SMALL].profile == "small-buffers"
    assert by[S2C].figures.keys() == {"established", "unread", "read"}
    assert all(e.origin == "local" and e.status == "complete" for e in entries)


def test_incomplete_and_failed_runs_are_marked(tmp_path: Path) -> None:
    results = library(tmp_path, [S2C])
    cut = results / "20261127-100000-c2s-default"
    cut.mkdir()
    data = json.loads((DATA / S2C / "result.json").read_text())
    data.update(run_id=cut.name, status="incomplete", error="side client stalled",
                checkpoints=data["checkpoints"][:2])
    (cut / "result.json").write_text(json.dumps(data))
    (results / "20261127-110000-idle-default").mkdir()  # died before writing its result
    broken = results / "20261127-120000-idle-default"
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    by = {e.run_id: e for e in catalog.scan(results)}
    assert by[cut.name].status == "incomplete"
    assert by[cut.name].checkpoint == "established"
    assert by[cut.name].error == "side client stalled"
    died = by["20261127-110000-idle-default"]
    assert (died.status, died.scenario) == ("failed", "idle")
    assert died.error == "no result.json: the run stopped before writing it"
    assert by[broken.name].status == "failed"
    assert "not a readable tcplab result" in by[broken.name].error
    text = catalog.render_table(list(by.values()), 4)
    assert "INCOMPLETE" in text and "FAILED" in text
    assert text.splitlines()[-1] == ("4 of 4 runs; 3 not complete (INCOMPLETE: stopped after "
                                     "some checkpoints; FAILED: no readable result)")


def test_filters(tmp_path: Path) -> None:
    entries = catalog.scan(library(tmp_path))
    ids = lambda f: sorted(e.run_id for e in f.apply(entries))  # noqa: E731
    assert ids(Filters(kernel=["6.1"])) == [VM_IDLE, VM_C2S]  # 6.1 is not 6.18
    assert len(ids(Filters(kernel=["6.18"]))) == 6
    assert ids(Filters(backend=["docker"])) == [DOCKER_IDLE]
    assert ids(Filters(scenario=["idle"], backend=["vm", "docker"])) == [VM_IDLE, DOCKER_IDLE]
    assert ids(Filters(profile=["small-buffers"])) == [S2C_SMALL]
    since = catalog.parse_date("2026-11-26 04:00", "--since")
    assert ids(Filters(since=since)) == [DOCKER_IDLE, VM_C2S, "20261126-045545-c2s-default"]
    until = catalog.until_value("2026-11-25")
    assert ids(Filters(until=until)) == []
    assert len(ids(Filters(until=catalog.until_value("2026-11-26")))) == 8
    assert ids(Filters(origin=["alice"])) == []


def test_kernel_match_whole_parts() -> None:
    assert catalog.kernel_matches("6.1.0-56-cloud-amd64", "6.1")
    assert catalog.kernel_matches("6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64")
    assert not catalog.kernel_matches("6.18.44-fc-v782", "6.1")
    assert catalog.kernel_matches("6.18.44-fc-v782", "6.18")


def test_runs_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = library(tmp_path)
    code, out, _ = run_cli(["runs", str(results), "--backend", "vm"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["run", "when", "(UTC)", "scenario"]
    assert VM_IDLE in out and "7,646" in out and "6.1.0-56-cloud-amd64" in out
    assert lines[-1] == "2 of 8 runs"
    code, out, _ = run_cli(["runs", str(results), "--scenario", "c2s,s2c", "--kernel", "6.18",
                            "--format", "json"], capsys)
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == ["20261126-012650-c2s-default", S2C, S2C_SMALL,
                                           "20261126-045545-c2s-default"]
    assert rows[1]["figures"]["unread"] == pytest.approx(rows[1]["figures"]["unread"])
    assert rows[1]["kernels"] == ["6.18.44-fc-v782"] and rows[1]["when_utc"] == "2026-11-26 01:26"


@pytest.mark.parametrize("argv, message", [
    (["--since", "yesterday"], "--since: expected a date like 2026-11-26 or '2026-11-26 04:14' "
                               "(UTC), got 'yesterday'"),
    (["--until", "2026-13-01"], "--until: expected a date like 2026-11-26 or '2026-11-26 04:14' "
                                "(UTC), got '2026-13-01'"),
    (["--since", "2026-11-27", "--until", "2026-11-26"],
     "--until is before --since; nothing could match: swap them"),
    (["--status", "broken"], "--status: unknown status 'broken'; expected one of complete, "
                             "incomplete, failed"),
])
def test_runs_bad_filters(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                          message: str) -> None:
    code, out, err = run_cli(["runs", str(library(tmp_path, [S2C])), *argv], capsys)
    assert (code, out) == (2, "")
    assert err == f"tcplab: error: {message}\n"


def test_runs_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(["runs", str(tmp_path / "nope")], capsys)
    assert code == 2
    assert err == (f"tcplab: error: {tmp_path / 'nope'}: no such results folder; run a scenario "
                   "first (make lab) or pass the folder holding your runs\n")


# -- steps -----------------------------------------------------------------------------------

def test_step_indexes() -> None:
    assert trends.step_indexes([7000, 7010, 7005, 7400]) == [3]
    assert trends.step_indexes([7000, 7010, 6600]) == [2]  # down as well as up
    assert trends.step_indexes([7000, 7010, 7020, 7150]) == []  # within 2 % of 7,010
    assert trends.step_indexes([7000, 7400]) == []  # one earlier run: no spread to leave
    assert trends.step_indexes([400, 410, 424]) == []  # small figures: at least 16 B of slack
    assert trends.step_indexes([400, 410, 430]) == [2]
    assert trends.step_indexes([400, 430], min_history=1) == [1]


def _entry(run_id: str, started: float, total: float, **kw: object) -> RunEntry:
    base = dict(scenario="idle", profile="default", backend="netns", kernels=("6.18.44",),
                connections=1000)
    base.update(kw)
    return RunEntry(run_id=run_id, path=run_id, started=started, headline=total,
                    checkpoint="established", figures={"established": total}, **base)


def test_scenario_trends_and_steps() -> None:
    entries = [_entry(f"r{i}", 100 + i, v) for i, v in enumerate([7800, 7790, 7810, 8400, 7805])]
    entries += [_entry("vm1", 50, 7600, backend="vm", kernels=("6.1.0",)),
                _entry("vm2", 60, 9000, backend="vm", kernels=("6.1.0",)),  # 2 runs: no step
                _entry("bad", 200, 1, status="incomplete"),
                _entry("c1", 10, 8000, scenario="c2s")]
    t = trends.scenario_trends(entries)
    assert list(t) == ["c2s", "idle"]
    idle = t["idle"]
    assert idle.runs == 7 and len(idle.series) == 2  # the incomplete run is left out
    assert [s.entries[0].backend for s in idle.series] == ["vm", "netns"]
    [step] = idle.steps
    assert (step.run_id, step.checkpoint, step.value) == ("r3", "established", 8400)
    assert (step.low, step.high, step.median, step.earlier) == (7790, 7810, 7800, 3)
    assert step.change == 600 and step.direction == "up"
    assert "netns" in step.setup and "N=1,000" in step.setup


# -- import ----------------------------------------------------------------------------------

def _bundle(tmp: Path, names: list[str], out: str = "alice-runs.tar.gz") -> Path:
    runs = tmp / "src"
    runs.mkdir(exist_ok=True)
    for name in names:
        run = runs / name
        data = json.loads((DATA / name / "result.json").read_text())
        data["profile"]["files"] = [str(REPO / "lab" / "profiles" / Path(f).name)
                                    for f in data["profile"]["files"]]
        run.mkdir()
        (run / "result.json").write_text(json.dumps(data, indent=1))
        (run / "report.html").write_text("<html><body>alice's report</body></html>\n")
    path = tmp / out
    assert cli.main(["export", *[str(runs / n) for n in names], "-o", str(path)]) == 0
    return path


def test_import_keeps_runs_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = library(tmp_path, [S2C])
    b = _bundle(tmp_path, [S2C, VM_IDLE])
    code, out, err = run_cli(["import", str(b), "--results", str(results)], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith("alice-runs.tar.gz: 2 runs imported (checksums verified)")
    where = results / "imported" / "alice-runs"
    assert sorted(p.name for p in where.iterdir()) == [S2C, VM_IDLE]
    assert sorted(p.name for p in (where / S2C).iterdir()) == ["import.json", "report.html",
                                                               "result.json"]
    record = json.loads((where / S2C / "import.json").read_text())
    assert record["origin"] == "alice-runs" and record["bundle"] == "alice-runs.tar.gz"
    assert len(record["bundle_manifest_sha256"]) == 64
    assert not (where / "setup").exists()  # the setup is not copied, nothing is executed
    entries = catalog.scan(results)
    assert sorted((e.origin, e.run_id) for e in entries) == [
        ("alice-runs", S2C), ("alice-runs", VM_IDLE), ("local", S2C)]
    assert {e.path for e in entries if e.origin != "local"} == {
        f"imported/alice-runs/{S2C}", f"imported/alice-runs/{VM_IDLE}"}
    # again: nothing changes; under another origin: a second copy apart
    code, out, _ = run_cli(["import", str(b), "--results", str(results)], capsys)
    assert code == 0 and "0 runs imported, 2 already there" in out
    code, out, _ = run_cli(["import", str(b), "--results", str(results), "--origin", "bob"],
                           capsys)
    assert code == 0 and (results / "imported" / "bob" / VM_IDLE / "result.json").is_file()
    code, out, _ = run_cli(["runs", str(results), "--origin", "bob"], capsys)
    assert out.splitlines()[-1] == "2 of 5 runs"


def test_import_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    b = _bundle(tmp_path, [S2C])
    importing.import_bundle(b, results, "alice")
    target = results / "imported" / "alice" / S2C / "result.json"
    target.write_text(target.read_text().replace('"complete"', '"incomplete"', 1))
    code, out, err = run_cli(["import", str(b), "--results", str(results), "--origin", "alice"],
                             capsys)
    assert (code, out) == (2, "")
    assert err == (f"tcplab: error: {target.parent}: a different run of that name was imported "
                   "from alice before; imported runs are never overwritten: pass --origin NAME "
                   "to keep this bundle's runs apart\n")


def test_import_bad_origin_and_bad_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    b = _bundle(tmp_path, [S2C])
    code, _, err = run_cli(["import", str(b), "--results", str(tmp_path / "r"), "--origin",
                            "../x"], capsys)
    assert code == 2
    assert err == ("tcplab: error: --origin '../x': use letters, digits and . _ + - (at most 64, "
                   "not starting with a dot), e.g. --origin alice\n")
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(b.read_bytes()[:-40])
    code, _, err = run_cli(["import", str(damaged), "--results", str(tmp_path / "r")], capsys)
    assert code == 2 and "not a readable tcplab bundle" in err
    assert not (tmp_path / "r").exists()  # nothing created


def test_origin_from_file_name() -> None:
    assert importing.origin_of(Path("/x/alice lab.tar.gz"), None) == "alice-lab"
    assert importing.origin_of(Path("bob.tgz"), None) == "bob"
    with pytest.raises(InputError):
        importing.origin_of(Path("b.tar.gz"), ".hidden")
