"""Sources: one sub-package per kind (libvirt, openstack, kubernetes), each with a README.

Kinds are plugins: the entry point group `capacityd.sources` maps a `kind` to its pydantic settings
model (a `SourceBase` whose `create_source()` builds the `Source`). Only the kinds a config uses
are imported, so a libvirt-only deployment never imports the OpenStack or Kubernetes client libraries;
a third party adds a kind from its own package (docs/DEVELOPING.md#plugins).
"""

from __future__ import annotations

from functools import cache

from collector.contract.plugins import PluginError, load_plugins
from collector.contract.settings import SourceBase
from collector.sources.base import PollResult, Source, SourceError

__all__ = ["PollResult", "Source", "SourceError", "create_source", "source_settings_models"]


@cache
def source_settings_models() -> dict[str, type[SourceBase]]:
    """Every registered source kind's settings model, by kind (entry points `capacityd.sources`).

    Settings modules are light (pydantic only): loading them all never imports a client library.
    """
    models: dict[str, type[SourceBase]] = {}
    builtin = ("libvirt", "openstack", "kubernetes")  # listed in this order in messages; third parties after
    order = {kind: index for index, kind in enumerate(builtin)}
    plugins = load_plugins("capacityd.sources")
    for kind in sorted(plugins, key=lambda kind: (order.get(kind, len(builtin)), kind)):
        model = plugins[kind]
        if not (isinstance(model, type) and issubclass(model, SourceBase)):
            raise PluginError(f"source plugin {kind!r} is not a settings model derived from SourceBase")
        models[kind] = model
    return models


def create_source(config: SourceBase) -> Source:
    """Instantiate the Source that a source's settings configure."""
    source = config.create_source()
    if not isinstance(source, Source):
        raise TypeError(f"{type(config).__name__}.create_source() returned {type(source).__name__}, not a Source")
    return source
