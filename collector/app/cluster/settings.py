"""`cluster:` settings (docs/config.md#cluster): role, shard identity, Lease membership and leader election."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from collector.contract.settings import StrictModel


class ClusterConfig(StrictModel):
    """How this process takes part in a scaled-out deployment; the defaults are one `all` process."""

    role: Literal["all", "collector", "planner"] = Field(
        default="all", description="all: poll + plan (single process); collector: poll own targets; planner: plan."
    )
    membership: Literal["static", "ordinal", "lease"] = Field(
        default="static", description="How the shard set is known: flags, StatefulSet ordinal, or Kubernetes Leases."
    )
    shard: int | None = Field(default=None, ge=0, description="This collector's shard (static membership).")
    total_shards: int = Field(default=1, ge=1, description="Number of shards (static and ordinal membership).")
    identity: str | None = Field(
        default=None, description="Member / candidate name in Leases; the hostname when unset."
    )
    namespace: str = Field(default="default", description="Namespace holding the Lease objects.")
    lease_prefix: str = Field(
        default="capacityd",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Lease names: <prefix>-collector-<identity> (membership) and <prefix>-planner (leader).",
    )
    lease_duration_seconds: int = Field(default=15, ge=1, description="A dead member/planner is replaced after this.")
    kubeconfig: Path | None = Field(default=None, description="kubeconfig for Leases; in-cluster config when unset.")
    leader_election: bool = Field(
        default=True, description="Planner: elect the active planner through a Lease; false = run exactly one."
    )
    advertise_url: str | None = Field(
        default=None, description="Collector: the base URL planners reach its /snapshot on (put in its Lease)."
    )
    collectors: list[str] = Field(
        default_factory=list, description="Planner: collectors' base URLs to pull /snapshot from (static)."
    )
    pull_interval_seconds: float = Field(default=60.0, gt=0, description="Planner: seconds between pulls.")
    pull_timeout_seconds: float = Field(default=10.0, gt=0, description="Planner: timeout of one fetch.")
    workers: int = Field(default=16, ge=1, description="Bounded poll worker pool size for a collector.")

    @model_validator(mode="after")
    def _shard_in_range(self) -> ClusterConfig:
        if self.shard is not None and self.shard >= self.total_shards:
            raise ValueError(f"shard must be below total_shards ({self.total_shards}); shards count from 0")
        polls = self.role != "planner"
        if polls and self.membership == "static" and self.total_shards > 1 and self.shard is None:
            raise ValueError("shard is required when total_shards > 1 (or use membership: ordinal or lease)")
        if polls and self.membership == "ordinal":
            import socket

            from collector.app.cluster.sharding import ordinal_from_hostname

            ordinal = ordinal_from_hostname(self.identity or socket.gethostname())
            if ordinal >= self.total_shards:
                raise ValueError(f"the pod ordinal {ordinal} is not below total_shards ({self.total_shards})")
        return self
