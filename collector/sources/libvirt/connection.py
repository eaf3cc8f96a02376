"""The libvirt source's one long-lived, read-only connection: opened within a timeout, watched, backed off.

* libvirt's default event loop runs in one daemon thread per process (`ensure_event_loop`), so the
  keepalive probes and close callback of a remote connection work even between polls;
* `Connector.ensure` reuses the open link while it is alive, otherwise opens a new one within the
  poll timeout (a silent peer must not hang the poll thread), backing off 0, 1, 3, 7 ... intervals
  after failures;
* `Connector.call` counts every remote call and turns a dead link into `ConnectionLost`, which the
  source answers with one reconnect-and-retry.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import libvirt

from collector.sources.base import SourceError

if TYPE_CHECKING:
    from collector.sources.libvirt.settings import LibvirtSourceConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean the link to libvirtd is gone (as opposed to a problem with one request). A
# VIR_ERR_SYSTEM_ERROR is ambiguous ("Cannot write data: Broken pipe" on the link, but also "Unable to
# read from monitor" for one dying guest): it counts as a lost link only if the connection is not alive.
CONNECTION_ERRORS = {libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN}


def redact_uri(uri: str) -> str:
    """A URI fit for logs: a password in the user part (never needed by libvirt) is masked."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


# --------------------------------------------------------------------------------------------------
# Process-wide libvirt setup: one event loop thread (keepalive and close callbacks need it).
# --------------------------------------------------------------------------------------------------

_EVENT_LOOP_LOCK = threading.Lock()
_EVENT_LOOP_STARTED = False


