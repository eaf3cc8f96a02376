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
    SecretStr,
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
    consumer_retention: Duration = Field(
        default=timedelta(days=15), description="Hourly per-VM/pod usage (reclaimable analysis) is kept this long."
    )
    host_retention: Duration = Field(
        default=timedelta(days=35), description="Per-host rows downsampled to `downsample_step` are kept this long."
    )


# -- weekly report by email (exporters/report/, docs/report.md) ------------------------------------

_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def _check_email(address: str) -> str:
    if not _EMAIL_RE.match(address.strip()):
        raise ValueError(f"not an email address: {address!r}")
    return address.strip()


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(field: str) -> str:
    """Standard cron day-of-week (0 or 7 = Sunday, 1 = Monday) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, and `CronTrigger.from_crontab` passes numbers
    through unchanged, so `0 7 * * 1` would fire on Tuesdays. Names mean the same to both.
    """
    days: set[str] = set()
    for part in field.lower().split(","):
        expression, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if expression == "*":
            low, high = 0, 6
        elif "-" in expression and expression.replace("-", "").isdigit():
            low_text, high_text = expression.split("-", 1)
            low, high = int(low_text), int(high_text)
        elif expression.isdigit():
            low = high = int(expression)
        else:
            return field  # names (mon-fri): APScheduler reads them as cron does
        if not 0 <= low <= high <= 7 or step < 1:
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days.update(_DAY_NAMES[day % 7] for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in (*_DAY_NAMES[1:], _DAY_NAMES[0]) if name in days)


def report_cron_trigger(schedule: str, timezone: str) -> Any:
    """The APScheduler CronTrigger of a report's 5-field cron expression, with cron's weekday numbers."""
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_day_of_week(day_of_week),
                       timezone=ZoneInfo(timezone))


