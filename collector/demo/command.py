"""`capacityd demo`: the daemon on the embedded demo estate (docs/cli.md).

Registered through the `capacityd.commands` entry point, so the app never imports the demo: the demo
sits above the app in the import layers and drives it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="run the daemon on the embedded demo estate")
    demo.add_argument("--listen", default="127.0.0.1:9847", help="HOST:PORT for /metrics (default %(default)s)")
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep the demo's state here (default: a temporary folder, removed on exit)",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run until interrupted)"
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo.run import run_demo

    return run_demo(listen=args.listen, state_dir=args.state_dir, duration=args.duration)
