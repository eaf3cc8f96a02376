"""The estate: the latest good frames of every source, with each source's health.

Data flows one way: sources -> (frames) -> Estate -> History -> analyses (headroom, forecasts)
-> exporters. The Estate is the one place that knows whether a source's data is fresh: a failed poll
keeps the last good frames but marks them stale, so nothing downstream mistakes old data for new.

Freshness is measured on the monotonic clock: frames are stale when the last good poll ended more than
two intervals (plus the source's timeout) ago *now*, whether the polls after it failed or never
happened (a stopped scheduler shows).
Wall time is a label: the exported `last_success`/`last_attempt` are re-derived from their monotonic
age when the wall clock was stepped since, so none of them lies in the future.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from collector.contract.schema import (
    BOOL,
    FLOAT,
    STRING,
    TIMESTAMP,
    Column,
    FrameSchema,
    FrameSet,
    concat,
    register,
    validate_frame,
)

SOURCES = register(
    FrameSchema(
        name="sources",
        doc="Health of each configured source (derived by the daemon, not read from a remote system).",
        key=("source",),
        columns=(
            Column("source", STRING, "Source name."),
            Column("kind", STRING, "libvirt | openstack | kubernetes"),
            Column("up", BOOL, "The last poll succeeded."),
            Column("stale", BOOL, "The last poll failed, or none succeeded within 2 intervals + timeout (monotonic)."),
            Column("last_success", TIMESTAMP, "Time of the last successful poll.", nullable=True),
            Column("last_attempt", TIMESTAMP, "Time of the last poll attempt.", nullable=True),
            Column("last_error", STRING, "Message of the last failure (free of secrets).", nullable=True),
            Column("poll_duration_seconds", FLOAT, "Duration of the last poll.", nullable=True),
        ),
    )
)


@dataclass
class SourceStatus:
    """Everything the daemon knows about one source's polling, exported as self-metrics."""

    name: str
    kind: str
    interval: timedelta
    grace: timedelta = timedelta(0)
    """Added to two intervals before frames count as stale: the source's timeout (a slow poll is not a stop)."""
    frames: FrameSet = field(default_factory=dict)
    up: bool = False
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    poll_duration_seconds: float | None = None
    errors_total: Counter[str] = field(default_factory=Counter)
    skipped_total: Counter[str] = field(default_factory=Counter)
    polls_total: int = 0
    api_calls: int | None = None
    last_attempt_mono: float | None = None
    last_success_mono: float | None = None
    checked_mono: float | None = None
    """Monotonic time this copy was taken (set by `Estate.snapshot`); staleness is judged against it."""

    @property
    def stale(self) -> bool:
        """Frames are stale when the latest attempt failed, or no poll succeeded within 2 intervals (+ grace)."""
        if self.last_success is None:
            return bool(self.frames)
        if not self.up:
            return True
        if self.checked_mono is not None and self.last_success_mono is not None:
            limit = (2 * self.interval + self.grace).total_seconds()
            return self.checked_mono - self.last_success_mono > limit
        return self.last_attempt is not None and self.last_attempt - self.last_success > 2 * self.interval


@dataclass(frozen=True)
class Snapshot:
    """An immutable view handed to analyses and exporters: merged frames plus source health."""

    taken_at: datetime
    frames: FrameSet
    statuses: tuple[SourceStatus, ...]

    def frame(self, name: str) -> pd.DataFrame:
        return self.frames[name]


