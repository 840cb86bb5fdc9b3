"""`tcplab run`: plans, runs (several kernels, profiles, repetitions), reports."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, runner
from ..backends.vm.reuse import VmPool
from ..errors import InputError, LabError, RunError
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
    from ..plan import make_plan
    from ..report import text as report_text
    from ..report.html import REPORT_FILE, write_report
    from ..results import load_result

    root = Path.cwd()  # the user's own files: results/ lands here unless --results
    _refuse_stale()
    profiles = args.profile or [None]
    kernels = _kernel_list(args)
    scenarios = scenario_list(args)
    sweep = None
    if getattr(args, "sweep", None):
        from . import sweeping

        if len(scenarios) > 1:
            raise InputError(f"--sweep/SWEEP runs one setup over one key's values; got "
                             f"{len(scenarios)} scenarios (--scenario/SCENARIO): sweep each "
                             "scenario on its own")
        sweep = sweeping.check(args, profiles, kernels)
        plan_kernels = [kernels[0]] * len(sweep.values)
        plans = [make_plan(_options(args, root, profiles[0], kernels[0],
                                    **sweeping.point_options(sweep, value, args)))
                 for value in sweep.values]  # every point validated before any run
        sweep_dir = sweeping.new_sweep_dir(args.results or root / "results", plans[0], sweep)
        for plan in plans:
            plan.options.results_dir = sweep_dir
    else:  # kernel by kernel: the runs of one kernel reuse its VMs (backends/vm/reuse.py)
        triples = [(s, p, k) for k in kernels for s in scenarios for p in profiles]
        plan_kernels = [k for _, _, k in triples]
        plans = [make_plan(_options(args, root, p, k, scenario=s))  # all validated first
                 for s, p, k in triples]
    run_dirs: list[Path] = []
    points: list[int] = []  # the plan (sweep point) of each run in run_dirs
    failed_points: list[tuple[int, LabError]] = []
    failed: list[tuple[str, str, LabError]] = []  # (kernel label, what, error)
    if args.json:  # stdout carries the JSON alone; the tables stay unprinted
        out = _silent
    together = _parallel(args, plan_kernels, plans, profiles)
    # VMs booted once per kernel and reused by its next runs; repetitions boot fresh ones
    pool = VmPool(_note) if args.repeat == 1 and len(plans) > 1 else None
    old_term = signal.signal(signal.SIGTERM, _terminated) if pool is not None else None
    held = _hold_lock(args, plans, together) if pool is not None else None
    try:
        _run_plans(args, plans, plan_kernels, together, sweep, pool, run_dirs, points,
                   failed, failed_points)
    finally:
        if pool is not None:
            pool.close()
            signal.signal(signal.SIGTERM, old_term)
        if held is not None:
            held()
    if failed and not run_dirs:
        raise failed[0][2]
    results = [load_result(d) for d in run_dirs]
    if sweep is not None:
        pass  # the sweep report, below: it links each run's report
    elif len(kernels) > 1:  # KERNELS="6.1 6.12 host": one comparison of the kernels
        from ..report import kernels as kernels_compare

        for name in dict.fromkeys(r.scenario.name for r in results):  # one per scenario
            mine = [i for i, r in enumerate(results) if r.scenario.name == name]
            out("")
            text, written = kernels_compare.report(
                [results[i] for i in mine], [run_dirs[i] for i in mine],
                args.results or root / "results", {k: str(e) for k, _w, e in failed})
            out(text)
            out("runs: " + " ".join(str(run_dirs[i]) for i in mine))
            out(f"comparison: {_shown(written)}")
            out(f"comparison: {_shown(written.with_name(written.stem + '.html'))} (charts)")
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
        if len(profiles) > 1 and len(scenarios) == 1:  # PROFILES="a b": side by side
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
    # a parallel sweep's children wrote their runs' reports: not drawn again here (the
    # charts take seconds each on a loaded machine)
    drawn = {d for dirs, _ in together.values() for d in dirs}
    reports = [run_dir / REPORT_FILE if run_dir in drawn and (run_dir / REPORT_FILE).exists()
               else write_report(run_dir) for run_dir in run_dirs]
    for report in reports:
        out(f"report: {_shown(report)}")
    doc = headline(results, run_dirs, reports)
    if sweep is not None:
        from . import sweeping

        doc["sweep"] = sweeping.finish(sweep, sweep_dir, results, run_dirs, points,
                                       [(i, str(e)) for i, e in failed_points], out)
    if args.json:
        print(json.dumps(doc, indent=1))
    for _label, what, exc in failed:
        print(f"tcplab: error: {what} failed: {exc}", file=sys.stderr)
    if failed:
        print(f"tcplab: error: {len(failed)} of {len(failed) + len(run_dirs)} runs failed; "
              "the others completed and are compared above", file=sys.stderr)
        return 1
    return 0


def _run_plans(args: argparse.Namespace, plans: list[Any], plan_kernels: list[str | None],
               together: dict[str | None, tuple[list[Path], str | None]], sweep: Any,
               pool: VmPool | None, run_dirs: list[Path], points: list[int],
               failed: list[tuple[str, str, LabError]],
               failed_points: list[tuple[int, LabError]]) -> None:
    """Run the plans in order (those of the parallel phase: its outcome), collecting each
    run's directory and plan index, or its failure."""
    from ..backends.vm.reuse import pool_key
    from ..run.labrun import run_plan
    from ..ui import UI

    taken: set[str | None] = set()
    for index, plan in enumerate(plans):
        kernel = plan_kernels[index]
        if together and kernel in together:  # measured by the parallel phase: its outcome
            if kernel not in taken:
                taken.add(kernel)
                dirs, error = together[kernel]
                run_dirs.extend(dirs)
                if error is not None:
                    what = f"kernel {kernel} · profile {plan.profile.name}"
                    failed.append((str(kernel), what, RunError(error)))
            continue
        for rep in range(args.repeat):
            ui = UI(phases=4, quiet=args.quiet, verbose=args.verbose)
            runner.TRACE = ui.command if ui.verbose else None
            sc = plan.scenario
            tag = f" · run {rep + 1}/{args.repeat}" if args.repeat > 1 else ""
            if sweep is not None:
                tag = f" · {sweep.key}={sweep.labels[index]}" + tag
            label = (plan.lab.hosts[0].kernel or "6.1") if plan.backend == "vm" else "host"
            kernel_shown = label if plan.backend == "vm" else os.uname().release
            ui.line(f"tcplab {__version__} · backend {plan.backend} · kernel {kernel_shown} · "
                    f"profile {plan.profile.name} · {sc.name} · N={sc.connections:,} · "
                    f"BYTES={sc.bytes:,}{tag}")
            nxt = plans[index + 1] if index + 1 < len(plans) else None
            # a VM's kernel is measured again only by a run on the same kept VMs
            same_vms = nxt is not None and pool_key(nxt) is not None \
                and pool_key(nxt) == pool_key(plan)
            followed = rep + 1 < args.repeat or (
                same_vms if plan.backend == "vm" else nxt is not None)
            try:
                run_dir = run_plan(plan, ui, followed=followed, pool=pool)
            except LabError as exc:  # one run of several failing: the others still run
                # (an Interrupted is no LabError: Ctrl-C ends them all)
                if len(plans) * args.repeat == 1:
                    raise
                what = f"kernel {label} · profile {plan.profile.name}{tag}"
                if len({p.scenario.name for p in plans}) > 1:
                    what += f" · {sc.name}"
                failed.append((label, what, exc))
                failed_points.append((index, exc))
                ui.line(f"! {what} failed: {exc}")
                ui.line("  going on with the other runs")
                continue
            finally:
                if pool is not None and not same_vms:
                    pool.discard()  # the next run boots other VMs: these stop now
            ui.phase("report", str(run_dir / "result.json"))
            run_dirs.append(run_dir)
            points.append(index)

