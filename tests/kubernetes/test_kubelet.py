"""Reading kubelet `/metrics/resource` (real captures) and turning CPU counters into rates."""

from __future__ import annotations

import threading
import time

import pytest

from collector.demo.standins.kubernetes import FakeKubelet, make_pod
from collector.sources.kubernetes.kubelet import (
    CpuRates,
    KubeletScraper,
    MetricsFormatError,
    ScrapeTarget,
    parse_resource_metrics,
)
from tests.kubernetes.conftest import TESTDATA


def test_v135_capture() -> None:
    usage = parse_resource_metrics((TESTDATA / "metrics_resource_v1.35.txt").read_text())
    assert usage.node_cpu == (62.148052, 1782468875.0)
    assert usage.node_memory == 9.17110784e08
    assert len(usage.pod_cpu) == len(usage.pod_memory) == 17
    assert usage.pod_cpu[("kube-system", "coredns-7d764666f9-qdcxt")] == (0.179435, 1782468876.0)
    assert usage.pod_memory[("scraper", "e2e-statefulset-1")] == 1.0674176e07


def test_v121_capture_old_format() -> None:
    # [ALPHA] help texts, scrape_error instead of resource_scrape_error, leading blank line
    usage = parse_resource_metrics((TESTDATA / "metrics_resource_v1.21.txt").read_text())
    assert usage.node_cpu == (357.35491, 1633253809.72)
    assert usage.pod_memory == {("kube-system", "coredns-558bd4d5db-4dpjz"): 1.2627968e07}


def test_samples_without_timestamps_and_escaped_labels() -> None:
    text = (
        "node_cpu_usage_seconds_total 10\nnode_memory_working_set_bytes 2e9\n"
        'pod_cpu_usage_seconds_total{namespace="a",pod="we\\"ird"} 1.5\n'
    )
    usage = parse_resource_metrics(text)
    assert usage.node_cpu == (10.0, None) and usage.pod_cpu == {("a", 'we"ird'): (1.5, None)}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html><body>502 Bad Gateway</body></html>",
        "node_cpu_usage_seconds_total 1 1000\n",  # no memory
        "node_cpu_usage_seconds_total{ 12.5\nnode_memory_working_set_bytes 1\n",
        "node_cpu_usage_seconds_total abc\nnode_memory_working_set_bytes 1\n",
        "node_cpu_usage_seconds_total -1\nnode_memory_working_set_bytes 1\n",
        "node_cpu_usage_seconds_total NaN\nnode_memory_working_set_bytes 1\n",
        'node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes 1\npod_cpu_usage_seconds_total{pod="x"} 1\n',
        "node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes 1\n"
        "pod_memory_working_set_bytes{namespace=x} 1\n",
    ],
)
def test_malformed_answers_are_rejected(text: str) -> None:
    with pytest.raises(MetricsFormatError):
        parse_resource_metrics(text)


def test_fake_kubelet_speaks_the_same_format() -> None:
    kubelet = FakeKubelet("n1")
    kubelet.set_pods([make_pod("a", "p1", node="n1"), make_pod("a", "done", node="n1", phase="Succeeded")])
    usage = parse_resource_metrics(kubelet.metrics(now=kubelet.boot + 100))
    assert set(usage.pod_cpu) == {("a", "p1")}  # finished pods have no cgroup any more
    cores = usage.pod_cpu[("a", "p1")][0] / 100
    assert 0.03 <= cores <= 0.09  # 30-90 % of its 100m request
    # same family order, help and type lines as the real capture
    real = [
        line
        for line in (TESTDATA / "metrics_resource_v1.35.txt").read_text().splitlines()
        if line.startswith("# TYPE") and "swap" not in line and "scrape_error" not in line
    ]
    fake = [line for line in kubelet.metrics().splitlines() if line.startswith("# TYPE") and "scrape" not in line]
    assert fake == real


def test_rates_between_polls_and_counter_resets() -> None:
    rates = CpuRates()
    assert rates.update([("n", 100.0, 1000.0)], now=1000.0) == {}  # first sight: no rate yet
    assert rates.update([("n", 130.0, 1030.0)], now=1030.0) == {"n": 1.0}
    # rebooted: the counter starts again; the increase is the new value (Prometheus rate semantics)
    assert rates.update([("n", 15.0, 1060.0)], now=1060.0) == {"n": 0.5}
    assert rates.resets == 1
    # the kubelet has not refreshed its sample: no rate rather than a division by zero
    assert rates.update([("n", 15.0, 1060.0)], now=1090.0) == {}


def test_a_missed_poll_keeps_the_baseline_for_a_while() -> None:
    rates = CpuRates(max_age=100)
    rates.update([("n", 0.0, 0.0)], now=0.0)
    assert rates.update([], now=30.0) == {}  # kubelet timed out this time
    assert rates.update([("n", 60.0, 60.0)], now=60.0) == {"n": 1.0}
    rates.update([], now=100.0)
    assert rates.update([("n", 300.0, 300.0)], now=300.0) == {}  # baseline too old: forgotten


def test_scraper_pool_is_bounded_and_fed_incrementally() -> None:
    """At most `concurrency` scrapes in flight, and a target is taken only when a worker is free."""
    text = (TESTDATA / "metrics_resource_v1.35.txt").read_bytes()
    lock = threading.Lock()
    state = {"pulled": 0, "done": 0, "active": 0, "max_active": 0, "max_ahead": 0}

    def targets():
        for i in range(200):
            with lock:
                state["pulled"] += 1
                state["max_ahead"] = max(state["max_ahead"], state["pulled"] - state["done"])
            yield ScrapeTarget(f"node-{i}", "127.0.0.1", None)

    def fetch(target: ScrapeTarget, timeout: float) -> bytes:
        with lock:
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
        time.sleep(0.002)
        with lock:
            state["active"] -= 1
            state["done"] += 1
        if target.node == "node-7":
            raise OSError("connection refused")
        return text

    result = KubeletScraper(fetch, concurrency=4, timeout=1.0, mode="proxy").scrape(targets())
    assert len(result.usage) == 199 and result.failures == {"kubelet_unreachable": 1}
    assert state["max_active"] <= 4
    assert state["max_ahead"] <= 4  # nothing queued beyond the workers (no 10,000 futures up front)
