"""`capacityd demo`: the real daemon on the embedded demo estate.

Starts each demo part (libvirt test-driver hosts, the OpenStack and Kubernetes API stand-ins),
writes the config they describe, backfills eight weeks of history from the estate model, then runs
the same `Daemon` as `capacityd run`. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from collector.app.config import parse_config
from collector.demo import DEMO_PARTS, DemoPart
from collector.demo.model import build_estate

log = logging.getLogger(__name__)


def _say(message: str) -> None:
    print(f"capacityd demo: {message}", file=sys.stderr, flush=True)


def start_parts(workdir: Path) -> tuple[list[DemoPart], dict[str, Any]]:
    """Start every available demo part; returns the parts and the merged config dict."""
    context: dict[str, Any] = {"estate": build_estate()}
    parts: list[DemoPart] = []
    config: dict[str, Any] = {"sources": []}
    for name in DEMO_PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        started = time.monotonic()
        part = module.start(workdir, context)
        parts.append(part)
        config["sources"].extend(part.sources)
        config.update(part.extra_config)
        _say(
            f"started {name.rsplit('.', 1)[-1]}: {part.description or len(part.sources)} "
            f"({time.monotonic() - started:.1f}s)"
        )
    return parts, config


def backfill_history(history: Any, estate: Any, config: Any) -> None:
    """Give the demo its past, once (a kept --state-dir is not backfilled twice): eight weeks of pool
    totals, and a few days of per-VM and per-pod usage (covering the demo's usage windows) written through
    `History.append` as past polls of the consumers the sources report right now."""
    import pandas as pd

    from collector.app.daemon import collect_once
    from collector.demo.backfill import backfill_rows, cluster_rows, usage_polls

    if history is None or history.last_timestamp("demo-cloud") is not None:
        return
    started = time.monotonic()
    _say("backfilling the demo's history (eight weeks of pools, a few days of per-VM and per-pod usage)...")
    now_frames = collect_once(config, analyses=False).frames
    history.backfill(
        pd.concat(
            [backfill_rows(estate), cluster_rows(now_frames["capacity"], pd.Timestamp(estate.now))], ignore_index=True
        )
    )
    consumers = now_frames["consumers"]
    polls = 0
    for source, when, frame in usage_polls(consumers, pd.Timestamp(estate.now), {"hypervisor": 3, "kubernetes": 4}):
        history.append(source, {"consumers": frame}, when)
        polls += 1
    history.flush()
    _say(f"backfilled 8 weeks of pool history and {polls} past usage polls ({time.monotonic() - started:.1f}s)")


def forecast_command(config_path: Path) -> str:
    """The exact `capacityd forecast` command to try against the running demo (its config names its state dir)."""
    import shlex

    return f"capacityd forecast -c {shlex.quote(str(config_path))} --what-if {shlex.quote('+200 m1.large')}"


def run_demo(listen: str, state_dir: Path | None, duration: float | None) -> int:
    from collector.app.daemon import Daemon

    temporary = state_dir is None
    workdir = Path(tempfile.mkdtemp(prefix="capacityd-demo-")) if state_dir is None else state_dir
    workdir.mkdir(parents=True, exist_ok=True)
    parts: list[DemoPart] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        parts, config_dict = start_parts(workdir)
        config_dict.update({"listen": listen, "state_dir": str(workdir / "state")})
        # Short usage windows keep the demo's usage backfill (and so its start) quick; the defaults are 7d/14d.
        config_dict.setdefault("headroom", {}).update({"idle_window": "2d", "reclaim_window": "3d"})
        (workdir / "capacityd.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))
        config = parse_config(config_dict, str(workdir / "capacityd.yaml"))
        daemon = Daemon(config, config_path=workdir / "capacityd.yaml")
        backfill_history(daemon.history, build_estate(), config)
        daemon.start()
        host, _ = config.listen_host_port
        _say(f"serving http://{host}:{daemon.server.port}/metrics  (config: {workdir / 'capacityd.yaml'})")
        _say(f"try, in another terminal: {forecast_command(workdir / 'capacityd.yaml')}")
        threading.Thread(target=_write_report_when_ready, args=(daemon, workdir), daemon=True).start()
        deadline = time.monotonic() + duration if duration else None
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.5)
        daemon.stop()
        return 0
    finally:
        for part in reversed(parts):
            try:
                part.stop()
            except Exception:
                log.exception("demo part failed to stop")
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


def _write_report_when_ready(daemon: Any, workdir: Path) -> None:
    """Once the first forecasts are in, write the demo's weekly report and mail this period's issue."""
    from exporters.report import write_report
    from exporters.report.service import latest_period, send_report
    from exporters.report.store import SendStore

    if not daemon.first_forecast_done.wait(timeout=600):
        return
    snapshot = daemon.pipeline.snapshot
    try:
        path = write_report(snapshot, daemon.history, workdir / "report")
        _say(f"wrote the weekly report of the demo estate: {path}")
        config = daemon.config
        if config.smtp is not None and config.reports:
            report = config.reports[0]
            period = latest_period(report, datetime.now(UTC))
            if period is not None:
                outcome = send_report(
                    report, config.smtp, snapshot, daemon.history, SendStore.open(config.state_dir), period
                )
                _say(f"mailed report {report.name} for {period:%Y-%m-%d}: {outcome.status} ({outcome.detail})")
    except Exception:
        log.exception("demo report failed; the demo keeps serving /metrics")