class SmtpConfig(StrictModel):
    """The mail relay reports are sent through; the password comes from the environment, never the file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="Default: 587 for starttls, 465 for tls, 25 for none.")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls: upgrade a plain connection; tls: implicit TLS (SMTPS)."
    )
    username: str | None = None
    password_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the password (e.g. set by systemd's EnvironmentFile).",
    )
    password: SecretStr | None = Field(default=None, description="Inline password; prefer password_env.")
    from_address: str = Field(alias="from", description="Envelope and header sender.")
    timeout: Duration = Field(default=timedelta(seconds=30), description="Socket timeout per SMTP operation.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the relay (default: system CAs).")
    verify_tls: bool = Field(default=True, description="Verify the relay's certificate and host name.")
    attempts: int = Field(default=4, ge=1, le=20, description="Delivery attempts per send on transient failures.")
    backoff: Duration = Field(default=timedelta(seconds=5), description="First retry delay; doubles per attempt.")

    @field_validator("from_address")
    @classmethod
    def _from_is_address(cls, address: str) -> str:
        return _check_email(address)

    @model_validator(mode="after")
    def _one_password_source(self) -> SmtpConfig:
        if self.password_env and self.password is not None:
            raise ValueError("set either password_env or password, not both")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class ReportScope(StrictModel):
    """Which part of the estate a report covers; an empty list means all."""

    clouds: list[str] = Field(default_factory=list, description="`cloud` values of hypervisor/OpenStack rows.")
    clusters: list[str] = Field(default_factory=list, description="`cloud` values of Kubernetes rows.")
    layers: list[Literal["hypervisor", "openstack", "kubernetes"]] = Field(default_factory=list)
    pools: list[str] = Field(default_factory=list)


class ReportConfig(StrictModel):
    """One scheduled report: who gets it, when, and what it covers."""

    name: SourceName = Field(description="Unique; the `report` label and the key of the send record.")
    recipients: list[str] = Field(min_length=1)
    schedule: str = Field(default="0 7 * * 1", description="Cron expression (5 fields) in `timezone`.")
    timezone: str = Field(default="UTC", description="IANA zone the schedule and dates are in.")
    title: str = Field(default="Weekly capacity report", max_length=200)
    scope: ReportScope = Field(default_factory=ReportScope)
    top_n: int = Field(default=10, ge=1, le=500, description="Rows per table and charts in the mail (CSV: all).")
    charts: int = Field(default=6, ge=0, le=50, description="Growth charts in the mail (most urgent pools).")
    red_days: float = Field(default=30, gt=0, description="Red when a pool runs out within this many days.")
    amber_days: float = Field(default=90, gt=0, description="Amber when it may run out within this many days.")
    max_bytes: int = Field(default=5_000_000, ge=100_000, description="Size bound of the whole email.")
    misfire_grace_time: Duration = Field(
        default=timedelta(hours=12), description="A send missed (daemon down) is still made this long after."
    )
    retry_interval: Duration = Field(default=timedelta(minutes=15), description="Retry a failed send after.")
    retry_for: Duration = Field(default=timedelta(hours=24), description="Give up retrying a period after.")
    accuracy_backtest: bool = Field(
        default=True, description="Also re-run the forecast from the history of 30 days ago to check accuracy "
        "(up to ~30 s of CPU per send; the check from forecasts stored with earlier sends is always made).",
    )

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, recipients: list[str]) -> list[str]:
        return [_check_email(address) for address in recipients]

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        try:
            report_cron_trigger(schedule, "UTC")
        except ValueError as error:
            raise ValueError(f"invalid cron expression: {error}") from None
        return schedule

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (use an IANA name such as Europe/Berlin)") from None
        return zone

    @model_validator(mode="after")
    def _thresholds(self) -> ReportConfig:
        if self.amber_days < self.red_days:
            raise ValueError("amber_days must be at least red_days")
        return self


# --- headroom: pod shapes and headroom settings (docs/config.md#headroom) ---------------------------

_QUANTITY_RE = re.compile(
    r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?\s*$"
)
_QUANTITY_SUFFIX = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity (`250m`, `512Mi`, `1.5`, `2G`) in base units (cores, bytes, count)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and (match := _QUANTITY_RE.match(value)):
        number = float(match.group(1)) * _QUANTITY_SUFFIX[match.group(2)]
    else:
        raise ValueError(f"not a Kubernetes quantity: {value!r} (use e.g. 250m, 1.5, 512Mi, 2Gi)")
    if not number >= 0 or number == float("inf"):
        raise ValueError("a resource quantity must be a finite number >= 0")
    return number


Quantity = Annotated[float, BeforeValidator(parse_quantity)]


class Toleration(StrictModel):
    """A pod toleration, with Kubernetes' matching rules (empty key + Exists tolerates every taint)."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


