"""Quantities are parsed exactly, in the grammar of apimachinery's resource.Quantity, or rejected."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.contract.quantity import NANO, QuantityError, parse_nanos, parse_quantity, resource_name


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("1Gi", 2**30),
        ("1e3", 1000),
        ("1E3", 1000),
        ("0.5", Fraction(1, 2)),
        ("129M", 129_000_000),
        ("1.5Ki", 1536),
        ("3800m", Fraction(19, 5)),
        ("8148280Ki", 8148280 * 1024),
        (".5", Fraction(1, 2)),
        ("1.", 1),
        ("+2", 2),
        ("5e-3", Fraction(1, 200)),
        ("1n", Fraction(1, 10**9)),
        ("250u", Fraction(1, 4000)),
        ("12k", 12_000),
        ("1E", 10**18),  # exa, not an exponent without digits
        ("2Ei", 2 * 2**60),
        ("0", 0),
        ("74747241721", 74747241721),
    ],
)
def test_valid_quantities_are_exact(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


def test_exactness_survives_sums() -> None:
    # 0.1 + 0.2 as floats is not 0.3; as quantities it is, and so are sums over many pods.
    assert parse_quantity("100m") + parse_quantity("200m") == parse_quantity("300m")
    assert sum(parse_quantity("1m") for _ in range(1000)) == 1


@pytest.mark.parametrize(
    "text",
    ["", "m", "1.2.3", "1 Gi", "1GB", "1gi", "1Mb", "--1", "1e", "1e1.5", "1Ki1", "0x10", "1e999", "abc", "∞", "NaN"],
)
def test_invalid_quantities_are_rejected_with_the_text(text: str) -> None:
    with pytest.raises(QuantityError) as error:
        parse_quantity(text)
    assert repr(text[:64]) in str(error.value) or "out of range" in str(error.value)


def test_non_string_quantities() -> None:
    assert parse_quantity(2) == 2
    with pytest.raises(QuantityError):
        parse_quantity(None)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi"]))
def test_integers_with_suffixes(number: int, suffix: str) -> None:
    scale = {"": 1, "m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[
        suffix
    ]
    assert parse_quantity(f"{number}{suffix}") == number * scale


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cpu", "cpu"),
        ("memory", "memory"),
        ("ephemeral-storage", "ephemeral_storage"),
        ("nvidia.com/gpu", "nvidia_com_gpu"),
        ("example.com/Foo-Bar", "example_com_foo_bar"),
        ("hugepages-2Mi", None),
        ("3com.io/x", None),
    ],
)
def test_resource_names_as_kube_state_metrics_spells_them(name: str, expected: str | None) -> None:
    assert resource_name(name) == expected


def test_nano_units_are_exact_and_round_up_like_kubernetes() -> None:
    assert parse_nanos("100m") == 10**8 and parse_nanos("1Gi") == 2**30 * NANO
    assert parse_nanos("1.5Ki") == 1536 * NANO
    assert parse_nanos("1e-10") == 1  # finer than 1n: the API server stores 1n
    assert sum(parse_nanos("1m") for _ in range(1000)) == parse_nanos("1")
