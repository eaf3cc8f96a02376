"""A discovered target polled through its URI template against the REAL libvirtd (+ QEMU guest), read-only.

The file_sd label `socket` fills the template `qemu+unix:///system?socket={socket}`. capacityd's
connection must be read-only: the daemon's admin API lists it as a read-only client, and a connection
opened the same way is denied every write (defining a domain).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from collector.app.config import parse_config
from collector.sources.discovery.fleet import TargetFleet
from tests.libvirt.conftest import LINUX_GUEST, libvirtd  # noqa: F401 - the session fixture
from tests.services.libvirtd import Libvirtd

pytestmark = pytest.mark.slow


def _client_infos(daemon: Libvirtd) -> list[str]:
    listed = subprocess.run(
        ["virt-admin", "-c", daemon.admin_uri, "srv-clients-list", "libvirtd"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    infos = []
    for line in listed.stdout.splitlines()[2:]:
        if line.strip():
            info = subprocess.run(
                ["virt-admin", "-c", daemon.admin_uri, "client-info", "libvirtd", line.split()[0]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            infos.append(info.stdout)
    return infos


def test_discovered_target_through_the_template_is_read_only(libvirtd: Libvirtd, tmp_path: Path) -> None:  # noqa: F811
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["hv-real"], "labels": {"socket": str(libvirtd.socket), "pool": "az1"}}]))
    config = parse_config(
        {
            "sources": [
                {
                    "kind": "libvirt",
                    "name": "fleet",
                    "timeout": "20s",
                    "discover": {"file_sd": [str(sd)], "uri": "qemu+unix:///system?socket={socket}"},
                }
            ]
        }
    )
    fleet = config.sources[0].create_source()
    assert isinstance(fleet, TargetFleet)
    try:
        result = fleet.checked_poll(datetime.now(UTC))
        consumers = result.frames["consumers"]
        assert LINUX_GUEST.uuid in set(consumers["id"])
        assert set(consumers["host"]) == {"hv-real"} and set(consumers["pool"]) == {"az1"}
        assert fleet.states["hv-real"].target.uri == f"qemu+unix:///system?socket={libvirtd.socket}"
        infos = _client_infos(libvirtd)
        readonly = [i for i in infos if "readonly" in i]
        assert readonly, infos
        assert all(
            line.split(":")[-1].strip() in ("yes", "1", "true")
            for info in readonly
            for line in info.splitlines()
            if line.strip().startswith("readonly")
        ), infos
    finally:
        fleet.close()
    conn = libvirt.openReadOnly(f"qemu+unix:///system?socket={libvirtd.socket}")
    try:
        with pytest.raises(libvirt.libvirtError) as denied:
            conn.defineXML(libvirtd.guest_xml(LINUX_GUEST).replace(LINUX_GUEST.name, "intruder"))
        assert denied.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    finally:
        conn.close()
