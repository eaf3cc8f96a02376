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
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt

from collector.sources.base import PollResult, Source, SourceError
from collector.sources.libvirt.connection import (
    CallCounter,
    Connection,
    ConnectionLost,
    Connector,
    ensure_event_loop,
    redact_uri,
)
from collector.sources.libvirt.frames import DomainFacts, DomainRow, NodeFacts, build_frames, typed_frame
from collector.sources.libvirt.nova_metadata import (
    GIB,
    KIB,
    MIB,
    NAN,
    DomainDefinition,
    NovaMetadata,
    parse_domain_xml,
    parse_nova_metadata,
)
from collector.sources.libvirt.stats import (
    STATS_GROUPS,
    STATS_NOWAIT,
    UNSUPPORTED_ERRORS,
    CpuSample,
    classify_domain_error,
    cpu_rate,
    guest_memory_used,
    node_busy_nanoseconds,
)

if TYPE_CHECKING:
    from collector.sources.libvirt.settings import LibvirtSourceConfig

# Names importable from here before the module was split by concern (tests, bench, other code).
__all__ = [
    "GIB",
    "KIB",
    "MIB",
    "NAN",
    "CpuSample",
    "DomainDefinition",
    "LibvirtSource",
    "NovaMetadata",
    "classify_domain_error",
    "cpu_rate",
    "ensure_event_loop",
    "guest_memory_used",
    "node_busy_nanoseconds",
    "parse_domain_xml",
    "parse_nova_metadata",
    "redact_uri",
    "typed_frame",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _CachedDefinition:
    definition: DomainDefinition
    facts: DomainFacts
    dom_id: int
    expires_at: float


class LibvirtSource(Source):
    """Hypervisor capacity and domains from one libvirt URI (see the module docstring)."""

    kind = "libvirt"
    config: LibvirtSourceConfig

    reconnect_backoff_max = 300.0
    """Longest wait between reconnect attempts to a dead URI, in seconds."""
    definition_max_age = 3600.0
    """Re-read a cached domain XML after about this long (±25 %), to catch in-place redefinitions."""
    deadline_fraction = 0.9
    """The poll's wall deadline, as a fraction of `timeout`: per-domain work stops there, so the poll
    ends with its own `timeout` error before the scheduler abandons it (and the next poll is not
    `still_running`). One libvirt call cannot be interrupted; the deadline is checked between calls."""

    def __init__(self, config: LibvirtSourceConfig, clock: Callable[[], float] = time.monotonic):
        super().__init__(config)
        self._clock = clock
        self._lock = threading.Lock()
        self._connector = Connector(self.name, config, clock, lambda: self.reconnect_backoff_max)
        self._definitions: dict[str, _CachedDefinition] = {}
        self._cpu_samples: dict[str, CpuSample] = {}
        self._node_cpu_sample: tuple[CpuSample, int] | None = None
        """Host busy-time sample and the counters' total at that moment (for the host CPU rate)."""
        self._deadline = float("inf")
        """This poll's wall deadline on `clock` (see `_check_deadline`)."""

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def uri(self) -> str:
        return self.config.uri

    @property
    def connect_attempts(self) -> int:
        """How many times a connection was opened (exposed for tests and diagnostics)."""
        return self._connector.connect_attempts

    @property
    def _link(self) -> Connection | None:
        return self._connector.link

    def close(self) -> None:
        # A poll stuck in a libvirt call must not block shutdown or a config reload forever.
        locked = self._lock.acquire(timeout=5)
        try:
            self._drop_connection("source closed")
        finally:
            if locked:
                self._lock.release()

    def _drop_connection(self, why: str) -> None:
        self._node_cpu_sample = None
        self._connector.drop(why)

    # ----------------------------------------------------------------------------- polling

    def _call(self, link: Connection, calls: CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """One remote call, counted; a broken link surfaces as ConnectionLost (see Connector.call)."""
        return self._connector.call(link, calls, fn, *args)

    def _check_deadline(self, doing: str, done: int, total: int) -> None:
        """Fail the poll with `timeout` once its deadline has passed (called between per-domain calls).

        What was read so far is kept (the XML cache), so the next poll carries on from there.
        """
        if self._clock() > self._deadline:
            raise SourceError(
                "timeout",
                f"libvirt {redact_uri(self.uri)}: poll deadline ({self.deadline_fraction:.0%} of timeout) passed "
                f"while {doing} ({done} of {total} done; what was read is kept for the next poll)",
            )

    def _whole_poll_call(self, link: Connection, calls: CallCounter, fn: Callable[..., T], *args: Any) -> T:
        """A call the poll cannot do without: any libvirt error fails the poll (Connector.whole_poll_call)."""
        return self._connector.whole_poll_call(link, calls, fn, *args)

    def poll(self, now: datetime) -> PollResult:
        # The scheduler never overlaps polls of one source, but it may give up on a hung one and
        # start the next: that one must fail clearly instead of queueing behind the stuck call.
        if not self._lock.acquire(timeout=self._connector.connect_timeout()):
            raise SourceError(
                "poll_overlap", f"libvirt {redact_uri(self.uri)}: the previous poll is still stuck in a libvirt call"
            )
        try:
            return self._poll_locked(now)
        finally:
            self._lock.release()

    def _poll_locked(self, now: datetime) -> PollResult:
        """Connect if needed and collect; one reconnect-and-retry when the link died since last time."""
        calls = CallCounter()
        self._deadline = self._clock() + self.deadline_fraction * self.config.effective_timeout.total_seconds()
        link = self._connector.ensure(calls, self._drop_connection)
        try:
            return self._collect(link, now, calls)
        except ConnectionLost as lost:
            # libvirtd restarted or the link broke since the last poll: one fresh try now.
            self._drop_connection(str(lost))
            first_error = str(lost)
        try:
            link = self._connector.ensure(calls, self._drop_connection)
            return self._collect(link, now, calls)
        except ConnectionLost as lost:
            self._drop_connection(str(lost))
            raise SourceError(
                "connection_lost",
                f"libvirt {redact_uri(self.uri)}: connection lost ({first_error}); reconnected, "
                f"and lost again ({lost})",
            ) from None
        except SourceError as error:
            raise SourceError(error.reason, f"{error} (after the connection was lost: {first_error})") from None

    def _collect(self, link: Connection, now: datetime, calls: CallCounter) -> PollResult:
        skipped: Counter[str] = Counter()
        notes: list[str] = []
        rows, kept = self._domain_stats(link, calls, skipped, notes)
        stats_at = self._clock()
        self._attach_definitions(link, rows, kept, calls, skipped)
        node = self._node_facts(link, calls)
        notes.extend(node.notes)
        frames, self._cpu_samples = build_frames(
            self.config, self.name, link, now, rows, node, stats_at, self._cpu_samples
        )
        return PollResult(frames=frames, skipped=skipped, api_calls=calls.count, notes=notes)

    def _domain_stats(
        self, link: Connection, calls: CallCounter, skipped: Counter[str], notes: list[str]
    ) -> tuple[dict[str, DomainRow], set[str]]:
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
                if error.get_error_code() not in UNSUPPORTED_ERRORS:
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
        rows = {dom.UUIDString(): DomainRow(dom, dom.ID(), stats) for dom, stats in records}
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
        link: Connection,
        domains: list[Any],
        calls: CallCounter,
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
        for done, dom in enumerate(domains):
            self._check_deadline("reading domain stats one by one", done, len(domains))
            try:
                records.extend(self._call(link, calls, link.conn.domainListGetStats, [dom], STATS_GROUPS, flags))
            except libvirt.libvirtError as error:
                reason = classify_domain_error(error)
                skipped[reason] += 1
                log.debug("libvirt %s: skipping domain %s: %s", self.name, dom.name(), error)
        return records

    def _attach_definitions(
        self,
        link: Connection,
        rows: dict[str, DomainRow],
        kept: set[str],
        calls: CallCounter,
        skipped: Counter[str],
    ) -> None:
        """Give every row its definition's facts: from the cache, or read now for new/restarted domains."""
        now = self._clock()
        definitions = self._definitions
        for index, (uuid, row) in enumerate(list(rows.items())):
            cached = definitions.get(uuid)
            if cached is not None and cached.dom_id == row.dom_id and cached.expires_at > now:
                row.facts = cached.facts
                continue
            dom = row.dom
            self._check_deadline("reading domain definitions", index, len(rows))
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
            facts = DomainFacts.of(uuid, definition)
            definitions[uuid] = _CachedDefinition(definition, facts, row.dom_id, expires)
            row.facts = facts
        for row in rows.values():
            row.dom = None  # done with the domain objects: free them now
        # Forget domains that are gone (undefined or migrated away), so the caches stay bounded.
        if len(definitions) > len(rows):
            for uuid in definitions.keys() - rows.keys() - kept:
                del definitions[uuid]

    def _node_facts(self, link: Connection, calls: CallCounter) -> NodeFacts:
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
                if error.get_error_code() in UNSUPPORTED_ERRORS:
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
                if error.get_error_code() in UNSUPPORTED_ERRORS:
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
        return NodeFacts(cpus=cpus, memory_bytes=memory, cpu_used=cpu_used, memory_used=memory_used, notes=notes)
