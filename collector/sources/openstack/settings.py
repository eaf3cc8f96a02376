"""Settings of an OpenStack source (docs/config.md#openstack)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

if TYPE_CHECKING:
    from collector.sources.base import Source

from collector.contract.settings import Duration, Quantity, SourceBase

DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024**2
"""64 MiB: a 1000-server page with embedded flavors is about 5 MB, 10000 providers about 5 MB."""


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
    quotas: bool = Field(default=True, description="Read per-project quotas into `openstack_quotas`.")
    quotas_interval: Duration = Field(
        default=timedelta(hours=1),
        description="Re-read each project's quota limits about this often (one call per project; usage is counted "
        "from the servers every poll).",
    )
    concurrency: int = Field(default=4, ge=1, le=32, description="Placement providers read in parallel.")
    max_response_size: Quantity = Field(
        default=DEFAULT_MAX_RESPONSE_SIZE,
        ge=1024,
        description="Largest body one API answer may have (bytes; `64Mi`, `200M`); a bigger one fails the poll "
        "with reason `too_large` instead of being read whole.",
    )
    poll_deadline: Duration | None = Field(
        default=None,
        description="Wall-clock bound of a whole poll, body reads and retries included (default: 90 % of "
        "`timeout`, so the source reports which request was slow before the scheduler gives up on it).",
    )

    @property
    def effective_poll_deadline(self) -> timedelta:
        return self.poll_deadline if self.poll_deadline is not None else self.effective_timeout * 0.9

    @model_validator(mode="after")
    def _deadline_within_timeout(self) -> OpenStackSourceConfig:
        if self.poll_deadline is not None and self.poll_deadline > self.effective_timeout:
            raise ValueError("poll_deadline must not exceed timeout (the scheduler abandons the poll at timeout)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and data.get("cloud"):
            data = {**data, "name": data["cloud"]}
        return data

    def create_source(self) -> Source:
        from collector.sources.openstack.source import OpenStackSource

        return OpenStackSource(self)
