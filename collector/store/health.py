"""Write failures of the history store: classified, counted, logged once per episode (docs/history.md).

A full disk fails every write until an operator makes room; a traceback per poll would bury the one
line that matters. So the first failure of an episode is logged (one line, with the reason), later
ones are only counted, and the first write that succeeds again logs one line saying how long the
episode lasted and what was lost. The counters reach /metrics as the `history_stats` frame
(`HistoryStats.frame()`), which the daemon puts into each snapshot; exporters never read this module's state.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from collector.contract.schema import FLOAT, STRING, Column, FrameSchema, register

log = logging.getLogger("collector.store.history")

REASONS = ("disk_full", "io", "locked", "readonly", "corrupt", "other")
"""`reason` label values of capacityd_history_write_errors_total (all exported, 0 until they happen)."""

_REASON_OF_CODE = {
    13: "disk_full",  # SQLITE_FULL
    10: "io",  # SQLITE_IOERR (and its extended codes)
    14: "io",  # SQLITE_CANTOPEN: the journal or WAL cannot be created
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "readonly",  # SQLITE_READONLY
    11: "corrupt",  # SQLITE_CORRUPT
    26: "corrupt",  # SQLITE_NOTADB
}

HISTORY_STATS = register(
    FrameSchema(
        name="history_stats",
        doc="Counters of the history store (write errors, dropped and rejected samples), one row per sample.",
        key=("metric", "source", "reason"),
        columns=(
            Column("metric", STRING, "write_errors | dropped_samples | rejected_samples | last_write_success"),
            Column("source", STRING, "Source of rejected samples; empty otherwise."),
            Column("reason", STRING, "Why: a write error reason, or why samples were rejected; empty otherwise."),
            Column("value", FLOAT, "Counter value since start, or a Unix time.", non_negative=True),
        ),
    )
)


def classify(error: BaseException) -> str:
    """The `reason` label of a failed write, from SQLite's primary result code."""
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return "other"
    return _REASON_OF_CODE.get(code & 0xFF, "other")


def is_store_failure(error: BaseException) -> bool:
    """A failure of the file or the disk under it (counted and survived), not a bug in our SQL (raised)."""
    return type(error) in (sqlite3.OperationalError, sqlite3.DatabaseError)


@dataclass(frozen=True)
class HistoryStats:
    """What the store counted since it was opened, for /metrics (docs/metrics.md, "History store")."""

    write_errors: dict[str, int]
    """Failed write transactions by reason (every reason of REASONS present)."""
    dropped_samples: int
    """Frame rows that could not be stored (a failed poll write or consumer-usage flush)."""
    rejected_samples: dict[tuple[str, str], int]
    """Rows refused by (source, reason): `too_old` = older than full-resolution history."""
    last_write_success: float | None
    """Unix time of the last committed write since the store was opened."""
    failing: str | None
    """The reason of the ongoing failure episode, None while writes succeed."""

    def frame(self) -> pd.DataFrame:
        rows: list[tuple[str, str, str, float]] = [
            ("write_errors", "", reason, float(count)) for reason, count in sorted(self.write_errors.items())
        ]
        rows.append(("dropped_samples", "", "", float(self.dropped_samples)))
        rows += [("rejected_samples", source, reason, float(count))
                 for (source, reason), count in sorted(self.rejected_samples.items())]  # fmt: skip
        if self.last_write_success is not None:
            rows.append(("last_write_success", "", "", self.last_write_success))
        columns = HISTORY_STATS.column_names
        return HISTORY_STATS.build({name: [row[i] for row in rows] for i, name in enumerate(columns)})


@dataclass
class WriteHealth:
    """Counters and the failure-episode state of one History (thread-safe)."""

    errors: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_success: float | None = None
    last_success_mono: float | None = None
    failing: str | None = None
    _episode_started: float = 0.0
    _episode_errors: int = 0
    _episode_dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, what: str, error: BaseException) -> None:
        """Count one failed write transaction; log it only if it opens an episode."""
        reason = classify(error)
        with self._lock:
            self.errors[reason] += 1
            if self.failing is not None:
                self._episode_errors += 1
                return
            self.failing = reason
            self._episode_started = time.monotonic()
            self._episode_errors, self._episode_dropped = 1, 0
        log.error(
            "history: writes failing (%s: %s) while %s; what cannot be stored is dropped and counted "
            "(capacityd_history_dropped_samples_total) until a write succeeds again",
            reason, error, what,
        )  # fmt: skip

    def dropped_rows(self, rows: int) -> None:
        with self._lock:
            self.dropped += rows
            self._episode_dropped += rows

    def rejected_rows(self, source: str, reason: str, rows: int) -> None:
        with self._lock:
            self.rejected[(source, reason)] += rows

    def succeeded(self) -> None:
        """A write committed: end the episode (one log line) if there was one."""
        with self._lock:
            self.last_success, self.last_success_mono = time.time(), time.monotonic()
            if self.failing is None:
                return
            reason, errors, dropped = self.failing, self._episode_errors, self._episode_dropped
            took = time.monotonic() - self._episode_started
            self.failing = None
        log.warning(
            "history: writes succeed again after %.0f s of failures (%s): %d failed writes, %d samples dropped",
            took, reason, errors, dropped,
        )  # fmt: skip

    def stats(self) -> HistoryStats:
        with self._lock:
            return HistoryStats(
                write_errors={reason: self.errors.get(reason, 0) for reason in REASONS},
                dropped_samples=self.dropped,
                rejected_samples=dict(self.rejected),
                # labelled on today's wall clock (a step back never puts it in the future)
                last_write_success=None if self.last_success_mono is None
                else time.time() - (time.monotonic() - self.last_success_mono),
                failing=self.failing,
            )
