"""/metrics: the estate rendered as Prometheus exposition, once per collection, served from memory.

`prometheus_client`'s custom-collector pattern builds the families from a `Snapshot`; the text is
rendered when the snapshot changes (after a poll) and every scrape gets the cached bytes (and a
pre-compressed gzip copy). A scrape therefore never polls anything and costs microseconds, however
large the estate.

Core families are built here; other modules add families with `@family_builder` (headroom,
forecasts, reports). Names follow Prometheus conventions and are a contract: docs/metrics.md.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE  # noqa: F401
from prometheus_client.registry import Collector

from collector import __version__
from collector.estate import Snapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FamilyBuilder = Callable[[Snapshot], Iterable[Metric]]
FAMILY_BUILDERS: list[FamilyBuilder] = []

RESOURCE_LABELS = ["layer", "cloud", "pool", "host", "resource"]
CAPACITY_FAMILIES = {
    "capacity": ("capacity_resource_capacity", "Total amount of a resource a host or pool-level provider has "
                 "(cores, bytes or count)."),
    "allocatable": ("capacity_resource_allocatable",
                    "What may be handed out: (capacity - reserved) x allocation ratio."),
    "allocated": ("capacity_resource_allocated", "What consumers (VMs, pods) were given."),
    "used": ("capacity_resource_used", "What is measured in use (absent where it cannot be measured)."),
}


def family_builder(func: FamilyBuilder) -> FamilyBuilder:
    """Register a function adding metric families built from a snapshot."""
    FAMILY_BUILDERS.append(func)
    return func


def load_builtin_family_modules() -> None:
    """Import every metric-family plugin (entry points `capacityd.exporters`); each uses `@family_builder`."""
    from importlib.metadata import entry_points

    for entry_point in sorted(entry_points(group="capacityd.exporters"), key=lambda ep: ep.name):
        try:
            entry_point.load()
        except Exception as error:
            raise RuntimeError(
                f"exporter plugin {entry_point.name!r} ({entry_point.value}) cannot be loaded: "
                f"{type(error).__name__}: {error}"
            ) from error


def add_frame_samples(family: Metric, frame: pd.DataFrame | None, labels: list[str], value_column: str) -> None:
    """Add one sample per row of `frame` to `family`: unknown (NaN) and infinite values are left out
    (unknown is absent, never 0), null label values become "". Shared by every frame-backed family."""
    if frame is None or frame.empty:
        return
    values = frame[value_column].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        return
    # One str() per kept value, without building a Series per label: this runs for every family on every
    # collection.
    label_columns = [["" if v is None or v is pd.NA or v != v else str(v)
                      for v in frame[label].to_numpy(dtype=object)[keep]] for label in labels]
    for labelvalues, value in zip(zip(*label_columns, strict=True), values[keep].tolist(), strict=True):
        family.add_metric(list(labelvalues), value)


def _gauge_from_frame(
    name: str, documentation: str, frame: pd.DataFrame, labels: list[str], value_column: str
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    add_frame_samples(family, frame, labels, value_column)
    return family


def core_families(snapshot: Snapshot) -> Iterator[Metric]:
    capacity = snapshot.frames.get("capacity")
    if capacity is not None:
        for column, (name, documentation) in CAPACITY_FAMILIES.items():
            yield _gauge_from_frame(name, documentation, capacity, RESOURCE_LABELS, column)
    consumers = snapshot.frames.get("consumers")
    family = GaugeMetricFamily(
        "capacity_consumers", "Number of consumers (VMs, domains, pods) by state.",
        labels=["layer", "cloud", "pool", "host", "state"],
    )
    if consumers is not None and not consumers.empty:
        # Counted in one pass over the label columns (what groupby(...).size() gave, in its sorted
        # order; a null host counts as ""): a groupby costs milliseconds on every collection.
        columns = [
            consumers[label].to_numpy(dtype=object, na_value="" if label == "host" else None).tolist()
            for label in ("layer", "cloud", "pool", "host", "state")
        ]
        counts = Counter(zip(*columns, strict=True))
        for key in sorted(counts):
            family.add_metric([str(k) for k in key], float(counts[key]))
    yield family
    yield from self_metrics(snapshot)


def self_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["source", "kind"]
    up = GaugeMetricFamily("capacityd_source_up", "1 if the last poll of the source succeeded.", labels=labels)
    stale = GaugeMetricFamily(
        "capacityd_source_stale", "1 if the data served for the source is older than its last poll attempt.",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "capacityd_source_poll_duration_seconds", "Duration of the last poll of the source.", labels=labels
    )
    last_success = GaugeMetricFamily(
        "capacityd_source_last_success_timestamp_seconds", "Unix time of the last successful poll.", labels=labels
    )
    errors = CounterMetricFamily(
        "capacityd_source_errors", "Failed polls of the source, by reason.", labels=[*labels, "reason"]
    )
    skipped = CounterMetricFamily(
        "capacityd_source_items_skipped", "Items (domains, providers, nodes) left out of otherwise good polls, "
        "by reason.", labels=[*labels, "reason"]
    )
    polls = CounterMetricFamily("capacityd_source_polls", "Polls attempted.", labels=labels)
    api_calls = GaugeMetricFamily(
        "capacityd_source_api_calls", "Remote API calls made by the last successful poll.", labels=labels
    )
    for status in snapshot.statuses:
        key = [status.name, status.kind]
        up.add_metric(key, 1.0 if status.up else 0.0)
        stale.add_metric(key, 1.0 if status.stale else 0.0)
        polls.add_metric(key, float(status.polls_total))
        if status.poll_duration_seconds is not None:
            duration.add_metric(key, status.poll_duration_seconds)
        if status.last_success is not None:
            last_success.add_metric(key, status.last_success.timestamp())
        for reason, count in sorted(status.errors_total.items()):
            errors.add_metric([*key, reason], float(count))
        for reason, count in sorted(status.skipped_total.items()):
            skipped.add_metric([*key, reason], float(count))
        if status.api_calls is not None:
            api_calls.add_metric(key, float(status.api_calls))
    yield from (up, stale, duration, last_success, errors, skipped, polls, api_calls)
    info = GaugeMetricFamily("capacityd_build_info", "capacityd version.", labels=["version"])
    info.add_metric([__version__], 1.0)
    yield info
    taken = GaugeMetricFamily(
        "capacityd_snapshot_timestamp_seconds", "Unix time the served exposition was rendered."
    )
    taken.add_metric([], snapshot.taken_at.timestamp())
    yield taken


class SnapshotCollector(Collector):
    """prometheus_client custom collector over one snapshot (core + registered families)."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from core_families(self.snapshot)
        for builder in FAMILY_BUILDERS:
            try:
                yield from builder(self.snapshot)
            except Exception:
                log.exception("metric family builder %s failed", getattr(builder, "__name__", builder))


def render(snapshot: Snapshot) -> bytes:
    """The text exposition (format 0.0.4) of a snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


@dataclass(frozen=True)
class Exposition:
    body: bytes
    gzipped: bytes


class ExpositionCache:
    """Holds the last rendered exposition; `update` renders, scrapes read `current`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = Exposition(b"", gzip.compress(b""))

    def update(self, snapshot: Snapshot) -> Exposition:
        body = render(snapshot)
        exposition = Exposition(body, gzip.compress(body, compresslevel=5))
        with self._lock:
            self._current = exposition
        return exposition

    @property
    def current(self) -> Exposition:
        with self._lock:
            return self._current
