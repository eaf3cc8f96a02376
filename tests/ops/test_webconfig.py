"""/metrics security: the exporter-toolkit web config, proven with real TLS and basic auth on loopback."""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pytest
import requests

from collector.estate import Snapshot
from exporters.prometheus.exposition import ExpositionCache
from exporters.prometheus.http import BasicAuth, MetricsServer, accepts_gzip, start_server
from exporters.prometheus.webconfig import WebConfigError, load_web_config

from .conftest import Pki

PASSWORD = "s3cret-Passw0rd"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
HTPASSWD_HASH = "$2y$" + HASH[4:]  # what `htpasswd -nBC` writes


def write(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cache() -> ExpositionCache:
    cache = ExpositionCache()
    cache.update(Snapshot(taken_at=datetime.now(UTC), frames={}, statuses=()))
    return cache


@pytest.fixture
def serve(cache: ExpositionCache) -> Iterator:
    servers: list[MetricsServer] = []

    def start(web_config: Path | None) -> MetricsServer:
        server = start_server(cache, "127.0.0.1", 0, web_config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def tls_auth_config(directory: Path, pki: Pki, extra: str = "") -> Path:
    return write(
        directory,
        f"""
        tls_server_config:
          cert_file: {pki.server_cert}
          key_file: {pki.server_key}
        {extra}
        http_server_config:
          headers:
            X-Content-Type-Options: nosniff
            Strict-Transport-Security: max-age=31536000
        basic_auth_users:
          prometheus: {HTPASSWD_HASH}
          other: {HASH}
        """,
    )


# -- the file format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config:\n  cert_fil: a\n", "tls_server_config.cert_fil: unknown key"),
        ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config: exactly one of key_file and key"),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users: user 'alice': not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type: Input should be",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites: unknown or unsupported cipher suite 'TLS_AES_128_GCM_SHA256'",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
            "min_version is above max_version",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP256, X25519]\n",
            "tls_server_config.curve_preferences: Python's ssl module can restrict the handshake to one curve",
        ),
        ("http_server_config:\n  headers:\n    Server: nginx\n", "http_server_config.headers: header 'Server'"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options accepts deny or sameorigin"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit: burst must be at least 1"),
        ("rate_limit:\n  interval: soon\n  burst: 2\n", "rate_limit.interval: not a duration"),
        ("- a list\n", "(top level): expected a mapping"),
        ("tls_server_config: [\n", "line 2, column 1"),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "tls_server_config.cert_file: cannot read",
        ),
    ],
)
def test_bad_web_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(WebConfigError) as raised:
        load_web_config(write(tmp_path, text))
    assert expected in str(raised.value)
    assert str(tmp_path / "web.yml") in str(raised.value)


def test_errors_never_echo_secrets(tmp_path: Path, pki: Pki) -> None:
    secret_hash = "$2y$10$" + "A" * 52  # one character short of a bcrypt hash
    with pytest.raises(WebConfigError) as raised:
        load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{secret_hash}'\n"))
    assert secret_hash not in str(raised.value)
    key_pem = pki.server_key.read_text()
    inline = "tls_server_config:\n  cert: |\n    not a certificate\n  key: |\n" + textwrap.indent(key_pem, "    ")
    with pytest.raises(WebConfigError) as raised:
        load_web_config(write(tmp_path, inline))
    assert "tls_server_config.cert: no PEM certificate found" in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)


