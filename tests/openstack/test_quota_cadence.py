"""Quotas without a call per project per poll: limits are cached and re-read about once per `quotas_interval`
(spread per project), usage is counted from the servers every poll — and equals what Nova reports."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from collector.demo.standins.openstack import StandinServer, synthetic_cloud
from tests.openstack.conftest import make_source


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def quota_calls(server: StandinServer, since: int) -> int:
    return sum(1 for _, path in server.requests[since:] if "/os-quota-sets/" in path)


def test_a_steady_poll_reads_no_quota_until_the_interval_and_usage_stays_exact(tmp_path: Path) -> None:
    cloud = synthetic_cloud(hosts=30, projects=200, servers_per_host=10)
    server = StandinServer(cloud).start()
    try:
        clouds_yaml = server.write_clouds_yaml(tmp_path / "clouds.yaml", "big")
        source = make_source(clouds_yaml, "big", quotas_interval="1h")
        clock = FakeClock()
        source.nova.clock = clock

        first = len(server.requests)
        cold = source.checked_poll(_now())
        projects = {s.project for s in cloud.visible_servers()}
        assert quota_calls(server, first) == len(projects)

        steady_start = len(server.requests)
        clock.now += 60
        steady = source.checked_poll(_now())
        assert quota_calls(server, steady_start) == 0  # limits cached: a steady poll no longer grows with projects

        # usage is counted every poll and equals what Nova's quota API reports for the project
        quotas = steady.frames["openstack_quotas"].set_index(["project", "resource"])
        flavors = cloud.flavors
        for project in sorted(projects)[:20]:
            mine = [s for s in cloud.visible_servers() if s.project == project]
            assert quotas.loc[(project, "instances"), "in_use"] == len(mine)
            assert quotas.loc[(project, "cpu"), "in_use"] == sum(flavors[s.flavor].vcpus for s in mine)
            assert quotas.loc[(project, "memory"), "in_use"] == sum(flavors[s.flavor].ram for s in mine) * 2**20
            assert quotas.loc[(project, "cpu"), "limit"] == cloud.quota_limits["cores"]
        assert cold.frames["openstack_quotas"].shape == steady.frames["openstack_quotas"].shape

        # a changed limit is picked up within 1.25 intervals, and re-reads are spread over the polls
        cloud.quota_limits = {**cloud.quota_limits, "cores": 999}
        per_poll: Counter[int] = Counter()
        for step in range(1, 31):
            before = len(server.requests)
            clock.now += 150  # 30 polls x 150 s = 75 min
            source.checked_poll(_now())
            per_poll[step] = quota_calls(server, before)
        assert sum(per_poll.values()) == len(projects)  # each project re-read exactly once in 1.25 h
        assert max(per_poll.values()) < len(projects) / 3  # not all in the same poll
        last = source.checked_poll(_now()).frames["openstack_quotas"]
        assert set(last.loc[last["resource"] == "cpu", "limit"]) == {999.0}
    finally:
        server.stop()


def _now() -> datetime:
    """A poll's wall label; the quota cadence runs on the injected monotonic clock."""
    return datetime.now(UTC)
