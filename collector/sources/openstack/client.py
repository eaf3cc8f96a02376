"""The HTTP side of the OpenStack source: one openstacksdk Connection per configured cloud.

Everything goes through openstacksdk's service proxies (a keystoneauth Adapter each), so auth,
the service catalog, region selection, endpoint overrides and TLS settings from clouds.yaml work
exactly as for the `openstack` CLI. On top of the raw `proxy.get` this module adds what a poller
needs and the SDK does not do for raw calls:

* microversions negotiated once per connection: the highest the service offers, capped at the
  highest this collector was tested against (`NOVA_MAX`, `PLACEMENT_MAX`);
* a count of the HTTP requests made (a `requests` response hook, so discovery and auth count too);
* retries with exponential backoff for 500/502/503/504 and connection failures, bounded by the
  poll's deadline; one re-authentication after a 401 (keystoneauth already re-auths once for
  plugins that can; admin_token cannot, so a second 401 is a clear `auth_failed`);
* every failure turned into a `SourceError` that names the cloud, service, path and HTTP status,
  and quotes the service's own error `detail` / `message` (never a token or a password);
* bounded reads (`limits.read_bounded`): every body is streamed under a size cap
  (`max_response_size`: `too_large`) and the poll's wall deadline (`poll_deadline`: `timeout`), and
  a body cut off before its end is `malformed`. Each request's socket timeout is also cut to the
  time left in the poll, and no request starts once the deadline has passed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.sources.base import SourceError
from collector.sources.openstack.limits import read_bounded

log = logging.getLogger(__name__)

# Highest microversions this collector was tested against (Nova 34 "2025.2" / Placement 16).
NOVA_MIN = (2, 1)
NOVA_MAX = (2, 104)
PLACEMENT_MIN = (1, 18)  # GET /resource_providers?required=<trait>
PLACEMENT_MAX = (1, 39)

RETRY_STATUS = frozenset({500, 502, 503, 504})
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024**2
"""Default cap on one answer's body (`max_response_size`): a 1000-server page with embedded flavors is ~5 MB."""


Version = tuple[int, int]


def parse_version(text: str | None) -> Version | None:
    """'2.88' -> (2, 88); None / '' -> None."""
    if not text:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass
class RetryPolicy:
    """How hard to try before a poll gives up on one request."""

    attempts: int = 4
    """Total attempts for a 5xx or a connection failure (1 = no retry)."""
    backoff: float = 0.5
    """First pause in seconds; doubles after each failed attempt."""
    max_backoff: float = 8.0


