"""Settings of the history store (docs/config.md#history, docs/history.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from collector.contract.settings import Duration, StrictModel


class RemoteHistoryConfig(StrictModel):
    """A Prometheus-compatible TSDB written through remote write, read through PromQL (docs/scale-out.md).

    Secrets come from files (never from the config itself) and are read when the backend opens, so a
    rotated token or password is picked up on restart and never reaches a log line.
    """

    write_url: str = Field(description="Remote-write endpoint, e.g. http://vmagent:8429/api/v1/write.")
    read_url: str | None = Field(
        default=None, description="PromQL HTTP API base, e.g. http://victoria:8428 (default: write_url's origin)."
    )
    username: str | None = Field(default=None, description="Basic auth user (with password_file).")
    password_file: Path | None = Field(default=None, description="File holding the basic auth password.")
    bearer_token_file: Path | None = Field(default=None, description="File holding a bearer token.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the TSDB's certificate.")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client certificate's key (mutual TLS).")
    timeout: Duration = Field(default=timedelta(seconds=30), description="Per HTTP request.")
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries of a 5xx/429/network failure.")
    min_backoff: Duration = Field(default=timedelta(milliseconds=100), description="First retry delay.")
    max_backoff: Duration = Field(default=timedelta(seconds=5), description="Retry delay cap (doubling).")
    queue_samples: int = Field(
        default=500_000, ge=0, description="Samples of failed polls kept in memory for the next send; more are dropped."
    )

    @model_validator(mode="after")
    def _auth(self) -> RemoteHistoryConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if self.bearer_token_file is not None and self.username is not None:
            raise ValueError("use either basic auth (username/password_file) or bearer_token_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HistoryConfig(StrictModel):
    """How long history is kept and how it is thinned (docs/history.md)."""

    raw_retention: Duration = Field(default=timedelta(days=8), description="Keep every poll this long.")
    downsample_step: Duration = Field(default=timedelta(hours=1), description="Older data: one row per step.")
    retention: Duration = Field(default=timedelta(days=400), description="Drop downsampled data after this.")
    host_raw_retention: Duration = Field(
        default=timedelta(days=2), description="Per-host rows at full resolution (pool sums are kept longer)."
    )
    consumer_retention: Duration = Field(
        default=timedelta(days=15), description="Hourly per-VM/pod usage (reclaimable analysis) is kept this long."
    )
    host_retention: Duration = Field(
        default=timedelta(days=35), description="Per-host rows downsampled to `downsample_step` are kept this long."
    )

    backend: Literal["embedded", "remote"] = Field(
        default="embedded", description="embedded: SQLite under state_dir only; remote: also a TSDB."
    )
    remote: RemoteHistoryConfig | None = Field(default=None, description="Required when backend is remote.")

    @model_validator(mode="after")
    def _remote_needs_urls(self) -> HistoryConfig:
        if self.backend == "remote" and self.remote is None:
            raise ValueError("history.backend: remote needs a history.remote section with write_url")
        return self
