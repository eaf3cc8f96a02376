"""Per-target self-metrics of discovered sources (docs/metrics.md, "Discovered targets").

Built from the `targets` frame (collector/contract/targets.py) that a discovered source publishes;
sources without `discover:` have no rows there, so their families are unchanged. Cardinality: one
series per target and family (about 6 per hypervisor), plus `capacityd_discovered_targets` per state.
A target that left the inventory keeps only `capacityd_target_state{state="gone"}` for
`discover.gone_retention`; its `capacityd_target_up` and data series end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.contract.targets import TARGETS
from collector.estate import Snapshot
from exporters.prometheus.exposition import family_builder

STATES = ("active", "disabled", "gone")


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    frame = snapshot.frames.get(TARGETS.name)
    if frame is None or frame.empty:
        return
    labels = ["source", "target"]
    up = GaugeMetricFamily(
        "capacityd_target_up",
        "1 if the last poll of the discovered target succeeded (gone targets: absent).",
        labels=[*labels, "pool", "disabled"],
    )
    state = GaugeMetricFamily(
        "capacityd_target_state",
        "1 for the target's lifecycle state (active, disabled, gone).",
        labels=[*labels, "state"],
    )
    duration = GaugeMetricFamily(
        "capacityd_target_poll_duration_seconds", "Duration of the last poll of the target.", labels=labels
    )
    last_success = GaugeMetricFamily(
        "capacityd_target_last_success_timestamp_seconds",
        "Unix time of the target's last successful poll.",
        labels=labels,
    )
    polls = CounterMetricFamily("capacityd_target_polls", "Polls of the target since it was discovered.", labels=labels)
    errors = CounterMetricFamily(
        "capacityd_target_errors", "Failed polls of the target since it was discovered.", labels=labels
    )
    counts = GaugeMetricFamily(
        "capacityd_discovered_targets", "Discovered targets by lifecycle state.", labels=["source", "state"]
    )
    per_state: dict[tuple[str, str], int] = {}
    for row in frame.itertuples(index=False):
        key = [str(row.source), str(row.target)]
        per_state[(key[0], str(row.state))] = per_state.get((key[0], str(row.state)), 0) + 1
        state.add_metric([*key, str(row.state)], 1.0)
        if row.state == "gone":
            continue
        up.add_metric([*key, str(row.pool), "true" if row.state == "disabled" else "false"], 1.0 if row.up else 0.0)
        polls.add_metric(key, float(row.polls_total))
        errors.add_metric(key, float(row.errors_total))
        if not pd.isna(row.poll_duration_seconds):
            duration.add_metric(key, float(row.poll_duration_seconds))
        if not pd.isna(row.last_success):
            last_success.add_metric(key, pd.Timestamp(row.last_success).timestamp())
    for source in sorted({s for s, _ in per_state}):
        for name in STATES:
            counts.add_metric([source, name], float(per_state.get((source, name), 0)))
    yield from (up, state, duration, last_success, polls, errors, counts)
