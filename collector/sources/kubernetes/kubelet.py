"""Kubelet usage: `/metrics/resource` scraped per node, in parallel, with per-node timeouts.

`/metrics/resource` is the kubelet's light endpoint (what metrics-server reads, ~16 KB for a node with
17 pods; `/metrics/cadvisor` is ~90x bigger). It is reached either through the API server's node proxy
(`GET /api/v1/nodes/<node>/proxy/metrics/resource`, RBAC `get nodes/proxy`; the default) or straight
at `https://<InternalIP>:10250/metrics/resource` (RBAC `get nodes/metrics`).

Only four families are read: `node_cpu_usage_seconds_total`, `node_memory_working_set_bytes`,
`pod_cpu_usage_seconds_total{namespace,pod}` and `pod_memory_working_set_bytes{namespace,pod}`.
CPU is a counter; `CpuRates` turns two polls into cores, Prometheus-style (a counter that went down
restarted from zero). A node whose answer is malformed, late or refused loses its usage only.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import urllib3
from kubernetes.client.exceptions import ApiException

from collector.sources.http_limits import DeadlineExceeded, ResponseTooLarge, ResponseTruncated, read_bounded

__all__ = [
    "CpuRates",
    "KubeletScraper",
    "MetricsFormatError",
    "NodeUsage",
    "ScrapeResult",
    "ScrapeTarget",
    "parse_resource_metrics",
]

NODE_CPU = "node_cpu_usage_seconds_total"
NODE_MEMORY = "node_memory_working_set_bytes"
POD_CPU = "pod_cpu_usage_seconds_total"
POD_MEMORY = "pod_memory_working_set_bytes"
_WANTED = (NODE_CPU, NODE_MEMORY, POD_CPU, POD_MEMORY)
MAX_BODY = 16 * 1024 * 1024  # a node with 250 pods answers ~250 KB; more is not /metrics/resource

_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class MetricsFormatError(ValueError):
    """A `/metrics/resource` answer that cannot be read as the kubelet's Prometheus text."""


@dataclass
class NodeUsage:
    """One node's sample: counters in core-seconds, memory in bytes, times in seconds since the epoch."""

    node_cpu: tuple[float, float | None] | None = None
    node_memory: float | None = None
    pod_cpu: dict[tuple[str, str], tuple[float, float | None]] = field(default_factory=dict)
    pod_memory: dict[tuple[str, str], float] = field(default_factory=dict)


def _labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL_RE.match(text, position)
        if match is None:
            raise MetricsFormatError(f"bad label set in line {line[:120]!r}")
        value = match.group(2)
        if "\\" in value:
            value = value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        labels[match.group(1)] = value
        position = match.end()
    return labels


def parse_resource_metrics(text: str) -> NodeUsage:
    """Read the four usage families out of a kubelet `/metrics/resource` answer.

    Lines of other families are skipped without being parsed; a malformed line of a wanted family,
    a negative or non-finite value, or an answer without the node's own CPU and memory raises
    `MetricsFormatError` (e.g. an HTML error page or a truncated body). This runs for every node
    every poll (5,000 nodes x ~60 lines), so the common line shape is split by hand, not by regex.
    """
    usage = NodeUsage()
    for line in text.split("\n"):
        if not line.startswith(_WANTED):
            continue
        brace = line.find("{")
        if brace < 0:
            name, _, rest = line.partition(" ")
            labels_text = ""
        else:
            close = line.rfind("}")
            if close < brace:
                raise MetricsFormatError(f"malformed sample line {line[:120]!r}")
            name, labels_text, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
        if name not in _WANTED:
            continue  # a longer family name sharing the prefix
        fields = rest.split()
        if not 1 <= len(fields) <= 2:
            raise MetricsFormatError(f"malformed sample line {line[:120]!r}")
        try:
            value = float(fields[0])
            timestamp = int(fields[1]) / 1000 if len(fields) == 2 else None
        except ValueError:
            raise MetricsFormatError(f"bad value in line {line[:120]!r}") from None
        if not math.isfinite(value) or value < 0:
            raise MetricsFormatError(f"value out of range in line {line[:120]!r}")
        if name == NODE_CPU:
            usage.node_cpu = (value, timestamp)
        elif name == NODE_MEMORY:
            usage.node_memory = value
        else:
            labels = _labels(labels_text, line) if "\\" in labels_text else dict(_PAIR_RE.findall(labels_text))
            try:
                key = (labels["namespace"], labels["pod"])
            except KeyError:
                raise MetricsFormatError(f"pod sample without namespace/pod labels: {line[:120]!r}") from None
            if name == POD_CPU:
                usage.pod_cpu[key] = (value, timestamp)
            else:
                usage.pod_memory[key] = value
    if usage.node_cpu is None or usage.node_memory is None:
        raise MetricsFormatError(
            f"no {NODE_CPU} / {NODE_MEMORY} sample (not a kubelet /metrics/resource answer? starts {text[:60]!r})"
        )
    return usage


