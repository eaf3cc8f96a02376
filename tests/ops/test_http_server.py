"""The /metrics server's connection handling: large replies, pipelined and kept-alive requests, bodies."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pandas as pd
import pytest
import requests

from collector.estate import Snapshot
from exporters.prometheus.exposition import ExpositionCache
from exporters.prometheus.http import MetricsServer, start_server


@pytest.fixture(scope="module")
def cache() -> ExpositionCache:
    """A multi-megabyte exposition: more than a socket buffer takes in one write."""
    rows = 40_000
    frame = pd.DataFrame(
        {
            "layer": "openstack",
            "cloud": "c",
            "pool": [f"az{i % 3}" for i in range(rows)],
            "host": [f"compute-{i:06d}" for i in range(rows)],
            "resource": "cpu",
            "capacity": [float(i) for i in range(rows)],
            "allocatable": 1.0,
            "allocated": 1.0,
            "used": 1.0,
        }
    )
    cache = ExpositionCache()
    cache.update(Snapshot(taken_at=datetime.now(UTC), frames={"capacity": frame}, statuses=()))
    assert len(cache.current.body) > 4_000_000
    return cache


@pytest.fixture(params=["no auth", "basic auth"])
def server(request: pytest.FixtureRequest, cache: ExpositionCache, tmp_path: Path) -> Iterator[MetricsServer]:
    """Without auth a request is answered on the loop thread; with auth by a worker: both paths."""
    web_config = None
    if request.param == "basic auth":
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
        web_config = tmp_path / "web.yml"
        web_config.write_text(f"basic_auth_users:\n  u: '{hashed}'\n")
    running = start_server(cache, "127.0.0.1", 0, web_config)
    yield running
    running.shutdown()


def auth_header(server: MetricsServer) -> bytes:
    return b"Authorization: Basic dTpwdw==\r\n" if server.web_config_file else b""


def read_response(sock: socket.socket, pending: bytearray) -> tuple[bytes, bytes]:
    """(head, body) of one response read from `sock`, leaving any further bytes in `pending`."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        pending += chunk
    end = pending.index(b"\r\n\r\n") + 4
    head = bytes(pending[:end])
    del pending[:end]
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(pending) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed inside a body"
        pending += chunk
    body = bytes(pending[:length])
    del pending[:length]
    return head, body


def test_large_replies_on_a_kept_alive_connection(server: MetricsServer, cache: ExpositionCache) -> None:
    session = requests.Session()
    if server.web_config_file:
        session.auth = ("u", "pw")
    for encoding in ("identity", "gzip", "identity"):
        response = session.get(
            f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": encoding}, timeout=30, stream=True
        )
        raw = response.raw.read(decode_content=False)
        assert response.status_code == 200
        assert (gzip.decompress(raw) if encoding == "gzip" else raw) == cache.current.body


def test_pipelined_requests_are_answered_in_order(server: MetricsServer, cache: ExpositionCache) -> None:
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n" + auth_header(server) + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request % b"/-/healthy" + request % b"/metrics" + request % b"/nope" + request % b"/-/ready")
        pending = bytearray()
        answers = [read_response(sock, pending) for _ in range(4)]
    assert [head.split(b" ")[1] for head, _ in answers] == [b"200", b"200", b"404", b"200"]
    assert answers[0][1] == b"capacityd is Healthy.\n" and answers[1][1] == cache.current.body


def test_a_request_with_a_body_is_answered_then_closed(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\n" + auth_header(server) + b"Content-Length: 5\r\n\r\nGET /"
        )  # the body looks like a request: never taken for one
        head, _ = read_response(sock, bytearray())
        assert head.split(b" ")[1] == b"405"
        assert sock.recv(1) == b""


def test_an_oversized_head_is_refused(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70_000)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")


def test_the_scrape_fast_path_sends_what_the_request_handler_sends(
    cache: ExpositionCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain GET/HEAD /metrics is answered from a prepared head; with debug logging on, the same request
    goes through the request handler (it logs the request line): both replies are byte for byte the same
    apart from the Date, for every encoding, method and extra header the web config adds."""
    web_config = tmp_path / "web.yml"
    web_config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    running = start_server(cache, "127.0.0.1", 0, web_config)
    try:
        requests_ = [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=1, br\r\n\r\n",
            b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ]

        def replies() -> list[tuple[bytes, bytes]]:
            out = []
            for request in requests_:
                with socket.create_connection(("127.0.0.1", running.port)) as sock:
                    sock.sendall(request)
                    pending = bytearray()
                    if request.startswith(b"HEAD"):
                        while b"\r\n\r\n" not in pending:
                            pending += sock.recv(65536)
                        head, body = bytes(pending), b""
                    else:
                        head, body = read_response(sock, pending)
                out.append((b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"Date:")), body))
            return out

        fast = replies()
        with caplog.at_level("DEBUG", logger="exporters.prometheus.http"):
            handled = replies()
        assert any("GET /metrics" in record.getMessage() for record in caplog.records)  # the handler's path ran
        assert fast == handled
        assert b"X-Frame-Options: deny" in fast[0][0] and b"Content-Encoding: gzip" in fast[0][0]
        assert b"Content-Encoding" not in fast[1][0] and gzip.decompress(fast[0][1]) == fast[1][1]
    finally:
        running.shutdown()


def test_closed_and_kept_alive_connections_interleave_as_descriptors_are_reused(server: MetricsServer) -> None:
    """A kept-alive connection answered on the loop stays registered with the selector between requests; one
    closed by either side must leave it, or the next accepted socket (same descriptor number) is refused."""
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + auth_header(server)
    kept = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        pending = bytearray()
        for round_ in range(30):
            kept.sendall(request + b"\r\n")
            assert read_response(kept, pending)[0].startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as once:
                if round_ % 2:  # closed by the server after its answer
                    once.sendall(request + b"Connection: close\r\n\r\n")
                    assert read_response(once, bytearray())[0].startswith(b"HTTP/1.1 200")
                    assert once.recv(1) == b""
                else:  # closed by the client after one kept-alive answer
                    once.sendall(request + b"\r\n")
                    assert read_response(once, bytearray())[0].startswith(b"HTTP/1.1 200")
    finally:
        kept.close()
    response = requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=10)
    assert response.status_code in (200, 401)
