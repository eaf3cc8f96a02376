"""The persisted record of sends (SQLite under state_dir): a report goes out once per period.

A send first *claims* its (report, period) row in one IMMEDIATE transaction, so two runs racing
for the same period (a misfire catch-up and a retry, two daemons on one state dir) cannot both
send; a claim left behind by a crash expires after a lease. A successful send stores the summary
the next report compares with ("change since last week") and the forecast bands it showed, so
that a month later the report can say how those forecasts fared.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    report      TEXT NOT NULL,
    period      TEXT NOT NULL,          -- ISO 8601 UTC of the scheduled time the send belongs to
    status      TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    claimed_at  REAL,
    sent_at     REAL,
    message_id  TEXT,
    size_bytes  INTEGER,
    error       TEXT,
    summary     TEXT,                   -- JSON: pools' status and days remaining
    PRIMARY KEY (report, period)
);
CREATE TABLE IF NOT EXISTS sent_forecasts (
    report    TEXT NOT NULL,
    period    TEXT NOT NULL,
    layer     TEXT NOT NULL,
    cloud     TEXT NOT NULL,
    pool      TEXT NOT NULL,
    resource  TEXT NOT NULL,
    basis     TEXT NOT NULL,
    ts        REAL NOT NULL,
    p10       REAL,
    p50       REAL,
    p90       REAL,
    PRIMARY KEY (report, period, layer, cloud, pool, resource, basis, ts)
);
CREATE TABLE IF NOT EXISTS schedules (
    job_id        TEXT PRIMARY KEY,     -- report:<name> (cron) or report-retry:<name> (one-off)
    report        TEXT NOT NULL,
    trigger       TEXT NOT NULL,        -- the cron trigger and zone as text; a change resets next_run
    next_run      REAL,                 -- Unix time of the next run (kept across restarts)
    period        TEXT                  -- retries: the period they retry
);
"""

DEFAULT_LEASE = timedelta(minutes=30)
FORECAST_KEEP = timedelta(days=100)


@dataclass(frozen=True)
class SendRecord:
    report: str
    period: datetime
    status: str
    attempts: int
    sent_at: datetime | None
    message_id: str | None
    size_bytes: int | None
    error: str | None
    summary: dict[str, Any] | None


def period_key(period: datetime) -> str:
    """The canonical text of a period: its UTC time to the second."""
    return period.astimezone(UTC).replace(microsecond=0).isoformat()


