"""deploy/openstack/*-policy.yaml against the REAL Nova 34 and Placement policy engines (the suite's OpenStack
venv): the `capacityd_reader` role may make exactly the GETs capacityd makes, across projects; without the
override a plain project reader may not (why the role exists); no write rule is opened; every override keeps
the service's default grant and only adds `rule:capacityd_reader`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.services.openstack import require_venv

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

# capacityd's calls (collector/sources/openstack/{nova,placement}.py) -> the policy rule each one checks.
CALLS = {
    "nova": {
        "GET /os-hypervisors/detail": "os_compute_api:os-hypervisors:list-detail",
        "GET /servers/detail": "os_compute_api:servers:detail",
        "GET /servers/detail?all_tenants=1": "os_compute_api:servers:detail:get_all_tenants",
        "GET /servers/detail (OS-EXT-SRV-ATTR:hypervisor_hostname)": "os_compute_api:os-extended-server-attributes",
        "GET /os-aggregates": "os_compute_api:os-aggregates:index",
        "GET /flavors/{id}/os-extra_specs": "os_compute_api:os-flavor-extra-specs:index",
        "GET /flavors/{id}/os-flavor-access": "os_compute_api:os-flavor-access",
        "GET /os-quota-sets/{project}/detail": "os_compute_api:os-quota-sets:detail",
    },
    "placement": {
        "GET /resource_providers": "placement:resource_providers:list",
        "GET /resource_providers/{uuid}/inventories": "placement:resource_providers:inventories:list",
        "GET /resource_providers/{uuid}/usages": "placement:resource_providers:usages",
        "GET /resource_providers/{uuid}/aggregates": "placement:resource_providers:aggregates:list",
        "GET /traits": "placement:traits:list",
    },
}


@pytest.mark.parametrize("service", ["nova", "placement"])
def test_reader_role_gets_exactly_capacityds_reads(service: str) -> None:
    python = require_venv()
    policy_file = REPO / "deploy" / "openstack" / f"{service}-policy.yaml"
    rules = sorted(set(CALLS[service].values()))
    done = subprocess.run(
        [
            str(python),
            str(REPO / "tests" / "deploy" / "openstack_policy_body.py"),
            service,
            str(policy_file),
            ",".join(rules),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(seen["with_role"].values()), seen["with_role"]
    # Without the override, hypervisors / all tenants / providers are closed to a plain project reader.
    closed = {name for name, allowed in seen["reader_without_override"].items() if not allowed}
    assert closed, "the override would be pointless"
    assert seen["writes_checked"] > 10 and seen["writes_allowed"] == []
    shipped = yaml.safe_load(policy_file.read_text())
    assert set(shipped) == set(rules) | {"capacityd_reader"}  # nothing beyond capacityd's reads
    for name in rules:
        assert shipped[name] == f"{seen['defaults'][name]} or rule:capacityd_reader", name
