"""Fixtures for the OpenStack source tests.

`real_cloud` starts REAL Placement 16 + Nova 34 (all-in-one, fake-driver computes) from the venv
that scripts/provision/openstack.sh builds and populates a small realistic cloud through their
APIs (tests/services/openstack.py; ~40 s, once per session). A missing venv is an error with the
fix in its message, never a skip. `standin` serves a cloud from the stand-in used by the demo,
for fault injection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.sources.openstack.client import RetryPolicy
from collector.sources.openstack.settings import OpenStackSourceConfig
from collector.sources.openstack.source import OpenStackSource
from tests.services.openstack import Placement, RealCloud, build_test_cloud


@pytest.fixture(scope="session")
def real_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCloud]:
    cloud = build_test_cloud(tmp_path_factory.mktemp("openstack-real"))
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture(scope="session")
def real_placement(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Placement]:
    """A second, Nova-less real Placement for tests that write to it freely."""
    placement = Placement(tmp_path_factory.mktemp("placement-only")).start()
    try:
        yield placement
    finally:
        placement.stop()


def make_source(
    clouds_yaml: Path, cloud: str, name: str | None = None, sleeps: list[float] | None = None, **config: object
) -> OpenStackSource:
    """An OpenStackSource as the daemon builds it, with a recorded (instant) backoff sleep."""
    settings = {"kind": "openstack", "cloud": cloud, "clouds_yaml": str(clouds_yaml), "interval": "60s", **config}
    if name:
        settings["name"] = name
    recorder = sleeps if sleeps is not None else []
    return OpenStackSource(
        OpenStackSourceConfig(**settings), retry=RetryPolicy(attempts=4, backoff=0.5), sleep=recorder.append
    )
