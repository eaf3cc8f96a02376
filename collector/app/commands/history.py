"""`capacityd history export`: backfill the embedded store's history into a remote-write TSDB.

    capacityd history export -c FILE --to URL [--start T] [--end T] [--max-samples N] [auth/TLS flags]

Per-host rows (`host_series`: raw polls within host_raw_retention, hourly means before that, as far
back as host_retention) become the same `capacity_resource_*` series the remote backend writes, sent in
time order: one request per time slice of at most `SLICE` (30 minutes) and `--max-samples` samples, so
Prometheus' head (which accepts samples down to ~1 h before its newest) takes a fresh backfill without
`out_of_order_time_window`. Known engine behaviours are handled (docs/scale-out.md, "Backfill"):

* Prometheus answers 400 for samples out of order or too old, and one bad sample fails the whole
  request: a 400 splits the request in halves (by series) down to single series, so every good series
  still lands; what is refused is counted and named. Set `out_of_order_time_window` to backfill below
  data the TSDB already holds.
* VictoriaMetrics accepts samples older than its retention with a 204 and drops them silently: its
  `-retentionPeriod` is read from `/flags` and such samples are skipped and counted instead.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from collector.contract.settings import ConfigError

SLICE = timedelta(minutes=30)
READ_CHUNK = timedelta(days=1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("history", help="history store tools (export to a remote TSDB)",
                                   description="Tools for the history store.")  # fmt: skip
    commands = parser.add_subparsers(dest="history_command", metavar="SUBCOMMAND", required=True)
    export = commands.add_parser(
        "export", help="backfill the embedded history into a Prometheus remote-write URL",
        description="Send the embedded store's per-host history, in time order, to a remote-write endpoint "
        "(VictoriaMetrics, Prometheus with --web.enable-remote-write-receiver, vmagent, Mimir, ...).",
    )  # fmt: skip
    export.add_argument("-c", "--config", type=Path, help="YAML config file (state_dir, history, history.remote auth)")
    export.add_argument("--state-dir", type=Path, help="state directory holding history.sqlite (overrides -c)")
    export.add_argument("--to", required=True, metavar="URL", help="remote-write URL, e.g. http://vm:8428/api/v1/write")
    export.add_argument("--start", type=_time, help="first time to export (ISO 8601, UTC if no zone; default: all)")
    export.add_argument("--end", type=_time, help="export before this time (default: now)")
    export.add_argument("--max-samples", type=int, default=50_000, help="samples per request (default %(default)s)")
    export.add_argument("--username", help="basic auth user (with --password-file)")
    export.add_argument("--password-file", type=Path, help="file holding the basic auth password")
    export.add_argument("--bearer-token-file", type=Path, help="file holding a bearer token")
    export.add_argument("--ca-file", type=Path, help="CA bundle to verify the TSDB's certificate")
    export.set_defaults(func=run_export)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class ExportResult:
    series: int = 0
    samples: int = 0
    requests: int = 0
    rejected: int = 0
    skipped_retention: int = 0
    failed: int = 0
    rejected_series: list[str] | None = None


def run_export(args: argparse.Namespace) -> int:
    from collector.store.history import History
    from collector.store.remote.client import RemoteError
    from collector.store.settings import HistoryConfig, RemoteHistoryConfig

    history_config, remote_base = HistoryConfig(), None
    state_dir = args.state_dir
    if args.config is not None:
        from collector.app.config import load_config

        try:
            config = load_config(args.config)
        except ConfigError as error:
            print(f"{error.path}: configuration is invalid:", file=sys.stderr)
            for line in error.errors:
                print(f"  {line}", file=sys.stderr)
            return 2
        history_config, remote_base = config.history, config.history.remote
        state_dir = state_dir or config.state_dir
    if state_dir is None:
        print("capacityd history export: give -c CONFIG or --state-dir", file=sys.stderr)
        return 2
    if not (Path(state_dir) / "history.sqlite").exists():
        print(f"capacityd history export: no history.sqlite in {state_dir}", file=sys.stderr)
        return 2
    settings: dict[str, Any] = remote_base.model_dump() if remote_base is not None else {}
    settings["write_url"] = args.to
    for flag in ("username", "password_file", "bearer_token_file", "ca_file"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    try:
        remote = RemoteHistoryConfig.model_validate(settings)
    except ValueError as error:
        print(f"capacityd history export: {error}", file=sys.stderr)
        return 2
    history = History.open(Path(state_dir), history_config.model_copy(update={"backend": "embedded"}))
    try:
        result = export(history, remote, start=args.start, end=args.end, max_samples=args.max_samples,
                        progress=sys.stderr.isatty())  # fmt: skip
    except RemoteError as error:
        print(f"capacityd history export: {error}", file=sys.stderr)
        return 1
    finally:
        history.close()
    print(f"exported {result.samples} samples of {result.series} series in {result.requests} requests to "
          f"{_origin(args.to)}")  # fmt: skip
    if result.skipped_retention:
        print(f"skipped {result.skipped_retention} samples older than the TSDB's retention "
              "(VictoriaMetrics would drop them silently)")  # fmt: skip
    if result.rejected:
        print(f"refused by the TSDB: {result.rejected} samples (out of order or too old: set "
              f"out_of_order_time_window in Prometheus to backfill below existing data), e.g. "
              f"{', '.join((result.rejected_series or [])[:3])}", file=sys.stderr)  # fmt: skip
    if result.failed:
        print(f"not delivered (TSDB unreachable or failing after retries): {result.failed} samples",
              file=sys.stderr)  # fmt: skip
    return 1 if result.rejected or result.failed else 0


def export(history: Any, remote: Any, *, start: datetime | None = None, end: datetime | None = None,
           max_samples: int = 50_000, progress: bool = False) -> ExportResult:  # fmt: skip
    """Send `history`'s per-host rows in [start, end) to `remote.write_url` in time order; see the module doc."""
    from collector.store.remote.client import RemoteWriter
    from collector.store.remote.samples import SeriesEncoder, history_series
    from collector.store.remote.wire import encode_sample

    writer = RemoteWriter(remote)
    encoder = SeriesEncoder()
    result = ExportResult(rejected_series=[])
    end = end or datetime.now(UTC)
    start = start or _first_time(history, end)
    horizon = _retention_floor(writer, remote.write_url)
    seen: set[tuple[str, ...]] = set()
    lo = start
    while lo < end:
        hi = min(end, lo + READ_CHUNK)
        rows = history.host_series(start=lo, end=hi)
        lo = hi
        if not len(rows):
            continue
        slices = ((pd.to_datetime(rows["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC"))
                  // pd.Timedelta(SLICE)).to_numpy()  # fmt: skip
        for _, part in rows.groupby(slices, sort=True):
            by_series: dict[tuple[str, ...], list[tuple[int, float]]] = {}
            for key, ts_ms, value in history_series(part):
                if horizon is not None and ts_ms < horizon:
                    result.skipped_retention += 1
                    continue
                by_series.setdefault(key, []).append((ts_ms, value))
            seen.update(by_series)
            batch: list[tuple[tuple[str, ...], bytes, int]] = []
            count = 0
            for key, points in by_series.items():
                points.sort()
                body = encoder.labels_of(key) + b"".join(encode_sample(ts, v) for ts, v in points)
                batch.append((key, body, len(points)))
                count += len(points)
                if count >= max_samples:
                    _send(writer, batch, result)
                    batch, count = [], 0
            if batch:
                _send(writer, batch, result)
        if progress:
            print(f"capacityd: exported up to {hi.isoformat()} ({result.samples} samples)", file=sys.stderr)
    result.series = len(seen)
    return result


def _send(writer: Any, batch: list[tuple[tuple[str, ...], bytes, int]], result: ExportResult) -> None:
    """One request; on a 4xx, halves by series down to single series so that good series still land."""
    from collector.store.remote.wire import _field

    samples = sum(n for _, _, n in batch)
    outcome = writer.send([_field(1, body) for _, body, _ in batch], samples)
    result.requests += 1
    if outcome == "ok":
        result.samples += samples
    elif outcome == "retry":
        result.failed += samples
    elif len(batch) > 1:
        middle = len(batch) // 2
        _send(writer, batch[:middle], result)
        _send(writer, batch[middle:], result)
    else:
        result.rejected += samples
        if result.rejected_series is not None and len(result.rejected_series) < 20:
            key = batch[0][0]
            result.rejected_series.append(f"{key[0]}{{source={key[1]!r},host={key[5]!r},resource={key[7]!r}}}: "
                                          f"{writer.last_rejection[:120]}")  # fmt: skip


def _first_time(history: Any, end: datetime) -> datetime:
    """Where per-host history can start: host_retention before `end` (older host rows are gone)."""
    retention: timedelta = history.config.host_retention
    return end - retention - timedelta(hours=1)


RETENTION_MARGIN = 3600.0
"""Seconds: samples within an hour of the retention edge are skipped too (the edge moves while exporting)."""
_RETENTION = re.compile(r'-retentionPeriod="?(\d+(?:\.\d+)?)([hdwy]?)"?')
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400, "": 31 * 86400}  # VictoriaMetrics: bare = months


def _retention_floor(writer: Any, write_url: str) -> int | None:
    """Epoch ms below which a VictoriaMetrics target drops samples silently (None: not VictoriaMetrics)."""
    parts = urllib.parse.urlsplit(write_url)
    try:
        status, body, _ = writer.http.request(f"{parts.scheme}://{parts.netloc}/flags")
    except OSError:
        return None
    match = _RETENTION.search(body.decode(errors="replace")) if status == 200 else None
    if match is None:
        return None
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    return int((time.time() - seconds + RETENTION_MARGIN) * 1000)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"
