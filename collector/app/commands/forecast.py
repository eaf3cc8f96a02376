"""`capacityd forecast`: headroom and exhaustion dates now, and under what-if scenarios.

    capacityd forecast -c FILE [--what-if SCENARIO]... [--format table|json] [--horizon 180d]

Polls every configured source once (nothing is written to history), reads the pool history in
`state_dir` for the exhaustion dates, applies the scenarios in order (collector/analyses/headroom/whatif.py)
and prints each pool's slots and exhaustion dates before and after. Exit 1 on a bad config or
scenario, 2 when every source failed.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from collector.contract.settings import parse_duration

HEADROOM_KEY = ["layer", "cloud", "pool_kind", "pool", "shape_kind", "shape", "tenant"]
SERIES_KEY = ["layer", "cloud", "pool", "resource", "basis"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="headroom and exhaustion dates, optionally under what-if scenarios",
        description="Poll once, then print slots per pool and shape and when each pool runs out, before and "
        "after the --what-if scenarios (docs/headroom.md).",
        epilog="Where the state comes from: the sources of the config given with -c are polled afresh (nothing "
        "is written); the history that exhaustion dates are forecast from is read from --state-dir if "
        "given, else from the config's `state_dir` — point -c at the running daemon's config (or pass "
        "its state dir with --state-dir) to read its history while it runs. `capacityd demo` prints "
        "the exact command for its estate. Without history (--no-history, or no such directory yet) "
        "only headroom is shown.",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    parser.add_argument(
        "--what-if",
        dest="what_if",
        action="append",
        default=[],
        metavar="SCENARIO",
        help='e.g. "add 10 hosts like compute-01", "+200 m1.large", "remove 2 hosts like '
        'compute-03", "+20%% demand" (repeatable, applied in order)',
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--horizon",
        type=parse_duration,
        default=timedelta(days=180),
        help="how far ahead to look for exhaustion (default 180d)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="read history from this state directory (a running daemon's) instead of the config's state_dir",
    )
    parser.add_argument("--no-history", action="store_true", help="headroom only: do not read history")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from collector.analyses.headroom.whatif import ScenarioError, parse_scenario, run_whatif
    from collector.app.commands.core import _load
    from collector.app.commands.progress import Progress
    from collector.app.daemon import collect_once, open_history

    try:
        scenarios = [parse_scenario(text) for text in args.what_if]
    except ScenarioError as error:
        print(f"capacityd forecast: {error}", file=sys.stderr)
        return 1
    config = _load(args.config)
    if config is None:
        return 1
    if args.state_dir is not None:
        if not args.state_dir.is_dir():
            print(f"capacityd forecast: --state-dir {args.state_dir}: no such directory", file=sys.stderr)
            return 1
        config = config.model_copy(update={"state_dir": args.state_dir})
    history = None if args.no_history or not config.state_dir.exists() else open_history(config)
    try:
        with Progress("capacityd forecast") as progress:  # the line is erased before anything is printed
            progress.stage(f"polling {len(config.sources)} source(s)")
            snapshot = collect_once(config, history=None, analyses=False)
            now = datetime.now(UTC)
            progress.stage(
                "headroom and forecasts" + (f" under {len(scenarios)} what-if scenario(s)" if scenarios else "")
            )
            failed = [s.name for s in snapshot.statuses if not s.up]
            everything_failed = bool(snapshot.statuses) and len(failed) == len(snapshot.statuses)
            scenario_error: ScenarioError | None = None
            try:
                result = (
                    None
                    if everything_failed
                    else run_whatif(snapshot.frames, scenarios, config, now, history=history, horizon=args.horizon)
                )
            except ScenarioError as error:
                result, scenario_error = None, error
    finally:
        if history is not None:
            history.close()
    if everything_failed:
        print(f"capacityd forecast: every source failed ({', '.join(failed)})", file=sys.stderr)
        return 2
    if scenario_error is not None or result is None:
        print(f"capacityd forecast: {scenario_error}", file=sys.stderr)
        return 1
    document = build_document(result, scenarios_given=bool(scenarios))
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    else:
        print(render_table(document))
    return 0


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    value = float(value)
    return None if math.isinf(value) else value


def _time(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    iso: str = pd.Timestamp(value).isoformat()
    return iso.replace("+00:00", "Z")


def build_document(result: Any, *, scenarios_given: bool) -> dict[str, Any]:
    """Before/after headroom and exhaustion as plain data (the JSON output; the table renders it)."""
    before = result.before.headroom.fillna({"tenant": ""}).set_index(HEADROOM_KEY)  # "": a public row
    after = result.after.headroom.fillna({"tenant": ""}).set_index(HEADROOM_KEY)
    headroom = []
    for key in before.index.union(after.index):
        b = before.loc[key] if key in before.index else None
        a = after.loc[key] if key in after.index else None
        entry = dict(zip(HEADROOM_KEY, key, strict=True))
        for name, row in (("before", b), ("after", a)):
            entry[name] = (
                None
                if row is None
                else {
                    "slots": _num(row["slots"]),
                    "slots_after_failure": _num(row["slots_after_failure"]),
                    "failure_domain": None if pd.isna(row["failure_domain"]) else str(row["failure_domain"]),
                    "shortfall": _num(row["shortfall"]),
                    "limiting_resource": None if pd.isna(row["limiting_resource"]) else str(row["limiting_resource"]),
                }
            )
        headroom.append(entry)
    exhaustion = []
    if result.forecast_before is not None and result.forecast_after is not None:
        fb = result.forecast_before.set_index(SERIES_KEY)
        fa = result.forecast_after.set_index(SERIES_KEY)
        for key in fb.index.union(fa.index):
            entry = dict(zip(SERIES_KEY, key, strict=True))
            for name, frame in (("before", fb), ("after", fa)):
                row = frame.loc[key] if key in frame.index else None
                entry[name] = (
                    None
                    if row is None
                    else {
                        "current": _num(row["current"]),
                        "limit": _num(row["limit"]),
                        "p10": _time(row["exhaustion_p10"]),
                        "p50": _time(row["exhaustion_p50"]),
                        "p90": _time(row["exhaustion_p90"]),
                        "model": str(row["model"]),
                    }
                )
            exhaustion.append(entry)
    return {
        "scenarios": [{"scenario": e.scenario, "unplaced": e.unplaced, "notes": e.notes} for e in result.effects],
        "headroom": headroom,
        "exhaustion": exhaustion,
        "forecast_note": result.forecast_error,
        "what_if": scenarios_given,
    }


def _slots(side: dict[str, Any] | None) -> str:
    if side is None:
        return "-"
    text = f"{side['slots']:g}" if side["slots"] is not None else "?"
    if side["slots_after_failure"] is not None:
        text += f" (N+1 {side['slots_after_failure']:g}"
        if side["shortfall"]:
            text += f", {side['shortfall']:g} homeless"
        text += ")"
    return text


def _date(side: dict[str, Any] | None) -> str:
    if side is None:
        return "-"
    if side["p50"] is None and side["p10"] is None:
        return "not within horizon"
    p50 = side["p50"][:10] if side["p50"] else "beyond"
    p10 = side["p10"][:10] if side["p10"] else "?"
    p90 = side["p90"][:10] if side["p90"] else "beyond"
    return f"{p50} [{p10} .. {p90}]"


def render_table(document: dict[str, Any]) -> str:
    parts = []
    if document["scenarios"]:
        lines = []
        for i, s in enumerate(document["scenarios"], 1):
            lines.append(f"{i}. {s['scenario']}" + (f" — {'; '.join(s['notes'])}" if s["notes"] else ""))
        parts.append("== what-if ==\n" + "\n".join(lines))
    rows = []
    for entry in document["headroom"]:
        row = {k: entry.get(k) or "" for k in ("layer", "cloud", "pool_kind", "pool", "tenant", "shape")}
        row["now"] = _slots(entry["before"])
        if document["what_if"]:
            row["what-if"] = _slots(entry["after"])
        side = entry["after"] or entry["before"] or {}
        row["limit"] = side.get("limiting_resource") or ""
        # Name the failure N+1 is judged against now and, when a what-if moves it, after the scenario too.
        before = (entry["before"] or {}).get("failure_domain") or ""
        after = (entry["after"] or {}).get("failure_domain") or ""
        row["worst failure"] = (
            f"{before or '-'} -> {after or '-'}" if document["what_if"] and before != after else (after or before)
        )
        rows.append(row)
    table = pd.DataFrame(rows).to_string(index=False) if rows else "(no hosts or shapes found)"
    parts.append("== headroom: slots (after the worst failure) ==\n" + table)
    if document["exhaustion"]:
        rows = []
        for entry in document["exhaustion"]:
            row = {k: entry[k] for k in SERIES_KEY}
            row["runs out (p50 [p10 .. p90])"] = _date(entry["before"])
            if document["what_if"]:
                row["with the what-if"] = _date(entry["after"])
            rows.append(row)
        parts.append("== exhaustion ==\n" + pd.DataFrame(rows).to_string(index=False))
    elif document["forecast_note"]:
        parts.append(f"== exhaustion ==\n({document['forecast_note']})")
    else:
        parts.append("== exhaustion ==\n(no history in state_dir: run the daemon for a while, or drop --no-history)")
    return "\n\n".join(parts)
