"""A minimal third-party capacityd source (docs/DEVELOPING.md#plugins): a rack of identical hosts.

Ship it in your own package and register its settings model in your pyproject.toml:

    [project.entry-points."capacityd.sources"]
    acme = "acme_source:AcmeSourceConfig"

Then `kind: acme` is a valid source in capacityd.yaml: validated like the built-in kinds (unknown keys are
errors), scheduled, exported on /metrics and stored in history like them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from collector.contract.schema import CAPACITY, HOSTS
from collector.contract.settings import SourceBase
from collector.sources.base import PollResult, Source


class AcmeSourceConfig(SourceBase):
    """What a user writes under `sources:` for this kind."""

    kind: Literal["acme"]
    hosts: int = Field(default=1, ge=1, le=10_000)
    cores_per_host: int = Field(default=32, ge=1)

    def create_source(self) -> Source:
        return AcmeSource(self)


class AcmeSource(Source):
    """Reads nothing remote: each poll reports `hosts` hosts of `cores_per_host` cores."""

    kind = "acme"

    def __init__(self, config: AcmeSourceConfig) -> None:
        super().__init__(config)
        self.settings = config

    def poll(self, now: datetime) -> PollResult:
        names = [f"acme-host-{index}" for index in range(self.settings.hosts)]
        common = {"timestamp": now, "source": self.name, "layer": "hypervisor", "cloud": "acme", "pool": "rack"}
        cores = float(self.settings.cores_per_host)
        capacity = CAPACITY.build(
            [
                {
                    **common,
                    "host": name,
                    "scope": "host",
                    "resource": "vcpu",
                    "capacity": cores,
                    "reserved": 0.0,
                    "allocation_ratio": 1.0,
                    "allocatable": cores,
                }
                for name in names
            ]
        )
        hosts = HOSTS.build([{**common, "host": name, "schedulable": True, "ready": True} for name in names])
        return PollResult(frames={"capacity": capacity, "hosts": hosts})
