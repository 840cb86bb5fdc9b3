"""The out-of-order figure (``buffers.<host>.ofo_inferred``) read from stored results
and shown in the text and HTML reports only when some checkpoint has such a socket."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from orchestrator.report import html, ofo, text
from orchestrator.results.model import Buffers, OfoHeld, Result

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "conditions"


def captured(name: str) -> Result:
    return Result.from_dict(json.loads(gzip.decompress((CAPTURED / name).read_bytes())))


LOSS = "link-bulk-loss-20261201-062306.result.json.gz"
OLD = "slow-readers-20261201-033622.result.json.gz"  # from before the figure existed


def test_the_model_reads_the_figure() -> None:
    r = captured(LOSS)
    at = r.checkpoint("transferring1")
    assert at is not None
    assert at.buffers["client"].ofo_inferred == OfoHeld(3, 1_823_184)
    assert at.buffers["server"].ofo_inferred == OfoHeld(0, 0)
    done = r.checkpoint("done")
    assert done is not None and done.buffers["client"].ofo_inferred == OfoHeld(0, 0)
    # older results: not recorded, not zero
    old = captured(OLD).checkpoint("transferring")
    assert old is not None and old.buffers["client"].ofo_inferred is None
    assert Buffers.from_dict({"sockets": 1}).ofo_inferred is None


def test_text_report_shows_the_checkpoints_that_have_some() -> None:
    r = captured(LOSS)
    assert ofo.rows(r) == [["transferring1", "client", "3", "4", "1,823,184"]]
    report = text.render(r)
    assert ofo.TITLE in report and ofo.NOTE in report
    section = report.split(ofo.TITLE, 1)[1].split(ofo.NOTE, 1)[0]
    assert "transferring1  client          3     4                  1,823,184" in section
    assert "transferring2" not in section  # none held at that checkpoint: no row


def test_reports_say_nothing_when_none_held() -> None:
    r = captured(OLD)
    assert ofo.rows(r) == [] and ofo.text(r) == []
    assert ofo.TITLE not in text.render(r)
    assert 'id="ofo-held"' not in html.render_html(r)


def test_html_report_has_the_table() -> None:
    page = html.render_html(captured(LOSS))
    table = page.split('id="ofo-held"', 1)[1].split("</table>", 1)[0]
    assert "<td>transferring1</td><td>client</td>" in table
    assert '<td class="num">1,823,184</td>' in table
    assert ofo.NOTE in page
