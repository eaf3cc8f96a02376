"""A synthetic estate for the report tests, built on the frame contracts (schema.py and the derived frames).

Every frame is built with its real `FrameSchema` (so a contract change breaks these tests, not
production), and every derived number follows from the consumers: a pool's `allocated` is the sum
of its consumers' requests, growth is how fast consumers were created, the forecast frame's
exhaustion times follow from that growth. History is the real `collector.store.history.History`,
filled through its public `backfill` (pool totals, eight weeks hourly) and `append` (polls).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.forecast.frames import FORECAST, FORECAST_POINTS
from collector.analyses.headroom.frames import HEADROOM, RECLAIMABLE
from collector.contract.schema import CAPACITY, CONSUMERS, HOSTS
from collector.estate import SOURCES, Snapshot
from collector.store.settings import HistoryConfig

GIB = 1024**3
DAY = 86400.0
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)

FLAVORS = {"m1.small": (1, 2 * GIB), "m1.medium": (2, 4 * GIB), "m1.large": (4, 8 * GIB), "m1.xlarge": (8, 16 * GIB)}
SHAPES = {"deployment/web": (0.25, 0.5 * GIB), "deployment/api": (0.5, 1 * GIB), "statefulset/db": (2, 8 * GIB)}


@dataclass
class Pool:
    layer: str
    cloud: str
    pool: str
    source: str
    hosts: int
    target: float
    """Allocated share of allocatable now."""
    growth_days: float
    """Days the pool has been filling up at today's rate (smaller: faster growth)."""

    @property
    def cpu_resource(self) -> str:
        return "vcpu" if self.layer == "openstack" else "cpu"

    @property
    def per_host(self) -> dict[str, tuple[float, float]]:
        """resource -> (capacity, allocation_ratio) of one host."""
        if self.layer == "openstack":
            return {"vcpu": (64.0, 4.0), "memory": (512.0 * GIB, 1.0), "disk": (4000.0 * GIB, 1.0)}
        return {"cpu": (16.0, 1.0), "memory": (64.0 * GIB, 1.0), "pods": (110.0, 1.0)}


@dataclass
class Consumer:
    pool: Pool
    id: str
    host: str
    project: str
    flavor: str
    cpu: float
    memory: float
    created: datetime


