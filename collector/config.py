"""capacityd's configuration: one YAML file, validated by pydantic.

The shape is a contract (docs/config.md): later features add keys, they never rename or remove one.
Unknown keys are errors everywhere, so a typo is caught by `capacityd check-config` instead of
being silently ignored. Secrets are `SecretStr` so they never reach a log line or an error message.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """Prometheus-style durations: `90s`, `5m`, `1h`, `30d`, `2w`, `250ms`; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h, 7d)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SourceBase(StrictModel):
    """What every source has, whatever its kind."""

    name: SourceName = Field(description="Unique; becomes the `source` label.")
    interval: Duration = Field(default=timedelta(seconds=60), description="How often to poll.")
    timeout: Duration | None = Field(
        default=None, description="Give up on a poll after this long (default: 80 % of interval)."
    )
    jitter: Duration | None = Field(
        default=None, description="Random delay added to each run (default: 10 % of interval)."
    )

    @property
    def effective_timeout(self) -> timedelta:
        return self.timeout or self.interval * 0.8

    @property
    def effective_jitter(self) -> timedelta:
        return self.jitter if self.jitter is not None else self.interval * 0.1


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


class OpenStackSourceConfig(SourceBase):
    """An OpenStack cloud read through Nova and Placement (credentials from clouds.yaml / OS_* variables)."""

    kind: Literal["openstack"]
    cloud: str | None = Field(default=None, description="Entry in clouds.yaml; unset = OS_* variables.")
    region: str | None = None
    label: str | None = Field(default=None, description="`cloud` label value (default: the cloud name).")
    page_size: int = Field(default=1000, ge=1, le=10000, description="Servers per page (marker/limit).")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and data.get("cloud"):
            data = {**data, "name": data["cloud"]}
        return data


class KubeletConfig(StrictModel):
    mode: Literal["proxy", "direct", "off"] = Field(
        default="proxy", description="proxy: through the API server's node proxy; direct: kubelet :10250."
    )
    port: int = Field(default=10250, ge=1, le=65535)
    timeout: Duration = timedelta(seconds=10)
    concurrency: int = Field(default=16, ge=1, le=256)
    insecure_skip_tls_verify: bool = False


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
    kubeconfig: Path | None = Field(default=None, description="Default: $KUBECONFIG or ~/.kube/config.")
    in_cluster: bool = False
    cluster: str | None = Field(default=None, description="`cloud` label value (default: the context).")
    page_size: int = Field(default=500, ge=1, le=10000)
    kubelet: KubeletConfig = Field(default_factory=KubeletConfig)
    node_labels: NodeLabelKeys = Field(default_factory=NodeLabelKeys)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and data.get("context"):
            data = {**data, "name": data["context"]}
        return data


SourceConfig = Annotated[
    LibvirtSourceConfig | OpenStackSourceConfig | KubernetesSourceConfig,
    Field(discriminator="kind"),
]


class HistoryConfig(StrictModel):
    """How long history is kept and how it is thinned (docs/history.md)."""

    raw_retention: Duration = Field(default=timedelta(days=8), description="Keep every poll this long.")
    downsample_step: Duration = Field(default=timedelta(hours=1), description="Older data: one row per step.")
    retention: Duration = Field(default=timedelta(days=400), description="Drop downsampled data after this.")
    host_raw_retention: Duration = Field(
        default=timedelta(days=2), description="Per-host rows at full resolution (pool sums are kept longer)."
    )


class Config(StrictModel):
    """The whole file."""

    listen: str = Field(default="127.0.0.1:9847", description="HOST:PORT for /metrics.")
    state_dir: Path = Field(default=Path("/var/lib/capacityd"), description="History and schedule state.")
    web_config_file: Path | None = Field(
        default=None, description="exporter-toolkit web config (TLS, basic auth) for /metrics."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:9847 or [::]:9847")
        return listen

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} is used twice; names must be unique")
            seen.add(source.name)
        return sources

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ConfigError(Exception):
    """A config file that cannot be used; `errors` holds one `location: message` line per problem."""

    def __init__(self, path: str, errors: list[str]):
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(errors))


def format_location(loc: tuple[Any, ...]) -> str:
    """('sources', 2, 'libvirt', 'uri') -> 'sources[2].uri' (the union tag pydantic adds is dropped)."""
    out = ""
    skip_tag = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            skip_tag = True
            continue
        if skip_tag and part in ("libvirt", "openstack", "kubernetes"):
            skip_tag = False
            continue
        skip_tag = False
        if part.startswith("function-") or part in ("union_tag",):
            continue
        out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_messages(error: ValidationError) -> list[str]:
    """One line per error, never echoing the offending value (it may be a secret)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{format_location(tuple(item['loc']))}: {message}")
    return lines


def parse_config(data: Any, path: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["(top level): expected a mapping of keys to values"])
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(path, validation_messages(error)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(str(path), [f"{where}: {problem}"]) from None
    return parse_config(data, str(path))
