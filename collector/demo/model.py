"""The demo estate, described once and rendered by every layer's demo part.

One deterministic model (seeded) of a small private cloud: compute hosts in two AZs with a PCPU
aggregate, a GPU host, a disabled host and shared storage in az2; flavors public and private;
servers booted over eight weeks with growing demand; and a Kubernetes cluster whose workers are
servers of that cloud. The libvirt part renders hosts as test-driver nodes whose domains are the
servers, the OpenStack part serves them through Nova/Placement stand-ins, the Kubernetes part
serves the worker servers as nodes — so the demo is one estate seen top to bottom.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

GIB = 1024**3
MIB = 1024**2
DEMO_NAMESPACE = uuid.UUID("6f1c4c8e-0000-4000-8000-00000000cafe")
CLOUD = "demo-cloud"
REGION = "RegionOne"
CLUSTER = "demo-k8s"


def demo_uuid(*parts: object) -> str:
    """Stable uuids, so the demo's ids are the same on every run."""
    return str(uuid.uuid5(DEMO_NAMESPACE, "/".join(map(str, parts))))


@dataclass(frozen=True)
class Aggregate:
    name: str
    uuid: str
    zone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Host:
    name: str
    zone: str
    aggregates: tuple[str, ...]
    cpus: int
    """Logical CPUs of the hypervisor (what libvirt reports)."""
    memory_bytes: int
    disk_bytes: int
    """Local disk; 0 when the host uses the AZ's shared storage."""
    pcpus: int = 0
    """CPUs in cpu_dedicated_set (PCPU inventory); the rest are shared VCPU."""
    gpus: int = 0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    reserved_memory_bytes: int = 512 * MIB
    reserved_cpus: int = 0
    disabled: bool = False
    traits: tuple[str, ...] = ()

    @property
    def uuid(self) -> str:
        return demo_uuid("host", self.name)

    @property
    def vcpus(self) -> int:
        return self.cpus - self.pcpus


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    extra_specs: dict[str, str] = field(default_factory=dict)
    is_public: bool = True
    projects: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return demo_uuid("flavor", self.name)


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    flavor: str
    host: str
    project: str
    status: str
    """Nova status: ACTIVE, SHUTOFF, PAUSED."""
    created_at: datetime


@dataclass(frozen=True)
class Estate:
    now: datetime
    aggregates: tuple[Aggregate, ...]
    hosts: tuple[Host, ...]
    flavors: tuple[Flavor, ...]
    projects: tuple[str, ...]
    servers: tuple[Server, ...]
    shared_storage_bytes: dict[str, int]
    """Shared DISK_GB per AZ served by a sharing provider."""
    k8s_workers: tuple[str, ...]
    """Server ids of the Kubernetes cluster's worker nodes."""

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def flavor(self, name: str) -> Flavor:
        return next(f for f in self.flavors if f.name == name)

    def servers_on(self, host: str) -> list[Server]:
        return [s for s in self.servers if s.host == host]


AGGREGATES = (
    Aggregate("az1", demo_uuid("agg", "az1"), zone="az1"),
    Aggregate("az2", demo_uuid("agg", "az2"), zone="az2"),
    Aggregate("pinned", demo_uuid("agg", "pinned"), metadata={"pinned": "true"}),
    Aggregate("gpu", demo_uuid("agg", "gpu"), metadata={"gpu": "true"}),
    Aggregate("ssd", demo_uuid("agg", "ssd"), metadata={"ssd": "true"}),
    Aggregate("gamma-only", demo_uuid("agg", "gamma"), metadata={"filter_tenant_id": "project-gamma"}),
)

PROJECTS = ("project-alpha", "project-beta", "project-gamma", "project-k8s")

FLAVORS = (
    Flavor("m1.tiny", 1, 512, 1),
    Flavor("m1.small", 1, 2048, 20),
    Flavor("m1.medium", 2, 4096, 40),
    Flavor("m1.large", 4, 8192, 80),
    Flavor("m1.xlarge", 8, 16384, 160),
    Flavor("c1.pinned", 4, 8192, 40, {"hw:cpu_policy": "dedicated", "aggregate_instance_extra_specs:pinned": "true"}),
    Flavor("g1.gpu", 8, 32768, 80, {"resources:VGPU": "1", "trait:CUSTOM_GPU_A100": "required"}),
    Flavor("k8s.worker", 4, 16384, 80),
    Flavor("p1.gamma", 2, 4096, 40, is_public=False, projects=("project-gamma",)),
)


