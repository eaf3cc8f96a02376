"""capacityd's libvirt poll + exposition vs Debian's prometheus-libvirt-exporter, at 250 to 4000 domains.

    .venv/bin/python bench/bench_libvirt.py [--runs 5] [--sizes 250,500,1000,2000,4000]
                                            [--mode rpc|inprocess|both] [--node PATH.xml[.gz]]

Both sides read the same libvirt test-driver node, side by side in one run, interleaved run by run
so that both see the same machine load; every figure is the median of --runs. The nodes are made
from the source's testdata `test-node-1000.xml.gz` (1000 domains: 872 running, 49 paused, 79 shut
off): the first N domains for N <= 1000, copies with fresh uuids and names beyond.

* capacityd: one long-lived read-only connection; a collection = `LibvirtSource.checked_poll`
  (one getAllDomainStats call listing every domain with its stats + node facts, frame validation)
  + Estate snapshot + render of the whole /metrics exposition
  (`exporters.prometheus.exposition.ExpositionCache.update`). A Prometheus scrape of capacityd
  never triggers that work: it is served from memory (its latency is printed too).
* prometheus-libvirt-exporter 0.2.0 (kumina, Debian bookworm): every scrape opens a new connection,
  lists active domains (capped at 512 by its binding) and makes ~5 calls per domain; the scrape is the work.

The headline (`rpc`, the default) serves the node from a real libvirtd (private namespaces,
tests/services/libvirtd.py) as `test+unix:///node.xml?socket=...`: every call is a round trip to
the daemon, as with `qemu:///system` on a hypervisor. The test driver re-reads the whole node file
for every new connection (~1 s per 1000 domains, in libvirtd), which the exporter pays on every
scrape and no real hypervisor does: that re-read is measured in the same run (a bare open + close
of a connection between scrapes) and removed from the exporter's side. The ratios and the verdict
use the exporter's scrape WITHOUT it. (`inprocess`, `test:///node.xml` inside each client, is kept
as a cross-check: calls cost microseconds there, and the re-read happens in the exporter itself.)

Verdicts, for whatever sizes are run: the exporter without its re-read / capacityd's warm collection
>= 20x wall at every size where capacityd exposes every domain; and capacityd's warm collection
growing no faster than the domains (per-domain cost at the largest size <= 1.3x that at the smallest).
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import libvirt

from collector.estate import Estate
from collector.sources.libvirt import LibvirtSource
from collector.sources.libvirt.settings import LibvirtSourceConfig
from collector.sources.libvirt.source import ensure_event_loop
from exporters.prometheus.exposition import ExpositionCache
from exporters.prometheus.http import start_server

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NODE = REPO / "collector" / "sources" / "libvirt" / "testdata" / "test-node-1000.xml.gz"
EXPORTER = "/usr/bin/prometheus-libvirt-exporter"
MS = 1e3


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Measures wall time, this process's CPU and (optionally) one other process's CPU (libvirtd)."""

    daemon_pid: int | None = None

    def measure(self, action: Callable[[], object], other_pid: int | None = None) -> tuple[float, float, float, object]:
        """(wall s, CPU s of this process or of `other_pid`, CPU s of libvirtd, result)."""

        def cpu() -> float:
            return process_cpu_seconds(other_pid) if other_pid else time.process_time()

        daemon = process_cpu_seconds(self.daemon_pid) if self.daemon_pid else 0.0
        started, cpu_started = time.perf_counter(), cpu()
        result = action()
        wall, used = time.perf_counter() - started, cpu() - cpu_started
        daemon_used = process_cpu_seconds(self.daemon_pid) - daemon if self.daemon_pid else 0.0
        return wall, used, daemon_used, result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, timeout: float = 600) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"GET /metrics on :{port} answered {response.status}")
    return body


