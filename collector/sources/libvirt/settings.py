"""Settings of a libvirt source (docs/config.md#libvirt)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

if TYPE_CHECKING:
    from collector.sources.base import Source

from collector.contract.settings import SourceBase
from collector.sources.discovery.settings import DiscoverConfig  # issue 16: discovered targets


class LibvirtSourceConfig(SourceBase):
    """A hypervisor polled through libvirt (`qemu:///system`, `qemu+ssh://`, `qemu+tls://`, `test:///`)."""

    kind: Literal["libvirt"]
    uri: str = Field(default="", description="The hypervisor's URI (not needed with `discover`).")
    cloud: str = Field(default="default", description="`cloud` label: the estate this hypervisor serves.")
    pool: str = Field(default="default", description="`pool` label, e.g. the availability zone.")
    keepalive_interval: int = Field(default=5, ge=1, description="Seconds between libvirt keepalives.")
    keepalive_count: int = Field(default=3, ge=1, description="Unanswered keepalives before the link is dead.")

    @field_validator("uri")
    @classmethod
    def _uri_has_scheme(cls, uri: str) -> str:
        if uri and "://" not in uri:
            raise ValueError("a libvirt URI looks like qemu:///system, qemu+ssh://host/system or test:///path")
        return uri

    discover: DiscoverConfig | None = Field(default=None, description="Discover the targets (docs/discovery.md).")

    @model_validator(mode="after")
    def _uri_or_discover(self) -> LibvirtSourceConfig:
        if not self.uri and self.discover is None:
            raise ValueError("a libvirt source needs a uri, or discover: to find its targets")
        return self

    def create_source(self) -> Source:
        from collector.sources.libvirt.source import LibvirtSource

        if self.discover is not None:  # issue 16: one LibvirtSource per discovered target
            from collector.sources.discovery.fleet import TargetFleet

            return TargetFleet(
                self, lambda t: LibvirtSource(self.model_copy(update={"uri": t.uri, "pool": t.pool, "discover": None}))
            )
        return LibvirtSource(self)