def test_mismatched_key_is_named(tmp_path: Path, pki: Pki) -> None:
    path = write(tmp_path, f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n")
    with pytest.raises(WebConfigError, match="cert_file/key_file: the private key does not match the certificate"):
        load_web_config(path)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read"):
        load_web_config(tmp_path / "nope.yml")
    config = load_web_config(write(tmp_path, ""))
    assert not config.tls_enabled and not config.basic_auth_users


def test_relative_paths_resolve_against_the_file(tmp_path: Path, pki: Pki) -> None:
    config = load_web_config(
        write(pki.directory, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n", name="rel.yml")
    )
    assert config.tls_server_config is not None
    assert config.tls_server_config.cert_file == pki.server_cert


def test_accepts_gzip() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("deflate, gzip;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip(None) and not accepts_gzip("identity") and not accepts_gzip("gzip;q=0")


# -- plain HTTP ---------------------------------------------------------------------------------------


def test_plain_server_endpoints(serve, cache: ExpositionCache) -> None:
    server = serve(None)
    base = f"http://127.0.0.1:{server.port}"
    response = requests.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.content == cache.current.body and b"capacityd_build_info" in response.content
    raw = requests.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    compressed = raw.raw.read(decode_content=False)
    assert compressed == cache.current.gzipped and gzip.decompress(compressed) == cache.current.body
    assert requests.get(f"{base}/", timeout=5).text.startswith("<!DOCTYPE html>")
    assert requests.get(f"{base}/-/healthy", timeout=5).status_code == 200
    assert requests.get(f"{base}/-/ready", timeout=5).status_code == 200
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    assert requests.post(f"{base}/metrics", timeout=5).status_code == 405
    head = requests.head(f"{base}/metrics", headers={"Accept-Encoding": "identity"}, timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(cache.current.body)


def test_not_ready_before_the_first_collection(serve) -> None:
    server = start_server(ExpositionCache(), "127.0.0.1", 0, None)
    try:
        assert requests.get(f"http://127.0.0.1:{server.port}/-/ready", timeout=5).status_code == 503
        assert requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=5).status_code == 200
    finally:
        server.shutdown()


# -- TLS and basic auth on loopback -------------------------------------------------------------------


def test_tls_with_basic_auth(
    serve, tmp_path: Path, pki: Pki, cache: ExpositionCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    server = serve(tls_auth_config(tmp_path, pki))
    assert server.tls and server.url.startswith("https://")
    url = f"https://127.0.0.1:{server.port}/metrics"
    good = requests.get(url, auth=("prometheus", PASSWORD), verify=str(pki.ca_cert), timeout=5)
    assert good.status_code == 200 and good.content == cache.current.body
    assert good.headers["X-Content-Type-Options"] == "nosniff"
    assert good.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert requests.get(url, auth=("other", PASSWORD), verify=str(pki.ca_cert), timeout=5).status_code == 200

    for auth in (("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", PASSWORD + "x" * 80), None):
        denied = requests.get(url, auth=auth, verify=str(pki.ca_cert), timeout=5)
        assert denied.status_code == 401, auth
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        assert b"capacityd_build_info" not in denied.content
        assert denied.headers["X-Content-Type-Options"] == "nosniff"  # configured headers on every response
    # Health endpoints are protected too, as in exporter-toolkit.
    assert (
        requests.get(f"https://127.0.0.1:{server.port}/-/healthy", verify=str(pki.ca_cert), timeout=5).status_code
        == 401
    )
    # Malformed Authorization headers are plain 401s, not errors.
    for header in ("Basic !!!", "Bearer abc", "Basic " + "cHJvbWV0aGV1cw==", ""):
        assert (
            requests.get(url, headers={"Authorization": header}, verify=str(pki.ca_cert), timeout=5).status_code == 401
        )
    assert PASSWORD not in caplog.text and "cHJvbWV0aGV1cw" not in caplog.text


def test_plain_http_refused_when_tls_is_on(serve, tmp_path: Path, pki: Pki) -> None:
    server = serve(tls_auth_config(tmp_path, pki))
    response = requests.get(f"http://127.0.0.1:{server.port}/metrics", auth=("prometheus", PASSWORD), timeout=5)
    assert response.status_code == 400
    assert "HTTP request to an HTTPS server" in response.text
    assert "capacityd_build_info" not in response.text
    # A raw TCP client that speaks neither gets nothing either, and the server keeps serving.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert b"capacityd_build_info" not in sock.recv(4096)
    assert (
        requests.get(
            f"https://127.0.0.1:{server.port}/metrics",
            auth=("prometheus", PASSWORD),
            verify=str(pki.ca_cert),
            timeout=5,
        ).status_code
        == 200
    )


def test_server_certificate_is_the_configured_one(serve, tmp_path: Path, pki: Pki) -> None:
    server = serve(tls_auth_config(tmp_path, pki))
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without our CA
        requests.get(f"https://127.0.0.1:{server.port}/metrics", timeout=5)


def test_min_version_is_enforced(serve, tmp_path: Path, pki: Pki) -> None:
    server = serve(tls_auth_config(tmp_path, pki, extra="  min_version: TLS13"))
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"


def test_cipher_suites_are_applied(serve, tmp_path: Path, pki: Pki) -> None:
    config = tls_auth_config(
        tmp_path,
        pki,
        extra=("  max_version: TLS12\n          cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]"),
    )
    server = serve(config)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")


def test_client_certificates(serve, tmp_path: Path, pki: Pki) -> None:
    config = write(
        tmp_path,
        f"""
        tls_server_config:
          cert_file: {pki.server_cert}
          key_file: {pki.server_key}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {pki.ca_cert}
          client_allowed_sans: [prometheus.example.org]
        """,
    )
    server = serve(config)
    url = f"https://127.0.0.1:{server.port}/metrics"
    ok = requests.get(url, cert=(str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert), timeout=5)
    assert ok.status_code == 200
    for cert in (
        None,
        (str(pki.untrusted_client_cert), str(pki.untrusted_client_key)),
        (str(pki.other_client_cert), str(pki.other_client_key)),
    ):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(url, cert=cert, verify=str(pki.ca_cert), timeout=5)


def test_inline_pem(serve, tmp_path: Path, pki: Pki) -> None:
    config = write(
        tmp_path,
        "tls_server_config:\n  cert: |\n"
        + textwrap.indent(pki.server_cert.read_text(), "    ")
        + "  key: |\n"
        + textwrap.indent(pki.server_key.read_text(), "    "),
    )
    server = serve(config)
    assert (
        requests.get(f"https://127.0.0.1:{server.port}/metrics", verify=str(pki.ca_cert), timeout=5).status_code == 200
    )


def test_rate_limit(serve, tmp_path: Path) -> None:
    server = serve(write(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n"))
    codes = [requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]


def test_reload_swaps_users_and_turns_tls_on(serve, tmp_path: Path, pki: Pki) -> None:
    server = serve(None)
    assert requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status_code == 200
    server.reload(tls_auth_config(tmp_path, pki))
    assert requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status_code == 400
    assert (
        requests.get(
            f"https://127.0.0.1:{server.port}/metrics",
            auth=("prometheus", PASSWORD),
            verify=str(pki.ca_cert),
            timeout=5,
        ).status_code
        == 200
    )
    bad = write(tmp_path, "basic_auth_users:\n  x: nope\n", name="bad.yml")
    with pytest.raises(WebConfigError):
        server.reload(bad)
    assert server.tls  # the old settings stay when the new file is broken


def test_bcrypt_verdict_is_cached_per_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(1)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    auth = BasicAuth({"prometheus": HTPASSWD_HASH.encode()}, cache_size=2)
    good = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"prometheus:nope").decode()
    assert auth.check(good) == "prometheus" and auth.check(good) == "prometheus"
    assert len(calls) == 1
    assert auth.check(bad) is None and auth.check(bad) is None
    assert len(calls) == 2
    third = "Basic " + base64.b64encode(b"prometheus:third").decode()
    auth.check(third)  # evicts the oldest (good) credential: the cache is bounded
    assert auth.check(good) == "prometheus" and len(calls) == 4


def test_cached_scrape_is_cheap(serve, tmp_path: Path, pki: Pki) -> None:
    """bcrypt at cost 10 takes ~100 ms; cached scrapes must not pay it again."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    server = serve(write(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))
    session = requests.Session()
    session.auth = ("prometheus", PASSWORD)
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert session.get(url, timeout=5).status_code == 200
    started = time.perf_counter()
    for _ in range(20):
        assert session.get(url, timeout=5).status_code == 200
    assert (time.perf_counter() - started) / 20 < 0.05


def test_a_stalled_handshake_does_not_block_other_scrapes(serve, tmp_path: Path, pki: Pki) -> None:
    server = serve(tls_auth_config(tmp_path, pki))
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:  # three clients connect and never speak; a real scrape must still be answered at once
        started = time.perf_counter()
        response = requests.get(
            f"https://127.0.0.1:{server.port}/metrics",
            auth=("prometheus", PASSWORD),
            verify=str(pki.ca_cert),
            timeout=5,
        )
        assert response.status_code == 200 and time.perf_counter() - started < 2
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize(("host", "client"), [("::1", "[::1]"), ("::", "127.0.0.1"), ("::", "[::1]")])
def test_ipv6_and_dual_stack(cache: ExpositionCache, host: str, client: str) -> None:
    server = start_server(cache, host, 0, None)
    try:
        response = requests.get(f"http://{client}:{server.port}/metrics", timeout=5)
        assert response.status_code == 200 and response.content == cache.current.body
    finally:
        server.shutdown()


def test_address_in_use_is_an_os_error(cache: ExpositionCache) -> None:
    server = start_server(cache, "127.0.0.1", 0, None)
    try:
        with pytest.raises(OSError):
            start_server(cache, "127.0.0.1", server.port, None)
    finally:
        server.shutdown()
