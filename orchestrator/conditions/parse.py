"""Link conditions as people write them: ``LINK="delay=25ms loss=0.5% rate=200mbit"``
(``--link``) or a lab file's ``network.link`` map (netlab's link keys: delay, jitter, loss,
rate, plus queue). Strict: every problem is an InputError naming where it was written
(``--link/LINK: KEY: ...`` or ``FILE: network.link.KEY: ...``), before anything exists.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import InputError
from ..yamlfile import Doc, show
from .link import Link

KEYS = ("delay", "jitter", "loss", "rate", "queue")
CLI = "--link/LINK"
EXAMPLE = '"delay=25ms loss=0.5% rate=200mbit queue=2000"'
MAX_DELAY_US = 10_000_000  # 10 s each way
MIN_RATE, MAX_RATE = 8_000, 100 * 10**9  # 8 kbit/s .. 100 Gbit/s
MAX_QUEUE = 1_000_000

_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_BYTE_RATE = re.compile(r"^\d+(?:\.\d+)?[kmg]?bps$")
_TIME_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}

EXPECTED = {
    "delay": "a one-way delay like 25ms (us, ms or s) up to 10s",
    "jitter": "a jitter like 2ms (us, ms or s) up to 10s",
    "loss": "a loss percentage like 0.5% (0 to below 100)",
    "rate": "a rate in bits per second like 200mbit (bit, kbit, mbit, gbit) from 8kbit to "
            "100gbit",
    "queue": "a number of packets from 1 to 1000000",
}


class _Bad(Exception):
    """One value refused: the key, what was expected, what was given (``...``: nothing)."""

    def __init__(self, key: str, expected: str, got: Any = ...) -> None:
        super().__init__(key)
        self.key, self.expected, self.got = key, expected, got


def parse_text(text: str) -> Link:
    """``--link``/``LINK=``: space- or comma-separated KEY=VALUE pairs; ``none`` is the
    perfect link (it overrides a lab file's ``network.link``)."""
    words = text.replace(",", " ").split()
    if words == ["none"]:
        return Link()
    if not words:
        raise InputError(f"{CLI}: expected KEY=VALUE pairs like {EXAMPLE}, or none, got \"\"")
    values: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key or not value:
            raise InputError(f"{CLI}: expected KEY=VALUE pairs like {EXAMPLE}, got {show(word)}")
        if key not in KEYS:
            raise InputError(f"{CLI}: {key}: unknown key; expected one of {', '.join(KEYS)}")
        if key in values:
            raise InputError(f"{CLI}: {key} is given twice; keep one")
        values[key] = value
    try:
        return build(values)
    except _Bad as bad:
        tail = "" if bad.got is ... else f", got {show(bad.got)}"
        raise InputError(f"{CLI}: {bad.key}: expected {bad.expected}{tail}") from None


def parse_map(doc: Doc) -> Link:
    """A lab file's ``network.link`` mapping (already a Doc: unknown keys refused here)."""
    doc.only(KEYS)
    try:
        return build(dict(doc.data))
    except _Bad as bad:
        raise doc.fail(bad.key, bad.expected, bad.got) from None


def build(values: dict[str, Any]) -> Link:
    """The Link of validated values (text from the command line, or YAML scalars)."""
    delay = _time("delay", values["delay"]) if "delay" in values else 0
    jitter = _time("jitter", values["jitter"]) if "jitter" in values else 0
    if jitter > delay:
        raise _Bad("jitter", f"a jitter no larger than the delay ({delay / 1000:g}ms; netem "
                   "would clip the negative delays, skewing the distribution)",
                   values["jitter"])
    loss = _loss(values["loss"]) if "loss" in values else 0.0
    rate = _rate(values["rate"]) if "rate" in values else 0
    queue = _queue(values["queue"]) if "queue" in values else 0
    return Link(delay, jitter, loss, rate, queue)


def _time(key: str, value: Any) -> int:
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text == "0":
        return 0
    m = _TIME.match(text or "")
    if not m:
        raise _Bad(key, EXPECTED[key], value)
    us = round(float(m.group(1)) * _TIME_UNITS[m.group(2)])
    if us > MAX_DELAY_US:
        raise _Bad(key, EXPECTED[key], value)
    return us


def _loss(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad("loss", EXPECTED["loss"], value)
    if isinstance(value, (int, float)):
        pct = float(value)
    else:
        text = str(value).strip()
        try:
            pct = float(text[:-1] if text.endswith("%") else text)
        except ValueError:
            raise _Bad("loss", EXPECTED["loss"], value) from None
    if not 0 <= pct < 100 or pct != pct:
        raise _Bad("loss", EXPECTED["loss"], value)
    return pct


def _rate(value: Any) -> int:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if _BYTE_RATE.match(text):
        raise _Bad("rate", "bits per second (tc's kbps, mbps and gbps are bytes per second): "
                   "write kbit, mbit or gbit, like 200mbit", value)
    m = _RATE.match(text)
    if not m:
        raise _Bad("rate", EXPECTED["rate"], value)
    bps = round(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if not MIN_RATE <= bps <= MAX_RATE:
        raise _Bad("rate", EXPECTED["rate"], value)
    return bps


def _queue(value: Any) -> int:
    number = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_QUEUE:
        raise _Bad("queue", EXPECTED["queue"], value)
    return number
