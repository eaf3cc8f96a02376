"""Retention: rolling completed buckets up, re-rolling late ones, and dropping what is past retention."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from collector.store.database import Database
from collector.store.health import is_store_failure
from collector.store.schema import CONSUMER_HOUR, ROLLUP_GRACE_SECONDS, _epoch, _floor


class Retention(Database):
    """compact() and its helpers (docs/history.md, "Retention")."""

    def compact(self, now: datetime) -> bool:
        """Roll up completed buckets, re-roll late ones, drop what is past retention. True if done.

        Cheap when there is nothing to do (a few indexed range probes). A long backlog (after a
        backfill or downtime) is rolled up one day per transaction so appends are never held up long.
        When the disk fails, the work done so far stays (each step is its own transaction), the failure
        is counted and logged once per episode, and False is returned: the next compact() resumes.
        """
        try:
            self._compact(now)
        except sqlite3.Error as error:
            if not is_store_failure(error):
                raise
            return False
        return True

    def _compact(self, now: datetime) -> None:
        now_ts = _epoch(now, "now")
        step = self.step
        target = _floor(now_ts - ROLLUP_GRACE_SECONDS, step)
        with self._write("compacting") as con:
            rollup_until = self._meta_int(con, "rollup_until")
            if rollup_until is None:
                first = con.execute(
                    "SELECT min(ts) FROM (SELECT min(ts) AS ts FROM pool_raw UNION ALL SELECT min(ts) FROM host_raw)"
                ).fetchone()[0]
                rollup_until = min(_floor(first, step), target) if first is not None else target
                self._set_meta(con, "rollup_until", rollup_until)
        chunk = max(step, _floor(86400, step))
        while rollup_until < target:
            upto = min(target, rollup_until + chunk)
            with self._write("compacting") as con:
                self._roll_up(con, rollup_until, upto)
                self._set_meta(con, "rollup_until", upto)
            rollup_until = upto
        with self._write("compacting") as con:
            # Buckets that received late samples (clock stepped back, backfill) are recomputed before
            # any raw row of theirs can expire.
            dirty = [row[0] for row in con.execute("SELECT ts FROM dirty_buckets WHERE ts < ?", (rollup_until,))]
            for bucket in dirty:
                self._roll_up(con, bucket, bucket + step)
            con.execute("DELETE FROM dirty_buckets WHERE ts < ?", (rollup_until,))
            self._expire(con, now_ts, rollup_until)
            # Table statistics for the query planner, refreshed daily (bounded sampling: milliseconds).
            analyzed = self._meta_int(con, "analyzed_at")
            if analyzed is None or now_ts - analyzed >= 86400:
                con.execute("PRAGMA analysis_limit = 1000")
                con.execute("ANALYZE")
                self._set_meta(con, "analyzed_at", now_ts)

    def _roll_up(self, con: sqlite3.Connection, start: int, end: int) -> None:
        step = self.step
        con.execute(
            "INSERT OR REPLACE INTO pool_rollup "
            "SELECT pkey, ts / :step * :step AS b, avg(capacity), avg(reserved), avg(allocatable), "
            "avg(allocated), max(allocated), count(allocated), avg(used), max(used), count(used), avg(hosts), count(*) "
            "FROM pool_raw WHERE ts >= :start AND ts < :end GROUP BY pkey, b",
            {"step": step, "start": start, "end": end},
        )
        con.execute(
            "INSERT OR REPLACE INTO host_rollup "
            "SELECT hkey, ts / :step * :step AS b, avg(capacity), avg(allocatable), "
            "avg(allocated), max(allocated), count(allocated), avg(used), max(used), count(used), count(*) "
            "FROM host_raw WHERE ts >= :start AND ts < :end GROUP BY hkey, b",
            {"step": step, "start": start, "end": end},
        )

    def _expire(self, con: sqlite3.Connection, now_ts: int, rollup_until: int) -> None:
        """Delete past retention. Raw rows go only once rolled up; floors are bucket-aligned."""
        step = self.step
        for table, retention, floor_key in (
            ("pool_raw", self.config.raw_retention, "pool_raw_floor"),
            ("host_raw", self.config.host_raw_retention, "host_raw_floor"),
        ):
            cutoff = min(_floor(now_ts - int(retention.total_seconds()), step), rollup_until)
            previous = self._meta_int(con, floor_key) or 0
            if cutoff > previous:
                con.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,))
                self._set_meta(con, floor_key, cutoff)
                if table == "pool_raw":  # polls are what verify() checks raw rows against: kept as long
                    con.execute("DELETE FROM source_polls WHERE ts < ?", (cutoff,))
        keep_after = _floor(now_ts - int(self.config.retention.total_seconds()), step)
        con.execute("DELETE FROM pool_rollup WHERE ts < ?", (keep_after,))
        host_after = _floor(now_ts - int(self.config.host_retention.total_seconds()), step)
        con.execute("DELETE FROM host_rollup WHERE ts < ?", (host_after,))
        con.execute("DELETE FROM consumer_counts WHERE ts < ?", (keep_after,))
        consumer_cutoff = _floor(now_ts - int(self.config.consumer_retention.total_seconds()), CONSUMER_HOUR)
        con.execute("DELETE FROM consumer_hourly WHERE hour < ?", (consumer_cutoff,))
        con.execute("DELETE FROM consumer_keys WHERE last_hour < ?", (consumer_cutoff,))
        # Consumer counts: hourly within raw_retention, then one per day (the 00 UTC hour's sample).
        thin_until = _floor(now_ts - int(self.config.raw_retention.total_seconds()), CONSUMER_HOUR)
        thinned = self._meta_int(con, "counts_thinned_until") or 0
        if thin_until > thinned:
            con.execute(
                "DELETE FROM consumer_counts WHERE ts >= ? AND ts < ? AND ts % 86400 >= 3600", (thinned, thin_until)
            )
            self._set_meta(con, "counts_thinned_until", thin_until)
