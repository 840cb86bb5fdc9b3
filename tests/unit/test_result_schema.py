"""The JSON Schema of result.json: shipped, valid, true to every stored result, and the
source of docs/results.md's field table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from orchestrator import resources
from orchestrator.results import schema as result_schema

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
STORED = sorted((REPO / "tests/data/results").glob("*/result.json"))


def validator() -> object:
    doc = result_schema.load_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def test_schema_is_shipped_beside_the_model() -> None:
    path = resources.result_schema()
    assert path.name == "result.schema.json" and path.parent.name == "results"
    assert result_schema.load_schema()["title"] == "tcplab.result/1"


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.parent.name)
def test_every_stored_result_is_valid(path: Path) -> None:
    errors = list(validator().iter_errors(json.loads(path.read_text())))
    assert errors == []


def test_eight_stored_results_cover_every_backend_here() -> None:
    backends = {json.loads(p.read_text())["metadata"]["backend"] for p in STORED}
    assert len(STORED) >= 8 and backends == {"netns", "docker", "vm"}


def test_a_broken_result_is_refused() -> None:
    data = json.loads(STORED[0].read_text())
    bad = copy.deepcopy(data)
    bad["status"] = "done"
    del bad["checkpoints"][1]["per_connection_bytes"]["total"]
    messages = sorted(e.message for e in validator().iter_errors(bad))
    assert messages == ["'done' is not one of ['complete', 'incomplete']",
                        "'total' is a required property"]


def test_docs_results_table_is_generated_from_the_schema() -> None:
    page = (REPO / "docs/results.md").read_text()
    start, end = page.index(result_schema.BEGIN), page.index(result_schema.END)
    assert page[start:end + len(result_schema.END)] == result_schema.markdown(), \
        "docs/results.md is stale: paste `python -m orchestrator.results.schema` between its markers"


def test_table_names_the_fields_the_issue_found_missing() -> None:
    paths = {p for p, _, _ in result_schema.field_rows()}
    for path in ("slope", "slope.total", "metadata.family", "metadata.server_model",
                 "metadata.hostname", "metadata.python", "metadata.machine_net_sysctls",
                 "metadata.hosts.<host>.nofile", "metadata.hosts.<host>.qdisc",
                 "metadata.hosts.<host>.container_id", "checkpoints[].memory",
                 "checkpoints[].per_connection_bytes.by_cache[].reason"):
        assert path in paths
