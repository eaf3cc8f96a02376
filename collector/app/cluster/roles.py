"""Roles (`--role collector|planner|all`) and the coordinator the daemon asks "do I poll this target?".

- all (default): today's single process; with `--shard i --total-shards N` it also shards its sources.
- collector: polls only the targets it owns (rendezvous over the shard set) and serves those frames and
  its self-metrics; no headroom, forecasts or reports (a shard's partial view would give wrong numbers).
- planner: polls nothing; runs analyses and exporters only while it holds the planner Lease. A planner
  that loses the Lease re-renders its exposition at once without any planning family.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.app.cluster.leader import LeaderElector
from collector.app.cluster.leases import LeaseConflict, LeaseError, LeaseStore, api_client
from collector.app.cluster.membership import SNAPSHOT_URL, LeaseMembership, StaticMembership
from collector.app.cluster.pool import SharedPollPool
from collector.app.cluster.settings import ClusterConfig
from collector.app.cluster.sharding import assign, owner
from collector.app.cluster.snapshot import SnapshotPuller, SnapshotServing
from collector.estate import Estate, Snapshot
from collector.sources.base import PollResult
from exporters.prometheus.exposition import Exposition, ExpositionCache, SnapshotCollector, render_families

log = logging.getLogger(__name__)


class Coordinator:
    """Shard ownership and planner leadership for one process, from its `cluster:` settings."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        hostname: str | None = None,
        store: LeaseStore | None = None,
        listen: str | None = None,
    ):
        self.config = config
        self.role = config.role
        self.identity = config.identity or hostname or socket.gethostname()
        self.membership: StaticMembership | LeaseMembership | None = None
        self.elector: LeaderElector | None = None
        self._targets: list[str] = []
        self._counts: tuple[tuple[list[str], int], Counter[str]] | None = None
        self._generation = 0
        self._members: list[str] = []
        self._lock = threading.Lock()
        self.puller: SnapshotPuller | None = None
        self._pulled_complete = False
        self.collectors_seen: LeaseMembership | None = None  # planner: collectors' Leases, observed only
        self.advertise_url = config.advertise_url or (f"http://{listen}" if listen else None)
        elects = self.role == "planner" and config.leader_election
        needs_leases = (
            elects
            or (self.role == "planner" and config.membership == "lease")
            or (self.polls and config.membership == "lease")
        )
        if needs_leases and store is None:
            store = LeaseStore(api_client(config.kubeconfig), config.namespace)
        self.lease_store = store
        if self.polls:
            if config.membership == "lease":
                assert store is not None
                self.membership = LeaseMembership(
                    store,
                    self.identity,
                    prefix=config.lease_prefix,
                    duration_seconds=config.lease_duration_seconds,
                    annotations={SNAPSHOT_URL: self.advertise_url} if self.advertise_url else None,
                )
            elif config.membership == "ordinal":
                self.membership = StaticMembership.from_hostname(self.identity, config.total_shards)
            elif config.shard is not None or config.total_shards > 1:
                if config.shard is None:
                    raise ValueError("total_shards > 1 needs shard (or membership: ordinal / lease)")
                self.membership = StaticMembership(config.shard, config.total_shards)
            self._members = self.membership.members() if self.membership is not None else []
        if elects:
            assert store is not None
            self.elector = LeaderElector(
                store, self.identity, prefix=config.lease_prefix, duration_seconds=config.lease_duration_seconds
            )
        if self.role == "planner" and config.membership == "lease":
            assert store is not None
            self.collectors_seen = LeaseMembership(
                store,
                f"planner:{self.identity}",
                prefix=config.lease_prefix,
                duration_seconds=config.lease_duration_seconds,
            )

    @property
    def polls(self) -> bool:
        return self.role in ("all", "collector")

    @property
    def plans(self) -> bool:
        """True while this process should run and serve analyses."""
        if self.role == "collector":
            return False
        return self.elector is None or self.elector.is_leader()

    def report_guard(self) -> Any:
        """The reports' send record shared across planner fail-over (the planner Lease), or None: local only."""
        if self.elector is None or self.lease_store is None:
            return None
        from collector.app.cluster.report_guard import LeaseSendGuard

        return LeaseSendGuard(self.lease_store, self.elector)

    @property
    def me(self) -> str:
        return self.membership.me if self.membership is not None else self.identity

    def poll_pool(self) -> SharedPollPool | None:
        """A collector's bounded worker pool; None keeps today's thread per source (role all)."""
        return SharedPollPool(self.config.workers) if self.role == "collector" else None

    def job_threads(self, default: int) -> int:
        """APScheduler job threads: bounded like the pool for a collector (a job waits at most its timeout)."""
        return min(default, self.config.workers + 4) if self.role == "collector" else default

    def members(self) -> list[str]:
        with self._lock:
            return list(self._members)

    def owns(self, target: str) -> bool:
        """Whether this process polls `target` (a source name today, a discovered target's key later)."""
        if not self.polls:
            return False
        members = self.members()
        return not members or owner(target, members) == self.me

    def owned(self, targets: Iterable[str]) -> list[str]:
        return [t for t in targets if self.owns(t)]

    def set_targets(self, targets: Iterable[str]) -> None:
        """All targets of the deployment (for `capacityd_shard_targets`)."""
        with self._lock:
            self._targets = sorted(set(targets))
            self._generation += 1

    def _shard_counts(self, members: list[str]) -> Counter[str]:
        """Targets per member; recomputed only when the targets or the members change (100k targets: ~0.7 s)."""
        with self._lock:
            if self._counts is not None and self._counts[0] == (members, self._generation):
                return self._counts[1]
            targets, generation = list(self._targets), self._generation
        counts = Counter(assign(targets, members).values()) if members else Counter()
        with self._lock:
            self._counts = ((list(members), generation), counts)
        return counts

    def first_complete_pull(self, estate: Estate) -> bool:
        """True once: the first pull in which every collector answered and every source it lists has data."""
        if self._pulled_complete or self.puller is None or self.puller.last_round_failures:
            return False
        statuses = estate.snapshot().statuses
        self._pulled_complete = bool(statuses) and all(s.last_success is not None for s in statuses)
        return self._pulled_complete

    def collector_urls(self) -> list[str]:
        """Planner: the collectors to pull /snapshot from (configured, plus live collector Leases)."""
        urls = list(self.config.collectors)
        if self.collectors_seen is not None:
            try:
                records = self.collectors_seen.live_records()
            except (LeaseError, LeaseConflict) as error:
                log.warning("planner: cannot list collector Leases: %s", error)
                records = []
            urls += sorted(r.annotations[SNAPSHOT_URL] for r in records if r.annotations.get(SNAPSHOT_URL))
        return list(dict.fromkeys(urls))

    def start(
        self,
        on_members: Callable[[list[str]], None] | None = None,
        on_leader: Callable[[bool], None] | None = None,
        estate: Estate | None = None,
        on_poll: Callable[[str, PollResult, datetime], None] | None = None,
        on_pulled: Callable[[], None] | None = None,
    ) -> None:
        """Start membership, election and (planner) pulling; callbacks run on the coordination threads."""
        if self.role == "planner" and estate is not None and (self.config.collectors or self.collectors_seen):
            self.puller = SnapshotPuller(
                estate,
                self.collector_urls,
                self.config.pull_interval_seconds,
                self.config.pull_timeout_seconds,
                on_poll,
                on_pulled,
            )
            self.puller.start()
        if self.membership is not None:

            def changed(members: list[str]) -> None:
                with self._lock:
                    self._members = list(members)
                if on_members is not None:
                    on_members(members)

            self.membership.start(changed)
        if self.elector is not None:
            self.elector.on_started = (lambda: on_leader(True)) if on_leader else None
            self.elector.on_lost = (lambda: on_leader(False)) if on_leader else None
            self.elector.start()

    def stop(self) -> None:
        if self.puller is not None:
            self.puller.stop()
        if self.elector is not None:
            self.elector.stop()
        if self.membership is not None:
            self.membership.stop()

    # -- self-metrics ------------------------------------------------------------------------------

    def families(self) -> Iterator[Any]:
        info = GaugeMetricFamily(
            "capacityd_cluster_role",
            "1 for this process's role (all, collector, planner).",
            labels=["role", "identity"],
        )
        info.add_metric([self.role, self.identity], 1.0)
        yield info
        if self.membership is not None:
            members = self.members()
            counts = self._shard_counts(members)
            per_shard = GaugeMetricFamily(
                "capacityd_shard_targets",
                "Targets owned by each member of the shard set, as this process sees it.",
                labels=["shard"],
            )
            for member in members:
                per_shard.add_metric([member], float(counts.get(member, 0)))
            yield per_shard
            size = GaugeMetricFamily("capacityd_shard_members", "Members in the shard set this process sees.")
            size.add_metric([], float(len(members)))
            yield size
            mine = GaugeMetricFamily("capacityd_shard_self", "1 for this process's own shard.", labels=["shard"])
            mine.add_metric([self.me], 1.0)
            yield mine
            if isinstance(self.membership, LeaseMembership):
                errors = CounterMetricFamily(
                    "capacityd_cluster_lease_errors", "Failed Lease renewals or listings.", labels=["lease"]
                )
                errors.add_metric(["membership"], float(self.membership.errors_total))
                yield errors
        if self.elector is not None:
            leader = GaugeMetricFamily(
                "capacityd_leader", "1 while this planner holds the planner Lease.", labels=["lease"]
            )
            leader.add_metric([self.elector.name], 1.0 if self.elector.is_leader() else 0.0)
            yield leader


