from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.remote.tsdb import Service, prometheus, victoria_metrics


def recent_t0() -> datetime:
    """Two days ago at 00:00 UTC: inside Prometheus' head and out-of-order window, far from 'now'."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=2)


@pytest.fixture(params=["victoria-metrics", "prometheus"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A fresh TSDB of each kind, killed after the test."""
    workdir = tmp_path / request.param
    workdir.mkdir()
    service = victoria_metrics(workdir) if request.param == "victoria-metrics" else prometheus(workdir)
    try:
        yield service
    finally:
        service.stop()


def write_url(service: Service) -> str:
    return f"{service.url}/api/v1/write"
