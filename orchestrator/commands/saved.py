"""Commands on saved results: report, compare, export, runs, import, site."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from . import _shown


def cmd_report(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from ..report import text as report_text
    from ..results import load_result

    if args.format == "html":
        from ..report.html import write_report

        out(str(_shown(write_report(args.run_dir))))
        return 0
    result = load_result(args.run_dir)
    if args.format == "csv":
        from ..api import rows_csv

        out(rows_csv([result]).rstrip("\n"))
        return 0
    if args.format == "json":
        out(json.dumps(result.to_dict(), indent=1))
    else:
        out(report_text.render(result, "github" if args.format == "markdown" else "simple"))
    return 0


def cmd_compare(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    import contextlib

    from .. import bundle
    from ..report import compare
    from ..report.html import write_text_atomic
    from ..results import load_result

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
        from ..report.compare_charts import render_html as compare_html

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
    from ..bundle import export

    manifest = export(args.runs, args.output, Path.cwd())
    runs = manifest["runs"]
    out(f"{_shown(args.output)}: {len(runs)} run{'s' if len(runs) != 1 else ''} "
        f"({', '.join(r['run_id'] for r in runs)}), setup of {manifest['setup']['from_run']}, "
        f"{len(manifest['files']) + 1} files")
    out(f"rerun: tcplab run --bundle {_shown(args.output)}")
    return 0


def cmd_runs(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    import json

    from ..library import catalog

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
    from ..library.importing import import_bundle

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
    from ..library.site import build_site

    stats = build_site(args.results, args.output, force=args.force)
    out(stats.summary())
    out(f"site: {_shown(args.output / 'index.html')}")
    return 0
