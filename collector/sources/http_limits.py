"""Bounded reads of HTTP answers: a size cap and a wall-clock deadline (issue 12, "source I/O").

A source that reads an answer with `response.data` trusts the server twice: that the body is of a
sane size (a 100 MB answer is held whole in memory), and that it arrives in time (urllib3's read
timeout bounds each `recv`, so a server dripping one byte per second keeps a poll busy for hours).
`read_bounded` reads a urllib3 response (`preload_content=False`) in pieces:

* a `Content-Length` above the cap is refused before any byte of the body is read, and a body that
  grows past it is refused at that point (`ResponseTooLarge`, reason `too_large`);
* a shared watchdog thread shuts the socket down at the deadline, which ends a blocked read at once
  (`DeadlineExceeded`, reason `timeout`);
* a body that ends before its declared length, or a chunked body cut off, is `ResponseTruncated`
  (reason `malformed`), not a transport or internal error.

Each error's `reason` is the `capacityd_source_errors_total` reason label (docs/metrics.md). Any
urllib3-based source may use this module (it imports only urllib3 and the standard library).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from typing import ClassVar

import urllib3

__all__ = [
    "DeadlineExceeded",
    "ResponseLimitError",
    "ResponseTooLarge",
    "ResponseTruncated",
    "read_bounded",
    "remaining",
]

_CHUNK = 256 * 1024


class ResponseLimitError(Exception):
    """An answer refused by a limit; `reason` is the source-error reason it maps to."""

    reason: ClassVar[str] = "malformed"


class ResponseTooLarge(ResponseLimitError):
    reason = "too_large"


class ResponseTruncated(ResponseLimitError):
    reason = "malformed"


class DeadlineExceeded(ResponseLimitError):
    reason = "timeout"


def remaining(deadline: float | None, what: str = "the poll") -> float | None:
    """Seconds left before `deadline` (time.monotonic()), or None without one; raises once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what} ran out of time (per-poll deadline)")
    return left


class _Guard:
    __slots__ = ("cancelled", "fired", "response")

    def __init__(self, response: urllib3.BaseHTTPResponse):
        self.response: urllib3.BaseHTTPResponse | None = response
        self.fired = False
        self.cancelled = False


class _Watchdog:
    """One daemon thread for every armed read: a heap of deadlines, so arming costs no thread per request."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Guard]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, response: urllib3.BaseHTTPResponse) -> _Guard:
        guard = _Guard(response)
        with self._wake:
            heapq.heappush(self._heap, (deadline, next(self._counter), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._wake.notify()
        return guard

    def disarm(self, guard: _Guard) -> None:
        with self._wake:
            guard.cancelled = True
            guard.response = None  # (the heap entry is dropped when its time comes)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                deadline, _, guard = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if guard.cancelled or guard.response is None:
                    continue
                guard.fired = True
                response = guard.response
            _shutdown(response)


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Unblock a read in progress in another thread (urllib3 >= 2.3: shutdown(SHUT_RD) of its socket)."""
    with contextlib.suppress(ValueError, RuntimeError, OSError, AttributeError):
        response.shutdown()


_WATCHDOG = _Watchdog()


def read_bounded(
    response: urllib3.BaseHTTPResponse, *, max_bytes: int, deadline: float | None = None, what: str = "answer"
) -> bytes:
    """The whole body of `response`, at most `max_bytes`, read before `deadline` (time.monotonic()).

    Raises `ResponseTooLarge`, `ResponseTruncated` or `DeadlineExceeded` (whose messages name `what`
    and the limit); other transport errors propagate unchanged. The connection goes back to its pool
    only after a complete read; after any error it is closed, so no half-read answer is reused.
    """
    complete = False
    try:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(
                f"{what}: {int(declared)} bytes announced, more than the limit of {_size(max_bytes)}"
            )
        guard = None
        if deadline is not None:
            remaining(deadline, what)
            guard = _WATCHDOG.arm(deadline, response)
        try:
            chunks: list[bytes] = []
            size = 0
            while True:
                try:
                    chunk = response.read1(_CHUNK)
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as error:
                    if guard is not None and guard.fired:
                        raise DeadlineExceeded(f"{what}: not complete by the per-poll deadline") from None
                    raise ResponseTruncated(f"{what}: the body ended early ({_short(error)})") from None
                except (urllib3.exceptions.HTTPError, OSError):
                    if guard is not None and guard.fired:
                        raise DeadlineExceeded(f"{what}: not complete by the per-poll deadline") from None
                    raise
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ResponseTooLarge(f"{what}: body larger than the limit of {_size(max_bytes)}")
                chunks.append(chunk)
        finally:
            if guard is not None:
                _WATCHDOG.disarm(guard)
        if guard is not None and guard.fired:
            raise DeadlineExceeded(f"{what}: not complete by the per-poll deadline")
        complete = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if not complete:
            response.close()
        response.release_conn()


def _size(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 160 else text[:160] + "..."