class CpuRates:
    """Cores used, from CPU counters seen in successive polls (keyed by node or pod uid).

    rate = increase / elapsed, using the kubelet's sample timestamps when it sends them and the poll
    time otherwise. A counter lower than before restarted (node reboot, pod sandbox recreated): the
    increase is the new value, as Prometheus' rate() counts it. A key missing from a poll (its kubelet
    timed out) keeps its last sample for `max_age` seconds, so one bad scrape costs one rate, not two.
    """

    def __init__(self, max_age: float = 900.0) -> None:
        self._last: dict[str, tuple[float, float]] = {}
        self.max_age = max_age
        self.resets = 0

    def update(self, samples: Iterable[tuple[str, float, float]], now: float) -> dict[str, float]:
        """samples: (key, counter, time) -> {key: cores} for keys with an earlier sample."""
        current = {key: last for key, last in self._last.items() if now - last[1] <= self.max_age}
        rates: dict[str, float] = {}
        for key, value, when in samples:
            previous = current.get(key)
            current[key] = (value, when)
            if previous is None:
                continue
            elapsed = when - previous[1]
            if elapsed <= 0:
                continue  # the kubelet has not refreshed its sample since the last poll
            increase = value - previous[0]
            if increase < 0:
                self.resets += 1
                increase = value
            rates[key] = increase / elapsed
        self._last = current
        return rates


@dataclass(frozen=True)
class ScrapeTarget:
    node: str
    address: str | None
    port: int | None


@dataclass
class ScrapeResult:
    usage: dict[str, NodeUsage] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    forbidden: bool = False


_NOTE_LIMIT = 5


