"""A bounded poll worker pool for collectors that own thousands of targets.

The default daemon gives every source its own poll thread (plus an APScheduler job thread): fine for
tens of sources, ~200k threads for 100k libvirt targets. A collector instead shares `workers` threads
between all its targets. The interface is deliberately small so fleet discovery's per-target
scheduling can drive it: `submit(poll)` returns a Future; the runner keeps "at most one poll in
flight per target" (a queued or running future is in flight) and cancels a poll still *queued*
when its timeout passes, so a saturated pool sheds load instead of piling it up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class PollExecutor(Protocol):
    """What a SourceRunner needs from whoever runs its polls."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class SharedPollPool:
    """`workers` threads shared by every target; `shutdown` from one target's runner is a no-op.

    Only the owner (the daemon) really stops it, through `close()`.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll-pool")
        self._lock = threading.Lock()
        self.submitted_total = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            self.submitted_total += 1
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """A runner closing its source must not stop the others' polls."""
        return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
