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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from collector.sources.base import SourceError
from tests.foundation.test_daemon import free_port, sample, scrape, scrape_when
from tests.openstack.conftest import make_source
from tests.services.openstack import HostSpec, Nova, Placement, write_clouds_yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SHIPPED = {service: REPO / "deploy" / "openstack" / f"{service}-policy.yaml" for service in ("nova", "placement")}
PROJECTS = {"alpha": "a1fa0000000000000000000000000001", "beta": "be7a0000000000000000000000000001"}
CAPACITYD_PROJECT = "cad0000000000000000000000000c0de"
READER_TOKEN = f"capacityd:{CAPACITYD_PROJECT}:reader,capacityd_reader"
ROLE_ONLY_TOKEN = f"capacityd:{CAPACITYD_PROJECT}:capacityd_reader"
# Each shipped rule -> what a poll as reader + capacityd_reader says without it: the call (or field) it names,
# or None where a project reader's default grant already covers capacityd's use (the line is for the role alone).
NEEDED = {
    "nova": {
        "os_compute_api:os-hypervisors:list-detail": "compute GET /os-hypervisors/detail",
        "os_compute_api:servers:detail": None,
        "os_compute_api:servers:detail:get_all_tenants": "compute GET /servers/detail",
        "os_compute_api:os-extended-server-attributes": "without OS-EXT-SRV-ATTR:hypervisor_hostname",
        "os_compute_api:os-aggregates:index": "compute GET /os-aggregates",
        "os_compute_api:os-flavor-extra-specs:index": None,
        "os_compute_api:os-flavor-access": "/os-flavor-access",
        "os_compute_api:os-quota-sets:detail": "compute GET /os-quota-sets/",
    },
    "placement": {
        "placement:resource_providers:list": "placement GET /resource_providers",
        "placement:resource_providers:inventories:list": "/inventories",
        "placement:resource_providers:usages": "/usages",
        "placement:resource_providers:aggregates:list": "/aggregates",
        "placement:traits:list": "placement GET /traits",
    },
}
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
    role_only_yaml: Path
    _mtime: float = 0.0

    def set_policy(self, service: str, rules: dict[str, str]) -> None:
        """Replace a service's policy file; a fresh mtime each time so oslo.policy's cache sees the change."""
        path = self.policies[service]
        staging = path.with_suffix(".new")
        staging.write_text(yaml.safe_dump(rules) if rules else "{}\n")
        self._mtime = max(self._mtime + 1, time.time())
        os.utime(staging, (self._mtime, self._mtime))
        os.replace(staging, path)

    def shipped(self, without: str | None = None) -> None:
        """The shipped overrides, less the rule `without`."""
        for service, source in SHIPPED.items():
            rules = yaml.safe_load(source.read_text())
            self.set_policy(service, {name: rule for name, rule in rules.items() if name != without})


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
        # shared with capacityd's own project too: it is listed to capacityd, which then reads its access list
        nova.create_flavor("p1.shared", 2, 4096, 20, public=False, projects=(PROJECTS["beta"], CAPACITYD_PROJECT))
        nova.boot("alpha-1", small, PROJECTS["alpha"], "az1")
        nova.boot("beta-1", small, PROJECTS["beta"])
        nova.boot("alpha-private", private, PROJECTS["alpha"])
        # a sharing DISK_GB provider in az1: capacityd reads its aggregates from Placement
        shared = placement.create_provider("shared-disk-az1")
        placement.set_inventories(shared, {"DISK_GB": {"total": 1000, "reserved": 0, "max_unit": 500}})
        placement.set_traits(shared, ["MISC_SHARES_VIA_AGGREGATE"])
        az1 = next(a for a in nova.call("GET", "/os-aggregates")["aggregates"] if a["name"] == "az1")
        placement.set_aggregates(shared, [az1["uuid"]])
        yamls = [
            write_clouds_yaml(work / f"{name}.yaml", "lp", placement.url, nova.url, token=token)
            for name, token in (("admin", "admin"), ("reader", READER_TOKEN), ("role-only", ROLE_ONLY_TOKEN))
        ]
        yield Cloud(nova, placement, policies, *yamls)
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
    assert "shared-disk-az1" in set(reader["capacity"]["host"])
    # Extra specs and flavor access reach the reader. Nova lists a private flavor to an admin, or to a project it
    # is shared with (`context.is_admin` in code, no policy rule): the reader does not see p1.alpha.
    flavors = admin["flavors"].set_index("flavor")
    assert sorted(flavors.index) == ["m1.small", "p1.alpha", "p1.shared"]
    assert flavors.loc["m1.small", "forbidden_traits"] == ["CUSTOM_SSD"]
    mine = reader["flavors"].set_index("flavor")
    assert sorted(mine.index) == ["m1.small", "p1.shared"]
    for name in mine.index:
        assert mine.loc[name].drop("timestamp").to_dict() == flavors.loc[name].drop("timestamp").to_dict(), name
    assert mine.loc["p1.shared", "projects"] == sorted([PROJECTS["beta"], CAPACITYD_PROJECT])

    # The role alone (no `reader`) is enough too: the same frames.
    alone = _poll(cloud.role_only_yaml)
    assert _rows(alone["consumers"], "id", consumers) == _rows(admin["consumers"], "id", consumers)
    assert _rows(alone["capacity"], "host", capacity) == _rows(admin["capacity"], "host", capacity)
    assert alone["flavors"].drop(columns="timestamp").equals(reader["flavors"].drop(columns="timestamp"))


