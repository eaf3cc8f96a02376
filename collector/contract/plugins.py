"""Plugins by entry points: sources, analyses, metric families and commands (docs/DEVELOPING.md#plugins).

In the bottom layer so that every layer loads its plugins the same way and fails the same way.

capacityd's own parts are registered in its pyproject.toml exactly as a third party registers theirs,
under the groups `capacityd.sources`, `capacityd.analyses`, `capacityd.exporters` and
`capacityd.commands`. A plugin that cannot be imported fails loudly with its group and name, at start.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any


class PluginError(RuntimeError):
    """A registered plugin that cannot be loaded; the message names its group, name and target."""


def _load(entry_point: EntryPoint) -> Any:
    try:
        return entry_point.load()
    except Exception as error:
        if isinstance(error, PluginError):  # a plugin whose own import loads a broken plugin: name the broken one
            raise
        raise PluginError(
            f"plugin {entry_point.name!r} ({entry_point.group} = {entry_point.value}) cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from error


@cache
def load_plugins(group: str) -> dict[str, Any]:
    """Every entry point of `group`, loaded, by name (sorted, so the order is stable)."""
    found = sorted(entry_points(group=group), key=lambda ep: ep.name)
    names = [ep.name for ep in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PluginError(f"{group}: more than one plugin is named {', '.join(duplicates)}")
    return {ep.name: _load(ep) for ep in found}