class Estate:
    """Thread-safe holder of per-source state; sources write, analyses and exporters read snapshots."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, SourceStatus] = {}
        self.clock = clock

    def add_source(self, name: str, kind: str, interval: timedelta, grace: timedelta | None = None) -> None:
        """Track a source polled every `interval`; `grace` (its timeout) delays staleness for a slow poll."""
        with self._lock:
            if name not in self._status:
                self._status[name] = SourceStatus(name=name, kind=kind, interval=interval)
            status = self._status[name]
            status.interval = interval
            status.grace = grace or timedelta(0)

    def remove_source(self, name: str) -> None:
        with self._lock:
            self._status.pop(name, None)

    def record_success(
        self,
        name: str,
        frames: FrameSet,
        when: datetime,
        duration: float,
        skipped: Counter[str] | None = None,
        api_calls: int | None = None,
    ) -> None:
        with self._lock:
            status = self._status[name]
            status.frames = frames
            status.up = True
            status.last_attempt = status.last_success = when
            status.last_attempt_mono = status.last_success_mono = self.clock()
            status.last_error = None
            status.poll_duration_seconds = duration
            status.polls_total += 1
            status.api_calls = api_calls
            if skipped:
                status.skipped_total.update(skipped)

    def record_failure(self, name: str, reason: str, message: str, when: datetime, duration: float) -> None:
        with self._lock:
            status = self._status[name]
            status.up = False
            status.last_attempt = when
            status.last_attempt_mono = self.clock()
            status.last_error = message
            status.poll_duration_seconds = duration
            status.polls_total += 1
            status.errors_total[reason] += 1

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        with self._lock:
            statuses = tuple(_copy_status(s) for s in self._status.values())
            mono = self.clock()
        taken_at = now or datetime.now(UTC)
        for status in statuses:
            status.checked_mono = mono
            if now is None:  # the real clock: labels follow its steps
                status.last_attempt = wall_label(status.last_attempt, status.last_attempt_mono, taken_at, mono)
                status.last_success = wall_label(status.last_success, status.last_success_mono, taken_at, mono)
        frames = concat(s.frames for s in statuses)
        frames["sources"] = _sources_frame(statuses)
        return Snapshot(taken_at=taken_at, frames=frames, statuses=statuses)


STEP_TOLERANCE = timedelta(seconds=1)


def wall_label(
    recorded: datetime | None, recorded_mono: float | None, wall_now: datetime, mono_now: float
) -> datetime | None:
    """`recorded` (wall time of an event), or `wall_now - its monotonic age` if the wall clock stepped since.

    An event labelled before a backward step would otherwise lie in the future, and one labelled before a
    forward step would look older than it is; both would mislead staleness alerts computed from them.
    """
    if recorded is None or recorded_mono is None:
        return recorded
    derived = wall_now - timedelta(seconds=max(0.0, mono_now - recorded_mono))
    return recorded if abs(derived - recorded) <= STEP_TOLERANCE else derived


def _sources_frame(statuses: tuple[SourceStatus, ...]) -> pd.DataFrame:
    """The `sources` frame, each column built in its contract dtype, then validated.

    Built directly rather than through `SOURCES.build` (infer, then cast every column): this runs
    on every snapshot, i.e. after every poll, and the generic casts cost milliseconds for a few rows.
    """

    def timestamps(values: list[datetime | None]) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")

    frame = pd.DataFrame(
        {
            "source": pd.array([s.name for s in statuses], dtype=STRING),
            "kind": pd.array([s.kind for s in statuses], dtype=STRING),
            "up": np.array([s.up for s in statuses], dtype=bool),
            "stale": np.array([s.stale for s in statuses], dtype=bool),
            "last_success": timestamps([s.last_success for s in statuses]),
            "last_attempt": timestamps([s.last_attempt for s in statuses]),
            "last_error": pd.array([s.last_error for s in statuses], dtype=STRING),
            "poll_duration_seconds": np.array([s.poll_duration_seconds for s in statuses], dtype=float),  # None: NaN
        }
    )
    validate_frame(SOURCES.name, frame)
    return frame


def _copy_status(status: SourceStatus) -> SourceStatus:
    copy = SourceStatus(**{k: v for k, v in status.__dict__.items()})
    copy.errors_total = Counter(status.errors_total)
    copy.skipped_total = Counter(status.skipped_total)
    copy.frames = dict(status.frames)
    return copy
