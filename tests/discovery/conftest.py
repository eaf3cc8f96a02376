"""Fixtures for discovery tests: per-host libvirt test-driver node files (distinct domain uuids).

Every discovered target gets its own node file, `<dir>/<host>.xml`, a copy of the 5-domain test node
whose domain uuids are made unique per host (real hypervisors never share a domain uuid), so a URI
template such as `test://<dir>/{hypervisor_hostname}.xml` reaches a distinct libvirt connection per target.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_5 = REPO / "collector" / "sources" / "libvirt" / "testdata" / "test-node-5.xml"
_UUID = re.compile(r"<uuid>([0-9a-f-]{36})</uuid>")


def write_node(directory: Path, host: str) -> Path:
    """`<directory>/<host>.xml`: the 5-domain node with host-specific domain uuids."""

    def unique(match: re.Match[str]) -> str:
        digest = hashlib.sha256(f"{host}/{match.group(1)}".encode()).hexdigest()
        return f"<uuid>{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}</uuid>"

    path = directory / f"{host}.xml"
    path.write_text(_UUID.sub(unique, NODE_5.read_text()))
    return path


@pytest.fixture
def node_dir(tmp_path: Path) -> Callable[[list[str]], Path]:
    """Write node files for the given hosts into one directory and return it."""
    directory = tmp_path / "nodes"
    directory.mkdir()

    def make(hosts: list[str]) -> Path:
        for host in hosts:
            write_node(directory, host)
        return directory

    return make
