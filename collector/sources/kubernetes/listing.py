"""Paginated LISTs of nodes and pods, decoded from raw JSON straight into compact column tables.

The `kubernetes` client's model objects cost about 6x the CPU and 2.5x the memory of the raw JSON
(docs: README.md, "Performance"), so every list call passes `_preload_content=False`, each page is
decoded with orjson and reduced at once to the few fields capacityd needs; the page's dicts are then
dropped, so peak memory is one page plus the compact tables.

Pagination follows the API conventions: `limit` + `continue`; a `410 Gone` (reason `Expired`) on a
continuation means the snapshot was compacted away, and the list restarts from the beginning with a
fresh table, so a poll never mixes two snapshots.
"""

from __future__ import annotations

import contextlib
import gc
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from kubernetes.client.exceptions import ApiException

from collector.sources.http_limits import ResponseTruncated, read_bounded, remaining
from collector.sources.kubernetes.podrequests import Amounts, SpecError, effective_resources, parse_resource_list

__all__ = [
    "InvalidResponse",
    "ListExpired",
    "NodeTable",
    "PodTable",
    "list_paged",
    "parse_provider_id",
    "paused_gc",
    "pod_shape",
]

MAX_LIST_RESTARTS = 3
DEFAULT_MAX_PAGE_BYTES = 256 * 2**20
_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while bulk JSON is decoded and tabled.

    Decoding a 500-pod page creates ~100,000 container objects; each burst triggers collections that
    traverse every tracked object, including the tables built so far, which made decoding 5-10x slower
    at 150,000 pods. Nothing decoded here forms reference cycles (reference counting frees it all), so
    the collector can safely wait. Nested and concurrent users (several clusters) share one pause.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


_NOTE_LIMIT = 5  # per table: enough to diagnose, never a log flood


class InvalidResponse(Exception):
    """A list answer that is not a Kubernetes list (HTML error page, truncated JSON, ...)."""


class ListExpired(Exception):
    """The list snapshot expired more than MAX_LIST_RESTARTS times in a row."""


class PageTable(Protocol):
    def add(self, items: list[dict[str, Any]]) -> None: ...


T = TypeVar("T", bound=PageTable)


@dataclass
class ListStats:
    pages: int = 0
    restarts: int = 0


def list_paged(
    call: Callable[..., Any],
    new_table: Callable[[], T],
    *,
    page_size: int,
    timeout: float,
    what: str,
    stats: ListStats | None = None,
    max_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    deadline: float | None = None,
) -> T:
    """Run a LIST to completion through `call` (e.g. `CoreV1Api.list_node`) and fill a fresh table.

    `call` gets `limit`, `_continue`, `_preload_content=False` and `_request_timeout`. Raises the
    client's `ApiException` for HTTP errors other than an expired continue token, `InvalidResponse`
    for an answer that is not a list, and `ListExpired` when the snapshot keeps expiring. Each page is
    read with at most `max_bytes` and before `deadline` (time.monotonic()): `ResponseTooLarge`,
    `ResponseTruncated` (also for JSON that stops mid-document) and `DeadlineExceeded` otherwise.
    """
    stats = stats if stats is not None else ListStats()
    with paused_gc():
        return _list_paged(
            call,
            new_table,
            page_size=page_size,
            timeout=timeout,
            what=what,
            stats=stats,
            max_bytes=max_bytes,
            deadline=deadline,
        )


def _list_paged(
    call: Callable[..., Any],
    new_table: Callable[[], T],
    *,
    page_size: int,
    timeout: float,
    what: str,
    stats: ListStats,
    max_bytes: int,
    deadline: float | None,
) -> T:
    for _attempt in range(MAX_LIST_RESTARTS + 1):
        table = new_table()
        token: str | None = None
        try:
            while True:
                left = remaining(deadline, f"{what} list")
                request_timeout = timeout if left is None else min(timeout, left)
                kwargs: dict[str, Any] = {
                    "limit": page_size,
                    "_preload_content": False,
                    "_request_timeout": request_timeout,
                }
                if token:
                    kwargs["_continue"] = token
                response = call(**kwargs)
                body = read_bounded(
                    response, max_bytes=max_bytes, deadline=deadline, what=f"{what} list page {stats.pages + 1}"
                )
                stats.pages += 1
                page = _decode_list(body, what)
                table.add(page["items"])
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    return table
        except ApiException as error:
            if error.status == 410 and token:
                stats.restarts += 1
                continue  # the snapshot was compacted: start over for a consistent list
            raise
    raise ListExpired(f"{what} list: the continue token expired {MAX_LIST_RESTARTS + 1} times in a row")


