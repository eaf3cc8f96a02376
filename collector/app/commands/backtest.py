"""`capacityd backtest`: the rolling-origin backtest of capacityd's forecasting on any series.

    capacityd backtest --csv FILE --time COLUMN --value COLUMN [--capacity NUMBER] [--horizon 7d]
                       [--origins 4] [--counter] [--format table|json]

For each origin it prints the forecast steps (p10, p50, p90) beside the actual values and the
least-squares trend (predict_linear), then the summary: MASE against the trend's, 80 % band
coverage, and with --capacity the exhaustion-date error. This is how an SRE decides whether to
trust the forecasts on their own data (docs/forecasting.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from collector.analyses.forecast.backtest import OriginResult, Summary, run_backtest, summarize
from collector.analyses.forecast.preprocess import long_to_matrix, undo_counter_resets
from collector.contract.settings import parse_duration


class InputError(ValueError):
    """The CSV cannot be backtested; the message says what is wrong and where."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="rolling-origin backtest of capacityd's forecasting on a series from a CSV file",
        description="Backtest capacityd's forecasts on your own series: for each origin the forecast "
        "(p10, p50, p90) next to the actual values and the least-squares trend, then MASE, interval "
        "coverage and (with --capacity) the exhaustion-date error.",
    )
    parser.add_argument("--csv", required=True, type=Path, metavar="FILE", help="CSV file with a header row")
    parser.add_argument(
        "--time", required=True, metavar="COLUMN", help="column with timestamps (Unix seconds or ISO 8601)"
    )
    parser.add_argument("--value", required=True, metavar="COLUMN", help="column with the values")
    parser.add_argument(
        "--capacity",
        type=float,
        default=None,
        metavar="NUMBER",
        help="the limit the series must stay under: adds the exhaustion-date error",
    )
    parser.add_argument(
        "--horizon", default="7d", metavar="DURATION", help="how far each origin forecasts (default %(default)s)"
    )
    parser.add_argument(
        "--origins", type=int, default=4, metavar="N", help="number of rolling origins (default %(default)s)"
    )
    parser.add_argument(
        "--counter", action="store_true", help="the value is a cumulative counter: undo its resets before forecasting"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


def load_series(path: Path, time_column: str, value_column: str, *, counter: bool = False) -> tuple[pd.Series, float]:
    """The CSV's series indexed by UTC time, and its step (median spacing, seconds)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV file ({error})") from None
    for column in (time_column, value_column):
        if column not in frame.columns:
            raise InputError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    raw_time = frame[time_column]
    numeric_time = pd.to_numeric(raw_time, errors="coerce")
    if numeric_time.notna().all():
        stamps = pd.to_datetime(numeric_time.astype(float), unit="s", utc=True)
    else:
        stamps = pd.to_datetime(raw_time.astype(str), utc=True, errors="coerce", format="ISO8601")
        bad = stamps.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path}: row {row + 2}: {time_column}={raw_time.iloc[row]!r} is neither Unix "
                "seconds nor an ISO 8601 time"
            )
    raw_value = frame[value_column]
    values = pd.to_numeric(raw_value, errors="coerce")
    bad = values.isna() & raw_value.notna() & (raw_value.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: row {row + 2}: {value_column}={raw_value.iloc[row]!r} is not a number")
    if np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any():
        row = int(np.flatnonzero(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)))[0])
        raise InputError(f"{path}: row {row + 2}: {value_column} is infinite")
    series = pd.Series(values.to_numpy(dtype=float), index=pd.DatetimeIndex(stamps)).sort_index()
    series = series[series.notna()]
    series = series.groupby(level=0).mean()
    if len(series) < 3:
        raise InputError(f"{path}: {len(series)} usable value(s); a backtest needs a series")
    if counter:
        series = pd.Series(undo_counter_resets(series.to_numpy()), index=series.index)
    spacing = np.diff(series.index.as_unit("ns").asi8) / 1e9
    step = float(np.median(spacing))
    if step <= 0:
        raise InputError(f"{path}: timestamps do not advance")
    return series, max(1.0, round(step))


def run(args: argparse.Namespace) -> int:
    try:
        horizon = parse_duration(args.horizon)
    except ValueError as error:
        print(f"--horizon: {error}", file=sys.stderr)
        return 2
    if args.origins < 1:
        print("--origins: must be at least 1", file=sys.stderr)
        return 2
    if args.capacity is not None and not math.isfinite(args.capacity):
        print("--capacity: must be a finite number", file=sys.stderr)
        return 2
    try:
        series, step = load_series(args.csv, args.time, args.value, counter=args.counter)
        frame = pd.DataFrame({"key": "series", "timestamp": series.index, "value": series.to_numpy()})
        _, matrix, grid = long_to_matrix(frame, ["key"], step=step)
        steps = round(horizon.total_seconds() / grid.step)
        if steps < 1:
            raise InputError(f"--horizon {args.horizon} is shorter than the series' step ({grid.step:g} s)")
        results = run_backtest(matrix, grid, horizon=steps, origins=args.origins, capacity=args.capacity)[0]
    except (InputError, ValueError) as error:
        print(f"backtest: {error}", file=sys.stderr)
        return 2
    summary = summarize(results, horizon_hours=horizon.total_seconds() / 3600)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(_document(args, grid.step, results, summary)) + b"\n")
    else:
        sys.stdout.write(_table(args, grid.step, results, summary))
    return 0


def _iso(stamp: pd.Timestamp) -> str:
    iso: str = stamp.isoformat()
    return iso.replace("+00:00", "Z")


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _summary_dict(summary: Summary) -> dict[str, Any]:
    document: dict[str, Any] = {
        "origins": summary.origins,
        "mase": _number(summary.mase),
        "trend_mase": _number(summary.trend_mase),
        "mase_ratio_vs_trend": _number(summary.ratio),
        "coverage_80": _number(summary.coverage),
        "models": summary.models,
    }
    if summary.exhaustion_error_hours is not None or summary.exhaustion_missed or summary.exhaustion_in_interval:
        document["exhaustion"] = {
            "error_hours": summary.exhaustion_error_hours,
            "trend_error_hours": summary.trend_exhaustion_error_hours,
            "actual_within_p10_p90": summary.exhaustion_in_interval,
            "missed": summary.exhaustion_missed,
            "false_alarms": summary.exhaustion_false_alarms,
            "trend_missed": summary.trend_exhaustion_missed,
        }
    return document


def _document(args: argparse.Namespace, step: float, results: list[OriginResult], summary: Summary) -> dict[str, Any]:
    origins = []
    for result in results:
        steps = [
            {
                "timestamp": _iso(t),
                "actual": _number(a),
                "p10": _number(lo),
                "p50": _number(mid),
                "p90": _number(hi),
                "trend": _number(tr),
            }
            for t, a, lo, mid, hi, tr in zip(
                result.times, result.actual, result.p10, result.p50, result.p90, result.trend, strict=True
            )
        ]
        origins.append(
            {
                "origin": _iso(result.origin),
                "model": result.model,
                "mase": _number(result.mase),
                "trend_mase": _number(result.trend_mase),
                "coverage_80": _number(result.coverage),
                "exhaustion_hours": result.exhaustion or None,
                "steps": steps,
            }
        )
    return {
        "csv": str(args.csv),
        "value": args.value,
        "step_seconds": step,
        "horizon": args.horizon,
        "capacity": args.capacity,
        "origins": origins,
        "summary": _summary_dict(summary),
    }


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _hours(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} h"


def _table(args: argparse.Namespace, step: float, results: list[OriginResult], summary: Summary) -> str:
    lines = [
        f"backtest of {args.value} from {args.csv}: step {step:g} s, horizon {args.horizon}, "
        f"{summary.origins} origin(s)"
    ]
    for result in results:
        lines.append("")
        lines.append(
            f"== origin {_iso(result.origin)}  model {result.model}  MASE {result.mase:.3f} "
            f"(trend {result.trend_mase:.3f})  80% coverage {result.coverage:.0%}"
        )
        if result.exhaustion:
            e = result.exhaustion
            lines.append(
                f"   exhaustion after origin: actual {_hours(e.get('actual'))}, forecast p10 "
                f"{_hours(e.get('p10'))} / p50 {_hours(e.get('p50'))} / p90 {_hours(e.get('p90'))}, "
                f"trend {_hours(e.get('trend'))}"
            )
        lines.append(f"   {'time':<21} {'actual':>12} {'p10':>12} {'p50':>12} {'p90':>12} {'trend':>12}")
        for t, a, lo, mid, hi, tr in zip(
            result.times, result.actual, result.p10, result.p50, result.p90, result.trend, strict=True
        ):
            lines.append(f"   {_iso(t):<21} {_fmt(a):>12} {_fmt(lo):>12} {_fmt(mid):>12} {_fmt(hi):>12} {_fmt(tr):>12}")
    lines.append("")
    lines.append("== summary")
    lines.append(
        f"   MASE {summary.mase:.3f} vs least-squares trend {summary.trend_mase:.3f} "
        f"(ratio {summary.ratio:.2f}; below 1 is better than the trend)"
    )
    lines.append(f"   80% interval coverage {summary.coverage:.1%} (well calibrated: 75-85%)")
    lines.append("   models chosen: " + ", ".join(f"{name} x{count}" for name, count in summary.models.items()))
    if args.capacity is not None:
        lines.append(
            f"   exhaustion-date error (p50): {_hours(summary.exhaustion_error_hours)}; trend: "
            f"{_hours(summary.trend_exhaustion_error_hours)}; actual date within p10-p90: "
            f"{'-' if summary.exhaustion_in_interval is None else f'{summary.exhaustion_in_interval:.0%}'}"
            f"; missed {summary.exhaustion_missed} (trend {summary.trend_exhaustion_missed}), "
            f"false alarms {summary.exhaustion_false_alarms}"
        )
    return "\n".join(lines) + "\n"
