"""`capacityd report`: build the weekly report on demand, write it as HTML, and optionally send it.

    capacityd report -c FILE --out report.html [--name REPORT] [--send [--force]]

One collection of the configured sources (the same code path as `capacityd once`), plus history
from state_dir, then the report of the named `reports:` entry (default: the first; without any,
a report of the whole estate). The HTML file is standalone (images inlined as data: URIs) with
the CSVs beside it. `--send` mails it through `smtp:` for the current period, recorded in the send
record like a scheduled send, so the scheduled run of the same period will not send it again
(and a second `--send` refuses unless `--force`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from collector.app.config import Config, load_config
from collector.contract.settings import ConfigError
from exporters.report.settings import ReportConfig

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the capacity report now: write HTML, optionally send it",
        description="Collect once, build the capacity report, write it as HTML (and CSV), optionally mail it.",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        help="HTML file to write (CSV files go beside it; default %(default)s)",
    )
    parser.add_argument("--name", default=None, help="which `reports:` entry (default: the first)")
    parser.add_argument("--send", action="store_true", help="also mail it to the report's recipients")
    parser.add_argument("--force", action="store_true", help="with --send: send even if this period was sent")
    parser.add_argument("--no-history", action="store_true", help="do not read history from state_dir")
    parser.set_defaults(func=run)


def _choose(config: Config, name: str | None) -> ReportConfig | None:
    if name is None:
        if config.reports:
            return config.reports[0]
        return ReportConfig(name="adhoc", recipients=["capacity@localhost.localdomain"])
    return next((r for r in config.reports if r.name == name), None)


def run(args: argparse.Namespace) -> int:
    from collector.app.commands.progress import Progress
    from collector.app.daemon import collect_once, open_history
    from exporters.report.render import write_html
    from exporters.report.service import build_report, latest_period, send_report
    from exporters.report.store import SendStore, period_key

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"{error.path}: configuration is invalid:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    report = _choose(config, args.name)
    if report is None:
        names = ", ".join(r.name for r in config.reports) or "none configured"
        print(f"no report named {args.name!r} in {args.config} (reports: {names})", file=sys.stderr)
        return 1
    if args.send and (config.smtp is None or not config.reports):
        print(f"--send needs an smtp section and a reports entry in {args.config}", file=sys.stderr)
        return 1
    history = None if args.no_history or not config.state_dir.exists() else open_history(config)
    try:
        with Progress("capacityd report") as progress:
            progress.stage(f"polling {len(config.sources)} source(s), then headroom, forecasts and report figures")
            snapshot = collect_once(config, history=history)
            store = SendStore.open(config.state_dir) if args.send or config.state_dir.exists() else None
            period = latest_period(report, snapshot.taken_at) or snapshot.taken_at
            progress.stage("building the report")
            content, charts = build_report(report, snapshot, history, store=store, period=period)
            path = write_html(content, charts, args.out)
        counts = content.counts
        print(f"wrote {path} ({counts['red']} red, {counts['amber']} amber, {counts['green']} green pools)")
        if not args.send:
            return 0
        assert config.smtp is not None and store is not None
        outcome = send_report(report, config.smtp, snapshot, history, store, period, force=args.force)
        if outcome.status == "sent":
            print(
                f"sent report {report.name} for {period_key(period)} to {', '.join(report.recipients)} "
                f"({outcome.size_bytes:,} bytes)"
            )
            return 0
        if outcome.status == "skipped":
            print(f"not sent: {outcome.detail} (use --force to send it again)", file=sys.stderr)
            return 0
        print(f"sending failed: {outcome.detail}", file=sys.stderr)
        return 2
    finally:
        if history is not None:
            history.close()
