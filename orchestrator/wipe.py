"""``tcplab wipe``: remove what runs left behind, using only their journals and labels.

Works without the lab file and after the orchestrator was killed. A run whose owner
process still lives is left alone unless ``include_live`` (it would be torn down
under a working run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .journal import LOCAL_HANDLERS, journals

UndoFn = Callable[[dict], None]


def _handlers(messages: list[str]) -> dict[str, UndoFn]:
    handlers = dict(LOCAL_HANDLERS)
    from .backends.sshhost import remote_undo_handlers
    from .backends.vm import vm_undo_handlers

    handlers.update(remote_undo_handlers())  # sysctls journalled on ssh hosts
    handlers.update(vm_undo_handlers())  # qemu processes of the vm backend
    try:
        from .backends.docker import docker_undo_handlers
    except ImportError:
        return handlers
    try:
        handlers.update(docker_undo_handlers())
    except Exception as exc:  # no daemon: journal entries for containers stay, say so
        messages.append(f"docker: not reachable ({exc}); containers of old runs not checked")
    return handlers


def wipe(include_live: bool = False, lab: Path | None = None) -> list[str]:
    messages: list[str] = []
    handlers = _handlers(messages)
    live_runs = set()
    for journal in journals():
        if not journal.is_stale() and not include_live:
            owner = journal.owner()
            live_runs.add(journal.run_id)
            messages.append(f"{journal.run_id}: still running (pid {owner.get('pid')}); left alone")
            continue
        count = len(journal.entries())
        problems = journal.undo(handlers, messages.append)
        state = "cleaned" if not problems else f"{len(problems)} problem(s) left"
        messages.append(f"{journal.run_id}: {count} resource(s) undone, {state}")
    try:
        from .backends.docker import wipe_labelled
    except ImportError:
        pass
    else:
        try:
            messages += wipe_labelled(keep_runs=live_runs)
        except Exception as exc:
            messages.append(f"docker: labelled resources not checked ({exc})")
    if lab is not None:  # remote hosts: their own sysctl journals
        from .backends.sshhost import wipe_remote

        messages += wipe_remote(lab, set() if include_live else live_runs)
    if not messages:
        messages.append("nothing to wipe")
    return messages
