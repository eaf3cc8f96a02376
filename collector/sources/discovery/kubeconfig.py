"""kubeconfig contexts -> cluster targets: `contexts: ["*"]` or globs, one target per matching context.

The file is re-read on each discovery (a context added to the kubeconfig is polled from the next slot,
a removed one goes). `$KUBECONFIG` may list several files (`a:b`), as kubectl merges them: the first
definition of a context name wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from collector.sources.base import Source, SourceError
from collector.sources.discovery.targets import Target, unique


def kubeconfig_files(configured: Path | None) -> list[Path]:
    """The kubeconfig files to read: the configured one, else every file of $KUBECONFIG, else ~/.kube/config."""
    if configured is not None:
        return [configured]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def context_names(files: list[Path]) -> list[str]:
    """Context names in kubectl's merge order; a missing or unreadable file is an error naming it."""
    names: list[str] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise SourceError("config", f"kubeconfig {path}: cannot read: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise SourceError("config", f"kubeconfig {path}: not valid YAML: {error}") from None
        contexts = data.get("contexts") if isinstance(data, dict) else None
        for entry in contexts or []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def context_targets(patterns: list[str], files: list[Path]) -> tuple[list[Target], list[str]]:
    """One target per context matching any glob (identity = the context name)."""
    matched = [name for name in context_names(files) if any(fnmatchcase(name, p) for p in patterns)]
    return unique([Target(identity=name, uri=name, pool="-", labels={"context": name}) for name in matched])


def cluster_fleet(config: Any, make_source: Callable[[str], Source]) -> Source:
    """The fleet of a kubernetes source with `contexts:`: each matching context polled as its own cluster.

    Each per-context source is named `<name>:<context>` in the frames' `source` column (node names often
    repeat across clusters) and labels `cloud` with the context; the fleet keeps their labels as they are.
    """
    from collector.sources.discovery.fleet import TargetFleet
    from collector.sources.discovery.settings import DiscoverConfig

    if config.in_cluster:
        raise SourceError("config", f"kubernetes source {config.name}: contexts and in_cluster exclude each other")
    files = kubeconfig_files(config.kubeconfig)
    settings = DiscoverConfig.model_construct(
        from_=None,
        file_sd=[],
        uri="{target}",
        max_concurrency=8,
        refresh_interval=config.interval,
        gone_retention=config.interval * 15,
    )
    return TargetFleet(
        config,
        lambda target: make_source(target.identity),
        discover=settings,
        producer=lambda: context_targets(list(config.contexts), files),
        relabel=False,
    )
