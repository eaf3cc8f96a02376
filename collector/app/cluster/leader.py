"""Exactly one active planner: leader election on one Lease, `<prefix>-planner`.

Same rules as client-go's elector (acquire an expired Lease, renew every retry period, expiry judged
by our own monotonic clock from the moment we saw the record last change), plus what the Python
client's elector leaves to its caller: the leader's *own* validity. `is_leader()` turns false at
`last successful renew start + renew_deadline`, and renew_deadline is shorter than the lease
duration, so a planner cut off from the API server stops serving before any standby may take the
Lease (the standby waits a whole lease duration after it last saw a change). `on_lost` fires from
the watchdog as soon as that happens, not at the next renewal attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from collector.app.cluster.leases import GROUP_LABEL, ROLE_LABEL, LeaseConflict, LeaseError, LeaseRecord, LeaseStore

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        prefix: str = "capacityd",
        duration_seconds: int = 15,
        on_started: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.me = identity
        self.name = f"{prefix}-planner"
        self.labels = {GROUP_LABEL: prefix, ROLE_LABEL: "planner"}
        self.duration = float(duration_seconds)
        self.renew_deadline = self.duration * 2 / 3
        self.retry_period = max(0.2, self.duration / 5)
        self.on_started = on_started
        self.on_lost = on_lost
        self.clock = clock
        self._record: LeaseRecord | None = None
        self._observed_at = 0.0
        self._valid_until = 0.0  # monotonic; we lead while clock() < this
        self._was_leader = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.transitions_seen = 0

    def is_leader(self) -> bool:
        return self.clock() < self._valid_until

    def holder(self) -> str | None:
        return self._record.holder if self._record is not None else None

    def try_acquire_or_renew(self) -> bool:
        """One round; True when we hold the Lease afterwards."""
        started = self.clock()
        try:
            current = self.store.get(self.name)
            if current is None:
                self._record = self.store.write(
                    self.name, self.me, int(self.duration), previous=None, transitions=0, labels=self.labels
                )
            elif current.holder == self.me:
                self._record = self.store.write(
                    self.name,
                    self.me,
                    int(self.duration),
                    previous=current,
                    transitions=current.transitions,
                    labels=self.labels,
                    annotations=current.annotations,  # the reports' send record (report_guard.py) stays
                )
            else:
                if self._record is None or current.resource_version != self._record.resource_version:
                    self._record, self._observed_at = current, started  # someone renewed: wait a full period
                if current.holder and started - self._observed_at < current.duration_seconds:
                    return False
                log.info("leader: lease %s held by %s expired; taking over", self.name, current.holder)
                self._record = self.store.write(
                    self.name,
                    self.me,
                    int(self.duration),
                    previous=current,
                    transitions=current.transitions + 1,
                    labels=self.labels,
                    annotations=current.annotations,  # a successor inherits the send record
                )
        except (LeaseConflict, LeaseError) as error:
            log.info("leader: %s", error)
            return False
        self._observed_at = started
        with self._lock:
            self._valid_until = started + self.renew_deadline
        return True

    def _check(self) -> None:
        """Fire on_started/on_lost on a change of leadership (called often by the watchdog)."""
        with self._lock:
            leading = self.is_leader()
            changed = leading != self._was_leader
            self._was_leader = leading
        if not changed:
            return
        log.warning("leader: %s leadership of %s", "acquired" if leading else "LOST", self.name)
        callback = self.on_started if leading else self.on_lost
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("leader: callback failed")

    def start(self) -> None:
        def elect() -> None:
            while not self._stop.is_set():
                self.try_acquire_or_renew()
                self._check()
                self._stop.wait(self.retry_period)

        def watchdog() -> None:
            while not self._stop.is_set():
                self._check()
                self._stop.wait(0.1)

        for target, name in ((elect, "leader-elect"), (watchdog, "leader-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; a leader that releases lets a standby take over without waiting for expiry."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.store.timeout + 1)
        was_leading = self.is_leader()
        with self._lock:
            self._valid_until = 0.0
        self._check()
        if release and was_leading and self._record is not None:
            try:  # an expired record (duration 1 s, renewed long ago) hands over at the standby's next round
                current = self.store.get(self.name) or self._record  # read again: the report guard may have written
                if current.holder == self.me:
                    self.store.write(
                        self.name,
                        "",
                        1,
                        previous=current,
                        transitions=current.transitions,
                        labels=self.labels,
                        annotations=current.annotations,
                    )
            except (LeaseConflict, LeaseError) as error:
                log.info("leader: could not release: %s", error)
