"""The HTTP(S) server for /metrics: serves the cached exposition, with TLS and basic auth from a web config.

A scrape never computes anything: `/metrics` answers with `ExpositionCache.current` (or its
pre-compressed gzip copy when the client accepts gzip). Security follows the exporter-toolkit web
config (exporters/prometheus/webconfig.py), so the file SREs write for node_exporter works here:

* Connections: one event-loop thread accepts, does TLS handshakes and reads request heads without
  blocking, so a slow or silent client costs a descriptor, never a thread; complete requests are
  answered by that loop (nothing to check) or by a bounded pool (basic auth's bcrypt, TLS writes).
  Limits and timeouts come from the `web:` config section (`Limits`); see `_Server`.
* TLS: the listening socket stays plain and each accepted connection is wrapped after its first
  byte, so `reload()` can swap certificates (or turn TLS on) without rebinding. A plain-HTTP request
  to a TLS listener gets Go's answer, a 400 saying so.
* Basic auth: bcrypt is deliberately slow (~100 ms at cost 10), so the verdict is cached per
  credential under a keyed digest (the password itself is never kept) in a bounded LRU; user lookup
  is constant time and every uncached check does the bcrypt work of the dearest configured hash, so
  timing does not tell whether a user exists (`BasicAuth`).
* Replies: `TCP_NODELAY`, and headers and body in one write, so no scrape waits for a delayed ACK.
* Nothing logs a credential: request logging is at debug level and never includes headers.

`start_server()` is what the daemon calls; `/`, `/-/healthy` and `/-/ready` complete the usual
exporter surface (ready once a first exposition was rendered).

Over 500 lines on purpose: the event loop, connection limits, TLS handshakes and auth checks interlock (who may
hold a thread, when a connection is dropped); split apart, their invariants would be spread over several files.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import hmac
import html
import io
import logging
import os
import re
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import bcrypt

from collector import __version__
from exporters.prometheus.exposition import CONTENT_TYPE, ExpositionCache
from exporters.prometheus.settings import WebSettings
from exporters.prometheus.webconfig import WebConfig, build_ssl_context, load_web_config

log = logging.getLogger(__name__)

# A valid cost-10 bcrypt hash of a throw-away string: unknown users are checked against it so a
# wrong user name costs as much time as a wrong password.
_DUMMY_HASH = b"$2b$10$S7HCuI4ztVNLzIJl53V8ruRQo0lrwUTZcv/qgRWTa33aCq28/kU8a"
AUTH_CACHE_SIZE = 1024
SWITCH_INTERVAL_SECONDS = 0.001
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


_BCRYPT_COST_RE = re.compile(rb"^\$2[aby]?\$(\d\d)\$")


@functools.lru_cache(maxsize=32)
def _dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of a throw-away string at `cost`, made once per cost a web config uses."""
    if cost == 10:
        return _DUMMY_HASH
    return bcrypt.hashpw(os.urandom(16).hex().encode("ascii"), bcrypt.gensalt(rounds=cost))


