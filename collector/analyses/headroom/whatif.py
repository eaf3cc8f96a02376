"""What-if: apply planned changes to the frames, then recompute headroom and exhaustion dates.

Scenarios (one per `--what-if`, applied in order, case-insensitive):

    add N hosts like HOST      (or "+N hosts like HOST")   N copies of HOST, empty
    remove N hosts like HOST   (or "-N hosts like HOST")   HOST and hosts of identical size in its pool
                                                           go; their consumers are re-placed (N+1 rules)
    add N SHAPE                (or "+N SHAPE")             N more VMs of a flavor / pods of a pod shape,
                                                           placed first-fit on eligible hosts
    +P% demand                 (or "-P% demand")           every host's allocations scaled by 1 + P/100

The same engine then recomputes headroom on the changed frames. For exhaustion dates the pool
series from history are shifted: `limit` by the capacity a scenario adds or removes, `value` by the
demand it adds (allocated basis: the placed requests; used basis: the same times the pool's current
used/allocated ratio), or scaled by the demand factor. `forecast_series` then runs on both.

Over 500 lines on purpose: parsing a scenario, applying it to every layer's frames and re-running headroom and
forecasts on both sides are one transaction on the same copied frames.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.engine import HeadroomReport, compute_headroom
from collector.analyses.headroom.failure import replace_consumers
from collector.analyses.headroom.model import HostTable, build_host_tables, consumer_requests
from collector.analyses.headroom.pods import pod_classes
from collector.analyses.headroom.shapes import ConsumerClasses
from collector.analyses.headroom.vm import build_isolation, read_aggregates, read_flavors, vm_classes
from collector.contract.schema import FrameSet

PoolKey = tuple[str, str, str, str]
"""(layer, cloud, pool, resource)"""


class ScenarioError(ValueError):
    """A what-if scenario that cannot be parsed or applied; the message says what to write instead."""


@dataclass(frozen=True)
class AddHosts:
    count: int
    like: str

    def __str__(self) -> str:
        return f"add {self.count} hosts like {self.like}"


@dataclass(frozen=True)
class RemoveHosts:
    count: int
    like: str

    def __str__(self) -> str:
        return f"remove {self.count} hosts like {self.like}"


@dataclass(frozen=True)
class AddConsumers:
    count: int
    shape: str

    def __str__(self) -> str:
        return f"add {self.count} {self.shape}"


@dataclass(frozen=True)
class ScaleDemand:
    percent: float

    def __str__(self) -> str:
        return f"{self.percent:+g}% demand"


Scenario = AddHosts | RemoveHosts | AddConsumers | ScaleDemand

FORMS = ('"add N hosts like HOST"', '"remove N hosts like HOST"', '"add N FLAVOR_OR_SHAPE"', '"+P% demand"')
_HOSTS = re.compile(r"^(add|remove|\+|-)\s*(\S+)\s+hosts?\s+like\s+(\S+)$", re.IGNORECASE)
_DEMAND = re.compile(r"^([+-]?)\s*(\S+?)\s*%\s*demand$", re.IGNORECASE)
_ADD = re.compile(r"^(add|\+)\s*(\S+)\s+(\S+)$", re.IGNORECASE)


def _count(text: str, scenario: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ScenarioError(f"{scenario!r}: {text!r} is not a whole number of at least 1")
    return int(text)


def parse_scenario(text: str) -> Scenario:
    """Parse one scenario; raises ScenarioError naming the problem and the accepted forms."""
    scenario = " ".join(str(text).split())
    if not scenario:
        raise ScenarioError(f"empty what-if scenario; use one of {', '.join(FORMS)}")
    if match := _HOSTS.match(scenario):
        verb, count, like = match.groups()
        n = _count(count, scenario)
        return AddHosts(n, like) if verb.lower() in ("add", "+") else RemoveHosts(n, like)
    if match := _DEMAND.match(scenario):
        sign, number = match.groups()
        try:
            percent = float(number)
        except ValueError:
            raise ScenarioError(f"{scenario!r}: {number!r} is not a percentage") from None
        percent = -percent if sign == "-" else percent
        if not math.isfinite(percent) or percent <= -100:
            raise ScenarioError(f"{scenario!r}: demand can change by more than -100 % only")
        return ScaleDemand(percent)
    if match := _ADD.match(scenario):
        _, count, shape = match.groups()
        return AddConsumers(_count(count, scenario), shape)
    raise ScenarioError(f"cannot read what-if {scenario!r}; use one of {', '.join(FORMS)}")


@dataclass
class Effect:
    """What one scenario changed, for the report and for shifting the forecast inputs."""

    scenario: str
    capacity_delta: dict[PoolKey, float] = field(default_factory=lambda: defaultdict(float))
    demand_delta: dict[PoolKey, float] = field(default_factory=lambda: defaultdict(float))
    demand_factor: float = 1.0
    used_share: dict[PoolKey, float] = field(default_factory=dict)
    """Pools where the share of new demand that gets used is known from this estate (hypervisor layer)."""
    unplaced: int = 0
    notes: list[str] = field(default_factory=list)


def apply_scenarios(
    frames: FrameSet, scenarios: list[Scenario], config: Any, now: datetime | None = None
) -> tuple[FrameSet, list[Effect]]:
    """The frames after every scenario, in order, and what each one did."""
    now = now or datetime.now(UTC)
    frames = {name: frame.copy() for name, frame in frames.items()}
    effects = []
    for scenario in scenarios:
        effect = Effect(str(scenario))
        if isinstance(scenario, AddHosts):
            frames = _add_hosts(frames, scenario, effect)
        elif isinstance(scenario, RemoveHosts):
            frames = _remove_hosts(frames, scenario, effect, config)
        elif isinstance(scenario, AddConsumers):
            frames = _add_consumers(frames, scenario, effect, config, now)
        else:
            frames = _scale_demand(frames, scenario, effect)
        effects.append(effect)
    return frames, effects


# --- hosts ----------------------------------------------------------------------------------------


def _host_layers(frames: FrameSet, name: str) -> list[str]:
    capacity, hosts = frames.get("capacity"), frames.get("hosts")
    layers: set[str] = set()
    for frame in (capacity, hosts):
        if frame is not None and len(frame):
            layers |= set(frame.loc[frame["host"].astype(str) == name, "layer"].astype(str))
    return sorted(layers, key=lambda layer: ("openstack", "kubernetes", "hypervisor").index(layer))


def _unknown_host(frames: FrameSet, name: str) -> ScenarioError:
    hosts = frames.get("hosts")
    known = sorted(set(hosts["host"].astype(str))) if hosts is not None and len(hosts) else []
    sample = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return ScenarioError(f"no host named {name!r}" + (f" (hosts: {sample})" if known else " (no hosts known)"))


def _add_hosts(frames: FrameSet, scenario: AddHosts, effect: Effect) -> FrameSet:
    layers = _host_layers(frames, scenario.like)
    if not layers:
        raise _unknown_host(frames, scenario.like)
    capacity, hosts = frames["capacity"], frames.get("hosts")
    template = capacity[capacity["host"].astype(str) == scenario.like]
    new_capacity, new_hosts = [capacity], [hosts] if hosts is not None else []
    existing = set(capacity["host"].astype(str)) | (set(hosts["host"].astype(str)) if hosts is not None else set())
    made = 0
    serial = 0
    while made < scenario.count:
        serial += 1
        name = f"{scenario.like}+{serial}"
        if name in existing:
            continue
        made += 1
        copy = template.assign(host=name, allocated=np.where(template["allocated"].isna(), np.nan, 0.0), used=np.nan)
        new_capacity.append(copy)
        if hosts is not None:
            rows = hosts[hosts["host"].astype(str) == scenario.like]
            new_hosts.append(rows.assign(host=name, host_id=None, nova_server_id=None, schedulable=True, ready=True))
    for record in template[template["scope"] == "host"].to_dict("records"):
        key = (str(record["layer"]), str(record["cloud"]), str(record["pool"]), str(record["resource"]))
        effect.capacity_delta[key] += scenario.count * float(record["allocatable"])
    out = dict(frames)
    out["capacity"] = _concat(new_capacity, capacity)
    if hosts is not None:
        out["hosts"] = _concat(new_hosts, hosts)
    if layers:
        effect.notes.append(f"added {scenario.count} copies of {scenario.like} ({', '.join(layers)})")
    return out


def _concat(parts: list[pd.DataFrame], like: pd.DataFrame) -> pd.DataFrame:
    dtypes = like.dtypes.to_dict()
    parts = [p[list(like.columns)].astype(dtypes) for p in parts if len(p)] or [like]
    return pd.concat(parts, ignore_index=True).astype(dtypes)


def _signature(capacity: pd.DataFrame, layer: str, host: str) -> tuple[tuple[str, float], ...]:
    rows = capacity[(capacity["layer"] == layer) & (capacity["host"].astype(str) == host)]
    return tuple(
        sorted((str(r), round(float(a), 3)) for r, a in zip(rows["resource"], rows["allocatable"], strict=True))
    )


def _remove_hosts(frames: FrameSet, scenario: RemoveHosts, effect: Effect, config: Any) -> FrameSet:
    layers = _host_layers(frames, scenario.like)
    if not layers:
        raise _unknown_host(frames, scenario.like)
    layer = layers[0]
    capacity = frames["capacity"]
    mine = capacity[(capacity["layer"] == layer) & (capacity["host"].astype(str) == scenario.like)]
    cloud, pool = str(mine["cloud"].iloc[0]), str(mine["pool"].iloc[0])
    wanted = _signature(capacity, layer, scenario.like)
    peers = capacity[
        (capacity["layer"] == layer)
        & (capacity["cloud"] == cloud)
        & (capacity["pool"] == pool)
        & (capacity["scope"] == "host")
    ]
    candidates = []
    for host, rows in peers.groupby(peers["host"].astype(str)):
        if host != scenario.like and _signature(capacity, layer, host) == wanted:
            used = rows["allocated"].fillna(0) / rows["allocatable"].replace(0, np.nan)
            share = float(np.nan_to_num(used.max(skipna=True)))
            candidates.append((share, host))
    chosen = [scenario.like, *[host for _, host in sorted(candidates)][: scenario.count - 1]]
    if len(chosen) < scenario.count:
        raise ScenarioError(f"{scenario}: only {len(chosen)} host(s) in {cloud}/{pool} are like {scenario.like}")
    frames = _evacuate(frames, layer, cloud, set(chosen), effect, config)
    capacity, hosts = frames["capacity"], frames.get("hosts")
    gone = capacity["host"].astype(str).isin(chosen) & (capacity["scope"] == "host")
    for record in capacity[gone].to_dict("records"):
        key = (str(record["layer"]), str(record["cloud"]), str(record["pool"]), str(record["resource"]))
        effect.capacity_delta[key] -= float(record["allocatable"])
    out = dict(frames)
    out["capacity"] = capacity[~gone].reset_index(drop=True)
    if hosts is not None:
        out["hosts"] = hosts[~hosts["host"].astype(str).isin(chosen)].reset_index(drop=True)
    effect.notes.append(f"removed {', '.join(chosen)}")
    return out


def _classes(frames: FrameSet, table: HostTable, config: Any) -> ConsumerClasses:
    consumers = frames.get("consumers")
    if table.layer == "kubernetes":
        return pod_classes(table, consumers)
    settings = getattr(config, "headroom", None)
    mode = getattr(settings, "tenant_isolation", "both")
    isolation = build_isolation(table, read_aggregates(frames, table.cloud), mode)
    return vm_classes(table, consumers, read_flavors(frames, table.cloud), isolation)


def _evacuate(frames: FrameSet, layer: str, cloud: str, removed: set[str], effect: Effect, config: Any) -> FrameSet:
    """Re-place the consumers of `removed` hosts on the rest of their pools; drop the homeless."""
    tables = build_host_tables(frames, layer)
    table = tables.get(cloud)
    consumers = frames.get("consumers")
    if table is None or consumers is None or consumers.empty or layer == "hypervisor":
        return frames
    classes = _classes(frames, table, config)
    if not len(classes):
        return frames
    dead = np.isin(table.names, list(removed))
    displaced = classes.displaced(dead)
    targets = np.isin(table.pools, np.unique(table.pools[dead])) & ~dead
    outcome = replace_consumers(table, classes, displaced, targets)
    moves: dict[Any, str | None] = {}
    for k in np.flatnonzero(displaced).tolist():
        leaving = [label for label, h in classes.members(k) if dead[h]]
        placed = outcome.placed.get(k, np.zeros(table.size, dtype=np.int64))
        slots = [h for h in np.flatnonzero(placed) for _ in range(int(placed[h]))]
        for i, label in enumerate(leaving):
            moves[label] = str(table.names[slots[i]]) if i < len(slots) else None
    return _move(frames, table, classes, moves, effect)


def _move(
    frames: FrameSet, table: HostTable, classes: ConsumerClasses, moves: Mapping[Any, str | None], effect: Effect
) -> FrameSet:
    consumers = frames["consumers"].copy()
    capacity = frames["capacity"].copy()
    delta: dict[tuple[str, str], float] = defaultdict(float)
    homeless = []
    for label, target in moves.items():
        record = consumers.loc[label].to_dict()
        requests = consumer_requests(record, table.layer)
        for resource, amount in requests.items():
            delta[(str(record["host"]), resource)] -= amount
            if target is not None:
                delta[(target, resource)] += amount
        if target is None:
            homeless.append(label)
            for resource, amount in requests.items():
                effect.demand_delta[(table.layer, table.cloud, str(record["pool"]), resource)] -= amount
            _mirror_to_hypervisor(
                frames, effect, table.layer, table.cloud, [str(record["host"])], {r: -a for r, a in requests.items()}
            )
        else:
            consumers.loc[label, "host"] = target
    _shift_allocated(capacity, table, delta)
    if homeless:
        effect.unplaced += len(homeless)
        effect.notes.append(f"{len(homeless)} consumer(s) found no home on the remaining hosts")
    out = dict(frames)
    out["consumers"] = consumers.drop(index=homeless).reset_index(drop=True)
    out["capacity"] = capacity
    return out


def _shift_allocated(capacity: pd.DataFrame, table: HostTable, delta: Mapping[tuple[str, str], float]) -> None:
    if not delta:
        return
    scope = (capacity["layer"] == table.layer) & (capacity["cloud"] == table.cloud) & (capacity["scope"] == "host")
    keys = capacity["host"].astype(str) + "\x1f" + capacity["resource"].astype(str)
    change = keys.map({f"{h}\x1f{r}": v for (h, r), v in delta.items()}).fillna(0.0)
    change = change.where(scope, 0.0)
    capacity["allocated"] = (capacity["allocated"] + change).clip(lower=0.0)


# --- demand ---------------------------------------------------------------------------------------


def _add_consumers(frames: FrameSet, scenario: AddConsumers, effect: Effect, config: Any, now: datetime) -> FrameSet:
    report = compute_headroom(frames, _without_failure(config), now)
    found = [key for key, state in sorted(report.states.items()) if scenario.shape in state.shapes.names]
    if not found:
        names = sorted({n for state in report.states.values() for n in state.shapes.names})
        sample = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ScenarioError(
            f"{scenario}: no flavor or pod shape named {scenario.shape!r}" + (f" (known: {sample})" if names else "")
        )
    layer, cloud = found[0]
    if len(found) > 1:
        effect.notes.append(f"{scenario.shape} exists in {len(found)} places; added to {layer} {cloud}")
    state = report.states[(layer, cloud)]
    table, shapes = state.table, state.shapes
    s = shapes.names.index(scenario.shape)
    request = shapes.requests[s : s + 1]
    one = ConsumerClasses.single(request[0], shapes.eligible[s], "", scenario.shape)
    outcome = replace_consumers(table, one, np.array([scenario.count]), np.ones(table.size, dtype=bool))
    placed = outcome.placed.get(0, np.zeros(table.size, dtype=np.int64))
    consumers = frames["consumers"]
    capacity = frames["capacity"].copy()
    requests = {table.resources[r]: float(a) for r, a in enumerate(request[0]) if a > 0}
    rows: list[dict[str, Any]] = []
    delta: dict[tuple[str, str], float] = defaultdict(float)
    serial = 0
    for h in np.flatnonzero(placed):
        for _ in range(int(placed[h])):
            serial += 1
            rows.append(
                _consumer_row(
                    consumers,
                    layer,
                    cloud,
                    str(table.pools[h]),
                    str(table.names[h]),
                    f"whatif-{scenario.shape}-{serial}",
                    scenario.shape,
                    requests,
                )
            )
            for resource, amount in requests.items():
                if not table.shared[h, table.resources.index(resource)]:
                    delta[(str(table.names[h]), resource)] += amount
                effect.demand_delta[(layer, cloud, str(table.pools[h]), resource)] += amount
    _shift_allocated(capacity, table, delta)
    _mirror_to_hypervisor(frames, effect, layer, cloud, placed_hosts(table, placed), requests)
    for (pool, resource), left in outcome.shared_free.items():
        used_now = table.shared_providers[(pool, resource)].free - left
        if used_now > 0:
            match = (
                (capacity["layer"] == layer)
                & (capacity["cloud"] == cloud)
                & (capacity["scope"] == "pool")
                & (capacity["pool"] == pool)
                & (capacity["resource"] == resource)
            )
            first = capacity.index[match][:1]
            capacity.loc[first, "allocated"] = capacity.loc[first, "allocated"].fillna(0.0) + used_now
    unplaced = int(outcome.unplaced[0])
    if unplaced:
        effect.unplaced += unplaced
        effect.notes.append(f"{unplaced} of {scenario.count} {scenario.shape} found no room")
    out = dict(frames)
    out["capacity"] = capacity
    if rows:
        out["consumers"] = _concat([consumers, pd.DataFrame(rows)], consumers)
    return out


HYPERVISOR_RESOURCES = {"vcpu": "cpu", "pcpu": "cpu", "memory": "memory"}
"""What a VM's Placement request holds on its hypervisor (libvirt layer names)."""


