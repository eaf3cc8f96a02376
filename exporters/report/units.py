"""Human formatting of base-unit amounts and durations for the report (cores, bytes, counts, days)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from collector.contract.schema import resource_unit

_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def is_number(value: object) -> bool:
    """True for a finite real number (NaN, None, inf and pandas NA are not)."""
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def format_bytes(value: float) -> str:
    size = float(value)
    for unit in _IEC:
        if abs(size) < 1024 or unit == _IEC[-1]:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_amount(resource: str, value: object, *, signed: bool = False) -> str:
    """`1,234 cores`, `1.5 TiB`, `310` — unknown (NaN) is an en dash, never zero."""
    if not is_number(value):
        return "–"
    number = float(value)  # type: ignore[arg-type]
    sign = "+" if signed and number > 0 else ""
    unit = resource_unit(resource)
    if unit == "bytes":
        return sign + format_bytes(number)
    text = f"{number:,.0f}" if abs(number) >= 100 or number == int(number) else f"{number:,.1f}"
    return f"{sign}{text} cores" if unit == "cores" else sign + text


def format_count(value: object, *, signed: bool = False) -> str:
    if not is_number(value):
        return "–"
    number = float(value)  # type: ignore[arg-type]
    return f"{number:+,.0f}" if signed else f"{number:,.0f}"


def format_percent(ratio: object, *, signed: bool = False, points: bool = True) -> str:
    """A ratio (0.42) as `42 %`; signed changes as percentage points (`+3.1 pp`) or percent (`+3.1 %`)."""
    if not is_number(ratio):
        return "–"
    value = float(ratio) * 100  # type: ignore[arg-type]
    if signed:
        return f"{value:+.1f} pp" if points else f"{value:+.1f} %"
    return f"{value:.1f} %" if 0 < abs(value) < 9.95 else f"{value:.0f} %"


def format_days(days: object, *, beyond: str = "beyond horizon") -> str:
    """Days remaining: `now` when already exhausted, `beyond horizon` for +inf, else `12 d`."""
    if days is None:
        return "–"
    try:
        value = float(days)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return beyond
    if value < 0.5:
        return "now"
    return f"{value:,.0f} d"


def format_day_range(low: object, high: object) -> str:
    """The 80 % interval of days remaining, `18–35 d`; open-ended when the late bound is beyond the horizon."""
    if not is_number(low) and not is_number(high):
        if low is not None and _is_inf(low):
            return "beyond horizon"
        return "–"
    low_text = f"{float(low):,.0f}" if is_number(low) else "?"  # type: ignore[arg-type]
    if is_number(high):
        return f"{low_text}–{float(high):,.0f} d"  # type: ignore[arg-type]
    return f"≥ {low_text} d" if _is_inf(high) else f"{low_text} d"


def _is_inf(value: object) -> bool:
    try:
        return math.isinf(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def format_age(delta: timedelta | None) -> str:
    """`3 d 4 h`, `45 min` — how long a source has been stale or missing."""
    if delta is None:
        return "–"
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def _local(when: datetime | None, zone: object) -> datetime | None:
    """`when` in the report's zone, or None for a missing time (None, NaT)."""
    if when is None:
        return None
    try:
        import pandas as pd

        if pd.isna(when):
            return None
    except (TypeError, ValueError):
        pass
    return when.astimezone(zone) if zone is not None else when  # type: ignore[arg-type]


def format_time(when: datetime | None, zone: object = None) -> str:
    """A timestamp in the report's zone, `2026-11-23 07:00 CET`."""
    local = _local(when, zone)
    return "–" if local is None else local.strftime("%Y-%m-%d %H:%M %Z").strip()


def format_date(when: datetime | None, zone: object = None) -> str:
    local = _local(when, zone)
    return "–" if local is None else local.strftime("%Y-%m-%d")