@dataclass
class SyntheticEstate:
    now: datetime
    pools: list[Pool]
    consumers: list[Consumer] = field(default_factory=list)
    down_sources: dict[str, timedelta] = field(default_factory=dict)
    """Source -> how long it has been failing (its frames stay, stale)."""

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        now: datetime = NOW,
        clouds: int = 1,
        clusters: int = 1,
        pools_per_cloud: int = 3,
        hosts: int = 6,
        seed: int = 1,
        down_sources: dict[str, timedelta] | None = None,
        consumers: bool = True,
    ) -> SyntheticEstate:
        rng = random.Random(seed)
        pools: list[Pool] = []
        # A spread of urgencies: one pool nearly full and growing fast, one growing, the rest calm.
        profiles = [(0.88, 110.0), (0.70, 160.0), (0.45, 400.0), (0.60, 900.0), (0.30, 2000.0)]
        for c in range(clouds):
            cloud = f"cloud-{chr(ord('a') + c)}"
            for p in range(pools_per_cloud):
                target, days = profiles[(p + c) % len(profiles)]
                pools.append(Pool("openstack", cloud, f"az{p + 1}", f"{cloud}-nova", hosts, target, days))
        for k in range(clusters):
            cluster = f"k8s-{k + 1}"
            for p, name in enumerate(("workers", "batch")[: max(1, min(2, pools_per_cloud))]):
                target, days = profiles[(p + 1 + k) % len(profiles)]
                pools.append(Pool("kubernetes", cluster, name, f"{cluster}-api", hosts, target, days))
        estate = cls(now=now, pools=pools, down_sources=dict(down_sources or {}))
        if consumers:
            for pool in pools:
                estate._fill(pool, rng)
        return estate

    def _fill(self, pool: Pool, rng: random.Random) -> None:
        sizes = FLAVORS if pool.layer == "openstack" else SHAPES
        names = list(sizes)
        capacity, ratio = pool.per_host[pool.cpu_resource]
        allocatable = capacity * ratio * pool.hosts
        goal = pool.target * allocatable
        projects = ["alpha", "beta", "gamma", "delta"] if pool.layer == "openstack" else ["web", "shop", "data"]
        total = 0.0
        n = 0
        while total < goal:
            flavor = rng.choice(names)
            cpu, memory = sizes[flavor]
            if total + cpu > goal:
                break
            # Creation times: uniform over `growth_days` back, so demand grows linearly at today's rate.
            age = rng.random() * pool.growth_days
            project = projects[min(len(projects) - 1, int(rng.random() ** 1.6 * len(projects)))]
            self.consumers.append(
                Consumer(
                    pool=pool,
                    id=f"{pool.cloud}-{pool.pool}-{n:05d}",
                    host=f"{pool.pool}-host-{n % pool.hosts:02d}",
                    project=f"{pool.cloud}-{project}" if pool.layer == "openstack" else project,
                    flavor=flavor,
                    cpu=float(cpu),
                    memory=float(memory),
                    created=self.now - timedelta(days=age),
                )
            )
            total += cpu
            n += 1

    # -- the frames the sources produce ---------------------------------------------------------------

    def host_names(self, pool: Pool) -> list[str]:
        return [f"{pool.pool}-host-{i:02d}" for i in range(pool.hosts)]

    def source_frames(self, when: datetime) -> dict[str, dict[str, pd.DataFrame]]:
        """Per source: capacity, consumers and hosts as polled at `when` (consumers created by then)."""
        out: dict[str, dict[str, list[dict]]] = {}
        alive = [c for c in self.consumers if c.created <= when]
        by_host: dict[tuple[str, str, str], list[Consumer]] = {}
        for consumer in alive:
            by_host.setdefault((consumer.pool.cloud, consumer.pool.pool, consumer.host), []).append(consumer)
        for pool in self.pools:
            records = out.setdefault(pool.source, {"capacity": [], "consumers": [], "hosts": []})
            for host in self.host_names(pool):
                placed = by_host.get((pool.cloud, pool.pool, host), [])
                requested = {
                    pool.cpu_resource: sum(c.cpu for c in placed),
                    "memory": sum(c.memory for c in placed),
                    "disk": sum(40.0 * GIB for _ in placed),
                    "pods": float(len(placed)),
                }
                for resource, (capacity, ratio) in pool.per_host.items():
                    allocated = requested[resource]
                    used = allocated * 0.55 if resource in ("cpu", "vcpu", "memory") else math.nan
                    records["capacity"].append(
                        {
                            "timestamp": when,
                            "source": pool.source,
                            "layer": pool.layer,
                            "cloud": pool.cloud,
                            "pool": pool.pool,
                            "host": host,
                            "scope": "host",
                            "resource": resource,
                            "capacity": capacity,
                            "reserved": 0.0,
                            "allocation_ratio": ratio,
                            "allocatable": capacity * ratio,
                            "allocated": allocated,
                            "used": used,
                        }
                    )
                records["hosts"].append(
                    {
                        "timestamp": when,
                        "source": pool.source,
                        "layer": pool.layer,
                        "cloud": pool.cloud,
                        "pool": pool.pool,
                        "host": host,
                        "schedulable": True,
                        "ready": True,
                        "zone": pool.pool,
                    }
                )
                for c in placed:
                    records["consumers"].append(
                        {
                            "timestamp": when,
                            "source": pool.source,
                            "layer": pool.layer,
                            "cloud": pool.cloud,
                            "pool": pool.pool,
                            "host": host,
                            "id": c.id,
                            "name": c.id,
                            "state": "active" if pool.layer == "openstack" else "running",
                            "holds_capacity": True,
                            "project": c.project,
                            "flavor": c.flavor,
                            "cpu": c.cpu,
                            "memory": c.memory,
                        }
                    )
        return {
            source: {
                "capacity": CAPACITY.build(r["capacity"]),
                "consumers": CONSUMERS.build(r["consumers"]) if r["consumers"] else CONSUMERS.empty(),
                "hosts": HOSTS.build(r["hosts"]),
            }
            for source, r in out.items()
        }

    def sources_frame(self) -> pd.DataFrame:
        rows = []
        for source in sorted({p.source for p in self.pools}):
            down = self.down_sources.get(source)
            kind = "openstack" if source.endswith("nova") else "kubernetes"
            rows.append(
                {
                    "source": source,
                    "kind": kind,
                    "up": down is None,
                    "stale": down is not None,
                    "last_success": self.now - down if down is not None else self.now,
                    "last_attempt": self.now,
                    "last_error": "connection refused by 10.0.0.5:8774" if down is not None else None,
                    "poll_duration_seconds": 1.25,
                }
            )
        return SOURCES.build(rows)

    # -- pool-level truth: what the engine's derived frames would say ---------------------------------

    def pool_allocated(self, pool: Pool, resource: str, when: datetime) -> float:
        values = {"memory": lambda c: c.memory, "disk": lambda c: 40.0 * GIB, "pods": lambda c: 1.0}
        value = values.get(resource, lambda c: c.cpu)
        return float(sum(value(c) for c in self.consumers if c.pool is pool and c.created <= when))

    def pool_allocatable(self, pool: Pool, resource: str) -> float:
        capacity, ratio = pool.per_host[resource]
        return capacity * ratio * pool.hosts

    def growth_per_day(self, pool: Pool, resource: str) -> float:
        now = self.pool_allocated(pool, resource, self.now)
        before = self.pool_allocated(pool, resource, self.now - timedelta(days=28))
        return (now - before) / 28.0

    def derived_frames(self, horizon_days: float = 180.0) -> dict[str, pd.DataFrame]:
        """forecast, forecast_points, headroom and reclaimable consistent with the consumers."""
        forecast, points, headroom, reclaim = [], [], [], []
        days = np.arange(1, int(horizon_days) + 1)
        today = pd.Timestamp(self.now).floor("D")
        for pool in self.pools:
            for resource in pool.per_host:
                limit = self.pool_allocatable(pool, resource)
                for basis, factor in (("allocated", 1.0), ("used", 0.55)):
                    if basis == "used" and resource in ("disk", "pods"):
                        continue
                    current = self.pool_allocated(pool, resource, self.now) * factor
                    growth = self.growth_per_day(pool, resource) * factor
                    seconds = {}
                    for quantile, speed in (("p10", 1.3), ("p50", 1.0), ("p90", 0.75)):
                        rate = growth * speed
                        left = (limit - current) / rate * DAY if rate > 0 else math.inf
                        seconds[quantile] = left if left <= horizon_days * DAY else math.inf
                    forecast.append(
                        {
                            "timestamp": self.now,
                            "layer": pool.layer,
                            "cloud": pool.cloud,
                            "pool": pool.pool,
                            "resource": resource,
                            "basis": basis,
                            "current": current,
                            "limit": limit,
                            **{
                                f"exhaustion_{q}": (self.now + timedelta(seconds=s) if math.isfinite(s) else pd.NaT)
                                for q, s in seconds.items()
                            },
                            **{f"seconds_{q}": s for q, s in seconds.items()},
                            "growth_per_day": growth,
                            "model": "trend_weekly",
                            "mase": 0.82,
                            "history_points": 1344,
                        }
                    )
                    points.append(
                        pd.DataFrame(
                            {
                                "layer": pool.layer,
                                "cloud": pool.cloud,
                                "pool": pool.pool,
                                "resource": resource,
                                "basis": basis,
                                "timestamp": [today + pd.Timedelta(days=int(d)) for d in days],
                                "p10": current + growth * 0.75 * days,
                                "p50": current + growth * days,
                                "p90": current + growth * 1.3 * days,
                            }
                        )
                    )
            sizes = FLAVORS if pool.layer == "openstack" else SHAPES
            cpu_free = self.pool_allocatable(pool, pool.cpu_resource) - self.pool_allocated(
                pool, pool.cpu_resource, self.now
            )
            memory_free = self.pool_allocatable(pool, "memory") - self.pool_allocated(pool, "memory", self.now)
            for shape, (cpu, memory) in sizes.items():
                by_cpu, by_memory = math.floor(cpu_free / cpu), math.floor(memory_free / memory)
                slots = float(max(0, min(by_cpu, by_memory)))
                after = float(math.floor(slots * (pool.hosts - 1) / pool.hosts))
                short = 0.0 if pool.target < 0.85 else 3.0
                headroom.append(
                    {
                        "timestamp": self.now,
                        "layer": pool.layer,
                        "cloud": pool.cloud,
                        "pool": pool.pool,
                        "pool_kind": "az" if pool.layer == "openstack" else "node_pool",
                        "shape": shape,
                        "shape_kind": "flavor" if pool.layer == "openstack" else "pod_shape",
                        "slots": slots,
                        "slots_after_failure": after if short == 0 else 0.0,
                        "failure_domain": f"{pool.pool}-host-00",
                        "shortfall": short,
                        "limiting_resource": pool.cpu_resource if by_cpu <= by_memory else "memory",
                        "hosts": float(pool.hosts),
                    }
                )
            idle = [c for c in self.consumers if c.pool is pool][::9]
            if idle:
                reclaim.append(
                    {
                        "timestamp": self.now,
                        "layer": pool.layer,
                        "cloud": pool.cloud,
                        "pool": pool.pool,
                        "resource": pool.cpu_resource,
                        "amount": sum(c.cpu for c in idle),
                        "consumers": float(len(idle)),
                    }
                )
                reclaim.append(
                    {
                        "timestamp": self.now,
                        "layer": pool.layer,
                        "cloud": pool.cloud,
                        "pool": pool.pool,
                        "resource": "memory",
                        "amount": sum(c.memory for c in idle),
                        "consumers": float(len(idle)),
                    }
                )
        return {
            "forecast": FORECAST.build(forecast),
            "forecast_points": FORECAST_POINTS.coerce(pd.concat(points, ignore_index=True)),
            "headroom": HEADROOM.build(headroom),
            "reclaimable": RECLAIMABLE.build(reclaim) if reclaim else RECLAIMABLE.empty(),
        }

    def snapshot(
        self,
        *,
        derived: bool = True,
        horizon_days: float = 180.0,
        history: Any = None,
        reports: Sequence[Any] = (),
        backtest: bool = False,
        figures: bool = True,
    ) -> Snapshot:
        """The estate's frames; with `derived`, the analyses' frames too: the hand-made headroom and forecasts,
        and the report analysis's figures computed from them as the daemon does (for `reports`' thresholds)."""
        from collector.analyses.forecast import forecast_series
        from collector.analyses.report import current_figures, history_figures, specs_of
        from collector.contract.schema import concat, validate_frame

        frames = concat(self.source_frames(self.now).values())
        frames["sources"] = self.sources_frame()
        if derived:
            frames.update(self.derived_frames(horizon_days))
        if figures:  # the cheap report analysis runs after every poll, before any forecast exists
            specs = specs_of(reports)
            figures = current_figures(frames, history, self.now, specs)
            figures.update(history_figures(frames, history, self.now, specs, forecast_series if backtest else None))
            for name, frame in figures.items():
                validate_frame(name, frame)
            frames.update(figures)
        return Snapshot(taken_at=self.now, frames=frames, statuses=())

    # -- history ----------------------------------------------------------------------------------------

    def pool_history_rows(
        self,
        start: datetime,
        end: datetime,
        step: timedelta = timedelta(hours=1),
        skip: dict[str, tuple[datetime, datetime]] | None = None,
    ) -> pd.DataFrame:
        """Hourly pool totals (History.backfill's input) from the consumers' creation times."""
        stamps = pd.date_range(start, end, freq=step, inclusive="left")
        epoch = stamps.asi8 / 1e9
        parts = []
        for pool in self.pools:
            members = [c for c in self.consumers if c.pool is pool]
            created = np.array([c.created.timestamp() for c in members])
            order = np.argsort(created)
            created = created[order]
            requests = {
                pool.cpu_resource: np.array([c.cpu for c in members])[order],
                "memory": np.array([c.memory for c in members])[order],
                "disk": np.full(len(members), 40.0 * GIB),
                "pods": np.ones(len(members)),
            }
            counts = np.searchsorted(created, epoch, side="right")
            for resource, (capacity, ratio) in pool.per_host.items():
                cumulative = np.concatenate([[0.0], np.cumsum(requests[resource])])
                allocated = cumulative[counts]
                daily = 1 + 0.15 * np.sin(2 * np.pi * (epoch % DAY) / DAY)
                used = allocated * 0.55 * daily if resource in ("cpu", "vcpu", "memory") else np.nan
                frame = pd.DataFrame(
                    {
                        "timestamp": stamps,
                        "source": pool.source,
                        "layer": pool.layer,
                        "cloud": pool.cloud,
                        "pool": pool.pool,
                        "resource": resource,
                        "scope": "host",
                        "capacity": capacity * pool.hosts,
                        "reserved": 0.0,
                        "allocatable": capacity * ratio * pool.hosts,
                        "allocated": allocated,
                        "used": used,
                        "hosts": pool.hosts,
                    }
                )
                if skip and pool.source in skip:
                    low, high = skip[pool.source]
                    frame = frame[(frame["timestamp"] < low) | (frame["timestamp"] >= high)]
                parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def history(self, state_dir: Path, *, days: int = 56, polls: int = 8) -> object:
        """A real History with `days` of hourly pool totals and `polls` daily polls (consumer counts)."""
        from collector.store.history import History

        history = History.open(state_dir, HistoryConfig())
        start = self.now - timedelta(days=days)
        skip = {s: (self.now - d, self.now + timedelta(hours=1)) for s, d in self.down_sources.items()}
        poll_times = [self.now - timedelta(days=i) for i in range(polls - 1, -1, -1)]
        history.backfill(self.pool_history_rows(start, self.now, skip=skip))
        for when in poll_times:
            for source, frames in self.source_frames(when).items():
                if source in self.down_sources and when >= self.now - self.down_sources[source]:
                    continue
                history.append(source, frames, when)
        history.flush()
        return history