class PodShape(StrictModel):
    """A pod size to count slots for: effective requests = max(init, app) per resource, plus one pod."""

    cpu: Quantity = Field(default=0.0, description="CPU request (cores; `250m` = 0.25).")
    memory: Quantity = Field(default=0.0, description="Memory request (bytes; `512Mi`).")
    ephemeral_storage: Quantity = Field(default=0.0, description="Ephemeral storage request (bytes).")
    resources: dict[str, Quantity] = Field(
        default_factory=dict, description="Extended resources, e.g. `nvidia.com/gpu: 1` (names as in the frames)."
    )
    init: dict[str, Quantity] = Field(
        default_factory=dict, description="Largest init container's requests (`cpu`, `memory`, ...)."
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod requires.")

    def requests(self) -> dict[str, float]:
        """Effective requests in capacity-frame resource names (what the scheduler counts), incl. `pods: 1`."""
        app = {"cpu": self.cpu, "memory": self.memory, "ephemeral_storage": self.ephemeral_storage}
        app.update({_resource_name(k): v for k, v in self.resources.items()})
        for name, amount in self.init.items():
            key = _resource_name(name)
            app[key] = max(app.get(key, 0.0), amount)
        app["pods"] = 1.0
        return {k: v for k, v in app.items() if v > 0}


def _resource_name(name: str) -> str:
    """`nvidia.com/gpu` -> `nvidia_com_gpu`, `ephemeral-storage` -> `ephemeral_storage` (docs/schema.md)."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


class HeadroomConfig(StrictModel):
    """How headroom, N+1 and reclaimable capacity are computed (docs/headroom.md)."""

    failure_domain: Literal["host", "zone"] = Field(
        default="host", description="N+1 loses the worst host, or the worst zone (pools spanning zones)."
    )
    n_plus_one: bool = Field(default=True, description="Compute slots_after_failure (re-placement simulation).")
    common_shapes: int = Field(default=5, ge=0, le=100, description="Most common pod shapes seen, added to `shapes`.")
    tenant_isolation: Literal["both", "hosts", "tenants", "off"] = Field(
        default="both",
        description="filter_tenant_id aggregates: hosts only take their tenants, tenants only land there, or both.",
    )
    idle_cpu_threshold: float = Field(default=0.05, ge=0, description="A VM is idle below this many cores.")
    idle_window: Duration = Field(default=timedelta(days=7), description="A VM must be idle this long.")
    reclaim_window: Duration = Field(default=timedelta(days=14), description="Usage window for pods (KRR: 14d).")
    reclaim_cpu_percentile: float = Field(default=95.0, gt=0, le=100, description="Pod CPU need: this percentile.")
    reclaim_memory_margin: float = Field(default=1.15, ge=1.0, description="Pod memory need: max x this margin.")
    reclaim_cpu_floor: Quantity = Field(default=0.01, description="Never recommend less CPU than this (cores).")
    reclaim_memory_floor: Quantity = Field(default=100e6, description="Never recommend less memory (bytes).")
    min_coverage: float = Field(
        default=0.8, gt=0, le=1, description="Share of the window usage samples must cover to judge a consumer."
    )
    host_metrics_limit: int = Field(
        default=20000, ge=0, description="Most samples of capacity_headroom_host_slots (0: not exported)."
    )
    failure_interval: Duration | None = Field(
        default=None,
        description="Recompute N+1 at most this often, reusing the last result (capped at the current slots) in "
        "between; unset: after every poll. For very large estates.",
    )


class ForecastConfig(StrictModel):
    """How far forecasts look back and ahead (docs/forecasting.md)."""

    horizon: Duration = Field(default=timedelta(days=180), description="Exhaustion beyond this is reported +Inf.")
    lookback: Duration = Field(default=timedelta(days=56), description="History each forecast is fitted on.")


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
    shapes: dict[str, PodShape] = Field(default_factory=dict, description="Pod shapes to count slots for.")
    headroom: HeadroomConfig = Field(default_factory=HeadroomConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    smtp: SmtpConfig | None = Field(default=None, description="Mail relay for reports.")
    reports: list[ReportConfig] = Field(default_factory=list, description="Scheduled email reports.")

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

    @model_validator(mode="after")
    def _reports_need_smtp(self) -> Config:
        names = [report.name for report in self.reports]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"report name {duplicate!r} is used twice; names must be unique")
        if self.reports and self.smtp is None:
            raise ValueError("reports are configured but there is no smtp section to send them through")
        return self

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
        location = format_location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "union_tag_invalid":
            location += ".kind"
            message = f"unknown kind {item['ctx']['tag']!r}; expected one of {item['ctx']['expected_tags']}"
        elif item["type"] == "union_tag_not_found":
            location += ".kind"
            message = "missing; every source needs a kind (libvirt, openstack or kubernetes)"
        lines.append(f"{location}: {message}")
    return lines


def _duplicate_names(data: dict[str, Any]) -> list[str]:
    """Duplicate source names in raw input, so they are reported even when other errors stop validation."""
    seen: dict[str, int] = {}
    lines = []
    sources = data.get("sources")
    for index, source in enumerate(sources if isinstance(sources, list) else []):
        name = source.get("name") if isinstance(source, dict) else None
        if isinstance(name, str):
            if name in seen:
                lines.append(f"sources[{index}].name: {name!r} is already used by sources[{seen[name]}]")
            seen.setdefault(name, index)
    return lines


def parse_config(data: Any, path: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["(top level): expected a mapping of keys to values"])
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        messages = validation_messages(error)
        messages += [line for line in _duplicate_names(data) if line not in messages]
        raise ConfigError(path, messages) from None


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
