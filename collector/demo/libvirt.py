"""Demo part: every hypervisor of the demo estate as a libvirt test-driver node.

Each host of `collector.demo.model.build_estate()` becomes a node XML file that libvirt's own `test`
driver serves (`test:///abs/path/compute-01.xml`), with one domain per server placed on that host:
domain uuid = Nova server id, name `instance-%08x`, Nova 1.1 `<metadata>` carrying the flavor sizes
and project, state from the server status. The daemon polls them through the real libvirt source, so
the demo's hypervisor layer goes through the same code path as a production KVM host.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from collector.demo import DemoPart
from collector.demo.model import CLOUD, Estate, Flavor, Host, Server, build_estate

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
INTERVAL = "15s"
# Nova server status -> the test driver's <test:runstate> (virDomainState numbers).
RUNSTATE = {"ACTIVE": 1, "PAUSED": 3, "SHUTOFF": 5}
DEMO_USER = "demo-user"


def _instance_name(index: int) -> str:
    """Nova's default instance_name_template is `instance-%08x` over the instance's database id."""
    return f"instance-{index:08x}"


def domain_xml(index: int, server: Server, flavor: Flavor) -> str:
    """One `<domain>` of a test-driver node file, shaped like what Nova defines on a KVM host."""
    if server.status not in RUNSTATE:
        raise ValueError(f"server {server.id}: status {server.status!r} has no libvirt state in the demo")
    ram_kib = flavor.ram_mb * 1024
    # A running guest's balloon sits between 50 % and 100 % of its RAM (stable per server).
    fraction = random.Random(server.id).uniform(0.5, 1.0)
    current_kib = ram_kib if server.status == "SHUTOFF" else max(int(ram_kib * fraction) // 1024 * 1024, 1024)
    created = server.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"""  <domain type='test' xmlns:test='{TEST_NS}'>
    <name>{_instance_name(index)}</name>
    <uuid>{server.id}</uuid>
    <metadata>
      <nova:instance xmlns:nova='{NOVA_NS}'>
        <nova:package version='27.1.0'/>
        <nova:name>{escape(server.name)}</nova:name>
        <nova:creationTime>{created}</nova:creationTime>
        <nova:flavor name={quoteattr(flavor.name)}>
          <nova:memory>{flavor.ram_mb}</nova:memory>
          <nova:disk>{flavor.disk_gb}</nova:disk>
          <nova:swap>0</nova:swap>
          <nova:ephemeral>0</nova:ephemeral>
          <nova:vcpus>{flavor.vcpus}</nova:vcpus>
        </nova:flavor>
        <nova:owner>
          <nova:user uuid={quoteattr(DEMO_USER)}>{DEMO_USER}</nova:user>
          <nova:project uuid={quoteattr(server.project)}>{escape(server.project)}</nova:project>
        </nova:owner>
        <nova:root type='image' uuid='00000000-0000-4000-8000-00000000d15c'/>
      </nova:instance>
    </metadata>
    <memory unit='KiB'>{ram_kib}</memory>
    <currentMemory unit='KiB'>{current_kib}</currentMemory>
    <vcpu placement='static'>{flavor.vcpus}</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/nova/instances/{server.id}/disk'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <memballoon model='virtio'><stats period='10'/></memballoon>
    </devices>
    <test:runstate>{RUNSTATE[server.status]}</test:runstate>
  </domain>
"""


def node_xml(host: Host, servers: list[tuple[int, Server, Flavor]]) -> str:
    """A whole test-driver node: the host's CPUs and memory, and its domains."""
    sockets, threads = 2, 2
    cores = max(1, host.cpus // (sockets * threads))
    if sockets * cores * threads != host.cpus:
        sockets, cores, threads = 1, host.cpus, 1
    head = f"""<?xml version='1.0'?>
<!-- capacityd demo hypervisor {escape(host.name)} ({host.zone}); libvirt test driver node:
     open with test:///ABSOLUTE/PATH/to/this.xml -->
<node>
  <cpu>
    <mhz>2600</mhz>
    <model>x86_64</model>
    <active>{host.cpus}</active>
    <nodes>1</nodes>
    <sockets>{sockets}</sockets>
    <cores>{cores}</cores>
    <threads>{threads}</threads>
  </cpu>
  <memory>{host.memory_bytes // 1024}</memory>
"""
    return head + "".join(domain_xml(i, s, f) for i, s, f in servers) + "</node>\n"


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_nodes(estate: Estate, directory: Path) -> dict[str, Path]:
    """Write one node file per host of the estate; returns {host name: absolute path}."""
    directory.mkdir(parents=True, exist_ok=True)
    flavors = {f.name: f for f in estate.flavors}
    # Instance "database ids" are global across the cloud, like Nova's, so names never collide.
    index = {server.id: i for i, server in enumerate(estate.servers, start=1)}
    nodes: dict[str, Path] = {}
    for host in estate.hosts:
        servers = [(index[s.id], s, flavors[s.flavor]) for s in estate.servers_on(host.name)]
        path = (directory / f"{host.name}.xml").resolve()
        _write_atomically(path, node_xml(host, servers))
        nodes[host.name] = path
    return nodes


def start(workdir: Path, context: dict[str, Any]) -> DemoPart:
    """Render the estate's hypervisors and return one `kind: libvirt` source per host."""
    estate: Estate = context.get("estate") or build_estate()
    nodes = render_nodes(estate, Path(workdir) / "libvirt")
    context["libvirt_nodes"] = nodes
    sources = [
        {
            "kind": "libvirt",
            "name": f"kvm-{host.name}",
            "uri": f"test://{nodes[host.name]}",
            "cloud": CLOUD,
            "pool": host.zone,
            "interval": INTERVAL,
        }
        for host in estate.hosts
    ]
    domains = len(estate.servers)
    return DemoPart(
        sources=sources,
        description=f"{len(sources)} libvirt test-driver hypervisors with {domains} domains",
    )
