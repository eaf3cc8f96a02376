"""Keep the daemon's resident memory flat: bound glibc's malloc arenas and hand freed heap back to the OS.

Why: a soak showed RSS climbing ~18 MiB/h while Python's own objects (tracemalloc) stayed flat. Each forecast
pass allocates and frees hundreds of MiB of numpy/pandas buffers from many threads (pollers, HTTP handlers,
the forecast job); glibc gives every contending thread its own arena (up to 8 per core) and keeps freed
chunks inside each of them, so the heap fragments and is never returned. Two arenas and an explicit
`malloc_trim(0)` after every forecast pass (and once a minute) keep it bounded.

That was not enough (an hour's soak still grew ~10 MiB/h, in steps of ~5 MiB at forecast passes), and two more
settings cut it to ~4 MiB/h (bench/bench_memory.py, docs/operations.md "Memory"):

* Python's small-object allocator (pymalloc) gained one or two 1 MiB arenas per pass while the bytes in its blocks
  stayed flat: a pass's short-lived objects interleave with the results that are kept, and an arena goes back to
  the OS only when wholly empty. Under `PYTHONMALLOC=malloc` Python's objects live in glibc's heap, whose free
  pages `malloc_trim` returns whatever lies around them.
* glibc raises its mmap threshold to the largest mmapped block freed (up to 32 MiB) and its trim threshold to
  twice that; after the first pass the pass's big buffers land inside the arenas. Pinned at glibc's own starting
  values (128 KiB), they stay in mmaps and are unmapped on free.

Sixteen passes back to back: RSS +1.9 MiB with both, +10.3 MiB without (each pass ~25 % slower; one runs every
15 minutes).

What was left after those: bytes glibc counts in use climbing while no live allocation grew. glibc's per-thread
caches (tcache) keep up to seven freed blocks of each small size per thread, counted in use; with Python's
objects in glibc's heap each thread (pollers, HTTP request threads, the scheduler's) fills its own. The daemon
turns them off (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`, read by glibc at start, hence set with PYTHONMALLOC
in the same re-exec): in a daemon without passes, in-use bytes stayed at 118.5 MiB for 12 minutes instead of
climbing 120.4 -> 121.0 MiB, and started 2 MiB lower.

Everything here is a no-op off glibc (musl, macOS): `libc()` is None there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from collections.abc import Mapping
from functools import cache

import pandas as pd

from collector.contract.schema import FLOAT, STRING, Column, FrameSchema, register

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
"""glibc's mallopt() parameter numbers (malloc.h)."""
ARENA_MAX = 2
"""Arenas when the operator did not set MALLOC_ARENA_MAX: enough for a few busy threads, little fragmentation."""
MMAP_THRESHOLD = TRIM_THRESHOLD = 128 * 1024
"""Bytes: glibc's starting values, pinned (setting them turns glibc's dynamic raising of both off)."""
TCACHE_TUNABLE = "glibc.malloc.tcache_count"
NO_TCACHE = f"{TCACHE_TUNABLE}=0"
"""glibc's per-thread cache of freed blocks, turned off (see the module's docstring)."""
REEXECUTED = "CAPACITYD_ALLOCATOR_REEXECUTED"
"""Set in the re-executed process: it never re-executes twice, whatever glibc made of GLIBC_TUNABLES."""
THRESHOLD_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
"""Environment variables by which an operator sets the thresholds; `GLIBC_TUNABLES` with glibc.malloc.* too."""
ALLOCATOR_ENVIRONMENT = ("PYTHONMALLOC", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", REEXECUTED, *THRESHOLD_ENVIRONMENT)
"""Every variable by which the environment overrides the daemon's allocator settings (benches and tests clear them)."""
TRIM_INTERVAL = 60.0
"""Seconds between two periodic trims (besides the one after each forecast pass)."""


@cache
def libc() -> ctypes.CDLL | None:
    """glibc, or None where malloc is not glibc's (then there is nothing to tune)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


_MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


def heap() -> tuple[int, int, int] | None:
    """glibc's heap: (bytes in use, bytes free inside the arenas, bytes in mmapped chunks); None off glibc < 2.33.

    Free bytes that grow while in-use bytes stay flat is fragmentation; in-use bytes that grow is a leak.
    """
    lib = libc()
    mallinfo2 = getattr(lib, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks), int(info.fordblks), int(info.hblkhd)


@cache
def _libsqlite() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_status64.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


def sqlite_bytes() -> int | None:
    """Bytes SQLite holds (page caches of every history connection, statements): part of the heap in use."""
    lib = _libsqlite()
    if lib is None:
        return None
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    if lib.sqlite3_status64(0, ctypes.byref(current), ctypes.byref(highwater), 0) != 0:  # SQLITE_STATUS_MEMORY_USED
        return None
    return int(current.value)


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _resident_fields() -> dict[str, int]:
    """VmRSS and its split (RssAnon, RssFile, RssShmem) in bytes, from one read of /proc/self/status; empty
    where it cannot be read (no /proc), without the split on Linux < 4.5."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    fields[name] = int(value.split()[0]) * 1024  # "kB" in the kernel's sense: KiB
    except (OSError, ValueError, IndexError):
        return {}
    return fields


def glibc_tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """`GLIBC_TUNABLES` as name -> value (`glibc.malloc.tcache_count=0:...`, glibc's own syntax)."""
    pairs = (item.partition("=") for item in environ.get("GLIBC_TUNABLES", "").split(":") if item)
    return {name: value for name, _, value in pairs}


def startup_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `environ` so the interpreter starts with the daemon's allocator settings: Python's
    objects in glibc's heap (`PYTHONMALLOC=malloc`) and glibc's per-thread caches off
    (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`); empty when the environment already chose both.

    Each is the operator's to choose: PYTHONMALLOC set to anything, or a `glibc.malloc.tcache_count` of their
    own in GLIBC_TUNABLES, is kept (other tunables there are kept too, ours appended).
    """
    wanted: dict[str, str] = {}
    if not environ.get("PYTHONMALLOC"):
        wanted["PYTHONMALLOC"] = "malloc"
    if TCACHE_TUNABLE not in glibc_tunables(environ):
        tunables = environ.get("GLIBC_TUNABLES", "")
        wanted["GLIBC_TUNABLES"] = f"{tunables}:{NO_TCACHE}" if tunables else NO_TCACHE
    return wanted


def reexec_with_allocator_settings() -> None:
    """Re-execute this very command (same PID) with `startup_environment`'s variables when any is missing.

    Both are read when the process starts (the allocator by Python, the tunables by glibc), so only a re-exec can
    change them; call this first thing, before threads start, and only from a process's entry point (it replaces
    the running program). The systemd unit sets both itself, so there is no re-exec there. Off glibc nothing
    happens. Silent but at debug level: the daemon says what it runs with once its config is loaded
    (`log_allocator_settings`), so a broken config prints only its errors.
    """
    if libc() is None or os.environ.get(REEXECUTED):
        return
    wanted = startup_environment(os.environ)
    if not wanted:
        return
    command = list(sys.orig_argv)  # the interpreter's own arguments: `-m collector run ...`, or the script's path
    if not sys.executable or not command:  # an embedding interpreter: nothing to re-execute
        log.warning("memory: cannot re-execute %r; allocator settings left as they are", sys.executable)
        return
    log.debug("memory: re-executing with %s", " ".join(f"{k}={v}" for k, v in wanted.items()))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, command, {**os.environ, **wanted, REEXECUTED: "1"})
    except OSError as error:  # the interpreter's file replaced or gone since start: run on as we are
        log.warning("memory: cannot re-execute %s (%s); allocator settings left as they are", sys.executable, error)


def log_allocator_settings() -> str:
    """Log which allocator holds Python's objects (glibc's heap under PYTHONMALLOC=malloc) and whether glibc's
    per-thread caches are off; the allocator's name."""
    chosen = os.environ.get("PYTHONMALLOC") or "pymalloc"
    if chosen == "malloc":
        log.info("memory: Python's objects in glibc's heap (PYTHONMALLOC=malloc)")
    else:
        log.info("memory: PYTHONMALLOC=%s set by the environment; kept", chosen)
    tcache = glibc_tunables(os.environ).get(TCACHE_TUNABLE)
    if tcache == "0":
        log.info("memory: glibc's per-thread caches off (GLIBC_TUNABLES=%s)", NO_TCACHE)
    elif tcache is not None:
        log.info("memory: %s set by the environment; kept", TCACHE_TUNABLE)
    return chosen


def bound_arenas(limit: int = ARENA_MAX) -> int | None:
    """Limit glibc's malloc arenas to `limit`, unless MALLOC_ARENA_MAX is set; the limit applied, or None.

    Call it early, before the daemon's threads start allocating: arenas already created are not merged.
    """
    lib = libc()
    if lib is None:
        log.debug("memory: not glibc; malloc arenas left as they are")
        return None
    if os.environ.get("MALLOC_ARENA_MAX"):  # glibc read it at start; the operator's choice wins
        log.info("memory: MALLOC_ARENA_MAX=%s set by the environment; kept", os.environ["MALLOC_ARENA_MAX"])
        return None
    if lib.mallopt(M_ARENA_MAX, limit) != 1:
        log.warning("memory: mallopt(M_ARENA_MAX, %d) failed; malloc arenas left as they are", limit)
        return None
    log.info("memory: glibc malloc arenas bounded to %d (set MALLOC_ARENA_MAX to choose)", limit)
    return limit


def pin_thresholds(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Pin glibc's mmap and trim thresholds (bytes), unless the environment sets either; True when applied.

    With them pinned, blocks of `mmap_threshold` bytes or more are mmapped and unmapped on free, and free()
    shrinks an arena's top once it exceeds `trim_threshold`, so a forecast pass's buffers leave nothing behind.
    The cost is a page fault per page of each big buffer on every use (with PYTHONMALLOC=malloc, a forecast pass
    ~25 % slower; it runs every 15 min).
    """
    lib = libc()
    if lib is None:
        return False
    tunables = glibc_tunables(os.environ)
    chosen = [name for name in THRESHOLD_ENVIRONMENT if os.environ.get(name)]
    chosen += [name for name in ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold") if name in tunables]
    if chosen:
        log.info("memory: %s set by the environment; malloc thresholds kept", ", ".join(chosen))
        return False
    if lib.mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1 or lib.mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1:
        log.warning("memory: mallopt could not pin the malloc thresholds; left to glibc")
        return False
    log.info(
        "memory: glibc malloc thresholds pinned: mmap %d KiB, trim %d KiB",
        mmap_threshold // 1024,
        trim_threshold // 1024,
    )
    return True


def trim(why: str = "periodic") -> int:
    """Return free heap pages to the OS (glibc `malloc_trim(0)`); the bytes RSS dropped by (0 off glibc)."""
    lib = libc()
    if lib is None:
        return 0
    before = rss_bytes()
    released = lib.malloc_trim(0)
    after = rss_bytes()
    if log.isEnabledFor(logging.DEBUG):
        in_use, free, mmapped = heap() or (0, 0, 0)
        log.debug(
            "memory: malloc_trim after %s: %s, RSS %.1f -> %.1f MiB; heap in use %.1f MiB, free %.1f MiB, "
            "mmapped %.1f MiB (SQLite %.1f MiB)",
            why,
            "released" if released else "nothing to release",
            before / 2**20,
            after / 2**20,
            in_use / 2**20,
            free / 2**20,
            mmapped / 2**20,
            (sqlite_bytes() or 0) / 2**20,
        )
    return max(0, before - after)


PROCESS_MEMORY = register(
    FrameSchema(
        name="process_memory",
        doc="Where the daemon's memory is, derived by the daemon at each refresh (exported as capacityd_memory_bytes).",
        columns=(
            Column(
                "part",
                STRING,
                "resident, resident_anonymous, resident_file, malloc_in_use, malloc_free, malloc_mmapped or sqlite "
                "(see memory.py).",
            ),
            Column("bytes", FLOAT, "Bytes in that part."),
        ),
    )
)
"""Why: RSS alone cannot tell a leak from a cache filling up. `sqlite` (the page caches of the history
connections, bounded by their cache_size but growing with the file until then) is part of `malloc_in_use`;
`malloc_free` is freed heap glibc still holds (fragmentation); Python's objects are in `malloc_in_use` under
PYTHONMALLOC=malloc; `resident_anonymous` minus the malloc parts is thread stacks (and pymalloc's arenas where an
operator chose it); `resident_file` is code and mapped files (it grows as code paths are first run, then stays)."""


def frame() -> pd.DataFrame:
    """This process's memory by part, as a `process_memory` frame (parts glibc or SQLite cannot tell are left out)."""
    resident = _resident_fields()
    parts: dict[str, int] = {"resident": resident.get("VmRSS", 0) or rss_bytes()}
    if "RssAnon" in resident and "RssFile" in resident:  # anonymous: heap, arenas, stacks; file: code, mmaps
        parts["resident_anonymous"] = resident["RssAnon"]
        parts["resident_file"] = resident["RssFile"] + resident.get("RssShmem", 0)
    malloc = heap()
    if malloc is not None:
        parts["malloc_in_use"], parts["malloc_free"], parts["malloc_mmapped"] = malloc
    sqlite = sqlite_bytes()
    if sqlite is not None:
        parts["sqlite"] = sqlite
    return pd.DataFrame(
        {
            "part": pd.array(list(parts), dtype="string"),
            "bytes": pd.array([float(value) for value in parts.values()], dtype="float64"),
        }
    )
