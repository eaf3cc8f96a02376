"""OpenStack source: Nova + Placement read through openstacksdk (see README.md in this folder)."""

from collector.sources.openstack.source import OpenStackSource

SOURCE = OpenStackSource

__all__ = ["SOURCE", "OpenStackSource"]
