"""Memory stays flat (issue 12, soak): malloc arenas are bounded, big blocks are mmapped, Python's objects live in
glibc's heap, and freed heap goes back to the OS.

The helpers run in a fresh interpreter each (allocator settings are process-wide and must be set before threads
allocate), and the real `capacityd run` process shows in its log and environment that it applied them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app.memory import ALLOCATOR_ENVIRONMENT, startup_environment
from tests.faults.harness import NODE5, Daemon, config_text, free_port, libvirt_source, wait_for

from .conftest import REPO

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc tuning is glibc's")

THREADS = 8

# Eight threads that allocate at the same time, then glibc's own count of its arenas (malloc_stats on stderr).
_ARENAS = f"""
import ctypes, sys, threading
from collector.app import memory
applied = memory.bound_arenas() if sys.argv[1] == "bound" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier({THREADS})
def work():
    barrier.wait()
    blocks = [libc.malloc(4096) for _ in range(200)]
    barrier.wait()  # every thread holds its blocks: each one needs an arena at the same time
    for block in blocks:
        libc.free(ctypes.c_void_p(block))
threads = [threading.Thread(target=work) for _ in range({THREADS})]
for t in threads: t.start()
for t in threads: t.join()
print(applied)
sys.stdout.flush()
libc.malloc_stats()
"""

# 160 MiB in 8 KiB blocks (below the mmap threshold: heap, not mmap), all freed but the last, which pins the top of
# the heap so free() cannot shrink it on its own; only malloc_trim can give the middle back.
_TRIM = """
import ctypes, json
from collector.app import memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
blocks = [libc.malloc(8192) for _ in range(20480)]
for block in blocks:
    ctypes.memset(block, 1, 8192)
for block in blocks[:-1]:
    libc.free(ctypes.c_void_p(block))
before = memory.rss_bytes()
released = memory.trim("test")
print(json.dumps({"before": before, "after": memory.rss_bytes(), "released": released}))
"""


# A 16 MiB block freed (glibc then raises its mmap threshold to 16 MiB), then a 1 MiB block: in an mmap of its own
# (mallinfo2's hblkhd grows by it) only while the threshold stays pinned.
_THRESHOLD = """
import ctypes, json, sys
from collector.app import memory
pinned = memory.pin_thresholds() if sys.argv[1] == "pin" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(16 * 2**20)))
before = memory.heap()[2]
block = libc.malloc(2**20)
print(json.dumps({"pinned": pinned, "mmapped_growth": memory.heap()[2] - before}))
libc.free(ctypes.c_void_p(block))
"""

_ALLOCATOR_VARIABLES = ALLOCATOR_ENVIRONMENT
"""Not inherited from the test runner: Dask's nanny, once imported by another test, sets MALLOC_TRIM_THRESHOLD_."""


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def arenas(stderr: str) -> int:
    return len(re.findall(r"^Arena \d+:", stderr, re.MULTILINE))


def test_bound_arenas_limits_glibc_to_two_arenas() -> None:
    unbounded = run_python(_ARENAS, "default")
    bounded = run_python(_ARENAS, "bound")
    assert bounded.stdout.strip() == "2"
    # without the limit, threads allocating together each get an arena (glibc allows 8 per core)
    assert arenas(unbounded.stderr) > 2, unbounded.stderr
    assert 1 <= arenas(bounded.stderr) <= 2, bounded.stderr


def test_operator_malloc_arena_max_is_kept() -> None:
    done = run_python(_ARENAS, "bound", env={"MALLOC_ARENA_MAX": "3"})
    assert done.stdout.strip() == "None"  # not overridden
    assert arenas(done.stderr) == 3, done.stderr


def test_trim_gives_freed_heap_back_to_the_os() -> None:
    result = json.loads(run_python(_TRIM).stdout)
    mib = 2**20
    assert result["released"] > 100 * mib, result
    assert result["before"] - result["after"] > 100 * mib, result


def test_pinned_thresholds_keep_big_blocks_in_mmaps() -> None:
    default = json.loads(run_python(_THRESHOLD, "default").stdout)
    pinned = json.loads(run_python(_THRESHOLD, "pin").stdout)
    assert pinned == {"pinned": True, "mmapped_growth": pytest.approx(2**20, abs=8192)}
    # glibc's own dynamic threshold, raised by the freed 16 MiB block, puts the 1 MiB block inside an arena
    assert default["mmapped_growth"] == 0, default


