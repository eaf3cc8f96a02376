"""The embedded demo estate behind `capacityd demo`.

`collector.demo.model` describes one estate; each layer's part renders it through the real code
path of that layer (libvirt test-driver nodes, OpenStack and Kubernetes API stand-ins on loopback)
and returns the source configs the daemon should poll. Parts run in `DEMO_PARTS` order and share a
`context` dict (e.g. the OpenStack part publishes its endpoints for the Kubernetes part).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class DemoPart:
    sources: list[dict[str, Any]]
    """Source entries for the generated config (the same shape a user writes in YAML)."""
    stop: Callable[[], None] = lambda: None
    """Stops whatever the part started (stand-in servers); called on exit."""
    description: str = ""
    extra_config: dict[str, Any] = field(default_factory=dict)
    """Top-level config keys the part needs (e.g. `shapes`)."""


class DemoPartModule(Protocol):
    def start(self, workdir: Path, context: dict[str, Any]) -> DemoPart: ...


DEMO_PARTS = ["collector.demo.libvirt", "collector.demo.openstack", "collector.demo.kubernetes", "collector.demo.mail"]
