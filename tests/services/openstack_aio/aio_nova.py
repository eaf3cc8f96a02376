"""REAL Nova 34 in one process: API + conductor + scheduler + N fake-driver computes (OpenStack venv).

usage: aio_nova.py WORKDIR PORT PARENT_PID HOSTS_JSON

WORKDIR holds nova.conf and api-paste.ini (relative sqlite URLs, so this runs with cwd=WORKDIR).
HOSTS_JSON maps host name -> {vcpus, pcpus, memory_mb, disk_gb, cpu_ratio, ram_ratio, traits, vgpus}:
each compute reports exactly that inventory to Placement through Nova's own provider-tree sync
(`update_provider_tree`): VCPU (and PCPU when pcpus > 0), MEMORY_MB, DISK_GB only when disk_gb > 0
(hosts on shared storage), the given custom traits, and a nested child `<host>_pgpu0` with VGPU
inventory when vgpus > 0. A name added to HOSTS_JSON while the process runs starts one more compute
(mapped into cell1 like `nova-manage cell_v2 discover_hosts`); it prints `compute <name> mapped`.

No Keystone / Glance / Neutron: a paste filter maps tokens to identities (noauth_filter.py), one
in-process image stands in for Glance and servers boot with networks=none. Test use only.
"""

import copy
import datetime
import json
import os
import sys
import threading
import time
import types

workdir, port, parent, hosts_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.chdir(workdir)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noauth_filter for paste
started = time.perf_counter()

from nova import monkey_patch  # noqa: E402

monkey_patch.patch(backend="threading")

import os_traits  # noqa: E402
from nova import conf as nova_conf  # noqa: E402
from nova import config, exception, objects, service  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova.image import glance as nova_glance  # noqa: E402
from nova.network import security_group_api  # noqa: E402
from nova.virt import fake  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

CONF = nova_conf.CONF


# SQLite + Nova's many threads: a deferred transaction that reads and then writes fails at once with
# "database is locked" when another thread wrote meanwhile (the busy timeout does not apply to that
# case). Starting every transaction with BEGIN IMMEDIATE takes the write lock up front, so threads
# queue on the busy timeout instead. Test use only: it serializes the whole cloud's database access.
@event.listens_for(Engine, "connect")
def _sqlite_manual_transactions(dbapi_connection, record):
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        dbapi_connection.isolation_level = None


@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(connection):
    # Runs before oslo.db's own listener, which then sees its marker and emits no plain BEGIN.
    if connection.dialect.name == "sqlite" and "in_transaction" not in connection.info:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.info["in_transaction"] = True


config.parse_args([sys.argv[0], "--config-file", os.path.join(workdir, "nova.conf")])
objects.register_all()
with open(hosts_file) as handle:
    HOSTS = json.load(handle)

IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
_TS = datetime.datetime(2026, 1, 1)
_IMAGE = {
    "id": IMAGE_ID,
    "name": "cirros-raw",
    "created_at": _TS,
    "updated_at": _TS,
    "deleted_at": None,
    "deleted": False,
    "status": "active",
    "is_public": True,
    "container_format": "bare",
    "disk_format": "raw",
    "size": 25165824,
    "min_ram": 0,
    "min_disk": 0,
    "protected": False,
    "visibility": "public",
    "tags": [],
    "properties": {"architecture": "x86_64"},
}


class OneImage:
    """Glance stand-in: a single public raw image."""

    def show(self, context, image_id, include_locations=False, show_deleted=True):
        if str(image_id) == IMAGE_ID:
            return copy.deepcopy(_IMAGE)
        raise exception.ImageNotFound(image_id=image_id)

    def detail(self, context, **kwargs):
        return [copy.deepcopy(_IMAGE)]

    def download(self, context, image_id, data=None, dst_path=None, trusted_certs=None):
        return b""

    def get_location(self, context, image_id):
        return None


_images = OneImage()
nova_glance.API.get_remote_image_service = staticmethod(lambda context, href: (_images, href))
nova_glance.get_default_image_service = lambda: _images
security_group_api.get_instances_security_groups_bindings = lambda context, servers, detailed=False: {}


