"""The column-wise renderer writes exactly what prometheus_client's `generate_latest` writes."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporters.prometheus.exposition import RENDER_CHUNK_ROWS, add_frame_samples, render_families

LABEL_VALUES = st.one_of(
    st.none(),
    st.just(np.nan),
    st.sampled_from(["", "a", 'q"uote', "back\\slash", "new\nline", "é", "h1"]),
    st.text(max_size=6),
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 64.0, 2.0**38, 1e21, 0.1]),
)


class _Families(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.families


def build(frame: pd.DataFrame) -> list[Metric]:
    """The families a builder makes from one frame: shared label columns, a counter, a label-less gauge."""
    gauge = GaugeMetricFamily("t_free", 'Help with "quotes" \\ and\nnewline.', labels=["pool", "host"])
    add_frame_samples(gauge, frame, ["pool", "host"], "value")
    other = GaugeMetricFamily("t_other", "Same labels, other column.", labels=["pool", "host"])
    other.add_metric(["first", "added"], 1.0)  # a plain sample before the block stays first
    add_frame_samples(other, frame, ["pool", "host"], "other")
    renamed = GaugeMetricFamily("t_renamed", "Label names differ from column names.", labels=["zone", "a"])
    add_frame_samples(renamed, frame, ["pool", "host"], "value")
    counter = CounterMetricFamily("t_things", "A counter.", labels=["host"])
    add_frame_samples(counter, frame, ["host"], "other")
    bare = GaugeMetricFamily("t_bare", "No labels.")
    add_frame_samples(bare, frame, [], "value")
    return [gauge, other, renamed, counter, bare]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(LABEL_VALUES, LABEL_VALUES, VALUES, VALUES), max_size=40))
def test_byte_for_byte_what_generate_latest_writes(rows: list[tuple]) -> None:
    frame = (
        pd.DataFrame(rows, columns=["pool", "host", "value", "other"])
        if rows
        else pd.DataFrame({"pool": [], "host": [], "value": [], "other": []})
    )
    fast = render_families(build(frame))
    reference = generate_latest(_Families(build(frame)))  # iterating `samples` turns blocks into Samples
    assert fast == reference


def test_more_rows_than_a_chunk_with_a_string_dtype_frame() -> None:
    rows = 2 * RENDER_CHUNK_ROWS + 17
    frame = pd.DataFrame(
        {
            "pool": pd.array([f"az{i % 3}" if i % 11 else None for i in range(rows)], dtype="string"),
            "host": pd.array([f"h{i // 4}" for i in range(rows)], dtype="string"),
            "value": np.where(np.arange(rows) % 7 == 0, np.nan, np.arange(rows) * 1.5),
            "other": np.full(rows, math.inf),
        }
    )
    fast = render_families(build(frame))
    assert fast == generate_latest(_Families(build(frame)))
    assert fast.count(b"\nt_free{") == rows - len(range(0, rows, 7))
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = subprocess.run([promtool, "check", "metrics"], input=fast, capture_output=True, check=False)
        assert check.returncode == 0, check.stderr


def test_samples_read_as_if_added_one_by_one() -> None:
    frame = pd.DataFrame({"pool": ["a", None], "host": ["x", "y"], "value": [1.0, 2.0], "other": [0.0, 0.0]})
    lazy = GaugeMetricFamily("t", "t", labels=["pool", "host"])
    add_frame_samples(lazy, frame, ["pool", "host"], "value")
    eager = GaugeMetricFamily("t", "t", labels=["pool", "host"])
    eager.add_metric(["a", "x"], 1.0)
    eager.add_metric(["", "y"], 2.0)
    assert len(lazy.samples) == 2 and lazy.samples == eager.samples and lazy == eager
    lazy.add_metric(["b", "z"], 3.0)  # appending after a block keeps the block's rows first
    assert [s.labels["host"] for s in lazy.samples] == ["x", "y", "z"]
    empty = GaugeMetricFamily("t", "t", labels=["pool", "host"])
    add_frame_samples(empty, frame.iloc[:0], ["pool", "host"], "value")
    assert empty.samples == []
