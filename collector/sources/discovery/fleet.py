"""A source whose targets are discovered: one long-lived Source per target, with a lifecycle.

`TargetFleet` is the Source the config builds for a libvirt source with `discover:`. Its `poll()`
(used by `capacityd once`) polls every target with bounded concurrency; the daemon instead drives
`refresh()` + `poll_target()` on a per-target schedule (collector/app/targets.py) and publishes
`merged()`. Lifecycle: a new target is polled from its next slot; one that leaves the list has its
connection closed and its frames dropped (its series end) and is listed as `gone` for
`gone_retention`; a disabled one is still polled, its hosts row unschedulable and its state
`disabled`; a failing one only marks itself down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from collector.contract.schema import FrameSet, concat
from collector.contract.targets import TARGETS
from collector.sources.base import PollResult, Source, SourceError
from collector.sources.discovery.file_sd import FileSD
from collector.sources.discovery.nova import targets_from_frames
from collector.sources.discovery.settings import DiscoverConfig
from collector.sources.discovery.targets import Target

log = logging.getLogger(__name__)

Producer = Callable[[], tuple[list[Target], list[str]]]
"""Returns the current targets and the identities dropped as duplicates."""
Inventory = Callable[[], FrameSet | None]
"""Returns the latest frames of the OpenStack source named in `discover.from` (None: not polled yet)."""


@dataclass
class TargetState:
    """One target: its Source (connection reused between polls), its last good frames and its health."""

    target: Target
    source: Source | None
    frames: FrameSet = field(default_factory=dict)
    up: bool = False
    polls_total: int = 0
    errors_total: int = 0
    last_error_reason: str | None = None
    last_success: datetime | None = None
    duration: float | None = None
    gone_since: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state(self) -> str:
        if self.gone_since is not None:
            return "gone"
        return "disabled" if self.target.disabled else "active"


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class TargetFleet(Source):
    """Many targets behind one configured source name."""

    kind = "libvirt"

    def __init__(
        self,
        config: Any,
        make_source: Callable[[Target], Source],
        clock: Callable[[], datetime] | None = None,
        *,
        discover: DiscoverConfig | None = None,
        producer: Producer | None = None,
        relabel: bool = True,
    ):
        """`discover` defaults to `config.discover`; `producer` replaces Nova/file_sd discovery (kubeconfig
        contexts); `relabel` False keeps the targets' own host/pool labels (clusters, not hypervisors)."""
        super().__init__(config)
        self.discover: DiscoverConfig = discover if discover is not None else config.discover
        self._make_source = make_source
        self._clock = clock or (lambda: datetime.now(UTC))
        self._inventory: Inventory | None = None
        self._producer = producer
        self._relabel = relabel
        self._file_sd = (
            FileSD(list(self.discover.file_sd), self.discover.uri, getattr(config, "pool", "default"))
            if self.discover.file_sd
            else None
        )
        self._lock = threading.Lock()
        self.states: dict[str, TargetState] = {}

    # -- discovery and lifecycle ---------------------------------------------------------------

    def set_inventory(self, inventory: Inventory) -> None:
        """Hand in the OpenStack source's latest frames (the app does this; sources never import the estate)."""
        self._inventory = inventory

    def discovered(self) -> tuple[list[Target], list[str]]:
        """The targets the inventory lists now (raises SourceError when there is no inventory yet)."""
        if self._producer is not None:
            return self._producer()
        if self._file_sd is not None:
            return self._file_sd.scan()
        frames = self._inventory() if self._inventory is not None else None
        if frames is None:
            raise SourceError(
                "no_inventory",
                f"source {self.name}: OpenStack source {self.discover.from_!r} has not been polled yet "
                "(or is not a source of this config)",
            )
        return targets_from_frames(frames, str(self.discover.from_), self.discover.uri)

    @property
    def file_sd_errors(self) -> dict[str, str]:
        return dict(self._file_sd.errors) if self._file_sd is not None else {}

    def refresh(self) -> Changes:
        """Apply the inventory to the target set: add, relabel (or reconnect on a new uri), retire, forget."""
        targets, duplicates = self.discovered()
        now = self._clock()
        changes = Changes(duplicates=duplicates)
        wanted = {t.identity: t for t in targets}
        to_close: list[Source] = []
        with self._lock:
            for identity, target in wanted.items():
                state = self.states.get(identity)
                if state is None or state.gone_since is not None:
                    self.states[identity] = TargetState(target, None)
                    changes.added.append(identity)
                elif state.target.key() != target.key():
                    if state.target.uri != target.uri and state.source is not None:
                        to_close.append(state.source)
                        state.source = None
                    state.target = target
                    state.frames = self._relabelled(state.frames, target) if state.frames else {}
                    changes.relabelled.append(identity)
            retention = self.discover.gone_retention
            for identity, state in list(self.states.items()):
                if identity in wanted:
                    continue
                if state.gone_since is None:
                    state.gone_since, state.up, state.frames = now, False, {}
                    if state.source is not None:
                        to_close.append(state.source)
                        state.source = None
                    changes.removed.append(identity)
                elif now - state.gone_since > retention:
                    del self.states[identity]
        for source in to_close:
            _close(source)
        for kind, names in (("new", changes.added), ("gone", changes.removed), ("relabelled", changes.relabelled)):
            if names:
                log.info("source %s: %d %s target(s): %s", self.name, len(names), kind, ", ".join(names[:20]))
        if duplicates:
            log.warning("source %s: duplicate targets ignored: %s", self.name, ", ".join(duplicates[:20]))
        return changes

    def active(self) -> list[str]:
        with self._lock:
            return sorted(i for i, s in self.states.items() if s.gone_since is None)

    # -- polling -------------------------------------------------------------------------------

    def poll_target(self, identity: str, now: datetime) -> PollResult:
        """Poll one target on its own Source; its outcome is recorded on the target only."""
        with self._lock:
            state = self.states.get(identity)
            if state is None or state.gone_since is not None:
                raise SourceError("target_gone", f"target {identity} of {self.name} is not discovered (any more)")
            if state.source is None:
                state.source = self._make_source(state.target)
            source, target = state.source, state.target
        started = time.monotonic()
        with state.lock:  # a target's polls never overlap
            try:
                result = source.checked_poll(now)
            except Exception as error:
                reason = error.reason if isinstance(error, SourceError) else "internal_error"
                with self._lock:
                    state.up, state.polls_total = False, state.polls_total + 1
                    state.errors_total += 1
                    state.last_error_reason = reason
                    state.duration = time.monotonic() - started
                raise
            frames = self._relabelled(result.frames, target)
            with self._lock:
                # Relabelled or reconnected meanwhile: keep what this poll read only if it is still that target's.
                if state.gone_since is None and self.states.get(identity) is state and state.source is source:
                    if state.target is not target:
                        frames = self._relabelled(result.frames, state.target)
                    state.frames = frames
                state.up, state.polls_total = True, state.polls_total + 1
                state.last_success, state.duration = now, time.monotonic() - started
        result.frames = frames
        return result

    def record_failure(self, identity: str, reason: str) -> None:
        """Count a failure the scheduler saw (e.g. `still_running`) against this target only."""
        with self._lock:
            state = self.states.get(identity)
            if state is not None:
                state.errors_total += 1
                state.last_error_reason = reason

    def poll(self, now: datetime) -> PollResult:
        """Discover, then poll every target once (at most `max_concurrency` at a time): `capacityd once`."""
        self.refresh()
        identities = self.active()
        errors: dict[str, str] = {}

        def one(identity: str) -> None:
            try:
                self.poll_target(identity, now)
            except Exception as error:  # noqa: BLE001 - counted against this target only
                errors[identity] = str(error)

        with ThreadPoolExecutor(max_workers=max(1, min(self.discover.max_concurrency, len(identities)))) as pool:
            list(pool.map(one, identities))
        if identities and len(errors) == len(identities):
            first = next(iter(errors.items()))
            raise SourceError(
                "all_targets_down", f"source {self.name}: every target failed, e.g. {first[0]}: {first[1]}"
            )
        result = self.merged(now)
        result.notes.extend(f"target {t}: {e}" for t, e in sorted(errors.items()))
        result.skipped.update({"target_down": len(errors)} if errors else {})
        return result

    def merged(self, now: datetime | None = None) -> PollResult:
        """The last good frames of every current target, plus the `targets` frame."""
        with self._lock:
            parts = [s.frames for s in self.states.values() if s.frames and s.gone_since is None]
            table = self._targets_frame()
        frames = concat(parts)
        frames["targets"] = table
        skipped: Counter[str] = Counter()
        consumers = frames.get("consumers")
        if consumers is not None and len(consumers) and consumers["id"].duplicated().any():
            # A live migration shows the domain on both hosts for a moment: keep the one holding capacity.
            ordered = consumers.sort_values("holds_capacity", ascending=False, kind="stable")
            kept = ordered[~ordered.duplicated(["source", "id"])].sort_index()
            skipped["domain_on_two_targets"] = len(consumers) - len(kept)
            frames["consumers"] = kept.reset_index(drop=True)
        return PollResult(frames=frames, skipped=skipped)

    def _targets_frame(self) -> pd.DataFrame:
        states = sorted(self.states.items())
        if not states:
            return TARGETS.empty()
        columns: dict[str, list[Any]] = {
            "source": [self.name] * len(states),
            "target": [i for i, _ in states],
            "state": [s.state for _, s in states],
            "pool": [s.target.pool for _, s in states],
            "up": [s.up for _, s in states],
            "polls_total": [float(s.polls_total) for _, s in states],
            "errors_total": [float(s.errors_total) for _, s in states],
            "last_error_reason": [s.last_error_reason for _, s in states],
            "last_success": [s.last_success for _, s in states],
            "poll_duration_seconds": [s.duration for _, s in states],
        }
        return TARGETS.build(columns)

    def _relabelled(self, frames: FrameSet, target: Target) -> FrameSet:
        return _relabel(frames, target) if self._relabel else frames

    def close(self) -> None:
        with self._lock:
            sources = [s.source for s in self.states.values() if s.source is not None]
            for state in self.states.values():
                state.source = None
        for source in sources:
            _close(source)


def _close(source: Source) -> None:
    try:
        source.close()
    except Exception:  # closing a dead link must not stop the others
        log.debug("closing %s failed", source.name, exc_info=True)


def _relabel(frames: FrameSet, target: Target) -> FrameSet:
    """A target's frames under its discovered identity: `host` is the target, `pool` its AZ/label,
    and a disabled compute service's hosts row is not schedulable."""
    out: FrameSet = {}
    for name, frame in frames.items():
        if not len(frame):
            out[name] = frame
            continue
        frame = frame.copy()
        if "host" in frame.columns and name != "targets":
            frame["host"] = pd.array([target.identity] * len(frame), dtype=frame["host"].dtype)
        if "pool" in frame.columns:
            frame["pool"] = pd.array([target.pool] * len(frame), dtype=frame["pool"].dtype)
        if name == "hosts" and "schedulable" in frame.columns:
            frame["schedulable"] = not target.disabled
        out[name] = frame
    return out
