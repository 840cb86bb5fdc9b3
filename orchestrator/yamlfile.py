"""Strict YAML loading and typed field access with messages that name file and key.

Every user-editable file (lab file, profile, scenario) goes through :class:`Doc`, so
an error always reads ``FILE: KEY: expected WHAT, got VALUE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            mark = key_node.start_mark
            raise InputError(
                f"{mark.name}:{mark.line + 1}: key {key!r} appears twice; keep one of them"
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def show(value: Any) -> str:
    """Render a user value for an error message, short."""
    text = value if isinstance(value, str) else repr(value)
    text = f'"{text}"' if isinstance(value, str) else text
    return text if len(text) <= 60 else text[:57] + "..."


def key_path(*parts: str) -> str:
    """Join key parts, quoting those with dots: sysctls."net.ipv4.tcp_rmem"."""
    return ".".join(f'"{p}"' if "." in p else p for p in parts)


def load_yaml(path: Path) -> Any:
    """Read and parse one YAML file; any problem is an InputError naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - strict SafeLoader subclass
    except InputError as exc:
        raise InputError(str(exc).replace("<unicode string>", str(path))) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: malformed YAML ({problem}); fix the syntax") from None


@dataclass
class Doc:
    """A mapping from a YAML file, with the file and key path for error messages."""

    file: Path
    data: dict
    prefix: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path, empty_ok: bool = True) -> Doc:
        data = load_yaml(path)
        if data is None and empty_ok:
            data = {}
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping at the top level, got {show(data)}")
        return cls(path, data)

    def where(self, key: str | None = None) -> str:
        parts = self.prefix + ((key,) if key is not None else ())
        return f"{self.file}: {key_path(*parts)}" if parts else str(self.file)

    def fail(self, key: str | None, expected: str, got: Any = ...) -> InputError:
        tail = "" if got is ... else f", got {show(got)}"
        return InputError(f"{self.where(key)}: expected {expected}{tail}")

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse keys other than ``allowed`` (typos must not pass silently)."""
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                raise InputError(
                    f"{self.where(str(key))}: unknown key; expected one of {', '.join(allowed)}"
                )

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key not in self.data:
            if required:
                raise InputError(f"{self.where(key)}: missing; this key is required")
            return default
        return self.data[key]

    def str(self, key: str, default: Any = None, required: bool = False) -> Any:
        value = self._get(key, default, required)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string", value)
        return value

    def int(self, key: str, default: Any = None, required: bool = False, minimum: int = 0) -> Any:
        value = self._get(key, default, required)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def list(self, key: str, default: Any = None, required: bool = False) -> Any:
        value = self._get(key, default, required)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def map(self, key: str, required: bool = False) -> Doc:
        value = self._get(key, {}, required)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        return Doc(self.file, value, self.prefix + (key,))
