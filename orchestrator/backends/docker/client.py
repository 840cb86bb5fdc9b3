"""The Docker daemon as the docker backend sees it: the SDK, one ping, container state.

Only the Docker SDK talks to the daemon; there is no ``docker`` CLI call. ``ping`` is the
one daemon check of the whole tool (``--backend auto``, ``tcplab doctor`` and the
backend's preflight use it).
"""

from __future__ import annotations

from typing import Any

from ...errors import InputError

PING_TIMEOUT_S = 5
#: Requests such as removing a container that holds 40,000 sockets take a while.
API_TIMEOUT_S = 300


def sdk() -> Any:
    """The Docker SDK module; InputError with the fix when it is not installed."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:
        raise InputError("the docker backend needs the Docker SDK for Python "
                         f"({exc}): pip install docker, or use BACKEND=netns") from None
    return docker


def short_error(what: object) -> str:
    """One line (at most 300 characters) of an exception or text, for messages: the
    daemon's own words for an API error, without the HTTP wrapping."""
    explanation = getattr(what, "explanation", None)
    text = " ".join(str(explanation or what).split())
    return text if len(text) <= 300 else text[:297] + "..."


def ping(timeout: float = PING_TIMEOUT_S) -> Any:
    """A Docker client whose daemon answered a ping within ``timeout`` seconds.

    Raises what the SDK raised (ImportError without the SDK): callers say what it means.
    """
    import docker

    client = docker.from_env(timeout=timeout)
    client.ping()
    return client


def connect(timeout: float = API_TIMEOUT_S) -> Any:
    """A Docker client whose daemon answered a ping. Raises InputError otherwise."""
    sdk()
    try:
        client = ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon"
        raise InputError(f"no Docker daemon answers ({short_error(exc)}): start it "
                         "(bash .ci/setup-docker.sh) or use BACKEND=netns") from None
    client.api.timeout = timeout
    return client
