"""Typed settings: the base every component's pydantic settings model builds on.

Durations are Prometheus-style (`90s`, `5m`, `1h`, `30d`), unknown keys are errors everywhere (a typo is
caught by `capacityd check-config` instead of being silently ignored) and secrets are `SecretStr`, so they
never reach a log line or an error message. Each component declares its own model next to its code
(`collector/sources/<kind>/settings.py`, `collector/store/settings.py`, ...); `collector/app/config.py`
composes them into the file's shape (docs/config.md).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from collector.contract.quantity import QuantityError
from collector.contract.quantity import parse_quantity as _parse_exact_quantity

_DURATION_RE = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,15})?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
DURATION_MIN_SECONDS = 0.001
"""Below a millisecond a duration is a typo (`0.0000001ms` used to become a 0 s interval)."""
DURATION_MAX_SECONDS = 100 * 365 * 86400.0
"""A century: longer than any retention, and far from `timedelta`'s overflow (`99999999999w`)."""
_DURATION_HINT = "expected a duration such as 30s, 5m, 1h, 7d"


def parse_duration(value: Any) -> timedelta:
    """Prometheus-style durations: `90s`, `5m`, `1h`, `30d`, `2w`, `250ms`; a bare number is seconds.

    The message never contains the value (it may be a misplaced secret), and every value that is not a
    finite duration between 1 ms and a century is a `ValueError`, never an `OverflowError`.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"too long; {_DURATION_HINT} up to 100 years") from None
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration; {_DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite duration; {_DURATION_HINT}")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds < DURATION_MIN_SECONDS:
        raise ValueError("too short; the smallest duration is 1ms")
    if seconds > DURATION_MAX_SECONDS:
        raise ValueError(f"too long; {_DURATION_HINT} up to 100 years")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def bounded_duration(low: timedelta, high: timedelta) -> Any:
    """An after-validator keeping a duration within [low, high] (scheduler-level limits of a key)."""

    def check(value: timedelta | None) -> timedelta | None:
        if value is None:
            return value
        if value < low:
            raise ValueError(f"too short; expected at least {format_duration(low)}")
        if value > high:
            raise ValueError(f"too long; expected at most {format_duration(high)}")
        return value

    return AfterValidator(check)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
POLL_INTERVAL_MIN = timedelta(seconds=1)
POLL_INTERVAL_MAX = timedelta(days=1)
"""Scheduler-level limits: a source polled less than daily is not monitored; faster than 1 s is a typo."""
PollInterval = Annotated[Duration, bounded_duration(POLL_INTERVAL_MIN, POLL_INTERVAL_MAX)]
PollTimeout = Annotated[Duration, bounded_duration(timedelta(milliseconds=100), POLL_INTERVAL_MAX)]
PollJitter = Annotated[Duration, bounded_duration(timedelta(milliseconds=1), POLL_INTERVAL_MAX)]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SourceBase(StrictModel):
    """What every source has, whatever its kind."""

    name: SourceName = Field(description="Unique; becomes the `source` label.")
    interval: PollInterval = Field(default=timedelta(seconds=60), description="How often to poll (1s to 1d).")
    timeout: PollTimeout | None = Field(
        default=None, description="Give up on a poll after this long (default: 80 % of interval)."
    )
    jitter: PollJitter | None = Field(
        default=None, description="Random delay added to each run (default: 10 % of interval)."
    )

    @model_validator(mode="after")
    def _jitter_within_interval(self) -> SourceBase:
        if self.jitter is not None and self.jitter > self.interval:
            raise ValueError("jitter: too long; expected at most the interval")
        return self

    @property
    def effective_timeout(self) -> timedelta:
        return self.timeout or self.interval * 0.8

    @property
    def effective_jitter(self) -> timedelta:
        return self.jitter if self.jitter is not None else self.interval * 0.1

    def create_source(self) -> Any:
        """The `collector.sources.base.Source` these settings configure (each kind's model overrides this).

        The import of the implementation stays inside the override, so validating a config never imports a
        client library (libvirt, openstacksdk, kubernetes) the config does not use.
        """
        raise NotImplementedError(f"{type(self).__name__} does not name its Source class")


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity (`250m`, `512Mi`, `1.5`, `2G`) in base units (cores, bytes, count).

    The one quantity grammar of the project (`collector.contract.quantity`), as a non-negative float.
    """
    if isinstance(value, bool):
        raise ValueError("not a Kubernetes quantity (use e.g. 250m, 1.5, 512Mi, 2Gi)")
    try:
        number = float(_parse_exact_quantity(value.strip() if isinstance(value, str) else value))
    except (QuantityError, OverflowError, ValueError):
        raise ValueError("not a Kubernetes quantity (use e.g. 250m, 1.5, 512Mi, 2Gi)") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError("a resource quantity must be a finite number >= 0")
    return number


Quantity = Annotated[float, BeforeValidator(parse_quantity)]


class ConfigError(Exception):
    """A config file that cannot be used; `errors` holds one `location: message` line per problem."""

    def __init__(self, path: str, errors: list[str]):
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(errors))
