"""The libvirt (hypervisor) source: `kind: libvirt` in the config (see README.md beside this file)."""

from collector.sources.libvirt.source import LibvirtSource

SOURCE = LibvirtSource

__all__ = ["SOURCE", "LibvirtSource"]
