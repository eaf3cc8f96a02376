"""HTTP side of remote history: remote-write POSTs with retries and a bounded retry queue, PromQL GETs.

Retries follow the remote-write spec: 5xx, 429 and network errors are retried with doubling backoff
(a 429's Retry-After is honoured up to `max_backoff`); any other 4xx is final (the receiver will refuse
the same bytes again: Prometheus' out-of-order/too-old 400s, a bad label). A poll whose retries are
exhausted waits in a small in-memory queue and goes out, oldest first, before the next poll's request;
when the queue is full the poll is dropped and counted. Durability across a longer TSDB outage is a
local vmagent's job (it buffers to disk), not capacityd's (docs/scale-out.md).
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collector import __version__
from collector.store.remote.stats import RemoteStats
from collector.store.remote.wire import HEADERS, encode_request
from collector.store.settings import RemoteHistoryConfig

log = logging.getLogger("collector.store.remote")

USER_AGENT = f"capacityd/{__version__}"


class RemoteError(Exception):
    """A request the TSDB refused for good, or that could not be made; the message never holds a secret."""


@dataclass
class _Batch:
    series: list[bytes]
    samples: int


class HttpClient:
    """Auth headers and TLS context from the config's files (read once; secrets never logged)."""

    def __init__(self, config: RemoteHistoryConfig):
        self.config = config
        self.headers: dict[str, str] = {"User-Agent": USER_AGENT}
        if config.username is not None:
            password = _read_secret(config.password_file, "password_file") if config.password_file else ""
            token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token_file is not None:
            self.headers["Authorization"] = f"Bearer {_read_secret(config.bearer_token_file, 'bearer_token_file')}"
        self.context: ssl.SSLContext | None = None
        if config.ca_file is not None or config.cert_file is not None:
            self.context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
            if config.cert_file is not None and config.key_file is not None:
                self.context.load_cert_chain(str(config.cert_file), str(config.key_file))

    def request(
        self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers); HTTP errors are returned, network errors raise OSError."""
        request = urllib.request.Request(url, data=data, headers={**self.headers, **(headers or {})},
                                         method="POST" if data is not None else "GET")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout.total_seconds(),
                                        context=self.context) as response:  # fmt: skip
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers or {})

    def get_json(self, path: str, params: dict[str, str]) -> Any:
        """A PromQL HTTP API call on read_url; raises RemoteError naming the query when it fails."""
        url = f"{read_base(self.config)}{path}?{urllib.parse.urlencode(params)}"
        try:
            status, body, _ = self.request(url)
        except OSError as error:
            raise RemoteError(f"{read_base(self.config)}{path}: {error}") from None
        if status != 200:
            raise RemoteError(f"{path} {params.get('query', '')!r}: HTTP {status}: {body[:300]!r}")
        payload = orjson.loads(body)
        if payload.get("status") != "success":
            raise RemoteError(f"{path} {params.get('query', '')!r}: {payload.get('error')}")
        return payload["data"]


def read_base(config: RemoteHistoryConfig) -> str:
    """The PromQL API base: read_url, else write_url's scheme://host:port (VictoriaMetrics single node)."""
    if config.read_url:
        return config.read_url.rstrip("/")
    parts = urllib.parse.urlsplit(config.write_url)
    return f"{parts.scheme}://{parts.netloc}"


def _read_secret(path: Any, what: str) -> str:
    try:
        return str(path.read_text()).strip()
    except OSError as error:
        raise RemoteError(f"history.remote.{what}: cannot read {path}: {error.strerror}") from None


