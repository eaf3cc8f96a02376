"""A loopback stand-in for Nova + Placement, for the demo and for fault-injection tests.

It answers the read API capacityd uses the way Nova 34 (max microversion 2.104) and Placement 16
(max 1.39) do — shapes taken from the real captures in the fixtures: version discovery documents,
`OpenStack-API-Version` request/response headers and 406 for an unsupported microversion,
microversion-dependent bodies (hypervisor uuids and stats fields, embedded flavors at 2.47,
flavor extra_specs at 2.61, aggregate uuids at 2.41), marker/limit paging with `*_links`, and the
services' own error bodies (Placement's `{"errors": [...]}`, Nova's `{"itemNotFound": {...}}`).
There is no Keystone: like Nova and Placement behind `noauth`, a request must carry the
configured `X-Auth-Token` (clouds.yaml `auth_type: admin_token`), else 401.

Unchanged openstacksdk talks to it through a generated clouds.yaml (`write_clouds_yaml`).
The cloud is a plain data model (`StandinCloud`); `from_demo_estate` renders the demo estate, with
servers that appear as time passes (`Server.visible_from`) so the demo's demand grows while it runs.

`StandinServer.inject(...)` makes one endpoint fail (5xx, 401, a malformed body, a delay) for a
number of requests: the bad-input tests use it. `inject_transfer(...)` keeps the real answer but
spoils how it travels — `oversize` (padded to N bytes, with or without Content-Length), `drip` (one
byte per interval) or `truncated` (Content-Length promises more than is sent before the connection
closes) — for the source's size cap and poll deadline. Loopback only; never expose it.

Kept in one module (over 500 lines on purpose): one fake service whose model, microversion-dependent documents
and fault injection share state; its answers are checked field by field against the real captures as a whole.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

PLACEMENT_VERSIONS = ((1, 0), (1, 39))
NOVA_VERSIONS = ((2, 1), (2, 104))
MIB = 2**20
GIB = 2**30


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Provider:
    uuid: str
    name: str
    inventories: dict[str, dict[str, float]]
    parent: str | None = None
    root: str | None = None
    traits: list[str] = field(default_factory=list)
    aggregates: list[str] = field(default_factory=list)
    base_generation: int = 1


@dataclass
class Flavor:
    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    extra_specs: dict[str, str] = field(default_factory=dict)
    is_public: bool = True
    projects: list[str] = field(default_factory=list)
    ephemeral: int = 0
    swap: int = 0


@dataclass
class Server:
    id: str
    name: str
    flavor: str
    """Flavor id."""
    host: str | None
    project: str
    status: str
    created: datetime
    allocations: dict[str, dict[str, int]]
    """Provider uuid -> {resource class: amount}."""
    zone: str | None = None
    visible_from: float = 0.0
    """Wall-clock time (epoch seconds) from which the server exists."""


@dataclass
class Hypervisor:
    id: str
    hostname: str
    service_host: str
    enabled: bool = True
    up: bool = True
    disabled_reason: str | None = None
    service_id: str = field(default_factory=lambda: str(uuidlib.uuid4()))


@dataclass
class Aggregate:
    id: int
    uuid: str
    name: str
    hosts: list[str]
    metadata: dict[str, str]


@dataclass
class StandinCloud:
    providers: dict[str, Provider] = field(default_factory=dict)
    hypervisors: list[Hypervisor] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    flavors: dict[str, Flavor] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    quota_limits: dict[str, int] = field(default_factory=lambda: {"cores": 400, "ram": 1638400, "instances": 200})
    clock: Callable[[], float] = time.time

    _view: tuple[tuple[int, int, int], tuple[list[Server], dict[str, dict[str, float]], dict[str, int]]] | None = field(
        default=None, repr=False
    )

    def _state(self) -> tuple[list[Server], dict[str, dict[str, float]], dict[str, int]]:
        """Visible servers, usages and allocation counts per provider (recomputed when time or servers move)."""
        now = self.clock()
        visible = [s for s in self.servers if s.visible_from <= now]
        key = (len(self.servers), len(visible), id(self.servers))
        if self._view is not None and self._view[0] == key:
            return self._view[1]
        usage: dict[str, dict[str, float]] = {}
        touched: dict[str, int] = {}
        for server in visible:
            for rp, resources in server.allocations.items():
                touched[rp] = touched.get(rp, 0) + 1
                for rc, amount in resources.items():
                    usage.setdefault(rp, {}).setdefault(rc, 0)
                    usage[rp][rc] += amount
        self._view = (key, (visible, usage, touched))
        return visible, usage, touched

    def visible_servers(self) -> list[Server]:
        return self._state()[0]

    def usages(self) -> dict[str, dict[str, float]]:
        return self._state()[1]

    def generation(self, rp: str) -> int:
        """Placement bumps a provider's generation on every allocation change: mimic that."""
        return self.providers[rp].base_generation + self._state()[2].get(rp, 0)

    def changed(self) -> None:
        """Call after editing servers or allocations in place (tests do)."""
        self._view = None


# ------------------------------------------------------------------------------------------ HTTP


class HTTPError(Exception):
    def __init__(self, status: int, title: str, detail: str, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra or {}


NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    409: "conflictingRequest",
    503: "serviceUnavailable",
}


