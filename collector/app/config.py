"""capacityd's configuration: one YAML file, composed of each component's typed settings.

The shape is a contract (docs/config.md): later features add keys, they never rename or remove one.
Each component owns its settings model next to its code; this module only composes them, loads the
file and turns validation errors into one line per problem that never echoes a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from collector.analyses.forecast.settings import ForecastConfig
from collector.analyses.headroom.settings import HeadroomConfig, PodShape
from collector.app.cluster.settings import ClusterConfig  # cluster: roles and sharding (issue 13)
from collector.contract.settings import ConfigError, SourceBase, StrictModel
from collector.sources import source_settings_models
from collector.store.settings import HistoryConfig
from exporters.prometheus.settings import WebSettings
from exporters.report.settings import ReportConfig, SmtpConfig

# Every registered source kind (entry points `capacityd.sources`), told apart by its `kind` key.
SOURCE_KINDS = source_settings_models()
if TYPE_CHECKING:
    # The union is built at run time from the plugins; statically every member is a SourceBase with a `kind`.
    class SourceConfig(SourceBase):
        kind: str
else:
    SourceConfig = Annotated[Union[tuple(SOURCE_KINDS.values())], Field(discriminator="kind")]  # noqa: UP007


class Config(StrictModel):
    """The whole file."""

    listen: str = Field(default="127.0.0.1:9847", description="HOST:PORT for /metrics.")
    state_dir: Path = Field(default=Path("/var/lib/capacityd"), description="History and schedule state.")
    web_config_file: Path | None = Field(
        default=None, description="exporter-toolkit web config (TLS, basic auth) for /metrics."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    web: WebSettings = Field(default_factory=WebSettings, description="/metrics server limits (docs/config.md).")
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


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few kilobytes; anything over 1 MiB is refused before it is parsed."""
MAX_NESTING = 32
"""Deepest YAML nesting accepted (the file's own shape is 5 levels deep); deeper is refused, not recursed."""
MAX_NODES = 100_000
"""YAML nodes after alias expansion: bounds the work a file of anchors and aliases ('billion laughs') makes."""
MAX_INTEGER_DIGITS = 100
"""Longer integers are refused by the YAML loader itself (Python refuses over 4300 digits with a ValueError)."""
SECRET_WORDS = ("password", "passwd", "token", "secret", "key", "credential")
"""A key whose name contains one of these is a secret: its value is shown as `<redacted>`, whatever the error."""
REDACTED = "<redacted>"


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """SafeLoader refusing deep nesting and huge integers while it composes, before Python recurses or parses."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INTEGER_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {digits} digits (at most {MAX_INTEGER_DIGITS})", node.start_mark
            )
        return int(super().construct_yaml_int(node))


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded (shared nodes counted each time they are used).

    A node that contains itself (`&a [*a]`) expands forever: it counts as over the limit.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(child), 0) for child in children))
            continue
        if id(node) in open_nodes:
            return MAX_NODES + 1  # a node inside itself: a recursive alias
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return MAX_NODES + 1
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def safe_yaml(text: str) -> Any:
    """yaml.safe_load with bounded work: nesting depth, node count after alias expansion, integer size."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} values once aliases are expanded")
        return loader.construct_document(root)
    finally:
        loader.dispose()


def is_secret_key(name: Any) -> bool:
    return isinstance(name, str) and any(word in name.lower() for word in SECRET_WORDS)


def format_location(loc: tuple[Any, ...]) -> str:
    """('sources', 2, 'libvirt', 'uri') -> 'sources[2].uri' (the union tag pydantic adds is dropped)."""
    out = ""
    skip_tag = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            skip_tag = True
            continue
        part = str(part)
        if skip_tag and part in SOURCE_KINDS:
            skip_tag = False
            continue
        skip_tag = False
        if part.startswith("function-") or part in ("union_tag",):
            continue
        out += f".{part}" if out else part
    return out or "(top level)"


def _redact(message: str, value: Any) -> str:
    """`message` without any rendering of `value` (or of the strings inside it)."""
    texts: list[str] = []
    stack = [value]
    while stack and len(texts) < 1000:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool):
            texts.extend((repr(item), str(item)))
    for text in sorted({t for t in texts if len(t) >= 3}, key=len, reverse=True):
        message = message.replace(text, REDACTED)
    return message


def validation_messages(error: ValidationError) -> list[str]:
    """One line per error naming the key path and what was expected; a secret's value is never shown."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        loc = tuple(item["loc"])
        location = format_location(loc)
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "union_tag_invalid":
            location += ".kind"
            message = f"unknown kind {item['ctx']['tag']!r}; expected one of {item['ctx']['expected_tags']}"
        elif item["type"] == "union_tag_not_found":
            location += ".kind"
            message = f"missing; every source needs a kind ({', '.join(SOURCE_KINDS)})"
        if any(is_secret_key(part) for part in loc) or ("input" in item and _mentions_secret(item["input"])):
            message = _redact(message, item.get("input"))
        lines.append(f"{location}: {message}")
    return lines


def _mentions_secret(value: Any) -> bool:
    """True for a mapping holding a secret-named key (an error on it may echo the whole mapping)."""
    return isinstance(value, dict) and any(is_secret_key(k) for k in value)


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
    """Validate parsed YAML; raises ConfigError (and nothing else) for every config that cannot be used."""
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
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as error:
        # A validator outside this module that let a non-ValueError escape: still one line, no value.
        raise ConfigError(path, [f"(top level): cannot be validated ({type(error).__name__})"]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError (never anything else) listing every problem found.

    Work is bounded whatever the file holds: size, nesting, aliases and integer length are checked
    before Python materializes anything big.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror or error}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [f"(file): larger than {MAX_CONFIG_BYTES // 1024} KiB; not a capacityd config"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(str(path), [f"line {line}: not UTF-8 text (byte offset {error.start})"]) from None
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(error, "problem", None) or (str(error) if not mark else "invalid YAML")
        raise ConfigError(str(path), [f"{where}: {problem}"]) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as error:
        raise ConfigError(str(path), [f"YAML: cannot be read ({type(error).__name__})"]) from None
    return parse_config(data, str(path))
