"""The hypervisor source: one libvirt connection per configured URI, turned into frames.

Per poll, on a long-lived read-only connection:

* ONE `getAllDomainStats` call: every domain, active and inactive (what `listAllDomains(0)` lists,
  never the 512-capped `listDomainsID`), with only the stats groups needed (state, cpu-total,
  balloon, vcpu) and `VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT`, so a domain whose job lock is held
  by a migration or a slow shutdown answers with partial stats instead of blocking the poll. If that
  call fails on a live link (one bad domain can do that), `listAllDomains(0)` + one stats call per
  domain, skipping (and counting) the ones that fail;
* the domain XML (name, vCPUs, memory, Nova `nova:instance` metadata) only for domains not seen
  before or restarted since (cached per uuid + domain id; a restart or Nova resize gives a new id);
* node facts: `getInfo`, `getCPUMap`, `getMemoryStats`, `getCPUStats` (each where supported).

Steady state on any number of domains this is five remote calls. A domain that vanishes, is locked
or errors is skipped and counted in `PollResult.skipped`; only a dead connection fails the poll.
Guest memory in use comes from balloon stats only (the guest's virtio_balloon driver with a stats
period); the balloon *size* is an allocation, never reported as usage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

import libvirt
import numpy as np
import pandas as pd

from collector.contract.schema import BOOL, CAPACITY, CONSUMERS, FLOAT, HOSTS, STRING, TIMESTAMP, FrameSchema
from collector.sources.base import PollResult, Source, SourceError

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024**2
GIB = 1024**3
NAN = math.nan

NOVA_NAMESPACES = {
    "http://openstack.org/xmlns/libvirt/nova/1.1": "1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0": "1.0",
}
STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)
STATS_NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT

# virDomainState -> the lowercase names virsh prints (and the `state` column carries).
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# Errors that mean the link to libvirtd is gone (as opposed to a problem with one request). A
# VIR_ERR_SYSTEM_ERROR is ambiguous ("Cannot write data: Broken pipe" on the link, but also "Unable to
# read from monitor" for one dying guest): it counts as a lost link only if the connection is not alive.
_CONNECTION_ERRORS = {libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN}
_UNSUPPORTED_ERRORS = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Pure helpers (parsing and arithmetic), unit-tested directly.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NovaMetadata:
    """What Nova's libvirt driver writes into `<metadata><nova:instance>` (namespace 1.0 or 1.1)."""

    namespace_version: str
    instance_name: str | None
    flavor: str | None
    vcpus: int | None
    memory_mib: int | None
    disk_gib: int | None
    ephemeral_gib: int | None
    swap_mib: int | None
    project_id: str | None
    project_name: str | None
    user_id: str | None
    root_type: str | None
    """`image` (local root disk) or `volume` (boot from volume: the root disk is not on this host)."""

    @property
    def local_disk_bytes(self) -> float:
        """Local disk the flavor claims on this host (root unless booted from volume, + ephemeral + swap).

        This is what Placement counts as DISK_GB for the instance; NaN when the flavor has no sizes.
        """
        if self.disk_gib is None and self.ephemeral_gib is None and self.swap_mib is None:
            return NAN
        root = 0 if self.root_type == "volume" else (self.disk_gib or 0)
        return float((root + (self.ephemeral_gib or 0)) * GIB + (self.swap_mib or 0) * MIB)


@dataclass(frozen=True)
class DomainDefinition:
    """The parts of a domain's XML the source needs; cached per uuid while the domain id is unchanged."""

    uuid: str
    name: str
    vcpus: int | None
    max_memory_bytes: float
    current_memory_bytes: float
    nova: NovaMetadata | None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


