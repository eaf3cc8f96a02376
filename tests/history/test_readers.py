"""History's read connections: a small pool shared by every thread, not one connection per thread that ever read.

A connection per thread grew with the scheduler's job threads and leaked with every short-lived thread (each
holding SQLite's lookaside, schema and page cache, and three file descriptors). Open descriptors on the history
file are what the operating system sees, so the tests count those.
"""

from __future__ import annotations

import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from collector.store import database
from collector.store.history import History
from collector.store.settings import HistoryConfig


def open_descriptors(directory: Path) -> int:
    """Open connections to the history, as the OS sees them: this process' descriptors on its write-ahead log.

    Each open connection has one. (Not the main file: SQLite keeps a closed connection's descriptor on it for reuse
    while another connection of the process holds POSIX locks there.) After a collection: CPython's sqlite3
    connection and its statement cache reference each other, so a dropped connection is freed by the collector."""
    gc.collect()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith("-wal"):
            count += 1
    return count


@pytest.fixture
def store(tmp_path: Path):
    history = History.open(tmp_path / "state", HistoryConfig())
    yield history
    history.close()


def test_short_lived_threads_share_the_pool(store: History, tmp_path: Path) -> None:
    before = open_descriptors(tmp_path / "state")
    for _ in range(40):  # the daemon's one-off threads: first forecast, leader forecast, a reload's refresh
        thread = threading.Thread(target=store.last_timestamp, args=("any",))
        thread.start()
        thread.join()
    with ThreadPoolExecutor(max_workers=16) as pool:  # the scheduler's job threads, each reading in turn
        for _ in range(200):
            pool.submit(store.last_timestamp, "any").result()
    assert open_descriptors(tmp_path / "state") - before <= 1  # reads one at a time: one reader, reused


def test_concurrent_reads_each_get_a_connection_and_the_idle_ones_are_bounded(store: History, tmp_path: Path) -> None:
    readers = 8
    inside = threading.Barrier(readers, timeout=30)
    sums: list[int] = []

    def read() -> None:
        with store._read() as con:  # the one path every History read goes through
            inside.wait()  # all eight read transactions open at once: eight connections
            sums.append(con.execute("SELECT count(*) FROM meta").fetchone()[0])

    before = open_descriptors(tmp_path / "state")
    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sums) == readers and len(set(sums)) == 1
    assert open_descriptors(tmp_path / "state") - before == database.IDLE_READERS_KEPT


def test_a_failed_read_leaves_the_pool_usable(store: History) -> None:
    with pytest.raises(ZeroDivisionError), store._read() as con:
        con.execute("SELECT 1")
        raise ZeroDivisionError
    assert store.last_timestamp("any") is None
    with store._read() as con:  # no transaction left open on the connection handed out next
        assert con.execute("SELECT count(*) FROM meta").fetchone()[0] >= 1


def test_close_closes_every_reader(tmp_path: Path) -> None:
    history = History.open(tmp_path / "state", HistoryConfig())
    before_open = open_descriptors(tmp_path / "state")
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: history.last_timestamp("any"), range(30)))
    history.close()
    assert open_descriptors(tmp_path / "state") <= before_open - 1  # the writer and every reader are closed