def _cost(hashed: bytes) -> int:
    match = _BCRYPT_COST_RE.match(hashed)
    return int(match.group(1)) if match else 10


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, caching verdicts per credential.

    Constant time whether or not the user exists, even when users' hashes have different costs: every
    uncached check does the bcrypt work of one hash at the highest configured cost. An unknown user is
    checked against a dummy hash of that cost; a known user whose hash is cheaper (cost c < max) is
    topped up with dummy checks at costs c, c+1, ... max-1 (2^c + 2^c + ... + 2^(max-1) = 2^max).
    """

    def __init__(self, users: dict[str, bytes], cache_size: int = AUTH_CACHE_SIZE):
        self._users = [(name.encode("utf-8"), hashed) for name, hashed in users.items()]
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._key = os.urandom(32)  # the cache key is an HMAC: a memory dump shows no password
        self._lock = threading.Lock()
        costs = [_cost(hashed) for _, hashed in self._users]
        self._max_cost = max(costs, default=10)
        self._unknown = _dummy_hash(self._max_cost) if self._users else _DUMMY_HASH
        # Dummy hashes for every cost a known user's check may need topping up with.
        self._padding = {cost: _dummy_hash(cost) for cost in range(min(costs, default=10), self._max_cost)}

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
        hashed = self._unknown
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
            verdict = _checkpw(password, hashed)
            for cost in range(_cost(hashed), self._max_cost):  # empty for the dummy and max-cost users
                _checkpw(password, self._padding[cost])
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if verdict and known:
            return user.decode("utf-8", errors="replace")
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes, or a hash bcrypt refuses
        return False


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
    # typeshed gives every certificate field one union type; subjectAltName is always (type, value) pairs
    sans = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()))
    return {str(value) for _, value in sans}


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


@dataclass(frozen=True)
class Limits:
    """How much the server holds at once and for how long (the `web:` config section)."""

    max_connections: int = 512
    max_request_threads: int = 64
    read_header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 60.0
    max_header_bytes: int = 65536

    @classmethod
    def from_settings(cls, settings: WebSettings) -> Limits:
        return cls(
            max_connections=settings.max_connections,
            max_request_threads=settings.max_request_threads,
            read_header_timeout=settings.read_header_timeout.total_seconds(),
            idle_timeout=settings.idle_timeout.total_seconds(),
            write_timeout=settings.write_timeout.total_seconds(),
        )


class _Conn:
    """One client connection and where it is: reading its request head in the loop, or in a worker."""

    __slots__ = (
        "address",
        "allowed_sans",
        "buffer",
        "deadline",
        "events",
        "partial",
        "served",
        "sock",
        "ssl_context",
        "stage",
    )

    def __init__(self, sock: socket.socket, address: Any, settings: _Settings, deadline: float):
        self.sock: socket.socket = sock
        self.address = address
        self.buffer = bytearray()
        self.ssl_context = settings.ssl_context
        self.allowed_sans = settings.allowed_sans
        self.stage = "peek" if settings.ssl_context is not None else "head"
        self.deadline = deadline
        self.partial = False  # bytes of an unfinished request (or handshake) arrived
        self.served = False  # answered a request already: a kept-alive client, dropped last
        self.events = 0  # the selector events it is registered for (0: not registered)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _head_end(buffer: bytearray) -> int:
    """Index just past the blank line ending a request head, or -1."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := buffer.find(mark)) >= 0]
    return min(ends) if ends else -1


_WAKE = object()


