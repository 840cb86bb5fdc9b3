"""`tcplab run`: plans, runs (several kernels, profiles, repetitions), reports."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, runner
from ..errors import InputError, LabError
from . import _shown


def cmd_run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.bundle is None:
        if not args.scenario:
            raise InputError("tcplab run: the following arguments are required: --scenario/-s "
                             "(or --bundle FILE); see tcplab run --help")
        return _run(args, out)
    from .. import bundle

    with bundle.opened(args.bundle) as unpacked:
        overridden = bundle.apply_to_run_args(unpacked, args)
        args.bundle_info = unpacked.provenance(overridden)
        try:
            return _run(args, out)
        except InputError as exc:  # name the bundle's files, not the temporary directory
            raise InputError(unpacked.shown(str(exc))) from None


def _run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .. import repeats
    from ..plan import RunOptions, make_plan
    from ..report import text as report_text
    from ..report.html import write_report
    from ..results import load_result
    from ..run.labrun import Interrupted, run_plan
    from ..ui import UI

    root = Path.cwd()  # the user's own files: results/ lands here unless --results
    _refuse_stale()
    profiles = args.profile or [None]
    kernels = _kernel_list(args)
    plans = []
    for profile, kernel in ((p, k) for p in profiles for k in kernels):  # all validated first
        opts = RunOptions(scenario=args.scenario, root=root, profile=profile,
                          backend=_kernel_backend(args, kernel), connections=args.connections,
                          nbytes=args.nbytes, lab_file=args.lab,
                          allow_host_sysctls=args.allow_host_sysctls, results_dir=args.results,
                          stall=args.stall, per_worker=args.per_worker, levels=args.levels or 1,
                          family=args.family or "ipv4",
                          server_model=args.server_model or "blocking",
                          clients=args.clients, router=args.router,
                          link=getattr(args, "link", None),
                          link_engine=getattr(args, "link_engine", "auto"),
                          ledger=getattr(args, "ledger", False),
                          bundle=getattr(args, "bundle_info", None), lock_wait=args.wait,
                          release_wait=getattr(args, "release_wait", True))
        if kernel not in (None, "host"):
            opts.kernel = kernel
        plans.append(make_plan(opts))
    run_dirs: list[Path] = []
    failed: list[tuple[str, str, LabError]] = []  # (kernel label, what, error)
    if args.json:  # stdout carries the JSON alone; the tables stay unprinted
        out = _silent
    for index, plan in enumerate(plans):
        for rep in range(args.repeat):
            ui = UI(phases=4, quiet=args.quiet, verbose=args.verbose)
            runner.TRACE = ui.command if ui.verbose else None
            sc = plan.scenario
            tag = f" · run {rep + 1}/{args.repeat}" if args.repeat > 1 else ""
            label = (plan.lab.hosts[0].kernel or "6.1") if plan.backend == "vm" else "host"
            kernel_shown = label if plan.backend == "vm" else os.uname().release
            ui.line(f"tcplab {__version__} · backend {plan.backend} · kernel {kernel_shown} · "
                    f"profile {plan.profile.name} · {sc.name} · N={sc.connections:,} · "
                    f"BYTES={sc.bytes:,}{tag}")
            followed = rep + 1 < args.repeat or index + 1 < len(plans)
            try:
                run_dir = run_plan(plan, ui, followed=followed)
            except LabError as exc:  # one run of several failing: the others still run
                if len(plans) * args.repeat == 1 or isinstance(exc, Interrupted):
                    raise
                what = f"kernel {label} · profile {plan.profile.name}{tag}"
                failed.append((label, what, exc))
                ui.line(f"! {what} failed: {exc}")
                ui.line("  going on with the other runs")
                continue
            ui.phase("report", str(run_dir / "result.json"))
            run_dirs.append(run_dir)
    if failed and not run_dirs:
        raise failed[0][2]
    results = [load_result(d) for d in run_dirs]
    if len(kernels) > 1:  # KERNELS="6.1 6.12 host": one comparison of the kernels
        from ..report import kernels as kernels_compare

        out("")
        text, written = kernels_compare.report(results, run_dirs, args.results or root / "results",
                                               {k: str(e) for k, _w, e in failed})
        out(text)
        out("runs: " + " ".join(str(d) for d in run_dirs))
        out(f"comparison: {_shown(written)}")
    elif len(run_dirs) == 1:
        from ..report import kernels as kernels_compare

        out("")
        out(report_text.render(results[0]))
        per_side = kernels_compare.per_side_text(results[0])
        if per_side:  # several kernels measured (VMs, remote hosts): each side on its own
            out("")
            out(per_side)
    else:
        out("")
        if args.repeat > 1:
            out(repeats.render(repeats.summarize(results)))
        if len(profiles) > 1:  # PROFILES="a b": one side-by-side comparison of the profiles
            from ..report import compare
            from ..report.html import write_text_atomic

            cmp = compare.compare(results)
            out("")
            out(compare.render(cmp, "table"))
            stamp = run_dirs[0].name.split("-", 2)
            name = f"compare-{'-'.join(stamp[:2])}-{plans[0].scenario.name}.html"
            written = (args.results or root / "results") / name
            from ..report.compare_charts import render_html as compare_html

            write_text_atomic(written, compare_html(results))
            out(f"comparison: {_shown(written)}")
        out("runs: " + " ".join(str(d) for d in run_dirs))
    reports = [write_report(run_dir) for run_dir in run_dirs]
    for report in reports:
        out(f"report: {_shown(report)}")
    if args.json:
        print(json.dumps(headline(results, run_dirs, reports), indent=1))
    for _label, what, exc in failed:
        print(f"tcplab: error: {what} failed: {exc}", file=sys.stderr)
    if failed:
        print(f"tcplab: error: {len(failed)} of {len(failed) + len(run_dirs)} runs failed; "
              "the others completed and are compared above", file=sys.stderr)
        return 1
    return 0


def _silent(_text: str) -> None:
    pass


def headline(results: list[Any], run_dirs: list[Path], reports: list[Path]) -> dict[str, Any]:
    """``tcplab run --json``: where each run's files are and its headline figures."""
    runs = []
    for result, run_dir, report in zip(results, run_dirs, reports, strict=True):
        runs.append({
            "run_id": result.run_id, "status": result.status,
            "result": _shown(run_dir / "result.json"), "report": _shown(report),
            "backend": result.metadata.backend, "kernel": result.metadata.kernel.release,
            "scenario": result.scenario.name, "profile": result.profile.name,
            "connections": result.scenario.connections, "bytes": result.scenario.bytes,
            "checkpoints": [{"name": c.name, "connections": c.connections,
                             "bytes_per_connection": round(c.per_connection().total, 1)}
                            for c in result.measured()],
            "slope": ((result.slope or {}).get("total") or {}).get("slope"),
        })
    return {"runs": runs}


