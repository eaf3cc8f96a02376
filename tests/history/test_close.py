"""Closing history while another thread reads it: the read finishes, then the connections close.

Closing a SQLite connection while another thread's query runs on it kills the process (SIGSEGV in CPython's
sqlite3 module); the daemon did that when it was stopped during a forecast pass. Each case runs in a child
process, so a crash shows as its exit status instead of taking the test runner with it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from .test_crash import REPO

# A read transaction that takes about a second (a recursive count), and a close() from the main thread while it runs.
_CLOSE_DURING_READ = """
import json, logging, sys, threading, time
from collector.store import database
from collector.store.history import History
from collector.store.schema import HistoryError
from collector.store.settings import HistoryConfig

database.CLOSE_READS_WAIT = float(sys.argv[2])
logging.basicConfig(level=logging.WARNING, format="%(message)s")
store = History.open(sys.argv[1], HistoryConfig())
SLOW = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) SELECT sum(x) FROM n"
reading, result = threading.Event(), {}

def read():
    with store._read() as con:  # the one path every History read goes through
        reading.set()
        result["sum"] = con.execute(SLOW).fetchone()[0]
    result["read_done"] = time.monotonic()

thread = threading.Thread(target=read)
thread.start()
reading.wait()
time.sleep(0.1)  # the query is running
store.close()
result["close_done"] = time.monotonic()
thread.join()
try:
    store.last_timestamp("any")
except HistoryError as error:
    result["after_close"] = str(error)
print(json.dumps(result))
"""


def close_during_read(tmp_path: Path, wait: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLOSE_DURING_READ, str(tmp_path / "state"), str(wait)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_close_waits_for_a_read_in_progress(tmp_path: Path) -> None:
    done = close_during_read(tmp_path, wait=60.0)
    killed_by = signal.Signals(-done.returncode).name if done.returncode < 0 else ""
    assert done.returncode == 0, f"exit {done.returncode} {killed_by}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    assert result["sum"] == 3000000 * 3000001 // 2  # the read finished on its connection
    assert result["close_done"] >= result["read_done"]  # close() returned only after it
    assert "history is closed" in result["after_close"]  # and no read starts after close()


def test_close_leaves_a_read_that_outlasts_the_wait_its_connection(tmp_path: Path) -> None:
    done = close_during_read(tmp_path, wait=0.05)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["sum"] == 3000000 * 3000001 // 2  # still answered: its connection was not closed under it
    assert result["close_done"] < result["read_done"]
    assert "1 reads still running after 0 s at close; their connections are left open" in done.stderr
