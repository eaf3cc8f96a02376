"""`kind: kubernetes`: one cluster's nodes, pods and kubelet usage per poll (README.md in this folder).

One `KubernetesSource` per configured cluster, each with its own `ApiClient` (never the client's global
default configuration), so several clusters are polled side by side. A poll is:

1. LIST nodes and LIST pods (all namespaces), paginated, raw JSON -> compact tables (listing.py);
2. `/metrics/resource` of every node's kubelet, in parallel (kubelet.py), unless `kubelet.mode: off`;
3. frames (frames.py).

A failure of the lists fails the poll (`SourceError`: unreachable, unauthorized, forbidden, ...);
trouble with single nodes, pods or kubelets only leaves those out and is counted in `skipped`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes.config import ConfigException, kube_config, load_incluster_config

from collector.sources.base import PollResult, Source, SourceError
from collector.sources.http_limits import ResponseLimitError
from collector.sources.kubernetes.frames import FrameContext, PodUsage, build_frames
from collector.sources.kubernetes.kubelet import (
    CpuRates,
    KubeletAddressError,
    KubeletScraper,
    ScrapeTarget,
    read_limited,
)
from collector.sources.kubernetes.listing import (
    InvalidResponse,
    ListExpired,
    ListStats,
    NodeTable,
    PodTable,
    list_paged,
    paused_gc,
)
from collector.sources.kubernetes.settings import KubernetesSourceConfig

if TYPE_CHECKING:
    from kubernetes.client.configuration import APIKeyAuthSetting

__all__ = ["KubernetesSource"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 10.0
_METRICS_PATH = "metrics/resource"
Fetch = Callable[[ScrapeTarget, float], bytes]


class KubernetesSource(Source):
    kind = "kubernetes"
    config: KubernetesSourceConfig

    def __init__(self, config: KubernetesSourceConfig):
        super().__init__(config)
        self._api_client: k8s.ApiClient | None = None
        self._cluster: str | None = config.cluster
        self._node_rates = CpuRates()
        self._pod_rates = CpuRates()
        self._direct_pool: urllib3.PoolManager | None = None
        self._read_deadline: float | None = None

    # --- connection ---------------------------------------------------------------------------

    @property
    def cluster(self) -> str:
        """The `cloud` label: `cluster` if configured, else the kubeconfig context (or the source name)."""
        if self._cluster is None:
            self._connect()
        return self._cluster or self.name

    def _connect(self) -> k8s.ApiClient:
        if self._api_client is not None:
            return self._api_client
        cfg = k8s.Configuration()
        try:  # kubernetes.config's loaders ship no annotations (the ignores below)
            if self.config.in_cluster:
                load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                context = None
            else:
                path = self._kubeconfig_path()
                _contexts, current = kube_config.list_kube_config_contexts(path)  # type: ignore[no-untyped-call]
                context = self.config.context or (current or {}).get("name")
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=context, client_configuration=cfg, persist_config=False
                )
        except ConfigException as error:
            raise SourceError("config", f"kubernetes source {self.name}: {error}") from None
        except (OSError, ValueError, TypeError) as error:
            raise SourceError("config", f"kubernetes source {self.name}: cannot load kubeconfig: {error}") from None
        if self._cluster is None:
            self._cluster = context or self.name
        kubelet = self.config.kubelet
        cfg.connection_pool_maxsize = kubelet.concurrency + 4
        # Connection errors are retried (a restarting API server), reads are not: a kubelet that does not
        # answer in time must fail fast, not three times over.
        cfg.retries = urllib3.Retry(total=3, connect=3, read=0, status=0, redirect=2, backoff_factor=0.2)
        self._api_client = k8s.ApiClient(cfg)
        return self._api_client

    def _kubeconfig_path(self) -> str:
        if self.config.kubeconfig is not None:
            return str(self.config.kubeconfig)
        # Standard resolution; the first file of a $KUBECONFIG list is what the client merges from.
        return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())

    def close(self) -> None:
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()  # type: ignore[no-untyped-call]  # ApiClient.close is unannotated
            self._api_client = None
        if self._direct_pool is not None:
            self._direct_pool.clear()
            self._direct_pool = None

    # --- poll ---------------------------------------------------------------------------------

    def poll(self, now: datetime) -> PollResult:
        timeout = self.config.effective_timeout.total_seconds()
        started = time.monotonic()
        # Every read ends by the poll deadline (a dripping server cannot hold the poll); kubelet scrapes stop
        # starting once 85 % of the poll's time is used (frames still need building).
        self._read_deadline = started + self.config.effective_poll_deadline.total_seconds()
        deadline = min(started + 0.85 * timeout, self._read_deadline)
        api = k8s.CoreV1Api(self._connect())  # (the first access imports the client's API module: ~1-3 s)
        stats = ListStats()
        limits: dict[str, Any] = {
            "page_size": self.config.page_size,
            "timeout": timeout,
            "stats": stats,
            "max_bytes": self.config.max_response_bytes,
            "deadline": self._read_deadline,
        }
        with self._api_errors():
            nodes = list_paged(api.list_node, NodeTable, what="node", **limits)
            pods = list_paged(api.list_pod_for_all_namespaces, PodTable, what="pod", **limits)

        skipped: Counter[str] = Counter()
        notes: list[str] = [*nodes.notes, *pods.notes]
        if nodes.skipped:
            skipped["invalid_node"] = nodes.skipped
        if pods.skipped:
            skipped["invalid_pod"] = pods.skipped
        if stats.restarts:
            notes.append(f"list restarted {stats.restarts}x after its continue token expired (410)")

        node_usage: dict[str, tuple[float, float]] = {}
        pod_usage: PodUsage | dict[str, tuple[float, float, float]] = {}
        scrapes = 0
        if self.config.kubelet.mode != "off" and len(nodes):
            scrapes = len(nodes)
            with paused_gc():
                node_usage, pod_usage = self._usage(api, nodes, pods, now, skipped, notes, deadline)

        ctx = FrameContext(now=now, source=self.name, cluster=self.cluster, labels=self.config.node_labels)
        with paused_gc():  # 150,000 rows of small objects and no cycles: see paused_gc
            frames = build_frames(ctx, nodes, pods, node_usage, pod_usage)
        return PollResult(frames=frames, skipped=skipped, api_calls=stats.pages + scrapes, notes=notes)

    def _usage(
        self,
        api: k8s.CoreV1Api,
        nodes: NodeTable,
        pods: PodTable,
        now: datetime,
        skipped: Counter[str],
        notes: list[str],
        deadline: float,
    ) -> tuple[dict[str, tuple[float, float]], PodUsage]:
        kubelet = self.config.kubelet
        fetch = self._proxy_fetch(api) if kubelet.mode == "proxy" else self._direct_fetch()
        scraper = KubeletScraper(
            fetch, concurrency=kubelet.concurrency, timeout=kubelet.timeout.total_seconds(), mode=kubelet.mode
        )
        targets = [
            ScrapeTarget(name, address, port)
            for name, address, port in zip(nodes.name, nodes.address, nodes.kubelet_port, strict=True)
        ]
        result = scraper.scrape(targets, deadline)
        skipped.update(result.failures)
        notes.extend(result.notes)

        poll_time = now.timestamp()
        node_uid = dict(zip(nodes.name, nodes.uid, strict=True))
        node_rates = self._node_rates.update(
            (
                (node_uid.get(name) or name, u.node_cpu[0], u.node_cpu[1] or poll_time)
                for name, u in result.usage.items()
                if u.node_cpu is not None
            ),
            poll_time,
        )
        node_usage = {
            name: (
                node_rates.get(node_uid.get(name) or name, math.nan),
                math.nan if u.node_memory is None else u.node_memory,
            )
            for name, u in result.usage.items()
        }
        # Pod usage straight into columns aligned with the pod table: one (namespace, name) -> row index,
        # no per-pod dicts or tuples (at 300,000 pods those maps were the slowest-growing part of the poll).
        n = len(pods)
        row_by_name = {
            (namespace, name): i
            for i, (namespace, name, node) in enumerate(zip(pods.namespace, pods.name, pods.node, strict=True))
            if node is not None
        }
        nan = math.nan
        counter, when_seen, memory = [nan] * n, [poll_time] * n, [nan] * n
        with_cpu: list[int] = []
        for u in result.usage.values():
            for key, (value, when) in u.pod_cpu.items():
                i = row_by_name.get(key)
                if i is not None:
                    counter[i] = value
                    when_seen[i] = when or poll_time
                    with_cpu.append(i)
            for key, value in u.pod_memory.items():
                i = row_by_name.get(key)
                if i is not None:
                    memory[i] = value
        uids = pods.uid
        rates = self._pod_rates.update(((uids[i], counter[i], when_seen[i]) for i in with_cpu), poll_time)
        cpu = [nan] * n
        for i in with_cpu:
            rate = rates.get(uids[i])
            if rate is not None:
                cpu[i] = rate
        pod_usage = PodUsage(cpu=cpu, memory=memory, cpu_seconds=counter)
        return node_usage, pod_usage

    def _proxy_fetch(self, api: k8s.CoreV1Api) -> Fetch:
        """GET /api/v1/nodes/<node>/proxy/metrics/resource on the API client's own connection pool.

        The generated `connect_get_node_proxy_with_path` costs ~0.5 ms of CPU per call in argument
        validation, a fresh `Configuration` (which re-reads the proxy environment) and response wrapping,
        all under the GIL that 16 scraping threads share: a third of the scraping CPU at 5,000 nodes. The
        request here is the same one (same pool, TLS, credentials and retries), made straight on urllib3.
        """
        client = api.api_client
        cfg = client.configuration
        pool = client.rest_client.pool_manager
        base = cfg.host.rstrip("/")
        max_bytes = self.config.kubelet.max_response_bytes

        def fetch(target: ScrapeTarget, timeout: float) -> bytes:
            response = pool.request(
                "GET",
                f"{base}/api/v1/nodes/{quote(target.node, safe='')}/proxy/{_METRICS_PATH}",
                headers=self._auth_headers(cfg),
                timeout=urllib3.Timeout(total=timeout),
                preload_content=False,
            )
            if response.status != 200:
                body = read_limited(response, 64 * 1024, self._read_deadline)
                raise _api_exception(response.status, response.reason, body)
            return read_limited(response, max_bytes, self._read_deadline)

        return fetch

    @staticmethod
    def _auth_headers(cfg: k8s.Configuration) -> dict[str, str]:
        """The kubeconfig's header credentials (bearer token, refreshed by its hook when it has one)."""
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        headers = {"Accept": "text/plain"}
        # AuthSettings is a TypedDict, whose .values() types as object; each entry is an APIKeyAuthSetting
        settings = cast("dict[str, APIKeyAuthSetting]", cfg.auth_settings())
        for setting in settings.values():
            value = setting.get("value")
            if setting.get("in") == "header" and value:
                headers[setting["key"]] = value
        return headers

    def _direct_fetch(self) -> Fetch:
        """Straight to https://<InternalIP>:<port>/metrics/resource with the kubeconfig's credentials."""
        cfg = self._connect().configuration
        kubelet = self.config.kubelet
        if self._direct_pool is None:
            verify = not kubelet.insecure_skip_tls_verify
            if not verify:
                # Chosen in the config (self-signed kubelet certificates): say it once, not per request.
                log.warning(
                    "kubernetes source %s: kubelet TLS certificates are not verified "
                    "(kubelet.insecure_skip_tls_verify)",
                    self.name,
                )
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            self._direct_pool = urllib3.PoolManager(
                num_pools=max(64, kubelet.concurrency * 2),
                maxsize=1,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                ca_certs=cfg.ssl_ca_cert if verify else None,
                cert_file=cfg.cert_file,
                key_file=cfg.key_file,
                retries=urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0),
            )
        pool = self._direct_pool
        port_fixed = "port" in kubelet.model_fields_set
        max_bytes = kubelet.max_response_bytes

        def fetch(target: ScrapeTarget, timeout: float) -> bytes:
            if not target.address:
                raise KubeletAddressError("the node reports no InternalIP address")
            port = kubelet.port if port_fixed or not target.port else target.port
            host = f"[{target.address}]" if ":" in target.address else target.address
            response = pool.request(
                "GET",
                f"https://{host}:{port}/{_METRICS_PATH}",
                headers=self._auth_headers(cfg),
                timeout=urllib3.Timeout(total=timeout),
                preload_content=False,
            )
            if response.status != 200:
                body = read_limited(response, 64 * 1024, self._read_deadline)
                raise _api_exception(response.status, response.reason, body)
            return read_limited(response, max_bytes, self._read_deadline)

        return fetch

    @contextlib.contextmanager
    def _api_errors(self) -> Iterator[None]:
        """Turn client and transport errors of the lists into `SourceError`s with clear messages."""
        host = self._api_client.configuration.host if self._api_client is not None else "?"
        where = f"kubernetes source {self.name} ({host})"
        try:
            yield
        except k8s.ApiException as error:
            message = _status_message(error)
            if error.status == 401:
                self.close()  # re-read the kubeconfig next poll: credentials may have been rotated
                raise SourceError("unauthorized", f"{where}: 401 Unauthorized: the credentials were refused") from None
            if error.status == 403:
                raise SourceError(
                    "forbidden", f"{where}: 403 Forbidden: {message} (RBAC needs list nodes, list pods)"
                ) from None
            raise SourceError("api_error", f"{where}: HTTP {error.status}: {message}") from None
        except ListExpired as error:
            raise SourceError("list_expired", f"{where}: {error}") from None
        except InvalidResponse as error:
            raise SourceError("invalid_response", f"{where}: {error}") from None
        except ResponseLimitError as error:  # too_large, malformed (truncated), timeout (poll deadline)
            raise SourceError(error.reason, f"{where}: {error}") from None
        except urllib3.exceptions.MaxRetryError as error:
            cause = error.reason
            # (NewConnectionError subclasses ConnectTimeoutError in urllib3: refused is not slow)
            if isinstance(cause, urllib3.exceptions.TimeoutError) and not isinstance(
                cause, urllib3.exceptions.NewConnectionError
            ):
                raise SourceError("timeout", f"{where}: no answer in time ({type(cause).__name__})") from None
            raise SourceError("unreachable", f"{where}: cannot connect: {_transport_message(cause)}") from None
        except urllib3.exceptions.TimeoutError as error:
            raise SourceError("timeout", f"{where}: no answer in time ({type(error).__name__})") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise SourceError("unreachable", f"{where}: {_transport_message(error)}") from None


def _api_exception(status: int, reason: str | None, body: bytes) -> k8s.ApiException:
    error = k8s.ApiException(status=status, reason=reason or "")
    error.body = body.decode("utf-8", "replace")
    return error


def _status_message(error: k8s.ApiException) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    body: Any = error.body
    if body:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            status = orjson.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])[:300]
    return str(error.reason or "")


def _transport_message(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error)
    if isinstance(error, socket.gaierror | urllib3.exceptions.NameResolutionError):
        return f"name resolution failed ({text[:200]})"
    return text[:300]
