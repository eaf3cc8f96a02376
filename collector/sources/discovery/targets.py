"""What a discovered target is, and how a URI template is applied to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Formatter
from typing import Any

from collector.sources.base import SourceError


@dataclass(frozen=True)
class Target:
    """One thing to poll. `identity` is unique within a source and becomes the `host` and `target` labels."""

    identity: str
    uri: str
    pool: str
    disabled: bool = False
    labels: dict[str, str] = field(default_factory=dict, compare=True, hash=False)

    def key(self) -> tuple[str, str, bool, tuple[tuple[str, str], ...]]:
        """Everything that, when changed, relabels the target (the uri also reconnects)."""
        return (self.uri, self.pool, self.disabled, tuple(sorted(self.labels.items())))


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise SourceError("discovery_template", f"the uri template uses {{{key}}}, which this target does not have")


def render(template: str, fields: dict[str, Any]) -> str:
    """Apply a `{field}` template; a field the target lacks is a clear SourceError, never an empty host."""
    return Formatter().vformat(template, (), _Fields(fields))


def unique(targets: list[Target]) -> tuple[list[Target], list[str]]:
    """Targets with distinct identities (first wins, in identity order) and the identities dropped as duplicates."""
    seen: dict[str, Target] = {}
    duplicates: list[str] = []
    for target in sorted(targets, key=lambda t: (t.identity, t.uri)):
        if target.identity in seen:
            duplicates.append(target.identity)
            continue
        seen[target.identity] = target
    return list(seen.values()), duplicates
