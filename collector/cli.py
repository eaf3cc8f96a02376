"""The `capacityd` command line (docs/cli.md).

Core commands live here: `run`, `once`, `check-config`, `demo`. Other commands (`forecast`,
`backtest`, `report`) are modules in collector/commands/ listed in COMMAND_MODULES, each with a
`register(subparsers)` that adds its parser and sets `func` (a callable taking the parsed args and
returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from collector import __version__

COMMAND_MODULES = [
    "collector.commands.core",
    "collector.commands.forecast",
    "collector.commands.backtest",
    "collector.commands.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capacityd",
        description="Capacity monitoring and planning for OpenStack/KVM and Kubernetes estates.",
    )
    parser.add_argument("--version", action="version", version=f"capacityd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:  # a command not built yet
            if error.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every job run at INFO; capacityd logs what matters about each poll itself.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
