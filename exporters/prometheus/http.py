"""The HTTP(S) server for /metrics: serves the cached exposition, with TLS and basic auth from a web config.

A scrape never computes anything: `/metrics` answers with `ExpositionCache.current` (or its
pre-compressed gzip copy when the client accepts gzip). Security follows the exporter-toolkit web
config (exporters/prometheus/webconfig.py), so the file SREs write for node_exporter works here:

* TLS: the listening socket stays plain and each accepted connection is wrapped in the worker thread,
  so a slow or hostile handshake never blocks `accept()`, and `reload()` can swap certificates (or turn
  TLS on) without rebinding. A plain-HTTP request to a TLS listener gets Go's answer, a 400 saying so.
* Basic auth: bcrypt is deliberately slow (~100 ms at cost 10), so the verdict is cached per
  credential under a keyed digest (the password itself is never kept) in a bounded LRU; user lookup
  is constant time and unknown users still pay a bcrypt check, so timing reveals nothing.
* Nothing logs a credential: request logging is at debug level and never includes headers.

`start_server()` is what the daemon calls; `/`, `/-/healthy` and `/-/ready` complete the usual
exporter surface (ready once a first exposition was rendered).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt

from collector import __version__
from exporters.prometheus.exposition import CONTENT_TYPE, ExpositionCache
from exporters.prometheus.webconfig import WebConfig, build_ssl_context, load_web_config

log = logging.getLogger(__name__)

# A valid cost-10 bcrypt hash of a throw-away string: unknown users are checked against it so a
# wrong user name costs as much time as a wrong password.
_DUMMY_HASH = b"$2b$10$S7HCuI4ztVNLzIJl53V8ruRQo0lrwUTZcv/qgRWTa33aCq28/kU8a"
AUTH_CACHE_SIZE = 1024
HANDSHAKE_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 60.0
_TLS_HANDSHAKE_RECORD = 0x16

LANDING_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>capacityd</title></head>
<body>
<h1>capacityd</h1>
<p>Capacity monitoring and planning for OpenStack/KVM and Kubernetes estates. Version {version}.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body></html>
"""


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, caching verdicts per credential."""

    def __init__(self, users: dict[str, bytes], cache_size: int = AUTH_CACHE_SIZE):
        self._users = [(name.encode("utf-8"), hashed) for name, hashed in users.items()]
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._key = os.urandom(32)  # the cache key is an HMAC: a memory dump shows no password
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> str | None:
        """The authenticated user name, or None for a missing, malformed or wrong credential."""
        if not header:
            return None
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        hashed = _DUMMY_HASH
        known = False
        for name, candidate in self._users:  # visit every entry: time does not depend on which matched
            if hmac.compare_digest(name, user):
                hashed, known = candidate, True
        key = hmac.new(self._key, b"\0".join((user, hashed, password)), hashlib.sha256).digest()
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
        if verdict is None:
            try:
                verdict = bcrypt.checkpw(password, hashed)
            except ValueError:  # longer than bcrypt's 72 bytes, or a hash bcrypt refuses
                verdict = False
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if verdict and known:
            return user.decode("utf-8", errors="replace")
        return None


class RateLimiter:
    """Token bucket like Go's rate.Limiter: one token per `interval`, at most `burst` saved up."""

    def __init__(self, interval_seconds: float, burst: int):
        self._rate = 1.0 / interval_seconds
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass(frozen=True)
class _Settings:
    """Everything a request needs from the web config, swapped as a whole on reload."""

    web_config: WebConfig
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth
    limiter: RateLimiter | None
    headers: dict[str, str] = field(default_factory=dict)
    allowed_sans: frozenset[str] = frozenset()

    @classmethod
    def from_web_config(cls, config: WebConfig, source: str = "<web config>") -> _Settings:
        tls = config.tls_server_config
        limiter = None
        if config.rate_limit is not None and config.rate_limit.interval is not None:
            limiter = RateLimiter(config.rate_limit.interval.total_seconds(), config.rate_limit.burst)
        return cls(
            web_config=config,
            ssl_context=build_ssl_context(tls, source) if tls is not None else None,
            auth=BasicAuth({u: h.get_secret_value().encode("ascii") for u, h in config.basic_auth_users.items()}),
            limiter=limiter,
            headers=dict(config.http_server_config.headers),
            allowed_sans=frozenset(tls.client_allowed_sans) if tls is not None else frozenset(),
        )


def _peer_sans(sock: ssl.SSLSocket) -> set[str]:
    cert = sock.getpeercert() or {}
    return {str(value) for _, value in cert.get("subjectAltName", ())}


