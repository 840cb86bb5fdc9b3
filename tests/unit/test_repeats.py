"""The --repeat table (orchestrator/repeats.py): no coefficient of variation where the
values reach or cross zero."""

from __future__ import annotations

import pytest

from orchestrator import repeats


def test_cv_of_one_sign():
    row = repeats.spread([100.0, 102.0, 98.0])
    assert row["cv"] == pytest.approx(0.02)
    assert repeats.spread([-100.0, -102.0, -98.0])["cv"] == pytest.approx(0.02)  # over |mean|


@pytest.mark.parametrize("values", [[-113.0, 0.0, -60.0], [-1049.0, 293.0, 532.0],
                                    [0.0, 0.0, 0.0]])
def test_no_cv_where_values_reach_zero(values):
    assert repeats.spread(values)["cv"] is None


def test_table_shows_the_range_not_a_percentage():
    rows = [{"profile": "default", "checkpoint": "read", "figure": "TCP mem charged B/conn",
             **repeats.spread([-113.0, 0.0, -60.0])},
            {"profile": "default", "checkpoint": "read", "figure": "socket slab B/conn",
             **repeats.spread([7430.0, 7766.0, 7563.0])}]
    text = repeats.render(rows)
    charged = next(line for line in text.splitlines() if "TCP mem charged" in line)
    assert "-113..0" in charged and "– (0 in range)" in charged and "%" not in charged
    assert "2.23% !" in text  # the slab row keeps its CV and its warning
    assert "coefficient of variation above 2% for 1 figure(s)" in text
    assert "– (0 in range): the values reach or cross zero" in text


def test_buffers_and_goodput_are_summarised():
    """Besides the slab figures: the receiver's and sender's buffers per socket and the
    goodput (the sweep report's figures), from a stored slow-readers run; a figure that
    is 0 in every run (the sender's receive queue) is left out."""
    import gzip
    import json
    from pathlib import Path

    from orchestrator.results.model import Result

    data = Path(__file__).resolve().parents[1] / "data" / "conditions"
    run = Result.from_dict(json.loads(gzip.decompress(
        (data / "slow-readers-20261201-033622.result.json.gz").read_bytes())))
    rows = {(r["checkpoint"], r["figure"]): r for r in repeats.summarize([run, run])}
    assert rows[("transferring", "client rmem_alloc B/socket")]["median"] == 124936
    assert rows[("transferring", "client rmem_alloc B/socket")]["cv"] == 0
    assert rows[("transferring", "server wmem_queued B/socket")]["n"] == 2
    goodput = rows[("transfer", "goodput MB/s (all connections)")]["median"]
    assert 52.3 < goodput < 52.5
    assert ("transferring", "server rmem_alloc B/socket") not in rows
    text = repeats.render(list(rows.values()))
    line = next(x for x in text.splitlines() if "goodput" in x)
    assert f"{goodput:.2f}" in line and "0.00%" in line