_MEMORY_UNITS = {
    "b": 1, "bytes": 1, "k": KIB, "kib": KIB, "kb": 1000, "m": MIB, "mib": MIB, "mb": 1000**2,
    "g": GIB, "gib": GIB, "gb": 1000**3, "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}


def _memory_bytes(element: ET.Element | None) -> float:
    """`<memory unit='KiB'>N</memory>` in bytes (libvirt's default unit is KiB); NaN if absent."""
    if element is None or element.text is None:
        return NAN
    value = _int(element.text)
    factor = _MEMORY_UNITS.get(element.get("unit", "KiB").lower())
    if value is None or factor is None:
        return NAN
    return float(value * factor)


def parse_nova_metadata(metadata: ET.Element | None) -> NovaMetadata | None:
    """The `nova:instance` element under a domain's `<metadata>` (1.1 preferred over 1.0)."""
    if metadata is None:
        return None
    for namespace, version in NOVA_NAMESPACES.items():
        instance = metadata.find(f"{{{namespace}}}instance")
        if instance is None:
            continue
        ns = f"{{{namespace}}}"
        flavor = instance.find(f"{ns}flavor")
        owner = instance.find(f"{ns}owner")
        project = owner.find(f"{ns}project") if owner is not None else None
        user = owner.find(f"{ns}user") if owner is not None else None
        root = instance.find(f"{ns}root")

        def flavor_int(tag: str, flavor: ET.Element | None = flavor, ns: str = ns) -> int | None:
            return _int(flavor.findtext(f"{ns}{tag}")) if flavor is not None else None

        return NovaMetadata(
            namespace_version=version,
            instance_name=instance.findtext(f"{ns}name"),
            flavor=flavor.get("name") if flavor is not None else None,
            vcpus=flavor_int("vcpus"),
            memory_mib=flavor_int("memory"),
            disk_gib=flavor_int("disk"),
            ephemeral_gib=flavor_int("ephemeral"),
            swap_mib=flavor_int("swap"),
            project_id=project.get("uuid") if project is not None else None,
            project_name=project.text if project is not None else None,
            user_id=user.get("uuid") if user is not None else None,
            root_type=root.get("type") if root is not None else None,
        )
    return None


def parse_domain_xml(xml: str) -> DomainDefinition:
    """Read name, uuid, vCPUs, memory and Nova metadata from `virDomainGetXMLDesc` output."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    vcpus = None
    if vcpu is not None:
        vcpus = _int(vcpu.get("current")) or _int(vcpu.text)
    return DomainDefinition(
        uuid=(root.findtext("uuid") or "").strip(),
        name=(root.findtext("name") or "").strip(),
        vcpus=vcpus,
        max_memory_bytes=_memory_bytes(root.find("memory")),
        current_memory_bytes=_memory_bytes(root.find("currentMemory")),
        nova=parse_nova_metadata(root.find("metadata")),
    )


def guest_memory_used(stats: dict[str, Any]) -> float:
    """Bytes the guest uses, from balloon stats only; NaN when the guest does not report them.

    Preferred: `available - usable` (MemTotal - MemAvailable: page cache the guest could drop is not
    "used"); else `current - unused` (balloon size - MemFree, counts cache as used). The balloon size
    alone (`balloon.current`, what `virDomainGetInfo` calls memory) is an allocation, never usage.
    """
    if stats.get("balloon.last-update") == 0:
        return NAN  # the guest never sent a stats update: any figure would be stale/invented
    available, usable = stats.get("balloon.available"), stats.get("balloon.usable")
    if available is not None and usable is not None:
        return float(max(available - usable, 0) * KIB)
    current, unused = stats.get("balloon.current"), stats.get("balloon.unused")
    if current is not None and unused is not None:
        return float(max(current - unused, 0) * KIB)
    return NAN


class CpuSample(NamedTuple):
    """A cumulative CPU-time reading of one domain (or the node) at a monotonic instant.

    A named tuple rather than a frozen dataclass: one is made per running domain per poll, and a
    frozen dataclass costs several times more to construct.
    """

    at: float
    """time.monotonic() when read."""
    nanoseconds: int
    incarnation: int
    """Domain id (changes on every start); a different id means the counter started over."""


def cpu_rate(previous: CpuSample | None, current: CpuSample | None) -> float:
    """Cores used between two samples; NaN on the first sample, after a counter reset or restart.

    A reset (counter went down, or the domain was restarted in between) gives NaN rather than a
    guess: the CPU spent before the restart is unknown, and the next poll has a clean rate again.
    """
    if previous is None or current is None:
        return NAN
    elapsed = current.at - previous.at
    delta = current.nanoseconds - previous.nanoseconds
    if current.incarnation != previous.incarnation or delta < 0 or elapsed <= 0:
        return NAN
    return delta / 1e9 / elapsed


def node_busy_nanoseconds(cpu_stats: dict[str, int]) -> tuple[int, int]:
    """(busy, total) from `virNodeGetCPUStats` (kernel, user, idle, iowait ... in ns)."""
    total = sum(int(v) for v in cpu_stats.values())
    idle = int(cpu_stats.get("idle", 0)) + int(cpu_stats.get("iowait", 0))
    return total - idle, total


def redact_uri(uri: str) -> str:
    """A URI fit for logs: a password in the user part (never needed by libvirt) is masked."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


_STRING_DTYPE = pd.StringDtype()  # the contract's "string" (a dtype object: no lookup by name per column)


def typed_frame(
    schema: FrameSchema, columns: dict[str, Any], rows: int, optional: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """A frame in the contract's column order and dtypes from per-column values, built column-wise.

    `FrameSchema.build` converts row by row through generic casts, which costs ~100 ms on a
    1000-domain host; here each column becomes its array in one step. Scalars are broadcast; missing
    nullable columns are null. Keys the schema does not have are an error, except those in `optional`
    (columns proposed for the contract, dropped until it has them). No validation here:
    `Source.checked_poll` validates what the poll returns.
    """
    unknown = columns.keys() - set(schema.column_names) - optional
    if unknown:
        raise ValueError(f"{schema.name}: no such column(s) in the contract: {', '.join(sorted(unknown))}")
    data: dict[str, Any] = {}
    for column in schema.columns:
        value = columns.get(column.name)
        if isinstance(value, list | tuple | np.ndarray):
            if len(value) != rows:
                raise ValueError(f"{schema.name}.{column.name}: {len(value)} values for {rows} rows")
        elif column.dtype == TIMESTAMP and value is not None and rows:
            # One instant for every row: converted once, not once per row.
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            data[column.name] = pd.DatetimeIndex(np.full(rows, stamp.as_unit("ns").asm8)).tz_localize("UTC")
            continue
        else:
            value = [value] * rows
        if column.dtype == TIMESTAMP:
            data[column.name] = pd.DatetimeIndex(value, tz="UTC").as_unit("ns") if rows else pd.Series(dtype=TIMESTAMP)
        elif column.dtype == FLOAT:
            data[column.name] = np.asarray(value, dtype=np.float64)
        elif column.dtype == BOOL:
            data[column.name] = np.asarray(value, dtype=bool)
        elif column.dtype == STRING:
            data[column.name] = pd.array(value, dtype=_STRING_DTYPE)
        else:
            array = np.empty(rows, dtype=object)
            array[:] = value
            data[column.name] = array
    return pd.DataFrame(data, index=pd.RangeIndex(rows))


def classify_domain_error(error: libvirt.libvirtError) -> str:
    """`skipped` reason for a per-domain failure."""
    code = error.get_error_code()
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return "domain_vanished"
    message = str(error)
    if code in (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE) or (
        "state change lock" in message
    ):
        return "domain_locked"
    return "domain_error"


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
# The source
# --------------------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    """The link to libvirt died during a poll (internal: turned into a reconnect or a SourceError)."""


@dataclass
class _Connection:
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
class _CallCounter:
    count: int = 0


@dataclass(frozen=True)
class _DomainFacts:
    """What a domain's definition contributes to its consumers row, derived once per XML read.

    A warm poll copies these instead of re-deriving them (1000 domains x every poll).
    """

    name: str
    project: str | None
    flavor: str | None
    vcpus: int | None
    max_memory_bytes: float
    current_memory_bytes: float
    disk: float
    nova_instance_uuid: str | None

    @classmethod
    def of(cls, uuid: str, definition: DomainDefinition) -> _DomainFacts:
        nova = definition.nova
        return cls(
            name=definition.name or uuid,
            project=nova.project_id if nova else None,
            flavor=nova.flavor if nova else None,
            vcpus=definition.vcpus,
            max_memory_bytes=definition.max_memory_bytes,
            current_memory_bytes=definition.current_memory_bytes,
            disk=nova.local_disk_bytes if nova is not None else NAN,
            nova_instance_uuid=uuid if nova else None,
        )


@dataclass(slots=True)
class _DomainRow:
    dom: Any
    """The virDomain returned with the stats (used to read its XML when not cached)."""
    dom_id: int
    stats: dict[str, Any]
    facts: _DomainFacts | None = None


@dataclass
class _CachedDefinition:
    definition: DomainDefinition
    facts: _DomainFacts
    dom_id: int
    expires_at: float


@dataclass
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


@dataclass
class _NodeFacts:
    cpus: int
    memory_bytes: float
    cpu_used: float
    memory_used: float
    notes: list[str] = field(default_factory=list)


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "I/O error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file (libvirtd went away)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


class LibvirtSource(Source):
    """Hypervisor capacity and domains from one libvirt URI (see the module docstring)."""

    kind = "libvirt"

    reconnect_backoff_max = 300.0
    """Longest wait between reconnect attempts to a dead URI, in seconds."""
    definition_max_age = 3600.0
    """Re-read a cached domain XML after about this long (±25 %), to catch in-place redefinitions."""

    def __init__(self, config: Any, clock: Callable[[], float] = time.monotonic):
        super().__init__(config)
        self._clock = clock
        self._lock = threading.Lock()
        self._link: _Connection | None = None
        self._backoff = _Backoff()
        self._definitions: dict[str, _CachedDefinition] = {}
        self._cpu_samples: dict[str, CpuSample] = {}
        self._node_cpu_sample: tuple[CpuSample, int] | None = None
        """Host busy-time sample and the counters' total at that moment (for the host CPU rate)."""
        self.connect_attempts = 0
        """How many times a connection was opened (exposed for tests and diagnostics)."""

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def uri(self) -> str:
        return self.config.uri

    def close(self) -> None:
        # A poll stuck in a libvirt call must not block shutdown or a config reload forever.
        locked = self._lock.acquire(timeout=5)
        try:
            self._drop_connection("source closed")
        finally:
            if locked:
                self._lock.release()

    def _drop_connection(self, why: str) -> None:
        link, self._link = self._link, None
        self._node_cpu_sample = None
        if link is None:
            return
        log.info("libvirt %s: closing connection to %s (%s)", self.name, redact_uri(self.uri), why)
        with contextlib.suppress(libvirt.libvirtError):
            link.conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            link.conn.close()

    def _connect_timeout(self) -> float:
        return max(1.0, self.config.effective_timeout.total_seconds())

    def _ensure_connection(self, calls: _CallCounter) -> _Connection:
        link = self._link
        if link is not None:
            if link.closed_reason is None and self._alive(link):
                return link
            self._drop_connection(f"connection lost: {link.closed_reason or 'not alive'}")
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
            delay = min(interval * (2 ** (self._backoff.failures - 1) - 1), max(self.reconnect_backoff_max, interval))
            self._backoff.retry_at = self._clock() + delay
            raise
        self._backoff = _Backoff()
        self._link = link
        return link

    @staticmethod
    def _alive(link: _Connection) -> bool:
        try:
            return link.conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def _open(self, calls: _CallCounter) -> _Connection:
        """Open a read-only connection within the poll timeout (a silent peer must not hang us)."""
        ensure_event_loop()
        self.connect_attempts += 1
        uri, shown = self.uri, redact_uri(self.uri)
        timeout = self._connect_timeout()
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
            self.name, shown, link.driver, link.hostname, "on" if link.keepalive else "n/a",
        )
        return link

    def _describe(self, conn: Any, calls: _CallCounter) -> _Connection:
        calls.count += 1
        driver = conn.getType().upper()
        keepalive = False
        try:
            calls.count += 1
            keepalive = conn.setKeepAlive(self.config.keepalive_interval, self.config.keepalive_count) == 0
        except libvirt.libvirtError as error:
            # In-process drivers (test:///, qemu:/// when embedded) have no link to watch.
            log.debug("libvirt %s: no keepalive on %s: %s", self.name, redact_uri(self.uri), error)
        link = _Connection(conn=conn, driver=driver, hostname="", host_uuid=None, keepalive=keepalive)

        def closed(_conn: Any, reason: int, _opaque: Any) -> None:
            link.closed_reason = _CLOSE_REASONS.get(reason, f"reason {reason}")
            log.warning("libvirt %s: connection closed: %s", self.name, link.closed_reason)

        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(closed, None)
        link.hostname = self._hostname(conn, driver, calls)
        link.host_uuid = self._host_uuid(conn, calls)
        return link

    def _hostname(self, conn: Any, driver: str, calls: _CallCounter) -> str:
        if driver == "TEST":
            # The test driver answers getHostname() with the *collector's* host name; its node file
            # is the only identity a test node has, so the file name (compute-01.xml) names it.
            path = unquote(urlsplit(self.uri).path)
            stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            return stem or "test"
        calls.count += 1
        return conn.getHostname()

    @staticmethod
    def _host_uuid(conn: Any, calls: _CallCounter) -> str | None:
        """libvirt's host uuid (`<capabilities><host><uuid>`: SMBIOS or host_uuid in libvirtd.conf)."""
        try:
            calls.count += 1
            text = ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
        except (libvirt.libvirtError, ET.ParseError):
            return None
        return text.strip() if text and text.strip() else None

    # ----------------------------------------------------------------------------- polling

    def poll(self, now: datetime) -> PollResult:
        # The scheduler never overlaps polls of one source, but it may give up on a hung one and
        # start the next: that one must fail clearly instead of queueing behind the stuck call.
        if not self._lock.acquire(timeout=self._connect_timeout()):
            raise SourceError(
                "poll_overlap", f"libvirt {redact_uri(self.uri)}: the previous poll is still stuck in a libvirt call"
            )
        try:
            return self._poll_locked(now)
        finally:
            self._lock.release()

    def _poll_locked(self, now: datetime) -> PollResult:
        """Connect if needed and collect; one reconnect-and-retry when the link died since last time."""
        calls = _CallCounter()
        link = self._ensure_connection(calls)
        try:
            return self._collect(link, now, calls)
        except _ConnectionLost as lost:
            # libvirtd restarted or the link broke since the last poll: one fresh try now.
            self._drop_connection(str(lost))
            first_error = str(lost)
        try:
            link = self._ensure_connection(calls)
            return self._collect(link, now, calls)
        except _ConnectionLost as lost:
            self._drop_connection(str(lost))
            raise SourceError(
                "connection_lost",
                f"libvirt {redact_uri(self.uri)}: connection lost ({first_error}); reconnected, "
                f"and lost again ({lost})",
            ) from None
        except SourceError as error:
            raise SourceError(error.reason, f"{error} (after the connection was lost: {first_error})") from None

    def _call(self, link: _Connection, calls: _CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """One remote call: counted, and a broken link surfaces as _ConnectionLost."""
        calls.count += 1
        try:
            return fn(*args)
        except libvirt.libvirtError as error:
            if error.get_error_code() in _CONNECTION_ERRORS or not self._alive(link):
                raise _ConnectionLost(f"{getattr(fn, '__name__', 'call')}: {error}") from error
            raise

    def _whole_poll_call(self, link: _Connection, calls: _CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """A call the poll cannot do without: any libvirt error fails the poll with a clear reason."""
        try:
            return self._call(link, calls, fn, *args)
        except libvirt.libvirtError as error:
            name = getattr(fn, "__name__", "call")
            raise SourceError("libvirt_error", f"libvirt {redact_uri(self.uri)}: {name} failed: {error}") from None

    def _collect(self, link: _Connection, now: datetime, calls: _CallCounter) -> PollResult:
        skipped: Counter[str] = Counter()
        notes: list[str] = []
        rows, kept = self._domain_stats(link, calls, skipped, notes)
        stats_at = self._clock()
        self._attach_definitions(link, rows, kept, calls, skipped)
        node = self._node_facts(link, calls)
        notes.extend(node.notes)
        frames = self._frames(link, now, rows, node, stats_at)
        return PollResult(frames=frames, skipped=skipped, api_calls=calls.count, notes=notes)

    def _domain_stats(
        self, link: _Connection, calls: _CallCounter, skipped: Counter[str], notes: list[str]
    ) -> tuple[dict[str, _DomainRow], set[str]]:
        """Every domain with its stats: one `getAllDomainStats` call, or list + per domain if that fails.

        `getAllDomainStats` with no filter flag lists exactly what `listAllDomains(0)` lists (active
        and inactive; the same driver collection, never the 512-capped `listDomainsID`) and reads their
        stats in the same call, so one call replaces list + `domainListGetStats`: no second set of
        domain objects to create and free, no window in which a listed domain can vanish before its
        stats are read. Returns the rows by uuid, and the uuids whose cached state must be kept
        although they have no row (listed but skipped by the per-domain fallback, e.g. locked).
        """
        conn = link.conn
        records: list[tuple[Any, dict[str, Any]]] | None = None
        bulk_error: libvirt.libvirtError | None = None
        if link.nowait_supported:
            try:
                records = self._call(link, calls, conn.getAllDomainStats, STATS_GROUPS, STATS_NOWAIT)
            except libvirt.libvirtError as error:
                if error.get_error_code() not in _UNSUPPORTED_ERRORS:
                    bulk_error = error
                else:
                    link.nowait_supported = False  # libvirt < 4.5 or a driver without it
                    notes.append(f"libvirt {redact_uri(self.uri)}: stats NOWAIT flag rejected ({error}); without it")
        if records is None and bulk_error is None:
            try:
                records = self._call(link, calls, conn.getAllDomainStats, STATS_GROUPS, 0)
            except libvirt.libvirtError as error:
                bulk_error = error
        kept: set[str] = set()
        listed = 0
        if records is None:
            # One bad domain can fail the bulk call: list, then ask per domain and skip the ones that fail.
            domains = self._whole_poll_call(link, calls, conn.listAllDomains, 0)
            flags = STATS_NOWAIT if link.nowait_supported else 0
            assert bulk_error is not None
            records = self._stats_one_by_one(link, domains, calls, skipped, flags, notes, bulk_error)
            kept, listed = self._uuids(domains), len(domains)
        rows = {dom.UUIDString(): _DomainRow(dom, dom.ID(), stats) for dom, stats in records}
        vanished = listed - len(rows) - sum(skipped.values())
        if vanished > 0:  # listed, then missing from its (empty) per-domain answer
            skipped["domain_vanished"] += vanished
        return rows, kept

    @staticmethod
    def _uuids(domains: list[Any]) -> set[str]:
        """uuids of listed domains (local, no round trip); a domain freed meanwhile is left out."""
        uuids: set[str] = set()
        for dom in domains:
            with contextlib.suppress(libvirt.libvirtError):
                uuids.add(dom.UUIDString())
        return uuids

    def _stats_one_by_one(
        self,
        link: _Connection,
        domains: list[Any],
        calls: _CallCounter,
        skipped: Counter[str],
        flags: int,
        notes: list[str],
        bulk_error: libvirt.libvirtError,
    ) -> list[tuple[Any, dict[str, Any]]]:
        """The bulk call failed (one bad domain can do that): ask per domain, skip the ones that fail."""
        notes.append(
            f"libvirt {redact_uri(self.uri)}: bulk domain stats failed ({bulk_error}); read per domain instead"
        )
        records: list[tuple[Any, dict[str, Any]]] = []
        for dom in domains:
            try:
                records.extend(self._call(link, calls, link.conn.domainListGetStats, [dom], STATS_GROUPS, flags))
            except libvirt.libvirtError as error:
                reason = classify_domain_error(error)
                skipped[reason] += 1
                log.debug("libvirt %s: skipping domain %s: %s", self.name, dom.name(), error)
        return records

    def _attach_definitions(
        self,
        link: _Connection,
        rows: dict[str, _DomainRow],
        kept: set[str],
        calls: _CallCounter,
        skipped: Counter[str],
    ) -> None:
        """Give every row its definition's facts: from the cache, or read now for new/restarted domains."""
        now = self._clock()
        definitions = self._definitions
        for uuid, row in list(rows.items()):
            cached = definitions.get(uuid)
            if cached is not None and cached.dom_id == row.dom_id and cached.expires_at > now:
                row.facts = cached.facts
                continue
            dom = row.dom
            try:
                xml = self._call(link, calls, dom.XMLDesc, 0)
                definition = parse_domain_xml(xml)
            except libvirt.libvirtError as error:
                if cached is not None and cached.dom_id == row.dom_id:
                    row.facts = cached.facts  # a refresh failed; the old one is still right
                    continue
                del rows[uuid]
                skipped[classify_domain_error(error)] += 1
                log.debug("libvirt %s: skipping domain %s: %s", self.name, dom.name(), error)
                continue
            except ET.ParseError as error:
                del rows[uuid]
                skipped["domain_error"] += 1
                log.warning("libvirt %s: domain %s has unreadable XML: %s", self.name, dom.name(), error)
                continue
            expires = now + self.definition_max_age * random.uniform(0.75, 1.25)
            facts = _DomainFacts.of(uuid, definition)
            definitions[uuid] = _CachedDefinition(definition, facts, row.dom_id, expires)
            row.facts = facts
        for row in rows.values():
            row.dom = None  # done with the domain objects: free them now
        # Forget domains that are gone (undefined or migrated away), so the caches stay bounded.
        if len(definitions) > len(rows):
            for uuid in definitions.keys() - rows.keys() - kept:
                del definitions[uuid]

    def _node_facts(self, link: _Connection, calls: _CallCounter) -> _NodeFacts:
        conn = link.conn
        info = self._whole_poll_call(link, calls, conn.getInfo)
        notes: list[str] = []
        info_cpus, info_memory = int(info[2]), float(info[1]) * MIB
        cpus = info_cpus
        if link.driver != "TEST":
            # Online logical CPUs, as Nova counts them. (The test driver's CPU map is a fixed
            # fabrication unrelated to the node file; its getInfo() follows the file.)
            try:
                cpus = int(self._call(link, calls, conn.getCPUMap)[2])
            except libvirt.libvirtError as error:
                log.debug("libvirt %s: getCPUMap failed, using getInfo cpus: %s", self.name, error)
        memory, memory_used = info_memory, NAN
        if link.node_memory_stats:
            try:
                stats = self._call(link, calls, conn.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
            except libvirt.libvirtError as error:
                if error.get_error_code() in _UNSUPPORTED_ERRORS:
                    link.node_memory_stats = False
                log.debug("libvirt %s: node memory stats unavailable: %s", self.name, error)
            else:
                total = float(stats.get("total", 0)) * KIB
                if total > 0:
                    if abs(total - info_memory) > 0.05 * max(total, info_memory):
                        memory = total
                        if not link.memory_note_given:
                            link.memory_note_given = True
                            notes.append(
                                f"libvirt {link.hostname}: getInfo() memory {info_memory / GIB:.1f} GiB disagrees "
                                f"with getMemoryStats() total {total / GIB:.1f} GiB by more than 5 %; "
                                "using getMemoryStats() (getInfo sums NUMA cells and can miss hot-plugged memory)"
                            )
                    free = sum(float(stats.get(k, 0)) for k in ("free", "buffers", "cached")) * KIB
                    memory_used = max(total - free, 0.0)
        cpu_used = NAN
        if link.node_cpu_stats and link.driver != "TEST":  # test driver counters are constants
            try:
                cpu_stats = self._call(link, calls, conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
            except libvirt.libvirtError as error:
                if error.get_error_code() in _UNSUPPORTED_ERRORS:
                    link.node_cpu_stats = False
                log.debug("libvirt %s: node CPU stats unavailable: %s", self.name, error)
            else:
                busy, total_ns = node_busy_nanoseconds(cpu_stats)
                sample = CpuSample(self._clock(), busy, incarnation=0)  # a host reboot shows as busy going down
                previous = self._node_cpu_sample
                # Counters that did not advance at all are not a host's (an idle host still counts idle).
                if previous is not None and total_ns > previous[1]:
                    cpu_used = cpu_rate(previous[0], sample)
                self._node_cpu_sample = (sample, total_ns)
        return _NodeFacts(cpus=cpus, memory_bytes=memory, cpu_used=cpu_used, memory_used=memory_used, notes=notes)

    # ----------------------------------------------------------------------------- frames

    def _frames(
        self, link: _Connection, now: datetime, rows: dict[str, _DomainRow], node: _NodeFacts, stats_at: float
    ) -> dict[str, Any]:
        """The three frames, built column-wise: one tuple per domain, then one array per column."""
        cfg = self.config
        host = link.hostname
        allocated_cpu = 0.0
        allocated_memory = 0.0
        previous_samples = self._cpu_samples
        samples: dict[str, CpuSample] = {}
        states = DOMAIN_STATES
        records: list[tuple[Any, ...]] = []
        append = records.append
        for uuid, row in rows.items():
            stats, facts = row.stats, row.facts
            assert facts is not None
            get = stats.get
            state_code = get("state.state")
            state = states.get(state_code, "nostate") if state_code is not None else "nostate"
            active = row.dom_id != -1
            vcpus = get("vcpu.current", facts.vcpus)
            vcpus_f = float(vcpus) if vcpus is not None else NAN
            max_kib = get("balloon.maximum")
            memory = float(max_kib) * KIB if max_kib is not None else facts.max_memory_bytes
            cpu_ns = get("cpu.time")
            cpu_used = NAN
            if cpu_ns is not None and active:
                sample = CpuSample(stats_at, int(cpu_ns), row.dom_id)
                cpu_used = cpu_rate(previous_samples.get(uuid), sample)
                samples[uuid] = sample
            disk = facts.disk
            resources: dict[str, float] = (
                {"cpu": vcpus_f, "memory": memory} if disk != disk else {"cpu": vcpus_f, "memory": memory, "disk": disk}
            )  # disk != disk: NaN, the flavor has no disk sizes
            if active:
                if vcpus_f == vcpus_f:
                    allocated_cpu += vcpus_f
                if memory == memory:
                    allocated_memory += memory
            # Current balloon size: what the guest holds now (an allocation, not usage). Filled into
            # the `memory_balloon` column when the schema has it; ignored otherwise.
            current_kib = get("balloon.current")
            append((
                uuid, facts.name, state, active, facts.project, facts.flavor, vcpus_f, memory, disk, resources,
                cpu_used, guest_memory_used(stats) if active else NAN,
                float(cpu_ns) / 1e9 if cpu_ns is not None else NAN, facts.nova_instance_uuid,
                float(current_kib) * KIB if current_kib is not None else facts.current_memory_bytes,
            ))
        self._cpu_samples = samples
        n = len(records)
        names = ("id", "name", "state", "holds_capacity", "project", "flavor", "cpu", "memory", "disk", "resources",
                 "cpu_used", "memory_used", "cpu_time_seconds", "nova_instance_uuid", "memory_balloon")
        consumers: dict[str, Any] = (
            dict(zip(names, zip(*records, strict=True), strict=True)) if n else {name: [] for name in names}
        )
        consumers["libvirt_domain_uuid"] = consumers["id"]
        common = {"timestamp": now, "source": self.name, "layer": "hypervisor", "cloud": cfg.cloud,
                  "pool": cfg.pool, "host": host}
        consumer_frame = typed_frame(CONSUMERS, {**common, **consumers}, n, optional=frozenset({"memory_balloon"}))
        capacity_frame = typed_frame(CAPACITY, {
            **common, "scope": "host", "resource": ["cpu", "memory"],
            "capacity": [float(node.cpus), node.memory_bytes], "reserved": 0.0, "allocation_ratio": 1.0,
            "allocatable": [float(node.cpus), node.memory_bytes], "allocated": [allocated_cpu, allocated_memory],
            "used": [node.cpu_used, node.memory_used],
        }, 2)
        hosts_frame = typed_frame(HOSTS, {
            **common, "host_id": link.host_uuid, "schedulable": True, "ready": True,
        }, 1)
        return {"capacity": capacity_frame, "consumers": consumer_frame, "hosts": hosts_frame}
