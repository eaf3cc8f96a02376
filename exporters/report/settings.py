"""Settings of the weekly report and its mail relay (docs/config.md#reports, docs/report.md)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from collector.contract.settings import Duration, SourceName, StrictModel

# -- weekly report by email (exporters/report/, docs/report.md) ------------------------------------

_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def _check_email(address: str) -> str:
    if not _EMAIL_RE.match(address.strip()):
        raise ValueError(f"not an email address: {address!r}")
    return address.strip()


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(field: str) -> str:
    """Standard cron day-of-week (0 or 7 = Sunday, 1 = Monday) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, and `CronTrigger.from_crontab` passes numbers
    through unchanged, so `0 7 * * 1` would fire on Tuesdays. Names mean the same to both.
    """
    days: set[str] = set()
    for part in field.lower().split(","):
        expression, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if expression == "*":
            low, high = 0, 6
        elif "-" in expression and expression.replace("-", "").isdigit():
            low_text, high_text = expression.split("-", 1)
            low, high = int(low_text), int(high_text)
        elif expression.isdigit():
            low = high = int(expression)
        else:
            return field  # names (mon-fri): APScheduler reads them as cron does
        if not 0 <= low <= high <= 7 or step < 1:
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days.update(_DAY_NAMES[day % 7] for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in (*_DAY_NAMES[1:], _DAY_NAMES[0]) if name in days)


def report_cron_trigger(schedule: str, timezone: str) -> Any:
    """The APScheduler CronTrigger of a report's 5-field cron expression, with cron's weekday numbers."""
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_day_of_week(day_of_week),
        timezone=ZoneInfo(timezone),
    )


class SmtpConfig(StrictModel):
    """The mail relay reports are sent through; the password comes from the environment, never the file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    host: str = Field(min_length=1)
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default: 587 for starttls, 465 for tls, 25 for none."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls: upgrade a plain connection; tls: implicit TLS (SMTPS)."
    )
    username: str | None = None
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the password (e.g. set by systemd's EnvironmentFile).",
    )
    password: SecretStr | None = Field(default=None, description="Inline password; prefer password_env.")
    from_address: str = Field(alias="from", description="Envelope and header sender.")
    timeout: Duration = Field(default=timedelta(seconds=30), description="Socket timeout per SMTP operation.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the relay (default: system CAs).")
    verify_tls: bool = Field(default=True, description="Verify the relay's certificate and host name.")
    attempts: int = Field(default=4, ge=1, le=20, description="Delivery attempts per send on transient failures.")
    backoff: Duration = Field(default=timedelta(seconds=5), description="First retry delay; doubles per attempt.")

    @field_validator("from_address")
    @classmethod
    def _from_is_address(cls, address: str) -> str:
        return _check_email(address)

    @model_validator(mode="after")
    def _one_password_source(self) -> SmtpConfig:
        if self.password_env and self.password is not None:
            raise ValueError("set either password_env or password, not both")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class ReportScope(StrictModel):
    """Which part of the estate a report covers; an empty list means all."""

    clouds: list[str] = Field(default_factory=list, description="`cloud` values of hypervisor/OpenStack rows.")
    clusters: list[str] = Field(default_factory=list, description="`cloud` values of Kubernetes rows.")
    layers: list[Literal["hypervisor", "openstack", "kubernetes"]] = Field(default_factory=list)
    pools: list[str] = Field(default_factory=list)


class ReportConfig(StrictModel):
    """One scheduled report: who gets it, when, and what it covers."""

    name: SourceName = Field(description="Unique; the `report` label and the key of the send record.")
    recipients: list[str] = Field(min_length=1)
    schedule: str = Field(default="0 7 * * 1", description="Cron expression (5 fields) in `timezone`.")
    timezone: str = Field(default="UTC", description="IANA zone the schedule and dates are in.")
    title: str = Field(default="Weekly capacity report", max_length=200)
    scope: ReportScope = Field(default_factory=ReportScope)
    top_n: int = Field(default=10, ge=1, le=500, description="Rows per table and charts in the mail (CSV: all).")
    charts: int = Field(default=6, ge=0, le=50, description="Growth charts in the mail (most urgent pools).")
    red_days: float = Field(default=30, gt=0, description="Red when a pool runs out within this many days.")
    amber_days: float = Field(default=90, gt=0, description="Amber when it may run out within this many days.")
    utilization_red: float = Field(default=0.95, gt=0, description="Without a forecast: red at this share used.")
    utilization_amber: float = Field(default=0.85, gt=0, description="Without a forecast: amber at this share.")
    max_bytes: int = Field(default=5_000_000, ge=100_000, description="Size bound of the whole email.")
    misfire_grace_time: Duration = Field(
        default=timedelta(hours=12), description="A send missed (daemon down) is still made this long after."
    )
    retry_interval: Duration = Field(default=timedelta(minutes=15), description="Retry a failed send after.")
    retry_for: Duration = Field(default=timedelta(hours=24), description="Give up retrying a period after.")
    accuracy_backtest: bool = Field(
        default=True,
        description="Also re-run the forecast from the history of 30 days ago to check accuracy "
        "(up to ~30 s of CPU per send; the check from forecasts stored with earlier sends is always made).",
    )

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, recipients: list[str]) -> list[str]:
        return [_check_email(address) for address in recipients]

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        try:
            report_cron_trigger(schedule, "UTC")
        except ValueError as error:
            raise ValueError(f"invalid cron expression: {error}") from None
        return schedule

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (use an IANA name such as Europe/Berlin)") from None
        return zone

    @model_validator(mode="after")
    def _thresholds(self) -> ReportConfig:
        if self.amber_days < self.red_days:
            raise ValueError("amber_days must be at least red_days")
        if self.utilization_amber > self.utilization_red:
            raise ValueError("utilization_amber must be at most utilization_red")
        return self
