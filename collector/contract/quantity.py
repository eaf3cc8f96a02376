"""Exact parsing of Kubernetes resource quantities ("100m", "1Gi", "1e3", "0.5", "129M", "1.5Ki").

Kubernetes serializes every quantity as a string in its own grammar
(k8s.io/apimachinery/pkg/api/resource/quantity.go):

    <quantity>  ::= <sign>? <number> <suffix>
    <number>    ::= digits | digits "." digits? | "." digits
    <suffix>    ::= binarySI (Ki Mi Gi Ti Pi Ei) | decimalSI (n u m "" k M G T P E) | ("e"|"E") <sign>? digits

Values are returned as `fractions.Fraction` (an `int` when whole), so "0.1" + "0.2" is exactly "0.3" and
sums over 150,000 pods do not drift; `parse_nanos` gives the same value as integer nano-units, which is
what the collector sums (cheaper, and still exact at Kubernetes' resolution); callers convert to float
only when they build a frame. Parsing is cached: a cluster repeats a handful of quantity strings.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

__all__ = ["NANO", "QuantityError", "parse_nanos", "parse_quantity", "resource_name"]

NANO = 10**9
"""Amounts are carried as integer nano-units: Kubernetes' own resolution (it rounds finer values up to 1n)."""

_QUANTITY_RE = re.compile(
    r"^(?P<sign>[+-]?)(?P<number>\d+(?:\.\d*)?|\.\d+)"
    r"(?:[eE](?P<exponent>[+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Kubernetes itself cannot represent more than ~1e18 with nano precision; anything far beyond that is
# garbage (or an attempt to make the parser allocate huge integers), so it is rejected.
_MAX_DECIMAL_EXPONENT = 30


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message quotes it (quantities are never secret)."""


@lru_cache(maxsize=8192)
def parse_quantity(text: str) -> Fraction | int:
    """The exact value of a quantity string, in the quantity's base unit (cores, bytes, count)."""
    if not isinstance(text, str):
        # The API serializes quantities as strings; JSON numbers are tolerated as kubectl does.
        if isinstance(text, int | float) and not isinstance(text, bool):
            return _normalize(Fraction(str(text)))
        raise QuantityError(f"quantity must be a string, got {type(text).__name__}")
    match = _QUANTITY_RE.match(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise QuantityError(f"invalid quantity {text[:64]!r}")
    number = Fraction(match["number"])
    if match["sign"] == "-":
        number = -number
    if (suffix := match["suffix"]) is not None:
        if suffix in _BINARY:
            return _normalize(number * _BINARY[suffix])
        exponent = _DECIMAL[suffix]
    elif match["exponent"] is not None:
        exponent = int(match["exponent"])
        if abs(exponent) > _MAX_DECIMAL_EXPONENT:
            raise QuantityError(f"quantity {text!r} is out of range")
    else:
        exponent = 0
    value = number * Fraction(10) ** exponent
    return _normalize(value)


@lru_cache(maxsize=8192)
def parse_nanos(text: str) -> int:
    """The quantity in integer nano-units (1 core = 10**9, 1 byte = 10**9), rounded up like Kubernetes.

    Integer arithmetic keeps sums exact and is several times cheaper than `Fraction`s over 150,000 pods;
    a value finer than 1n cannot exist in a cluster (the API server stores it rounded up).
    """
    return math.ceil(parse_quantity(text) * NANO)


def _normalize(value: Fraction) -> Fraction | int:
    return value.numerator if value.denominator == 1 else value


@lru_cache(maxsize=1024)
def resource_name(k8s_name: str) -> str | None:
    """The capacity-frame name of a Kubernetes resource, as kube-state-metrics spells it.

    `ephemeral-storage` -> `ephemeral_storage`, `nvidia.com/gpu` -> `nvidia_com_gpu`. Huge pages are
    carved out of `memory` and are left out (None), like every other name that cannot be a frame resource.
    """
    if k8s_name.startswith("hugepages-"):
        return None
    name = re.sub(r"[^a-z0-9_]", "_", k8s_name.lower())
    return name if re.match(r"^[a-z][a-z0-9_]*$", name) else None
