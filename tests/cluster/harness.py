"""Real `capacityd run` processes in a role, with their shard flags, and what their /metrics say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.harness import REPO, free_port, parse_samples, wait_for

__all__ = ["Collector", "free_port", "libvirt_sources", "wait_for", "write_config"]


def libvirt_sources(count: int, interval: str = "1s") -> list[str]:
    """`count` libvirt test-driver sources (each its own target), named h00, h01, ..."""
    return [
        f"  - kind: libvirt\n    name: h{i:02d}\n    uri: test:///default\n    cloud: lab\n"
        f"    pool: rack{i % 3}\n    interval: {interval}"
        for i in range(count)
    ]


def write_config(path: Path, port: int, state_dir: Path, sources: list[str], cluster: str = "") -> Path:
    listed = "sources:\n" + "\n".join(sources) if sources else "sources: []"
    path.write_text(
        f"listen: 127.0.0.1:{port}\nstate_dir: {state_dir}\n{listed}"
        + (f"\ncluster:\n{cluster}" if cluster else "")
        + "\n"
    )
    return path


@dataclass
class Collector:
    """One `capacityd run` process; `args` are the extra command-line flags (--role, --shard, ...)."""

    config_path: Path
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Collector:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "-c", str(self.config_path), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        log.close()
        if wait:
            wait_for(self.answers, 60, f"{self.config_path.name} to serve /metrics")
        return self

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def answers(self) -> bool:
        try:
            return bool(self.scrape())
        except OSError:
            return False

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(labels.items())): value for n, labels, value in parse_samples(self.scrape()) if n == name}

    def polls(self) -> dict[str, float]:
        """source -> polls attempted, for the sources this process polls."""
        return {dict(k)["source"]: v for k, v in self.samples("capacityd_source_polls_total").items()}

    def value(self, name: str, **labels: str) -> float | None:
        for key, value in self.samples(name).items():
            if all(dict(key).get(k) == v for k, v in labels.items()):
                return value
        return None

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]
