"""Settings of an OpenStack source (docs/config.md#openstack)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

if TYPE_CHECKING:
    from collector.sources.base import Source

from collector.contract.settings import SourceBase


class OpenStackSourceConfig(SourceBase):
    """An OpenStack cloud read through Nova and Placement (credentials from clouds.yaml / OS_* variables)."""

    kind: Literal["openstack"]
    cloud: str | None = Field(default=None, description="Entry in clouds.yaml; unset = OS_* variables.")
    region: str | None = None
    label: str | None = Field(default=None, description="`cloud` label value (default: the cloud name).")
    page_size: int = Field(default=1000, ge=1, le=10000, description="Servers per page (marker/limit).")
    clouds_yaml: Path | None = Field(
        default=None, description="Read this clouds.yaml only (default: OS_CLIENT_CONFIG_FILE, then the standard path)."
    )
    default_zone: str = Field(
        default="nova", description="AZ of hosts in no AZ aggregate (Nova's default_availability_zone)."
    )
    quotas: bool = Field(default=True, description="Read per-project quota usage (one call per project with servers).")
    concurrency: int = Field(default=4, ge=1, le=32, description="Placement providers read in parallel.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and data.get("cloud"):
            data = {**data, "name": data["cloud"]}
        return data

    def create_source(self) -> Source:
        from collector.sources.openstack.source import OpenStackSource

        return OpenStackSource(self)
