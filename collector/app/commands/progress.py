"""One progress line for the one-off commands (`once`, `forecast`, `report`) while they work.

Polling every source and forecasting take 10-16 s on a real estate; a silent terminal looks hung.
The line (tqdm) shows what the command is doing and for how long, rewritten in place on stderr; it
appears only when stderr is a terminal and only once the command has taken more than `delay`
(1 s), and it is erased when the command ends, so pipes, logs and quick runs see nothing of it.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import IO, Any


class Progress:
    """`with Progress("capacityd forecast") as progress: progress.stage("polling 12 sources") ...`"""

    def __init__(
        self, label: str, *, stream: IO[str] | None = None, delay: float = 1.0, interval: float = 0.25
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.interval = interval
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._stage = ""
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        from tqdm import tqdm

        while not self._stop.wait(self.interval):
            if time.monotonic() - self._started < self.delay:
                continue
            with self._lock:
                if self._bar is None:  # drawn only once the command has taken longer than `delay`
                    self._bar = tqdm(
                        total=None,
                        desc=self._text(),
                        file=self.stream,
                        leave=False,
                        bar_format="{desc} … {elapsed}",
                        ncols=self._width(),
                    )
                    self._bar.start_t = self._bar._time() - (time.monotonic() - self._started)
                self._bar.set_description_str(self._text(), refresh=False)
                self._bar.refresh()

    def _width(self) -> int:
        """The terminal's width (80 when it reports none, as a fresh pseudo-terminal does)."""
        import os

        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns if columns > 0 else 80

    def _text(self) -> str:
        return f"{self.label}: {self._stage}" if self._stage else self.label

    def stage(self, text: str) -> None:
        """What the command does now (shown after the label)."""
        self._stage = text

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()  # erases the line (leave=False)
