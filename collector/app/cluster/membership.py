"""Who is in the shard set: static flags, a StatefulSet ordinal, or live Kubernetes Leases.

Lease membership: every collector holds its own Lease `<prefix>-collector-<identity>` and renews it
every third of a lease period, and looks at the others every tenth of one; the shard set is every
Lease of the group that changed within the last lease period, timed by this process's own monotonic
clock (the way client-go's leader election judges expiry). When a Lease changed between two looks,
its renewTime places the change inside that window; a skewed clock can move it only within the
window, never outside, so skew costs at most one look. A collector that dies
stops renewing, and within one lease period every survivor drops it and re-hashes its targets.
A collector that stops cleanly deletes its Lease so the others re-hash at their next look.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from collector.app.cluster.leases import (
    GROUP_LABEL,
    ROLE_LABEL,
    LeaseConflict,
    LeaseError,
    LeaseRecord,
    LeaseStore,
)
from collector.app.cluster.sharding import ordinal_from_hostname, static_members

log = logging.getLogger(__name__)

OnChange = Callable[[list[str]], None]
IDENTITY = "capacityd.io/identity"
SNAPSHOT_URL = "capacityd.io/snapshot-url"


class StaticMembership:
    """A fixed shard set "0".."N-1" and this process's shard in it."""

    def __init__(self, shard: int, total_shards: int):
        if not 0 <= shard < total_shards:
            raise ValueError(f"shard {shard} is outside 0..{total_shards - 1}")
        self.me = str(shard)
        self._members = static_members(total_shards)

    @classmethod
    def from_hostname(cls, hostname: str, total_shards: int) -> StaticMembership:
        return cls(ordinal_from_hostname(hostname), total_shards)

    def members(self) -> list[str]:
        return list(self._members)

    def start(self, on_change: OnChange) -> None:
        on_change(self.members())

    def stop(self) -> None:
        return None


class LeaseMembership:
    """Membership through one Lease per collector; `members()` is the live set, this one included."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        prefix: str = "capacityd",
        duration_seconds: int = 15,
        group: str = "collectors",
        clock: Callable[[], float] = time.monotonic,
        annotations: dict[str, str] | None = None,
    ):
        self.store = store
        self.me = identity
        self.prefix = prefix
        self.duration = duration_seconds
        self.labels = {GROUP_LABEL: prefix, ROLE_LABEL: group}
        self.clock = clock
        self._seen: dict[str, tuple[str, float]] = {}  # identity -> (resourceVersion, when it last changed)
        self._members: list[str] = [identity]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own: LeaseRecord | None = None
        self.errors_total = 0
        self._last_look = 0.0
        self._last_renew: float | None = None
        self.annotations = {IDENTITY: identity, **(annotations or {})}

    @property
    def lease_name(self) -> str:
        return f"{self.prefix}-collector-{self.me}"

    def members(self) -> list[str]:
        with self._lock:
            return list(self._members)

    def renew(self) -> None:
        """Renew (or create) our own Lease."""
        try:
            self._own = self.store.write(
                self.lease_name,
                self.me,
                self.duration,
                previous=self._own,
                transitions=0,
                labels=self.labels,
                annotations=self.annotations,
            )
        except LeaseConflict:
            self._own = self.store.get(self.lease_name)  # restarted with the same identity: take it over
            self._own = self.store.write(
                self.lease_name,
                self.me,
                self.duration,
                previous=self._own,
                transitions=0,
                labels=self.labels,
                annotations=self.annotations,
            )

    def live_records(self) -> list[LeaseRecord]:
        """The group's Leases that changed within their duration, by this process's clock."""
        now, wall = self.clock(), datetime.now(UTC)
        current: dict[str, tuple[str, float]] = {}
        live = []
        for record in self.store.list(self.labels):
            identity = record.annotations.get(IDENTITY) or record.holder
            if not identity:
                continue
            previous = self._seen.get(identity)
            if previous is None or previous[0] != record.resource_version:
                # it changed between our last look and now; its renewTime says when, if the clocks agree
                renewed = record.renew_time
                if renewed is not None and renewed.tzinfo is None:
                    renewed = renewed.replace(tzinfo=UTC)
                age = (wall - renewed).total_seconds() if renewed is not None else 0.0
                since_last_look = now - self._last_look if previous is not None else 0.0
                changed_at = now - min(max(age, 0.0), since_last_look)
            else:
                changed_at = previous[1]
            current[identity] = (record.resource_version, changed_at)
            if now - changed_at < record.duration_seconds or identity == self.me:
                live.append(record)
        self._seen = current
        self._last_look = now
        return live

    def observe(self) -> list[str]:
        """List the group's Leases and return the live members (sorted), this one included."""
        alive = {self.me} | {r.annotations.get(IDENTITY) or r.holder or "" for r in self.live_records()}
        members = sorted(alive - {""})
        with self._lock:
            self._members = members
        return members

    def tick(self) -> list[str]:
        """Renew every third of a lease period; look at the others at every tick (a tenth of one)."""
        if self._last_renew is None or self.clock() - self._last_renew >= self.duration / 3:
            started = self.clock()
            self.renew()
            self._last_renew = started
        return self.observe()

    def start(self, on_change: OnChange) -> None:
        def loop() -> None:
            last: list[str] | None = None
            period = max(0.1, self.duration / 10)
            while not self._stop.is_set():
                try:
                    members = self.tick()
                except (LeaseError, LeaseConflict) as error:
                    self.errors_total += 1
                    log.warning("membership: %s", error)
                    members = self.members()
                if members != last:
                    log.info("membership: shard set is now %s", members)
                    on_change(members)
                    last = members
                self._stop.wait(period)

        self._thread = threading.Thread(target=loop, name="cluster-membership", daemon=True)
        self._thread.start()

    def stop(self, *, leave: bool = True) -> None:
        """Stop renewing; with `leave`, delete our Lease so survivors re-hash at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.store.timeout + 1)
        if leave:
            try:
                self.store.delete(self.lease_name)
            except (LeaseError, LeaseConflict) as error:
                log.warning("membership: could not leave cleanly: %s", error)
