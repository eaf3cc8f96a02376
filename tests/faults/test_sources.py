"""Faults in the systems capacityd polls, injected while the real daemon runs: a cloud that answers 5xx, garbage, hangs
or goes away. Each must be survived, shown by the right metric, lose nothing and end with collection resumed."""

from __future__ import annotations

import time

import pytest

from collector.demo.model import CLOUD
from tests.faults.conftest import Estate
from tests.faults.harness import Daemon, integrity_problems, longest_gap, parse_samples, poll_times, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OPENSTACK_INTERVAL = 3.0


def errors(daemon: Daemon, reason: str | None = None) -> float:
    """capacityd_source_errors_total of the cloud, for one reason or summed."""
    total = 0.0
    for name, labels, value in parse_samples(daemon.scrape()):
        wanted = reason is None or labels.get("reason") == reason
        if name == "capacityd_source_errors_total" and labels.get("source") == CLOUD and wanted:
            total += value
    return total


def check_survived(daemon: Daemon, estate: Estate, fault_start: float, fault_end: float) -> None:
    """The common assertions: alive, /metrics answers, the cloud and the hypervisors are fresh again, history is
    intact, and no stored gap is longer than the fault plus one interval (and a little scheduling slack)."""
    assert daemon.alive(), daemon.log()[-3000:]
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=30, source=CLOUD)
    daemon.wait_metric("capacityd_source_stale", lambda v: v == 0, timeout=30, source=CLOUD)
    assert daemon.metric("capacityd_source_up", source="node5") == 1
    resumed = time.time()
    wait_for(
        lambda: [t for t in poll_times(estate.state_dir, CLOUD) if t >= resumed - 1],
        30,
        "a stored poll after the fault",
    )
    gap = longest_gap(poll_times(estate.state_dir, CLOUD), fault_start - OPENSTACK_INTERVAL, time.time())
    allowed = (fault_end - fault_start) + 2 * OPENSTACK_INTERVAL + 3.0
    assert gap <= allowed, f"history gap of {gap:.1f} s around a {fault_end - fault_start:.1f} s fault"
    node_gap = longest_gap(poll_times(estate.state_dir, "node5"), fault_start, time.time())
    assert node_gap <= 2 * 2.0 + 3.0, f"the hypervisors stopped being stored during the cloud's fault ({node_gap} s)"
    assert not integrity_problems(estate.state_dir)


def started(daemon: Daemon) -> Daemon:
    daemon.start()
    daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=60, source=CLOUD)
    wait_for(lambda: poll_times(daemon.config_path.parent / "state", CLOUD), 30, "a first stored poll")
    return daemon


def test_a_cloud_answering_5xx_is_retried_counted_and_recovers(daemon: Daemon, estate: Estate) -> None:
    started(daemon)
    before = errors(daemon, "server_error")
    fault_start = time.time()
    estate.openstack.inject("placement", r"/resource_providers", status=503, times=40)
    daemon.wait_metric("capacityd_source_up", lambda v: v == 0, timeout=60, source=CLOUD)
    assert errors(daemon, "server_error") > before
    assert daemon.metric("capacityd_source_stale", source=CLOUD) == 1
    wait_for(lambda: not [f for f in estate.openstack.faults if f.times > 0], 90, "the injected 503s to be used up")
    check_survived(daemon, estate, fault_start, time.time())


def test_a_malformed_answer_is_named_and_loses_nothing(daemon: Daemon, estate: Estate) -> None:
    started(daemon)
    fault_start = time.time()
    estate.openstack.inject("compute", r"/servers/detail", status=200, times=3, body=b'{"servers": [{"id": ')
    wait_for(
        lambda: errors(daemon, "malformed_response") + errors(daemon, "malformed") >= 3,
        60,
        "the three malformed answers to be counted, each as a malformed answer",
    )
    by_reason = {
        labels["reason"]: value
        for name, labels, value in parse_samples(daemon.scrape())
        if name == "capacityd_source_errors_total" and labels.get("source") == CLOUD
    }
    assert "internal_error" not in by_reason, by_reason  # garbage is the cloud's fault, named as such
    check_survived(daemon, estate, fault_start, time.time())


def test_a_hanging_cloud_times_out_without_delaying_the_others(daemon: Daemon, estate: Estate) -> None:
    started(daemon)
    fault_start = time.time()
    estate.openstack.inject("compute", r"/os-hypervisors", status=200, times=2, delay=30.0)
    daemon.wait_metric("capacityd_source_stale", lambda v: v == 1, timeout=60, source=CLOUD)
    # meanwhile the hypervisors keep being polled and stored on their own schedule
    before = len(poll_times(estate.state_dir, "node5"))
    time.sleep(5)
    assert len(poll_times(estate.state_dir, "node5")) >= before + 2
    wait_for(lambda: not [f for f in estate.openstack.faults if f.times > 0], 120, "the hanging answers to be used")
    check_survived(daemon, estate, fault_start, time.time())


def test_a_cloud_that_goes_away_is_unreachable_then_resumes(daemon: Daemon, estate: Estate) -> None:
    started(daemon)
    fault_start = time.time()
    estate.openstack.stop()
    daemon.wait_metric("capacityd_source_up", lambda v: v == 0, timeout=60, source=CLOUD)
    assert errors(daemon, "unreachable") + errors(daemon, "timeout") >= 1
    time.sleep(2 * OPENSTACK_INTERVAL)
    assert daemon.metric("capacityd_source_up", source="node5") == 1
    estate.restart_openstack()
    fault_end = time.time()
    check_survived(daemon, estate, fault_start, fault_end)
