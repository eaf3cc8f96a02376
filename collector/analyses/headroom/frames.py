"""The frames the headroom analysis produces (documented in docs/schema.md, method in docs/headroom.md).

`headroom` answers "how many more of X fit, where": one row per pool and shape (flavor, pod shape, or
new worker VM of a Kubernetes cluster running on OpenStack), with what is left after the worst single
failure. `headroom_hosts` breaks the slots down host by host. `reclaimable` is capacity held by idle
VMs and over-requesting pods that could be won back.
"""

from __future__ import annotations

from collector.contract.schema import FLOAT, STRING, TIMESTAMP, Column, FrameSchema, register

LAYERS = ("hypervisor", "openstack", "kubernetes")
POOL_KINDS = ("az", "aggregate", "cloud", "node_pool", "cluster", "isolated")
SHAPE_KINDS = ("flavor", "pod_shape", "worker_vm")

C = Column

HEADROOM = register(
    FrameSchema(
        name="headroom",
        doc="How many more of a shape fit in a pool now, and after the failure that hurts most.",
        key=("layer", "cloud", "pool_kind", "pool", "shape_kind", "shape", "tenant"),
        columns=(
            C("timestamp", TIMESTAMP, "When the headroom was computed (UTC)."),
            C("layer", STRING, "openstack | kubernetes", choices=LAYERS),
            C("cloud", STRING, "Cloud or Kubernetes cluster."),
            C("pool", STRING, "AZ, aggregate name, cloud, node pool or cluster (see pool_kind)."),
            C(
                "pool_kind",
                STRING,
                "What `pool` is: az | aggregate | cloud | node_pool | cluster | isolated (a "
                "tenant-isolation aggregate, counted for the project in `tenant`).",
                choices=POOL_KINDS,
            ),
            C("shape", STRING, "Flavor name or pod shape name."),
            C("shape_kind", STRING, "flavor | pod_shape | worker_vm", choices=SHAPE_KINDS),
            C(
                "slots",
                FLOAT,
                "How many more of the shape fit if only it were added (integer valued).",
                non_negative=True,
            ),
            C(
                "slots_after_failure",
                FLOAT,
                "N+1: the fewest slots left after any single failure of the pool, its "
                "consumers re-placed on the survivors (0 after a failure that strands any); NaN when not computed.",
                nullable=True,
                non_negative=True,
            ),
            C(
                "failure_domain",
                STRING,
                "The host (or zone) whose loss leaves this shape the fewest slots.",
                nullable=True,
            ),
            C(
                "shortfall",
                FLOAT,
                "The most consumers any single failure of the pool leaves without a home "
                "(the same on every shape of the pool); > 0: the pool is not N+1, whatever its slots.",
                nullable=True,
                non_negative=True,
            ),
            C("limiting_resource", STRING, "The resource that bounds the slots on most eligible hosts.", nullable=True),
            C(
                "hosts",
                FLOAT,
                "Hosts eligible for the shape (schedulable, ready, traits/aggregates/taints ok).",
                non_negative=True,
            ),
            C(
                "shortfall_domain",
                STRING,
                "The failure that leaves `shortfall` consumers homeless (first name on "
                "ties); null when no single failure strands any.",
                nullable=True,
            ),
            C(
                "tenant",
                STRING,
                "Set on the rows of a tenant-isolation aggregate (filter_tenant_id): the project "
                "the slots are counted for, on that aggregate's hosts only; null on public rows.",
                nullable=True,
            ),
        ),
    )
)

HEADROOM_HOSTS = register(
    FrameSchema(
        name="headroom_hosts",
        doc="Slots per shape on every eligible host or node (before pool-level bounds such as shared storage).",
        key=("layer", "cloud", "host", "shape"),
        columns=(
            C("timestamp", TIMESTAMP, "When the headroom was computed (UTC)."),
            C("layer", STRING, "openstack | kubernetes", choices=LAYERS),
            C("cloud", STRING, "Cloud or Kubernetes cluster."),
            C("pool", STRING, "The host's pool (AZ or node pool)."),
            C("host", STRING, "Compute host or node name."),
            C("shape", STRING, "Flavor name or pod shape name."),
            C("slots", FLOAT, "How many more of the shape fit on this host.", non_negative=True),
            C("limiting_resource", STRING, "The resource that bounds the slots on this host.", nullable=True),
        ),
    )
)

RECLAIMABLE = register(
    FrameSchema(
        name="reclaimable",
        doc="Capacity held but not needed: idle VMs' whole allocation, pods' requests above their usage.",
        key=("layer", "cloud", "pool", "resource"),
        columns=(
            C("timestamp", TIMESTAMP, "When it was computed (UTC)."),
            C("layer", STRING, "openstack | kubernetes", choices=LAYERS),
            C("cloud", STRING, "Cloud or Kubernetes cluster."),
            C("pool", STRING, "AZ or node pool."),
            C("resource", STRING, "Resource name (capacity-frame names)."),
            C("amount", FLOAT, "Reclaimable amount in base units (cores, bytes, count).", non_negative=True),
            C("consumers", FLOAT, "How many VMs or pods contribute to the amount.", non_negative=True),
        ),
    )
)
