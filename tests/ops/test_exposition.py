"""`promtool check metrics` on the exposition as the HTTP server serves it (gzip, over loopback)."""

from __future__ import annotations

import gzip
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import requests

from collector.contract.schema import CAPACITY, CONSUMERS
from collector.estate import Estate
from exporters.prometheus.exposition import ExpositionCache, load_builtin_family_modules
from exporters.prometheus.http import start_server

from .conftest import require_binary

NOW = datetime.now(UTC)


def estate() -> Estate:
    rows = []
    for host in ("compute-01", "compute-02"):
        resources = (("vcpu", 64.0, 40.0, np.nan), ("memory", 2.0**38, 2.0**37, 2.0**36))
        for resource, capacity, allocated, used in resources:
            rows.append(
                dict(
                    timestamp=NOW,
                    source="nova",
                    layer="openstack",
                    cloud="prod",
                    pool="az1",
                    host=host,
                    scope="host",
                    resource=resource,
                    capacity=capacity,
                    reserved=0.0,
                    allocation_ratio=1.0,
                    allocatable=capacity,
                    allocated=allocated,
                    used=used,
                )
            )
    consumers = CONSUMERS.build(
        [
            dict(
                timestamp=NOW,
                source="nova",
                layer="openstack",
                cloud="prod",
                pool="az1",
                host="compute-01",
                id=f"vm{i}",
                name=f"vm{i}",
                state=state,
                holds_capacity=True,
            )
            for i, state in enumerate(["active", "active", "shutoff"])
        ]
    )
    result = Estate()
    result.add_source("nova", "openstack", timedelta(seconds=60))
    result.add_source("kvm", "libvirt", timedelta(seconds=60))
    result.record_success(
        "nova", {"capacity": CAPACITY.build(rows), "consumers": consumers}, NOW, 0.4, Counter(vanished=1), 12
    )
    result.record_failure("kvm", "unreachable", "connection refused", NOW, 0.01)
    return result


def test_promtool_check_metrics_on_served_exposition() -> None:
    promtool = require_binary("promtool", "prometheus")
    load_builtin_family_modules()
    cache = ExpositionCache()
    cache.update(estate().snapshot(NOW))
    server = start_server(cache, "127.0.0.1", 0, None)
    try:
        response = requests.get(
            f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10, stream=True
        )
        body = gzip.decompress(response.raw.read(decode_content=False))
    finally:
        server.shutdown()
    assert b'capacity_resource_allocated{cloud="prod"' in body and b"capacityd_source_errors_total{" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not (result.stdout + result.stderr).strip(), (result.stdout + result.stderr).decode()