class RemoteWriter:
    """One request per poll, retried on 5xx/429, queued (bounded) when the TSDB stays unreachable."""

    def __init__(self, config: RemoteHistoryConfig, stats: RemoteStats | None = None,
                 sleep: Callable[[float], None] = time.sleep):  # fmt: skip
        self.config = config
        self.http = HttpClient(config)
        self.stats = stats or RemoteStats()
        self.stats.set(queue_capacity=config.queue_samples)
        self._sleep = sleep
        self._queue: deque[_Batch] = deque()
        self._queued = 0
        self._lock = threading.Lock()  # one poll's request at a time keeps the samples in time order
        self._failing = False
        self.last_rejection = ""

    @property
    def queue_length(self) -> int:
        return self._queued

    def write(self, series: list[bytes], samples: int) -> bool:
        """Send a poll (after whatever is queued); True when it was accepted. Never raises."""
        with self._lock:
            if series:
                self._queue.append(_Batch(series, samples))
                self._queued += samples
            while self._queue:
                batch = self._queue[0]
                outcome = self._send(batch)
                if outcome == "retry":  # still unreachable: keep it and everything behind it, bounded
                    self._trim()
                    self.stats.set(queue_length=self._queued)
                    return False
                self._queue.popleft()
                self._queued -= batch.samples
            self.stats.set(queue_length=self._queued)
            return True

    def send(self, series: list[bytes], samples: int) -> str:
        """One request outside the queue (backfill, which reports refusals itself rather than logging each):
        'ok', 'rejected' (4xx) or 'retry' (retries exhausted)."""
        with self._lock:
            return self._send(_Batch(series, samples), quiet=True)

    def _trim(self) -> None:
        """Drop the oldest queued polls beyond `queue_samples` (counted): the newest matter most to a planner."""
        while self._queue and self._queued > self.config.queue_samples:
            batch = self._queue.popleft()
            self._queued -= batch.samples
            self.stats.add(dropped_samples=batch.samples)
            log.warning("history.remote: retry queue full (%d samples): dropped a poll of %d samples",
                        self.config.queue_samples, batch.samples)  # fmt: skip

    def _send(self, batch: _Batch, quiet: bool = False) -> str:
        """'ok', 'rejected' (4xx: final) or 'retry' (retries exhausted: the batch stays queued)."""
        body = encode_request(batch.series)
        delay = self.config.min_backoff.total_seconds()
        # While the TSDB is known to be failing, each poll probes it once instead of retrying: a blackholed
        # endpoint would otherwise hold every poll thread for (max_retries + 1) x timeout.
        retries = 0 if self._failing else self.config.max_retries
        for attempt in range(retries + 1):
            if attempt:
                self.stats.add(retried_samples=batch.samples)
            started = time.monotonic()
            try:
                status, text, headers = self.http.request(self.config.write_url, body, HEADERS)
            except OSError as error:
                status, text, headers = 0, str(error).encode(), {}
            self.stats.observe_batch(time.monotonic() - started)
            self.stats.add(requests=1)
            if 200 <= status < 300:
                self.stats.add(samples=batch.samples, sent_bytes=len(body))
                self.stats.set(last_send_success=time.time())
                if self._failing:
                    log.info("history.remote: %s accepts writes again", _origin(self.config.write_url))
                    self._failing = False
                return "ok"
            self.stats.add(failed_requests=1)
            if 400 <= status < 500 and status != 429:
                self.stats.add(failed_samples=batch.samples)
                self.last_rejection = f"HTTP {status}: {text[:300].decode(errors='replace').strip()}"
                if quiet:
                    return "rejected"
                log.warning("history.remote: %s refused a poll of %d samples (HTTP %d, not retried): %s",
                            _origin(self.config.write_url), batch.samples, status,
                            text[:300].decode(errors="replace").strip())  # fmt: skip
                return "rejected"
            if attempt == retries:
                break
            wait = delay
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            if status == 429 and retry_after and retry_after.strip().isdigit():
                wait = float(retry_after)
            self._sleep(min(wait, self.config.max_backoff.total_seconds()))
            delay = min(delay * 2, self.config.max_backoff.total_seconds())
        if not self._failing:
            log.warning(
                "history.remote: %s unreachable or failing (last: %s); polls are queued in memory",
                _origin(self.config.write_url),
                f"HTTP {status}" if status else text[:200].decode(),
            )
            self._failing = True
        return "retry"


def _origin(url: str) -> str:
    """scheme://host:port only: a URL may carry credentials or tokens in its path or query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