def _log_libvirt_error(_context: object, error: tuple[Any, ...]) -> None:
    # libvirt's default handler prints every error to stderr; errors reach us as exceptions anyway.
    log.debug("libvirt: %s", error[2] if len(error) > 2 else error)


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread, once per process.

    Must happen before connections are opened: keepalive probes and close callbacks of a remote
    connection are driven by this loop; without it a dead link is only noticed by a failing call.
    """
    global _EVENT_LOOP_STARTED
    with _EVENT_LOOP_LOCK:
        if _EVENT_LOOP_STARTED:
            return
        libvirt.registerErrorHandler(_log_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # pragma: no cover - keep the loop alive whatever happens
                    log.exception("libvirt event loop iteration failed")
                    time.sleep(1)

        threading.Thread(target=run, name="libvirt-event-loop", daemon=True).start()
        _EVENT_LOOP_STARTED = True


# --------------------------------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------------------------------


class ConnectionLost(Exception):
    """The link to libvirt died during a poll (internal: turned into a reconnect or a SourceError)."""


@dataclass
class Connection:
    """An open connection plus what was learned about the remote side when it was opened."""

    conn: Any
    driver: str
    hostname: str
    host_uuid: str | None
    keepalive: bool
    closed_reason: str | None = None
    nowait_supported: bool = True
    node_memory_stats: bool = True
    node_cpu_stats: bool = True
    memory_note_given: bool = False


@dataclass
class CallCounter:
    """Remote calls made during one poll (exported as `capacityd_source_api_calls`)."""

    count: int = 0


@dataclass
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "I/O error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file (libvirtd went away)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


class Connector:
    """Owns a source's connection: open (bounded), reuse while alive, drop, back off, count calls."""

    def __init__(
        self,
        name: str,
        config: LibvirtSourceConfig,
        clock: Callable[[], float],
        backoff_max: Callable[[], float],
    ):
        self.name = name
        self.config = config
        self._clock = clock
        self._backoff_max = backoff_max
        """The longest wait between reconnect attempts (read from the source, which tests may tune)."""
        self.link: Connection | None = None
        self._backoff = _Backoff()
        self.connect_attempts = 0
        """How many times a connection was opened (exposed for tests and diagnostics)."""

    @property
    def uri(self) -> str:
        return self.config.uri

    def connect_timeout(self) -> float:
        return max(1.0, self.config.effective_timeout.total_seconds())

    def drop(self, why: str) -> None:
        """Close the current connection, if any (callbacks unregistered first; errors ignored)."""
        link, self.link = self.link, None
        if link is None:
            return
        log.info("libvirt %s: closing connection to %s (%s)", self.name, redact_uri(self.uri), why)
        with contextlib.suppress(libvirt.libvirtError):
            link.conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            link.conn.close()

    def ensure(self, calls: CallCounter, on_drop: Callable[[str], None]) -> Connection:
        """The open link if alive; else a new one (`on_drop` is told when a dead link is dropped)."""
        link = self.link
        if link is not None:
            if link.closed_reason is None and self.alive(link):
                return link
            on_drop(f"connection lost: {link.closed_reason or 'not alive'}")
        now = self._clock()
        if self._backoff.failures and now < self._backoff.retry_at:
            raise SourceError(
                "unreachable",
                f"libvirt {redact_uri(self.uri)} unreachable ({self._backoff.last_error}); "
                f"{self._backoff.failures} failed attempt(s), next in {self._backoff.retry_at - now:.0f}s",
            )
        try:
            link = self._open(calls)
        except SourceError as error:
            self._backoff.failures += 1
            self._backoff.last_error = str(error)
            interval = self.config.interval.total_seconds()
            # 0 (retry at the next poll), then 1, 3, 7 ... intervals; capped.
            delay = min(interval * (2 ** (self._backoff.failures - 1) - 1), max(self._backoff_max(), interval))
            self._backoff.retry_at = self._clock() + delay
            raise
        self._backoff = _Backoff()
        self.link = link
        return link

    @staticmethod
    def alive(link: Connection) -> bool:
        try:
            return bool(link.conn.isAlive() == 1)  # libvirt-python ships no type hints
        except libvirt.libvirtError:
            return False

    def _open(self, calls: CallCounter) -> Connection:
        """Open a read-only connection within the poll timeout (a silent peer must not hang us)."""
        ensure_event_loop()
        self.connect_attempts += 1
        uri, shown = self.uri, redact_uri(self.uri)
        timeout = self.connect_timeout()
        outcome: dict[str, Any] = {}
        state = threading.Lock()
        abandoned = threading.Event()

        def connect() -> None:
            try:
                conn = libvirt.openReadOnly(uri)
            except libvirt.libvirtError as error:
                with state:
                    outcome["error"] = error
                return
            with state:
                if abandoned.is_set():
                    conn.close()  # the poll gave up on us; do not leak the late connection
                else:
                    outcome["conn"] = conn

        worker = threading.Thread(target=connect, name=f"libvirt-connect-{self.name}", daemon=True)
        calls.count += 1
        worker.start()
        worker.join(timeout)
        with state:
            if "conn" not in outcome and "error" not in outcome:
                abandoned.set()
                raise SourceError("unreachable", f"libvirt {shown} did not answer within {timeout:.0f}s")
        if "error" in outcome:
            raise SourceError("unreachable", f"cannot connect to libvirt {shown}: {outcome['error']}")
        conn = outcome["conn"]
        try:
            link = self._describe(conn, calls)
        except libvirt.libvirtError as error:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise SourceError("unreachable", f"libvirt {shown} failed right after connecting: {error}") from None
        log.info(
            "libvirt %s: connected to %s (driver %s, host %s, keepalive %s)",
            self.name,
            shown,
            link.driver,
            link.hostname,
            "on" if link.keepalive else "n/a",
        )
        return link

    def _describe(self, conn: Any, calls: CallCounter) -> Connection:
        calls.count += 1
        driver = conn.getType().upper()
        keepalive = False
        try:
            calls.count += 1
            keepalive = conn.setKeepAlive(self.config.keepalive_interval, self.config.keepalive_count) == 0
        except libvirt.libvirtError as error:
            # In-process drivers (test:///, qemu:/// when embedded) have no link to watch.
            log.debug("libvirt %s: no keepalive on %s: %s", self.name, redact_uri(self.uri), error)
        link = Connection(conn=conn, driver=driver, hostname="", host_uuid=None, keepalive=keepalive)

        def closed(_conn: Any, reason: int, _opaque: Any) -> None:
            link.closed_reason = _CLOSE_REASONS.get(reason, f"reason {reason}")
            log.warning("libvirt %s: connection closed: %s", self.name, link.closed_reason)

        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(closed, None)
        link.hostname = self._hostname(conn, driver, calls)
        link.host_uuid = self._host_uuid(conn, calls)
        return link

    def _hostname(self, conn: Any, driver: str, calls: CallCounter) -> str:
        if driver == "TEST":
            # The test driver answers getHostname() with the *collector's* host name; its node file
            # is the only identity a test node has, so the file name (compute-01.xml) names it.
            path = unquote(urlsplit(self.uri).path)
            stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            return stem or "test"
        calls.count += 1
        return str(conn.getHostname())  # libvirt-python ships no type hints

    @staticmethod
    def _host_uuid(conn: Any, calls: CallCounter) -> str | None:
        """libvirt's host uuid (`<capabilities><host><uuid>`: SMBIOS or host_uuid in libvirtd.conf)."""
        try:
            calls.count += 1
            text = ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
        except (libvirt.libvirtError, ET.ParseError):
            return None
        return text.strip() if text and text.strip() else None

    def call(self, link: Connection, calls: CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """One remote call: counted, and a broken link surfaces as ConnectionLost."""
        calls.count += 1
        try:
            return fn(*args)
        except libvirt.libvirtError as error:
            if error.get_error_code() in CONNECTION_ERRORS or not self.alive(link):
                raise ConnectionLost(f"{getattr(fn, '__name__', 'call')}: {error}") from error
            raise

    def whole_poll_call(self, link: Connection, calls: CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """A call the poll cannot do without: any libvirt error fails the poll with a clear reason."""
        try:
            return self.call(link, calls, fn, *args)
        except libvirt.libvirtError as error:
            name = getattr(fn, "__name__", "call")
            raise SourceError("libvirt_error", f"libvirt {redact_uri(self.uri)}: {name} failed: {error}") from None
