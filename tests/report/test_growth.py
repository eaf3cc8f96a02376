"""Top growers compare like with like (issue 11 item 4): each source against its own samples.

Sources poll at their own seconds, so the history's consumer counts never share one timestamp across
sources. Real History, consumer polls written through `History.append` as the daemon does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from collector.analyses.report import current_figures, history_figures, specs_of
from collector.analyses.report.growth import growth
from collector.contract.schema import CONSUMERS
from collector.estate import Snapshot
from collector.store.history import History
from collector.store.settings import HistoryConfig
from exporters.report.content import BuildInputs, build_content
from exporters.report.settings import ReportConfig

NOW = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
GIB = 1024.0**3


def consumers(
    source: str, layer: str, cloud: str, project: str, count: int, when: datetime, flavor: str = "m1.small"
) -> pd.DataFrame:
    return CONSUMERS.build(
        [
            {
                "timestamp": when,
                "source": source,
                "layer": layer,
                "cloud": cloud,
                "pool": "p1",
                "host": "h1",
                "id": f"{source}-{i}",
                "name": f"{project}-{i}",
                "state": "running",
                "holds_capacity": True,
                "project": project,
                "flavor": flavor,
                "cpu": 2.0,
                "memory": 4 * GIB,
            }
            for i in range(count)
        ]
    )


def fill(history: History) -> None:
    """alpha grows 10 -> 13 on nova-a (polls at :07); beta stays at 20 pods on k8s-b (polls at :41);
    gamma's 66 VMs appear with a source first polled two days ago (nothing new: it was just not seen);
    delta's source polled once (no growth to measure)."""
    for hours in range(8 * 24, -1, -6):
        base = NOW - timedelta(hours=hours)
        alpha = 13 if hours <= 24 else 10
        history.append(
            "nova-a",
            {
                "consumers": consumers(
                    "nova-a", "openstack", "cloud-a", "alpha", alpha, base - timedelta(minutes=3, seconds=53)
                )
            },
            base - timedelta(minutes=3, seconds=53),
        )
        history.append(
            "k8s-b",
            {
                "consumers": consumers(
                    "k8s-b",
                    "kubernetes",
                    "k8s-1",
                    "beta",
                    20,
                    base - timedelta(minutes=2, seconds=19),
                    "deployment/web",
                )
            },
            base - timedelta(minutes=2, seconds=19),
        )
        if hours <= 48:
            history.append(
                "nova-late",
                {
                    "consumers": consumers(
                        "nova-late", "openstack", "cloud-b", "gamma", 66, base - timedelta(seconds=11)
                    )
                },
                base - timedelta(seconds=11),
            )
    history.append(
        "nova-once",
        {"consumers": consumers("nova-once", "openstack", "cloud-c", "delta", 5, NOW - timedelta(hours=2, seconds=29))},
        NOW - timedelta(hours=2, seconds=29),
    )
    history.flush()


def test_growth_compares_each_source_with_itself(tmp_path):
    history = History.open(tmp_path / "state", HistoryConfig())
    try:
        fill(history)
        counts = history.consumer_counts(start=NOW - timedelta(days=7, hours=1), end=NOW)
        current = pd.concat(
            [
                consumers("nova-a", "openstack", "cloud-a", "alpha", 13, NOW),
                consumers("k8s-b", "kubernetes", "k8s-1", "beta", 20, NOW, "deployment/web"),
            ]
        )
        frame = growth(counts, current, NOW).set_index("project")
        assert set(frame.index) == {"alpha", "beta", "gamma"}  # delta: one sample, nothing to compare
        assert frame.loc["alpha", "delta_count"] == 3 and frame.loc["alpha", "count_now"] == 13
        assert frame.loc["alpha", "delta_cpu"] == 6.0 and frame.loc["alpha", "delta_memory"] == 12 * GIB
        assert frame.loc["beta", "delta_count"] == 0 and frame.loc["beta", "count_now"] == 20
        assert frame.loc["gamma", "delta_count"] == 0 and frame.loc["gamma", "count_start"] == 66
        # alpha is measured from nova-a's own sample nearest to a week ago, not from another source's second.
        assert abs(frame.loc["alpha", "start"] - pd.Timestamp(NOW - timedelta(days=7))) <= pd.Timedelta(hours=3)

        # The report shows exactly that: one grower, alpha +3, with its layer.
        frames = {"consumers": CONSUMERS.build(current.to_dict("records"))}
        specs = specs_of([])
        frames.update(current_figures(frames, history, NOW, specs))
        frames.update(history_figures(frames, history, NOW, specs, None))
        snapshot = Snapshot(taken_at=NOW, frames=frames, statuses=())
        content = build_content(
            ReportConfig(name="growth", recipients=["a@example.org"]),
            BuildInputs(frames=snapshot.frames, now=NOW, history=history),
        )
        assert [(g.layer, g.project, g.count_now, g.delta_count) for g in content.growers] == [
            ("openstack", "alpha", 13.0, 3.0)
        ]
    finally:
        history.close()