def test_operator_malloc_thresholds_are_kept() -> None:
    done = run_python(_THRESHOLD, "pin", env={"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)})
    assert json.loads(done.stdout) == {"pinned": False, "mmapped_growth": 0}


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    config = tmp_path / "capacityd.yaml"
    config.write_text(
        config_text(port, tmp_path / "state", [libvirt_source("node5", f"test://{NODE5}", "2s")], "log_level: debug\n")
    )
    process = Daemon(config, port, tmp_path / "daemon.log")
    process.env = dict.fromkeys(_ALLOCATOR_VARIABLES, "")  # not inherited from the test runner's environment
    try:
        yield process
    finally:
        if process.alive():
            process.stop()


@pytest.mark.timeout(120)
def test_daemon_bounds_arenas_at_start_and_trims_after_the_forecast_pass(daemon: Daemon) -> None:
    daemon.start()
    wait_for(lambda: "malloc_trim after forecast" in daemon.log(), 60, "a trim after the first forecast pass")
    log = daemon.log()
    assert "glibc malloc arenas bounded to 2" in log
    assert "glibc malloc thresholds pinned: mmap 128 KiB, trim 128 KiB" in log
    # the process that serves /metrics is the one started (same PID), re-executed with glibc malloc for objects
    assert "Python's objects in glibc's heap (PYTHONMALLOC=malloc)" in log
    assert environment_of(daemon.pid)["PYTHONMALLOC"] == "malloc"
    assert "glibc's per-thread caches off (GLIBC_TUNABLES=glibc.malloc.tcache_count=0)" in log
    assert environment_of(daemon.pid)["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0"
    assert re.search(r"malloc_trim after forecast: .*RSS [\d.]+ -> [\d.]+ MiB", log), log[-2000:]
    assert daemon.alive()
    assert daemon.stop() == 0


@pytest.mark.timeout(120)
def test_daemon_keeps_the_operators_malloc_arena_max(daemon: Daemon) -> None:
    daemon.env = {**dict.fromkeys(_ALLOCATOR_VARIABLES, ""), "MALLOC_ARENA_MAX": "4"}
    daemon.start()
    wait_for(lambda: "MALLOC_ARENA_MAX=4 set by the environment; kept" in daemon.log(), 30, "the kept setting logged")
    assert "arenas bounded to 2" not in daemon.log()
    assert daemon.stop() == 0


@pytest.mark.timeout(120)
def test_daemon_keeps_the_operators_python_allocator(daemon: Daemon) -> None:
    daemon.env = {**dict.fromkeys(_ALLOCATOR_VARIABLES, ""), "PYTHONMALLOC": "pymalloc"}
    daemon.start()
    wait_for(
        lambda: "PYTHONMALLOC=pymalloc set by the environment; kept" in daemon.log(), 30, "the kept setting logged"
    )
    assert "glibc's heap" not in daemon.log()
    assert environment_of(daemon.pid)["PYTHONMALLOC"] == "pymalloc"
    assert daemon.stop() == 0


@pytest.mark.timeout(120)
def test_daemon_keeps_the_operators_tcache_tunable(daemon: Daemon) -> None:
    tunables = "glibc.malloc.tcache_count=3"
    daemon.env = {**dict.fromkeys(_ALLOCATOR_VARIABLES, ""), "PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": tunables}
    daemon.start()
    wait_for(
        lambda: "glibc.malloc.tcache_count set by the environment; kept" in daemon.log(), 30, "the kept setting logged"
    )
    assert "per-thread caches off" not in daemon.log()
    assert environment_of(daemon.pid)["GLIBC_TUNABLES"] == tunables
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}),
        ({"PYTHONMALLOC": "pymalloc"}, {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}),
        (
            {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.check=0"},
            {"GLIBC_TUNABLES": "glibc.malloc.check=0:glibc.malloc.tcache_count=0"},
        ),
        ({"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}, {}),
    ],
)
def test_startup_environment_adds_only_what_the_operator_did_not_choose(environ, wanted) -> None:
    assert startup_environment(environ) == wanted
