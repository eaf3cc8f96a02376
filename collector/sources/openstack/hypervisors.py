"""The `openstack_hypervisors` frame: Nova's hypervisor list as read (issue 16: what discovery templates use).

One row per Nova hypervisor, whether or not Placement has its provider: the name, the IP Nova reports and
the nova-compute service host, enabled/up. Libvirt discovery (collector/sources/discovery/nova.py) joins
it with the `hosts` frame for the `host_ip` and `service_host` template fields.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from collector.contract.schema import BOOL, STRING, TIMESTAMP, Column, FrameSchema, register
from collector.sources.openstack.nova import NovaState

OPENSTACK_HYPERVISORS = register(
    FrameSchema(
        name="openstack_hypervisors",
        doc="One row per Nova hypervisor: name, IP, compute service host, enabled and up.",
        key=("source", "hypervisor_hostname"),
        columns=(
            Column("timestamp", TIMESTAMP, "When read (UTC)."),
            Column("source", STRING, "Source name."),
            Column("cloud", STRING, "Cloud."),
            Column("hypervisor_hostname", STRING, "Nova's hypervisor_hostname (= the Placement provider name)."),
            Column("host_ip", STRING, "The hypervisor's IP as Nova reports it.", nullable=True),
            Column("service_host", STRING, "The nova-compute service's host.", nullable=True),
            Column("enabled", BOOL, "The compute service is enabled."),
            Column("up", BOOL, "The compute service is up."),
        ),
    )
)


def hypervisors_frame(nova: NovaState, source: str, cloud: str, now: datetime) -> pd.DataFrame:
    rows = [
        {
            "timestamp": now,
            "source": source,
            "cloud": cloud,
            "hypervisor_hostname": h.hostname,
            "host_ip": h.host_ip,
            "service_host": h.service_host,
            "enabled": h.enabled,
            "up": h.up,
        }
        for h in nova.hypervisors
    ]
    unique = {row["hypervisor_hostname"]: row for row in rows}  # Nova lists a name once; never fail on a repeat
    return OPENSTACK_HYPERVISORS.build(list(unique.values())) if unique else OPENSTACK_HYPERVISORS.empty()
