"""The weekly report is sent once across a planner fail-over: a send record on the planner Lease itself.

Each planner has its own state dir, so its local send record (exporters/report/store.py) cannot tell a standby
that the old leader already sent this week. The shared record is the annotation `capacityd.io/reports-sent` on the
`<prefix>-planner` Lease: JSON `{report: {"period": key, "state": "sending"|"sent"|"failed", "by": identity}}`.

It is written only by the holder, with the resourceVersion it read (409 otherwise), so a planner that lost the
Lease cannot claim a period any more (fencing), and two planners can never both claim one. The elector keeps the
annotations when it renews or takes the Lease over (leader.py). What it cannot cover: a leader killed between the
SMTP server accepting the mail and its `sent` write leaves "sending"; its successor then sends again (at least
once, not at most once: a lost report is worse than a second copy). docs/scale-out.md, "Reports".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from collector.app.cluster.leader import LeaderElector
from collector.app.cluster.leases import LeaseConflict, LeaseError, LeaseRecord, LeaseStore
from exporters.report.service import GuardUnavailable

log = logging.getLogger(__name__)

ANNOTATION = "capacityd.io/reports-sent"
ATTEMPTS = 4  # conflicts with the elector's own renewals are expected; re-read and try again


class LeaseSendGuard:
    """SendGuard (exporters/report/service.py) backed by the planner Lease the elector holds."""

    shared = True

    def __init__(self, store: LeaseStore, elector: LeaderElector):
        self.store = store
        self.elector = elector

    @staticmethod
    def entries(record: LeaseRecord | None) -> dict[str, dict[str, Any]]:
        """The annotation's per-report entries (empty when absent or unreadable)."""
        if record is None:
            return {}
        try:
            value = json.loads(record.annotations.get(ANNOTATION, "{}"))
        except ValueError:
            log.warning("report guard: annotation %s on %s is not JSON; starting afresh", ANNOTATION, record.name)
            return {}
        return value if isinstance(value, dict) else {}

    def _update(self, report: str, key: str, state: str, *, only_if: tuple[str, ...] = ()) -> bool:
        """Write (report -> key, state) while we hold the Lease; False if we do not, or `only_if` (the states our
        own claim may be in) does not match. Raises GuardUnavailable when the API server cannot be reached."""
        for _ in range(ATTEMPTS):
            if not self.elector.is_leader():
                return False
            try:
                current = self.store.get(self.elector.name)
            except LeaseError as error:
                raise GuardUnavailable(str(error)) from None
            if current is None or current.holder != self.elector.me:
                return False
            entries = self.entries(current)
            entry = entries.get(report) or {}
            if only_if and not (entry.get("period") == key and entry.get("by") == self.elector.me
                                and entry.get("state") in only_if):  # fmt: skip
                return False
            if not only_if and not self._claimable(entry, key):
                return False
            entries[report] = {"period": key, "state": state, "by": self.elector.me}
            annotations = {**current.annotations, ANNOTATION: json.dumps(entries, sort_keys=True)}
            try:
                self.store.write(
                    current.name,
                    self.elector.me,
                    current.duration_seconds,
                    previous=current,
                    transitions=current.transitions,
                    labels=current.labels,
                    annotations=annotations,
                )
            except LeaseConflict:
                continue  # the elector renewed meanwhile (or someone took over): read again
            except LeaseError as error:
                raise GuardUnavailable(str(error)) from None
            return True
        raise GuardUnavailable(f"lease {self.elector.name} kept changing under {ATTEMPTS} attempts")

    def _claimable(self, entry: dict[str, Any], key: str) -> bool:
        period = str(entry.get("period") or "")
        if period > key:  # a later period was handled already: this one is history (keys are UTC ISO texts)
            return False
        if period < key:
            return True
        state = entry.get("state")
        if state == "sent":
            return False
        if state == "sending" and entry.get("by") != self.elector.me:
            # we hold the Lease, so its claimant is gone; it may have died before delivering: send (at least once)
            log.warning("report guard: %s was claimed by %s, which lost the Lease before recording it sent; sending",
                        key, entry.get("by"))  # fmt: skip
        return True

    def claim(self, report: str, key: str) -> bool:
        return self._update(report, key, "sending")

    def sent(self, report: str, key: str) -> None:
        try:
            if not self._update(report, key, "sent", only_if=("sending",)):
                log.error("report guard: %s for %s went out but could not be recorded as sent (Lease lost)",
                          report, key)  # fmt: skip
        except GuardUnavailable as error:
            log.error("report guard: %s for %s went out but could not be recorded as sent: %s", report, key, error)

    def release(self, report: str, key: str) -> None:
        try:
            self._update(report, key, "failed", only_if=("sending",))
        except GuardUnavailable as error:
            log.warning("report guard: could not release %s for %s: %s", report, key, error)

    def last(self, report: str) -> dict[str, Any] | None:
        """The Lease's entry for `report` (for tests and the report CLI); None when absent."""
        try:
            return self.entries(self.store.get(self.elector.name)).get(report)
        except LeaseError:
            return None
