"""The small interface every source implements (one folder per kind under collector/sources/).

A source turns one remote system into frames of the normalized schema (collector/contract/schema.py).
It keeps its own long-lived connection, is polled by the scheduler from one dedicated thread, and
reports trouble in two ways:

* a `SourceError` (with a short machine-readable `reason`) when the poll as a whole failed —
  the daemon keeps the last good frames, marks them stale and counts
  `capacityd_source_errors_total{reason}`;
* `PollResult.skipped` for single items it had to leave out (a domain that vanished, a node whose
  kubelet timed out) — the poll still succeeds, and the count is exported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from collector.contract.schema import FrameSet, validate


class SourceError(Exception):
    """A poll that failed as a whole. `reason` becomes the `reason` label (snake_case, low cardinality)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass
class PollResult:
    frames: FrameSet
    skipped: Counter[str] = field(default_factory=Counter)
    """Items left out of this poll, by reason (e.g. {'domain_vanished': 2})."""
    api_calls: int | None = None
    """Remote calls this poll made (exported as capacityd_source_api_calls)."""
    notes: list[str] = field(default_factory=list)
    """Human-readable warnings for the log (already free of secrets)."""


class Source(ABC):
    """One configured source. Subclasses set `kind` and implement `poll`."""

    kind: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config
        self.name: str = config.name

    @abstractmethod
    def poll(self, now: datetime) -> PollResult:
        """Read the remote system once and return validated frames stamped with `now` (UTC)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called on shutdown and before a config reload replaces the source."""

    def checked_poll(self, now: datetime) -> PollResult:
        """`poll`, then enforce the frame contract so a broken source never reaches history."""
        result = self.poll(now)
        try:
            validate(result.frames)
        except ValueError as error:
            raise SourceError("invalid_frame", f"source {self.name} produced an invalid frame: {error}") from error
        return result
