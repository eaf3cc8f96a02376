"""A full disk under the real daemon process (issue 12 item 1): it fills while `capacityd run` writes, and it is
already full when the daemon starts. Survived, counted, logged once, history-based analyses marked stale, and once
room is made writes resume with history intact.

The daemon runs in a private mount namespace (`unshare -m`) with a small tmpfs over its state_dir, so the host is
never touched; the test reaches that tmpfs through /proc/PID/root (the daemon's view of the filesystem).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from collector.demo.model import CLOUD
from tests.faults.conftest import Estate
from tests.faults.harness import REPO, Daemon, libvirt_source, longest_gap, wait_for

NODE_INTERVAL = 2.0


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -m (private mount namespace)"),
]


def on_tmpfs(daemon: Daemon, state_dir: Path, size: str, *, full: bool = False) -> Daemon:
    """Wrap the daemon's command: a private mount namespace with a `size` tmpfs over state_dir (filled if `full`)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fill = ' && { cat /dev/zero > "$0/filler" 2>/dev/null; true; }' if full else ""
    script = f'mount -t tmpfs -o size={size} tmpfs "$0"{fill} && exec "$@"'
    daemon.command_prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(state_dir)]
    return daemon


def inside(daemon: Daemon, state_dir: Path) -> Path:
    """state_dir as the daemon sees it (its tmpfs), from outside its mount namespace, for plain file I/O.

    SQLite resolves the /proc/PID/root link to "/" and so opens the host's file: history is read in the
    namespace instead (`in_namespace`)."""
    return Path(f"/proc/{daemon.pid}/root{state_dir}")


_CHECK = """
import json, sqlite3, sys
from pathlib import Path
from tests.faults.harness import integrity_problems, poll_times
what, state = sys.argv[1], Path(sys.argv[2])
if what == "checkpoint":
    with sqlite3.connect(state / "history.sqlite", timeout=10) as db:
        print(json.dumps(db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()))
elif what == "integrity":
    print(json.dumps(integrity_problems(state)))
else:  # nothing stored yet: no file, or an empty one left by an open that failed on the full disk
    try:
        print(json.dumps(poll_times(state, what)))
    except sqlite3.OperationalError:
        print("[]")
"""


def in_namespace(daemon: Daemon, state_dir: Path, what: str) -> Any:
    """Run a history check (`integrity`, `checkpoint`, or a source's poll times) in the daemon's mount namespace."""
    done = subprocess.run(["nsenter", "-t", str(daemon.pid), "-m", sys.executable, "-c", _CHECK, what,
                           str(state_dir)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fill(daemon: Daemon, state_dir: Path) -> Path:
    """Checkpoint the WAL to nothing (so the next commit needs new blocks), then fill the tmpfs."""
    in_namespace(daemon, state_dir, "checkpoint")
    filler = inside(daemon, state_dir) / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 16))
                out.flush()
        except OSError:
            pass
    return filler


def disk_full_errors(daemon: Daemon) -> float:
    return daemon.metric("capacityd_history_write_errors_total", reason="disk_full") or 0.0


def test_disk_fills_while_running_then_room_is_made(daemon: Daemon, estate: Estate) -> None:
    on_tmpfs(daemon, estate.state_dir, "16m").start()
    state = estate.state_dir
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=60, source=CLOUD)
    wait_for(lambda: in_namespace(daemon, state, "node5"), 60, "a first stored poll")
    daemon.wait_metric("capacityd_analysis_success", lambda v: v == 1, timeout=60, analysis="forecast")
    assert daemon.metric("capacityd_analysis_stale", analysis="forecast") == 0

    fault_start = time.time()
    filler = fill(daemon, state)
    daemon.wait_metric("capacityd_history_write_errors_total", lambda v: v > 0, timeout=60, reason="disk_full")
    daemon.wait_metric("capacityd_history_dropped_samples_total", lambda v: v > 0, timeout=30)
    for analysis in ("forecast", "reclaimable"):
        daemon.wait_metric("capacityd_analysis_stale", lambda v: v == 1, timeout=30, analysis=analysis)
    time.sleep(3 * NODE_INTERVAL)  # several failed writes: still one log line, no traceback per poll
    assert daemon.alive(), daemon.log()[-3000:]
    for source in ("node5", CLOUD):  # served from memory: sources stay fresh while nothing can be stored
        assert daemon.metric("capacityd_source_up", source=source) == 1
        assert daemon.metric("capacityd_source_stale", source=source) == 0
    errors = disk_full_errors(daemon)
    assert errors >= 2
    log = daemon.log()
    assert log.count("history: writes failing (disk_full") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    filler.unlink()
    fault_end = time.time()
    daemon.wait_metric("capacityd_history_last_write_success_timestamp_seconds", lambda v: v >= fault_end, timeout=30)
    daemon.wait_metric("capacityd_analysis_stale", lambda v: v == 0, timeout=30, analysis="forecast")
    resumed = time.time()
    wait_for(
        lambda: [t for t in in_namespace(daemon, state, "node5") if t >= resumed], 30, "a stored poll after the fault"
    )
    gap = longest_gap(in_namespace(daemon, state, "node5"), fault_start - NODE_INTERVAL, time.time())
    assert gap <= (fault_end - fault_start) + 2 * NODE_INTERVAL + 3.0, f"gap of {gap:.1f} s"
    assert daemon.log().count("history: writes succeed again") == 1
    assert disk_full_errors(daemon) >= errors
    assert not in_namespace(daemon, state, "integrity")
    assert daemon.alive()