def test_no_growth_without_two_samples(tmp_path):
    history = History.open(tmp_path / "state", HistoryConfig())
    try:
        history.append("nova-a", {"consumers": consumers("nova-a", "openstack", "cloud-a", "alpha", 4, NOW)}, NOW)
        history.flush()
        counts = history.consumer_counts(start=NOW - timedelta(days=7, hours=1), end=NOW + timedelta(seconds=1))
        assert growth(counts, None, NOW + timedelta(seconds=1)).empty
    finally:
        history.close()


# -- properties -----------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SOURCE = st.fixed_dictionaries(
    {
        "offset": st.integers(0, 3599),  # the second of the hour this source polls at
        "interval": st.sampled_from([600, 1800, 3600, 3 * 3600]),
        "first_day": st.integers(0, 10),  # days before NOW its history starts (a new source: small)
        "projects": st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 40), min_size=1),
        "added": st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(1, 9), max_size=3),
    }
)


def counts_frame(sources: list[dict[str, object]]) -> tuple[pd.DataFrame, dict[str, float]]:
    """consumer_counts rows of sources polling at their own seconds; each source's `added` consumers are
    created at a random-looking but fixed moment inside its window. Returns the rows and the true growth
    per project of the sources that have two samples in the window."""
    rows, truth = [], {}
    window_start = NOW - timedelta(days=7)
    for index, spec in enumerate(sources):
        name = f"src-{index}"
        start = max(NOW - timedelta(days=int(spec["first_day"])), window_start - timedelta(hours=1))  # type: ignore[call-overload]
        stamps = []
        t = start.replace(minute=0, second=0) + timedelta(seconds=int(spec["offset"]))  # type: ignore[call-overload]
        while t <= NOW:
            if t >= start:
                stamps.append(t)
            t += timedelta(seconds=int(spec["interval"]))  # type: ignore[call-overload]
        if not stamps:
            continue
        middle = stamps[len(stamps) // 2]
        sampled = []  # a poll that found no consumer leaves no row: history cannot know it happened
        for when in stamps:
            projects = dict(spec["projects"])  # type: ignore[call-overload]
            if when > middle:
                for project, count in spec["added"].items():  # type: ignore[attr-defined]
                    projects[project] = projects.get(project, 0) + count
            for project, count in projects.items():
                if count:
                    rows.append(
                        {
                            "timestamp": pd.Timestamp(when),
                            "source": name,
                            "layer": "openstack",
                            "cloud": "c",
                            "pool": "p",
                            "project": project,
                            "flavor": "m1",
                            "state": "active",
                            "count": count,
                        }
                    )
            if any(projects.values()):
                sampled.append(when)
        in_window = [s for s in sampled if s >= window_start - timedelta(hours=1)]
        if len(in_window) >= 2 and in_window[-1] > middle >= in_window[0]:
            for project, count in spec["added"].items():  # type: ignore[attr-defined]
                truth[project] = truth.get(project, 0.0) + count
    frame = pd.DataFrame(
        rows, columns=["timestamp", "source", "layer", "cloud", "pool", "project", "flavor", "state", "count"]
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame, truth


@settings(max_examples=60, deadline=None)
@given(st.lists(SOURCE, min_size=1, max_size=4))
def test_growth_is_exactly_what_was_added_whatever_the_poll_seconds(sources):
    """Consumers that existed all along never count; consumers added in the window count once, per project."""
    counts, truth = counts_frame(sources)
    frame = growth(counts, None, NOW)
    measured = {str(r.project): float(r.delta_count) for r in frame.itertuples(index=False)}
    assert {p: v for p, v in measured.items() if v} == {p: v for p, v in truth.items() if v}
    assert (frame["count_now"] - frame["count_start"] == frame["delta_count"]).all()
