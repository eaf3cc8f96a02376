"""Properties of discovery under churn (hypothesis), on real libvirt test-driver targets and a real History.

* discovery never yields two targets with the same identity, whatever the inventory repeats;
* target churn (targets added, removed, relabelled, disabled between polls) never loses another
  target's history: every target present at a poll has its rows stored for that poll, and removed
  targets' earlier rows stay.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.app.config import parse_config
from collector.sources.discovery.fleet import TargetFleet
from collector.sources.discovery.targets import Target, unique
from collector.store.history import History
from collector.store.settings import HistoryConfig
from tests.discovery.conftest import write_node

HOSTS = [f"kvm-{i:02d}" for i in range(6)]

inventories = st.lists(
    st.lists(st.tuples(st.sampled_from(HOSTS), st.sampled_from(["az1", "az2"]), st.booleans()), max_size=8),
    min_size=1,
    max_size=5,
)


@given(st.lists(st.tuples(st.sampled_from(HOSTS), st.text(min_size=1, max_size=3)), max_size=20))
def test_unique_never_yields_two_targets_with_one_identity(pairs: list[tuple[str, str]]) -> None:
    targets = [Target(identity=h, uri=f"test:///{u}", pool="p") for h, u in pairs]
    kept, duplicates = unique(targets)
    identities = [t.identity for t in kept]
    assert len(identities) == len(set(identities))
    assert set(identities) == {h for h, _ in pairs}
    assert len(kept) + len(duplicates) == len(pairs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories)
def test_churn_never_loses_another_targets_history(steps: list[list[tuple[str, str, bool]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nodes = work / "nodes"
        nodes.mkdir()
        for host in HOSTS:
            write_node(nodes, host)
        sd = work / "sd.json"
        config = parse_config(
            {
                "sources": [
                    {
                        "kind": "libvirt",
                        "name": "fleet",
                        "discover": {"file_sd": [str(sd)], "uri": f"test://{nodes}/{{target}}.xml"},
                    }
                ]
            }
        )
        fleet = config.sources[0].create_source()
        assert isinstance(fleet, TargetFleet)
        history = History.open(work / "state", HistoryConfig())
        start = datetime(2026, 1, 1, tzinfo=UTC)
        present_at: list[tuple[datetime, set[str]]] = []
        try:
            for index, inventory in enumerate(steps):
                groups = [{"targets": [h], "labels": {"pool": p, "disabled": str(d).lower()}} for h, p, d in inventory]
                sd.write_text(json.dumps(groups))
                when = start + timedelta(minutes=index)
                result = fleet.checked_poll(when)
                table = result.frames["targets"]
                assert not table["target"].duplicated().any()
                expected = {h for h, _, _ in inventory}
                assert set(table[table["state"] != "gone"]["target"]) == expected
                assert set(result.frames["hosts"]["host"]) == expected
                assert history.append("fleet", result.frames, when)
                present_at.append((when, expected))
            stored = history.host_series(resource="cpu")
            for when, hosts in present_at:
                at = stored[stored["timestamp"] == when]
                assert set(at["host"]) == hosts, f"history at {when} lost a target"
        finally:
            fleet.close()
            history.close()
