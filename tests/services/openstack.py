"""Real OpenStack services for tests and benchmarks: Placement 16 and an all-in-one Nova 34.

Both come from the venv `scripts/provision/openstack.sh` builds (default
/var/cache/capacityd-ci/openstack-venv, override with $OPENSTACK_VENV) and listen on 127.0.0.1 at
free ports. Each server process watches its parent and exits when it is gone; `stop()` kills it by
PID. Nothing here is a mock: capacityd's collector talks to the real WSGI apps over HTTP.

Speed-ups (cached under /var/cache/capacityd-ci, keyed by the installed versions):
* the freshly migrated, still empty Nova databases (api, cell0, cell1) — `nova-manage` takes ~30 s
  and is the same every time; the SQLite URLs are relative, so a copy works in any work dir;
* the freshly migrated, empty Placement database (~4 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

CACHE_DIR = Path(os.environ.get("CAPACITYD_CI_CACHE", "/var/cache/capacityd-ci"))
VENV = Path(os.environ.get("OPENSTACK_VENV", CACHE_DIR / "openstack-venv"))
HERE = Path(__file__).resolve().parent / "openstack_aio"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
ADMIN_PROJECT = "adm1n000000000000000000000000000"


class _TransientBuildError(Exception):
    pass


class ServiceUnavailable(RuntimeError):
    """A real service could not be started; the message says how to fix it."""


def require_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        raise ServiceUnavailable(
            f"the OpenStack venv {VENV} is missing: run scripts/provision/openstack.sh "
            "(it installs openstack-placement and nova from PyPI into that venv)"
        )
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _installed_version(package: str) -> str:
    for dist in (VENV / "lib").glob(f"python3*/site-packages/{package.replace('-', '_')}-*.dist-info"):
        return dist.name.removesuffix(".dist-info").split("-")[1]
    return "unknown"


def _use_wal(database: Path) -> None:
    """Switch a SQLite file to WAL (persistent): readers stop blocking the many writer threads of the
    all-in-one Nova, which otherwise hit 'database is locked' while computes start up."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


