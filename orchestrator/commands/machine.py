"""Commands about this machine and the shipped files: scenarios, profiles, images,
doctor, wipe."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import config, resources, scenario
from ..errors import InputError


def cmd_scenarios(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from tabulate import tabulate

    rows = scenario.list_scenarios(resources.scenarios_dir())
    out(tabulate(rows, ["scenario", "description"], tablefmt="plain"))
    return 0


def cmd_profiles(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from tabulate import tabulate

    pdir = resources.profiles_dir()
    if args.action == "show":
        if not args.name:
            raise InputError("tcplab profiles show: expected a profile name")
        prof = config.load_profile(args.name, pdir)
        out(f"{prof.name}: {prof.description}")
        out(f"files: {' -> '.join(str(f) for f in prof.files)}")
        rows = sorted(prof.sysctls.items())
        out(tabulate(rows, ["sysctl", "value"], tablefmt="plain") if rows else "(no sysctl changed)")
        return 0
    out(tabulate(config.list_profiles(pdir), ["profile", "description"], tablefmt="plain"))
    return 0


def cmd_images(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from ..backends.docker import connect
    from ..backends.docker.image import ensure_image

    client = connect()
    info = ensure_image(client, resources.images_dir(), log=out)
    out(f"tag {info.tag}")
    out(f"digest {info.digest}")
    out(f"method {info.method}")
    out(f"cached {'yes' if info.cached else 'no'}")
    return 0


def cmd_doctor(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .. import doctor

    results = doctor.checks()
    if getattr(args, "lab", None) is not None:
        from ..backends.sshhost.doctor import host_checks

        results += host_checks(args.lab)
    out(doctor.render(results))
    return 1 if any(c.ok is False for c in results) else 0


def cmd_wipe(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from ..wipe import wipe

    for line in wipe(include_live=args.all, lab=args.lab):
        out(line)
    return 0


def cmd_topology(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .. import topology

    lab = topology.derive(config.load_lab(args.lab or resources.default_lab()), args.clients,
                          args.router)
    out(topology.render(lab).rstrip("\n"))
    return 0