def _decode_list(body: bytes, what: str) -> dict[str, Any]:
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if body[:1] == b"{" and error.pos >= len(body.rstrip()) - 1:
            # valid up to its last byte: the answer was cut off, not a page of something else
            raise ResponseTruncated(f"{what} list: the JSON answer stops after {len(body)} bytes ({error})") from None
        raise InvalidResponse(f"{what} list: answer is not JSON ({error}; starts {body[:60]!r})") from None
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        kind = page.get("kind") if isinstance(page, dict) else type(page).__name__
        raise InvalidResponse(f"{what} list: answer is not a list (kind {kind!r}, no 'items')")
    return page


# --- nodes ----------------------------------------------------------------------------------------

_PROVIDER_ID_RE = re.compile(r"^openstack://(?P<region>[^/]*)/(?P<uuid>[0-9a-fA-F-]{32,36})$")


def parse_provider_id(provider_id: str | None) -> str | None:
    """Nova server id from a cloud-provider-openstack providerID, else None.

    `openstack:///<uuid>` (default) and `openstack://<region>/<uuid>` (regional ids enabled).
    """
    if not provider_id:
        return None
    match = _PROVIDER_ID_RE.match(provider_id)
    return match["uuid"].lower() if match else None


@dataclass
class NodeTable:
    """Column lists of the nodes of one list; `skipped` counts nodes that could not be read."""

    name: list[str] = field(default_factory=list)
    uid: list[str | None] = field(default_factory=list)
    provider_id: list[str | None] = field(default_factory=list)
    unschedulable: list[bool] = field(default_factory=list)
    ready: list[bool] = field(default_factory=list)
    labels: list[dict[str, str]] = field(default_factory=list)
    taints: list[list[str]] = field(default_factory=list)
    capacity: list[Amounts] = field(default_factory=list)
    allocatable: list[Amounts] = field(default_factory=list)
    address: list[str | None] = field(default_factory=list)
    kubelet_port: list[int | None] = field(default_factory=list)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            try:
                self._add(item)
            except (SpecError, KeyError, TypeError, AttributeError) as error:
                self.skipped += 1
                if len(self.notes) < _NOTE_LIMIT:
                    name = _safe_name(item)
                    detail = error if isinstance(error, SpecError) else f"malformed object ({error!r})"
                    self.notes.append(f"node {name} skipped: {detail}")

    def _add(self, item: dict[str, Any]) -> None:
        meta = item["metadata"]
        spec = item.get("spec") or {}
        status = item.get("status") or {}
        name = meta["name"]
        capacity = parse_resource_list(status.get("capacity"), f"node {name}: status.capacity")
        allocatable = parse_resource_list(status.get("allocatable"), f"node {name}: status.allocatable")
        ready = False
        for condition in status.get("conditions") or ():
            if condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
        taints = []
        for taint in spec.get("taints") or ():
            value = taint.get("value")
            key = f"{taint['key']}={value}" if value else taint["key"]
            taints.append(f"{key}:{taint.get('effect', '')}")
        address = None
        for entry in status.get("addresses") or ():
            if entry.get("type") == "InternalIP":
                address = entry.get("address")
                break
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        self.name.append(name)
        self.uid.append(meta.get("uid"))
        self.provider_id.append(spec.get("providerID") or None)
        self.unschedulable.append(bool(spec.get("unschedulable")))
        self.ready.append(ready)
        self.labels.append(meta.get("labels") or {})
        self.taints.append(taints)
        self.capacity.append(capacity)
        self.allocatable.append(allocatable)
        self.address.append(address)
        self.kubelet_port.append(port if isinstance(port, int) and 0 < port < 65536 else None)

    def __len__(self) -> int:
        return len(self.name)


# --- pods -----------------------------------------------------------------------------------------


def pod_shape(
    owner_kind: str | None, owner_name: str | None, pod_name: str, template_hash: str | None, node: str | None
) -> str:
    """The pod's shape name `<ownerKind>/<ownerName>` (consumers.flavor).

    A ReplicaSet whose name is `<deployment>-<pod-template-hash>` (the pod carries that hash label)
    is reported as its Deployment, since ReplicaSets come and go with each rollout; a mirror pod of a
    static manifest (owner kind Node, name `<manifest>-<node>`) as `StaticPod/<manifest>`; a pod
    without a controller as `Pod/<name>`. Nothing else is guessed (a CronJob's Jobs stay Jobs).
    """
    if not owner_kind or not owner_name:
        return f"Pod/{pod_name}"
    if owner_kind == "ReplicaSet" and template_hash and owner_name.endswith("-" + template_hash):
        return f"Deployment/{owner_name[: -len(template_hash) - 1]}"
    if owner_kind == "Node" and node and pod_name.endswith("-" + node):
        return f"StaticPod/{pod_name[: -len(node) - 1]}"
    return f"{owner_kind}/{owner_name}"


