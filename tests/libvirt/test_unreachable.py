"""URIs that do not answer: the poll fails fast with a clear reason and backs off before retrying."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.sources.base import SourceError
from collector.sources.libvirt import LibvirtSource


class FakeClock:
    """A monotonic clock the test moves by hand (the backoff is measured on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never says a word (a hung libvirtd)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_missing_socket_fails_fast_with_the_reason(tmp_path: Path, make_source: Callable[..., LibvirtSource]) -> None:
    source = make_source(f"qemu+unix:///system?socket={tmp_path}/no-such-libvirt-sock")
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.poll(datetime.now(UTC))
    assert time.monotonic() - started < 5
    assert caught.value.reason == "unreachable"
    assert "no-such-libvirt-sock" in str(caught.value)
    assert "No such file or directory" in str(caught.value)


def test_refused_tcp_port(make_source: Callable[..., LibvirtSource]) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = make_source(f"qemu+tcp://127.0.0.1:{port}/system")
    with pytest.raises(SourceError) as caught:
        source.poll(datetime.now(UTC))
    assert caught.value.reason == "unreachable"
    assert "Connection refused" in str(caught.value)


def test_a_peer_that_never_answers_times_out(silent_listener: int, make_source: Callable[..., LibvirtSource]) -> None:
    source = make_source(f"qemu+tcp://127.0.0.1:{silent_listener}/system", timeout="2s")
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.poll(datetime.now(UTC))
    elapsed = time.monotonic() - started
    assert caught.value.reason == "unreachable"
    assert "did not answer within 2s" in str(caught.value)
    assert 1.5 < elapsed < 5, f"gave up after {elapsed:.1f}s, expected ~2s"


def test_missing_test_driver_file(tmp_path: Path, make_source: Callable[..., LibvirtSource]) -> None:
    source = make_source(f"test://{tmp_path}/absent.xml")
    with pytest.raises(SourceError) as caught:
        source.poll(datetime.now(UTC))
    assert caught.value.reason == "unreachable"
    assert "absent.xml" in str(caught.value)


def test_backoff_does_not_hammer_a_dead_host(tmp_path: Path) -> None:
    from collector.sources.libvirt.settings import LibvirtSourceConfig

    clock = FakeClock()
    config = LibvirtSourceConfig(
        kind="libvirt", name="kvm-dead", uri=f"qemu+unix:///system?socket={tmp_path}/sock", interval="60s"
    )
    source = LibvirtSource(config, clock=clock)
    socket_path = tmp_path / "sock"
    try:
        attempts = []
        for _ in range(4):  # failure n -> wait 0, 1, 3, 7 intervals before attempt n+1
            with pytest.raises(SourceError):
                source.poll(datetime.now(UTC))
            attempts.append(source.connect_attempts)
            clock.now += 60
        # Polls every 60 s at t=0,60,120,180: failure 1 retries at the next poll (t=60), failure 2
        # waits one interval (t=120), failure 3 waits three (t=300): t=180 makes no attempt.
        assert attempts == [1, 2, 3, 3]
        with pytest.raises(SourceError) as caught:
            source.poll(datetime.now(UTC))  # t=240: within the 180 s wait after failure 3
        assert caught.value.reason == "unreachable"
        assert "next in" in str(caught.value) and "3 failed attempt(s)" in str(caught.value)
        assert source.connect_attempts == 3
        clock.now += 10_000
        with pytest.raises(SourceError):
            source.poll(datetime.now(UTC))
        assert source.connect_attempts == 4
        assert not socket_path.exists()
    finally:
        source.close()


def test_a_poll_stuck_in_libvirt_does_not_queue_the_next(
    node_5: tuple[Path, dict], make_source: Callable[..., LibvirtSource]
) -> None:
    """If the scheduler gave up on a hung poll, the next one fails clearly instead of waiting forever."""
    path, _ = node_5
    source = make_source(f"test://{path}", timeout="1s")
    source.poll(datetime.now(UTC))
    assert source._lock.acquire()  # stands for a poll stuck inside a libvirt call
    try:
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            source.poll(datetime.now(UTC))
        assert caught.value.reason == "poll_overlap"
        assert time.monotonic() - started < 3
    finally:
        source._lock.release()
    assert len(source.poll(datetime.now(UTC)).frames["consumers"]) == 5
