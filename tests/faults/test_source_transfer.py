"""OpenStack answers spoilt on the wire, against the real daemon (issue 12 item 6): an answer larger than
`max_response_size`, one dripped a byte at a time, and one cut off before its end. Each fails the poll with
its own reason (`too_large`, `timeout` at the poll deadline, `malformed`), never `internal_error`, and the
daemon goes on and resumes collection once the cloud answers normally again."""

from __future__ import annotations

import time

import pytest

from collector.demo.model import CLOUD, REGION
from tests.faults.conftest import Estate
from tests.faults.harness import NODE5, Daemon, libvirt_source, openstack_source, parse_samples, wait_for
from tests.faults.test_sources import check_survived, errors, started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MIB = 1 << 20


def bounded_sources(estate: Estate) -> list[str]:
    return [
        libvirt_source("node5", f"test://{NODE5}", "2s"),
        openstack_source(CLOUD, estate.clouds_yaml, CLOUD, "3s", region=REGION, timeout="5s", max_response_size="4Mi"),
    ]


@pytest.mark.parametrize(
    ("transfer", "reason", "options"),
    [
        ("oversize", "too_large", {"size": 32 * MIB}),
        ("oversize", "too_large", {"size": 32 * MIB, "chunked": True}),
        ("drip", "timeout", {"interval": 0.2}),
        ("truncated", "malformed", {}),
    ],
    ids=["oversize", "oversize-chunked", "drip", "truncated"],
)
def test_a_spoilt_answer_is_named_bounded_and_survived(
    daemon: Daemon, estate: Estate, transfer: str, reason: str, options: dict
) -> None:
    estate.write_config(sources=bounded_sources(estate))
    started(daemon)
    before = errors(daemon, reason)
    fault_start = time.time()
    fault = estate.openstack.inject_transfer("compute", r"/servers/detail", transfer, times=2, **options)
    wait_for(lambda: errors(daemon, reason) >= before + 2, 60, f"two failed polls counted as {reason}")
    by_reason = {
        labels["reason"]: value
        for name, labels, value in parse_samples(daemon.scrape())
        if name == "capacityd_source_errors_total" and labels.get("source") == CLOUD
    }
    assert by_reason.get("internal_error", 0) == 0, by_reason
    assert daemon.metric("capacityd_source_up", source="node5") == 1
    assert fault.times == 0
    check_survived(daemon, estate, fault_start, time.time())
