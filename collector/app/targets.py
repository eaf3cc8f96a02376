"""Per-target scheduling of a discovered source (issue 16, docs/discovery.md).

A source with `discover:` is one `TargetFleet` (collector/sources/discovery/fleet.py) with many
targets. `FleetRunner` replaces the one-job-per-source schedule for it:

* each target is polled once per interval at its own offset, a hash of (source, target) — the way
  Prometheus spreads scrapes — so 1000 hosts never fire at once and a target keeps its slot;
* at most `max_concurrency` polls run at the same time, on a bounded pool; each target's Source (and
  its libvirt connection) lives as long as the target, so connections are reused between polls;
* a target whose previous poll has not returned is not polled again (counted as `still_running`
  against that target only); a slow or dead host costs one worker, never another target's slot;
* discovery is re-run every `refresh_interval` (file_sd) or whenever the OpenStack source's frames
  change (Nova); new targets get their slot in the current interval, gone ones stop;
* the merged frames of all targets are published to the Estate at most every `publish_period`, and
  to history (through `on_success`) once per interval: the store sums pools per append, so it must
  see every target of the source in one append, like any other source's poll.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from collector.contract.schema import FrameSet
from collector.estate import Estate
from collector.sources.base import PollResult, SourceError
from collector.sources.discovery.fleet import TargetFleet

log = logging.getLogger(__name__)

OnSuccess = Callable[[str, PollResult, datetime], None]


def slot_offset(source: str, identity: str, interval: float) -> float:
    """Seconds into each interval at which this target is polled: stable per (source, target), uniform."""
    return zlib.crc32(f"{source}\0{identity}".encode()) / 2**32 * interval


def estate_inventory(estate: Estate, source_name: str) -> Callable[[], FrameSet | None]:
    """The latest good frames of `source_name` (the OpenStack source discovery reads), or None."""

    def inventory() -> FrameSet | None:
        for status in estate.snapshot().statuses:
            if status.name == source_name:
                return status.frames or None
        return None

    return inventory


class FleetRunner:
    """Drives one TargetFleet: discovery refreshes, spread per-target polls, publication to the Estate."""

    def __init__(
        self,
        fleet: TargetFleet,
        estate: Estate,
        interval: float,
        timeout: float,
        on_success: OnSuccess | None = None,
        publish_period: float | None = None,
    ):
        self.source = fleet
        self.fleet = fleet
        self.estate = estate
        self.interval = interval
        self.timeout = timeout
        """Each target poll's limit; enforced by the target's own Source (its settings carry the source's timeout)."""
        self.on_success = on_success
        # Merging 1000 targets' frames costs ~0.5 s of CPU: twice per interval keeps data at most half an
        # interval older than its poll, at a bounded cost.
        self.publish_period = publish_period if publish_period is not None else max(1.0, min(30.0, interval / 2))
        self._next_history = time.monotonic() + interval
        self.refresh_period = min(interval, fleet.discover.refresh_interval.total_seconds())
        self._pool = ThreadPoolExecutor(
            max_workers=fleet.discover.max_concurrency, thread_name_prefix=f"poll-{fleet.name}"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        """(next poll time, target), a min-heap; entries whose time no longer matches `_due` are stale."""
        self._dirty = threading.Event()
        self._running = 0
        self.inflight_peak = 0
        """Most polls running at the same time (queued ones not counted): at most max_concurrency."""
        self.started_at: list[tuple[str, float]] = []
        """(target, monotonic start) of every poll; kept for the last few intervals (bench, tests)."""

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FleetRunner:
        self._thread = threading.Thread(target=self._loop, name=f"fleet-{self.fleet.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.fleet.close()

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_refresh = next_publish = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                self.refresh(now)
                next_refresh = now + self.refresh_period
            self._submit_due(now)
            if self._dirty.is_set() and now >= next_publish:
                self._dirty.clear()
                self.publish()
                next_publish = now + self.publish_period
            with self._lock:
                first_due = self._heap[0][0] if self._heap else next_refresh
            upcoming = min(next_refresh, next_publish if self._dirty.is_set() else next_refresh, first_due)
            self._stop.wait(min(max(upcoming - time.monotonic(), 0.01), 0.5))
        self.publish()

    def refresh(self, now: float | None = None) -> bool:
        """Re-run discovery; new targets get their slot in the current interval. False if it failed."""
        now = time.monotonic() if now is None else now
        try:
            changes = self.fleet.refresh()
        except SourceError as error:
            self.estate.record_failure(self.fleet.name, error.reason, str(error), datetime.now(UTC), 0.0)
            log.warning("source %s: discovery failed (%s): %s", self.fleet.name, error.reason, error)
            return False
        active = set(self.fleet.active())
        cycle = now - now % self.interval
        with self._lock:
            for identity in active - self._due.keys():
                due = cycle + slot_offset(self.fleet.name, identity, self.interval)
                due = due if due >= now else due + self.interval
                self._due[identity] = due
                heapq.heappush(self._heap, (due, identity))
            for identity in self._due.keys() - active:
                del self._due[identity]  # its heap entry is now stale and dropped when it comes up
        if changes.added or changes.removed or changes.relabelled:
            self._dirty.set()
        return True

    def _submit_due(self, now: float) -> None:
        due: list[str] = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                at, identity = heapq.heappop(heap)
                if self._due.get(identity) != at:
                    continue  # the target left (or was re-added with another slot)
                following = at + self.interval * max(1, int((now - at) // self.interval) + 1)
                self._due[identity] = following
                heapq.heappush(heap, (following, identity))
                due.append(identity)
        for identity in due:
            with self._lock:
                busy = identity in self._inflight
                if not busy:
                    self._inflight.add(identity)
            if busy:
                log.debug("source %s: target %s: previous poll still running; skipped", self.fleet.name, identity)
                self._count_still_running(identity)
                continue
            self._pool.submit(self._poll_one, identity)

    def _count_still_running(self, identity: str) -> None:
        self.fleet.record_failure(identity, "still_running")
        self._dirty.set()

    def _poll_one(self, identity: str) -> None:
        with self._lock:
            self._running += 1
            self.inflight_peak = max(self.inflight_peak, self._running)
        started = time.monotonic()
        self.started_at.append((identity, started))
        if len(self.started_at) > 50_000:
            del self.started_at[:10_000]
        when = datetime.now(UTC)
        try:
            self.fleet.poll_target(identity, when)
        except SourceError as error:
            log.info("source %s: target %s failed (%s): %s", self.fleet.name, identity, error.reason, error)
        except Exception:
            log.exception("source %s: target %s: unexpected error", self.fleet.name, identity)
        finally:
            with self._lock:
                self._inflight.discard(identity)
                self._running -= 1
            self._dirty.set()

    def publish(self) -> None:
        """Hand the merged frames of all targets (and the `targets` frame) to the Estate."""
        started = time.monotonic()
        when = datetime.now(UTC)
        result = self.fleet.merged()
        self.estate.record_success(self.fleet.name, result.frames, when, time.monotonic() - started, result.skipped)
        if self.on_success is not None and started >= self._next_history:
            self._next_history = started + self.interval
            self.on_success(self.fleet.name, result, when)


def is_fleet(source: Any) -> bool:
    """A source whose targets are discovered (libvirt `discover:`, kubernetes `contexts:`)."""
    return isinstance(source, TargetFleet)


def start_fleet(fleet: TargetFleet, estate: Estate, config: Any, on_success: OnSuccess | None) -> FleetRunner:
    """Wire a discovered source into the daemon: its inventory from the Estate, then its own schedule."""
    if fleet.discover.from_ is not None:
        fleet.set_inventory(estate_inventory(estate, fleet.discover.from_))
    return FleetRunner(
        fleet, estate, config.interval.total_seconds(), config.effective_timeout.total_seconds(), on_success
    ).start()


def split_discovered(runners: list[Any], estate: Estate) -> tuple[list[Any], list[Any]]:
    """For one-off collection: (plain runners, discovered ones), the latter wired to the Estate's inventory.

    The discovered ones must run after the plain ones: Nova discovery reads the OpenStack source's poll.
    """
    plain, fleets = [], []
    for runner in runners:
        if isinstance(runner.source, TargetFleet):
            if runner.source.discover.from_ is not None:
                runner.source.set_inventory(estate_inventory(estate, runner.source.discover.from_))
            fleets.append(runner)
        else:
            plain.append(runner)
    return plain, fleets


# -- fleet-scale CLI: `check-config --show-targets`, `once --source NAME --target HOST` -------------------


def _inventory_now(config: Any, fleet: TargetFleet) -> None:
    """Give a Nova-discovered fleet the frames of one fresh poll of its OpenStack source."""
    from collector.sources import create_source

    name = fleet.discover.from_
    if name is None:
        return
    openstack = next((s for s in config.sources if s.name == name), None)
    if openstack is None:
        raise SourceError("no_inventory", f"source {fleet.name}: discover.from names {name!r}, which is not a source")
    source = create_source(openstack)
    try:
        frames = source.checked_poll(datetime.now(UTC)).frames
    finally:
        source.close()
    fleet.set_inventory(lambda: frames)


def target_rows(config: Any) -> list[dict[str, str]]:
    """What the daemon would poll: one row per target of every libvirt source (discovered or listed).

    Discovery runs for real (file_sd files are read, the OpenStack source is polled once); a source whose
    discovery fails gets one row with the error instead of targets.
    """
    from collector.sources import create_source

    rows: list[dict[str, str]] = []
    for source_config in config.sources:
        if getattr(source_config, "discover", None) is None and getattr(source_config, "contexts", None) is None:
            if source_config.kind == "libvirt":
                rows.append(
                    {
                        "source": source_config.name,
                        "target": "-",
                        "uri": _shown(source_config.uri),
                        "pool": source_config.pool,
                        "state": "listed",
                    }
                )
            continue
        try:
            fleet = create_source(source_config)
            assert isinstance(fleet, TargetFleet)
            _inventory_now(config, fleet)
            targets, duplicates = fleet.discovered()
        except SourceError as error:
            rows.append(
                {"source": source_config.name, "target": "-", "uri": "-", "pool": "-", "state": f"ERROR: {error}"}
            )
            continue
        for path, problem in sorted(fleet.file_sd_errors.items()):
            rows.append({"source": fleet.name, "target": "-", "uri": path, "pool": "-", "state": f"ERROR: {problem}"})
        for target in targets:
            rows.append(
                {
                    "source": fleet.name,
                    "target": target.identity,
                    "uri": _shown(target.uri),
                    "pool": target.pool,
                    "state": "disabled" if target.disabled else "active",
                }
            )
        for identity in duplicates:
            rows.append(
                {"source": fleet.name, "target": identity, "uri": "-", "pool": "-", "state": "duplicate (ignored)"}
            )
    return rows


def _shown(uri: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def format_targets(rows: list[dict[str, str]]) -> str:
    columns = ("source", "target", "pool", "state", "uri")
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def poll_one(config: Any, source_name: str, target: str | None) -> tuple[Estate, str | None]:
    """Poll one source (or one target of a discovered source) once; (estate with the outcome, error or None)."""
    from collector.sources import create_source

    source_config = next((s for s in config.sources if s.name == source_name), None)
    if source_config is None:
        names = ", ".join(s.name for s in config.sources) or "none"
        return Estate(), f"no source named {source_name!r} (sources: {names})"
    estate = Estate()
    estate.add_source(source_config.name, source_config.kind, source_config.interval)
    source = create_source(source_config)
    when = datetime.now(UTC)
    started = time.monotonic()
    try:
        if target is None:
            result = source.checked_poll(when)
        elif not isinstance(source, TargetFleet):
            return estate, f"source {source_name!r} has no discovered targets (--target needs `discover:`)"
        else:
            _inventory_now(config, source)
            source.refresh()
            if target not in source.active():
                known = source.active()
                return estate, (
                    f"source {source_name!r} has no target {target!r} "
                    f"({len(known)} discovered, e.g. {', '.join(known[:5]) or 'none'})"
                )
            source.poll_target(target, when)
            result = source.merged(when)
    except SourceError as error:
        estate.record_failure(source_name, error.reason, str(error), when, time.monotonic() - started)
        return estate, f"{error.reason}: {error}"
    finally:
        source.close()
    estate.record_success(
        source_name, result.frames, when, time.monotonic() - started, result.skipped, result.api_calls
    )
    return estate, None
