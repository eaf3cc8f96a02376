"""Core metric families rendered from a snapshot."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from collector.contract.schema import CAPACITY, CONSUMERS
from collector.estate import Estate
from exporters.prometheus.exposition import FAMILY_BUILDERS, ExpositionCache, family_builder, render

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def estate_with_data() -> Estate:
    capacity = CAPACITY.build(
        [
            dict(
                timestamp=NOW,
                source="kvm-a",
                layer="hypervisor",
                cloud="c",
                pool="az1",
                host="h1",
                scope="host",
                resource="cpu",
                capacity=32.0,
                reserved=0.0,
                allocation_ratio=1.0,
                allocatable=32.0,
                allocated=10.0,
                used=np.nan,
            ),
            dict(
                timestamp=NOW,
                source="kvm-a",
                layer="hypervisor",
                cloud="c",
                pool="az1",
                host='h"2\\',
                scope="host",
                resource="memory",
                capacity=2.0**37,
                reserved=0.0,
                allocation_ratio=1.0,
                allocatable=2.0**37,
                allocated=2.0**34,
                used=2.0**33,
            ),
        ]
    )
    consumers = CONSUMERS.build(
        [
            dict(
                timestamp=NOW,
                source="kvm-a",
                layer="hypervisor",
                cloud="c",
                pool="az1",
                host="h1",
                id=f"d{i}",
                name=f"d{i}",
                state=state,
                holds_capacity=state != "shutoff",
            )
            for i, state in enumerate(["running", "running", "paused", "shutoff"])
        ]
    )
    estate = Estate()
    estate.add_source("kvm-a", "libvirt", timedelta(seconds=60))
    estate.add_source("kvm-b", "libvirt", timedelta(seconds=60))
    estate.record_success("kvm-a", {"capacity": capacity, "consumers": consumers}, NOW, 0.25, Counter(vanished=2), 7)
    estate.record_failure("kvm-b", "unreachable", "connection refused", NOW, 0.01)
    return estate


def parse(body: bytes) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def test_core_families_and_unknown_is_absent():
    families = parse(render(estate_with_data().snapshot(NOW)))
    used = families["capacity_resource_used"]
    assert len(used) == 1 and used[0].labels["host"] == 'h"2\\'  # NaN cpu usage is absent, not 0
    assert len(families["capacity_resource_capacity"]) == 2
    consumers = {s.labels["state"]: s.value for s in families["capacity_consumers"]}
    assert consumers == {"running": 2, "paused": 1, "shutoff": 1}
    up = {s.labels["source"]: s.value for s in families["capacityd_source_up"]}
    assert up == {"kvm-a": 1, "kvm-b": 0}
    errors = [
        (s.labels["source"], s.labels["reason"], s.value)
        for s in families["capacityd_source_errors"]
        if s.name.endswith("_total")
    ]
    assert errors == [("kvm-b", "unreachable", 1)]
    skipped = [s for s in families["capacityd_source_items_skipped"] if s.name.endswith("_total")]
    assert [(s.labels["reason"], s.value) for s in skipped] == [("vanished", 2)]
    assert families["capacityd_source_api_calls"][0].value == 7


def test_a_broken_family_builder_does_not_blank_metrics():
    @family_builder
    def broken(snapshot):
        raise RuntimeError("bug")
        yield  # pragma: no cover

    try:
        body = ExpositionCache().update(estate_with_data().snapshot(NOW)).body
        assert b"capacity_resource_capacity{" in body
    finally:
        FAMILY_BUILDERS.remove(broken)
