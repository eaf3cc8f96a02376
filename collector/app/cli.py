"""The `capacityd` command line (docs/cli.md).

Every sub-command is a module with a `register(subparsers)` that adds its parser and sets `func` (a
callable taking the parsed args and returning the exit code). Modules are found through the
`capacityd.commands` entry points (pyproject.toml), so the demo (`collector.demo.command`) and a
third party's package add commands without the app importing them. A command module that fails to
import stops the CLI with its entry point's name: a broken plugin is never silently missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from collector import __version__
from collector.app.logs import LOG_FORMAT
from collector.contract.plugins import PluginError, load_plugins

DAEMON_COMMANDS = frozenset({"run", "demo"})
"""Long-running commands keep INFO logs of sources and analyses; the one-off ones log them at -v only."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capacityd",
        description="Capacity monitoring and planning for OpenStack/KVM and Kubernetes estates.",
    )
    parser.add_argument("--version", action="version", version=f"capacityd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = load_plugins("capacityd.commands")
    for name in sorted(commands, key=lambda name: (name != "core", name)):  # run, once, check-config first
        module = commands[name]
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except PluginError as error:  # a broken plugin stops the CLI with its name, not a traceback
        print(f"capacityd: {error}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    # APScheduler logs every job run at INFO; capacityd logs what matters about each poll itself.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command in DAEMON_COMMANDS and argv is None:  # the process's entry point: it may re-exec itself
        from collector.app import memory

        memory.reexec_with_allocator_settings()  # flat RSS over weeks (collector/app/memory.py)
    if args.command not in DAEMON_COMMANDS and not args.verbose:
        # A one-off command prints its answer; the sources' connection chatter (libvirt's "connected to",
        # "closing connection", one pair per host) stays at debug level, shown with -v. Warnings still show.
        logging.getLogger("collector.sources").setLevel(logging.WARNING)
        logging.getLogger("collector.analyses").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