def test_start_on_a_full_disk_serves_from_memory_and_opens_history_later(daemon: Daemon, estate: Estate) -> None:
    on_tmpfs(daemon, estate.state_dir, "1m", full=True).start()
    state = estate.state_dir
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=60, source=CLOUD)
    daemon.wait_metric("capacityd_history_write_errors_total", lambda v: v >= 1, timeout=30, reason="disk_full")
    daemon.wait_metric("capacityd_history_dropped_samples_total", lambda v: v > 0, timeout=30)
    daemon.wait_metric("capacityd_analysis_stale", lambda v: v == 1, timeout=60, analysis="forecast")
    assert daemon.metric("capacityd_source_stale", source="node5") == 0
    assert daemon.metric("capacityd_history_last_write_success_timestamp_seconds") is None
    assert daemon.log().count("history unavailable (disk_full)") == 1
    assert "Traceback" not in daemon.log()

    (inside(daemon, state) / "filler").unlink()
    room = time.time()
    wait_for(
        lambda: [t for t in in_namespace(daemon, state, "node5") if t >= room - 1],
        60,
        "history to be opened on the retry backoff and a poll stored",
    )
    daemon.wait_metric("capacityd_history_last_write_success_timestamp_seconds", lambda v: v >= room, timeout=30)
    daemon.wait_metric("capacityd_analysis_stale", lambda v: v == 0, timeout=60, analysis="forecast")
    assert daemon.alive()
    assert not in_namespace(daemon, state, "integrity")


# -- a reload (SIGHUP) while the disk is full (issue 12, "Found" 1) ----------------------------------------------

REPORT = (
    "smtp: {host: 127.0.0.1, port: 9, security: none, from: capacityd@example.org}\n"
    "reports:\n  - {name: weekly, recipients: [ops@example.org], schedule: '0 7 * * 1'}\n"
)


def reload_and_wait(daemon: Daemon) -> float:
    """SIGHUP, wait until the daemon logged its outcome; the running config's load time (exported)."""

    def outcomes() -> int:
        log = daemon.log()
        return sum(log.count(line) for line in ("configuration reloaded from", "reload refused", "reload: applying"))

    before = outcomes()
    daemon.signal(signal.SIGHUP)

    def handled() -> bool:
        return outcomes() > before

    wait_for(handled, 30, "the reload to be handled")
    time.sleep(0.5)  # the pass that renders the reload status follows the log line
    return daemon.metric("capacityd_config_last_reload_success_timestamp_seconds") or 0.0