@dataclass
class Fault:
    """An injected failure: requests whose path matches `pattern` get `status`/`body` (`times` times)."""

    service: str
    pattern: re.Pattern[str]
    times: int
    status: int = 503
    body: bytes | None = None
    delay: float = 0.0
    transfer: str | None = None
    """None (answer `status`/`body`), or how the real answer is spoilt on the wire: `oversize`,
    `drip`, `truncated` (see `StandinServer.inject_transfer`)."""
    size: int = 0
    """`oversize`: the body is padded with JSON whitespace to this many bytes."""
    chunked: bool = False
    """`oversize`: sent with chunked transfer encoding (no Content-Length to refuse it by)."""
    interval: float = 1.0
    """`drip`: seconds between two bytes."""
    sent: int = 0
    """Body bytes written so far (to see how much of a spoilt answer the client took before hanging up)."""


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up mid-answer (a timed-out poll, a `hang` fault) is expected here, not a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class StandinServer:
    """Serves a StandinCloud on 127.0.0.1: Placement under /placement, Nova under /compute/v2.1."""

    def __init__(self, cloud: StandinCloud, token: str = "admin", port: int = 0):
        self.cloud = cloud
        self.token = token
        self.faults: list[Fault] = []
        self.versions = {"placement": PLACEMENT_VERSIONS, "compute": NOVA_VERSIONS}
        """(min, max) microversion per service; lower the max to play an older cloud."""
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._connections: set[Any] = set()
        handler = _make_handler(self)
        self.httpd = _QuietServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.placement_url = f"{self.base}/placement"
        self.compute_url = f"{self.base}/compute/v2.1"
        self._thread: threading.Thread | None = None

    def start(self) -> StandinServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="openstack-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections, like a service that went away."""
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def inject(
        self,
        service: str,
        pattern: str,
        status: int = 503,
        times: int = 1,
        body: bytes | None = None,
        delay: float = 0.0,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(service, re.compile(pattern), times, status, body, delay))

    def inject_transfer(
        self,
        service: str,
        pattern: str,
        transfer: str,
        times: int = 1,
        *,
        size: int = 0,
        chunked: bool = False,
        interval: float = 1.0,
    ) -> Fault:
        """Serve the real answer for matching paths, but `oversize` / `drip` / `truncated` on the wire."""
        if transfer not in ("oversize", "drip", "truncated"):
            raise ValueError(f"unknown transfer fault {transfer!r}")
        with self._lock:
            fault = Fault(service, re.compile(pattern), times, 200, None, 0.0, transfer, size, chunked, interval)
            self.faults.append(fault)
        return fault

    def take_fault(self, service: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.service == service and fault.times > 0 and fault.pattern.search(path):
                    fault.times -= 1
                    return fault
        return None

    def write_clouds_yaml(self, path: Path, cloud: str, region: str = "RegionOne") -> Path:
        entry = {
            "auth_type": "admin_token",
            "auth": {"token": self.token, "endpoint": self.placement_url},
            "region_name": region,
            "placement_endpoint_override": self.placement_url,
            "compute_endpoint_override": self.compute_url,
        }
        path.write_text(json.dumps({"clouds": {cloud: entry}}, indent=2))
        return path


def _make_handler(server: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            super().finish()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            query = {k: v for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            service = "placement" if path.startswith("/placement") else "compute"
            request_id = f"req-{uuidlib.uuid4()}"
            with server._lock:
                server.requests.append((service, self.path))
            headers: dict[str, str] = {"x-openstack-request-id": request_id}
            fault = None
            try:
                fault = server.take_fault(service, self.path)
                if fault is not None and fault.transfer is None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.body is not None or fault.status != 200:
                        self._send(
                            fault.status,
                            fault.body
                            if fault.body is not None
                            else _error_body(service, fault.status, "Injected failure", request_id),
                            headers,
                        )
                        return
                if service == "placement":
                    status, body, extra = _placement(
                        server, path[len("/placement") :] or "/", query, self.headers, request_id
                    )
                else:
                    status, body, extra = _compute(
                        server, path[len("/compute") :] or "/", query, self.headers, request_id
                    )
                headers.update(extra)
            except HTTPError as error:
                status = error.status
                body = _error_body(service, error.status, error.title, request_id, error.detail, error.extra)
                headers.update(_version_headers(service, None))
            if fault is not None and fault.transfer is not None:
                self._send_spoilt(fault, status, body, headers)
                return
            self._send(status, body, headers)

        def _send_spoilt(self, fault: Fault, status: int, body: bytes, headers: dict[str, str]) -> None:
            """The real answer, spoilt on the wire as `fault.transfer` says."""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            try:
                if fault.transfer == "oversize":
                    body = body + b" " * max(fault.size - len(body), 0)  # still valid JSON, just big
                    if fault.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for start in range(0, len(body), 1 << 16):
                            piece = body[start : start + (1 << 16)]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                            fault.sent += len(piece)
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    fault.sent += len(body)
                elif fault.transfer == "drip":
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.flush()
                    for index in range(len(body)):
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                        fault.sent += 1
                        time.sleep(fault.interval)
                else:  # truncated: promise the whole body, send half of it, hang up
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    fault.sent += len(body) // 2
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up on us: that is the point

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _error_body(
    service: str,
    status: int,
    title: str,
    request_id: str,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    detail = detail or title
    if service == "placement":
        error = {"status": status, "title": title, "detail": detail, "request_id": request_id, **(extra or {})}
        if status != 406:
            error["code"] = "placement.undefined_code"
        return json.dumps({"errors": [error]}).encode()
    name = NOVA_FAULT_NAMES.get(status, "computeFault")
    return json.dumps({name: {"code": status, "message": detail}}).encode()


def _version_headers(service: str, version: tuple[int, int] | None) -> dict[str, str]:
    if version is None:
        return {"Vary": "OpenStack-API-Version"}
    text = f"{version[0]}.{version[1]}"
    headers = {"OpenStack-API-Version": f"{service} {text}", "Vary": "OpenStack-API-Version"}
    if service == "compute":
        headers["X-OpenStack-Nova-API-Version"] = text
        headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
    return headers


def _negotiate(service: str, headers: Any, versions: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int]:
    """The microversion a request asked for (min when absent, max for 'latest'); 406 when out of range."""
    low, high = versions
    asked = None
    for value in headers.get_all("OpenStack-API-Version") or []:
        name, _, version = value.strip().partition(" ")
        if name == service:
            asked = version.strip()
    if asked is None and service == "compute":
        asked = headers.get("X-OpenStack-Nova-API-Version")
    if not asked:
        return low
    if asked == "latest":
        return high
    match = re.fullmatch(r"(\d+)\.(\d+)", asked)
    if not match:
        raise HTTPError(400, "Bad Request", f"Invalid microversion: {asked!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if not low <= version <= high:
        if service == "placement":
            raise HTTPError(
                406,
                "Not Acceptable",
                "The resource could not be generated that was acceptable to your browser (content of type "
                f"application/json. \n\n Invalid microversion: Unacceptable version header: {asked}",
                {"max_version": f"{high[0]}.{high[1]}", "min_version": f"{low[0]}.{low[1]}"},
            )
        raise HTTPError(
            406,
            "Not Acceptable",
            f"Version {asked} is not supported by the API. Minimum is {low[0]}.{low[1]} and maximum is "
            f"{high[0]}.{high[1]}.",
        )
    return version


def _check_token(headers: Any) -> str | None:
    token: str | None = headers.get("X-Auth-Token")
    return token


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


# ------------------------------------------------------------------------------------------ Placement


def _placement(
    server: StandinServer, path: str, query: dict[str, list[str]], headers: Any, request_id: str
) -> tuple[int, bytes, dict[str, str]]:
    cloud = server.cloud
    if path in ("/", ""):
        low, high = server.versions["placement"]
        doc = {
            "versions": [
                {
                    "id": "v1.0",
                    "max_version": f"{high[0]}.{high[1]}",
                    "min_version": f"{low[0]}.{low[1]}",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": ""}],
                }
            ]
        }
        return 200, _json(doc), {}
    if _check_token(headers) != server.token:
        raise HTTPError(401, "Unauthorized", "The request you have made requires authentication.")
    version = _negotiate("placement", headers, server.versions["placement"])
    extra = _version_headers("placement", version)
    parts = [p for p in path.split("/") if p]
    usage = cloud.usages()

    def provider_doc(p: Provider) -> dict[str, Any]:
        doc: dict[str, Any] = {"uuid": p.uuid, "name": p.name, "generation": cloud.generation(p.uuid)}
        links = ["self", "inventories", "usages"]
        if version >= (1, 1):
            links.append("aggregates")
        if version >= (1, 6):
            links.append("traits")
        if version >= (1, 11):
            links.append("allocations")
        doc["links"] = [
            {"rel": rel, "href": f"/resource_providers/{p.uuid}" + ("" if rel == "self" else f"/{rel}")}
            for rel in links
        ]
        if version >= (1, 14):
            doc["parent_provider_uuid"] = p.parent
            doc["root_provider_uuid"] = p.root or p.uuid
        return doc

    def find(rp: str) -> Provider:
        provider = cloud.providers.get(rp)
        if provider is None:
            raise HTTPError(
                404,
                "Not Found",
                "The resource could not be found.\n\n No resource provider with uuid "
                f"{rp} found : No resource provider with uuid {rp} found  ",
            )
        return provider

    if parts == ["resource_providers"]:
        providers = list(cloud.providers.values())
        for trait in query.get("required", []):
            if version < (1, 18):
                raise HTTPError(400, "Bad Request", "Invalid query string parameters: 'required' was unexpected")
            for name in trait.split(","):
                forbidden = name.startswith("!")
                name = name.lstrip("!")
                known = {t for p in cloud.providers.values() for t in p.traits}
                if name not in known and not name.startswith(("COMPUTE_", "HW_", "MISC_", "STORAGE_")):
                    raise HTTPError(400, "Bad Request", f"No such trait(s): {name}.")
                providers = [p for p in providers if (name in p.traits) != forbidden]
        for aggregate in query.get("member_of", []):
            wanted = set(aggregate.removeprefix("in:").split(","))
            providers = [p for p in providers if wanted & set(p.aggregates)]
        for tree in query.get("in_tree", []):
            root = find(tree).root or tree
            providers = [p for p in providers if (p.root or p.uuid) == root]
        return 200, _json({"resource_providers": [provider_doc(p) for p in providers]}), extra
    if parts == ["traits"]:
        traits = sorted({t for p in cloud.providers.values() for t in p.traits})
        for name in query.get("name", []):
            if name.startswith("startswith:"):
                traits = [t for t in traits if t.startswith(name.removeprefix("startswith:"))]
            elif name.startswith("in:"):
                traits = [t for t in traits if t in name.removeprefix("in:").split(",")]
        return 200, _json({"traits": traits}), extra
    if parts == ["usages"]:
        project = (query.get("project_id") or [""])[0]
        totals: dict[str, float] = {}
        for s in cloud.visible_servers():
            if s.project == project:
                for resources in s.allocations.values():
                    for rc, amount in resources.items():
                        totals[rc] = totals.get(rc, 0) + amount
        return 200, _json({"usages": totals}), extra
    if len(parts) >= 2 and parts[0] == "resource_providers":
        provider = find(parts[1])
        generation = cloud.generation(provider.uuid)
        if len(parts) == 2:
            return 200, _json(provider_doc(provider)), extra
        what = parts[2]
        if what == "inventories":
            return 200, _json({"resource_provider_generation": generation, "inventories": provider.inventories}), extra
        if what == "usages":
            return (
                200,
                _json(
                    {
                        "resource_provider_generation": generation,
                        "usages": {rc: usage.get(provider.uuid, {}).get(rc, 0) for rc in provider.inventories},
                    }
                ),
                extra,
            )
        if what == "traits":
            return 200, _json({"resource_provider_generation": generation, "traits": provider.traits}), extra
        if what == "aggregates":
            body: dict[str, Any] = {"aggregates": provider.aggregates}
            if version >= (1, 19):
                body["resource_provider_generation"] = generation
            return 200, _json(body), extra
        if what == "allocations":
            allocations = {
                s.id: {"resources": s.allocations[provider.uuid]}
                for s in cloud.visible_servers()
                if provider.uuid in s.allocations
            }
            return 200, _json({"resource_provider_generation": generation, "allocations": allocations}), extra
    raise HTTPError(404, "Not Found", "The resource could not be found.")


# ------------------------------------------------------------------------------------------ Nova


def _compute(
    server: StandinServer, path: str, query: dict[str, list[str]], headers: Any, request_id: str
) -> tuple[int, bytes, dict[str, str]]:
    cloud = server.cloud
    base = server.compute_url
    high = "{}.{}".format(*server.versions["compute"][1])
    if path in ("/", ""):
        return (
            200,
            _json(
                {
                    "versions": [
                        {
                            "id": "v2.0",
                            "status": "DEPRECATED",
                            "version": "",
                            "min_version": "",
                            "updated": "2025-07-04T12:00:00Z",
                            "links": [{"rel": "self", "href": f"{server.base}/compute/v2/"}],
                        },
                        {
                            "id": "v2.1",
                            "status": "CURRENT",
                            "version": high,
                            "min_version": "2.1",
                            "updated": "2013-07-23T11:33:21Z",
                            "links": [{"rel": "self", "href": f"{base}/"}],
                        },
                    ]
                }
            ),
            {},
        )
    if path in ("/v2.1", "/v2.1/"):
        return (
            200,
            _json(
                {
                    "version": {
                        "id": "v2.1",
                        "status": "CURRENT",
                        "version": high,
                        "min_version": "2.1",
                        "updated": "2013-07-23T11:33:21Z",
                        "links": [
                            {"rel": "self", "href": f"{base}/"},
                            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
                        ],
                        "media-types": [
                            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
                        ],
                    }
                }
            ),
            {"x-compute-request-id": request_id},
        )
    if _check_token(headers) != server.token:
        raise HTTPError(401, "Unauthorized", "The request you have made requires authentication.")
    version = _negotiate("compute", headers, server.versions["compute"])
    extra = {**_version_headers("compute", version), "x-compute-request-id": request_id}
    parts = [p for p in path.removeprefix("/v2.1").split("/") if p]
    flavors = cloud.flavors

    if parts == ["os-hypervisors", "detail"]:
        items = [_hypervisor_doc(h, version, cloud) for h in cloud.hypervisors]
        return 200, _page(items, "hypervisors", query, version >= (2, 33), f"{base}/os-hypervisors/detail"), extra
    if parts == ["servers", "detail"]:
        if (query.get("all_tenants") or ["0"])[0] not in ("1", "True", "true", ""):
            raise HTTPError(400, "Bad Request", "all_tenants must be set for this stand-in")
        # Page over the model and render only the page: a 10k-server cloud stays cheap to serve.
        page, links = _page_of(cloud.visible_servers(), query, f"{base}/servers/detail")
        body = {"servers": [_server_doc(s, version, flavors, base) for s in page]}
        if links:
            body["servers_links"] = links
        return 200, _json(body), extra
    if parts == ["flavors", "detail"]:
        is_public = (query.get("is_public") or ["true"])[0].lower()
        selected = [f for f in flavors.values() if is_public == "none" or f.is_public == (is_public != "false")]
        items = [_flavor_doc(f, version, base) for f in selected]
        return 200, _page(items, "flavors", query, True, f"{base}/flavors/detail"), extra
    if len(parts) == 3 and parts[0] == "flavors":
        flavor = flavors.get(parts[1])
        if flavor is None:
            raise HTTPError(404, "Not Found", f"Flavor {parts[1]} could not be found.")
        if parts[2] == "os-extra_specs":
            return 200, _json({"extra_specs": flavor.extra_specs}), extra
        if parts[2] == "os-flavor-access":
            if flavor.is_public:
                raise HTTPError(404, "Not Found", "Access list not available for public flavors.")
            return (
                200,
                _json({"flavor_access": [{"flavor_id": flavor.id, "tenant_id": p} for p in flavor.projects]}),
                extra,
            )
    if parts == ["os-aggregates"]:
        return 200, _json({"aggregates": [_aggregate_doc(a, version) for a in cloud.aggregates]}), extra
    if parts == ["os-services"]:
        services = [
            {
                "binary": "nova-compute",
                "host": h.service_host,
                "id": h.service_id if version >= (2, 53) else index + 1,
                "zone": _zone_of(cloud, h.service_host),
                "status": "enabled" if h.enabled else "disabled",
                "state": "up" if h.up else "down",
                "updated_at": _iso(datetime.now(UTC)),
                "disabled_reason": h.disabled_reason,
                **({"forced_down": False} if version >= (2, 11) else {}),
            }
            for index, h in enumerate(cloud.hypervisors)
        ]
        return 200, _json({"services": services}), extra
    if len(parts) == 3 and parts[0] == "os-quota-sets" and parts[2] == "detail":
        project = parts[1]
        mine = [s for s in cloud.visible_servers() if s.project == project]
        cores = sum(flavors[s.flavor].vcpus for s in mine if s.flavor in flavors)
        ram = sum(flavors[s.flavor].ram for s in mine if s.flavor in flavors)
        used = {"cores": cores, "ram": ram, "instances": len(mine)}
        quota = {
            "id": project,
            **{
                k: {"limit": cloud.quota_limits[k], "in_use": used[k], "reserved": 0}
                for k in ("cores", "ram", "instances")
            },
        }
        return 200, _json({"quota_set": quota}), extra
    raise HTTPError(404, "Not Found", "The resource could not be found.")


def _page_of(items: list[Any], query: dict[str, list[str]], href: str) -> tuple[list[Any], list[dict[str, str]]]:
    """`_page` over model objects with an `id`: the page and its next link (if full and more follow)."""
    marker = next(iter(query.get("marker") or []), None)
    if marker is not None:
        position = next((i for i, item in enumerate(items) if str(item.id) == marker), None)
        if position is None:
            raise HTTPError(400, "Bad Request", f"marker [{marker}] not found")
        items = items[position + 1 :]
    limit = min(int((query.get("limit") or ["1000"])[0]), 1000)
    page = items[:limit]
    links = []
    if len(page) == limit and len(items) > limit:
        # Like Nova, the next link keeps the request's other parameters (all_tenants, filters).
        kept = [(k, v) for k, values in query.items() if k not in ("limit", "marker") for v in values]
        params = urlencode([*kept, ("limit", limit), ("marker", page[-1].id)])
        links = [{"rel": "next", "href": f"{href}?{params}"}]
    return page, links


def _page(items: list[dict[str, Any]], key: str, query: dict[str, list[str]], pageable: bool, href: str) -> bytes:
    """Nova's marker/limit paging: items after `marker`, at most `limit`, a next link when full."""
    if pageable:
        marker = next(iter(query.get("marker") or []), None)
        if marker is not None:
            ids = [str(i["id"]) for i in items]
            if marker not in ids:
                raise HTTPError(400, "Bad Request", f"marker [{marker}] not found")
            items = items[ids.index(marker) + 1 :]
        limit = int((query.get("limit") or ["1000"])[0])
        limit = min(limit, 1000)
        page = items[:limit]
        body: dict[str, Any] = {key: page}
        if len(page) == limit and len(items) > limit:
            body[f"{key}_links"] = [{"rel": "next", "href": f"{href}?limit={limit}&marker={page[-1]['id']}"}]
        return _json(body)
    return _json({key: items})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zone_of(cloud: StandinCloud, service_host: str) -> str:
    for aggregate in cloud.aggregates:
        if service_host in aggregate.hosts and "availability_zone" in aggregate.metadata:
            return aggregate.metadata["availability_zone"]
    return "nova"


def _hypervisor_doc(h: Hypervisor, version: tuple[int, int], cloud: StandinCloud) -> dict[str, Any]:
    numeric = cloud.hypervisors.index(h) + 1
    doc: dict[str, Any] = {
        "id": h.id if version >= (2, 53) else numeric,
        "hypervisor_hostname": h.hostname,
        "state": "up" if h.up else "down",
        "status": "enabled" if h.enabled else "disabled",
        "hypervisor_type": "QEMU",
        "hypervisor_version": 8002000,
        "host_ip": "192.0.2.10",
        "service": {
            "id": h.service_id if version >= (2, 53) else numeric + 100,
            "host": h.service_host,
            "disabled_reason": h.disabled_reason,
        },
    }
    if version < (2, 88):
        provider = cloud.providers.get(h.id)
        inventory = provider.inventories if provider else {}
        used = cloud.usages().get(h.id, {})
        doc.update(
            {
                "vcpus": int(inventory.get("VCPU", {}).get("total", 0) + inventory.get("PCPU", {}).get("total", 0)),
                "memory_mb": int(inventory.get("MEMORY_MB", {}).get("total", 0)),
                "local_gb": int(inventory.get("DISK_GB", {}).get("total", 0)),
                "vcpus_used": int(used.get("VCPU", 0) + used.get("PCPU", 0)),
                "memory_mb_used": int(used.get("MEMORY_MB", 0)),
                "local_gb_used": int(used.get("DISK_GB", 0)),
                "free_ram_mb": int(inventory.get("MEMORY_MB", {}).get("total", 0) - used.get("MEMORY_MB", 0)),
                "free_disk_gb": int(inventory.get("DISK_GB", {}).get("total", 0) - used.get("DISK_GB", 0)),
                "current_workload": 0,
                "running_vms": sum(1 for s in cloud.visible_servers() if s.host == h.hostname),
                "disk_available_least": 0,
                "cpu_info": (
                    {
                        "arch": "x86_64",
                        "model": "Cascadelake-Server",
                        "vendor": "Intel",
                        "features": [],
                        "topology": {"cores": 1, "threads": 1, "sockets": 1},
                    }
                    if version >= (2, 28)
                    else "{}"
                ),
            }
        )
    else:
        doc["uptime"] = None
    return doc


def _flavor_doc(f: Flavor, version: tuple[int, int], base: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f.id,
        "name": f.name,
        "ram": f.ram,
        "disk": f.disk,
        "swap": f.swap or "",
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
        "OS-FLV-DISABLED:disabled": False,
        "vcpus": f.vcpus,
        "os-flavor-access:is_public": f.is_public,
        "rxtx_factor": 1.0,
        "links": [{"rel": "self", "href": f"{base}/flavors/{f.id}"}],
    }
    if version >= (2, 55):
        doc["description"] = None
    if version >= (2, 61):
        doc["extra_specs"] = dict(f.extra_specs)
    if version >= (2, 102):
        doc.pop("rxtx_factor")
        doc.pop("OS-FLV-DISABLED:disabled")
    return doc


def _aggregate_doc(a: Aggregate, version: tuple[int, int]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": a.id,
        "name": a.name,
        "hosts": list(a.hosts),
        "metadata": dict(a.metadata),
        "availability_zone": a.metadata.get("availability_zone"),
        "created_at": "2026-01-01T00:00:00.000000",
        "updated_at": None,
        "deleted_at": None,
        "deleted": False,
    }
    if version >= (2, 41):
        doc["uuid"] = a.uuid
    return doc


def _server_doc(s: Server, version: tuple[int, int], flavors: dict[str, Flavor], base: str) -> dict[str, Any]:
    flavor = flavors.get(s.flavor)
    doc: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "status": s.status,
        "tenant_id": s.project,
        "user_id": "demo",
        "created": _iso(s.created),
        "updated": _iso(s.created),
        "addresses": {},
        "accessIPv4": "",
        "accessIPv6": "",
        "hostId": "",
        "image": {"id": "155d900f-4e14-4e4c-a73d-069cbf4541e6", "links": []},
        "metadata": {},
        "links": [{"rel": "self", "href": f"{base}/servers/{s.id}"}],
        "OS-EXT-AZ:availability_zone": s.zone or "",
        "OS-EXT-SRV-ATTR:host": s.host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{s.id[:8]}",
        "OS-EXT-STS:vm_state": {"ACTIVE": "active", "SHUTOFF": "stopped", "PAUSED": "paused"}.get(s.status, "active"),
        "OS-EXT-STS:task_state": None,
        "OS-EXT-STS:power_state": 1 if s.status == "ACTIVE" else 4,
        "os-extended-volumes:volumes_attached": [],
    }
    if version >= (2, 47) and flavor is not None:
        doc["flavor"] = {
            "vcpus": flavor.vcpus,
            "ram": flavor.ram,
            "disk": flavor.disk,
            "ephemeral": flavor.ephemeral,
            "swap": flavor.swap,
            "original_name": flavor.name,
            "extra_specs": dict(flavor.extra_specs),
        }
    else:
        doc["flavor"] = {"id": s.flavor, "links": [{"rel": "bookmark", "href": f"{base}/flavors/{s.flavor}"}]}
    if version >= (2, 96):
        doc["pinned_availability_zone"] = None
    if version >= (2, 100):
        doc["scheduler_hints"] = {}
    return doc


# ------------------------------------------------------------------------------------------ the demo


def from_demo_estate(
    estate: Any,
    start: float | None = None,
    growth_every: float = 60.0,
    growth_count: int = 240,
    clock: Callable[[], float] = time.time,
) -> StandinCloud:
    """Render `collector.demo.model.Estate` as a StandinCloud.

    Servers of the model exist from the start; on top, one more server is booted every
    `growth_every` seconds after `start` (first fit, the same flavor mix) so demand grows while the
    demo runs — the same way a real cloud's usage creeps up between polls.
    """
    from collector.demo.model import demo_uuid

    start = clock() if start is None else start
    cloud = StandinCloud(clock=clock)
    aggregate_by_name = {a.name: a for a in estate.aggregates}
    for index, aggregate in enumerate(estate.aggregates, start=1):
        metadata = dict(aggregate.metadata)
        if aggregate.zone:
            metadata["availability_zone"] = aggregate.zone
        hosts = [h.name for h in estate.hosts if aggregate.name in h.aggregates]
        cloud.aggregates.append(Aggregate(index, aggregate.uuid, aggregate.name, hosts, metadata))

    gpu_child: dict[str, str] = {}
    for host in estate.hosts:
        inventories: dict[str, dict[str, float]] = {}
        if host.vcpus:
            inventories["VCPU"] = _inventory(host.vcpus, host.reserved_cpus, host.cpu_allocation_ratio)
        if host.pcpus:
            inventories["PCPU"] = _inventory(host.pcpus, 0, 1.0)
        inventories["MEMORY_MB"] = _inventory(
            host.memory_bytes // MIB, host.reserved_memory_bytes // MIB, host.ram_allocation_ratio
        )
        if host.disk_bytes:
            inventories["DISK_GB"] = _inventory(host.disk_bytes // GIB, 0, 1.0)
        traits = [*host.traits, "COMPUTE_NET_ATTACH_INTERFACE", "COMPUTE_VOLUME_MULTI_ATTACH"]
        if host.disabled:
            traits.append("COMPUTE_STATUS_DISABLED")
        aggregates = [aggregate_by_name[a].uuid for a in host.aggregates]
        cloud.providers[host.uuid] = Provider(
            host.uuid, host.name, inventories, traits=sorted(traits), aggregates=aggregates, base_generation=5
        )
        if host.gpus:
            child = demo_uuid("gpu", host.name)
            gpu_child[host.name] = child
            cloud.providers[child] = Provider(
                child,
                f"{host.name}_pci_0000_3b_00_0",
                {"VGPU": _inventory(host.gpus, 0, 1.0)},
                parent=host.uuid,
                root=host.uuid,
                traits=["OWNER_NOVA"],
                base_generation=2,
            )
        cloud.hypervisors.append(
            Hypervisor(
                host.uuid,
                host.name,
                host.name,
                enabled=not host.disabled,
                disabled_reason="hardware maintenance" if host.disabled else None,
                service_id=demo_uuid("service", host.name),
            )
        )
    shared: dict[str, str] = {}
    for zone, size in estate.shared_storage_bytes.items():
        rp = demo_uuid("shared-storage", zone)
        shared[zone] = rp
        zone_aggregate = next(a.uuid for a in estate.aggregates if a.zone == zone)
        cloud.providers[rp] = Provider(
            rp,
            f"shared-storage-{zone}",
            {"DISK_GB": _inventory(size // GIB, 100, 1.0, max_unit=2000)},
            traits=["MISC_SHARES_VIA_AGGREGATE", "STORAGE_DISK_SSD"],
            aggregates=[zone_aggregate],
            base_generation=3,
        )
    for flavor in estate.flavors:
        cloud.flavors[flavor.id] = Flavor(
            flavor.id,
            flavor.name,
            flavor.vcpus,
            flavor.ram_mb,
            flavor.disk_gb,
            dict(flavor.extra_specs),
            flavor.is_public,
            list(flavor.projects),
        )
    host_by_name = {h.name: h for h in estate.hosts}
    for server in estate.servers:
        host = host_by_name[server.host]
        cloud.servers.append(
            Server(
                server.id,
                server.name,
                estate.flavor(server.flavor).id,
                host.name,
                server.project,
                server.status,
                server.created_at,
                _allocations(estate.flavor(server.flavor), host, gpu_child, shared),
                zone=host.zone,
                visible_from=0.0,
            )
        )
    _plan_growth(cloud, estate, start, growth_every, growth_count, gpu_child, shared)
    return cloud


def synthetic_cloud(
    hosts: int, projects: int, servers_per_host: int = 10, zones: int = 3, clock: Callable[[], float] = time.time
) -> StandinCloud:
    """A cloud of any size for benchmarks: `hosts` computes in `zones` AZ aggregates, `projects` projects.

    Each host has VCPU/MEMORY_MB/DISK_GB inventories (one in 50 disabled, one in 20 with a GPU
    child provider and a CUSTOM_ trait); `servers_per_host` servers per host, their projects dealt
    round robin, from six flavors (one private, one with a required trait). Deterministic (uuid5), so
    every run sees the same cloud.
    """
    ns = uuidlib.UUID("5b1c0f8e-0000-4000-8000-00000000b0b0")

    def uid(*parts: object) -> str:
        return str(uuidlib.uuid5(ns, "/".join(map(str, parts))))

    cloud = StandinCloud(clock=clock)
    names = [f"compute-{i:05d}" for i in range(hosts)]
    for zone in range(zones):
        members = names[zone::zones]
        cloud.aggregates.append(
            Aggregate(zone + 1, uid("agg", zone), f"az{zone}", members, {"availability_zone": f"az{zone}"})
        )
    flavors = [
        Flavor(uid("flavor", 0), "m1.small", 1, 2048, 20),
        Flavor(uid("flavor", 1), "m1.medium", 2, 4096, 40),
        Flavor(uid("flavor", 2), "m1.large", 4, 8192, 80),
        Flavor(uid("flavor", 3), "m1.xlarge", 8, 16384, 160),
        Flavor(uid("flavor", 4), "ssd.large", 4, 8192, 80, {"trait:CUSTOM_SSD": "required"}),
        Flavor(uid("flavor", 5), "private.huge", 16, 65536, 200, is_public=False, projects=[uid("project", 0)]),
    ]
    cloud.flavors = {f.id: f for f in flavors}
    created = datetime(2026, 1, 1, tzinfo=UTC)
    server_index = 0
    for index, name in enumerate(names):
        rp = uid("host", index)
        traits = ["COMPUTE_NET_ATTACH_INTERFACE"]
        disabled = index % 50 == 49
        if disabled:
            traits.append("COMPUTE_STATUS_DISABLED")
        if index % 20 == 0:
            traits.append("CUSTOM_SSD")
        inventories = {
            "VCPU": _inventory(64, 2, 4.0),
            "MEMORY_MB": _inventory(262144, 4096, 1.0),
            "DISK_GB": _inventory(4000, 0, 1.0),
        }
        cloud.providers[rp] = Provider(
            rp, name, inventories, traits=sorted(traits), aggregates=[uid("agg", index % zones)], base_generation=3
        )
        if index % 20 == 0:
            child = uid("gpu", index)
            cloud.providers[child] = Provider(
                child,
                f"{name}_pci_0000_3b_00_0",
                {"VGPU": _inventory(4, 0, 1.0)},
                parent=rp,
                root=rp,
                traits=["OWNER_NOVA"],
                base_generation=2,
            )
        cloud.hypervisors.append(
            Hypervisor(
                rp,
                name,
                name,
                enabled=not disabled,
                disabled_reason="maintenance" if disabled else None,
                service_id=uid("service", index),
            )
        )
        for _ in range(servers_per_host):
            flavor = flavors[server_index % 4] if server_index % 97 else flavors[4]
            project = uid("project", server_index % projects)
            cloud.servers.append(
                Server(
                    uid("server", server_index),
                    f"vm-{server_index}",
                    flavor.id,
                    name,
                    project,
                    "ACTIVE",
                    created,
                    {rp: {"VCPU": flavor.vcpus, "MEMORY_MB": flavor.ram, "DISK_GB": flavor.disk}},
                    zone=f"az{index % zones}",
                )
            )
            server_index += 1
    return cloud


def _inventory(total: float, reserved: float, ratio: float, max_unit: float | None = None) -> dict[str, float]:
    return {
        "total": int(total),
        "reserved": int(reserved),
        "min_unit": 1,
        "max_unit": int(max_unit if max_unit is not None else total),
        "step_size": 1,
        "allocation_ratio": float(ratio),
    }


def _allocations(
    flavor: Any, host: Any, gpu_child: dict[str, str], shared: dict[str, str]
) -> dict[str, dict[str, int]]:
    cpu_class = "PCPU" if flavor.extra_specs.get("hw:cpu_policy") == "dedicated" else "VCPU"
    allocations: dict[str, dict[str, int]] = {host.uuid: {cpu_class: flavor.vcpus, "MEMORY_MB": flavor.ram_mb}}
    if flavor.disk_gb:
        if host.disk_bytes:
            allocations[host.uuid]["DISK_GB"] = flavor.disk_gb
        elif host.zone in shared:
            allocations[shared[host.zone]] = {"DISK_GB": flavor.disk_gb}
    if "resources:VGPU" in flavor.extra_specs and host.name in gpu_child:
        allocations[gpu_child[host.name]] = {"VGPU": int(flavor.extra_specs["resources:VGPU"])}
    return allocations


def _plan_growth(
    cloud: StandinCloud,
    estate: Any,
    start: float,
    every: float,
    count: int,
    gpu_child: dict[str, str],
    shared: dict[str, str],
) -> None:
    """Pre-book future servers (one per `every` seconds) on hosts that still have room."""
    from collector.demo.model import demo_uuid

    used: dict[str, dict[str, float]] = {}
    for server in cloud.servers:
        for rp, resources in server.allocations.items():
            for rc, amount in resources.items():
                used.setdefault(rp, {}).setdefault(rc, 0)
                used[rp][rc] += amount

    def fits(rp: str, rc: str, amount: float) -> bool:
        inventory = cloud.providers[rp].inventories.get(rc)
        if inventory is None:
            return False
        limit = (inventory["total"] - inventory["reserved"]) * inventory["allocation_ratio"]
        return used.get(rp, {}).get(rc, 0) + amount <= limit

    mix = ["m1.small", "m1.medium", "m1.medium", "m1.large", "m1.small", "m1.tiny", "m1.xlarge", "c1.pinned"]
    flavors = {f.name: f for f in estate.flavors}
    for k in range(count):
        flavor = flavors[mix[k % len(mix)]]
        rotation = k % len(estate.hosts)  # spread the growth over the hosts, deterministically
        for host in (*estate.hosts[rotation:], *estate.hosts[:rotation]):
            if host.disabled or host.gpus:
                continue
            allocations = _allocations(flavor, host, gpu_child, shared)
            if "PCPU" in allocations[host.uuid] and not host.pcpus:
                continue
            if all(fits(rp, rc, amount) for rp, res in allocations.items() for rc, amount in res.items()):
                for rp, res in allocations.items():
                    for rc, amount in res.items():
                        used.setdefault(rp, {}).setdefault(rc, 0)
                        used[rp][rc] += amount
                moment = start + (k + 1) * every
                cloud.servers.append(
                    Server(
                        demo_uuid("growth", k),
                        f"vm-new-{k:04d}",
                        flavor.id,
                        host.name,
                        ["project-alpha", "project-beta"][k % 2],
                        "ACTIVE",
                        datetime.fromtimestamp(moment, UTC),
                        allocations,
                        zone=host.zone,
                        visible_from=moment,
                    )
                )
                break