@dataclass
class PodTable:
    """Column lists of the pods of one list; pods with unreadable resources are skipped and noted."""

    namespace: list[str] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)
    node: list[str | None] = field(default_factory=list)
    shape: list[str] = field(default_factory=list)
    requests: list[Amounts] = field(default_factory=list)
    limits: list[Amounts] = field(default_factory=list)
    node_selector: list[dict[str, str] | None] = field(default_factory=list)
    """Kept only for unscheduled pods (to name the pool they wait for)."""
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    _common: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    """One copy of each namespace, phase, node and shape name."""
    _uid_pages: list[str | list[str]] = field(default_factory=list, repr=False, compare=False)
    _name_pages: list[str | list[str]] = field(default_factory=list, repr=False, compare=False)
    _page_uid: list[str] = field(default_factory=list, repr=False, compare=False)
    _page_name: list[str] = field(default_factory=list, repr=False, compare=False)
    _columns: tuple[list[str], list[str]] | None = field(default=None, repr=False, compare=False)

    # Why uid and name are kept as one joined string per page (and namespace/phase/node/shape as shared
    # copies): decoding allocates fresh strings for every pod, and keeping them would leave ~6 live objects
    # per pod scattered through the memory that the next pages' temporary objects reuse. Decoding a page
    # then slowed as the table grew (the same 500-pod page: +15-35 % by 300,000 pods), so list decoding
    # grew faster than the list. Joined per page, a pod keeps no object of its own until the columns are
    # first read, when they are split out contiguously.

    @property
    def uid(self) -> list[str]:
        return self._materialized()[0]

    @property
    def name(self) -> list[str]:
        return self._materialized()[1]

    def _materialized(self) -> tuple[list[str], list[str]]:
        if self._columns is None or len(self._columns[0]) != len(self.phase):
            columns: tuple[list[str], list[str]] = ([], [])
            for pages, column in ((self._uid_pages, columns[0]), (self._name_pages, columns[1])):
                for page in pages:
                    column.extend(page.split("\0") if isinstance(page, str) else page)
            self._columns = columns
            # the split columns replace the joined pages (one copy in memory; later pages extend them)
            self._uid_pages, self._name_pages = [columns[0]], [columns[1]]
        return self._columns

    def add(self, items: list[dict[str, Any]]) -> None:
        uids, names = self._page_uid, self._page_name
        uids.clear()
        names.clear()
        for item in items:
            try:
                self._add(item)
            except (SpecError, KeyError, TypeError, AttributeError) as error:
                self.skipped += 1
                if len(self.notes) < _NOTE_LIMIT:
                    detail = error if isinstance(error, SpecError) else f"pod {_safe_name(item)}: malformed ({error!r})"
                    self.notes.append(f"{detail} (pod skipped)")
        for column, pages in ((uids, self._uid_pages), (names, self._name_pages)):
            if not column:
                continue
            joined = "\0".join(column)
            # (a NUL inside a value, impossible in a valid object, would misalign the split: keep that page as is)
            pages.append(joined if joined.count("\0") == len(column) - 1 else list(column))
        uids.clear()
        names.clear()

    def _add(self, item: dict[str, Any]) -> None:
        meta = item["metadata"]
        spec = item["spec"]
        status = item.get("status") or {}
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(uid, str)):
            raise TypeError("metadata.namespace, .name and .uid must be strings")
        requests, limits = effective_resources(spec, f"{namespace}/{name}")
        node = spec.get("nodeName") or None
        owner_kind = owner_name = None
        for owner in meta.get("ownerReferences") or ():
            if owner.get("controller") or owner_kind is None:
                owner_kind, owner_name = owner.get("kind"), owner.get("name")
        labels = meta.get("labels") or {}
        common = self._common
        shape = pod_shape(owner_kind, owner_name, name, labels.get("pod-template-hash"), node)
        phase = status.get("phase") or "Unknown"
        if not isinstance(phase, str) or not (node is None or isinstance(node, str)):
            raise TypeError("status.phase and spec.nodeName must be strings")
        selector = spec.get("nodeSelector") if node is None else None
        # (everything is read and checked above: the columns below are appended all or none)
        self._page_uid.append(uid)
        self.namespace.append(common.setdefault(namespace, namespace))
        self._page_name.append(name)
        self.phase.append(common.setdefault(phase, phase))
        self.node.append(node if node is None else common.setdefault(node, node))
        self.shape.append(common.setdefault(shape, shape))
        self.requests.append(requests)
        self.limits.append(limits)
        self.node_selector.append(selector)

    def __len__(self) -> int:
        return len(self.phase)


def _safe_name(item: Any) -> str:
    try:
        meta = item["metadata"]
        return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])
    except (KeyError, TypeError):
        return "<unnamed>"