def placed_hosts(table: HostTable, placed: np.ndarray) -> list[str]:
    """One host name per consumer placed (`placed[h]` consumers on host h)."""
    return [str(table.names[h]) for h in np.flatnonzero(placed) for _ in range(int(placed[h]))]


def _mirror_to_hypervisor(
    frames: FrameSet, effect: Effect, layer: str, cloud: str, hosts: list[str], requests: Mapping[str, float]
) -> None:
    """VMs added (or left homeless) in OpenStack also load (or leave) the hypervisors they run on.

    The libvirt layer of the same host (same cloud and name) gets the VM's vCPUs and memory as demand
    in its pool; its used basis is scaled by that pool's current used/allocated share (hypervisor CPU
    has no allocated series to learn it from: allocated vCPUs are overcommit there).
    """
    capacity = frames.get("capacity")
    if layer != "openstack" or capacity is None or capacity.empty or not hosts:
        return
    mine = capacity[(capacity["layer"] == "hypervisor") & (capacity["cloud"] == cloud) & (capacity["scope"] == "host")]
    if mine.empty:
        return
    pool_of = dict(zip(mine["host"].astype(str), mine["pool"].astype(str), strict=False))
    for host in hosts:
        pool = pool_of.get(host)
        if pool is None:
            continue
        for resource, amount in requests.items():
            name = HYPERVISOR_RESOURCES.get(resource)
            if name is None:
                continue
            key = ("hypervisor", cloud, pool, name)
            effect.demand_delta[key] += amount
            if key not in effect.used_share:
                rows = mine[(mine["pool"].astype(str) == pool) & (mine["resource"] == name)]
                allocated, used = float(rows["allocated"].sum()), float(rows["used"].sum(min_count=1))
                if allocated > 0 and math.isfinite(used):
                    effect.used_share[key] = min(max(used / allocated, 0.0), 1.0)


