"""Bounded reads: an over-size answer, a dripping server and a truncated body, through openstacksdk.

The Nova + Placement stand-in serves its real answers but spoils them on the wire
(`StandinServer.inject_transfer`); the source polls it through the unchanged openstacksdk /
keystoneauth / requests stack, as in production. Each case must end the poll quickly with its own
reason (`too_large`, `timeout`, `malformed`) and a message naming the request, the daemon must count
it in `capacityd_source_errors_total`, and the next poll must be healthy again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from collector.app.scheduler import SourceRunner
from collector.demo.model import build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from collector.estate import Estate
from collector.sources.base import SourceError
from collector.sources.openstack.settings import OpenStackSourceConfig
from exporters.prometheus.exposition import ExpositionCache
from tests.openstack.conftest import make_source

CLOUD = "spoilt"
MIB = 1024**2


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinServer]:
    server = StandinServer(from_demo_estate(build_estate(), growth_count=0)).start()
    server.write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD)
    try:
        yield server
    finally:
        server.stop()


def _source(tmp_path: Path, **config: object):
    return make_source(tmp_path / "clouds.yaml", CLOUD, **config)


def _fails(source, reason: str) -> tuple[SourceError, float]:
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        source.checked_poll(datetime.now(UTC))
    assert error.value.reason == reason, str(error.value)
    return error.value, time.monotonic() - started


def _healthy(source) -> None:
    result = source.checked_poll(datetime.now(UTC))
    assert len(result.frames["hosts"]) == 10


def test_an_announced_oversize_answer_is_refused_without_reading_it(standin: StandinServer, tmp_path: Path) -> None:
    fault = standin.inject_transfer("compute", r"/servers/detail", "oversize", size=8 * MIB)
    source = _source(tmp_path, max_response_size="1Mi")
    error, _ = _fails(source, "too_large")
    message = str(error)
    assert f"cloud {CLOUD}" in message and "/servers/detail" in message
    assert "8.0 MiB" in message and "1.0 MiB cap" in message and "max_response_size" in message
    assert fault.times == 0
    _healthy(source)


def test_an_oversize_answer_without_content_length_is_cut_at_the_cap(standin: StandinServer, tmp_path: Path) -> None:
    """Chunked, so nothing announces the size: the read itself stops just past the cap."""
    fault = standin.inject_transfer(
        "placement", r"^/placement/resource_providers\?", "oversize", size=64 * MIB, chunked=True
    )
    source = _source(tmp_path, max_response_size="2Mi")
    error, _ = _fails(source, "too_large")
    assert "/resource_providers" in str(error) and "passed the 2.0 MiB cap" in str(error)
    deadline = time.monotonic() + 5  # the stand-in notices the hang-up on its next writes
    while fault.sent < 64 * MIB and time.monotonic() < deadline and fault.times:
        time.sleep(0.05)
    time.sleep(0.3)
    assert fault.sent < 16 * MIB, f"the client read on: the server wrote {fault.sent} bytes of 64 MiB"
    _healthy(source)


def test_a_dripping_server_ends_the_poll_at_its_deadline(standin: StandinServer, tmp_path: Path) -> None:
    """One byte every 50 ms never trips a socket timeout; the poll's wall deadline ends it."""
    fault = standin.inject_transfer("compute", r"/os-aggregates", "drip", interval=0.05)
    source = _source(tmp_path, timeout="8s", poll_deadline="4s")
    error, elapsed = _fails(source, "timeout")
    assert "/os-aggregates" in str(error) and "poll_deadline" in str(error)
    assert 3.5 < elapsed < 6, f"the poll took {elapsed:.1f}s with a 4 s deadline"
    assert 0 < fault.sent < 200  # the answer is several KB: it was still dripping
    _healthy(source)


def test_the_default_deadline_is_within_the_schedulers_timeout(standin: StandinServer, tmp_path: Path) -> None:
    """Without `poll_deadline` the source gives up at 90 % of `timeout`, before the scheduler would."""
    standin.inject_transfer("compute", r"/flavors/detail", "drip", interval=0.05)
    source = _source(tmp_path, timeout="5s")
    estate = Estate()
    estate.add_source(source.name, "openstack", timedelta(seconds=60))
    runner = SourceRunner(source, estate, timeout=5.0)
    assert runner.run() is False
    status = estate.snapshot().frames["sources"].set_index("source").loc[source.name]
    assert "/flavors/detail" in status["last_error"], "the source's own error, not the scheduler's"


def test_a_truncated_body_is_malformed_not_internal(standin: StandinServer, tmp_path: Path) -> None:
    standin.inject_transfer("compute", r"/flavors/detail", "truncated")
    source = _source(tmp_path)
    error, elapsed = _fails(source, "malformed")
    assert "/flavors/detail" in str(error) and "cut off" in str(error) and "announced" in str(error)
    assert elapsed < 5
    _healthy(source)


@pytest.mark.parametrize(
    ("transfer", "options", "reason"),
    [
        ("oversize", {"size": 4 * MIB}, "too_large"),
        ("truncated", {}, "malformed"),
        ("drip", {"interval": 0.05}, "timeout"),
    ],
)
def test_each_failure_is_counted_by_reason_on_metrics(
    standin: StandinServer, tmp_path: Path, transfer: str, options: dict[str, object], reason: str
) -> None:
    """The daemon's path: SourceRunner -> Estate -> /metrics, then a good poll keeps the count."""
    standin.inject_transfer("placement", r"/usages", transfer, **options)
    source = _source(tmp_path, max_response_size="1Mi", timeout="6s", poll_deadline="3s")
    estate = Estate()
    estate.add_source(source.name, "openstack", timedelta(seconds=60))
    runner = SourceRunner(source, estate, timeout=6.0)
    assert runner.run() is False
    assert runner.run() is True
    body = ExpositionCache().update(estate.snapshot()).body.decode()
    counted = re.search(rf'^capacityd_source_errors_total\{{[^}}]*reason="{reason}"[^}}]*\}} (\S+)$', body, re.M)
    assert counted and float(counted.group(1)) == 1.0, body[:2000]


def test_limits_are_validated_settings() -> None:
    config = OpenStackSourceConfig(kind="openstack", cloud="c", timeout="10s")
    assert config.max_response_size == 64 * MIB
    assert config.effective_poll_deadline == timedelta(seconds=9)
    assert OpenStackSourceConfig(kind="openstack", cloud="c", max_response_size="200M").max_response_size == 200e6
    with pytest.raises(ValidationError, match="poll_deadline must not exceed timeout"):
        OpenStackSourceConfig(kind="openstack", cloud="c", timeout="10s", poll_deadline="11s")
    with pytest.raises(ValidationError, match="max_response_size"):
        OpenStackSourceConfig(kind="openstack", cloud="c", max_response_size="1k")
