"""deploy/openstack/*-policy.yaml over HTTP: the REAL Nova 34 and Placement 16 load them as their policy files
(Nova with its own 2025.2 policy defaults: enforce_new_defaults and enforce_scope on), and capacityd's OpenStack
source authenticates as a user holding only `reader` + `capacityd_reader` in a project of its own.

With the overrides it polls what an admin polls: every project's servers, where they run, their flavors' extra
specs, the hypervisors, aggregates, quotas and every Placement read. Without them, or with any one rule taken
out, the poll fails with reason `forbidden` naming the call (or, for a rule that only hides a field, the field
and the rule). The policy files are rewritten in place: both services re-read them when they change, as in
production, so one Nova serves the whole module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from collector.sources.base import SourceError
from tests.openstack.conftest import make_source
from tests.services.openstack import HostSpec, Nova, Placement, write_clouds_yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SHIPPED = {service: REPO / "deploy" / "openstack" / f"{service}-policy.yaml" for service in ("nova", "placement")}
PROJECTS = {"alpha": "a1fa0000000000000000000000000001", "beta": "be7a0000000000000000000000000001"}
CAPACITYD_PROJECT = "cad0000000000000000000000000c0de"
READER_TOKEN = f"capacityd:{CAPACITYD_PROJECT}:reader,capacityd_reader"
HOSTS = [
    HostSpec("compute-1", vcpus=16, memory_mb=32768, disk_gb=200),
    HostSpec("compute-2", vcpus=8, memory_mb=16384, disk_gb=100),
]


@dataclass
class Cloud:
    nova: Nova
    placement: Placement
    policies: dict[str, Path]
    admin_yaml: Path
    reader_yaml: Path
    _mtime: float = 0.0

    def set_policy(self, service: str, rules: dict[str, str]) -> None:
        """Replace a service's policy file; a fresh mtime each time so oslo.policy's cache sees the change."""
        path = self.policies[service]
        staging = path.with_suffix(".new")
        staging.write_text(yaml.safe_dump(rules) if rules else "{}\n")
        self._mtime = max(self._mtime + 1, time.time())
        os.utime(staging, (self._mtime, self._mtime))
        os.replace(staging, path)

    def shipped(self) -> None:
        for service, source in SHIPPED.items():
            self.set_policy(service, yaml.safe_load(source.read_text()))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    work = tmp_path_factory.mktemp("least-privilege")
    policies = {service: work / f"{service}-policy.yaml" for service in SHIPPED}
    for service, path in policies.items():
        path.write_text(SHIPPED[service].read_text())
    placement = Placement(work / "placement", policy_file=policies["placement"]).start()
    nova = Nova(work / "nova", placement, HOSTS, policy_file=policies["nova"], new_policy_defaults=True)
    try:
        nova.start()
        nova.create_aggregate("az1", ["compute-1"], zone="az1")
        placement.call("PUT", "/traits/CUSTOM_SSD", ok=(201, 204))
        small = nova.create_flavor("m1.small", 1, 2048, 20, extra_specs={"trait:CUSTOM_SSD": "forbidden"})
        private = nova.create_flavor("p1.alpha", 2, 4096, 20, public=False, projects=(PROJECTS["alpha"],))
        nova.boot("alpha-1", small, PROJECTS["alpha"], "az1")
        nova.boot("beta-1", small, PROJECTS["beta"])
        nova.boot("alpha-private", private, PROJECTS["alpha"])
        admin_yaml = write_clouds_yaml(work / "admin.yaml", "lp", placement.url, nova.url)
        reader_yaml = write_clouds_yaml(work / "reader.yaml", "lp", placement.url, nova.url, token=READER_TOKEN)
        yield Cloud(nova, placement, policies, admin_yaml, reader_yaml)
    finally:
        nova.stop()
        placement.stop()


def _poll(clouds_yaml: Path) -> dict[str, pd.DataFrame]:
    source = make_source(clouds_yaml, "lp", name="os")
    try:
        return source.checked_poll(datetime.now(UTC)).frames
    finally:
        source.close()


def _failure(clouds_yaml: Path) -> SourceError:
    source = make_source(clouds_yaml, "lp", name="os")
    try:
        with pytest.raises(SourceError) as caught:
            source.checked_poll(datetime.now(UTC))
        return caught.value
    finally:
        source.close()


def _rows(frame: pd.DataFrame, key: str, columns: list[str]) -> list[tuple[str, ...]]:
    """Rows as comparable tuples (missing values spelled 'None': pandas' NA never compares equal)."""
    table = frame[[key, *columns]].astype(object).where(frame[[key, *columns]].notna(), None)
    return sorted(tuple(str(value) for value in row) for row in table.itertuples(index=False))


def test_the_reader_role_polls_what_an_admin_polls(cloud: Cloud) -> None:
    cloud.shipped()
    admin = _poll(cloud.admin_yaml)
    reader = _poll(cloud.reader_yaml)
    # Every project's servers, and where each one runs (not only the reader's own project, which has none).
    consumers = ["host", "project", "holds_capacity", "cpu", "memory", "disk", "pool", "state"]
    assert len(admin["consumers"]) == 3
    assert _rows(reader["consumers"], "id", consumers) == _rows(admin["consumers"], "id", consumers)
    assert set(reader["consumers"]["host"]) <= {"compute-1", "compute-2"}
    # Placement: capacity and usage per provider; Nova: hypervisors, aggregates, quotas.
    capacity = ["resource", "capacity", "allocatable", "allocated", "pool"]
    assert _rows(reader["capacity"], "host", capacity) == _rows(admin["capacity"], "host", capacity)
    assert _rows(reader["hosts"], "host", ["pool", "schedulable"]) == _rows(
        admin["hosts"], "host", ["pool", "schedulable"]
    )
    assert set(admin["openstack_quotas"]["project"]) == set(PROJECTS.values())
    assert len(admin["openstack_hypervisors"]) == 2 and len(admin["openstack_aggregates"]) == 1
    for name in ("openstack_hypervisors", "openstack_aggregates", "openstack_quotas"):
        assert reader[name].drop(columns="timestamp").equals(admin[name].drop(columns="timestamp")), name
    # Extra specs reach the reader (inline in flavors and servers). Nova lists private flavors to an admin
    # only (`context.is_admin` in code, no policy rule): the reader sees the public ones.
    flavors = admin["flavors"].set_index("flavor")
    assert sorted(flavors.index) == ["m1.small", "p1.alpha"]
    assert flavors.loc["m1.small", "forbidden_traits"] == ["CUSTOM_SSD"]
    mine = reader["flavors"].set_index("flavor")
    assert sorted(mine.index) == ["m1.small"]
    assert mine.loc["m1.small"].drop("timestamp").to_dict() == flavors.loc["m1.small"].drop("timestamp").to_dict()
