"""The hand-written remote-write encoder against the reference protobuf runtime (property-tested)."""

from __future__ import annotations

from datetime import UTC, datetime

import cramjam
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.store.remote.samples import SeriesEncoder
from collector.store.remote.wire import encode_labels, encode_request, encode_series, sort_labels
from tests.history.frames import capacity_frame
from tests.remote.prompb import CLASSES, decode

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
label_values = st.text(min_size=1, max_size=40)
samples = st.lists(
    st.tuples(st.integers(min_value=-(2**63), max_value=2**63 - 1),
              st.floats(allow_nan=False, width=64)), min_size=0, max_size=5)  # fmt: skip
series = st.lists(st.tuples(st.dictionaries(label_names, label_values, min_size=1, max_size=6), samples),
                  min_size=0, max_size=6)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(series)
def test_encoder_bytes_equal_the_reference_protobuf(data: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> None:
    ours = [encode_series(encode_labels(sort_labels(labels)), points) for labels, points in data]
    reference = CLASSES["WriteRequest"]()
    for labels, points in data:
        ts = reference.timeseries.add()
        for name, value in sorted(labels.items()):
            ts.labels.add(name=name, value=value)
        for stamp, value in points:
            ts.samples.add(timestamp=stamp, value=value)
    assert b"".join(ours) == reference.SerializeToString(deterministic=True)
    body = encode_request(ours)
    assert [(labels, points) for labels, points in decode(body)] == [
        (dict(sorted(labels.items())), points) for labels, points in data
    ]


def test_raw_snappy_block_not_framed() -> None:
    body = encode_request([encode_series(encode_labels((("__name__", "x"),)), [(1, 1.0)])])
    assert not body.startswith(b"\xff\x06\x00\x00sNaPpY")  # the framed format's stream identifier
    assert bytes(cramjam.snappy.decompress_raw(body))


def test_capacity_frame_becomes_metrics_md_series() -> None:
    when = datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)
    frame = capacity_frame(when, pools=("az1",), hosts_per_pool=2, resources=("cpu",))
    frame.loc[1, "used"] = np.nan
    parts, count = SeriesEncoder().encode("kvm", frame, when)
    decoded = decode(encode_request(parts))
    assert count == len(decoded) == 2 * 5 - 1  # used unknown on one host: absent, never 0
    names = {labels["__name__"] for labels, _ in decoded}
    assert names == {"capacity_resource_capacity", "capacity_resource_reserved", "capacity_resource_allocatable",
                     "capacity_resource_allocated", "capacity_resource_used"}  # fmt: skip
    labels, points = decoded[0]
    assert labels == {
        "__name__": "capacity_resource_capacity",
        "source": "kvm",
        "layer": "hypervisor",
        "cloud": "c1",
        "pool": "az1",
        "host": "haz1-0000",
        "scope": "host",
        "resource": "cpu",
    }
    assert points == [(int(when.timestamp() * 1000), 64.0)]
    assert list(labels) == sorted(labels)  # the spec: label names sorted


@pytest.mark.parametrize("value", [0.0, -1.5, float("inf"), 1e300])
def test_special_values_round_trip(value: float) -> None:
    body = encode_request([encode_series(encode_labels((("__name__", "x"),)), [(-5, value)])])
    assert decode(body) == [({"__name__": "x"}, [(-5, value)])]


def test_series_encoder_equals_the_generic_encoder_including_zeros() -> None:
    """The fast per-poll path (cached rows, timestamp encoded once) builds the same bytes as encode_series."""
    when = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    frame = capacity_frame(when, pools=("az1", "az2"), hosts_per_pool=3, resources=("cpu", "memory"),
                           allocated=np.array([0.0, -0.0, 0.5, 1.0, 0.25, 0.0] * 2), used=np.nan)  # fmt: skip
    encoder = SeriesEncoder()
    for _ in range(2):  # cold, then cached
        parts, count = encoder.encode("kvm", frame, when)
        expected = []
        for column in ("capacity", "reserved", "allocatable", "allocated"):
            for _, row in frame.iterrows():
                labels = {"__name__": f"capacity_resource_{column}", "source": "kvm",
                          **{c: row[c] for c in ("layer", "cloud", "pool", "host", "scope", "resource")}}  # fmt: skip
                stamp = int(when.timestamp() * 1000)
                expected.append(encode_series(encode_labels(sort_labels(labels)), [(stamp, float(row[column]))]))
        assert parts == expected and count == 4 * 12