def _hold_lock(args: argparse.Namespace, plans: list[Any],
               together: dict[Any, Any]) -> Callable[[], None] | None:
    """Runs that keep VMs between them hold the machine-wide lock from the first to the
    last (handed to each run like a parallel sweep hands it to its children): else another
    command's run could take it in between while the kept VMs wait. Returns the release."""
    from ..backends.vm.reuse import pool_key
    from ..journal import HostLock

    keys = [pool_key(p) for p in plans if p.backend != "vm" or not together]
    if not any(k is not None and keys.count(k) > 1 for k in keys):
        return None
    lock = HostLock("runs on kept VMs", wait=args.wait, note=_note)
    lock.acquire()
    if lock.shared:  # a parallel sweep's child: the sweep holds it
        return None
    before = os.environ.get("TCPLAB_LOCK_FD")
    os.environ["TCPLAB_LOCK_FD"] = str(lock.fd)

    def release() -> None:
        if before is None:
            os.environ.pop("TCPLAB_LOCK_FD", None)
        else:
            os.environ["TCPLAB_LOCK_FD"] = before
        lock.release()

    return release


def scenario_list(args: argparse.Namespace) -> list[str]:
    """--scenario "idle s2c" -> ["idle", "s2c"]: each is run, one after the other (on
    one kernel's VMs booted once); a single name or path as given."""
    names = str(args.scenario).replace(",", " ").split()
    if len(names) > 1 and args.bundle is None:
        if len(set(names)) != len(names):
            raise InputError(f"--scenario/SCENARIO: a scenario is named twice in "
                             f"{args.scenario!r}; name each once")
        return names
    return [args.scenario]


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _terminated(signum: int, _frame: Any) -> None:
    """SIGTERM between two runs while VMs are kept: the pool's cleanup runs (finally)."""
    from ..run.ending import Interrupted

    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; cleaned up", signum)


