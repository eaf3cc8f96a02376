"""The daemon end to end: real libvirt test-driver sources beside a dead one, /metrics, reload, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

NODE5 = Path(__file__).resolve().parents[2] / "collector/sources/libvirt/testdata/test-node-5.xml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_text(port: int, state: Path, extra: str = "") -> str:
    return f"""
listen: 127.0.0.1:{port}
state_dir: {state}
sources:
  - kind: libvirt
    name: node5
    uri: test://{NODE5}
    interval: 2s
  - kind: libvirt
    name: dead
    uri: qemu+tcp://127.0.0.1:1/system
    interval: 2s
{extra}"""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def scrape_when(port: int, predicate, what: str) -> str:
    """Scrape until `predicate(text)` holds; return that text."""

    def attempt():
        text = scrape(port)
        return text if predicate(text) else None

    return wait_for(attempt, what=what)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


@pytest.fixture
def daemon(tmp_path):
    port = free_port()
    config = tmp_path / "capacityd.yaml"
    config.write_text(config_text(port, tmp_path / "state"))
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "collector.app.cli", "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    yield process, port, config, tmp_path
    if process.poll() is None:
        process.kill()
        process.wait(10)
    log.close()


def test_daemon_exports_good_sources_beside_a_dead_one_and_reloads(daemon):
    process, port, config, tmp_path = daemon
    text = scrape_when(
        port,
        lambda t: (
            sample(t, "capacityd_source_up", source="dead") is not None
            and sample(t, "capacityd_source_up", source="node5") == 1
        ),
        what="first polls",
    )
    assert sample(text, "capacityd_source_up", source="dead", kind="libvirt") == 0
    assert sample(text, "capacityd_source_errors_total", source="dead", reason="unreachable") >= 1
    assert sample(text, "capacity_resource_capacity", host="test-node-5", resource="cpu", layer="hypervisor") == 16
    assert sample(text, "capacity_resource_capacity", host="test-node-5", resource="memory") == 64 * 2**30
    running = sample(text, "capacity_consumers", host="test-node-5", state="running")
    assert running == 3
    assert (tmp_path / "state" / "history.sqlite").exists()

    # reload: drop the dead source, add the default test host; a broken file is refused first
    config.write_text("sources: [{kind: libvirt, name: x, uri: nope}]\n")
    process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert process.poll() is None, "a bad config on reload must not stop the daemon"
    assert sample(scrape(port), "capacityd_source_up", source="node5") == 1
    config.write_text(
        config_text(port, tmp_path / "state").replace(
            "name: dead\n    uri: qemu+tcp://127.0.0.1:1/system", "name: default\n    uri: test:///default"
        )
    )
    process.send_signal(signal.SIGHUP)
    text = scrape_when(port, lambda t: sample(t, "capacityd_source_up", source="default") == 1, what="reloaded source")
    assert sample(text, "capacityd_source_up", source="dead") is None
    assert sample(text, "capacityd_source_up", source="node5") == 1

    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "reload refused" in log and "sources[0].uri" in log


def test_once_json_has_every_frame(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text(free_port(), tmp_path / "state"))
    done = subprocess.run(
        [sys.executable, "-m", "collector.app.cli", "once", "-c", str(config), "--format", "json", "--no-history"],
        capture_output=True,
        timeout=120,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr.decode()
    document = json.loads(done.stdout)
    assert {"capacity", "consumers", "hosts", "sources"} <= set(document)
    domains = [c for c in document["consumers"] if c["source"] == "node5"]
    assert len(domains) == 5
    assert {d["state"] for d in domains} == {"running", "paused", "shutoff"}
    sources = {s["source"]: s for s in document["sources"]}
    assert sources["node5"]["up"] is True and sources["dead"]["up"] is False
    assert "Connection refused" in sources["dead"]["last_error"]
