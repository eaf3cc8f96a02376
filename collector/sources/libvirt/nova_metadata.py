"""What a domain's XML says: name, vCPUs, memory and the Nova metadata linking it to its server.

Pure parsing of `virDomainGetXMLDesc` output (no libvirt calls), unit-tested directly
(tests/libvirt/test_parsing.py). Nova's libvirt driver writes `<metadata><nova:instance>` in
namespace 1.1 (or 1.0 on old releases); both are read, 1.1 preferred.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

KIB = 1024
MIB = 1024**2
GIB = 1024**3
NAN = math.nan

NOVA_NAMESPACES = {
    "http://openstack.org/xmlns/libvirt/nova/1.1": "1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0": "1.0",
}


@dataclass(frozen=True)
class NovaMetadata:
    """What Nova's libvirt driver writes into `<metadata><nova:instance>` (namespace 1.0 or 1.1)."""

    namespace_version: str
    instance_name: str | None
    flavor: str | None
    vcpus: int | None
    memory_mib: int | None
    disk_gib: int | None
    ephemeral_gib: int | None
    swap_mib: int | None
    project_id: str | None
    project_name: str | None
    user_id: str | None
    root_type: str | None
    """`image` (local root disk) or `volume` (boot from volume: the root disk is not on this host)."""

    @property
    def local_disk_bytes(self) -> float:
        """Local disk the flavor claims on this host (root unless booted from volume, + ephemeral + swap).

        This is what Placement counts as DISK_GB for the instance; NaN when the flavor has no sizes.
        """
        if self.disk_gib is None and self.ephemeral_gib is None and self.swap_mib is None:
            return NAN
        root = 0 if self.root_type == "volume" else (self.disk_gib or 0)
        return float((root + (self.ephemeral_gib or 0)) * GIB + (self.swap_mib or 0) * MIB)


@dataclass(frozen=True)
class DomainDefinition:
    """The parts of a domain's XML the source needs; cached per uuid while the domain id is unchanged."""

    uuid: str
    name: str
    vcpus: int | None
    max_memory_bytes: float
    current_memory_bytes: float
    nova: NovaMetadata | None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


_MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": KIB,
    "kib": KIB,
    "kb": 1000,
    "m": MIB,
    "mib": MIB,
    "mb": 1000**2,
    "g": GIB,
    "gib": GIB,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def _memory_bytes(element: ET.Element | None) -> float:
    """`<memory unit='KiB'>N</memory>` in bytes (libvirt's default unit is KiB); NaN if absent."""
    if element is None or element.text is None:
        return NAN
    value = _int(element.text)
    factor = _MEMORY_UNITS.get(element.get("unit", "KiB").lower())
    if value is None or factor is None:
        return NAN
    return float(value * factor)


def parse_nova_metadata(metadata: ET.Element | None) -> NovaMetadata | None:
    """The `nova:instance` element under a domain's `<metadata>` (1.1 preferred over 1.0)."""
    if metadata is None:
        return None
    for namespace, version in NOVA_NAMESPACES.items():
        instance = metadata.find(f"{{{namespace}}}instance")
        if instance is None:
            continue
        ns = f"{{{namespace}}}"
        flavor = instance.find(f"{ns}flavor")
        owner = instance.find(f"{ns}owner")
        project = owner.find(f"{ns}project") if owner is not None else None
        user = owner.find(f"{ns}user") if owner is not None else None
        root = instance.find(f"{ns}root")

        def flavor_int(tag: str, flavor: ET.Element | None = flavor, ns: str = ns) -> int | None:
            return _int(flavor.findtext(f"{ns}{tag}")) if flavor is not None else None

        return NovaMetadata(
            namespace_version=version,
            instance_name=instance.findtext(f"{ns}name"),
            flavor=flavor.get("name") if flavor is not None else None,
            vcpus=flavor_int("vcpus"),
            memory_mib=flavor_int("memory"),
            disk_gib=flavor_int("disk"),
            ephemeral_gib=flavor_int("ephemeral"),
            swap_mib=flavor_int("swap"),
            project_id=project.get("uuid") if project is not None else None,
            project_name=project.text if project is not None else None,
            user_id=user.get("uuid") if user is not None else None,
            root_type=root.get("type") if root is not None else None,
        )
    return None


def parse_domain_xml(xml: str) -> DomainDefinition:
    """Read name, uuid, vCPUs, memory and Nova metadata from `virDomainGetXMLDesc` output."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    vcpus = None
    if vcpu is not None:
        vcpus = _int(vcpu.get("current")) or _int(vcpu.text)
    return DomainDefinition(
        uuid=(root.findtext("uuid") or "").strip(),
        name=(root.findtext("name") or "").strip(),
        vcpus=vcpus,
        max_memory_bytes=_memory_bytes(root.find("memory")),
        current_memory_bytes=_memory_bytes(root.find("currentMemory")),
        nova=parse_nova_metadata(root.find("metadata")),
    )
