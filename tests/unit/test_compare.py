"""orchestrator.report.compare: real results (tests/data/results) and synthetic repetitions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.errors import InputError
from orchestrator.report import compare
from orchestrator.results import Result, load_result

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
C2S = "20261126-012650-c2s-default"
S2C = "20261126-012656-s2c-default"
S2C_SMALL = "20261126-012700-s2c-small-buffers"


def load(name: str) -> Result:
    return load_result(RESULTS / name)


def row(cmp: dict, checkpoint: str, figure: str) -> dict:
    cp = next(c for c in cmp["checkpoints"] if c["name"] == checkpoint)
    return next(r for r in cp["rows"] if r["figure"] == figure)


@pytest.fixture(scope="module")
def s2c_pair() -> dict:
    return compare.compare([load(S2C), load(S2C_SMALL)])


def test_small_buffers_change_the_buffer_figure(s2c_pair):
    assert [g["label"] for g in s2c_pair["groups"]] == ["A", "B"]
    assert [g["key"]["profile"] for g in s2c_pair["groups"]] == ["default", "small-buffers"]
    rmem = row(s2c_pair, "unread", "rmem_receiver")
    assert [c["median"] for c in rmem["groups"]] == [67200.0, 16248.0]
    versus = rmem["vs_first"][1]
    assert versus["diff"] == -50952.0
    assert versus["ratio"] == pytest.approx(16248 / 67200)
    assert versus["significance"] is None  # one run each: not judged
    wmem = row(s2c_pair, "unread", "wmem_sender")
    assert [c["median"] for c in wmem["groups"]] == [0.0, 57448.0]
    assert wmem["vs_first"][1]["ratio"] is None  # no ratio to zero
    # idle connections cost the same under both profiles (within 2 %)
    total = row(s2c_pair, "established", "total")
    assert total["vs_first"][1]["ratio"] == pytest.approx(1.0, abs=0.02)


def test_sysctl_diff_explains_it(s2c_pair):
    diff = {(r["host"], r["sysctl"]): r["values"] for r in s2c_pair["sysctls"]}
    assert set(diff) == {(h, k) for h in ("server", "client")
                         for k in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem")}
    assert diff[("client", "net.ipv4.tcp_rmem")] == ["4096 131072 33554432", "4096 16384 65536"]
    assert diff[("server", "net.ipv4.tcp_wmem")] == ["4096 16384 4194304", "4096 16384 65536"]


def test_metadata_diff(s2c_pair):
    meta = {r["field"]: r for r in s2c_pair["metadata"]}
    assert meta["profile"]["differs"] and meta["profile"]["values"] == ["default", "small-buffers"]
    for field in ("kernel release", "backend", "tool version", "image", "N", "BYTES"):
        assert not meta[field]["differs"], field
    assert meta["kernel release"]["values"][0] == "6.18.44-fc-v782"


def test_top_caches_per_checkpoint(s2c_pair):
    unread = next(c for c in s2c_pair["checkpoints"] if c["name"] == "unread")
    caches = [r["figure"] for r in unread["rows"] if r["figure"].startswith("cache:")]
    assert len(caches) == compare.TOP_CACHES
    assert caches[:2] == ["cache:skbuff_small_head", "cache:pool_workqueue"]
    assert "cache:TCP" in caches


def test_table_and_markdown(s2c_pair):
    text = compare.render(s2c_pair, "table")
    assert "A = s2c · profile default" in text and "B = s2c · profile small-buffers" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("receiver rmem_alloc")
                and "67,200" in ln)
    assert re.search(r"67,200\s+16,248\s+-50,952\s+0\.24×", line)
    assert "net.ipv4.tcp_rmem" in text and "4096 16384 65536" in text
    assert "not judged" in text
    md = compare.render(s2c_pair, "markdown")
    assert "### Checkpoint unread" in md
    assert "| receiver rmem_alloc per socket (median) |" in md


def test_json_round_trip(s2c_pair):
    data = json.loads(compare.render(s2c_pair, "json"))
    assert data["schema"] == compare.SCHEMA
    assert data["groups"][1]["runs"] == [S2C_SMALL]


def test_html_self_contained(s2c_pair):
    html = compare.render(s2c_pair, "html")
    assert html.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "<script", "<link", "src="):
        assert needle not in html
    assert "-50,952" in html and "0.24×" in html
    assert "net.ipv4.tcp_wmem" in html


def _variant(result: Result, run_id: str, profile: str, total: float, rmem: float) -> Result:
    r = result.to_dict()
    r["run_id"] = run_id
    r["profile"]["name"] = profile
    unread = next(c for c in r["checkpoints"] if c["name"] == "unread")
    unread["per_connection_bytes"]["total"] = total
    unread["buffers"]["server"]["rmem_alloc"]["median"] = rmem
    return Result.from_dict(r)


def test_repetitions_grouped_with_median_spread_and_significance():
    base = load(C2S)
    a = [_variant(base, f"a{i}", "default", t, 845) for i, t in enumerate((8480, 8500, 8470))]
    b = [_variant(base, f"b{i}", "other", t, r)
         for i, (t, r) in enumerate(((8490, 1200), (8520, 1210), (8510, 1190)))]
    cmp = compare.compare(a[:2] + b[:1] + a[2:] + b[1:])  # order of arrival does not matter
    assert [(g["label"], g["n"], g["runs"]) for g in cmp["groups"]] == [
        ("A", 3, ["a0", "a1", "a2"]), ("B", 3, ["b0", "b1", "b2"])]
    total = row(cmp, "unread", "total")
    assert total["groups"][0] == {"median": 8480, "min": 8470, "max": 8500, "n": 3,
                                  "values": [8480, 8500, 8470]}
    assert total["groups"][1]["median"] == 8510
    assert total["vs_first"][1]["diff"] == 30
    # 8470 8480 8500 vs 8490 8510 8520: rank sums 1+2+4 = 7 of 21; 4 of the 20
    # arrangements (7, 6, and their mirror images 14, 15) lie that far from 10.5
    assert total["vs_first"][1]["significance"] == compare.NOT_SIGNIFICANT
    assert total["vs_first"][1]["p_value"] == pytest.approx(0.2)
    rmem = row(cmp, "unread", "rmem_receiver")
    # 845 ×3 vs 1190..1210: fully apart, yet 3 vs 3 cannot go below p = 2/20
    assert rmem["vs_first"][1]["significance"] == compare.NOT_SIGNIFICANT
    assert rmem["vs_first"][1]["p_value"] == pytest.approx(0.1)
    assert rmem["vs_first"][1]["ratio"] == pytest.approx(1200 / 845)
    text = compare.render(cmp, "table")
    assert "8,480 (8,470..8,500)" in text
    assert "not significant (p=0.2)" in text and "not significant (p=0.1)" in text
    assert "B vs A" in text
    assert "exact two-sided Mann–Whitney U test, significant when p < 0.05" in text
    html = compare.render(cmp, "html")
    assert 'class="sig-no">not significant (p=0.2)' in html
    assert "exact two-sided Mann–Whitney U test" in html


def test_four_runs_apart_are_significant():
    base = load(C2S)
    a = [_variant(base, f"a{i}", "default", t, 845) for i, t in enumerate((8480, 8500, 8470, 8490))]
    b = [_variant(base, f"b{i}", "other", t, 1200) for i, t in enumerate((9000, 9010, 8990, 9020))]
    cmp = compare.compare(a + b)
    total = row(cmp, "unread", "total")["vs_first"][1]
    assert total["significance"] == compare.SIGNIFICANT
    assert total["p_value"] == pytest.approx(2 / 70)
    assert "significant (p=0.029)" in compare.render(cmp, "table")
    assert 'class="sig-yes">significant (p=0.029)' in compare.render(cmp, "html")
    unread = next(c for c in json.loads(compare.render(cmp, "json"))["checkpoints"]
                  if c["name"] == "unread")
    assert unread["rows"][0]["figure"] == "total"
    assert unread["rows"][0]["vs_first"][1]["p_value"] == pytest.approx(2 / 70)


def test_single_run_against_a_group_is_not_judged():
    base = load(C2S)
    a = [_variant(base, f"a{i}", "default", t, 845) for i, t in enumerate((8480, 8500))]
    b = [_variant(base, "b0", "other", 9000, 845)]
    cmp = compare.compare(a + b)
    versus = row(cmp, "unread", "total")["vs_first"][1]
    assert versus["significance"] is None and versus["p_value"] is None
    assert "significance: not judged (an exact test needs at least 3 runs" in \
        compare.render(cmp, "table")


def test_two_runs_a_side_are_too_few():
    base = load(C2S)
    a = [_variant(base, f"a{i}", "default", t, 845) for i, t in enumerate((8480, 8500))]
    b = [_variant(base, f"b{i}", "other", t, 845) for i, t in enumerate((9000, 9010))]
    versus = row(compare.compare(a + b), "unread", "total")["vs_first"][1]
    # apart, which the old "ranges do not overlap" rule called significant
    assert versus == {"diff": 515, "ratio": pytest.approx(9005 / 8490),
                      "significance": compare.TOO_FEW, "p_value": pytest.approx(1 / 3)}
    assert "too few runs (p=0.33)" in compare.render(compare.compare(a + b), "table")


def _group(*values: float) -> dict:
    return {"n": len(values), "values": list(values), "min": min(values), "max": max(values)}


def test_significance_rule():
    # 2 vs 2 fully apart: the old "ranges do not overlap" rule called this significant,
    # which happens by chance in 2 of the 6 arrangements
    assert compare.significance(_group(1, 2), _group(3, 4)) == {
        "significance": compare.TOO_FEW, "p_value": pytest.approx(1 / 3)}
    assert compare.significance(_group(1, 2, 3), _group(4, 5, 6)) == {
        "significance": compare.NOT_SIGNIFICANT, "p_value": pytest.approx(0.1)}
    assert compare.significance(_group(1, 2, 3), _group(4, 5, 6, 7, 8)) == {
        "significance": compare.SIGNIFICANT, "p_value": pytest.approx(2 / 56)}
    assert compare.significance(_group(1, 2, 3, 4), _group(5, 6, 7, 8)) == {
        "significance": compare.SIGNIFICANT, "p_value": pytest.approx(2 / 70)}
    assert compare.significance(_group(1), _group(2, 3, 4)) == {"significance": None,
                                                                "p_value": None}
    assert compare.significance(None, _group(2, 3, 4)) == {"significance": None,
                                                           "p_value": None}


def test_expand_runs(tmp_path):
    runs = compare.expand_runs([RESULTS])
    assert [r.name for r in runs] == sorted(p.name for p in RESULTS.iterdir()
                                            if (p / "result.json").is_file())
    assert compare.expand_runs([RESULTS / C2S]) == [RESULTS / C2S]
    with pytest.raises(InputError, match="no tcplab result"):
        compare.expand_runs([tmp_path])
    with pytest.raises(InputError, match="no such run"):
        compare.expand_runs([tmp_path / "missing"])


def test_cli_compare_and_report(tmp_path, capsys):
    out = tmp_path / "cmp.md"
    assert cli.main(["compare", str(RESULTS / S2C), str(RESULTS / S2C_SMALL),
                     "--format", "markdown", "-o", str(out)]) == 0
    assert "### Checkpoint unread" in out.read_text()
    assert capsys.readouterr().out.strip().endswith("cmp.md")
    assert cli.main(["compare", str(RESULTS), "--format", "json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    runs = compare.expand_runs([RESULTS])
    assert sum(g["n"] for g in groups) == len(runs)  # every fixture in one group
    # the two c2s runs on this machine (N=2,000, default profile, 6.18) are one setup, twice
    (c2s,) = [g for g in groups if C2S in g["runs"]]
    assert c2s["runs"] == [C2S, "20261126-045545-c2s-default"]
    assert len(groups) == len(runs) - 1
    assert cli.main(["compare", str(RESULTS / C2S)]) == 2
    assert "at least two" in capsys.readouterr().err


REPEATS = Path(__file__).resolve().parents[1] / "data" / "repeats"


def _p_values(runs: list[Path]) -> dict[tuple[str, str], tuple[str, float]]:
    cmp = compare.compare([load_result(r) for r in runs])
    return {(cp["name"], row["figure"]): (row["vs_first"][1]["significance"],
                                          row["vs_first"][1]["p_value"])
            for cp in cmp["checkpoints"] for row in cp["rows"]}


def test_stored_repeated_runs_p_values():
    """The pair in docs/report.md: s2c 64 KiB, default vs small-buffers, 4 runs each."""
    runs = sorted(p for p in REPEATS.iterdir() if p.is_dir())
    assert len(runs) == 8
    p = _p_values(runs)
    significant = (compare.SIGNIFICANT, pytest.approx(2 / 70))
    assert p[("unread", "total")] == significant
    assert p[("unread", "rmem_receiver")] == significant
    assert p[("unread", "wmem_sender")] == significant
    assert p[("established", "total")] == significant  # 7,892 vs 7,930: 4 apart of 4
    assert p[("established", "meminfo_slab")] == (compare.NOT_SIGNIFICANT, pytest.approx(24 / 70))
    assert p[("read", "total")] == (compare.NOT_SIGNIFICANT, pytest.approx(34 / 70))
    assert p[("read", "meminfo_slab")] == (compare.NOT_SIGNIFICANT, pytest.approx(4 / 70))
    # the first three runs of each (--repeat 3): the same clean split cannot go below 0.1
    three = [r for r in runs if "default" in r.name][:3] + \
        [r for r in runs if "small-buffers" in r.name][:3]
    assert _p_values(three)[("unread", "total")] == (compare.NOT_SIGNIFICANT,
                                                     pytest.approx(0.1))
