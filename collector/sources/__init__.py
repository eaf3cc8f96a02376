"""Sources: one sub-package per kind (libvirt, openstack, kubernetes), each with a README.

`create_source` imports a kind's package only when the config uses it, so a libvirt-only
deployment never imports the OpenStack or Kubernetes client libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

from collector.sources.base import PollResult, Source, SourceError

__all__ = ["PollResult", "Source", "SourceError", "create_source"]


def create_source(config: Any) -> Source:
    """Instantiate the Source class that the package `collector.sources.<kind>` exports as SOURCE."""
    module = importlib.import_module(f"collector.sources.{config.kind}")
    source_class: type[Source] = module.SOURCE
    return source_class(config)
