"""Prometheus `file_sd_configs` files -> targets, re-read when a file changes (no SIGHUP needed).

Each file is a JSON or YAML list of `{targets: [...], labels: {...}}` groups, as Prometheus reads them.
A file that cannot be parsed keeps its previous targets (never drops a fleet because of a typo) and its
error is reported; a file that disappears takes its targets with it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from collector.sources.discovery.targets import Target, render, unique

log = logging.getLogger(__name__)

POOL_LABEL = "pool"
"""A file_sd label that sets the target's `pool` (like `__meta_*` relabelling would)."""


class FileSDError(ValueError):
    """A file_sd file whose content is not a list of {targets, labels} groups; the message names the file."""


def parse_groups(path: str, text: str) -> list[tuple[str, dict[str, str]]]:
    """(target, labels) pairs of one file; raises FileSDError naming the file and what is wrong."""
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise FileSDError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {error}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise FileSDError(f"{path}: expected a list of {{targets: [...], labels: {{...}}}} groups")
    pairs = []
    for index, group in enumerate(data):
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise FileSDError(f"{path}: group {index} has no `targets` list")
        unknown = set(group) - {"targets", "labels"}
        if unknown:
            raise FileSDError(f"{path}: group {index} has unknown key(s) {sorted(unknown)}")
        labels = group.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise FileSDError(f"{path}: group {index}: labels must map names to strings")
        for target in group["targets"]:
            if not isinstance(target, str) or not target.strip():
                raise FileSDError(f"{path}: group {index}: every target must be a non-empty string")
            pairs.append((target.strip(), {str(k): v for k, v in labels.items()}))
    return pairs


@dataclass
class _File:
    stamp: tuple[int, int, int]
    pairs: list[tuple[str, dict[str, str]]]


@dataclass
class FileSD:
    """The targets of a set of globs; `scan()` re-reads only files whose (mtime, size, inode) changed."""

    globs: list[str]
    template: str
    default_pool: str
    _files: dict[str, _File] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def scan(self) -> tuple[list[Target], list[str]]:
        """Current targets (unique identities) and the identities dropped as duplicates."""
        paths = sorted({p for pattern in self.globs for p in glob.glob(pattern)})
        for gone in set(self._files) - set(paths):
            del self._files[gone]
            self.errors.pop(gone, None)
        for path in paths:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if path in self._files and self._files[path].stamp == stamp:
                    continue
                with open(path, encoding="utf-8") as handle:
                    pairs = parse_groups(path, handle.read())
            except (OSError, FileSDError) as error:
                if self.errors.get(path) != str(error):  # once per distinct problem, not every scan
                    log.error("file_sd: %s (keeping the file's previous targets)", error)
                self.errors[path] = str(error)
                continue
            self.errors.pop(path, None)
            self._files[path] = _File(stamp, pairs)
        targets = []
        for path in sorted(self._files):
            for address, labels in self._files[path].pairs:
                fields: dict[str, Any] = {**labels, "target": address, "__address__": address}
                targets.append(
                    Target(
                        identity=address,
                        uri=render(self.template, fields),
                        pool=labels.get(POOL_LABEL, self.default_pool),
                        disabled=labels.get("disabled") == "true",
                        labels=dict(labels),
                    )
                )
        return unique(targets)
