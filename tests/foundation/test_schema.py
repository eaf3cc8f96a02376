"""The frame contract rejects broken frames and names the column and row."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from collector.contract.schema import CAPACITY, CONSUMERS, SchemaError, concat, validate_frame

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def capacity_rows(**override):
    row = dict(
        timestamp=NOW,
        source="kvm-a",
        layer="hypervisor",
        cloud="c",
        pool="az1",
        host="h1",
        scope="host",
        resource="cpu",
        capacity=32.0,
        reserved=0.0,
        allocation_ratio=1.0,
        allocatable=32.0,
        allocated=8.0,
        used=np.nan,
    )
    row.update(override)
    return [row, {**row, "resource": "memory", "capacity": 2.0**37, "allocatable": 2.0**37, "allocated": 2.0**33}]


def test_build_coerces_and_fills_nullable_columns():
    frame = CAPACITY.build(capacity_rows())
    assert list(frame.columns) == CAPACITY.column_names
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["host"].dtype) == "string"
    assert frame["max_unit"].isna().all()
    assert np.isnan(frame.loc[0, "used"])  # unknown stays unknown


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"layer": "mainframe"}, "capacity.layer row 0: 'mainframe' is not one of"),
        ({"capacity": -1.0, "allocatable": 0.0}, "capacity.capacity row 0: negative value"),
        ({"allocatable": 31.0}, "capacity.allocatable row 0: is not (capacity - reserved) x allocation_ratio"),
        ({"resource": "CPU"}, "capacity.resource row 0: 'CPU' does not match"),
        ({"used": np.inf}, "capacity.used row 0: infinite value"),
        ({"host": None}, "capacity.host row 0: null in a required column"),
    ],
)
def test_broken_rows_are_named(override, message):
    with pytest.raises(SchemaError) as caught:
        CAPACITY.build(capacity_rows(**override))
    assert str(caught.value).startswith(message)


def test_wrong_dtype_and_missing_and_extra_columns():
    frame = CAPACITY.build(capacity_rows())
    with pytest.raises(SchemaError, match=r"capacity.capacity: dtype object, expected float64"):
        validate_frame("capacity", frame.astype({"capacity": object}))
    with pytest.raises(SchemaError, match=r"capacity.used: required column is missing"):
        validate_frame("capacity", frame.drop(columns=["used"]))
    with pytest.raises(SchemaError, match=r"capacity.colour: column not in the contract"):
        validate_frame("capacity", frame.assign(colour="red"))


def test_duplicate_keys_are_rejected():
    rows = capacity_rows()
    with pytest.raises(SchemaError, match=r"capacity.source,host,resource row 2: duplicate key"):
        CAPACITY.build([*rows, rows[0]])


def test_unparseable_number_names_the_row():
    rows = capacity_rows()
    rows[1]["capacity"] = "lots"
    with pytest.raises(SchemaError, match=r"capacity.capacity row 1: cannot be read as float64"):
        CAPACITY.build(rows)


def test_concat_keeps_contract_dtypes_and_fills_absent_frames():
    a = CAPACITY.build(capacity_rows())
    b = CAPACITY.build(capacity_rows(source="kvm-b", host="h2"))
    merged = concat([{"capacity": a}, {"capacity": b}])
    validate_frame("capacity", merged["capacity"])
    assert len(merged["capacity"]) == 4
    assert merged["consumers"].empty and list(merged["consumers"].columns) == CONSUMERS.column_names


def test_consumers_resources_dict_survives():
    frame = CONSUMERS.build(
        [
            dict(
                timestamp=NOW,
                source="os",
                layer="openstack",
                cloud="c",
                pool="az1",
                host="h1",
                id="u1",
                name="vm",
                state="active",
                holds_capacity=True,
                project="p",
                flavor="m1.small",
                cpu=1,
                memory=2.0**31,
                disk=2.0**34,
                resources={"vcpu": 1, "memory": 2.0**31},
            )
        ]
    )
    assert frame.loc[0, "resources"] == {"vcpu": 1, "memory": 2.0**31}
    assert pd.isna(frame.loc[0, "cpu_used"])