def _from_epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class SendStore:
    """`<state_dir>/reports.sqlite`: one row per (report, period), WAL, safe across threads/processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @classmethod
    def open(cls, state_dir: Path) -> SendStore:
        return cls(Path(state_dir) / "reports.sqlite")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            con.execute("PRAGMA synchronous = FULL")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def get(self, report: str, period: datetime) -> SendRecord | None:
        with self._connect() as con:
            row = con.execute(
                "SELECT report, period, status, attempts, sent_at, message_id, size_bytes, error, summary "
                "FROM sends WHERE report = ? AND period = ?",
                (report, period_key(period)),
            ).fetchone()
        return self._record(row) if row else None

    @staticmethod
    def _record(row: tuple[Any, ...]) -> SendRecord:
        return SendRecord(
            report=row[0],
            period=datetime.fromisoformat(row[1]),
            status=row[2],
            attempts=row[3],
            sent_at=_from_epoch(row[4]),
            message_id=row[5],
            size_bytes=row[6],
            error=row[7],
            summary=json.loads(row[8]) if row[8] else None,
        )

    def is_sent(self, report: str, period: datetime) -> bool:
        record = self.get(report, period)
        return record is not None and record.status == "sent"

    def claim(
        self, report: str, period: datetime, *, now: datetime | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> bool:
        """Take the right to send (report, period); False if it was sent or another send holds it."""
        now = now or datetime.now(UTC)
        with self._transaction() as con:
            row = con.execute(
                "SELECT status, claimed_at FROM sends WHERE report = ? AND period = ?", (report, period_key(period))
            ).fetchone()
            if row is not None:
                status, claimed_at = row
                if status == "sent":
                    return False
                if (
                    status == "sending"
                    and claimed_at is not None
                    and now.timestamp() - claimed_at < lease.total_seconds()
                ):
                    return False
            con.execute(
                "INSERT INTO sends (report, period, status, attempts, claimed_at) VALUES (?, ?, 'sending', 1, ?) "
                "ON CONFLICT (report, period) DO UPDATE SET status = 'sending', attempts = attempts + 1, "
                "claimed_at = excluded.claimed_at, error = NULL",
                (report, period_key(period), now.timestamp()),
            )
        return True

    def mark_sent(
        self,
        report: str,
        period: datetime,
        *,
        message_id: str,
        size_bytes: int,
        summary: dict[str, Any],
        forecasts: pd.DataFrame | None,
        now: datetime | None = None,
    ) -> None:
        now = now or datetime.now(UTC)
        key = period_key(period)
        with self._transaction() as con:
            con.execute(
                "UPDATE sends SET status = 'sent', sent_at = ?, message_id = ?, size_bytes = ?, error = NULL, "
                "summary = ? WHERE report = ? AND period = ?",
                (now.timestamp(), message_id, size_bytes, json.dumps(summary), report, key),
            )
            if forecasts is not None and not forecasts.empty:
                frame = forecasts
                stamps = pd.to_datetime(frame["timestamp"], utc=True)
                keep = stamps <= pd.Timestamp(now) + pd.Timedelta(FORECAST_KEEP)
                frame, stamps = frame[keep], stamps[keep]
                con.executemany(
                    "INSERT OR REPLACE INTO sent_forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            report,
                            key,
                            str(r.layer),
                            str(r.cloud),
                            str(r.pool),
                            str(r.resource),
                            str(r.basis),
                            ts.timestamp(),
                            float(r.p10),
                            float(r.p50),
                            float(r.p90),
                        )
                        for r, ts in zip(frame.itertuples(index=False), stamps, strict=True)
                    ],
                )
            # Keep the record small: forecasts older than what any accuracy check reads are dropped.
            cutoff = period_key(now - timedelta(days=120))
            con.execute("DELETE FROM sent_forecasts WHERE report = ? AND period < ?", (report, cutoff))

    def mark_failed(self, report: str, period: datetime, error: str) -> None:
        with self._transaction() as con:
            con.execute(
                "UPDATE sends SET status = 'failed', error = ?, claimed_at = NULL WHERE report = ? AND period = ?",
                (error[:2000], report, period_key(period)),
            )

    def last_sent(self, report: str, *, before: datetime | None = None) -> SendRecord | None:
        query = (
            "SELECT report, period, status, attempts, sent_at, message_id, size_bytes, error, summary "
            "FROM sends WHERE report = ? AND status = 'sent'"
        )
        args: list[Any] = [report]
        if before is not None:
            query += " AND period < ?"
            args.append(period_key(before))
        with self._connect() as con:
            row = con.execute(query + " ORDER BY period DESC LIMIT 1", args).fetchone()
        return self._record(row) if row else None

    def sent_forecasts_near(
        self, report: str, target: datetime, *, tolerance: timedelta = timedelta(days=10)
    ) -> tuple[datetime | None, pd.DataFrame]:
        """The forecast bands stored with the sent report closest to `target` (within tolerance)."""
        low, high = period_key(target - tolerance), period_key(target + tolerance)
        with self._connect() as con:
            periods = [
                row[0]
                for row in con.execute(
                    "SELECT DISTINCT f.period FROM sent_forecasts f JOIN sends s ON s.report = f.report "
                    "AND s.period = f.period AND s.status = 'sent' WHERE f.report = ? AND f.period BETWEEN ? AND ?",
                    (report, low, high),
                )
            ]
            if not periods:
                return None, pd.DataFrame()
            best = min(periods, key=lambda p: abs((datetime.fromisoformat(p) - target).total_seconds()))
            rows = con.execute(
                "SELECT layer, cloud, pool, resource, basis, ts, p10, p50, p90 FROM sent_forecasts "
                "WHERE report = ? AND period = ?",
                (report, best),
            ).fetchall()
        frame = pd.DataFrame(
            rows, columns=["layer", "cloud", "pool", "resource", "basis", "timestamp", "p10", "p50", "p90"]
        )
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
        return datetime.fromisoformat(best), frame

    # -- schedules: when each report's job runs next, kept across restarts ----------------------------

    def save_schedule(
        self, job_id: str, report: str, trigger: str, next_run: datetime | None, period: str | None = None
    ) -> None:
        with self._transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO schedules VALUES (?, ?, ?, ?, ?)",
                (job_id, report, trigger, next_run.timestamp() if next_run else None, period),
            )

    def schedules(self) -> dict[str, tuple[str, str, datetime | None, str | None]]:
        """job_id -> (report, trigger text, next run, period)."""
        with self._connect() as con:
            rows = con.execute("SELECT job_id, report, trigger, next_run, period FROM schedules").fetchall()
        return {row[0]: (row[1], row[2], _from_epoch(row[3]), row[4]) for row in rows}

    def drop_schedule(self, job_id: str) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM schedules WHERE job_id = ?", (job_id,))

    def records(self, report: str | None = None) -> list[SendRecord]:
        query = "SELECT report, period, status, attempts, sent_at, message_id, size_bytes, error, summary FROM sends"
        args: tuple[Any, ...] = ()
        if report is not None:
            query += " WHERE report = ?"
            args = (report,)
        with self._connect() as con:
            return [self._record(row) for row in con.execute(query + " ORDER BY report, period", args)]
