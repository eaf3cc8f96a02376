"""Settings of a Kubernetes source (docs/config.md#kubernetes)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

if TYPE_CHECKING:
    from collector.sources.base import Source

from collector.contract.settings import Duration, SourceBase, StrictModel


class KubeletConfig(StrictModel):
    mode: Literal["proxy", "direct", "off"] = Field(
        default="proxy", description="proxy: through the API server's node proxy; direct: kubelet :10250."
    )
    port: int = Field(default=10250, ge=1, le=65535)
    timeout: Duration = timedelta(seconds=10)
    concurrency: int = Field(default=16, ge=1, le=256)
    insecure_skip_tls_verify: bool = False
    max_response_bytes: int = Field(
        default=16 * 2**20,
        ge=64 * 2**10,
        le=2**30,
        description="Largest /metrics/resource answer read (a node with 250 pods answers ~250 KB).",
    )


class NodeLabelKeys(StrictModel):
    zone: str = "topology.kubernetes.io/zone"
    instance_type: str = "node.kubernetes.io/instance-type"
    pool: list[str] = Field(
        default_factory=lambda: [
            "node.kubernetes.io/pool",
            "cloud.google.com/gke-nodepool",
            "eks.amazonaws.com/nodegroup",
            "kubernetes.azure.com/agentpool",
            "magnum.openstack.org/nodegroup",
        ],
        description="First label found names the node pool.",
    )


class KubernetesSourceConfig(SourceBase):
    """A Kubernetes cluster (credentials from kubeconfig, or in-cluster when run in a pod)."""

    kind: Literal["kubernetes"]
    context: str | None = Field(default=None, description="kubeconfig context; unset = current context.")
    contexts: list[str] | None = Field(  # issue 16: one target per matching context (docs/discovery.md)
        default=None, description="Globs of kubeconfig contexts to poll, one target each (e.g. ['*'])."
    )
    kubeconfig: Path | None = Field(default=None, description="Default: $KUBECONFIG or ~/.kube/config.")
    in_cluster: bool = False
    cluster: str | None = Field(default=None, description="`cloud` label value (default: the context).")
    page_size: int = Field(default=500, ge=1, le=10000)
    max_response_bytes: int = Field(
        default=256 * 2**20,
        ge=2**20,
        le=8 * 2**30,
        description="Largest list page read (500 pods are ~2-15 MB); a larger answer fails the poll (too_large).",
    )
    poll_deadline: Duration | None = Field(
        default=None,
        description="Wall-clock limit of one poll's reads (default: the source's timeout); reads still "
        "running then are cut off and the poll fails (timeout).",
    )
    kubelet: KubeletConfig = Field(default_factory=KubeletConfig)
    node_labels: NodeLabelKeys = Field(default_factory=NodeLabelKeys)

    @property
    def effective_poll_deadline(self) -> timedelta:
        return self.poll_deadline or self.effective_timeout

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and data.get("context"):
            data = {**data, "name": data["context"]}
        return data

    def create_source(self) -> Source:
        from collector.sources.kubernetes.source import KubernetesSource

        if self.contexts is not None:  # issue 16: every matching context is a target (collector/sources/discovery)
            from collector.sources.discovery.kubeconfig import cluster_fleet

            return cluster_fleet(
                self,
                lambda name: KubernetesSource(
                    self.model_copy(
                        update={"contexts": None, "context": name, "name": f"{self.name}:{name}", "cluster": name}
                    )
                ),
            )
        return KubernetesSource(self)
