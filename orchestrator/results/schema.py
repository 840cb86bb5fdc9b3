"""The JSON Schema of ``result.json`` (``result.schema.json``, shipped with the package):
loaded from the package, used to validate results in the tests, and the source of the
field table in docs/results.md (``python -m orchestrator.results.schema`` prints it;
tests/unit/test_result_schema.py checks the page holds exactly that table).
"""

from __future__ import annotations

import json
from typing import Any

from .. import resources

BEGIN = "<!-- fields: generated from orchestrator/results/result.schema.json -->"
END = "<!-- fields: end -->"


def load_schema() -> dict[str, Any]:
    """The schema as shipped (package data of ``orchestrator.results``)."""
    return json.loads(resources.result_schema().read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return root["$defs"][ref.rsplit("/", 1)[1]]
    return node


def _type(node: dict[str, Any]) -> str:
    kinds = node.get("type", "")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    names = {"string": "str", "number": "float", "integer": "int", "boolean": "bool",
             "object": "object", "array": "list", "null": "null"}
    return "/".join(names.get(k, k) for k in kinds) or "any"


def field_rows(schema: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(dotted path, type, description) of every field the schema names, depth first.
    ``[]`` marks a list's items, ``<host>`` (``x-key``) a mapping's keys."""
    root = schema or load_schema()
    rows: list[tuple[str, str, str]] = []

    def walk(node: dict[str, Any], path: str) -> None:
        node = _resolve(node, root)
        if path:
            rows.append((path, _type(node), node.get("description", "")))
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}" if path else name)
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            inner = _resolve(values, root)
            if inner.get("properties") or isinstance(inner.get("additionalProperties"), dict):
                walk(values, f"{path}.<{node.get('x-key', 'key')}>")
        items = node.get("items")
        if isinstance(items, dict) and _resolve(items, root).get("properties"):
            for name, child in _resolve(items, root)["properties"].items():
                walk(child, f"{path}[].{name}")

    walk(root, "")
    return rows


def markdown(schema: dict[str, Any] | None = None) -> str:
    """The field table of docs/results.md, between its markers."""
    lines = [BEGIN, "", "| field | type | meaning |", "|---|---|---|"]
    for path, kind, text in field_rows(schema):
        lines.append(f"| `{path}` | {kind} | {text.replace('|', '/')} |")
    return "\n".join(lines + ["", END])


if __name__ == "__main__":
    print(markdown())
