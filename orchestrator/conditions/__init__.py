"""Link conditions between the clients and the server: delay, jitter, loss, rate, queue.

``link.py`` the value, ``parse.py`` the input forms, ``placement.py`` where they go,
``engines.py`` netem or the fallback delay line, ``netem.py`` and ``fallback.py`` their
commands, ``session.py`` applying them in a run; docs/conditions.md.
"""

from .engines import ENGINES, choose
from .link import Link
from .parse import parse_map, parse_text

__all__ = ["ENGINES", "Link", "choose", "parse_map", "parse_text"]