def test_reload_while_the_disk_is_full_keeps_the_daemon_and_tells_what_happened(daemon: Daemon, estate: Estate) -> None:
    on_tmpfs(daemon, estate.state_dir, "16m").start()
    state = estate.state_dir
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=60, source=CLOUD)
    wait_for(lambda: in_namespace(daemon, state, "node5"), 60, "a first stored poll")
    started_at = daemon.metric("capacityd_config_last_reload_success_timestamp_seconds") or 0.0

    fault_start = time.time()
    filler = fill(daemon, state)
    daemon.wait_metric("capacityd_history_write_errors_total", lambda v: v > 0, timeout=60, reason="disk_full")
    errors = disk_full_errors(daemon)

    # 1. the same file again: nothing to write, applied
    loaded = reload_and_wait(daemon)
    assert daemon.alive(), daemon.log()[-3000:]
    assert daemon.metric("capacityd_config_last_reload_successful") == 1
    assert loaded >= fault_start > started_at

    # 2. a changed file (one more source): applied; the new source polls, served from memory
    extra = libvirt_source("extra", "test:///default", f"{NODE_INTERVAL:g}s")
    estate.write_config(sources=[*estate.sources(), extra])
    changed = time.time()
    loaded = reload_and_wait(daemon)
    assert daemon.alive(), daemon.log()[-3000:]
    assert daemon.metric("capacityd_config_last_reload_successful") == 1
    assert loaded >= changed
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=30, source="extra")
    daemon.wait_metric("capacityd_history_write_errors_total", lambda v: v > errors, timeout=30, reason="disk_full")

    # 3. a file adding a report: its send record cannot be created on the full disk; refused, running config kept
    estate.write_config(REPORT, sources=[*estate.sources(), extra])
    refused_at = time.time()
    loaded = reload_and_wait(daemon)
    assert daemon.alive(), daemon.log()[-3000:]
    assert daemon.answers()
    assert daemon.metric("capacityd_config_last_reload_successful") == 0
    assert loaded < refused_at  # the running config's load time stays
    assert daemon.metric("capacityd_source_up", source="extra") == 1
    log = daemon.log()
    assert log.count("reload refused, keeping the running config: reports: cannot open their send record") == 1
    assert "Traceback" not in log, log[-3000:]
    assert log.count("history: writes failing (disk_full") == 1, log[-3000:]

    # room is made: writes resume for the old and the new source, and history is sound
    filler.unlink()
    fault_end = time.time()
    daemon.wait_metric("capacityd_history_last_write_success_timestamp_seconds", lambda v: v >= fault_end, timeout=30)
    for source in ("node5", "extra"):
        wait_for(
            lambda source=source: [t for t in in_namespace(daemon, state, source) if t >= fault_end],
            30,
            f"a stored poll of {source} after the fault",
        )
    gap = longest_gap(in_namespace(daemon, state, "node5"), fault_start - NODE_INTERVAL, time.time())
    assert gap <= (fault_end - fault_start) + 2 * NODE_INTERVAL + 3.0, f"gap of {gap:.1f} s"
    assert not in_namespace(daemon, state, "integrity")

    # the report file applies now that there is room
    applied_at = time.time()
    assert reload_and_wait(daemon) >= applied_at
    assert daemon.metric("capacityd_config_last_reload_successful") == 1
    assert daemon.alive()
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_stop_after_a_reload_while_the_disk_is_still_full(daemon: Daemon, estate: Estate) -> None:
    """SIGTERM with the disk still full: the daemon closes history without a traceback and exits 0."""
    on_tmpfs(daemon, estate.state_dir, "16m").start()
    state = estate.state_dir
    wait_for(lambda: in_namespace(daemon, state, "node5"), 60, "a first stored poll")
    fill(daemon, state)
    daemon.wait_metric("capacityd_history_write_errors_total", lambda v: v > 0, timeout=60, reason="disk_full")
    estate.write_config(sources=estate.sources(libvirt_interval="3s"))
    reload_and_wait(daemon)
    assert daemon.metric("capacityd_config_last_reload_successful") == 1
    assert not in_namespace(daemon, state, "integrity")
    assert daemon.stop() == 0
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]


def test_start_on_a_full_disk_with_a_report_configured(daemon: Daemon, estate: Estate) -> None:
    """The reports' send record cannot be created: the daemon still starts, and schedules them once there is room."""
    estate.write_config(REPORT)
    on_tmpfs(daemon, estate.state_dir, "16m", full=True).start()  # room for history's WAL once the filler goes
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=60, source=CLOUD)
    assert daemon.alive(), daemon.log()[-3000:]
    wait_for(lambda: "reports not scheduled" in daemon.log(), 30, "the reports' failure logged")
    (inside(daemon, estate.state_dir) / "filler").unlink()
    wait_for(lambda: "reports scheduled" in daemon.log(), 90, "the reports scheduled once there is room")
    assert (inside(daemon, estate.state_dir) / "reports.sqlite").exists()
    log = daemon.log()
    assert log.count("reports not scheduled") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert daemon.stop() == 0