def _without_failure(config: Any) -> Any:
    """The config with N+1 off: placing new consumers needs the slot matrices only."""
    settings = getattr(config, "headroom", None)
    if settings is None or not hasattr(config, "model_copy"):
        return config
    return config.model_copy(update={"headroom": settings.model_copy(update={"n_plus_one": False})})


def _consumer_row(
    like: pd.DataFrame, layer: str, cloud: str, pool: str, host: str, cid: str, shape: str, requests: dict[str, float]
) -> dict[str, Any]:
    cpu = requests.get("vcpu", requests.get("pcpu", requests.get("cpu")))
    row: dict[str, Any] = {column: None for column in like.columns}
    row.update(
        {
            "timestamp": like["timestamp"].max() if len(like) else pd.Timestamp.now(tz="UTC"),
            "source": "what-if",
            "layer": layer,
            "cloud": cloud,
            "pool": pool,
            "host": host,
            "id": cid,
            "name": cid,
            "state": "planned",
            "holds_capacity": True,
            "flavor": shape,
            "cpu": cpu,
            "memory": requests.get("memory"),
            "disk": requests.get("disk"),
            "resources": dict(requests),
        }
    )
    for column in ("cpu_limit", "memory_limit", "cpu_used", "memory_used", "cpu_time_seconds"):
        row[column] = np.nan
    return row


