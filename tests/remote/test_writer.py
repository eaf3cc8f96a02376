"""Remote-write client behaviour against a recording loopback receiver: headers, one request per poll,
retries on 5xx/429 with backoff, never on 4xx, the bounded retry queue and its counters, secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector import __version__
from collector.store.remote.client import RemoteWriter
from collector.store.remote.samples import SeriesEncoder
from collector.store.settings import RemoteHistoryConfig
from tests.history.frames import capacity_frame
from tests.remote.prompb import decode
from tests.remote.receiver import receiver

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def poll(i: int) -> tuple[list[bytes], int]:
    when = T0 + timedelta(minutes=5 * i)
    return SeriesEncoder().encode("kvm", capacity_frame(when, hosts_per_pool=3, resources=("cpu",)), when)


def make_writer(url: str, **overrides: object) -> tuple[RemoteWriter, list[float]]:
    sleeps: list[float] = []
    settings: dict[str, object] = {"write_url": url, "max_retries": 3, "min_backoff": timedelta(milliseconds=100),
                                   "max_backoff": timedelta(seconds=1), **overrides}  # fmt: skip
    config = RemoteHistoryConfig.model_validate(settings)
    return RemoteWriter(config, sleep=sleeps.append), sleeps


def test_one_request_per_poll_with_the_spec_headers() -> None:
    with receiver() as r:
        writer, sleeps = make_writer(r.url)
        series, count = poll(0)
        assert writer.write(series, count)
        assert len(r.requests) == 1 and not sleeps
        request = r.requests[0]
        assert request.headers["Content-Encoding"] == "snappy"
        assert request.headers["Content-Type"] == "application/x-protobuf"
        assert request.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        assert request.headers["User-Agent"] == f"capacityd/{__version__}"
        assert len(decode(request.body)) == count == 3 * 5
        assert writer.stats.samples == count and writer.stats.requests == 1
        assert writer.stats.frame().set_index("metric").loc["samples", "value"] == count


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_are_retried_with_doubling_backoff(status: int) -> None:
    with receiver() as r:
        r.script.extend([status, status, status])
        writer, sleeps = make_writer(r.url)
        series, count = poll(0)
        assert writer.write(series, count)
        assert [q.status for q in r.requests] == [status, status, status, 204]
        assert len({q.body for q in r.requests}) == 1  # the same bytes each time
        assert sleeps == [0.1, 0.2, 0.4]
        assert writer.stats.retried_samples == 3 * count
        assert writer.stats.samples == count and writer.stats.failed_samples == 0
        assert writer.stats.failed_requests == 3


def test_429_retry_after_is_honoured_up_to_max_backoff() -> None:
    with receiver() as r:
        r.script.extend([(429, {"Retry-After": "30"})])
        writer, sleeps = make_writer(r.url)
        assert writer.write(*poll(0))
        assert sleeps == [1.0]


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_4xx_is_never_retried(status: int, caplog: pytest.LogCaptureFixture) -> None:
    with receiver() as r:
        r.script.append(status)
        writer, sleeps = make_writer(r.url)
        series, count = poll(0)
        with caplog.at_level(logging.WARNING):
            assert writer.write(series, count)  # final: nothing stays queued
        assert len(r.requests) == 1 and not sleeps
        assert writer.stats.failed_samples == count and writer.stats.retried_samples == 0
        assert writer.queue_length == 0
        assert f"HTTP {status}, not retried" in caplog.text
        assert writer.write(*poll(1)) and len(r.requests) == 2


def test_exhausted_retries_queue_the_poll_and_send_it_first_next_time() -> None:
    with receiver() as r:
        r.default = 503
        writer, _ = make_writer(r.url)
        first, n1 = poll(0)
        assert not writer.write(first, n1)
        assert writer.queue_length == n1 and len(r.requests) == 4
        r.default = 204
        second, n2 = poll(1)
        assert writer.write(second, n2)
        ok = [q for q in r.requests if q.status == 204]
        assert [decode(q.body)[0][1][0][0] for q in ok] == [
            int(T0.timestamp() * 1000),
            int((T0 + timedelta(minutes=5)).timestamp() * 1000),
        ]
        assert writer.queue_length == 0 and writer.stats.samples == n1 + n2
        assert writer.stats.dropped_samples == 0


def test_while_failing_each_poll_probes_once_instead_of_retrying() -> None:
    """A blackholed TSDB must not hold every poll thread for (max_retries + 1) x timeout."""
    with receiver() as r:
        r.default = 503
        writer, sleeps = make_writer(r.url)
        assert not writer.write(*poll(0))
        assert len(r.requests) == 4 and len(sleeps) == 3
        assert not writer.write(*poll(1))
        assert len(r.requests) == 5 and len(sleeps) == 3  # one probe, no backoff
        r.default = 204
        assert writer.write(*poll(2))
        assert len(r.requests) == 5 + 3 and writer.queue_length == 0
        r.script.extend([500])
        assert writer.write(*poll(3))  # recovered: retries again
        assert len(sleeps) == 4


def test_full_queue_drops_the_oldest_polls_and_counts_them() -> None:
    with receiver() as r:
        r.default = 500
        _, count = poll(0)
        writer, _ = make_writer(r.url, queue_samples=2 * count, max_retries=0)
        for i in range(5):
            assert not writer.write(*poll(i))
        assert writer.queue_length == 2 * count
        assert writer.stats.dropped_samples == 3 * count and writer.stats.failed_samples == 0
        frame = writer.stats.frame().set_index("metric")
        assert frame.loc["queue_length", "value"] == 2 * count
        assert frame.loc["dropped_samples", "value"] == 3 * count
        r.default = 204
        assert writer.write([], 0)  # the next poll (even an empty one) drains the queue, oldest first
        sent = [decode(q.body)[0][1][0][0] for q in r.requests if q.status == 204]
        assert sent == [int((T0 + timedelta(minutes=5 * i)).timestamp() * 1000) for i in (3, 4)]


def test_unreachable_receiver_is_retried_like_a_5xx() -> None:
    with receiver() as r:
        url = r.url
    writer, sleeps = make_writer(url)  # the port is closed now
    assert not writer.write(*poll(0))
    assert len(sleeps) == 3 and writer.queue_length == 15


def test_auth_from_files_is_sent_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    password = tmp_path / "password"
    password.write_text("hunter2")
    with receiver() as r, caplog.at_level(logging.DEBUG):
        r.script.extend([400, 500])
        writer, _ = make_writer(r.url, bearer_token_file=token, max_retries=0)
        writer.write(*poll(0))
        writer.write(*poll(1))
        assert r.requests[0].headers["Authorization"] == "Bearer s3cr3t-token"
        basic, _ = make_writer(r.url, username="capacityd", password_file=password)
        basic.write(*poll(2))
        assert r.requests[-1].headers["Authorization"] == "Basic Y2FwYWNpdHlkOmh1bnRlcjI="
    assert "s3cr3t" not in caplog.text and "hunter2" not in caplog.text
    assert "s3cr3t" not in repr(writer.config) and "hunter2" not in repr(basic.config)  # paths only
