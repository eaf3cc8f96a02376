"""Real TSDB processes for the remote-history tests: VictoriaMetrics, vmagent and Prometheus 2.x as a
remote-write receiver, each on a free loopback port with its own data directory, started and killed here
(recipe: /work/shared/recipes/tsdb; provisioning: scripts/provision/tsdb.sh)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/provision/tsdb.sh installs it)")
    return path


@dataclass
class Service:
    """One TSDB process; `stop()` kills it, `start()` (re)starts it on the same port and data."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return bytes(response.read())


def victoria_metrics(workdir: Path, *, retention: str = "100y", dedup: bool = True) -> Service:
    port = free_port()
    argv = [need("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir / 'vm'}",
            f"-retentionPeriod={retention}", "-search.latencyOffset=0s"]  # fmt: skip
    if dedup:
        argv.append("-dedup.minScrapeInterval=1ms")
    return Service("victoria-metrics", argv, port, "/health", workdir / "vm.log").start()


def vmagent(workdir: Path, remote_write_url: str) -> Service:
    port = free_port()
    argv = [need("vmagent"), f"-httpListenAddr=127.0.0.1:{port}", f"-remoteWrite.url={remote_write_url}",
            f"-remoteWrite.tmpDataPath={workdir / 'vmagent'}", "-remoteWrite.flushInterval=100ms"]  # fmt: skip
    return Service("vmagent", argv, port, "/health", workdir / "vmagent.log").start()


def prometheus(workdir: Path, *, out_of_order_window: str | None = "60d") -> Service:
    port = free_port()
    config = workdir / "prometheus.yml"
    lines = ["global: {scrape_interval: 1h}"]
    if out_of_order_window:
        lines.append(f"storage: {{tsdb: {{out_of_order_time_window: {out_of_order_window}}}}}")
    config.write_text("\n".join(lines) + "\n")
    argv = [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'prom'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=400d"]  # fmt: skip
    return Service("prometheus", argv, port, "/-/ready", workdir / "prometheus.log").start()


def flush(service: Service) -> None:
    """Make just-written samples searchable (VictoriaMetrics buffers them for up to a second)."""
    if service.name == "victoria-metrics":
        service.get("/internal/force_flush")