class CapacitydFakeDriver(fake.FakeDriver):
    """FakeDriver whose hosts report the inventory HOSTS_JSON gives them."""

    capabilities = {**fake.FakeDriver.capabilities, "supports_pcpus": True}  # noqa: RUF012 - nova's shape

    def init_host(self, host):
        spec = HOSTS[host]
        self.spec = spec
        self.vcpus = spec["vcpus"] + spec.get("pcpus", 0)
        self.memory_mb = spec["memory_mb"]
        self.local_gb = spec.get("disk_gb", 0)
        self.resources = fake.Resources(vcpus=self.vcpus, memory_mb=self.memory_mb, local_gb=self.local_gb)
        super().init_host(host)

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        spec = self.spec
        inventory = {}
        if spec["vcpus"]:
            inventory["VCPU"] = {
                "total": spec["vcpus"],
                "min_unit": 1,
                "max_unit": spec["vcpus"],
                "step_size": 1,
                "allocation_ratio": spec.get("cpu_ratio", 4.0),
                "reserved": 0,
            }
        if spec.get("pcpus"):
            inventory["PCPU"] = {
                "total": spec["pcpus"],
                "min_unit": 1,
                "max_unit": spec["pcpus"],
                "step_size": 1,
                "allocation_ratio": 1.0,
                "reserved": 0,
            }
        inventory["MEMORY_MB"] = {
            "total": spec["memory_mb"],
            "min_unit": 1,
            "max_unit": spec["memory_mb"],
            "step_size": 1,
            "allocation_ratio": spec.get("ram_ratio", 1.0),
            "reserved": 512,
        }
        if spec.get("disk_gb"):
            inventory["DISK_GB"] = {
                "total": spec["disk_gb"],
                "min_unit": 1,
                "max_unit": spec["disk_gb"],
                "step_size": 1,
                "allocation_ratio": 1.0,
                "reserved": 0,
            }
        provider_tree.update_inventory(nodename, inventory)
        if spec.get("traits"):
            provider_tree.add_traits(nodename, *spec["traits"])
        if spec.get("vgpus"):
            child = f"{nodename}_pgpu0"
            if not provider_tree.exists(child):
                provider_tree.new_child(child, nodename)
            provider_tree.update_inventory(
                child,
                {
                    "VGPU": {
                        "total": spec["vgpus"],
                        "min_unit": 1,
                        "max_unit": spec["vgpus"],
                        "step_size": 1,
                        "allocation_ratio": 1.0,
                        "reserved": 0,
                    }
                },
            )
            provider_tree.add_traits(child, os_traits.OWNER_NOVA)


# Nova loads drivers as nova.virt.<compute_driver>: register this one under such a name.
module = types.ModuleType("nova.virt.capacityd_fake")
module.CapacitydFakeDriver = CapacitydFakeDriver
sys.modules["nova.virt.capacityd_fake"] = module
CONF.set_override("compute_driver", "capacityd_fake.CapacitydFakeDriver")


def watch_parent():
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(0)


threading.Thread(target=watch_parent, daemon=True).start()

services = []
for binary, topic in (("nova-conductor", "conductor"), ("nova-scheduler", "scheduler")):
    svc = service.Service.create(binary=binary, topic=topic, host="controller")
    svc.start()
    services.append(svc)


def start_compute(host):
    """One fake-driver nova-compute: the driver reads CONF.host when it is built, so override it meanwhile.

    A compute added while the API serves shares that override for a moment; the API calls the tests make
    (listings, aggregates, services) do not read CONF.host."""
    CONF.set_override("host", host)
    try:
        svc = service.Service.create(binary="nova-compute", topic="compute", host=host)
        svc.start()
    finally:
        CONF.clear_override("host")
    services.append(svc)


for host in HOSTS:
    start_compute(host)

from nova.objects import host_mapping  # noqa: E402
from oslo_db import exception as db_exception  # noqa: E402


def map_computes(wanted, attempts=120):
    """Map new compute nodes into cell1 (like `nova-manage cell_v2 discover_hosts`), retrying on a lock: the
    computes' start-up tasks write their compute node records from their own threads."""
    discovered = []
    for _ in range(attempts):
        try:
            discovered += [m.host for m in host_mapping.discover_hosts(nova_context.get_admin_context())]
        except db_exception.DBError:
            time.sleep(0.5)
            continue
        if set(discovered) >= set(wanted):
            break
        time.sleep(0.5)
    return discovered


print(f"computes mapped: {sorted(map_computes(HOSTS))}", flush=True)


def watch_hosts_file():
    """Start a compute for every name added to HOSTS_JSON while running (tests add hypervisors this way)."""
    last = os.stat(hosts_file).st_mtime_ns
    while True:
        time.sleep(0.2)
        try:
            mtime = os.stat(hosts_file).st_mtime_ns
            if mtime == last:
                continue
            last = mtime
            with open(hosts_file) as handle:
                wanted = json.load(handle)
        except (OSError, ValueError):
            continue  # mid-write (the harness renames a complete file into place, so this is rare)
        for host, spec in wanted.items():
            if host in HOSTS:
                continue
            HOSTS[host] = spec
            try:
                start_compute(host)
                mapped = map_computes([host])
            except Exception as error:  # noqa: BLE001 - reported to the harness, which fails the test
                print(f"compute {host} failed: {type(error).__name__}: {error}", flush=True)
                continue
            state = "mapped" if host in mapped else "not mapped"
            print(f"compute {host} {state}", flush=True)


os.environ["OS_NOVA_CONFIG_DIR"] = workdir
os.environ["OS_NOVA_CONFIG_FILES"] = "api-paste.ini;nova.conf"
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server  # noqa: E402

from nova.api.openstack import wsgi_app  # noqa: E402,F401 - sets up the API's global state
from paste import deploy  # noqa: E402

app = deploy.loadapp("config:" + os.path.join(workdir, "api-paste.ini"), name="osapi_compute")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ReusingServer(WSGIServer):
    allow_reuse_address = True


httpd = make_server("127.0.0.1", port, app, server_class=ReusingServer, handler_class=QuietHandler)
threading.Thread(target=watch_hosts_file, daemon=True).start()
print(f"nova ready on 127.0.0.1:{port} after {time.perf_counter() - started:.1f}s", flush=True)
httpd.serve_forever()