def _hosts() -> tuple[Host, ...]:
    hosts = []
    for i in range(1, 7):
        name = f"compute-{i:02d}"
        aggregates = ["az1"]
        traits: list[str] = ["HW_CPU_X86_AVX2"]
        gpus = 0
        if i in (2, 3):
            aggregates.append("ssd")
            traits.append("CUSTOM_SSD")
        if i == 6:
            aggregates.append("gpu")
            traits.append("CUSTOM_GPU_A100")
            gpus = 2
        if i == 4:
            aggregates.append("gamma-only")
        hosts.append(
            Host(
                name=name,
                zone="az1",
                aggregates=tuple(aggregates),
                cpus=32 if i != 6 else 48,
                memory_bytes=(128 if i != 6 else 256) * GIB,
                disk_bytes=2000 * GIB,
                gpus=gpus,
                disabled=(i == 5),
                traits=tuple(traits),
            )
        )
    for i in range(7, 11):
        name = f"compute-{i:02d}"
        pinned = i >= 9
        hosts.append(
            Host(
                name=name,
                zone="az2",
                aggregates=("az2", "pinned") if pinned else ("az2",),
                cpus=64,
                memory_bytes=256 * GIB,
                disk_bytes=0,
                pcpus=48 if pinned else 0,
                cpu_allocation_ratio=4.0,
                traits=("HW_CPU_X86_AVX2",),
            )
        )
    return tuple(hosts)


def _fits(host: Host, flavor: Flavor, used: dict[str, float]) -> bool:
    if host.disabled:
        return False
    dedicated = flavor.extra_specs.get("hw:cpu_policy") == "dedicated"
    if dedicated != bool(host.pcpus):
        return False
    if "resources:VGPU" in flavor.extra_specs and used["gpu"] + 1 > host.gpus:
        return False
    if "resources:VGPU" not in flavor.extra_specs and host.gpus:
        return False  # the GPU host is kept for GPU work
    if not flavor.is_public and "gamma-only" not in host.aggregates:
        return False
    if dedicated:
        cpu_ok = used["pcpu"] + flavor.vcpus <= host.pcpus
    else:
        cpu_ok = used["vcpu"] + flavor.vcpus <= (host.vcpus - host.reserved_cpus) * host.cpu_allocation_ratio
    ram_ok = used["ram"] + flavor.ram_mb * MIB <= (host.memory_bytes - host.reserved_memory_bytes) * 0.9
    disk_ok = host.disk_bytes == 0 or used["disk"] + flavor.disk_gb * GIB <= host.disk_bytes
    return cpu_ok and ram_ok and disk_ok


@cache
def build_estate(now: datetime | None = None, seed: int = 7) -> Estate:
    """The demo estate at `now` (default: the current hour). Demand grows over the last 8 weeks."""
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(seed)
    hosts = _hosts()
    by_name = {f.name: f for f in FLAVORS}
    used = {h.name: {"vcpu": 0.0, "pcpu": 0.0, "ram": 0.0, "disk": 0.0, "gpu": 0.0} for h in hosts}
    servers: list[Server] = []

    def place(flavor: Flavor, project: str, name: str, created: datetime, status: str = "ACTIVE") -> Server | None:
        candidates = [h for h in hosts if _fits(h, flavor, used[h.name])]
        if not candidates:
            return None
        # spread: least-loaded by RAM first, like Nova's default RAM weigher
        host = min(candidates, key=lambda h: used[h.name]["ram"] / h.memory_bytes)
        u = used[host.name]
        u["pcpu" if flavor.extra_specs.get("hw:cpu_policy") == "dedicated" else "vcpu"] += flavor.vcpus
        u["ram"] += flavor.ram_mb * MIB
        u["disk"] += flavor.disk_gb * GIB if host.disk_bytes else 0
        u["gpu"] += 1 if "resources:VGPU" in flavor.extra_specs else 0
        server = Server(demo_uuid("server", name), name, flavor.name, host.name, project, status, created)
        servers.append(server)
        return server

    workers = []
    for i in range(6):
        server = place(by_name["k8s.worker"], "project-k8s", f"demo-k8s-worker-{i}", now - timedelta(days=60))
        if server:
            workers.append(server.id)

    # Demand grows: more boots per day as the weeks pass (and a level shift 3 weeks ago).
    mix = [
        ("m1.tiny", 1),
        ("m1.small", 4),
        ("m1.medium", 4),
        ("m1.large", 3),
        ("m1.xlarge", 1),
        ("c1.pinned", 1),
        ("g1.gpu", 0.3),
        ("p1.gamma", 0.4),
    ]
    names, weights = zip(*mix, strict=True)
    count = 0
    for day in range(56, 0, -1):
        boots = 1 + (56 - day) // 14 + (2 if day < 21 else 0)
        for _ in range(boots):
            flavor = by_name[rng.choices(names, weights)[0]]
            project = "project-gamma" if not flavor.is_public else rng.choice(PROJECTS[:3])
            created = now - timedelta(days=day, hours=rng.randrange(24))
            status = rng.choices(["ACTIVE", "SHUTOFF", "PAUSED"], [0.88, 0.08, 0.04])[0]
            place(flavor, project, f"vm-{count:04d}", created, status)
            count += 1
    return Estate(
        now=now,
        aggregates=AGGREGATES,
        hosts=hosts,
        flavors=FLAVORS,
        projects=PROJECTS,
        servers=tuple(servers),
        shared_storage_bytes={"az2": 20_000 * GIB},
        k8s_workers=tuple(workers),
    )
