"""capacityd's configuration: one YAML file, composed of each component's typed settings.

The shape is a contract (docs/config.md): later features add keys, they never rename or remove one.
Each component owns its settings model next to its code; this module only composes them, loads the
file and turns validation errors into one line per problem that never echoes a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from collector.analyses.forecast.settings import ForecastConfig
from collector.analyses.headroom.settings import HeadroomConfig, PodShape
from collector.app.cluster.settings import ClusterConfig  # cluster: roles and sharding (issue 13)
from collector.contract.settings import ConfigError, StrictModel
from collector.sources import source_settings_models
from collector.store.settings import HistoryConfig
from exporters.report.settings import ReportConfig, SmtpConfig

# Every registered source kind (entry points `capacityd.sources`), told apart by its `kind` key.
SOURCE_KINDS = source_settings_models()
SourceConfig = Annotated[Union[tuple(SOURCE_KINDS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007


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
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Roles and sharding (scale-out).")

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



def format_location(loc: tuple[Any, ...]) -> str:
    """('sources', 2, 'libvirt', 'uri') -> 'sources[2].uri' (the union tag pydantic adds is dropped)."""
    out = ""
    skip_tag = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            skip_tag = True
            continue
        if skip_tag and part in SOURCE_KINDS:
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
            message = f"missing; every source needs a kind ({', '.join(SOURCE_KINDS)})"
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