class _Server:
    """/metrics over HTTP/1.1: one event-loop thread holds every connection, a bounded pool answers.

    A connection costs a file descriptor and a buffer, not a thread, until its request head (after
    the TLS handshake, done non-blocking here too) has fully arrived; only then does one of at most
    `max_request_threads` workers check credentials and reply. Heads must arrive within
    `read_header_timeout`, idle keep-alive connections are closed after `idle_timeout`, and at
    `max_connections` the oldest unfinished request is dropped to make room (then the oldest idle
    connection), so thousands of slow clients cannot crowd out a scraper, which sends its request in
    one packet. Request bodies are never read: a request with one is answered and its connection closed.
    """

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        settings: _Settings,
        cache: ExpositionCache,
        limits: Limits,
    ):
        self.settings = settings
        self.cache = cache
        # the scrape reply for one (exposition, settings, gzip): body pieces and the head after its Date
        self._prepared: tuple[Any, _Settings, bool, tuple[bytes, ...], bytes] | None = None
        self._date: tuple[int, str] = (0, "")  # (second, its Date header)
        self.limits = limits
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6 and address[0] in ("::", ""):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] also takes IPv4
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(min(socket.SOMAXCONN, 4096))
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        bound = self.socket.getsockname()
        self.server_name, self.server_port = str(bound[0]), int(bound[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._pool = ThreadPoolExecutor(limits.max_request_threads, thread_name_prefix="metrics-request")
        self._returned: deque[tuple[_Conn, bool]] = deque()
        # Connections waiting in the loop, oldest first, in the order they are dropped at max_connections:
        # unfinished request heads, new connections that sent nothing yet, kept-alive ones between requests.
        self._partial: dict[_Conn, None] = {}
        self._fresh: dict[_Conn, None] = {}
        self._kept: dict[_Conn, None] = {}
        self._open = 0
        self._stopping = False
        self._stopped = threading.Event()

    # -- the loop ------------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            next_sweep = time.monotonic()
            while not self._stopping:
                pending = False
                for key, _ in self._selector.select(0.25):
                    if key.data is None:
                        pending = True
                    elif key.data is _WAKE:
                        self._take_returned()
                    else:
                        try:
                            self._advance(key.data)
                        except Exception:  # one client's surprise must not stop the server
                            log.debug("error reading from %s", key.data.address[0], exc_info=True)
                            if key.data.sock.fileno() >= 0:
                                self._close(key.data)
                if pending:  # after the connections already held: a flood of new ones cannot starve them
                    self._accept()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.25
        finally:
            for conn in (*self._partial, *self._fresh, *self._kept):
                conn.close()
            self._selector.close()
            self.socket.close()
            self._wake_r.close()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake()
        self._stopped.wait(10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        for _ in range(64):  # a bounded batch, so readiness of held connections is seen often
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of file descriptors: make room for the next turn
                log.debug("accept failed: %s", error)
                if not self._evict():
                    time.sleep(0.01)  # nothing to drop: do not spin on a listening socket that stays ready
                return
            if self._open >= self.limits.max_connections and not self._evict():
                sock.close()  # every connection is being answered: nothing is slower than this one
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, address, self.settings, time.monotonic() + self.limits.read_header_timeout)
            self._open += 1
            self._wait(conn, selectors.EVENT_READ)
            self._advance(conn)  # a scraper's request is usually there already: it is then no longer droppable

    def _evict(self) -> bool:
        """Drop the oldest unfinished request, else the oldest silent new connection, else the oldest
        kept-alive one, to make room: a scraper sends its request at once and is never the first choice."""
        for waiting in (self._partial, self._fresh, self._kept):
            if waiting:
                conn = next(iter(waiting))
                log.debug("connection limit %d reached: dropping %s", self.limits.max_connections, conn.address[0])
                self._close(conn)
                return True
        return False

    def _wait(self, conn: _Conn, events: int) -> None:
        (self._partial if conn.partial else self._kept if conn.served else self._fresh)[conn] = None
        if conn.events == events:  # still registered from its last request (answered inline): no syscall
            return
        if conn.events:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
        conn.events = events

    def _unwait(self, conn: _Conn) -> None:
        self._leave_waiting(conn)
        if conn.events:
            conn.events = 0
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)

    def _leave_waiting(self, conn: _Conn) -> None:
        """No longer droppable or timed out (it is being answered); its selector registration is left alone."""
        self._partial.pop(conn, None)
        self._fresh.pop(conn, None)
        self._kept.pop(conn, None)

    def _close(self, conn: _Conn) -> None:
        self._unwait(conn)
        conn.close()
        self._open -= 1

    def _mark_partial(self, conn: _Conn) -> None:
        if not conn.partial:
            conn.partial = True
            conn.deadline = time.monotonic() + self.limits.read_header_timeout
            self._fresh.pop(conn, None)
            self._kept.pop(conn, None)
            self._partial[conn] = None

    def _sweep(self, now: float) -> None:
        for conn in [c for c in (*self._partial, *self._fresh, *self._kept) if c.deadline <= now]:
            log.debug("closing %s: no complete request in time", conn.address[0])
            self._close(conn)

    def _advance(self, conn: _Conn) -> None:
        """Move a connection on as far as the bytes received allow: peek, TLS handshake, request head."""
        if conn.stage == "peek" and not self._peek(conn):
            return
        if conn.stage == "handshake" and not self._handshake(conn):
            return
        self._read_head(conn)

    def _peek(self, conn: _Conn) -> bool:
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._close(conn)
            return False
        if not first:
            self._close(conn)
            return False
        self._mark_partial(conn)
        if first[0] != _TLS_HANDSHAKE_RECORD:
            # What Go's net/http answers, so a misconfigured scrape (http:// instead of https://) says why.
            with contextlib.suppress(OSError):
                conn.sock.recv(65536)  # read what came, so closing does not reset the answer away
                conn.sock.send(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                    b"Client sent an HTTP request to an HTTPS server.\n"
                )
                conn.sock.shutdown(socket.SHUT_WR)
            log.debug("plain HTTP request from %s to the TLS listener refused", conn.address[0])
            self._close(conn)
            return False
        assert conn.ssl_context is not None
        self._unwait(conn)
        try:
            conn.sock = conn.ssl_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS setup for %s failed: %s", conn.address[0], error)
            conn.close()
            self._open -= 1
            return False
        conn.stage = "handshake"
        self._wait(conn, selectors.EVENT_READ)
        return True

    def _handshake(self, conn: _Conn) -> bool:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._wait(conn, selectors.EVENT_WRITE)
            return False
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", conn.address[0], error)
            self._close(conn)
            return False
        if conn.allowed_sans and not (_peer_sans(sock) & conn.allowed_sans):
            log.warning(
                "client certificate of %s has no SAN in client_allowed_sans: connection closed", conn.address[0]
            )
            self._close(conn)
            return False
        conn.stage = "head"
        self._wait(conn, selectors.EVENT_READ)
        return True

    def _read_head(self, conn: _Conn) -> None:
        while _head_end(conn.buffer) < 0:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._wait(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._wait(conn, selectors.EVENT_WRITE)
                return
            except OSError:  # reset, or a TLS error
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            conn.buffer += data
            self._mark_partial(conn)
            if len(conn.buffer) > self.limits.max_header_bytes and _head_end(conn.buffer) < 0:
                with contextlib.suppress(OSError):
                    conn.sock.recv(65536)  # what else came, so closing does not reset the answer away
                with contextlib.suppress(OSError):
                    conn.sock.send(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    conn.sock.shutdown(socket.SHUT_WR)
                self._close(conn)
                return
        self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        end = _head_end(conn.buffer)
        head = bytes(conn.buffer[:end])
        del conn.buffer[:end]
        if not self.settings.auth and not isinstance(conn.sock, ssl.SSLSocket):
            # Answered on this thread: the connection stays registered, so a kept-alive scraper costs no
            # epoll_ctl DEL and ADD per scrape (two syscalls of a ~0.5 ms idle scrape).
            self._leave_waiting(conn)
            self._answer_inline(conn, head)
        else:
            self._unwait(conn)  # a worker owns the socket until it returns it
            self._pool.submit(self._answer, conn, head)

    def _answer_inline(self, conn: _Conn, head: bytes) -> None:
        """No credential to check (no bcrypt) and a plain socket: answered on the loop thread, without the
        hand-off to a worker (one GIL acquisition fewer per scrape while a render runs). What the socket
        buffer does not take at once is sent by a worker, so the loop never blocks on a slow reader."""
        try:
            fast = self._scrape_reply(head)
            if fast is not None:  # the common scrape: a prepared head, no request handler
                pieces, keep = fast
                unsent = _send_now(conn.sock, pieces)
            else:
                handler = _Handler(conn, head, self, inline=True)
                keep, unsent = not handler.close_connection, handler.unsent
        except Exception:
            log.debug("error serving %s", conn.address[0], exc_info=True)
            self._finish(conn, keep=False)
            return
        if unsent:
            self._unwait(conn)  # a worker owns the socket until it returns it
            self._pool.submit(self._send_rest, conn, unsent, keep)
        elif keep and _head_end(conn.buffer) >= 0:  # pipelined: a worker takes it (no recursion here)
            conn.served = True
            self._unwait(conn)
            self._dispatch_to_worker(conn)
        else:
            self._finish(conn, keep, read_now=False)  # still registered: _wait only updates its events

    def _scrape_reply(self, head: bytes) -> tuple[list[bytes], bool] | None:
        """The reply to a plain `GET|HEAD /metrics` (the request a scraper repeats), or None for any other.

        The same bytes `_Handler` would send, from a head prepared once per exposition and encoding, with
        the Date of the current second: on an idle process the request handler's generic path was most of a
        scrape's ~0.4 ms (a real Prometheus scraping at 1 s always finds the process idle).
        """
        settings = self.settings
        if settings.limiter is not None or log.isEnabledFor(logging.DEBUG):
            return None
        line_end = head.find(b"\r\n")
        simple = _simple_head(head[: line_end + 2], head[line_end + 2 :]) if line_end > 0 else None
        if simple is None:
            return None
        (method, target, version), fields = simple
        if target != b"/metrics" or fields.get("transfer-encoding") or fields.get("content-length", "0") != "0":
            return None
        connection = fields.get("connection", "").lower()
        keep = connection != "close" if version == b"HTTP/1.1" else connection == "keep-alive"
        exposition = self.cache.current
        gzipped = accepts_gzip(fields.get("accept-encoding"))
        prepared = self._prepared
        if prepared is None or prepared[0] is not exposition or prepared[1] is not settings or prepared[2] != gzipped:
            body = tuple(exposition.gzipped_chunks if gzipped else exposition.chunks)
            extra = {**settings.headers, "Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gzipped else {})}
            fields_after_date = (
                f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {sum(len(piece) for piece in body)}\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in extra.items())
                + "\r\n"
            ).encode("latin-1", "strict")
            prepared = self._prepared = (exposition, settings, gzipped, body, fields_after_date)
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        reply_head = (
            f"HTTP/1.1 200 OK\r\nServer: {_Handler.server_version}\r\nDate: {self._date[1]}\r\n".encode("latin-1")
            + prepared[4]
        )
        return ([reply_head] if method == b"HEAD" else [reply_head, *prepared[3]]), keep

    def _dispatch_to_worker(self, conn: _Conn) -> None:
        end = _head_end(conn.buffer)
        head = bytes(conn.buffer[:end])
        del conn.buffer[:end]
        self._pool.submit(self._answer, conn, head)

    def _take_returned(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while self._returned:
            conn, keep = self._returned.popleft()
            self._finish(conn, keep)

    def _finish(self, conn: _Conn, keep: bool, read_now: bool = True) -> None:
        """A request was answered: close, or wait for the connection's next request."""
        if not keep or self._stopping:
            self._close(conn)  # unregisters it too, if it was answered inline
            return
        conn.partial = bool(conn.buffer)
        conn.served = True
        timeout = self.limits.read_header_timeout if conn.partial else self.limits.idle_timeout
        conn.deadline = time.monotonic() + timeout
        self._wait(conn, selectors.EVENT_READ)
        if read_now:
            self._read_head(conn)  # a pipelined request, or TLS bytes already decrypted, need no wake-up

    # -- the workers ---------------------------------------------------------------------------------

    def _send_rest(self, conn: _Conn, pieces: list[memoryview], keep: bool) -> None:
        try:
            conn.sock.settimeout(self.limits.write_timeout)
            for piece in pieces:
                conn.sock.sendall(piece)
            conn.sock.setblocking(False)
        except OSError as error:
            log.debug("sending to %s failed: %s", conn.address[0], error)
            keep = False
        if self._stopping:
            conn.close()
            keep = False
        self._returned.append((conn, keep))
        self._wake()

    def _answer(self, conn: _Conn, head: bytes) -> None:
        keep = False
        try:
            conn.sock.settimeout(self.limits.write_timeout)
            handler = _Handler(conn, head, self)
            keep = not handler.close_connection
            conn.sock.setblocking(False)
        except Exception:
            log.debug("error serving %s", conn.address[0], exc_info=True)
        if self._stopping:
            conn.close()
            keep = False
        self._returned.append((conn, keep))
        self._wake()


def _send_now(sock: socket.socket, pieces: list[bytes]) -> list[memoryview]:
    """One write of as much as a non-blocking socket takes now; what is left, for a worker to send."""
    try:
        sent = sock.sendmsg(pieces)
    except BlockingIOError:
        sent = 0
    unsent: list[memoryview] = []
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        unsent.append(memoryview(piece)[sent:])
        sent = 0
    return unsent


class _Fields(dict[str, str]):
    """Request header fields by lower-case name (the first of repeated ones, as `email.message.Message`)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


_SIMPLE_METHODS = {b"GET", b"HEAD"}
_SIMPLE_VERSIONS = {b"HTTP/1.1", b"HTTP/1.0"}
_MAX_FIELDS = 100  # http.client's limit: more goes to the stdlib parser, which answers 431


def _simple_head(request_line: bytes, rest: bytes) -> tuple[list[bytes], _Fields] | None:
    """(method, target, version) and the fields of a plain GET/HEAD head, or None to let the stdlib parse it.

    A scrape's head is a request line and a few `Name: value` lines; the stdlib's parser (email.parser) costs
    ~0.2 ms of a ~0.5 ms scrape on an idle process. Anything unusual (another method or version, folded or
    malformed lines, `Expect`, a `//` path) is left to the stdlib, so errors are answered exactly as before.
    """
    parts = request_line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or parts[0] not in _SIMPLE_METHODS or parts[2] not in _SIMPLE_VERSIONS:
        return None
    if not parts[1].startswith(b"/") or parts[1].startswith(b"//"):
        return None
    fields = _Fields()
    lines = rest.split(b"\r\n")
    if len(lines) > _MAX_FIELDS + 2:
        return None
    for line in lines:
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            return None
        fields.setdefault(name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1"))
    if "expect" in fields:
        return None
    return parts, fields


class _Handler(BaseHTTPRequestHandler):
    """One request whose head was read by the loop; the reply goes out in one write when it is small."""

    protocol_version = "HTTP/1.1"
    server_version = f"capacityd/{__version__}"
    sys_version = ""
    server: _Server  # type: ignore[assignment]
    raw_requestline: bytes  # set by handle_one_request

    def version_string(self) -> str:
        return self.server_version

    def __init__(self, conn: _Conn, head: bytes, server: _Server, inline: bool = False):
        self._head = head
        self._body: tuple[bytes, ...] = ()
        self._inline = inline  # on the loop thread: the socket is non-blocking, never wait on it
        self.unsent: list[memoryview] = []
        super().__init__(conn.sock, conn.address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = io.BytesIO()

    def parse_request(self) -> bool:
        """The common scrape parsed directly (`_simple_head`); anything else by the stdlib, unchanged."""
        assert isinstance(self.rfile, io.BytesIO)
        at = self.rfile.tell()
        simple = _simple_head(self.raw_requestline, self.rfile.getvalue()[at:])
        if simple is None:
            return super().parse_request()
        (method, target, version), self.headers = simple  # type: ignore[assignment]
        self.command, self.path = method.decode("latin-1"), target.decode("latin-1")
        self.request_version = version.decode("latin-1")
        self.requestline = self.raw_requestline.rstrip(b"\r\n").decode("latin-1")
        connection = self.headers.get("Connection", "").lower()
        if self.request_version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:  # HTTP/1.0 keeps the connection only when asked to, as the stdlib does
            self.close_connection = connection != "keep-alive"
        return True

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (
            headers.get("Transfer-Encoding") or headers.get("Content-Length", "0").strip() not in ("", "0")
        ):
            self.close_connection = True  # the body is never read: it must not be taken for the next request

    def finish(self) -> None:
        assert isinstance(self.wfile, io.BytesIO)
        head = self.wfile.getvalue()
        pieces = [head, *self._body]
        if self._inline:
            self.unsent = _send_now(self.connection, pieces)  # one write, as much as the socket buffer takes
            return
        if sum(len(piece) for piece in pieces) <= 65536:
            self.connection.sendall(b"".join(pieces))
        else:  # TCP_NODELAY is set: several writes cost no delayed-ACK wait, and save copying a large body
            for piece in pieces:
                self.connection.sendall(piece)

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
            self._reply(
                HTTPStatus.UNAUTHORIZED,
                b"Unauthorized\n",
                head=head,
                extra={"WWW-Authenticate": 'Basic realm="capacityd"'},
            )
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics(head)
        elif path == "/":
            page = LANDING_PAGE.format(version=html.escape(__version__)).encode("utf-8")
            self._reply(HTTPStatus.OK, page, "text/html; charset=utf-8", head=head)
        elif (
            path.startswith("/snapshot")
            and hasattr(self.server.cache, "snapshot_document")
            and (answer := self.server.cache.snapshot_document(path)) is not None
        ):  # collectors (docs/scale-out.md)
            self._reply(HTTPStatus(answer[0]), answer[1], answer[2], head=head)
        elif path == "/-/healthy":
            self._reply(HTTPStatus.OK, b"capacityd is Healthy.\n", head=head)
        elif path == "/-/ready":
            if self.server.cache.current.size:
                self._reply(HTTPStatus.OK, b"capacityd is Ready.\n", head=head)
            else:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"capacityd is not ready: no collection yet.\n", head=head)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"Not found.\n", head=head)

    def _metrics(self, head: bool) -> None:
        exposition = self.server.cache.current
        extra = {"Vary": "Accept-Encoding"}
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            extra["Content-Encoding"] = "gzip"
            body = exposition.gzipped_chunks
        else:
            body = exposition.chunks
        self._reply(HTTPStatus.OK, body, CONTENT_TYPE, head=head, extra=extra)

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes | tuple[bytes, ...],
        content_type: str = "text/plain; charset=utf-8",
        head: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        """The reply; a body given in pieces (the exposition's chunks) is written piece by piece."""
        pieces = (body,) if isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(piece) for piece in pieces)))
        for name, value in {**self.server.settings.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self._body = pieces

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: never headers (Authorization), never at info level.
        if log.isEnabledFor(logging.DEBUG):  # formatted only when it is logged: a scrape is hot
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

    @property
    def limits(self) -> Limits:
        return self._server.limits

    def set_limits(self, limits: Limits) -> None:
        """New limits (a reloaded `web:` section); the thread pool keeps the size it was started with."""
        self._server.limits = limits

    def shutdown(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


_OTHER_DESCRIPTORS = 256  # history, sources, logs: what the rest of the daemon may hold open


def _within_descriptor_limit(limits: Limits) -> Limits:
    """Raise the soft open-files limit towards the hard one if max_connections needs it (as Go does at
    start), else lower max_connections to fit, saying so: running out of descriptors would refuse scrapes."""
    wanted = limits.max_connections + _OTHER_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitting = max(16, soft - _OTHER_DESCRIPTORS)
        log.warning(
            "web.max_connections %d lowered to %d: the open-files limit is %d (raise LimitNOFILE)",
            limits.max_connections,
            fitting,
            soft,
        )
        return dataclasses.replace(limits, max_connections=fitting)
    return limits


def _address_family(host: str, port: int) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(f"cannot listen on {host!r}: {error.strerror}") from None
    return infos[0][0]


def start_server(
    cache: ExpositionCache,
    host: str,
    port: int,
    web_config_file: Path | None = None,
    limits: Limits | WebSettings | None = None,
) -> MetricsServer:
    """Serve `cache` on host:port (0 picks a free port) in a background thread, within `limits`.

    Raises WebConfigError for an unusable web config and OSError when the address cannot be bound.
    """
    config = load_web_config(web_config_file) if web_config_file is not None else WebConfig()
    settings = _Settings.from_web_config(config, str(web_config_file))
    host = host.strip("[]")
    if isinstance(limits, WebSettings):
        limits = Limits.from_settings(limits)
    limits = _within_descriptor_limit(limits or Limits())
    if sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS:
        # A render (or a poll's parsing) holds the GIL for up to the switch interval each time a scrape's
        # thread wants it back, a few times per scrape: 5 ms by default, so ~1 ms keeps scrapes fast.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    server = _Server((host, port), _address_family(host, port), settings, cache, limits)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    running = MetricsServer(server, thread, web_config_file)
    log.info(
        "serving metrics on %s (%s%s)",
        running.url,
        "TLS" if running.tls else "plain HTTP",
        ", basic auth" if settings.auth else "",
    )
    return running
