from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.store.history import History
from collector.store.settings import HistoryConfig

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC


@pytest.fixture
def t0() -> datetime:
    return T0


@pytest.fixture
def config() -> HistoryConfig:
    return HistoryConfig(
        raw_retention=timedelta(hours=6),
        host_raw_retention=timedelta(hours=3),
        downsample_step=timedelta(hours=1),
        retention=timedelta(days=3),
        consumer_retention=timedelta(days=2),
        host_retention=timedelta(days=2),
    )


@pytest.fixture
def history(tmp_path: Path, config: HistoryConfig) -> Iterator[History]:
    store = History.open(tmp_path / "state", config)
    yield store
    store.close()