class _Process:
    """A child server process: start, wait for its ready line, kill by PID."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.lines: list[str] = []
        """Everything the process printed on stdout so far (its ready line, Nova's compute reports)."""
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if " ready on " in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise ServiceUnavailable(f"{self.name} did not become ready within {timeout:.0f}s:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


# --------------------------------------------------------------------------------------------- Placement


class Placement:
    """The real Placement WSGI app (SQLite, noauth2) served on loopback."""

    def __init__(self, workdir: Path, port: int | None = None, policy_file: Path | None = None):
        """`policy_file`: an oslo.policy override file (re-read whenever it changes, as in production)."""
        self.workdir = workdir
        self.policy_file = policy_file
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: _Process | None = None
        self.session = requests.Session()
        self.session.headers.update({"X-Auth-Token": "admin", "Accept": "application/json"})

    def start(self, timeout: float = 60, seed: Path | None = None) -> Placement:
        """Start on a fresh database, or on a copy of `seed` (a populated database cached earlier)."""
        python = require_venv()
        self.workdir.mkdir(parents=True, exist_ok=True)
        database = self.workdir / "placement.sqlite"
        (self.workdir / "placement.conf").write_text(
            "[DEFAULT]\ndebug = false\n[api]\nauth_strategy = noauth2\n"
            f"[placement_database]\nconnection = sqlite:///{database}\n"
            + (f"[oslo_policy]\npolicy_file = {self.policy_file}\n" if self.policy_file else "")
        )
        cached = CACHE_DIR / f"placement-db-{_installed_version('openstack-placement')}.sqlite"
        if seed is not None:
            shutil.copyfile(seed, database)
        elif cached.exists():
            shutil.copyfile(cached, database)
        else:
            subprocess.run(
                [
                    str(VENV / "bin" / "placement-manage"),
                    "--config-file",
                    str(self.workdir / "placement.conf"),
                    "db",
                    "sync",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            with contextlib.suppress(OSError):
                CACHE_DIR.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(database, cached)
        self._process = _Process(
            "placement",
            [str(python), str(HERE / "serve_placement.py"), str(self.workdir), str(self.port), str(os.getpid())],
            self.workdir,
            self.workdir / "placement.log",
        )
        self._process.wait_ready(timeout)
        return self

    def stop(self) -> None:
        if self._process:
            self._process.stop()

    @property
    def pid(self) -> int | None:
        return self._process.proc.pid if self._process else None

    def call(self, method: str, path: str, body: Any = None, microversion: str = "1.39", ok=(200, 201, 204)) -> Any:
        response = self.session.request(
            method, self.url + path, json=body, headers={"OpenStack-API-Version": f"placement {microversion}"}
        )
        if response.status_code not in ok:
            raise AssertionError(f"placement {method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    # convenience writers used by tests and the benchmark
    def create_provider(self, name: str, parent: str | None = None, provider_uuid: str | None = None) -> str:
        rp_uuid = provider_uuid or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"capacityd-test/{name}"))
        body: dict[str, Any] = {"name": name, "uuid": rp_uuid}
        if parent:
            body["parent_provider_uuid"] = parent
        self.call("POST", "/resource_providers", body)
        return rp_uuid

    def generation(self, rp: str) -> int:
        return int(self.call("GET", f"/resource_providers/{rp}")["generation"])

    def set_inventories(self, rp: str, inventories: dict[str, dict[str, Any]]) -> None:
        self.call(
            "PUT",
            f"/resource_providers/{rp}/inventories",
            {"resource_provider_generation": self.generation(rp), "inventories": inventories},
        )

    def set_traits(self, rp: str, traits: list[str]) -> None:
        for trait in traits:
            if trait.startswith("CUSTOM_"):
                self.call("PUT", f"/traits/{trait}", ok=(201, 204))
        self.call(
            "PUT",
            f"/resource_providers/{rp}/traits",
            {"resource_provider_generation": self.generation(rp), "traits": traits},
        )

    def set_aggregates(self, rp: str, aggregates: list[str]) -> None:
        self.call(
            "PUT",
            f"/resource_providers/{rp}/aggregates",
            {"resource_provider_generation": self.generation(rp), "aggregates": aggregates},
        )

    def allocate(
        self,
        consumer: str,
        allocations: dict[str, dict[str, int]],
        project: str,
        user: str = "user",
        consumer_type: str = "INSTANCE",
    ) -> None:
        self.call(
            "PUT",
            f"/allocations/{consumer}",
            {
                "allocations": {rp: {"resources": res} for rp, res in allocations.items()},
                "project_id": project,
                "user_id": user,
                "consumer_generation": None,
                "consumer_type": consumer_type,
            },
        )


# --------------------------------------------------------------------------------------------- Nova


@dataclass
class HostSpec:
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    pcpus: int = 0
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    traits: list[str] = field(default_factory=list)
    vgpus: int = 0


NOVA_CONF = """[DEFAULT]
transport_url = fake:/
debug = false
use_stderr = true
state_path = {workdir}/state
host = controller
# Fewer background writers into SQLite: heartbeats every 20 s, no periodic tasks (each compute
# still reports its inventory to Placement once at start; disable/enable still reach Placement).
report_interval = 20
service_down_time = 120
periodic_enable = false
[api]
auth_strategy = keystone
max_limit = {max_limit}
[wsgi]
api_paste_config = {workdir}/api-paste.ini
[api_database]
connection = sqlite:///nova_api.sqlite?timeout=60
[database]
connection = sqlite:///nova_cell1.sqlite?timeout=60
[placement]
auth_type = admin_token
endpoint = {placement}
token = admin
region_name = RegionOne
[oslo_concurrency]
lock_path = {workdir}/locks
[keystone]
# No Keystone here: project ids (flavor access) are checked against a closed port, which Nova
# treats as "cannot verify, accept" (a missing endpoint would be a 400).
endpoint_override = http://127.0.0.1:9/v3
[glance]
# Only used to spell image URLs in notifications; images come from aio_nova.py's stand-in.
endpoint_override = http://127.0.0.1:9/image
[scheduler]
discover_hosts_in_cells_interval = -1
[filter_scheduler]
# (AZs are a Placement request filter in Nova 34, no longer a host filter)
enabled_filters = ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,AggregateInstanceExtraSpecsFilter
[oslo_policy]
enforce_new_defaults = {new_defaults}
enforce_scope = {new_defaults}
{policy_file}"""

NOVA_DATABASES = ("nova_api.sqlite", "nova_cell0.sqlite", "nova_cell1.sqlite")


class Nova:
    """Real Nova (API + conductor + scheduler + fake-driver computes) in one process on loopback."""

    def __init__(
        self,
        workdir: Path,
        placement: Placement,
        hosts: list[HostSpec],
        max_limit: int = 1000,
        policy_file: Path | None = None,
        new_policy_defaults: bool = False,
    ):
        """`policy_file`: an oslo.policy override file (re-read whenever it changes); `new_policy_defaults`:
        Nova 34's own policy defaults (enforce_new_defaults and enforce_scope on) instead of the legacy rules."""
        self.workdir = workdir
        self.policy_file = policy_file
        self.new_policy_defaults = new_policy_defaults
        self.placement = placement
        self.hosts = hosts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v2.1"
        self.max_limit = max_limit
        self._process: _Process | None = None
        self.session = requests.Session()

    def start(self, timeout: float = 180) -> Nova:
        python = require_venv()
        work = self.workdir
        (work / "state").mkdir(parents=True, exist_ok=True)
        (work / "locks").mkdir(exist_ok=True)
        (work / "nova.conf").write_text(
            NOVA_CONF.format(
                workdir=work,
                placement=self.placement.url,
                max_limit=self.max_limit,
                new_defaults=str(self.new_policy_defaults).lower(),
                policy_file=f"policy_file = {self.policy_file}\n" if self.policy_file else "",
            )
        )
        shutil.copyfile(HERE / "api-paste.ini", work / "api-paste.ini")
        self._databases()
        hosts_file = work / "hosts.json"
        self._write_hosts()
        self._process = _Process(
            "nova",
            [str(python), str(HERE / "aio_nova.py"), str(work), str(self.port), str(os.getpid()), str(hosts_file)],
            work,
            work / "nova.log",
            env={"CAPACITYD_AIO_ADMIN_PROJECT": ADMIN_PROJECT},
        )
        self._process.wait_ready(timeout)
        self._wait_for_providers(timeout=60)
        return self

    def _write_hosts(self) -> None:
        """hosts.json, replaced whole (the running process watches it and must never read half a file)."""
        staging = self.workdir / "hosts.json.new"
        staging.write_text(json.dumps({h.name: h.__dict__ for h in self.hosts}))
        os.replace(staging, self.workdir / "hosts.json")

    def add_compute(self, spec: HostSpec, timeout: float = 60) -> None:
        """Start one more fake-driver nova-compute in the running process, like a new hypervisor joining the
        cloud: it registers its service and resource provider, is mapped into cell1, and is listed by
        `GET /os-hypervisors/detail` when this returns."""
        if self._process is None:
            raise RuntimeError("Nova is not running")
        if any(h.name == spec.name for h in self.hosts):
            raise ValueError(f"compute {spec.name} exists already")
        self.hosts.append(spec)
        self._write_hosts()
        deadline = time.monotonic() + timeout
        lines = self._process.lines
        while not any(line.startswith(f"compute {spec.name} ") for line in lines):
            if time.monotonic() > deadline or self._process.proc.poll() is not None:
                raise ServiceUnavailable(f"nova did not start compute {spec.name} within {timeout}s")
            time.sleep(0.2)
        outcome = next(line for line in lines if line.startswith(f"compute {spec.name} "))
        if outcome != f"compute {spec.name} mapped":
            raise ServiceUnavailable(f"nova: {outcome}")
        self._wait_for_providers(max(1.0, deadline - time.monotonic()), {spec.name})  # others may be deleted
        while spec.name not in {
            h["hypervisor_hostname"] for h in self.call("GET", "/os-hypervisors/detail")["hypervisors"]
        }:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"nova does not list hypervisor {spec.name} after {timeout}s")
            time.sleep(0.3)

    def _databases(self) -> None:
        """Migrated empty databases: from the cache when present, else nova-manage (and fill the cache)."""
        cache = CACHE_DIR / f"nova-db-{_installed_version('nova')}-wal"
        if all((cache / name).exists() for name in NOVA_DATABASES):
            for name in NOVA_DATABASES:
                shutil.copyfile(cache / name, self.workdir / name)
            return
        manage = [str(VENV / "bin" / "nova-manage"), "--config-file", str(self.workdir / "nova.conf")]
        steps = [
            ["api_db", "sync"],
            ["cell_v2", "map_cell0", "--database_connection", "sqlite:///nova_cell0.sqlite?timeout=60"],
            [
                "cell_v2",
                "create_cell",
                "--name",
                "cell1",
                "--database_connection",
                "sqlite:///nova_cell1.sqlite?timeout=60",
                "--transport-url",
                "fake:/",
            ],
            ["db", "sync"],
        ]
        for step in steps:
            result = subprocess.run(manage + step, cwd=self.workdir, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise ServiceUnavailable(f"nova-manage {' '.join(step)} failed: {result.stderr[-2000:]}")
        for name in NOVA_DATABASES:
            _use_wal(self.workdir / name)
        with contextlib.suppress(OSError):
            cache.mkdir(parents=True, exist_ok=True)
            for name in NOVA_DATABASES:
                shutil.copyfile(self.workdir / name, cache / name)

    def _wait_for_providers(self, timeout: float, names: set[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        wanted = names if names is not None else {h.name for h in self.hosts}
        while time.monotonic() < deadline:
            names = {p["name"] for p in self.placement.call("GET", "/resource_providers")["resource_providers"]}
            if wanted <= names:
                return
            time.sleep(0.5)
        raise ServiceUnavailable(f"nova computes did not register in placement within {timeout}s")

    def stop(self) -> None:
        if self._process:
            self._process.stop()

    @property
    def pid(self) -> int | None:
        return self._process.proc.pid if self._process else None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        microversion: str = "2.90",
        token: str = "admin",
        ok=(200, 201, 202, 204),
    ) -> Any:
        for _ in range(5):
            response = self.session.request(
                method,
                self.url + path,
                json=body,
                headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {microversion}"},
            )
            # SQLite under Nova's threads: a write can lose a lock race; it failed cleanly, so retry
            # (never for a boot, which might have half happened).
            locked = response.status_code == 500 and "OperationalError" in response.text
            if not locked or (method == "POST" and path == "/servers"):
                break
            time.sleep(0.5)
        if response.status_code not in ok:
            raise AssertionError(f"nova {method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    # -- writers ----------------------------------------------------------------------------

    def create_flavor(
        self,
        name: str,
        vcpus: int,
        ram: int,
        disk: int,
        extra_specs: dict[str, str] | None = None,
        public: bool = True,
        projects: tuple[str, ...] = (),
    ) -> str:
        body = {
            "flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "os-flavor-access:is_public": public}
        }
        flavor_id = self.call("POST", "/flavors", body, microversion="2.55")["flavor"]["id"]
        if extra_specs:
            self.call("POST", f"/flavors/{flavor_id}/os-extra_specs", {"extra_specs": extra_specs})
        for project in projects:
            self.call("POST", f"/flavors/{flavor_id}/action", {"addTenantAccess": {"tenant": project}})
        return flavor_id

    def create_aggregate(
        self, name: str, hosts: list[str], zone: str | None = None, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if zone:
            body["availability_zone"] = zone
        aggregate = self.call("POST", "/os-aggregates", {"aggregate": body})["aggregate"]
        for host in hosts:
            self.call("POST", f"/os-aggregates/{aggregate['id']}/action", {"add_host": {"host": host}})
        if metadata:
            self.call("POST", f"/os-aggregates/{aggregate['id']}/action", {"set_metadata": {"metadata": metadata}})
        return self.call("GET", f"/os-aggregates/{aggregate['id']}")["aggregate"]

    def disable_compute(self, host: str, reason: str = "maintenance") -> None:
        services = self.call("GET", f"/os-services?binary=nova-compute&host={host}")["services"]
        self.call(
            "PUT",
            f"/os-services/{services[0]['id']}",
            {"status": "disabled", "disabled_reason": reason},
            microversion="2.53",
        )

    def boot(self, name: str, flavor_id: str, project: str, zone: str | None = None, timeout: float = 60) -> dict:
        """Boot one server and wait until it is ACTIVE (one at a time: SQLite + threads)."""
        for attempt in range(3):
            try:
                return self._boot_once(name, flavor_id, project, zone, timeout)
            except _TransientBuildError as error:
                if attempt == 2:
                    raise AssertionError(str(error)) from None
                time.sleep(1)
        raise AssertionError("unreachable")

    def _boot_once(self, name: str, flavor_id: str, project: str, zone: str | None, timeout: float) -> dict:
        body: dict[str, Any] = {"name": name, "imageRef": IMAGE_ID, "flavorRef": flavor_id, "networks": "none"}
        if zone:
            body["availability_zone"] = zone
        server_id = self.call("POST", "/servers", {"server": body}, token=f"user:{project}")["server"]["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.call("GET", f"/servers/{server_id}")["server"]
            if server["status"] == "ACTIVE":
                return server
            if server["status"] == "ERROR":
                fault = str((server.get("fault") or {}).get("message"))
                if "database is locked" in fault:  # SQLite under Nova's threads: delete and boot again
                    self.call("DELETE", f"/servers/{server_id}")
                    self._wait_gone(server_id)
                    raise _TransientBuildError(f"server {name}: {fault[:200]}")
                raise AssertionError(f"server {name} went to ERROR: {fault}")
            time.sleep(0.3)
        raise AssertionError(f"server {name} not ACTIVE after {timeout}s")

    def _wait_gone(self, server_id: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                self.call("GET", f"/servers/{server_id}", ok=(200, 404)) is None
                or self.session.get(f"{self.url}/servers/{server_id}", headers={"X-Auth-Token": "admin"}).status_code
                == 404
            ):
                return
            time.sleep(0.3)

    def stop_server(self, server_id: str, project: str) -> None:
        self.call("POST", f"/servers/{server_id}/action", {"os-stop": None}, token=f"user:{project}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.call("GET", f"/servers/{server_id}")["server"]["status"] == "SHUTOFF":
                return
            time.sleep(0.3)
        raise AssertionError(f"server {server_id} did not stop")


def write_clouds_yaml(path: Path, cloud: str, placement_url: str, nova_url: str | None, token: str = "admin") -> Path:
    """A clouds.yaml for openstacksdk with admin_token auth and endpoint overrides (no Keystone)."""
    entry: dict[str, Any] = {
        "auth_type": "admin_token",
        "auth": {"token": token, "endpoint": placement_url},
        "region_name": "RegionOne",
        "placement_endpoint_override": placement_url,
    }
    if nova_url:
        entry["compute_endpoint_override"] = nova_url
    path.write_text(json.dumps({"clouds": {cloud: entry}}, indent=2))
    return path


@contextlib.contextmanager
def running_placement(workdir: Path) -> Iterator[Placement]:
    service = Placement(workdir).start()
    try:
        yield service
    finally:
        service.stop()


if __name__ == "__main__":  # quick manual check: python -m tests.services.openstack
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_placement(Path(tmp)) as placement:
        print(placement.url, placement.call("GET", "/resource_providers"), file=sys.stderr)


# --------------------------------------------------------------------------------------------- a test cloud

PROJECTS = {
    "alpha": "a1fa0000000000000000000000000000",
    "beta": "be7a0000000000000000000000000000",
    "gamma": "9a330000000000000000000000000000",
}
TEST_HOSTS = [
    HostSpec("compute-01", vcpus=16, memory_mb=65536, disk_gb=500, traits=["CUSTOM_SSD"]),
    HostSpec("compute-02", vcpus=16, memory_mb=65536, disk_gb=500),
    HostSpec("compute-03", vcpus=32, memory_mb=131072, disk_gb=1000, traits=["CUSTOM_GPU_A100"], vgpus=2),
    HostSpec("compute-04", vcpus=16, memory_mb=65536, disk_gb=500),
    HostSpec("compute-05", vcpus=8, pcpus=24, memory_mb=131072, disk_gb=0),
    HostSpec("compute-06", vcpus=32, memory_mb=131072, disk_gb=0, cpu_ratio=2.0),
]


@dataclass
class RealCloud:
    """Handles to a populated real cloud (what the tests compare the collector's frames with)."""

    placement: Placement
    nova: Nova
    clouds_yaml: Path
    cloud: str
    aggregates: dict[str, dict[str, Any]]
    flavors: dict[str, str]
    servers: dict[str, dict[str, Any]]
    shared_storage: str

    def stop(self) -> None:
        self.nova.stop()
        self.placement.stop()


def build_test_cloud(workdir: Path, cloud: str = "testcloud") -> RealCloud:
    """Start Placement + Nova and populate a small realistic cloud through their real APIs (~40 s).

    az1: compute-01..04 (01 CUSTOM_SSD, 03 a GPU host with a nested VGPU child, 04 disabled,
    02 also in a tenant-isolation aggregate for project gamma); az2: compute-05 (PCPU, aggregate
    `pinned`) and compute-06, both without local disk, using a sharing DISK_GB provider.
    Flavors: public m1.small / m1.large / c1.pinned / g1.gpu, private p1.gamma. Seven servers, one
    SHUTOFF, booted one at a time through Nova.
    """
    placement = Placement(workdir / "placement").start()
    nova = Nova(workdir / "nova", placement, TEST_HOSTS)
    try:
        nova.start()
        aggregates = {
            "az1": nova.create_aggregate("az1", ["compute-01", "compute-02", "compute-03", "compute-04"], zone="az1"),
            "az2": nova.create_aggregate("az2", ["compute-05", "compute-06"], zone="az2"),
            "pinned": nova.create_aggregate("pinned", ["compute-05"], metadata={"pinned": "true"}),
            "gpu": nova.create_aggregate("gpu", ["compute-03"], metadata={"gpu": "true"}),
            "gamma-only": nova.create_aggregate(
                "gamma-only", ["compute-02"], metadata={"filter_tenant_id": PROJECTS["gamma"]}
            ),
        }
        shared = placement.create_provider("shared-storage-az2")
        placement.set_inventories(shared, {"DISK_GB": {"total": 10000, "reserved": 100, "max_unit": 2000}})
        placement.set_traits(shared, ["MISC_SHARES_VIA_AGGREGATE"])
        placement.set_aggregates(shared, [aggregates["az2"]["uuid"]])
        nova.disable_compute("compute-04")
        flavors = {
            "m1.small": nova.create_flavor("m1.small", 1, 2048, 20),
            "m1.large": nova.create_flavor("m1.large", 4, 8192, 80),
            "c1.pinned": nova.create_flavor(
                "c1.pinned",
                4,
                8192,
                40,
                {"hw:cpu_policy": "dedicated", "aggregate_instance_extra_specs:pinned": "true"},
            ),
            "g1.gpu": nova.create_flavor(
                "g1.gpu", 4, 16384, 40, {"resources:VGPU": "1", "trait:CUSTOM_GPU_A100": "required"}
            ),
            "p1.gamma": nova.create_flavor("p1.gamma", 2, 4096, 20, public=False, projects=(PROJECTS["gamma"],)),
        }
        plan = [
            ("alpha-1", "m1.large", "alpha", "az1"),
            ("alpha-2", "m1.large", "alpha", "az1"),
            ("alpha-3", "m1.small", "alpha", "az2"),
            ("beta-pinned", "c1.pinned", "beta", "az2"),
            ("beta-gpu", "g1.gpu", "beta", "az1"),
            ("gamma-1", "p1.gamma", "gamma", None),
            ("alpha-off", "m1.small", "alpha", "az1"),
        ]
        servers = {}
        for name, flavor, project, zone in plan:
            servers[name] = nova.boot(name, flavors[flavor], PROJECTS[project], zone)
        nova.stop_server(servers["alpha-off"]["id"], PROJECTS["alpha"])
        clouds_yaml = write_clouds_yaml(workdir / "clouds.yaml", cloud, placement.url, nova.url)
        return RealCloud(placement, nova, clouds_yaml, cloud, aggregates, flavors, servers, shared)
    except BaseException:
        nova.stop()
        placement.stop()
        raise
