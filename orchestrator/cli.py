"""The ``tcplab`` command. Exit codes: 0 success, 1 failed run, 2 bad input (nothing
created), 130 Ctrl-C and 143 SIGTERM (after cleaning up), as shells report signals."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from . import __version__, config, resources, scenario
from .errors import InputError, LabError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise InputError(f"{self.prog}: {message}; see {self.prog} --help")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _at_least_one(text: str) -> int:
    value = _positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


EXIT_CODES = """exit codes:
  0    success
  1    a run failed after it started (cleaned up; what it measured saved as incomplete)
  2    bad input: nothing was created
  130  interrupted by Ctrl-C (SIGINT); a run cleans up first
  143  stopped by SIGTERM; a run cleans up first"""


def build_parser() -> Parser:
    p = Parser(prog="tcplab", description="Measure what a TCP connection costs the Linux kernel.",
               epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tcplab {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a scenario, print and save a report",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--scenario", "-s", help="a name in scenarios/ or a path (required unless "
                     "--bundle gives it)")
    run.add_argument("--bundle", type=Path, metavar="FILE",
                     help="rerun the setup of a bundle (tcplab export): its lab file, profile, "
                          "scenario, N, bytes, family, server model; options given here win")
    run.add_argument("--profile", "-p", action="append",
                     help="a name in lab/profiles/ or a path (default: the lab's); repeat it to "
                          "run the scenario once per profile and compare")
    run.add_argument("--backend", "-b", choices=["netns", "docker", "auto", "ssh", "vm"])
    run.add_argument("--kernels", metavar="LIST",
                     help="vm backend: boot the hosts with these kernels, one run each, and "
                          "compare them (KERNELS=\"6.1 6.12 host\": a Debian cloud kernel "
                          "version, a path to a vmlinuz, or host = this machine)")
    run.add_argument("-n", "--connections", type=_at_least_one,
                     help="connections (default: the scenario's)")
    run.add_argument("--bytes", type=_positive_int, dest="nbytes", help="bytes per connection")
    run.add_argument("--lab", type=Path, help="lab file (default lab/default.yaml)")
    _topology_args(run)
    run.add_argument("--results", type=Path, help="results directory (default results/)")
    run.add_argument("--allow-host-sysctls", action="store_true",
                     help="let a profile change host-wide sysctls (saved first, restored after)")
    run.add_argument("--no-release-wait", action="store_false", dest="release_wait",
                     help="after a run, do not wait for the kernel to free its sockets "
                          "(TIME_WAIT lasts 60 s on a real host); by default the wait happens "
                          "only where a later run depends on it")
    run.add_argument("--stall", type=float, default=30.0,
                     help="seconds without progress before a side is declared stalled")
    run.add_argument("--ledger", action="store_true",
                     help="trace live kernel allocations per host, cache and call site with "
                          "bpftrace (LEDGER=1; netns and docker backends)")
    run.add_argument("--family", choices=["ipv4", "ipv6"],
                     help="address family of the lab's connections (FAMILY=ipv6; default ipv4)")
    run.add_argument("--server", choices=["blocking", "epoll"], dest="server_model",
                     help="server model: epoll registers every accepted socket, as real servers "
                          "do (default blocking)")
    run.add_argument("--repeat", type=_at_least_one, default=1,
                     help="run the whole scenario this many times, fresh hosts each time")
    run.add_argument("--levels", type=_at_least_one,
                     help="ramp in this many steps with a checkpoint after each; fits bytes "
                          "per connection as a slope (LEVELS=4)")
    run.add_argument("--per-worker", type=_positive_int, default=0,
                     help="sockets per side worker process (default: as the fd limit allows)")

    topo = sub.add_parser("topology", help="print a lab's topology: hosts, addresses, links")
    topo.add_argument("--lab", type=Path, help="lab file (default lab/default.yaml)")
    _topology_args(topo)

    rep = sub.add_parser("report", help="re-render the report of a saved run")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--format", choices=["table", "markdown", "json", "html"], default="table",
                     help="html: write report.html into the run directory and print its path")

    cmp = sub.add_parser("compare", help="compare saved runs (a folder of runs, or a bundle "
                                         "file, expands to its runs)")
    cmp.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_DIR")
    cmp.add_argument("--format", choices=["table", "markdown", "json", "html"], default="table")
    cmp.add_argument("-o", "--output", type=Path, help="write to FILE instead of printing")

    exp = sub.add_parser("export", help="pack runs and their setup into a bundle to share "
                                        "(rerun it with tcplab run --bundle)")
    exp.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_DIR")
    exp.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                     help="the bundle to write (.tar.gz); an existing file is never overwritten")

    runs = sub.add_parser("runs", help="list saved runs (local and imported), with filters")
    runs.add_argument("results", nargs="?", type=Path, default=Path("results"),
                      help="the results folder (default results/)")
    for name in ("scenario", "profile", "backend", "kernel", "origin", "status"):
        runs.add_argument(f"--{name}", action="append", metavar=name.upper(),
                          help=f"only runs of this {name} (repeat, or a,b, for any of several)"
                          + ("; 6.1 matches 6.1.0-56-cloud-amd64, not 6.18" if name == "kernel"
                             else ""))
    runs.add_argument("--since", metavar="DATE", help="runs started on or after DATE (UTC, "
                      "2026-11-26 or '2026-11-26 04:14')")
    runs.add_argument("--until", metavar="DATE", help="runs started before the end of DATE")
    runs.add_argument("--format", choices=["table", "json"], default="table")

    imp = sub.add_parser("import", help="add a colleague's bundle's runs to the library "
                                        "(results/imported/<origin>/; checked, never executed)")
    imp.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    imp.add_argument("--results", type=Path, default=Path("results"),
                     help="the library (default results/)")
    imp.add_argument("--origin", help="the folder under results/imported/ (default: the "
                                      "bundle's file name)")

    site = sub.add_parser("site", help="publish every run as one static, self-contained site "
                                       "(index, reports, trends, comparisons)")
    site.add_argument("results", nargs="?", type=Path, default=Path("results"),
                      help="the results folder (default results/)")
    site.add_argument("-o", "--output", type=Path, default=Path("site"), metavar="DIR",
                      help="where to write the site (default site/); rebuilding renders only "
                           "what changed")
    site.add_argument("--force", action="store_true", help="render every page again")

    sub.add_parser("scenarios", help="list scenarios")
    prof = sub.add_parser("profiles", help="list sysctl profiles, or show one resolved")
    prof.add_argument("action", nargs="?", choices=["show"])
    prof.add_argument("name", nargs="?")

    sub.add_parser("images", help="build the lab node image, or find it (docker backend)")

    doc = sub.add_parser("doctor", help="check this machine is ready for lab runs, with fixes")
    doc.add_argument("--lab", type=Path,
                     help="also check the ssh hosts of this lab file (reachable, key accepted, "
                          "python3, root, slabinfo, lab address)")

    wipe = sub.add_parser("wipe", help="remove everything tcplab runs left behind")
    wipe.add_argument("--all", action="store_true",
                      help="also runs whose owner still runs (stop them first)")
    wipe.add_argument("--lab", type=Path,
                      help="also restore sysctls journalled on this lab file's ssh hosts")
    return p


def _topology_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=_at_least_one, metavar="N",
                        help="this many client hosts, each its own address (CLIENTS=4)")
    parser.add_argument("--router", choices=["none", "plain", "nat"],
                        help="a router between the clients' and the server's network; nat: "
                             "it masquerades the clients (ROUTER=nat)")


def cmd_topology(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from . import topology

    lab = topology.derive(config.load_lab(args.lab or resources.default_lab()), args.clients,
                          args.router)
    out(topology.render(lab).rstrip("\n"))
    return 0


def cmd_run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.bundle is None:
        if not args.scenario:
            raise InputError("tcplab run: the following arguments are required: --scenario/-s "
                             "(or --bundle FILE); see tcplab run --help")
        return _run(args, out)
    from . import bundle

    with bundle.opened(args.bundle) as unpacked:
        overridden = bundle.apply_to_run_args(unpacked, args)
        args.bundle_info = unpacked.provenance(overridden)
        try:
            return _run(args, out)
        except InputError as exc:  # name the bundle's files, not the temporary directory
            raise InputError(unpacked.shown(str(exc))) from None


def _run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from . import repeats
    from .plan import RunOptions, make_plan
    from .report import text as report_text
    from .report.html import write_report
    from .results import load_result
    from .run.labrun import Interrupted, run_plan
    from .ui import UI

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
                          ledger=getattr(args, "ledger", False),
                          bundle=getattr(args, "bundle_info", None),
                          release_wait=getattr(args, "release_wait", True))
        if kernel not in (None, "host"):
            opts.kernel = kernel
        plans.append(make_plan(opts))
    run_dirs: list[Path] = []
    failed: list[tuple[str, str, LabError]] = []  # (kernel label, what, error)
    for index, plan in enumerate(plans):
        for rep in range(args.repeat):
            ui = UI(phases=4)
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
        from .report import kernels as kernels_compare

        out("")
        text, written = kernels_compare.report(results, run_dirs, args.results or root / "results",
                                               {k: str(e) for k, _w, e in failed})
        out(text)
        out("runs: " + " ".join(str(d) for d in run_dirs))
        out(f"comparison: {_shown(written)}")
    elif len(run_dirs) == 1:
        from .report import kernels as kernels_compare

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
            from .report import compare
            from .report.html import write_text_atomic

            cmp = compare.compare(results)
            out("")
            out(compare.render(cmp, "table"))
            stamp = run_dirs[0].name.split("-", 2)
            name = f"compare-{'-'.join(stamp[:2])}-{plans[0].scenario.name}.html"
            written = (args.results or root / "results") / name
            from .report.compare_charts import render_html as compare_html

            write_text_atomic(written, compare_html(results))
            out(f"comparison: {_shown(written)}")
        out("runs: " + " ".join(str(d) for d in run_dirs))
    for run_dir in run_dirs:
        out(f"report: {_shown(write_report(run_dir))}")
    for _label, what, exc in failed:
        print(f"tcplab: error: {what} failed: {exc}", file=sys.stderr)
    if failed:
        print(f"tcplab: error: {len(failed)} of {len(failed) + len(run_dirs)} runs failed; "
              "the others completed and are compared above", file=sys.stderr)
        return 1
    return 0


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


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _refuse_stale() -> None:
    from .journal import stale_runs

    stale = stale_runs()
    if stale:
        raise InputError(f"a previous run ({stale[0].run_id}) ended without cleaning up; run "
                         "`tcplab wipe` (make clean) to remove what it left, then try again")


def cmd_report(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    import json

    from .report import text as report_text
    from .results import load_result

    if args.format == "html":
        from .report.html import write_report

        out(str(_shown(write_report(args.run_dir))))
        return 0
    result = load_result(args.run_dir)
    if args.format == "json":
        out(json.dumps(result.to_dict(), indent=1))
    else:
        out(report_text.render(result, "github" if args.format == "markdown" else "simple"))
    return 0


def cmd_compare(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    import contextlib

    from . import bundle
    from .report import compare
    from .report.html import write_text_atomic
    from .results import load_result

    with contextlib.ExitStack() as stack:  # bundles: unpacked read-only, removed after reading
        runs: list[Path] = []
        for path in args.runs:
            if bundle.is_bundle(path):
                runs += stack.enter_context(bundle.opened(path)).run_dirs()
            else:
                runs += compare.expand_runs([path])
        if len(runs) < 2:
            raise InputError(f"tcplab compare: found {len(runs)} result; pass at least two runs "
                             "(or a folder or bundle holding several)")
        results = [load_result(r) for r in runs]
    if args.format == "html":  # with the side-by-side charts, drawn from the results
        from .report.compare_charts import render_html as compare_html

        text = compare_html(results)
    else:
        text = compare.render(compare.compare(results), args.format)
    if args.output:
        write_text_atomic(args.output, text if text.endswith("\n") else text + "\n")
        out(_shown(args.output))
    else:
        out(text)
    return 0


def cmd_export(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .bundle import export

    manifest = export(args.runs, args.output, Path.cwd())
    runs = manifest["runs"]
    out(f"{_shown(args.output)}: {len(runs)} run{'s' if len(runs) != 1 else ''} "
        f"({', '.join(r['run_id'] for r in runs)}), setup of {manifest['setup']['from_run']}, "
        f"{len(manifest['files']) + 1} files")
    out(f"rerun: tcplab run --bundle {_shown(args.output)}")
    return 0


def cmd_runs(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    import json

    from .library import catalog

    filters = catalog.Filters(
        scenario=catalog.split_values(args.scenario), profile=catalog.split_values(args.profile),
        backend=catalog.split_values(args.backend), kernel=catalog.split_values(args.kernel),
        origin=catalog.split_values(args.origin), status=catalog.split_values(args.status),
        since=catalog.parse_date(args.since, "--since") if args.since else None,
        until=catalog.until_value(args.until) if args.until else None)
    entries = catalog.scan(args.results)
    shown = filters.apply(entries)
    if args.format == "json":
        out(json.dumps([e.to_json() for e in shown], indent=1))
    else:
        out(catalog.render_table(shown, len(entries)))
    return 0


def cmd_import(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .library.importing import import_bundle

    for path in args.bundles:
        done = import_bundle(path, args.results, args.origin)
        new = [d for d in done if not d.skipped]
        out(f"{_shown(path)}: {len(new)} run{'s' if len(new) != 1 else ''} imported"
            + (f", {len(done) - len(new)} already there" if len(done) > len(new) else "")
            + " (checksums verified)")
        for d in done:
            out(f"  {_shown(d.path)}{'  (already imported)' if d.skipped else ''}")
    return 0


def cmd_site(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .library.site import build_site

    stats = build_site(args.results, args.output, force=args.force)
    out(stats.summary())
    out(f"site: {_shown(args.output / 'index.html')}")
    return 0


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
    from .backends.docker import connect
    from .backends.docker.image import ensure_image

    client = connect()
    info = ensure_image(client, resources.images_dir(), log=out)
    out(f"tag {info.tag}")
    out(f"digest {info.digest}")
    out(f"method {info.method}")
    out(f"cached {'yes' if info.cached else 'no'}")
    return 0


def cmd_doctor(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from . import doctor

    results = doctor.checks()
    if getattr(args, "lab", None) is not None:
        from .backends.sshhost.doctor import host_checks

        results += host_checks(args.lab)
    out(doctor.render(results))
    return 1 if any(c.ok is False for c in results) else 0


def cmd_wipe(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from .wipe import wipe

    for line in wipe(include_live=args.all, lab=args.lab):
        out(line)
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "export": cmd_export,
            "runs": cmd_runs, "import": cmd_import, "site": cmd_site,
            "scenarios": cmd_scenarios, "profiles": cmd_profiles, "images": cmd_images,
            "wipe": cmd_wipe, "doctor": cmd_doctor, "topology": cmd_topology}


def _one_line(message: str) -> str:
    """Control characters a user's input brought into a message (a path with a newline or
    a carriage return) escaped, so an error stays one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, print)
    except LabError as exc:
        if debug:
            traceback.print_exc()
        print(f"tcplab: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tcplab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
