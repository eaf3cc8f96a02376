"""Reading libvirt's numbers: domain states, guest memory from balloon stats, CPU rates, error kinds.

Pure helpers (no libvirt calls) used by the poll and unit-tested directly: what a stats record
means, and how a per-domain error is counted in `capacityd_source_items_skipped_total`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import libvirt

from collector.sources.libvirt.nova_metadata import KIB, NAN

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)
STATS_NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT

# virDomainState -> the lowercase names virsh prints (and the `state` column carries).
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# Errors that mean a call is not supported by this driver/version (remembered, not retried).
UNSUPPORTED_ERRORS = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG}


def guest_memory_used(stats: dict[str, Any]) -> float:
    """Bytes the guest uses, from balloon stats only; NaN when the guest does not report them.

    Preferred: `available - usable` (MemTotal - MemAvailable: page cache the guest could drop is not
    "used"); else `current - unused` (balloon size - MemFree, counts cache as used). The balloon size
    alone (`balloon.current`, what `virDomainGetInfo` calls memory) is an allocation, never usage.
    """
    if stats.get("balloon.last-update") == 0:
        return NAN  # the guest never sent a stats update: any figure would be stale/invented
    available, usable = stats.get("balloon.available"), stats.get("balloon.usable")
    if available is not None and usable is not None:
        return float(max(available - usable, 0) * KIB)
    current, unused = stats.get("balloon.current"), stats.get("balloon.unused")
    if current is not None and unused is not None:
        return float(max(current - unused, 0) * KIB)
    return NAN


class CpuSample(NamedTuple):
    """A cumulative CPU-time reading of one domain (or the node) at a monotonic instant.

    A named tuple rather than a frozen dataclass: one is made per running domain per poll, and a
    frozen dataclass costs several times more to construct.
    """

    at: float
    """time.monotonic() when read."""
    nanoseconds: int
    incarnation: int
    """Domain id (changes on every start); a different id means the counter started over."""


def cpu_rate(previous: CpuSample | None, current: CpuSample | None) -> float:
    """Cores used between two samples; NaN on the first sample, after a counter reset or restart.

    A reset (counter went down, or the domain was restarted in between) gives NaN rather than a
    guess: the CPU spent before the restart is unknown, and the next poll has a clean rate again.
    """
    if previous is None or current is None:
        return NAN
    elapsed = current.at - previous.at
    delta = current.nanoseconds - previous.nanoseconds
    if current.incarnation != previous.incarnation or delta < 0 or elapsed <= 0:
        return NAN
    return delta / 1e9 / elapsed


def node_busy_nanoseconds(cpu_stats: dict[str, int]) -> tuple[int, int]:
    """(busy, total) from `virNodeGetCPUStats` (kernel, user, idle, iowait ... in ns)."""
    total = sum(int(v) for v in cpu_stats.values())
    idle = int(cpu_stats.get("idle", 0)) + int(cpu_stats.get("iowait", 0))
    return total - idle, total


def classify_domain_error(error: libvirt.libvirtError) -> str:
    """`skipped` reason for a per-domain failure."""
    code = error.get_error_code()
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return "domain_vanished"
    message = str(error)
    if code in (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE) or (
        "state change lock" in message
    ):
        return "domain_locked"
    return "domain_error"
