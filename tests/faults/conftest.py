"""Fixtures of the fault suite: an estate of real parts (libvirt test driver, the OpenStack stand-in) and the daemon."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.demo.model import CLOUD, REGION, build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from tests.faults.harness import NODE5, Daemon, config_text, free_port, libvirt_source, openstack_source


@dataclass
class Estate:
    """The services a fault case's daemon polls; `restart_openstack` brings the cloud back on the same port."""

    openstack: StandinServer
    clouds_yaml: Path
    state_dir: Path
    config_path: Path
    port: int

    def restart_openstack(self) -> StandinServer:
        self.openstack = StandinServer(self.openstack.cloud, port=self.openstack.port).start()
        return self.openstack

    def sources(self, libvirt_interval: str = "2s", openstack_interval: str = "3s") -> list[str]:
        return [
            libvirt_source("node5", f"test://{NODE5}", libvirt_interval),
            libvirt_source("default", "test:///default", libvirt_interval),
            openstack_source(CLOUD, self.clouds_yaml, CLOUD, openstack_interval, region=REGION),
        ]

    def write_config(self, extra: str = "", sources: list[str] | None = None) -> Path:
        self.config_path.write_text(config_text(self.port, self.state_dir, sources or self.sources(), extra))
        return self.config_path


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Estate]:
    server = StandinServer(from_demo_estate(build_estate(), growth_every=3600.0)).start()
    clouds_yaml = server.write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, REGION)
    estate = Estate(server, clouds_yaml, tmp_path / "state", tmp_path / "capacityd.yaml", free_port())
    estate.write_config()
    try:
        yield estate
    finally:
        estate.openstack.stop()


@pytest.fixture
def daemon(estate: Estate, tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(estate.config_path, estate.port, tmp_path / "daemon.log")
    try:
        yield process
    finally:
        if process.alive():
            process.stop()