def median_of(samples: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return tuple(statistics.median(column) for column in zip(*samples, strict=True))  # type: ignore[return-value]


class Capacityd:
    """capacityd's side: a libvirt source, the estate and the exposition cache, as in the daemon."""

    def __init__(self, uri: str):
        self.source = LibvirtSource(LibvirtSourceConfig(kind="libvirt", name="kvm-bench", uri=uri, timeout="10m"))
        self.estate = Estate()
        self.estate.add_source(self.source.name, self.source.kind, interval=timedelta(seconds=60))
        self.cache = ExpositionCache()

    def collect(self) -> object:
        """One collection: poll (validated) -> estate -> rendered /metrics."""
        now = datetime.now(UTC)
        result = self.source.checked_poll(now)
        self.estate.record_success(self.source.name, result.frames, now, 0.0, result.skipped, result.api_calls)
        return result, self.cache.update(self.estate.snapshot())

    def served_scrape_latency(self, scrapes: int) -> float:
        server = start_server(self.cache, "127.0.0.1", 0)
        try:
            latencies = []
            for _ in range(scrapes):
                started = time.perf_counter()
                http_get(server.port)
                latencies.append(time.perf_counter() - started)
        finally:
            server.shutdown()
        return statistics.median(latencies)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the exporter's child process: get SIGTERM if the benchmark dies, so it never outlives us."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def exporter(uri: str) -> Iterator[tuple[int, int]]:
    """Run prometheus-libvirt-exporter on a free loopback port; yields (port, pid)."""
    if not os.access(EXPORTER, os.X_OK):
        raise SystemExit(f"{EXPORTER} missing: run scripts/provision/libvirt.sh (package prometheus-libvirt-exporter)")
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [EXPORTER, f"--libvirt.uri={uri}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        output = log.read().decode(errors="replace")[-1000:]
                        raise SystemExit(f"exporter did not start: {output}") from None
                    time.sleep(0.1)
            yield port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def compare(uri: str, runs: int, meter: Meter) -> tuple[dict[str, object], dict[str, object]]:
    """Both sides, interleaved run by run so that they see the same machine load."""
    ours = Capacityd(uri)
    cold = meter.measure(ours.collect)[0]  # connect (parses the node once) + every domain's XML read once
    ours_samples: list[tuple[float, float, float]] = []
    peer_samples: list[tuple[float, float, float]] = []
    opens: list[tuple[float, float, float]] = []
    with exporter(uri) as (port, pid):
        http_get(port)  # warm-up (Go runtime, first connection)
        for _ in range(runs):
            wall, cpu, daemon, last = meter.measure(ours.collect)
            ours_samples.append((wall, cpu, daemon))
            wall, cpu, daemon, body = meter.measure(lambda: http_get(port), other_pid=pid)
            peer_samples.append((wall, cpu, daemon))
            # What one new connection's re-parse of the node costs, under the same load: measured twice
            # around each scrape (once before the next one) and averaged, to halve its noise.
            reread = [meter.measure(lambda: libvirt.openReadOnly(uri).close())[:3] for _ in range(2)]
            opens.append(tuple(sum(column) / 2 for column in zip(*reread, strict=True)))  # type: ignore[arg-type]
            time.sleep(0.5)  # let libvirtd finish tearing down closed connections before our next run
    result, exposition = last  # type: ignore[misc]
    served = ours.served_scrape_latency(max(runs, 50))
    ours.source.close()
    consumers = result.frames["consumers"]
    exposed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.body.decode().splitlines()
        if line.startswith("capacity_consumers{")
    )
    text = body.decode()  # type: ignore[union-attr]
    up = re.search(r"^libvirt_up (\S+)$", text, re.M)
    number = re.search(r"^libvirt_domains_number (\S+)$", text, re.M)
    return (
        {
            "cold": cold,
            "median": median_of(ours_samples),
            "served": served,
            "domains": len(consumers),
            "exposed_domains": int(exposed),
            "states": dict(sorted(consumers["state"].value_counts().to_dict().items())),
            "api_calls": result.api_calls,
        },
        {
            "median": median_of(peer_samples),
            "open": median_of(opens),
            # Scrape minus its own run's re-read, per run: the pairs saw the same load.
            "without": [
                tuple(a - b for a, b in zip(scrape, reread, strict=True))
                for scrape, reread in zip(peer_samples, opens, strict=True)
            ],
            "up": float(up.group(1)) if up else None,
            "domains_number": int(float(number.group(1))) if number else None,
            "domains": len(set(re.findall(r'domain="([^"]*)"', text))),
        },
    )


def report(title: str, ours: dict[str, object], peer: dict[str, object], daemon: bool) -> tuple[float, float]:
    """Print one comparison table; returns the wall-clock speed-ups (as measured, without the re-parse)."""
    ours_wall, ours_cpu, ours_daemon = ours["median"]  # type: ignore[misc]
    peer_wall, peer_cpu, peer_daemon = peer["median"]  # type: ignore[misc]
    open_wall, open_cpu, open_daemon = peer["open"]  # type: ignore[misc]
    # In-process, the re-parse runs in the client; through libvirtd, in the daemon.
    fair = SizeResult(int(ours["domains"]), ours, peer).fair(daemon)  # type: ignore[call-overload]

    def row(label: str, values: tuple[float, float, float] | None, domains: object = "") -> None:
        cells = "".join(f"{v * MS:>11.1f}" for v in values[: 3 if daemon else 2]) if values else ""
        print(f"  {label:<56}{cells:<{33 if daemon else 22}} {domains!s:>8}")

    print(f"{title}")
    head = f"{'wall ms':>11}{'client CPU':>11}" + (f"{'libvirtd CPU':>13}" if daemon else "")
    print(f"  {'':<56}{head:<{33 if daemon else 22}} {'domains':>8}")
    row("capacityd: poll + validate + render /metrics (warm)", (ours_wall, ours_cpu, ours_daemon), ours["domains"])
    print(f"  {'capacityd: first collection (connect + read every XML)':<56}{ours['cold'] * MS:>11.1f}")  # type: ignore[operator]
    print(
        f"  {'capacityd: one Prometheus scrape (served from memory)':<56}{ours['served'] * MS:>11.2f}"  # type: ignore[operator]
        f"{'':<{22 if daemon else 11}} {ours['exposed_domains']:>8}"
    )
    row("prometheus-libvirt-exporter 0.2.0: one scrape", (peer_wall, peer_cpu, peer_daemon), peer["domains"])
    row("  of which: a new connection re-parsing the node file", (open_wall, open_cpu, open_daemon))
    row("  exporter scrape without that re-parse", fair)
    ratio_measured, ratio_fair = peer_wall / ours_wall, fair[0] / ours_wall
    cpu_ours = ours_cpu + (ours_daemon if daemon else 0.0)
    cpu_peer = peer_cpu + (peer_daemon if daemon else 0.0)
    cpu_fair = fair[1] + (fair[2] if daemon else 0.0)
    print(
        f"  speed-up (exporter / capacityd): as measured {ratio_measured:.1f}x wall, {cpu_peer / cpu_ours:.1f}x CPU; "
        f"without the re-parse {ratio_fair:.1f}x wall, {cpu_fair / cpu_ours:.1f}x CPU"
        + (" (CPU = client + libvirtd)" if daemon else "")
    )
    print(
        f"  exporter: libvirt_up {peer['up']}, libvirt_domains_number {peer['domains_number']} (active only, "
        f"512 cap); capacityd: all {ours['domains']} domains {ours['states']}, "
        f"{ours['api_calls']} libvirt calls per warm poll"
    )
    print()
    return ratio_measured, ratio_fair


DOMAIN_RE = re.compile(rb"<domain type='test'.*?</domain>\s*", re.S)


def scaled_node(node: Path, domains: int, workdir: Path) -> Path:
    """A test-driver node with `domains` domains made from `node`'s: its first ones, or copies beyond.

    A copy gets a fresh uuid (derived, so runs are repeatable) and name; states, flavors and Nova
    metadata repeat the original's mix.
    """
    raw = gzip.decompress(node.read_bytes()) if node.suffix == ".gz" else node.read_bytes()
    found = list(DOMAIN_RE.finditer(raw))
    if not found:
        raise SystemExit(f"{node}: no <domain type='test'> elements")
    head, tail = raw[: found[0].start()], raw[found[-1].end() :]
    originals = [match.group(0) for match in found]
    parts = [head]
    for index in range(domains):
        text = originals[index % len(originals)]
        copy = index // len(originals)
        if copy:
            old_uuid = re.search(rb"<uuid>([^<]+)</uuid>", text).group(1)  # type: ignore[union-attr]
            new_uuid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{old_uuid.decode()}/{copy}")).encode()
            text = text.replace(old_uuid, new_uuid)
            suffix = b"-c%d</name>" % copy
            text = re.sub(rb"<name>([^<]+)</name>", lambda m, s=suffix: b"<name>" + m.group(1) + s, text, count=1)
            text = re.sub(rb"<mac address='([^']+)'/>", b"", text)  # let the driver pick unique MACs
        parts.append(text)
    parts.append(tail)
    target = workdir / f"kvm-bench-{domains}.xml"
    target.write_bytes(b"".join(parts))
    return target.resolve()


@dataclass
class SizeResult:
    domains: int
    ours: dict[str, object]
    peer: dict[str, object]

    @property
    def ours_wall(self) -> float:
        return self.ours["median"][0]  # type: ignore[index]

    def fair(self, daemon: bool) -> tuple[float, float, float]:
        """The exporter's scrape minus the measured re-read of the node file for its new connection.

        (wall, exporter CPU, libvirtd CPU), the median over runs of each run's scrape minus that run's
        re-read (both measured under the same load). Through libvirtd the re-read runs in the daemon,
        in-process in the exporter itself; it is taken off whichever ran it. Floored at 0.
        """
        diffs: list[tuple[float, float, float]] = self.peer["without"]  # type: ignore[assignment]
        wall = statistics.median(d[0] for d in diffs)
        peer_cpu, peer_daemon = self.peer["median"][1], self.peer["median"][2]  # type: ignore[index]
        if daemon:
            return max(wall, 0.0), peer_cpu, max(statistics.median(d[2] for d in diffs), 0.0)
        return max(wall, 0.0), max(statistics.median(d[1] for d in diffs), 0.0), peer_daemon

    def fair_range(self) -> tuple[float, float]:
        """Lowest and highest per-run wall difference: how far the noise reaches."""
        walls = [d[0] for d in self.peer["without"]]  # type: ignore[union-attr]
        return min(walls), max(walls)

    @property
    def all_exposed(self) -> bool:
        return self.ours["domains"] == self.ours["exposed_domains"] == self.domains


def growth_table(title: str, results: list[SizeResult], daemon: bool) -> None:
    """One row per size: capacityd warm/cold, the exporter as measured, its re-read, and the ratios."""
    print(title)
    cpu_label = "CPU+libvirtd" if daemon else "CPU"
    print(
        f"  {'domains':>7} | {'capacityd warm':>14} {cpu_label:>12} {'per domain':>10} {'cold':>8} {'calls':>5}"
        f" | {'exporter':>9} {'re-read':>8} {'without':>8} {'seen':>5} | {'ratio':>6} {'ratio w/o':>9}"
        f" {'CPU w/o':>8} {'per dom w/o':>11}"
    )
    for r in results:
        wall, cpu, own_daemon = r.ours["median"]  # type: ignore[misc]
        peer_wall = r.peer["median"][0]  # type: ignore[index]
        open_wall = r.peer["open"][0]  # type: ignore[index]
        fair_wall, fair_cpu, fair_daemon = r.fair(daemon)
        ours_cpu = cpu + (own_daemon if daemon else 0.0)
        peer_cpu = fair_cpu + (fair_daemon if daemon else 0.0)
        print(
            f"  {r.domains:>7} | {wall * MS:>11.1f} ms {ours_cpu * MS:>9.1f} ms {wall / r.domains * 1e6:>7.1f} us"
            f" {r.ours['cold']:>7.2f}s {r.ours['api_calls']!s:>5}"  # type: ignore[index]
            f" | {peer_wall * MS:>6.0f} ms {open_wall * MS:>5.0f} ms {fair_wall * MS:>5.0f} ms"
            f" {r.peer['domains']!s:>5}"
            f" | {peer_wall / wall:>5.1f}x {fair_wall / wall:>8.1f}x {peer_cpu / ours_cpu:>7.1f}x"
            f" {(fair_wall / max(int(r.peer['domains']), 1)) / (wall / r.domains):>10.1f}x"
        )
    print(
        "  (capacityd warm = poll + validate + render /metrics on its long-lived connection; exporter = one scrape"
        " as measured, re-read = a new connection re-reading the node file, without = median over runs of each"
        " scrape minus its own run's re-read;"
        " seen = domains in the exporter's answer (active only, 512 cap); ratios = exporter / capacityd, medians of"
        " the same run; per dom w/o = the same per domain each side exposes)"
    )
    print()


def verdicts(label: str, results: list[SizeResult], daemon: bool) -> None:
    for r in results:
        ratio = r.fair(daemon)[0] / r.ours_wall
        met = ratio >= 20 and r.all_exposed
        low, high = r.fair_range()
        print(
            f"{label}: {r.domains} domains: target >= 20x over the exporter without its re-read, every domain "
            f"exposed: {'MET' if met else 'MISSED'} ({ratio:.1f}x; per run {low * MS:.0f}..{high * MS:.0f} ms "
            f"without the re-read vs {r.ours_wall * MS:.0f} ms; capacityd exposes "
            f"{r.ours['exposed_domains']}/{r.domains}, the exporter {r.peer['domains']})"
        )
    if len(results) >= 2:
        small, large = results[0], results[-1]
        growth = (large.ours_wall / large.domains) / (small.ours_wall / small.domains)
        print(
            f"{label}: capacityd linear in domains (warm cost per domain at {large.domains} <= 1.3x that at "
            f"{small.domains}): {'MET' if growth <= 1.3 else 'MISSED'} ({growth:.2f}x; whole poll "
            f"{large.ours_wall / small.ours_wall:.1f}x for {large.domains / small.domains:.0f}x the domains)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each side per size (median reported)")
    parser.add_argument("--sizes", default="250,500,1000,2000,4000", help="comma-separated domain counts")
    parser.add_argument("--node", type=Path, default=DEFAULT_NODE, help="test-driver node file (.xml or .xml.gz)")
    parser.add_argument(
        "--mode",
        choices=["both", "inprocess", "rpc"],
        default="rpc",
        help="rpc (real libvirtd, the headline), inprocess (test:/// in each client), or both",
    )
    parser.add_argument("--detail", type=int, default=1000, help="also print the full breakdown at this size")
    args = parser.parse_args()
    if not args.node.exists():
        raise SystemExit(f"node file {args.node} not found (pass --node)")
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    ensure_event_loop()  # also routes libvirt's error printing to the log
    print(
        f"sizes {sizes}: {args.runs} runs per side per size, medians; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-libvirt-") as workdir:
        nodes = {size: scaled_node(args.node, size, Path(workdir)) for size in sizes}
        if args.mode in ("both", "rpc"):
            from tests.services.libvirtd import Libvirtd

            daemon = Libvirtd(Path(workdir) / "libvirtd", guest_images=False)
            daemon.start()
            try:
                meter = Meter(daemon_pid=daemon.process.pid)  # type: ignore[union-attr]
                rpc: list[SizeResult] = []
                for size in sizes:
                    uri = f"test+unix://{nodes[size]}?socket={daemon.socket}"
                    ours, peer = compare(uri, args.runs, meter)
                    rpc.append(SizeResult(size, ours, peer))
                    if size == args.detail:
                        report(
                            f"{size} domains through a real libvirtd, in detail (test+unix:///...)",
                            ours,
                            peer,
                            daemon=True,
                        )
            finally:
                daemon.stop()
            growth_table(
                "HEADLINE: through a real libvirtd, every call a round trip (test+unix:///...)", rpc, daemon=True
            )
            verdicts("through libvirtd", rpc, daemon=True)
        if args.mode in ("both", "inprocess"):
            local: list[SizeResult] = []
            for size in sizes:
                ours, peer = compare(f"test://{nodes[size]}", args.runs, Meter())
                local.append(SizeResult(size, ours, peer))
            print()
            growth_table(
                "cross-check: in-process test driver (test:///...), calls cost microseconds", local, daemon=False
            )
            verdicts("in-process", local, daemon=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
