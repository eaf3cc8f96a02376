"""Settings of target discovery on a source (`discover:`, docs/config.md#discover)."""

from __future__ import annotations

from datetime import timedelta
from string import Formatter

from pydantic import ConfigDict, Field, field_validator, model_validator

from collector.contract.settings import Duration, StrictModel

NOVA_FIELDS = frozenset(
    {
        "target",
        "hypervisor_hostname",
        "host_ip",
        "service_host",
        "availability_zone",
        "zone",
        "aggregates",
        "cloud",
    }
)
"""Template fields a Nova-discovered target offers (docs/discovery.md)."""


def template_fields(template: str) -> set[str]:
    """The `{field}` names a URI template uses (raises ValueError on a malformed template)."""
    return {name for _, name, _, _ in Formatter().parse(template) if name is not None}


class DiscoverConfig(StrictModel):
    """Where a source's targets come from: an OpenStack source's hypervisors, or file_sd files."""

    from_: str | None = Field(
        default=None, alias="from", description="Name of the OpenStack source whose Nova hypervisors are the targets."
    )
    file_sd: list[str] = Field(
        default_factory=list, description="Globs of Prometheus file_sd files (JSON or YAML) listing the targets."
    )
    uri: str = Field(
        default="qemu+tls://{target}/system",
        description="libvirt URI template; fields: target, hypervisor_hostname, zone, aggregates, file_sd labels.",
    )
    max_concurrency: int = Field(default=16, ge=1, le=1024, description="Targets polled at the same time, at most.")
    refresh_interval: Duration = Field(
        default=timedelta(seconds=30), description="How often file_sd files are checked for changes."
    )
    gone_retention: Duration = Field(
        default=timedelta(minutes=15), description="How long a target that left the list stays listed as gone."
    )

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("uri")
    @classmethod
    def _template_parses(cls, uri: str) -> str:
        try:
            template_fields(uri)
        except ValueError as error:
            raise ValueError(f"uri is not a valid template: {error}") from None
        if "://" not in uri and not template_fields(uri):  # a field may hold the whole URI (file_sd label)
            raise ValueError("a libvirt URI template looks like qemu+tls://{target}/system")
        return uri

    @model_validator(mode="after")
    def _one_producer(self) -> DiscoverConfig:
        if (self.from_ is None) == (not self.file_sd):
            raise ValueError("discover needs exactly one of `from` (an OpenStack source) or `file_sd` (globs)")
        if self.from_ is not None:
            unknown = template_fields(self.uri) - NOVA_FIELDS
            if unknown:
                raise ValueError(
                    f"uri uses unknown field(s) {sorted(unknown)}; Nova discovery offers {sorted(NOVA_FIELDS)}"
                )
        return self
