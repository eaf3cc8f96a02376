"""Fixtures for the libvirt source tests: test-driver node files and a real libvirtd + QEMU guest.

The real daemon is started once per session (about 10 s, plus ~15 s for the guest to boot and
report balloon stats). If it cannot start, the tests that need it FAIL with the reason: CI
provisions everything (scripts/provision/libvirt.sh), so a missing piece is a bug, not a skip.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.sources.libvirt import LibvirtSource
from collector.sources.libvirt.settings import LibvirtSourceConfig
from tests.services.libvirtd import GuestSpec, Libvirtd, LibvirtdError

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "collector" / "sources" / "libvirt" / "testdata"

LINUX_GUEST = GuestSpec(name="linux-guest", uuid="11111111-2222-3333-4444-000000000102")


@pytest.fixture(scope="session")
def node_1000(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The 1000-domain test-driver node (gunzipped) and its summary."""
    out = tmp_path_factory.mktemp("node1000") / "kvm-1000.xml"
    with gzip.open(TESTDATA / "test-node-1000.xml.gz") as compressed, open(out, "wb") as plain:
        shutil.copyfileobj(compressed, plain)
    return out, json.loads((TESTDATA / "test-node-1000.summary.json").read_text())


@pytest.fixture(scope="session")
def node_5() -> tuple[Path, dict[str, Any]]:
    return TESTDATA / "test-node-5.xml", json.loads((TESTDATA / "test-node-5.summary.json").read_text())


@pytest.fixture
def make_source() -> Iterator[Callable[..., LibvirtSource]]:
    """Build LibvirtSources from config keys; every one is closed at teardown."""
    made: list[LibvirtSource] = []

    def make(uri: str, **config: Any) -> LibvirtSource:
        settings = {"kind": "libvirt", "name": "kvm-test", "uri": uri, "interval": "15s", **config}
        source = LibvirtSource(LibvirtSourceConfig(**settings))
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A real libvirtd (private namespaces) running a TCG Linux guest that reports balloon stats."""
    if os.geteuid() != 0:
        pytest.fail("the real-libvirtd tests need root (mount + network namespaces); CI runs as root")
    daemon = Libvirtd(tmp_path_factory.mktemp("libvirtd"))
    try:
        daemon.start()
        daemon.define_guest(LINUX_GUEST)
        daemon.wait_for_balloon_stats(LINUX_GUEST.name)
    except LibvirtdError as error:
        daemon.stop()
        pytest.fail(f"real libvirtd could not be set up: {error}")
    try:
        yield daemon
    finally:
        daemon.stop()
