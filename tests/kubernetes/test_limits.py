"""Bounded source I/O (issue 12, "sources are read without limits"): size caps and the per-poll deadline.

Each fault is injected in the stand-in API server's transport (`Fault`: oversize, drip, truncated), for the
lists (the poll fails with a precise `reason`) and for single kubelets (that node's usage is skipped).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.app.scheduler import SourceRunner
from collector.demo.standins.kubernetes import FakeKubelet, Fault, StandinApiServer, make_node, make_pod
from collector.estate import Estate
from collector.sources.base import SourceError
from collector.sources.kubernetes import SOURCE
from collector.sources.kubernetes.settings import KubernetesSourceConfig

MIB = 2**20


def cluster(server: StandinApiServer, nodes: int = 3, **kubelets: FakeKubelet) -> None:
    server.set_nodes([make_node(f"n{i}", address="127.0.0.1") for i in range(nodes)], kubelets)
    server.set_pods(
        [
            make_pod("apps", f"web-{i}-{j}", node=f"n{i}", owner=("StatefulSet", "web"))
            for i in range(nodes)
            for j in range(3)
        ]
    )


def source(server: StandinApiServer, tmp_path: Path, **config: Any) -> Any:
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig", context="ctx")
    return SOURCE(KubernetesSourceConfig(kind="kubernetes", name="k8s", kubeconfig=kubeconfig, **config))


def failed_poll(src: Any) -> tuple[SourceError, float]:
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        src.poll(datetime.now(UTC))
    return caught.value, time.monotonic() - started


def test_defaults_are_documented_values() -> None:
    config = KubernetesSourceConfig(kind="kubernetes", name="k8s", interval="60s")
    assert config.max_response_bytes == 256 * MIB
    assert config.kubelet.max_response_bytes == 16 * MIB
    assert config.poll_deadline is None and config.effective_poll_deadline == timedelta(seconds=48)  # = timeout
    assert KubernetesSourceConfig(kind="kubernetes", name="k8s", timeout="5m").effective_poll_deadline == timedelta(
        minutes=5
    )


@pytest.mark.parametrize("kind", ["oversize", "oversize_unannounced"])
def test_an_oversize_list_page_is_refused_as_too_large(standin: StandinApiServer, tmp_path: Path, kind: str) -> None:
    cluster(standin)
    standin.list_fault = fault = Fault(kind, size=40 * MIB)
    src = source(standin, tmp_path, max_response_bytes=4 * MIB, kubelet={"mode": "off"})
    error, _elapsed = failed_poll(src)
    assert error.reason == "too_large"
    assert "4 MiB" in str(error) and "node list page 1" in str(error)
    # the client stopped at the cap: the server could write 4 MiB plus what the sockets buffer, not 40 MiB
    time.sleep(0.5)
    assert fault.sent < 16 * MIB
    standin.list_fault = None
    assert len(src.poll(datetime.now(UTC)).frames["consumers"]) == 9  # the connection pool is still usable


def test_a_truncated_list_page_is_malformed(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    standin.list_fault = Fault("truncated")
    error, _ = failed_poll(source(standin, tmp_path, kubelet={"mode": "off"}))
    assert error.reason == "malformed"
    assert "ended early" in str(error)


def test_a_dripping_list_is_cut_off_at_the_poll_deadline(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    standin.list_fault = Fault("drip", interval=0.02)  # ~2 KB page: over a minute at this pace
    src = source(standin, tmp_path, poll_deadline="1500ms", kubelet={"mode": "off"})
    error, elapsed = failed_poll(src)
    assert error.reason == "timeout"
    assert "deadline" in str(error)
    assert 1.4 <= elapsed < 4.0


@pytest.mark.parametrize(
    ("fault", "skipped"),
    [
        (Fault("oversize", size=2 * MIB), "kubelet_too_large"),
        (Fault("oversize_unannounced", size=2 * MIB), "kubelet_too_large"),
        (Fault("truncated"), "kubelet_malformed"),
        (Fault("drip", interval=0.02), "kubelet_deadline"),
    ],
)
def test_a_faulty_kubelet_loses_its_usage_only(
    standin: StandinApiServer, tmp_path: Path, fault: Fault, skipped: str
) -> None:
    cluster(standin, n1=FakeKubelet("n1", fault=fault))
    src = source(standin, tmp_path, poll_deadline="2s", kubelet={"max_response_bytes": MIB})
    started = time.monotonic()
    result = src.poll(datetime.now(UTC))
    assert time.monotonic() - started < 4.0
    assert result.skipped == {skipped: 1}
    consumers = result.frames["consumers"].set_index("host")
    assert consumers.loc["n0", "memory_used"].notna().all() and consumers.loc["n2", "memory_used"].notna().all()
    assert consumers.loc["n1", "memory_used"].isna().all()


def test_reasons_reach_the_source_error_counter(standin: StandinApiServer, tmp_path: Path) -> None:
    """What `capacityd_source_errors_total{reason}` counts: the scheduler's runner records the source's reason."""
    cluster(standin)
    estate = Estate()
    src = source(standin, tmp_path, max_response_bytes=MIB, poll_deadline="1s", kubelet={"mode": "off"})
    estate.add_source(src.name, "kubernetes", timedelta(seconds=60))
    runner = SourceRunner(src, estate, timeout=10.0)
    for fault in (Fault("oversize", size=8 * MIB), Fault("truncated"), Fault("drip", interval=0.05)):
        standin.list_fault = fault
        assert runner.run() is False
    standin.list_fault = None
    assert runner.run() is True
    status = next(s for s in estate.snapshot().statuses if s.name == src.name)
    assert dict(status.errors_total) == {"too_large": 1, "malformed": 1, "timeout": 1}
    runner.close()
