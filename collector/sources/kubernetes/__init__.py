"""`kind: kubernetes` — nodes, pods and kubelet usage of one cluster per source (see README.md)."""

from collector.sources.kubernetes.source import KubernetesSource

SOURCE = KubernetesSource

__all__ = ["SOURCE", "KubernetesSource"]
