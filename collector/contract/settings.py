"""Typed settings: the base every component's pydantic settings model builds on.

Durations are Prometheus-style (`90s`, `5m`, `1h`, `30d`), unknown keys are errors everywhere (a typo is
caught by `capacityd check-config` instead of being silently ignored) and secrets are `SecretStr`, so they
never reach a log line or an error message. Each component declares its own model next to its code
(`collector/sources/<kind>/settings.py`, `collector/store/settings.py`, ...); `collector/app/config.py`
composes them into the file's shape (docs/config.md).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from collector.contract.quantity import QuantityError
from collector.contract.quantity import parse_quantity as _parse_exact_quantity

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """Prometheus-style durations: `90s`, `5m`, `1h`, `30d`, `2w`, `250ms`; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h, 7d)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SourceBase(StrictModel):
    """What every source has, whatever its kind."""

    name: SourceName = Field(description="Unique; becomes the `source` label.")
    interval: Duration = Field(default=timedelta(seconds=60), description="How often to poll.")
    timeout: Duration | None = Field(
        default=None, description="Give up on a poll after this long (default: 80 % of interval)."
    )
    jitter: Duration | None = Field(
        default=None, description="Random delay added to each run (default: 10 % of interval)."
    )

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