def accepts_gzip(header: str | None) -> bool:
    """True when Accept-Encoding lists gzip (or *) with a non-zero quality."""
    if not header:
        return False
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, settings: _Settings,
                 cache: ExpositionCache):
        self.address_family = family
        self.settings = settings
        self.cache = cache
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN through DNS: skipped, it can hang without a resolver.
        if self.address_family == socket.AF_INET6 and self.server_address[0] in ("::", ""):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] also takes IPv4
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """TLS handshake (when configured) in the worker thread, then the normal request handling."""
        settings = self.settings
        if settings.ssl_context is not None:
            wrapped = self._wrap_tls(request, client_address, settings)
            if wrapped is None:
                self.shutdown_request(request)
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _wrap_tls(self, request: socket.socket, client_address: Any, settings: _Settings) -> ssl.SSLSocket | None:
        assert settings.ssl_context is not None
        try:
            request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            first = request.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if first[0] != _TLS_HANDSHAKE_RECORD:
                # What Go's net/http answers, so a misconfigured scrape (http:// instead of https://) says why.
                request.sendall(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                    b"Client sent an HTTP request to an HTTPS server.\n"
                )
                log.debug("plain HTTP request from %s to the TLS listener refused", client_address[0])
                return None
            wrapped = settings.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", client_address[0], error)
            return None
        if settings.allowed_sans and not (_peer_sans(wrapped) & settings.allowed_sans):
            log.warning("client certificate of %s has no SAN in client_allowed_sans: connection closed",
                        client_address[0])
            with contextlib.suppress(OSError):
                wrapped.close()
            return None
        wrapped.settimeout(REQUEST_TIMEOUT_SECONDS)
        return wrapped

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error serving %s", client_address[0] if client_address else "?", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"capacityd/{__version__}"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS
    server: _Server

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _method_not_allowed(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"Method not allowed.\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed

    def _dispatch(self, head: bool) -> None:
        settings = self.server.settings
        if settings.limiter is not None and not settings.limiter.allow():
            self._reply(HTTPStatus.TOO_MANY_REQUESTS, b"Too many requests.\n", head=head)
            return
        if settings.auth and settings.auth.check(self.headers.get("Authorization")) is None:
            self._reply(HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", head=head,
                        extra={"WWW-Authenticate": 'Basic realm="capacityd"'})
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics(head)
        elif path == "/":
            page = LANDING_PAGE.format(version=html.escape(__version__)).encode("utf-8")
            self._reply(HTTPStatus.OK, page, "text/html; charset=utf-8", head=head)
        elif path.startswith("/snapshot") and hasattr(self.server.cache, "snapshot_document") and (
                answer := self.server.cache.snapshot_document(path)) is not None:  # collectors (docs/scale-out.md)
            self._reply(HTTPStatus(answer[0]), answer[1], answer[2], head=head)
        elif path == "/-/healthy":
            self._reply(HTTPStatus.OK, b"capacityd is Healthy.\n", head=head)
        elif path == "/-/ready":
            if self.server.cache.current.body:
                self._reply(HTTPStatus.OK, b"capacityd is Ready.\n", head=head)
            else:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"capacityd is not ready: no collection yet.\n",
                            head=head)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"Not found.\n", head=head)

    def _metrics(self, head: bool) -> None:
        exposition = self.server.cache.current
        extra = {"Vary": "Accept-Encoding"}
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            extra["Content-Encoding"] = "gzip"
            body = exposition.gzipped
        else:
            body = exposition.body
        self._reply(HTTPStatus.OK, body, CONTENT_TYPE, head=head, extra=extra)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8",
               head: bool = False, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.settings.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: never headers (Authorization), never at info level.
        log.debug("%s %s", self.client_address[0], format % args)


class MetricsServer:
    """A running /metrics server: `.port` is the bound port, `.shutdown()` stops it, `.reload()` re-reads."""

    def __init__(self, server: _Server, thread: threading.Thread, web_config_file: Path | None):
        self._server = server
        self._thread = thread
        self.web_config_file = web_config_file

    @property
    def host(self) -> str:
        return self._server.server_name

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def tls(self) -> bool:
        return self._server.settings.ssl_context is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"

    def reload(self, web_config_file: Path | None = None) -> None:
        """Re-read the web config (new certificates, users); on error the old settings stay and it raises."""
        path = web_config_file if web_config_file is not None else self.web_config_file
        config = load_web_config(path) if path is not None else WebConfig()
        self._server.settings = _Settings.from_web_config(config, str(path))
        self.web_config_file = path
        log.info("metrics server: web config %s", f"reloaded from {path}" if path else "cleared")

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _address_family(host: str, port: int) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(f"cannot listen on {host!r}: {error.strerror}") from None
    return infos[0][0]


def start_server(
    cache: ExpositionCache, host: str, port: int, web_config_file: Path | None = None
) -> MetricsServer:
    """Serve `cache` on host:port (0 picks a free port) in a background thread.

    Raises WebConfigError for an unusable web config and OSError when the address cannot be bound.
    """
    config = load_web_config(web_config_file) if web_config_file is not None else WebConfig()
    settings = _Settings.from_web_config(config, str(web_config_file))
    host = host.strip("[]")
    server = _Server((host, port), _address_family(host, port), settings, cache)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    running = MetricsServer(server, thread, web_config_file)
    log.info(
        "serving metrics on %s (%s%s)", running.url, "TLS" if running.tls else "plain HTTP",
        ", basic auth" if settings.auth else "",
    )
    return running
