"""Self-metrics of the report sender: when each report last went out, and how often sending failed.

The sender (exporters/report/service.py) updates a module-level registry; `/metrics` reads it
through a family builder. The last success is seeded from the send record at start, so a restart
does not make a healthy report look as if it had never been sent (and alert).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.estate import Snapshot
from exporters.prometheus.exposition import family_builder


@dataclass
class ReportState:
    last_success: float | None = None
    """Unix time of the last successful send."""
    failures: int = 0
    """Failed send attempts (each run that gave up after its retries) since the daemon started."""


_LOCK = threading.Lock()
_STATE: dict[str, ReportState] = {}


def _state(name: str) -> ReportState:
    return _STATE.setdefault(name, ReportState())


def record_success(name: str, when: datetime) -> None:
    with _LOCK:
        state = _state(name)
        state.last_success = max(state.last_success or 0.0, when.timestamp())


def record_failure(name: str) -> None:
    with _LOCK:
        _state(name).failures += 1


def seed(name: str, last_success: datetime | None) -> None:
    """Make a configured report known (so its series exist at 0 failures) with its stored last success."""
    with _LOCK:
        state = _state(name)
        if last_success is not None:
            state.last_success = max(state.last_success or 0.0, last_success.timestamp())


def forget_except(names: set[str]) -> None:
    """Drop reports no longer configured (after a reload) so their series disappear."""
    with _LOCK:
        for name in list(_STATE):
            if name not in names:
                del _STATE[name]


def states() -> dict[str, ReportState]:
    with _LOCK:
        return {name: ReportState(s.last_success, s.failures) for name, s in _STATE.items()}


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "capacityd_report_last_success_timestamp_seconds",
        "Unix time the report was last sent successfully (absent: never sent).",
        labels=["report"],
    )
    failures = CounterMetricFamily(
        "capacityd_report_failures",
        "Report sends that failed after their retries.",
        labels=["report"],
    )
    for name, state in sorted(states().items()):
        if state.last_success is not None:
            last.add_metric([name], state.last_success)
        failures.add_metric([name], float(state.failures))
    yield last
    yield failures
