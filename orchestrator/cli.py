"""The ``tcplab`` command. Exit codes: see ``EXIT_CODES`` (shown by ``tcplab --help``)."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

from . import __version__
from .commands.machine import (
    cmd_doctor,
    cmd_images,
    cmd_profiles,
    cmd_scenarios,
    cmd_topology,
    cmd_wipe,
)
from .commands.run import cmd_run
from .commands.saved import (
    cmd_compare,
    cmd_export,
    cmd_import,
    cmd_report,
    cmd_runs,
    cmd_site,
)
from .errors import InputError, LabError

EXIT_CODES = """exit codes:
  0    success
  1    the run failed (a lab host, a side or a checkpoint went wrong; cleaned up)
  2    bad input, or another run holds the machine-wide lock: nothing was created
  130  interrupted by Ctrl-C (SIGINT); a run cleans up first
  143  stopped by SIGTERM; a run cleans up first"""

EXAMPLES = {
    "tcplab": """examples:
  tcplab run -s idle -n 2000               # one run: report on stdout, progress on stderr
  tcplab run -s c2s --json | jq .runs[0].result
  tcplab report results/RUN --format csv   # tidy rows: one per checkpoint, host and cache
  tcplab compare results/RUN_A results/RUN_B --format markdown
  tcplab -v run -s idle -n 100             # each command with its host, as it runs""",
    "run": """examples:
  tcplab run -s idle                       # the scenario's N, the lab's backend (auto)
  tcplab run -s s2c -n 2000 --bytes 65536 -b netns
  tcplab run -s idle -p default -p small-buffers       # one run per profile, compared
  tcplab run -s idle --levels 4 --repeat 3
  tcplab run -s bulk --sweep "net.ipv4.tcp_rmem=4096 131072 {1M,4M,32M}" --repeat 3
  tcplab run -s idle --json                # stdout: the result path and headline figures
  tcplab run -s idle --wait 600            # queue behind a run holding the lock
  tcplab run -s bulk --link "delay=25ms rate=40mbit loss=0.5%"   # docs/conditions.md""",
    "report": """examples:
  tcplab report results/RUN                # the text report again
  tcplab report results/RUN --format html  # (re)write results/RUN/report.html
  tcplab report results/RUN --format csv > run.csv   # pandas.read_csv takes it as is""",
    "compare": """examples:
  tcplab compare results/RUN_A results/RUN_B
  tcplab compare results/ -o compare.html --format html""",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and shows each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and "(default" not in text and action.option_strings
                and default not in (None, False, argparse.SUPPRESS)
                and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise InputError(f"{self.prog}: {message}; see {self.prog} --help")


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _output_options(parser: argparse.ArgumentParser, default: object) -> None:
    """-v/-q, accepted before the subcommand and after it (``tcplab run -v``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="print each command run on a lab host, with the host, as it runs")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress lines on stderr: only results and errors")


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


def build_parser() -> Parser:
    p = Parser(prog="tcplab", description="Measure what a TCP connection costs the Linux kernel. "
               "Progress goes to stderr, results to stdout; NO_COLOR=1 turns colour off.",
               epilog=EXAMPLES["tcplab"] + "\n\n" + EXIT_CODES)
    p.add_argument("--version", action="version", version=f"tcplab {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks (anywhere on the line)")
    _output_options(p, False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser,
                           metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _output_options(common, argparse.SUPPRESS)

    def add(name: str, text: str, **kwargs: Any) -> Parser:
        epilog = (EXAMPLES[name] + "\n\n" if name in EXAMPLES else "") + EXIT_CODES
        return sub.add_parser(name, help=text, description=text, epilog=epilog,
                              parents=[common], **kwargs)

    run = add("run", "run a scenario, print and save a report")
    run.add_argument("--scenario", "-s", help="a name in scenarios/ or a path (required unless "
                     "--bundle gives it); several (\"idle s2c\") run one after the other, "
                     "on VMs booted once per kernel")
    run.add_argument("--bundle", type=Path, metavar="FILE",
                     help="rerun the setup of a bundle (tcplab export): its lab file, profile, "
                          "scenario, N, bytes, family, server model; options given here win")
    run.add_argument("--profile", "-p", action="append",
                     help="a name in lab/profiles/ or a path (default: the lab's); repeat it to "
                          "run the scenario once per profile and compare")
    run.add_argument("--backend", "-b", choices=["netns", "docker", "auto", "ssh", "vm"],
                     help="where the lab hosts run (default: the lab file's, auto: docker when "
                          "a daemon answers, else netns)")
    run.add_argument("--kernels", metavar="LIST",
                     help="vm backend: boot the hosts with these kernels, one run each, and "
                          "compare them (KERNELS=\"6.1 6.12 host\": a Debian cloud kernel "
                          "version 5.10 to 7.x, a path to a vmlinuz, or host = this machine; "
                          "all = every series Debian's archive offers, and host)")
    run.add_argument("-n", "--connections", type=_at_least_one, metavar="N",
                     help="connections (default: the scenario's)")
    run.add_argument("--bytes", type=_positive_int, dest="nbytes", metavar="BYTES", help="bytes per connection")
    run.add_argument("--lab", type=Path, metavar="FILE",
                     help="lab file (default lab/default.yaml)")
    _topology_args(run)
    run.add_argument("--link", metavar="CONDITIONS",
                     help="link conditions between clients and server, e.g. \"delay=25ms "
                          "loss=0.5%% rate=200mbit queue=2000\" (LINK=; delay is one-way; "
                          "none: a perfect link; docs/conditions.md)")
    run.add_argument("--link-engine", choices=["auto", "netem", "fallback"], default="auto",
                     help="netem (the kernel's), fallback (the delay line, on this machine's "
                          "kernel or inside the VMs) or auto: netem where the kernel has it "
                          "(LINK_ENGINE=)")
    run.add_argument("--results", type=Path, metavar="DIR",
                     help="results directory (default results/)")
    run.add_argument("--allow-host-sysctls", action="store_true",
                     help="let a profile change host-wide sysctls (saved first, restored after)")
    run.add_argument("--no-release-wait", action="store_false", dest="release_wait",
                     help="after a run, do not wait for the kernel to free its sockets "
                          "(TIME_WAIT lasts 60 s on a real host); by default the wait happens "
                          "only where a later run depends on it")
    run.add_argument("--stall", type=float, default=30.0, metavar="SECONDS",
                     help="seconds without progress before a side is declared stalled")
    run.add_argument("--ledger", action="store_true",
                     help="trace live kernel allocations per host, cache and call site with "
                          "bpftrace (LEDGER=1; netns and docker backends)")
    run.add_argument("--family", choices=["ipv4", "ipv6"],
                     help="address family of the lab's connections (FAMILY=ipv6; default ipv4)")
    run.add_argument("--server", choices=["blocking", "epoll"], dest="server_model",
                     help="server model: epoll registers every accepted socket, as real servers "
                          "do (default blocking)")
    run.add_argument("--repeat", type=_at_least_one, default=1, metavar="K",
                     help="run the whole scenario this many times, fresh hosts each time")
    run.add_argument("--levels", type=_at_least_one, metavar="K",
                     help="ramp in this many steps with a checkpoint after each; fits bytes "
                          "per connection as a slope (LEVELS=4)")
    run.add_argument("--sweep", metavar="KEY=V1,V2,...",
                     help="run the scenario once per value of one sysctl or link condition "
                          "(times --repeat) and report memory per connection against it: "
                          "SWEEP=\"net.core.somaxconn=128,4096\", \"net.ipv4.tcp_rmem=4096 "
                          "131072 {1M,4M,32M}\" (braces expand one field; K/M/G suffixes), "
                          "\"delay=0ms,10ms,50ms\"")
    run.add_argument("--per-worker", type=_positive_int, default=0, metavar="K",
                     help="sockets per side worker process (default: as the fd limit allows)")
    run.add_argument("--parallel", type=_at_least_one, metavar="K",
                     help="KERNELS sweep: boot at most K kernels' VMs at once (default: as "
                          "many as memory allows, up to 2; 1: one after the other)")
    run.add_argument("--json", action="store_true",
                     help="print only JSON on stdout: each run's result path, report path, "
                          "status and bytes per connection at each checkpoint")
    run.add_argument("--wait", type=_wait_seconds, nargs="?", const=float("inf"),
                     metavar="SECONDS",
                     help="when another run holds the machine-wide lock, wait for it (up to "
                          "SECONDS; no value: as long as it takes) instead of exiting 2")

    topo = add("topology", "print a lab's topology: hosts, addresses, links")
    topo.add_argument("--lab", type=Path, metavar="FILE",
                      help="lab file (default lab/default.yaml)")
    _topology_args(topo)

    rep = add("report", "re-render the report of a saved run")
    rep.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory (results/ID)")
    rep.add_argument("--format", choices=["table", "markdown", "json", "html", "csv"],
                     default="table",
                     help="html: write report.html into the run directory and print its path; "
                          "csv: tidy rows (run, checkpoint, host, cache, bytes and objects per "
                          "connection)")

    cmp = add("compare", "compare saved runs (a folder of runs, or a bundle file, expands to "
                         "its runs)")
    cmp.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_DIR",
                     help="run directories, folders of runs or bundles")
    cmp.add_argument("--format", choices=["table", "markdown", "json", "html"], default="table",
                     help="output format")
    cmp.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write to FILE instead of printing")

    exp = add("export", "pack runs and their setup into a bundle to share (rerun it with "
                        "tcplab run --bundle)")
    exp.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_DIR",
                     help="run directories or folders of runs")
    exp.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                     help="the bundle to write (.tar.gz); an existing file is never overwritten")

    runs = add("runs", "list saved runs (local and imported), with filters")
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
    runs.add_argument("--format", choices=["table", "json"], default="table",
                      help="output format")

    imp = add("import", "add a colleague's bundle's runs to the library "
                        "(results/imported/<origin>/; checked, never executed)")
    imp.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE",
                     help="bundles written by tcplab export")
    imp.add_argument("--results", type=Path, default=Path("results"),
                     help="the library (default results/)")
    imp.add_argument("--origin", help="the folder under results/imported/ (default: the "
                                      "bundle's file name)")

    site = add("site", "publish every run as one static, self-contained site "
                       "(index, reports, trends, comparisons)")
    site.add_argument("results", nargs="?", type=Path, default=Path("results"),
                      help="the results folder (default results/)")
    site.add_argument("-o", "--output", type=Path, default=Path("site"), metavar="DIR",
                      help="where to write the site (default site/); rebuilding renders only "
                           "what changed")
    site.add_argument("--force", action="store_true", help="render every page again")

    add("scenarios", "list scenarios")
    prof = add("profiles", "list sysctl profiles, or show one resolved")
    prof.add_argument("action", nargs="?", choices=["show"], help="show: one profile resolved")
    prof.add_argument("name", nargs="?", help="the profile to show")

    add("images", "build the lab node image, or find it (docker backend)")

    doc = add("doctor", "check this machine is ready for lab runs, with fixes")
    doc.add_argument("--lab", type=Path, metavar="FILE",
                     help="also check the ssh hosts of this lab file (reachable, key accepted, "
                          "python3, root, slabinfo, lab address)")

    wipe = add("wipe", "remove everything tcplab runs left behind")
    wipe.add_argument("--all", action="store_true",
                      help="also runs whose owner still runs (stop them first)")
    wipe.add_argument("--lab", type=Path,
                      help="also restore sysctls journalled on this lab file's ssh hosts")
    return p


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "export": cmd_export,
            "runs": cmd_runs, "import": cmd_import, "site": cmd_site,
            "scenarios": cmd_scenarios, "profiles": cmd_profiles, "images": cmd_images,
            "wipe": cmd_wipe, "doctor": cmd_doctor, "topology": cmd_topology}


def _topology_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=_at_least_one, metavar="N",
                        help="this many client hosts, each its own address (CLIENTS=4)")
    parser.add_argument("--router", choices=["none", "plain", "nat"],
                        help="a router between the clients' and the server's network; nat: "
                             "it masquerades the clients (ROUTER=nat)")


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
    except KeyboardInterrupt as exc:  # a run's Interrupted says which signal, and cleaned up
        if str(exc):
            print(f"tcplab: error: {_one_line(str(exc))}", file=sys.stderr)
            return getattr(exc, "exit_code", 130)
        print("tcplab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tcplab report ... | head`: the reader has what it wanted
        sys.stdout = None  # type: ignore[assignment]  # no second error at exit's flush
        return 0


if __name__ == "__main__":
    sys.exit(main())
