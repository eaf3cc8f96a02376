"""The fault suite's harness: the real `capacityd run` process, real stand-in services, and the checks every case makes.

Each case starts the daemon as operators do (a config file, `capacityd run -c`), injects one fault from outside the
process, and asserts with `FaultCase.check_survived`: the process is alive, /metrics answers, history passes SQLite's
integrity check and the store's ownership check, and once the fault ends collection resumes with no gap in history
longer than one interval beyond the fault. The stand-ins run in the test process on loopback, so a case can stop,
slow down or corrupt them while the daemon polls them through the same client libraries as in production.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.store.verify import verify

REPO = Path(__file__).resolve().parents[2]
NODE5 = REPO / "collector/sources/libvirt/testdata/test-node-5.xml"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match:
            labels = dict(LABEL.findall(match["labels"] or ""))
            out.append((match["name"], labels, float(match["value"])))
    return out


def sample(text: str, name: str, **labels: str) -> float | None:
    """The first sample of `name` whose labels include `labels`, or None."""
    for sample_name, sample_labels, value in parse_samples(text):
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as error:
            last = error
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@dataclass
class Daemon:
    """One `capacityd run` process under test; restartable on the same config and state."""

    config_path: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    command_prefix: list[str] = field(default_factory=list)
    """e.g. `["faketime", "-f", "..."]` or `["unshare", ...]`: how the process is started."""

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process; closed by the OS at exit
        self.process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "collector", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        wait_for(self.answers, 60, "the daemon to serve /metrics")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def scrape(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as response:
            return str(response.read().decode())

    def answers(self) -> bool:
        try:
            return bool(self.scrape())
        except OSError:
            return False

    def metric(self, name: str, **labels: str) -> float | None:
        return sample(self.scrape(), name, **labels)

    def wait_metric(self, name: str, condition: Callable[[float], bool], timeout: float = 30, **labels: str) -> float:
        def check() -> tuple[float] | None:  # a 1-tuple: a value of 0.0 must count as found
            value = self.metric(name, **labels)
            return (value,) if value is not None and condition(value) else None

        try:
            value = wait_for(check, timeout, f"{name}{labels} to satisfy the condition")
        except AssertionError as error:
            seen = [line for line in self.scrape().splitlines() if line.startswith(("capacityd_source", name))]
            raise AssertionError(f"{error}\n/metrics now:\n" + "\n".join(seen[:40])) from None
        return float(value[0])

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code (killed after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.killpg(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError("the daemon did not stop within 30 s of SIGTERM") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- history checks ----------------------------------------------------------------------------------------


def history_path(state_dir: Path) -> Path:
    return state_dir / "history.sqlite"


@contextlib.contextmanager
def read_history(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection beside the running daemon (WAL readers never block the writer)."""
    connection = sqlite3.connect(f"file:{history_path(state_dir)}?mode=ro", uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def integrity_problems(state_dir: Path) -> list[str]:
    """SQLite's integrity check plus the store's own ownership check (every row's key exists and is owned)."""
    problems: list[str] = []
    with read_history(state_dir) as db:
        result = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            problems += [f"integrity_check: {line}" for line in result]
        for table, key, keys in (
            ("pool_raw", "pkey", "pool_keys"),
            ("pool_rollup", "pkey", "pool_keys"),
            ("host_raw", "hkey", "host_keys"),
            ("host_rollup", "hkey", "host_keys"),
            ("consumer_hourly", "ckey", "consumer_keys"),
            ("consumer_counts", "gkey", "count_keys"),
        ):
            orphans = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {key} NOT IN (SELECT {key} FROM {keys})")
            count = orphans.fetchone()[0]
            if count:
                problems.append(f"{table}: {count} rows point at a {keys} entry that does not exist")
    problems += verify(history_path(state_dir))  # the store's own check: every row owned by a source that polled
    return problems


def poll_times(state_dir: Path, source: str) -> list[int]:
    """Epoch seconds of every poll of `source` stored at full resolution (pool rows)."""
    with read_history(state_dir) as db:
        rows = db.execute(
            "SELECT DISTINCT r.ts FROM pool_raw r JOIN pool_keys k ON k.pkey = r.pkey WHERE k.source = ? ORDER BY 1",
            (source,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def longest_gap(times: list[int], start: float, end: float) -> float:
    """The longest stretch without a stored poll between `start` and `end` (epoch seconds)."""
    inside = [t for t in times if start <= t <= end]
    edges = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(edges))


# -- config -----------------------------------------------------------------------------------------------


def libvirt_source(name: str, uri: str, interval: str = "2s", **extra: str) -> str:
    lines = ["  - kind: libvirt", f"    name: {name}", f"    uri: {uri}", f"    interval: {interval}"]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def openstack_source(name: str, clouds_yaml: Path, cloud: str, interval: str = "3s", **extra: str) -> str:
    lines = [
        "  - kind: openstack",
        f"    name: {name}",
        f"    cloud: {cloud}",
        f"    clouds_yaml: {clouds_yaml}",
        f"    interval: {interval}",
    ]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def config_text(port: int, state_dir: Path, sources: list[str], extra: str = "") -> str:
    return f"listen: 127.0.0.1:{port}\nstate_dir: {state_dir}\nsources:\n" + "\n".join(sources) + f"\n{extra}"
