"""Slow and hostile clients against the real `capacityd run` process on loopback: they cost a file
descriptor each, never a thread, and a scraper keeps being answered at once."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, free_port, require_binary

LIFETIME = 300  # the daemon exits by itself after this long, whatever happens to the test


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def threads(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads: line")

    def open_sockets(self) -> int:
        fds = Path(f"/proc/{self.process.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                count += os.readlink(fd).startswith("socket:")
        return count


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    web = getattr(request, "param", "")
    port = free_port()
    config = tmp_path / "capacityd.yaml"
    config.write_text(f"listen: 127.0.0.1:{port}\nstate_dir: {tmp_path / 'state'}\nsources: []\n{web}")
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                require_binary("timeout", "coreutils"),
                "--kill-after=10",
                str(LIFETIME),
                sys.executable,
                "-m",
                "collector.app.cli",
                "run",
                "-c",
                str(config),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"GET /-/ready HTTP/1.0\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "daemon not ready:\n" + log_path.read_text()[-3000:]
            time.sleep(0.2)
        # `timeout` is the parent: the daemon is its only child.
        child = int(Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0])
        yield Daemon(_Pid(child, process), port, log_path)  # type: ignore[arg-type]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class _Pid:
    """The daemon's own pid (for /proc) beside the `timeout` wrapper that owns it."""

    def __init__(self, pid: int, wrapper: subprocess.Popen[bytes]):
        self.pid = pid
        self.wrapper = wrapper

    def poll(self) -> int | None:
        return self.wrapper.poll()


class SlowClients(threading.Thread):
    """`count` connections that send a request head one byte at a time, reconnecting when dropped."""

    def __init__(self, port: int, count: int, seconds: float, drip_interval: float = 0.5):
        super().__init__(daemon=True)
        self.port, self.count, self.seconds, self.drip = port, count, seconds, drip_interval
        self.connects = 0
        self.dropped = 0
        self.ready = threading.Event()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.connects += 1
        return sock

    def run(self) -> None:
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        socks = [[self._connect(), 0] for _ in range(self.count)]
        self.ready.set()
        stop = time.monotonic() + self.seconds
        try:
            while time.monotonic() < stop:
                started = time.monotonic()
                for entry in socks:
                    sock, sent = entry
                    try:
                        sent += sock.send(head[sent : sent + 1])
                        entry[1] = sent
                    except BlockingIOError:
                        pass  # still connecting, or the server's window is full
                    except OSError:  # dropped by the server: come back, as an attacker would
                        sock.close()
                        self.dropped += 1
                        entry[0], entry[1] = self._connect(), 0
                time.sleep(max(0.0, self.drip - (time.monotonic() - started)))
        finally:
            for sock, _ in socks:
                sock.close()


def scrape_latencies(port: int, seconds: float, keep_alive: bool) -> list[float]:
    latencies = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if not keep_alive:
            connection.close()
        started = time.perf_counter()
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        assert response.status == 200 and body
        time.sleep(0.02)
    connection.close()
    return latencies


@pytest.mark.parametrize("daemon", ["web: {max_connections: 512, max_request_threads: 8}\n"], indirect=True)
def test_thousands_of_slow_clients_cost_no_threads_and_scrapes_stay_fast(daemon: Daemon) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    baseline = daemon.threads()
    attack = SlowClients(daemon.port, 4000, seconds=20)
    attack.start()
    attack.ready.wait(30)
    threads = [baseline]
    sockets: list[int] = []

    def watch() -> None:
        while attack.is_alive() and daemon.process.poll() is None:
            try:
                threads.append(daemon.threads())
                sockets.append(daemon.open_sockets())
            except OSError:  # the daemon is gone: the assertions below say so
                return
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(2)  # every slow client is connected (or queued) and dripping
    keep_alive = scrape_latencies(daemon.port, 6, keep_alive=True)
    fresh = scrape_latencies(daemon.port, 6, keep_alive=False)
    attack.join(60)
    watcher.join(10)
    assert daemon.process.poll() is None, daemon.log.read_text()[-3000:]
    assert attack.dropped > 0, "the server never dropped a slow client"
    # One loop thread and at most 8 request threads, whatever the number of clients.
    assert max(threads) <= baseline + 8, (baseline, max(threads))
    assert max(sockets) <= 512 + 16  # connections held, plus listening and internal sockets
    p99_keep, p99_fresh = np.percentile(keep_alive, 99), np.percentile(fresh, 99)
    print(
        f"under 4000 slow clients: keep-alive p99 {p99_keep * 1e3:.1f} ms ({len(keep_alive)} scrapes), "
        f"new connection p99 {p99_fresh * 1e3:.1f} ms ({len(fresh)}); max threads {max(threads)} "
        f"(baseline {baseline}), max sockets {max(sockets)}, slow clients dropped {attack.dropped}"
    )
    # Queued behind slow clients, scrapes would wait seconds (read_header_timeout). The < 100 ms figure is
    # measured by `bench/bench_metrics.py --slow-clients 4000`; on a shared CI machine only a bound that
    # tells "served at once" from "queued" is asserted here.
    assert p99_keep < 0.5
    assert p99_fresh < 2.0  # a new connection also waits in the accept queue behind reconnecting clients


@pytest.mark.parametrize(
    "daemon", ["web: {read_header_timeout: 1s, idle_timeout: 2s, max_connections: 4}\n"], indirect=True
)
def test_header_and_idle_timeouts_and_the_connection_limit(daemon: Daemon) -> None:
    silent = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    dripping = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    started = time.monotonic()
    closed_at = None
    for byte in b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100:  # one byte every 0.2 s: never finishes in 1 s
        try:
            dripping.sendall(bytes([byte]))
        except OSError:
            closed_at = time.monotonic() - started
            break
        time.sleep(0.2)
    assert closed_at is not None and closed_at < 4, "a slow request head was not cut at read_header_timeout"
    silent.settimeout(5)
    assert silent.recv(1) == b"", "a silent connection was not closed"
    # A kept-alive connection that waits too long for its next request is closed (idle_timeout)...
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    connection.request("GET", "/metrics")
    assert connection.getresponse().read()
    connection.sock.settimeout(5)
    started = time.monotonic()
    assert connection.sock.recv(1) == b""
    assert 1.0 < time.monotonic() - started < 4.5
    # ...and at max_connections the oldest unfinished request makes room for a new client.
    slow = [socket.create_connection(("127.0.0.1", daemon.port), timeout=5) for _ in range(4)]
    for sock in slow:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as client:
        client.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.recv(64).startswith(b"HTTP/1.1 200")
    slow[0].settimeout(5)
    assert slow[0].recv(1) == b""  # the oldest was dropped
    for sock in (*slow, silent, dripping):
        sock.close()


@pytest.mark.parametrize("daemon", [""], indirect=True)
def test_keep_alive_scrapes_do_not_wait_for_delayed_acks(daemon: Daemon) -> None:
    """Headers and body written separately without TCP_NODELAY cost ~40 ms per scrape (Nagle waiting
    for the client's delayed ACK); the median keep-alive scrape of a small exposition must be far below."""
    latencies = []
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    for _ in range(30):
        started = time.perf_counter()
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        assert connection.getresponse().read()
        latencies.append(time.perf_counter() - started)
    connection.close()
    assert float(np.median(latencies)) < 0.020, latencies