def _kernel_list(args: argparse.Namespace) -> list[str | None]:
    """--kernels "6.1 6.12 host" -> ["6.1", "6.12", "host"]; none given -> [None]."""
    if not args.kernels:
        return [None]
    kernels = args.kernels.replace(",", " ").split()
    if not kernels:
        raise InputError("--kernels/KERNELS: expected kernel versions like \"6.1 host\"")
    if len(set(kernels)) != len(kernels):
        raise InputError(f"--kernels/KERNELS: a kernel is named twice in {args.kernels!r}")
    if args.backend in ("ssh", "docker") or (args.backend == "netns" and kernels != ["host"]):
        raise InputError(f"--kernels/KERNELS boots VMs (backend vm; 'host' runs on this machine); "
                         f"it does not go with --backend {args.backend}")
    return list(kernels)


def _kernel_backend(args: argparse.Namespace, kernel: str | None) -> str | None:
    """The backend of one kernel's run: vm for a kernel to boot, this machine for 'host'."""
    if kernel is None:
        return args.backend
    if kernel == "host":  # this machine's kernel: netns (like the VMs: no conntrack, no docker)
        return args.backend if args.backend in ("netns", "docker") else "netns"
    return "vm"




def _refuse_stale() -> None:
    from ..journal import stale_runs

    stale = stale_runs()
    if stale:
        raise InputError(f"a previous run ({stale[0].run_id}) ended without cleaning up; run "
                         "`tcplab wipe` (make clean) to remove what it left, then try again")