def _scale_demand(frames: FrameSet, scenario: ScaleDemand, effect: Effect) -> FrameSet:
    factor = 1.0 + scenario.percent / 100.0
    capacity = frames["capacity"].copy()
    capacity["allocated"] = capacity["allocated"] * factor
    effect.demand_factor *= factor
    out = dict(frames)
    out["capacity"] = capacity
    return out


# --- exhaustion -----------------------------------------------------------------------------------


def shift_series(series: pd.DataFrame, effects: list[Effect]) -> pd.DataFrame:
    """The forecast input as it would look had the scenarios happened before the series began."""
    if series.empty:
        return series
    out = series.copy()
    key = (
        out["layer"].astype(str)
        + "\x1f"
        + out["cloud"].astype(str)
        + "\x1f"
        + out["pool"].astype(str)
        + "\x1f"
        + out["resource"].astype(str)
    )
    capacity: dict[str, float] = defaultdict(float)
    demand: dict[str, float] = defaultdict(float)
    known_share: dict[str, float] = {}
    factor = 1.0
    for effect in effects:
        for k, v in effect.used_share.items():
            known_share.setdefault("\x1f".join(k), v)
        for k, v in effect.capacity_delta.items():
            capacity["\x1f".join(k)] += v
        for k, v in effect.demand_delta.items():
            demand["\x1f".join(k)] += v
        factor *= effect.demand_factor
    out["limit"] = (out["limit"] + key.map(capacity).fillna(0.0)).clip(lower=0.0)
    added = key.map(demand).fillna(0.0)
    used_share = key.map(known_share).to_numpy(dtype=float, na_value=np.nan)
    used_share = np.where(np.isnan(used_share), _used_share(out, key), used_share)
    scale = np.where(out["basis"] == "allocated", 1.0, used_share)
    out["value"] = ((out["value"] + added * scale) * factor).clip(lower=0.0)
    return out


