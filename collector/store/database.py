"""Connections, schema creation and migration, and the write transaction every change goes through.

Writes go through one connection guarded by a lock (SQLite has one writer anyway); each read runs in
one read transaction on a connection taken from a small pool of readers, so it sees a consistent snapshot while
appends go on. The pool is shared by every thread: readers are as many as reads ever ran at once, not as many as
threads ever read (a connection per thread grew with the scheduler's job threads and leaked with every
short-lived thread that read once, each holding SQLite's lookaside, schema and page cache).
`close()` waits for reads in progress before it closes their connections: closing a connection while another
thread's query runs on it crashes the process (SIGSEGV in CPython's sqlite3 module), and a daemon stopped
during a forecast pass did exactly that.

The in-memory caches (label tuple -> key id, per-source layouts, consumer key hours) hold ids that are
only valid once the transaction that created them has committed. Whatever way a transaction ends
without a commit (an exception in our code, a COMMIT refused for a full disk after which SQLite has
already rolled back, a ROLLBACK that itself fails), `_write` forgets every cache before the error
leaves it, so an id that was never committed is never handed out again (docs/history.md, "When writes fail").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from collector.store.health import WriteHealth
from collector.store.schema import _KEY_TABLES, _SCHEMA, _SCHEMA_V2, SCHEMA_VERSION, HistoryError
from collector.store.settings import HistoryConfig

if TYPE_CHECKING:
    from collector.store.writer import _ConsumerAccumulator, _Layout

log = logging.getLogger("collector.store.history")

WRITER_CACHE_KIB = 16384
"""The writer's page cache (KiB). Appends touch the right edge of each index and the key tables, a few MiB at
fleet size; 16 MiB keeps them hot while bounding what the cache adds to RSS as the history file grows (each
reader keeps SQLite's default 2 MiB). Seen as the `sqlite` part of capacityd_memory_bytes."""
IDLE_READERS_KEPT = 4
"""Idle read connections kept open for the next reads (the most recently used first: its cache is warm); a reader
returned when this many are idle is closed. Reads at once: the refresher, a forecast pass, a report, a command."""
CLOSE_READS_WAIT = 10.0
"""Seconds `close()` waits for reads in progress (a forecast pass loading its slice); after that their connections
are left open (the process is ending; closing them under a running query would crash it)."""


def _close_reader(connection: sqlite3.Connection) -> None:
    """Close a read connection; one that cannot even close is dropped all the same."""
    try:
        connection.close()
    except sqlite3.Error as error:
        log.debug("history: closing a reader failed: %s", error)


class Database:
    """The SQLite file of one History: connections, schema, transactions (the base of `History`)."""

    def __init__(self, path: Path, config: HistoryConfig):
        self.path = Path(path)
        self.config = config
        self.step = max(60, int(config.downsample_step.total_seconds()))
        self._health = WriteHealth()
        self.rejected: Counter[str] = Counter()
        """Polls refused per source (older than full-resolution history); their rows are in `stats()`."""
        self._lock = threading.RLock()
        self._init_reads()
        self._key_cache: dict[str, dict[int, int]] = {table: {} for table in _KEY_TABLES}
        self._ckey_hour: dict[int, int] = {}
        self._layouts: dict[tuple[str, str], _Layout] = {}
        self._accumulators: dict[str, _ConsumerAccumulator] = {}
        self._last_flush = time.monotonic()
        self._writer: sqlite3.Connection | None = None
        try:
            self._writer = self._connect()
        except sqlite3.DatabaseError as error:
            raise HistoryError(f"{self.path}: cannot open history database: {error}") from None
        try:
            self._writer.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            self._init_schema()
        except sqlite3.DatabaseError as error:
            self._close_writer()
            raise HistoryError(f"{self.path}: cannot open history database: {error}") from None
        except BaseException:
            self._close_writer()
            raise

    # ------------------------------------------------------------------ connections and schema

    def _connect(self) -> sqlite3.Connection:
        """WAL + synchronous=NORMAL: a commit is atomic and survives a killed process; only an OS crash
        or power cut can lose the last commits (never corrupt the file), and no fsync per poll."""
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError:
            connection.close()
            raise
        if str(mode).lower() != "wal":
            connection.close()
            raise HistoryError(f"{self.path}: cannot switch to WAL mode (got {mode}); is it on a network share?")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_size_limit = 67108864")
        connection.execute("PRAGMA temp_store = MEMORY")
        return connection

    def _writer_connection(self) -> sqlite3.Connection:
        """The writer, reopened if a failed rollback made us drop it."""
        if self._writer is None:
            connection = self._connect()
            connection.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            self._writer = connection
        return self._writer

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except sqlite3.Error as error:  # a connection that cannot even close is dropped all the same
                log.debug("history: closing the writer failed: %s", error)

    def _init_schema(self) -> None:
        with self._write("opening the history") as con:
            has_meta = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if has_meta is None:
                tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
                if tables:
                    raise HistoryError(f"{self.path}: a SQLite file that is not capacityd history (no meta table)")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT INTO meta VALUES ('created', ?)", (datetime.now(UTC).isoformat(),))
                con.execute("INSERT INTO meta VALUES ('polls_since', '0')")
                return
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema version {version} is newer than this capacityd supports "
                    f"({SCHEMA_VERSION}); upgrade capacityd, or move the file away to start a new history"
                )
            if version == 1:
                # Additive: polls are recorded from now on; verify() checks ownership of rows since then.
                con.execute(_SCHEMA_V2)
                now = int(datetime.now(UTC).timestamp())
                con.execute("INSERT OR REPLACE INTO meta VALUES ('polls_since', ?)", (str(now),))
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                log.info("history: %s migrated from schema version 1 to %d", self.path, SCHEMA_VERSION)
            elif version < SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: unknown history schema version {version}")

    def _close_readers(self) -> None:
        """Close every pooled reader once no read is in progress (at most CLOSE_READS_WAIT seconds).

        Call with `_closed` already set: no new read starts, and the reads in progress get CLOSE_READS_WAIT seconds.
        """
        with self._reads:
            idle = self._reads.wait_for(lambda: self._active_reads == 0, timeout=CLOSE_READS_WAIT)
            running = self._active_reads
        with self._readers_lock:
            if not idle:
                log.warning(
                    "history: %d reads still running after %.0f s at close; their connections are left open",
                    running,
                    CLOSE_READS_WAIT,
                )
            for connection in self._readers if idle else ():
                _close_reader(connection)
            self._readers.clear()
            self._idle_readers.clear()

    def _init_reads(self) -> None:
        """The read side's state: the pool of read connections (every one open, and the idle ones), and the count
        of read transactions in progress (guarded by `_reads`), which `close()` waits for."""
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._reads = threading.Condition()
        self._active_reads = 0

    def _take_reader(self) -> sqlite3.Connection:
        """An idle read connection, or a new one; only `_read()` calls it, after checking `_closed`."""
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        connection = self._connect()
        try:
            connection.execute("PRAGMA query_only = 1")
        except sqlite3.Error:
            connection.close()
            raise
        with self._readers_lock:
            self._readers.append(connection)
        return connection

    def _return_reader(self, connection: sqlite3.Connection) -> None:
        """Back to the pool after a read; closed instead when enough are idle or when its read left it unusable."""
        usable = True
        if connection.in_transaction:  # a COMMIT that failed: never hand a half-open transaction to the next read
            try:
                connection.rollback()
            except sqlite3.Error:
                usable = False
        with self._readers_lock:
            if usable and len(self._idle_readers) < IDLE_READERS_KEPT:
                self._idle_readers.append(connection)
                return
            if connection in self._readers:
                self._readers.remove(connection)
        _close_reader(connection)

    @contextmanager
    def _write(self, what: str = "writing") -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE .. COMMIT) under the writer lock.

        Any way it ends without a commit, the caches are forgotten (module docstring); a failure of the
        file or the disk is counted (and logged once per episode) before it is re-raised to the caller,
        which decides what is dropped.
        """
        with self._lock:
            if self._closed:
                raise HistoryError(f"{self.path}: history is closed")
            try:
                con = self._writer_connection()
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                self._health.failed(what, error)
                raise
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as error:
                self._rollback(con)
                if isinstance(error, sqlite3.Error):
                    self._health.failed(what, error)
                raise
            self._health.succeeded()

    def _rollback(self, con: sqlite3.Connection) -> None:
        """End a failed transaction, whatever state SQLite left it in, and forget every cached key."""
        try:
            # A COMMIT refused with SQLITE_FULL (or an I/O error) may already have rolled back:
            # ROLLBACK then raises "no transaction is active".
            if con.in_transaction:
                con.execute("ROLLBACK")
        except sqlite3.Error as error:
            # The connection's state is unknown: drop it; the next write opens a fresh one.
            log.debug("history: rollback failed (%s); reopening the writer", error)
            self._close_writer()
        finally:
            self._forget_caches()

    def _forget_caches(self) -> None:
        """Keys interned in a rolled-back transaction are gone: forget every cached key and layout."""
        for cache in self._key_cache.values():
            cache.clear()
        self._layouts.clear()
        self._ckey_hour.clear()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same snapshot, even while compact() runs.

        Counted while it runs, so that `close()` never closes the connection under it."""
        with self._reads:
            if self._closed:
                raise HistoryError(f"{self.path}: history is closed")
            self._active_reads += 1
        try:
            con = self._take_reader()
            try:
                con.execute("BEGIN")
                try:
                    yield con
                finally:
                    con.execute("COMMIT")
            finally:
                self._return_reader(con)
        finally:
            with self._reads:
                self._active_reads -= 1
                self._reads.notify_all()

    @staticmethod
    def _meta_int(con: sqlite3.Connection, key: str) -> int | None:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _set_meta(con: sqlite3.Connection, key: str, value: int) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def _close_connections(self) -> None:
        """Close readers (once no read is in progress) and the writer (PRAGMA optimize first, when the disk lets us)."""
        self._close_readers()
        if self._writer is not None:
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.Error as error:  # statistics are an optimisation; a full disk must not fail close
                log.debug("history: PRAGMA optimize at close failed: %s", error)
        self._close_writer()