class _Families(Collector):
    def __init__(self, produce: Callable[[], Iterator[Any]]):
        self.produce = produce

    def collect(self) -> Iterator[Any]:
        yield from self.produce()


SELF_FRAMES = ("history_stats", "remote_history_stats", "config_reload", "process_memory")
"""Derived frames a collector serves beside its polled ones: its own history and remote-write health
(`capacityd_history_*`, `capacityd_remote_storage_*`), config reloads and its memory; never an analysis of
its partial view."""


class RoleExpositionCache(ExpositionCache):
    """The /metrics cache of a non-default role: serves only what the role may serve, plus cluster metrics.

    collector: the polled frames (never analyses of its partial view); planner: everything while leading,
    only self-metrics otherwise. `regate()` re-renders the last snapshot at once (leadership lost/won).
    """

    def __init__(self, coordinator: Coordinator, estate: Estate):
        super().__init__()
        self.coordinator = coordinator
        self.estate = estate
        self._last: Snapshot | None = None
        self._render_lock = threading.Lock()
        self._serving = SnapshotServing(estate, coordinator.identity) if coordinator.role == "collector" else None

    def snapshot_document(self, path: str) -> tuple[int, bytes, str] | None:
        """A collector's /snapshot answers (docs/scale-out.md); None on other roles (then 404)."""
        return self._serving.document(path) if self._serving is not None else None

    def _gate(self, snapshot: Snapshot) -> Snapshot:
        if self.coordinator.role == "collector":
            own = {name: snapshot.frames[name] for name in SELF_FRAMES if name in snapshot.frames}
            return Snapshot(snapshot.taken_at, {**self.estate.snapshot().frames, **own}, snapshot.statuses)
        if not self.coordinator.plans:
            return Snapshot(snapshot.taken_at, {}, snapshot.statuses)
        return snapshot

    def update(self, snapshot: Snapshot) -> Exposition:
        with self._render_lock:
            self._last = snapshot
            families = [
                *SnapshotCollector(self._gate(snapshot)).collect(),
                *_Families(self.coordinator.families).collect(),
            ]
            exposition = Exposition.of([render_families(families)])  # the vectorised renderer, as the plain cache
            with self._lock:
                self._current = exposition
            return exposition

    def regate(self) -> None:
        if self._last is not None:
            self.update(self._last)


def exposition_cache(coordinator: Coordinator, estate: Estate) -> ExpositionCache:
    """The plain cache for today's single process; the role-gated one as soon as clustering is configured."""
    if coordinator.role == "all" and coordinator.membership is None:
        return ExpositionCache()
    return RoleExpositionCache(coordinator, estate)
