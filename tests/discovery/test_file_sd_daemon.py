"""file_sd with the REAL daemon process: files added, changed, removed (and broken) while it runs.

Targets are libvirt test-driver node files reached through the URI template; the daemon polls every
2 s and re-reads the file_sd globs every second (no SIGHUP). /metrics must follow within an interval
or two: new targets export capacity series, removed ones end them and are listed as gone, a relabelled
one moves pool, a broken file keeps its previous targets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.discovery.conftest import write_node
from tests.foundation.test_daemon import free_port, sample, scrape_when

pytestmark = pytest.mark.slow


def _capacity(text: str, host: str, pool: str | None = None) -> float | None:
    labels = {"host": host, "resource": "cpu", "layer": "hypervisor"}
    if pool is not None:
        labels["pool"] = pool
    return sample(text, "capacity_resource_capacity", **labels)


def test_daemon_follows_file_sd_changes(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    for host in ("h1", "h2", "h3", "h4"):
        write_node(nodes, host)
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "a.json").write_text(json.dumps([{"targets": ["h1", "h2"], "labels": {"pool": "az1"}}]))
    (sd / "b.yaml").write_text("- targets: [h3]\n  labels: {pool: az2, rack: r7}\n")
    port = free_port()
    config = tmp_path / "capacityd.yaml"
    config.write_text(f"""
listen: 127.0.0.1:{port}
state_dir: {tmp_path / "state"}
sources:
  - kind: libvirt
    name: fleet
    interval: 2s
    discover:
      file_sd: ["{sd}/*.json", "{sd}/*.yaml"]
      uri: "test://{nodes}/{{target}}.xml"
      refresh_interval: 1s
      max_concurrency: 2
""")
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "collector.app.cli", "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        text = scrape_when(port, lambda t: all(_capacity(t, h) for h in ("h1", "h2", "h3")), "first targets")
        assert _capacity(text, "h3", pool="az2") == 16
        assert sample(text, "capacityd_target_up", source="fleet", target="h1", pool="az1", disabled="false") == 1
        assert sample(text, "capacityd_discovered_targets", source="fleet", state="active") == 3
        assert sample(text, "capacityd_source_up", source="fleet", kind="libvirt") == 1

        # Added file: a new target is polled.
        (sd / "c.json").write_text(json.dumps([{"targets": ["h4"], "labels": {"pool": "az1"}}]))
        scrape_when(port, lambda t: _capacity(t, "h4", pool="az1") == 16, "h4 added")

        # Changed file: h2 leaves (series end, marked gone), h1 moves to pool az9 and is disabled.
        (sd / "a.json").write_text(json.dumps([{"targets": ["h1"], "labels": {"pool": "az9", "disabled": "true"}}]))
        text = scrape_when(
            port,
            lambda t: _capacity(t, "h2") is None and _capacity(t, "h1", pool="az9") == 16,
            "h2 gone, h1 relabelled",
        )
        assert sample(text, "capacityd_target_state", source="fleet", target="h2", state="gone") == 1
        assert sample(text, "capacityd_target_up", source="fleet", target="h2") is None
        assert sample(text, "capacityd_target_up", source="fleet", target="h1", disabled="true") == 1
        assert _capacity(text, "h1", pool="az1") is None

        # Broken file: its previous targets are kept; removed file: its targets go.
        (sd / "c.json").write_text("[{not json")
        (sd / "b.yaml").unlink()
        text = scrape_when(port, lambda t: _capacity(t, "h3") is None, "h3 gone")
        assert _capacity(text, "h4") == 16
        assert sample(text, "capacityd_target_state", source="fleet", target="h3", state="gone") == 1
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    assert "c.json: not valid JSON" in (tmp_path / "daemon.log").read_text()
