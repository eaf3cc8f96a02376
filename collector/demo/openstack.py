"""Demo part: the demo estate's OpenStack cloud, served by Nova + Placement stand-ins on loopback.

`collector.demo.standins.openstack` renders `collector.demo.model.build_estate()` — two AZs, a
PCPU aggregate (compute-09/10), a GPU host with a nested VGPU child (compute-06), a disabled host
(compute-05), a sharing DISK_GB provider in az2, public and private flavors and the servers — and
answers the Nova and Placement read APIs like the real services do. The daemon polls it with the
unchanged openstacksdk through a generated clouds.yaml (`auth_type: admin_token`), i.e. through the
same code path as a production cloud. One more server boots every minute while the demo runs, so
demand visibly grows.

The source entry uses `clouds_yaml:` to name the generated file; with `OS_CLIENT_CONFIG_FILE`
pointing at it, `cloud: demo-cloud` alone would work as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.demo import DemoPart
from collector.demo.model import CLOUD, REGION, Estate, build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate

INTERVAL = "30s"
GROWTH_EVERY_SECONDS = 60.0


def start(workdir: Path, context: dict[str, Any]) -> DemoPart:
    """Serve the estate's cloud and return the `kind: openstack` source that polls it."""
    estate: Estate = context.get("estate") or build_estate()
    cloud = from_demo_estate(estate, growth_every=GROWTH_EVERY_SECONDS)
    server = StandinServer(cloud).start()
    folder = Path(workdir) / "openstack"
    folder.mkdir(parents=True, exist_ok=True)
    clouds_yaml = server.write_clouds_yaml(folder / "clouds.yaml", CLOUD, REGION)
    context["openstack"] = {"clouds_yaml": str(clouds_yaml), "cloud": CLOUD, "region": REGION}
    source = {
        "kind": "openstack",
        "name": CLOUD,
        "cloud": CLOUD,
        "region": REGION,
        "clouds_yaml": str(clouds_yaml),
        "interval": INTERVAL,
    }
    growth = sum(1 for s in cloud.servers if s.visible_from > 0)
    return DemoPart(
        sources=[source],
        stop=server.stop,
        description=(
            f"Nova + Placement stand-ins on {server.base}: {len(estate.hosts)} computes, "
            f"{len(estate.servers)} servers (+1 a minute, {growth} planned)"
        ),
    )
