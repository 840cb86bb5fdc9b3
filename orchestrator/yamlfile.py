"""Strict YAML loading and typed field access with messages that name file and key.

Every user-editable file (lab file, profile, scenario) goes through :class:`Doc`, so
an error always reads ``FILE: KEY: expected WHAT, got VALUE``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last) and the
    YAML 1.1 readings that silently change what the user wrote (see _construct_int)."""


class YamlFloat(float):
    """A float read from YAML that remembers its text: ``6.10`` is the number 6.1, and an
    error about it must show the 6.10 the user wrote (``show``)."""

    yaml_text: str = ""


# dumps like any float (bundles write profiles back with safe_dump)
yaml.SafeDumper.add_representer(YamlFloat, yaml.SafeDumper.represent_float)


def _trap(node: yaml.ScalarNode, reads: str, fix: str) -> InputError:
    mark = node.start_mark
    return InputError(f"{mark.name}:{mark.line + 1}: YAML 1.1 reads {node.value} as {reads}; "
                      f"{fix}, or quote it (\"{node.value}\") to keep the text")


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """Integers as YAML 1.2 reads them; the 1.1-only forms PyYAML rewrites are refused:
    ``060`` (octal 48) and ``1:30`` (base 60: 90). ``10_000`` is kept: it reads as written."""
    value = loader.construct_yaml_int(node)
    digits = node.value.lstrip("+-")
    if ":" in digits:
        raise _trap(node, f"the number {value} (base 60)", f"write {value}")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB":
        raise _trap(node, f"the octal number {value}", "write the number without the leading 0")
    return value


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    value = YamlFloat(loader.construct_yaml_float(node))
    value.yaml_text = node.value
    return value


def _construct_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    """true/false only: ``on``, ``off``, ``yes``, ``no`` are YAML 1.1 booleans, text in 1.2."""
    value = loader.construct_yaml_bool(node)
    if node.value.lower() not in ("true", "false"):
        raise _trap(node, "true" if value else "false", "write true or false")
    return value


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
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def show(value: Any) -> str:
    """Render a user value for an error message, short."""
    written = getattr(value, "yaml_text", "")
    shown = written if written and math.isfinite(value) else repr(value)  # .inf: inf
    text = value if isinstance(value, str) else shown
    if not text.isprintable():  # a newline or a control character: one line, visible
        text = text.encode("unicode_escape").decode("ascii")
    text = f'"{text}"' if isinstance(value, str) else text
    text = text if len(text) <= 60 else text[:57] + "..."
    if written and math.isfinite(value) and written != repr(value):  # 6.10: YAML made 6.1
        text += f" (YAML reads it as the number {float(value)!r}; quote it to keep the text)"
    return text


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
    except yaml.reader.ReaderError as exc:  # a control character: no line, no mark
        raise InputError(f"{path}: malformed YAML (character {exc.character!r} at offset "
                         f"{exc.position} is not allowed in YAML); remove it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
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
