"""Settings of headroom, N+1 and reclaimable capacity, and the pod shapes to count (docs/config.md#headroom)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field

from collector.contract.settings import Duration, Quantity, StrictModel


class Toleration(StrictModel):
    """A pod toleration, with Kubernetes' matching rules (empty key + Exists tolerates every taint)."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


class PodShape(StrictModel):
    """A pod size to count slots for: effective requests = max(init, app) per resource, plus one pod."""

    cpu: Quantity = Field(default=0.0, description="CPU request (cores; `250m` = 0.25).")
    memory: Quantity = Field(default=0.0, description="Memory request (bytes; `512Mi`).")
    ephemeral_storage: Quantity = Field(default=0.0, description="Ephemeral storage request (bytes).")
    resources: dict[str, Quantity] = Field(
        default_factory=dict, description="Extended resources, e.g. `nvidia.com/gpu: 1` (names as in the frames)."
    )
    init: dict[str, Quantity] = Field(
        default_factory=dict, description="Largest init container's requests (`cpu`, `memory`, ...)."
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod requires.")

    def requests(self) -> dict[str, float]:
        """Effective requests in capacity-frame resource names (what the scheduler counts), incl. `pods: 1`."""
        app = {"cpu": self.cpu, "memory": self.memory, "ephemeral_storage": self.ephemeral_storage}
        app.update({_resource_name(k): v for k, v in self.resources.items()})
        for name, amount in self.init.items():
            key = _resource_name(name)
            app[key] = max(app.get(key, 0.0), amount)
        app["pods"] = 1.0
        return {k: v for k, v in app.items() if v > 0}


def _resource_name(name: str) -> str:
    """`nvidia.com/gpu` -> `nvidia_com_gpu`, `ephemeral-storage` -> `ephemeral_storage` (docs/schema.md)."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


class HeadroomConfig(StrictModel):
    """How headroom, N+1 and reclaimable capacity are computed (docs/headroom.md)."""

    failure_domain: Literal["host", "zone"] = Field(
        default="host", description="N+1 loses the worst host, or the worst zone (pools spanning zones)."
    )
    n_plus_one: bool = Field(default=True, description="Compute slots_after_failure (re-placement simulation).")
    common_shapes: int = Field(default=5, ge=0, le=100, description="Most common pod shapes seen, added to `shapes`.")
    tenant_isolation: Literal["both", "hosts", "tenants", "off"] = Field(
        default="both",
        description="filter_tenant_id aggregates: hosts only take their tenants, tenants only land there, or both.",
    )
    idle_cpu_threshold: float = Field(default=0.05, ge=0, description="A VM is idle below this many cores.")
    idle_window: Duration = Field(default=timedelta(days=7), description="A VM must be idle this long.")
    reclaim_window: Duration = Field(default=timedelta(days=14), description="Usage window for pods (KRR: 14d).")
    reclaim_cpu_percentile: float = Field(default=95.0, gt=0, le=100, description="Pod CPU need: this percentile.")
    reclaim_memory_margin: float = Field(default=1.15, ge=1.0, description="Pod memory need: max x this margin.")
    reclaim_cpu_floor: Quantity = Field(default=0.01, description="Never recommend less CPU than this (cores).")
    reclaim_memory_floor: Quantity = Field(default=100e6, description="Never recommend less memory (bytes).")
    min_coverage: float = Field(
        default=0.8, gt=0, le=1, description="Share of the window usage samples must cover to judge a consumer."
    )
    host_metrics_limit: int = Field(
        default=20000, ge=0, description="Most samples of capacity_headroom_host_slots (0: not exported)."
    )
    failure_interval: Duration | None = Field(
        default=None,
        description="Recompute N+1 at most this often, reusing the last result (capped at the current slots) in "
        "between; unset: after every poll. For very large estates.",
    )