class OpenStackClient:
    """A Connection to one cloud plus call counting, retries and clear errors."""

    def __init__(
        self,
        cloud_label: str,
        connect: Callable[[], Any],
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        self.cloud_label = cloud_label
        self.max_response_bytes = max_response_bytes
        self._connect = connect
        self._conn: Any | None = None
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.calls = 0
        self._calls_lock = threading.Lock()
        self.deadline: float | None = None
        self._versions: dict[str, Version] = {}

    # -- connection -------------------------------------------------------------------------

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self._connect()
            except SourceError:
                raise
            except Exception as error:  # noqa: BLE001 - openstack.config raises many unrelated types
                raise SourceError(
                    "config", f"cloud {self.cloud_label}: cannot set up the connection: {_describe(error)}"
                ) from None
            self._conn.session.session.hooks["response"].append(self._count)
        return self._conn

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> None:
        with self._calls_lock:  # Placement reads run in a few threads
            self.calls += 1

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._versions.clear()

    def begin_poll(self, budget_seconds: float) -> None:
        """Reset the call counter and set the wall deadline that bounds this poll's requests and retries."""
        self.calls = 0
        self.deadline = time.monotonic() + budget_seconds

    # -- microversions ----------------------------------------------------------------------

    def microversion(self, service: str) -> Version:
        """The microversion used for `service` ('compute' / 'placement'), negotiated once."""
        if service not in self._versions:
            low, high = (NOVA_MIN, NOVA_MAX) if service == "compute" else (PLACEMENT_MIN, PLACEMENT_MAX)
            try:
                # The SDK discovers the endpoint's versions when the proxy is first built: retry both.
                data = self._with_retries(service, "/", lambda: self._proxy(service).get_endpoint_data())
            except SourceError:
                raise
            except Exception as error:  # noqa: BLE001 - keystoneauth discovery raises many types
                raise SourceError(
                    "discovery", f"cloud {self.cloud_label}: {service} version discovery failed: {_describe(error)}"
                ) from None
            if data is None:
                raise SourceError("discovery", f"cloud {self.cloud_label}: no {service} endpoint in the catalog")
            server_max = _as_version(data.max_microversion) or low
            server_min = _as_version(data.min_microversion) or (low[0], 0)
            chosen = min(server_max, high)
            if chosen < low or chosen < server_min:
                raise SourceError(
                    "unsupported_version",
                    f"cloud {self.cloud_label}: {service} offers microversions {format_version(server_min)}"
                    f"..{format_version(server_max)}, capacityd needs {format_version(low)}"
                    f"..{format_version(high)}",
                )
            self._versions[service] = chosen
        return self._versions[service]

    def _proxy(self, service: str) -> Any:
        return self.conn.compute if service == "compute" else self.conn.placement

    # -- requests ---------------------------------------------------------------------------

    def get(self, service: str, path: str, *, microversion: Version | None = None, ok_404: bool = False) -> Any:
        """GET `path` from `service` and return the decoded JSON body (None for an allowed 404)."""
        version = microversion or self.microversion(service)
        proxy = self._proxy(service)
        header = format_version(version)

        what = f"cloud {self.cloud_label}: {service} GET {path}"

        def send() -> Any:
            # stream=True: the body is read here, bounded, not whole by requests; log=False: keystoneauth's
            # debug logging would otherwise read the whole body to log it.
            response = proxy.get(
                path, microversion=header, raise_exc=False, stream=True, log=False, **self._request_timeout(what)
            )
            read_bounded(response, limit=self.max_response_bytes, deadline=self.deadline, what=what)
            return response

        response = self._with_retries(service, path, send)
        if response.status_code == 401:
            # Expired or revoked token: drop it and authenticate again, once.
            log.info("cloud %s: %s %s answered 401; re-authenticating once", self.cloud_label, service, path)
            self.conn.session.invalidate()
            response = self._with_retries(service, path, send)
            if response.status_code == 401:
                raise SourceError(
                    "auth_failed",
                    f"cloud {self.cloud_label}: {service} GET {path} rejected the credentials twice "
                    f"(HTTP 401 after re-authenticating): {_error_detail(response)}",
                )
        if response.status_code == 404 and ok_404:
            return None
        if response.status_code >= 400:
            reason = {403: "forbidden", 404: "not_found", 406: "unsupported_version"}.get(
                response.status_code, "http_error"
            )
            raise SourceError(
                reason,
                f"cloud {self.cloud_label}: {service} GET {path} (microversion {header}) answered "
                f"HTTP {response.status_code}: {_error_detail(response)}",
            )
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            snippet = response.text[:120].replace("\n", " ")
            raise SourceError(
                "malformed_response",
                f"cloud {self.cloud_label}: {service} GET {path} answered HTTP {response.status_code} "
                f"with a body that is not JSON: {snippet!r}",
            ) from None
        if not isinstance(body, dict):
            raise SourceError(
                "malformed_response",
                f"cloud {self.cloud_label}: {service} GET {path}: expected a JSON object, got {type(body).__name__}",
            )
        return body

    def _with_retries(self, service: str, path: str, send: Callable[[], Any]) -> Any:
        """Call `send` until it gives a non-5xx answer, backing off; raise SourceError when out of tries."""
        pause = self.retry.backoff
        last: str = ""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = send()
            except Exception as error:
                kind = _connection_failure(error)
                if kind is None:
                    raise
                last = f"{kind}: {_describe(error)}"
                reason = "timeout" if kind == "timed out" else "unreachable"
            else:
                if getattr(response, "status_code", None) not in RETRY_STATUS:
                    return response
                last = f"HTTP {response.status_code}: {_error_detail(response)}"
                reason = "server_error"
            if attempt == self.retry.attempts or not self._time_left(pause):
                raise SourceError(
                    reason,
                    f"cloud {self.cloud_label}: {service} GET {path} failed after {attempt} attempt(s): {last}",
                )
            log.info("cloud %s: %s GET %s failed (%s); retrying in %.1fs", self.cloud_label, service, path, last, pause)
            self._sleep(pause)
            pause = min(pause * 2, self.retry.max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _request_timeout(self, what: str) -> dict[str, float]:
        """The socket timeout for one request: what is left of the poll (no request once it has passed)."""
        if self.deadline is None:
            return {}
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SourceError("timeout", f"{what}: not sent, the poll's deadline has passed (poll_deadline)")
        return {"timeout": left}

    def _time_left(self, pause: float) -> bool:
        return self.deadline is None or time.monotonic() + pause < self.deadline


def _as_version(value: Any) -> Version | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return int(value[0]), int(value[1])
    return parse_version(str(value))


def _connection_failure(error: Exception) -> str | None:
    """'timed out' / 'connection failed' for transport errors, None for anything else."""
    from keystoneauth1 import exceptions as ksa

    if isinstance(error, ksa.ConnectTimeout):  # keystoneauth raises it for read timeouts too
        return "timed out"
    if isinstance(error, ksa.ConnectFailure | ksa.connection.SSLError | ksa.DiscoveryFailure):
        return "connection failed"
    import requests

    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "connection failed"
    return None


def _error_detail(response: Any) -> str:
    """The service's own explanation from an error body (Placement `errors[]`, Nova `{"x": {message}}`)."""
    try:
        body = response.json()
    except ValueError:
        text = (getattr(response, "text", "") or "").strip().replace("\n", " ")
        return text[:200] or getattr(response, "reason", "") or "no body"
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            detail = " ".join(str(first.get("detail") or first.get("title") or "").split())
            extra = ""
            if "max_version" in first:
                extra = f" (service supports {first.get('min_version')}..{first.get('max_version')})"
            return (detail[:300] + extra) or "no detail"
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return " ".join(str(value["message"]).split())[:300]
        if "message" in body:
            return " ".join(str(body["message"]).split())[:300]
    return json.dumps(body)[:200]


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def make_connector(
    cloud: str | None,
    region: str | None,
    clouds_yaml: Path | None,
    timeout_seconds: float,
) -> Callable[[], Any]:
    """A factory for an openstacksdk Connection to `cloud` (clouds.yaml entry; None: OS_* variables)."""

    def connect() -> Any:
        import openstack
        from openstack import config as os_config

        if clouds_yaml is not None and not Path(clouds_yaml).is_file():
            raise SourceError("config", f"clouds.yaml {clouds_yaml} does not exist")
        loader = os_config.OpenStackConfig(config_files=[str(clouds_yaml)] if clouds_yaml else None)
        region_config = loader.get_one(cloud=cloud, region_name=region, api_timeout=timeout_seconds)
        return openstack.connection.Connection(config=region_config)

    return connect
