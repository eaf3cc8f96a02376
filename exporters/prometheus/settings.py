"""`web:` — limits of the /metrics HTTP server (docs/config.md), so slow or hostile clients stay cheap."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from collector.contract.settings import Duration, StrictModel

_MAX_TIMEOUT = timedelta(hours=1)


class WebSettings(StrictModel):
    """How many clients the /metrics server holds at once and how long each may take."""

    max_connections: int = Field(
        default=512,
        ge=1,
        le=65536,
        description="Open connections held at once; past it the slowest unfinished request is dropped.",
    )
    max_request_threads: int = Field(
        default=64, ge=1, le=1024, description="Threads answering complete requests (auth, reply)."
    )
    read_header_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Time to send a whole request head (and TLS handshake)."
    )
    idle_timeout: Duration = Field(
        default=timedelta(minutes=2), description="How long a keep-alive connection may wait for its next request."
    )
    write_timeout: Duration = Field(
        default=timedelta(minutes=1), description="How long a reply may take to be read by the client."
    )

    @field_validator("read_header_timeout", "idle_timeout", "write_timeout")
    @classmethod
    def _sane(cls, value: timedelta) -> timedelta:
        if value > _MAX_TIMEOUT:
            raise ValueError("must be at most 1h")
        return value