def _options(args: argparse.Namespace, root: Path, profile: str | None, kernel: str | None,
             **extra: Any) -> Any:
    """The RunOptions of one run of ``tcplab run`` (``extra``: a sweep point's)."""
    from ..plan import RunOptions

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
    for key, value in extra.items():  # a sweep point's: over what the command line gave
        setattr(opts, key, value)
    return opts


def _silent(_text: str) -> None:
    pass


def _parallel(args: argparse.Namespace, kernels: list[str | None], plans: list[Any],
              profiles: list[Any]) -> dict[str | None, tuple[list[Path], str | None]]:
    """The VM kernels of a sweep, several at once where memory allows (commands/sweep.py):
    kernel -> (its runs' directories, why it failed or None); each kernel's child runs its
    scenarios on VMs booted once. {} when they run one after the other (one VM kernel,
    repetitions, profiles, a --sweep, a bundle, --parallel 1 or memory for one)."""
    from ..journal import HostLock
    from ..ui import UI
    from . import sweep

    vm = list({k: p for k, p in zip(kernels, plans, strict=True) if p.backend == "vm"}.items())
    if (len(vm) < 2 or getattr(args, "sweep", None)  # sweep points share one kernel
            or args.repeat > 1 or len(profiles) > 1 or args.bundle is not None
            or os.environ.get("TCPLAB_LOCK_FD")):
        return {}
    width = sweep.slots([p for _, p in vm], getattr(args, "parallel", None))
    if width < 2:
        return {}
    ui = UI(phases=4, quiet=args.quiet, verbose=args.verbose)
    lock = HostLock("kernel sweep", wait=args.wait, note=ui.note)
    lock.acquire()
    try:
        ui.line(f"tcplab {__version__} · kernels {' '.join(str(k) for k, _ in vm)} in VMs, "
                f"{width} at once (memory for {sweep.slots([p for _, p in vm], 99)}; "
                f"--parallel caps it)")
        assert lock.fd is not None
        return sweep.run_parallel([str(k) for k, _ in vm], args, width, lock.fd, ui.line)
    finally:
        lock.release()


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
    if "all" in kernels:  # every series Debian's archive offers, then host
        from ..backends.vm.kernels import expand

        kernels = expand(kernels)
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