class KubeletScraper:
    """Scrapes many kubelets on a bounded pool of workers; one node's trouble never fails the poll.

    `concurrency` workers pull the next target from one shared iterator and keep their results in
    their own dicts, merged once at the end: no future or shared result lock per node (the previous
    `ThreadPoolExecutor.map` created 10,000 futures up front and took a shared lock per node).
    """

    def __init__(
        self,
        fetch: Callable[[ScrapeTarget, float], bytes],
        *,
        concurrency: int,
        timeout: float,
        mode: str,
    ):
        self._fetch = fetch
        self._concurrency = concurrency
        self._timeout = timeout
        self._mode = mode

    def scrape(self, targets: Iterable[ScrapeTarget], deadline: float | None = None) -> ScrapeResult:
        """Scrape every target; none is started after `deadline` (time.monotonic()), so a poll ends in time
        even when many kubelets hang (those left out are counted as `kubelet_deadline`)."""
        result = ScrapeResult()
        forbidden = threading.Event()
        feed = iter(targets)
        feed_lock = threading.Lock()

        def work() -> tuple[dict[str, NodeUsage], Counter[str], list[str]]:
            usage: dict[str, NodeUsage] = {}
            failures: Counter[str] = Counter()
            notes: list[str] = []
            while True:
                with feed_lock:
                    target = next(feed, None)
                if target is None:
                    return usage, failures, notes
                reason: str | None
                note: str | None
                if forbidden.is_set():
                    reason, note = "kubelet_forbidden", None
                elif deadline is not None and time.monotonic() + 0.1 >= deadline:
                    reason, note = (
                        "kubelet_deadline",
                        (f"kubelet of node {target.node}: not scraped, the poll ran out of time (timeout)"),
                    )
                else:
                    reason, note = self._scrape_one(target, usage, forbidden, deadline)
                if reason:
                    failures[reason] += 1
                    if note and len(notes) < _NOTE_LIMIT:
                        notes.append(note)

        workers = self._concurrency
        if isinstance(targets, Sized):
            workers = min(workers, len(targets))
        if workers:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubelet") as pool:
                parts = [pool.submit(work) for _ in range(workers)]
                for part in parts:
                    usage, failures, notes = part.result()
                    result.usage.update(usage)
                    result.failures.update(failures)
                    result.notes.extend(notes[: max(0, _NOTE_LIMIT - len(result.notes))])
        result.forbidden = forbidden.is_set()
        return result

    def _scrape_one(
        self,
        target: ScrapeTarget,
        usage: dict[str, NodeUsage],
        forbidden: threading.Event,
        deadline: float | None,
    ) -> tuple[str | None, str | None]:
        where = f"kubelet of node {target.node}"
        timeout = self._timeout if deadline is None else max(0.1, min(self._timeout, deadline - time.monotonic()))
        try:
            body = self._fetch(target, timeout)
        except ApiException as error:
            if error.status == 403:
                # RBAC is cluster-wide: every other node would be refused too, so stop asking.
                forbidden.set()
                permission = "get nodes/proxy" if self._mode == "proxy" else "get nodes/metrics"
                return "kubelet_forbidden", (
                    f"{where}: 403 Forbidden; the credentials lack `{permission}`, so usage is missing "
                    f"for every node (requests and allocations are still exported)"
                )
            if error.status == 401:
                return "kubelet_unauthorized", f"{where}: 401 Unauthorized"
            return "kubelet_error", f"{where}: HTTP {error.status} {_status_message(error)}"
        except DeadlineExceeded:
            return "kubelet_deadline", f"{where}: not complete by the per-poll deadline (timeout)"
        except ResponseTooLarge as error:
            return "kubelet_too_large", f"{where}: {error}"
        except (MetricsFormatError, ResponseTruncated) as error:
            return "kubelet_malformed", f"{where}: malformed /metrics/resource answer: {error}"
        except (urllib3.exceptions.HTTPError, OSError) as error:
            cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
            slow = isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError)
            if slow and not isinstance(cause, urllib3.exceptions.NewConnectionError):
                return "kubelet_timeout", f"{where}: no answer within {timeout:g}s"
            return "kubelet_unreachable", f"{where}: {type(error).__name__}: {_short(error)}"
        except KubeletAddressError as error:
            return "kubelet_unreachable", f"{where}: {error}"
        try:
            text = body.decode("utf-8")
            usage[target.node] = parse_resource_metrics(text)
        except (UnicodeDecodeError, MetricsFormatError) as error:
            return "kubelet_malformed", f"{where}: malformed /metrics/resource answer: {error}"
        return None, None


class KubeletAddressError(Exception):
    """Direct mode: the node reports no InternalIP to reach its kubelet at."""


def _status_message(error: ApiException) -> str:
    import orjson

    try:
        body = orjson.loads(error.body or b"")
        return str(body.get("message", ""))[:200] if isinstance(body, dict) else ""
    except orjson.JSONDecodeError:
        return (str(error.reason) or "")[:200]


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:200] + "..."


def read_limited(response: urllib3.BaseHTTPResponse, max_bytes: int = MAX_BODY, deadline: float | None = None) -> bytes:
    """Read a `/metrics/resource` answer, refusing one larger than `max_bytes` or not complete by `deadline`."""
    return read_bounded(response, max_bytes=max_bytes, deadline=deadline, what="kubelet answer")
