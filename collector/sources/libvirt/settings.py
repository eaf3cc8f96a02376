"""Settings of a libvirt source (docs/config.md#libvirt)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

if TYPE_CHECKING:
    from collector.sources.base import Source

from collector.contract.settings import SourceBase


class LibvirtSourceConfig(SourceBase):
    """A hypervisor polled through libvirt (`qemu:///system`, `qemu+ssh://`, `qemu+tls://`, `test:///`)."""

    kind: Literal["libvirt"]
    uri: str = Field(min_length=1)
    cloud: str = Field(default="default", description="`cloud` label: the estate this hypervisor serves.")
    pool: str = Field(default="default", description="`pool` label, e.g. the availability zone.")
    keepalive_interval: int = Field(default=5, ge=1, description="Seconds between libvirt keepalives.")
    keepalive_count: int = Field(default=3, ge=1, description="Unanswered keepalives before the link is dead.")

    @field_validator("uri")
    @classmethod
    def _uri_has_scheme(cls, uri: str) -> str:
        if "://" not in uri:
            raise ValueError("a libvirt URI looks like qemu:///system, qemu+ssh://host/system or test:///path")
        return uri

    def create_source(self) -> Source:
        from collector.sources.libvirt.source import LibvirtSource

        return LibvirtSource(self)