def _used_share(series: pd.DataFrame, key: pd.Series) -> np.ndarray:
    """Per row: the pool's last used/allocated ratio (how much of a new allocation will be used)."""
    last = series.assign(key=key).sort_values("timestamp").dropna(subset=["value"]).groupby(["key", "basis"])["value"]
    last = last.last().unstack()
    if "allocated" not in last or "used" not in last:
        return np.ones(len(series))
    share = (last["used"] / last["allocated"].replace(0, np.nan)).clip(0, 1).fillna(1.0)
    used: np.ndarray = key.map(share).fillna(1.0).to_numpy()
    return used


@dataclass
class WhatIfResult:
    effects: list[Effect]
    before: HeadroomReport
    after: HeadroomReport
    forecast_before: pd.DataFrame | None
    forecast_after: pd.DataFrame | None
    forecast_error: str | None = None


def run_whatif(
    frames: FrameSet,
    scenarios: list[Scenario],
    config: Any,
    now: datetime,
    history: Any = None,
    horizon: timedelta = timedelta(days=180),
    lookback: timedelta = timedelta(days=56),
) -> WhatIfResult:
    """Headroom and exhaustion dates before and after the scenarios."""
    before = compute_headroom(frames, config, now)
    changed, effects = apply_scenarios(frames, scenarios, config, now)
    after = compute_headroom(changed, config, now)
    forecast_before = forecast_after = None
    error = None
    if history is not None:
        try:
            from collector.analyses.forecast import forecast_series, pool_series_for_forecast
        except ImportError as missing:  # the forecast package is optional for headroom
            error = f"forecasts unavailable: {missing}"
        else:
            series = pool_series_for_forecast(history, now, lookback)
            if not series.empty:
                forecast_before, _ = forecast_series(series, now=now, horizon=horizon)
                forecast_after, _ = forecast_series(shift_series(series, effects), now=now, horizon=horizon)
            else:
                error = "no history to forecast from yet"
    return WhatIfResult(effects, before, after, forecast_before, forecast_after, error)