def test_the_default_policies_refuse_the_reader(cloud: Cloud) -> None:
    """Why the overrides exist: with the services' own defaults the poll fails on a 403, named."""
    for service in SHIPPED:
        cloud.set_policy(service, {})
    error = _failure(cloud.reader_yaml)
    assert error.reason == "forbidden"
    assert "HTTP 403" in str(error) and " GET /" in str(error)
    cloud.shipped()
    _poll(cloud.reader_yaml)  # and the services re-read the restored files


def test_every_shipped_rule_is_accounted_for() -> None:
    for service, path in SHIPPED.items():
        assert set(yaml.safe_load(path.read_text())) == {"capacityd_reader", *NEEDED[service]}, service


@pytest.mark.parametrize("rule", [rule for rules in NEEDED.values() for rule in rules])
def test_each_rule_is_needed(cloud: Cloud, rule: str) -> None:
    """Without one rule the poll fails `forbidden`, naming the refused call (or hidden field) and the rule."""
    cloud.shipped(without=rule)
    call = NEEDED["nova" if rule.startswith("os_compute_api") else "placement"][rule]
    try:
        if call is None:  # a project reader's default covers it: needed only by the role alone
            _poll(cloud.reader_yaml)
            error = _failure(cloud.role_only_yaml)
        else:
            error = _failure(cloud.reader_yaml)
    finally:
        cloud.shipped()
    assert error.reason == "forbidden", str(error)
    message = str(error)
    assert rule in message, message
    if call is not None:
        assert call in message, message
        if "without" not in call:
            assert "HTTP 403" in message, message


def test_the_daemon_counts_a_refused_poll(cloud: Cloud, tmp_path: Path) -> None:
    """The real `capacityd run` as the reader: a rule taken out is a `forbidden` failure, logged with the call."""
    cloud.shipped()
    port = free_port()
    config = tmp_path / "capacityd.yaml"
    config.write_text(f"""
listen: 127.0.0.1:{port}
state_dir: {tmp_path / "state"}
sources:
  - kind: openstack
    name: nova
    cloud: lp
    clouds_yaml: {cloud.reader_yaml}
    interval: 2s
    timeout: 2s
""")
    log_path = tmp_path / "daemon.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "collector.app.cli", "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    up = {"source": "nova", "kind": "openstack"}
    forbidden = {**up, "reason": "forbidden"}
    try:
        text = scrape_when(port, lambda t: sample(t, "capacityd_source_up", **up) == 1, "the reader's first poll")
        assert not sample(text, "capacityd_source_errors_total", **forbidden)
        cloud.shipped(without="os_compute_api:servers:detail:get_all_tenants")
        changed = time.monotonic()
        text = scrape_when(
            port,
            lambda t: (
                sample(t, "capacityd_source_up", **up) == 0
                and (sample(t, "capacityd_source_errors_total", **forbidden) or 0) >= 1
            ),
            "the refused poll counted",
        )
        # The next poll (within an interval, 2 s) fails and /metrics is re-rendered at once, not at the idle
        # refresh 30 s later.
        elapsed = time.monotonic() - changed
        assert elapsed < 2 * 2 + 1, f"the refused poll showed after {elapsed:.1f}s"
        cloud.shipped()
        text = scrape_when(port, lambda t: sample(t, "capacityd_source_up", **up) == 1, "the restored policy")
        refused = sample(text, "capacityd_source_errors_total", **forbidden)
        time.sleep(2 * 2 + 0.5)  # two more polls
        text = scrape(port)
        assert sample(text, "capacityd_source_up", **up) == 1
        assert sample(text, "capacityd_source_errors_total", **forbidden) == refused  # no more since
        assert process.poll() is None
    finally:
        cloud.shipped()
        process.terminate()
        process.wait(15)
        log.close()
    logged = [line for line in log_path.read_text().splitlines() if "poll failed (forbidden)" in line]
    assert logged, log_path.read_text()[-2000:]
    assert "compute GET /servers/detail" in logged[0] and "HTTP 403" in logged[0], logged[0]
    assert "os_compute_api:servers:detail:get_all_tenants" in logged[0], logged[0]
    assert READER_TOKEN not in log_path.read_text()  # the token is never logged
