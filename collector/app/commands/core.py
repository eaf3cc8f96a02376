"""Core commands: `run`, `once`, `check-config` (docs/cli.md)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import orjson
import pandas as pd

from collector.app.cluster import cli as cluster_cli  # cluster: roles and sharding (issue 13)
from collector.app.config import Config, load_config
from collector.contract.settings import ConfigError

log = logging.getLogger(__name__)

# Frames `once --format table` summarizes, in this order (others are listed with their row count).
TABLE_FRAMES = ("sources", "capacity", "headroom", "forecast", "reclaimable")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run the daemon (poll on schedule, serve /metrics)")
    run.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    cluster_cli.add_arguments(run)  # cluster: --role/--shard/--total-shards (issue 13)
    run.set_defaults(func=cmd_run)

    once = subparsers.add_parser("once", help="poll every source once and print the frames")
    once.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    once.add_argument("--format", choices=("table", "json"), default="table")
    once.add_argument("--no-history", action="store_true", help="do not read history from state_dir")
    once.add_argument("--source", help="poll only this source (no analyses): troubleshooting")  # issue 16
    once.add_argument("--target", help="with --source: poll only this discovered target")  # issue 16
    once.set_defaults(func=cmd_once)

    check = subparsers.add_parser("check-config", help="validate a config file; print every error")
    check.add_argument("file", type=Path)
    check.add_argument("--show-targets", action="store_true", help="run discovery and list what would be polled")
    check.set_defaults(func=cmd_check_config)


def _load(path: Path) -> Config | None:
    """Load the config and the web config it names; print every error (never a value) and return None."""
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"{error.path}: configuration is invalid:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return None
    if config.web_config_file is not None:
        from exporters.prometheus.webconfig import WebConfigError, load_web_config

        try:
            load_web_config(config.web_config_file)
        except WebConfigError as error:
            print(f"{error.path}: web config is invalid:", file=sys.stderr)
            for line in error.errors:
                print(f"  {line}", file=sys.stderr)
            return None
    return config


class _SourceSummary(Protocol):
    name: str
    kind: str


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 1
    # Config.sources is a union built at runtime from the source plugins, so mypy cannot see its members.
    sources = cast(list[_SourceSummary], config.sources)
    kinds = ", ".join(f"{s.name} ({s.kind})" for s in sources) or "none"
    print(f"{args.file}: OK — sources: {kinds}")
    if getattr(args, "show_targets", False):  # issue 16
        from collector.app.targets import format_targets, target_rows

        rows = target_rows(config)
        print(format_targets(rows))
        return 1 if any(r["state"].startswith("ERROR") for r in rows) else 0
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from collector.app.daemon import Daemon

    config = _load(args.config)
    if config is None:
        return 1
    try:  # cluster: command-line role/shard override the config keys (issue 13)
        config = cluster_cli.apply_arguments(config, args)
    except ConfigError as error:
        print(f"{error.path}: {'; '.join(error.errors)}", file=sys.stderr)
        return 1
    logging.getLogger().setLevel(config.log_level.upper())
    return Daemon(config, config_path=args.config).run_forever()


def cmd_once(args: argparse.Namespace) -> int:
    from collector.app.daemon import collect_once, open_history

    config = _load(args.config)
    if config is None:
        return 1
    from collector.app.commands.progress import Progress

    if getattr(args, "source", None) or getattr(args, "target", None):  # issue 16: one source / one target
        return _once_one(args, config)
    history = None if args.no_history or not config.state_dir.exists() else open_history(config)
    with Progress("capacityd once") as progress:
        progress.stage(f"polling {len(config.sources)} source(s), then headroom and forecasts")
        snapshot = collect_once(config, history=history)
    if args.format == "json":
        sys.stdout.buffer.write(frames_to_json(snapshot.frames) + b"\n")
    else:
        print(frames_to_table(snapshot.frames))
    failed = [s.name for s in snapshot.statuses if not s.up]
    return 2 if failed and len(failed) == len(snapshot.statuses) else 0


def _once_one(args: argparse.Namespace, config: Config) -> int:
    from collector.app.targets import poll_one

    if not args.source:
        print("capacityd once: --target needs --source", file=sys.stderr)
        return 1
    estate, error = poll_one(config, args.source, args.target)
    if error is not None:
        print(f"capacityd once: {error}", file=sys.stderr)
        return 2
    frames = {name: frame for name, frame in estate.snapshot().frames.items() if len(frame)}
    if args.format == "json":
        sys.stdout.buffer.write(frames_to_json(frames) + b"\n")
    else:
        print(frames_to_table(frames))
    return 0


def _jsonable_column(series: pd.Series) -> list[Any]:
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
        return [None if pd.isna(v) else v.isoformat().replace("+00:00", "Z") for v in series]
    if pd.api.types.is_float_dtype(series):
        return [None if (math.isnan(v) or math.isinf(v)) else v for v in series.to_numpy(dtype=float).tolist()]
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        values: list[Any] = series.tolist()
        return values
    return [_plain(v) for v in series.tolist()]


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.ndarray | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def frames_to_json(frames: dict[str, pd.DataFrame]) -> bytes:
    """One object whose keys are frame names, each a list of records (NaN/inf as null, times ISO 8601)."""
    document: dict[str, list[dict[str, Any]]] = {}
    for name, frame in frames.items():
        columns = {column: _jsonable_column(frame[column]) for column in frame.columns}
        document[name] = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def frames_to_table(frames: dict[str, pd.DataFrame]) -> str:
    """A readable summary for people: source health, capacity per pool, and the derived frames."""
    parts = []
    sources = frames.get("sources")
    if sources is not None and len(sources):
        view = sources[["source", "kind", "up", "stale", "poll_duration_seconds", "last_error"]].copy()
        view["poll_duration_seconds"] = view["poll_duration_seconds"].round(3)
        parts.append("== sources ==\n" + view.fillna("").to_string(index=False))
    capacity = frames.get("capacity")
    if capacity is not None and len(capacity):
        pools = (
            capacity.groupby(["layer", "cloud", "pool", "resource"], observed=True)[
                ["capacity", "allocatable", "allocated", "used"]
            ]
            .sum(min_count=1)
            .reset_index()
        )
        parts.append("== capacity per pool (cores, bytes, counts) ==\n" + _human(pools).to_string(index=False))
    for name in TABLE_FRAMES[2:]:
        frame = frames.get(name)
        if frame is not None and len(frame):
            view = frame.drop(columns=[c for c in ("timestamp",) if c in frame.columns])
            parts.append(f"== {name} ==\n" + view.head(60).to_string(index=False))
    others = [f"{n}: {len(f)} rows" for n, f in frames.items() if n not in TABLE_FRAMES]
    parts.append("== other frames (see --format json) ==\n" + "\n".join(others))
    return "\n\n".join(parts)


def _human(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    is_bytes = out["resource"].isin(["memory", "disk", "ephemeral_storage"])
    for column in ("capacity", "allocatable", "allocated", "used"):
        values = out[column].astype(float)
        out[column] = [
            "" if math.isnan(v) else (f"{v / 2**30:,.1f} GiB" if b else f"{v:,.1f}")
            for v, b in zip(values, is_bytes, strict=True)
        ]
    return out
