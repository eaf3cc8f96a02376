"""Reading Nova: hypervisors, servers, flavors, aggregates and (optionally) per-project quotas.

Calls per poll (microversion negotiated up to 2.104):

* `GET /os-hypervisors/detail` (paged with limit/marker from 2.33): hypervisor_hostname, the
  nova-compute service's host, `status` (enabled/disabled) and `state` (up/down). From 2.53 the
  hypervisor `id` is the compute node's resource provider uuid. The capacity figures it carried up to
  2.87 (vcpus, memory_mb, local_gb, *_used) are ignored at every microversion: they are gone from
  2.88 on, and Placement is the source of truth for capacity either way.
* `GET /servers/detail?all_tenants=1`, paged by `limit`/`marker` until no `next` link: from 2.47 the
  flavor is embedded (vcpus, ram, disk, ephemeral, swap, original_name, extra_specs); before, only
  its id, resolved through the flavors list. Where each server runs is `OS-EXT-SRV-ATTR:hypervisor_hostname`;
  Nova omits it (no 403) for an account its policy does not allow, and the poll then fails `forbidden`.
* `GET /flavors/detail?is_public=None` (all flavors, public and private; paged): extra_specs inline
  from 2.61, else one `GET /flavors/{id}/os-extra_specs` per flavor; one
  `GET /flavors/{id}/os-flavor-access` per private flavor.
* `GET /os-aggregates`: hosts, metadata (availability_zone, filter_tenant_id*, anything used by
  `aggregate_instance_extra_specs`) and, from 2.41, the uuid (= the Placement aggregate uuid).
* with `quotas: true`: `GET /os-quota-sets/{project}/detail` for a project that has servers when it is first seen and
  then about once per `quotas_interval` (limits change rarely; reading every project every poll made a steady poll
  grow with the number of projects). Usage (`in_use`) is counted from the servers this poll listed — vCPUs and RAM
  of their flavors, and their number — as Nova's counting quota driver does, so it is fresh every poll.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from collector.sources.base import SourceError
from collector.sources.openstack.client import OpenStackClient, Version


@dataclass
class Hypervisor:
    id: str
    hostname: str
    """hypervisor_hostname: the compute node (= resource provider name)."""
    service_host: str | None
    """The nova-compute service's host (what aggregates and os-services list)."""
    enabled: bool
    up: bool
    disabled_reason: str | None = None
    host_ip: str | None = None
    """The IP Nova reports for the hypervisor (issue 16: discovery template field)."""


@dataclass
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    ephemeral_gb: int
    swap_mb: int
    extra_specs: dict[str, str]
    is_public: bool
    projects: list[str] | None = None


@dataclass
class Server:
    id: str
    name: str
    status: str
    project: str | None
    host: str | None
    """hypervisor_hostname of the node it runs on (None when not placed)."""
    zone: str | None
    flavor: Flavor | None
    boot_from_volume: bool


@dataclass
class Aggregate:
    id: str
    uuid: str
    name: str
    zone: str | None
    hosts: list[str]
    metadata: dict[str, str]


@dataclass
class Quota:
    project: str
    resource: str
    limit: float
    in_use: float
    reserved: float


@dataclass
class NovaState:
    microversion: Version
    hypervisors: list[Hypervisor]
    servers: list[Server]
    flavors: dict[str, Flavor]
    aggregates: list[Aggregate]
    quotas: list[Quota] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def _malformed(what: str, problem: str) -> SourceError:
    return SourceError("malformed_response", f"nova: {what}: {problem}")


def _list(body: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    items = body.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _malformed(what, f"no {key!r} list of objects in the answer")
    return items


def _has_next(body: dict[str, Any], key: str) -> bool:
    links = body.get(f"{key}_links") or []
    return any(isinstance(link, dict) and link.get("rel") == "next" for link in links)


@dataclass
class _QuotaLimits:
    """One project's quota limits and reservations (bytes for RAM) as last read, and when to read them again."""

    limits: dict[str, float]
    reserved: dict[str, float]
    due: float


QUOTA_KEYS = (("cores", "cpu", 1), ("ram", "memory", 2**20), ("instances", "instances", 1))
HOST_FIELD = "OS-EXT-SRV-ATTR:hypervisor_hostname"
"""Where a server runs; Nova shows it only to accounts its extended-server-attributes policy allows."""


class NovaReader:
    """Reads Nova for one cloud; between polls it keeps only each project's quota limits (see `quotas_interval`)."""

    def __init__(
        self,
        client: OpenStackClient,
        page_size: int = 1000,
        quotas: bool = True,
        quotas_interval: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.page_size = page_size
        self.quotas = quotas
        self.quotas_interval = quotas_interval
        self.clock = clock
        self._limits: dict[str, _QuotaLimits] = {}

    def read(self) -> NovaState:
        version = self.client.microversion("compute")
        flavors = self._flavors(version)
        state = NovaState(
            microversion=version,
            hypervisors=self._hypervisors(version),
            servers=[],
            flavors=flavors,
            aggregates=self._aggregates(version),
        )
        state.servers = self._servers(version, flavors, state)
        if self.quotas:
            state.quotas = self._quotas(state.servers, version)
        return state

    def _quotas(self, servers: list[Server], version: Version) -> list[Quota]:
        """Limits (cached, re-read about once per `quotas_interval`, spread per project) and usage counted now."""
        used: dict[str, dict[str, float]] = {}
        for server in servers:
            if not server.project:
                continue
            mine = used.setdefault(server.project, {"cores": 0.0, "ram": 0.0, "instances": 0.0})
            mine["instances"] += 1
            if server.flavor is not None:
                mine["cores"] += server.flavor.vcpus
                mine["ram"] += server.flavor.ram_mb
        now = self.clock()
        for project in list(self._limits):
            if project not in used:
                del self._limits[project]  # no servers left: read afresh if it comes back
        rows: list[Quota] = []
        for project in sorted(used):
            cached = self._limits.get(project)
            if cached is None or now >= cached.due:
                cached = self._read_limits(project, version, now)
                self._limits[project] = cached
            for key, resource, scale in QUOTA_KEYS:
                if key not in cached.limits:
                    continue
                limit = cached.limits[key]
                rows.append(
                    Quota(
                        project=project,
                        resource=resource,
                        limit=float("nan") if limit < 0 else limit * scale,
                        in_use=used[project][key] * scale,
                        reserved=cached.reserved[key] * scale,
                    )
                )
        return rows

    # -- paging -----------------------------------------------------------------------------

    def _pages(
        self, path: str, key: str, params: dict[str, str], version: Version, paged: bool
    ) -> list[dict[str, Any]]:
        """Every item of a marker/limit-paged collection (one request when the API cannot page)."""
        items: list[dict[str, Any]] = []
        marker: str | None = None
        seen: set[str] = set()
        while True:
            query = dict(params)
            if paged:
                query["limit"] = str(self.page_size)
                if marker:
                    query["marker"] = marker
            url = f"{path}?{urlencode(query)}" if query else path
            body = self.client.get("compute", url, microversion=version)
            page = _list(body, key, f"GET {path}")
            fresh = [item for item in page if str(item.get("id")) not in seen]
            seen.update(str(item.get("id")) for item in page)
            items.extend(fresh)
            if not paged or not page or not _has_next(body, key):
                return items
            if not fresh:
                raise _malformed(f"GET {path}", f"paging with marker {marker} returned the same page again")
            marker = str(page[-1].get("id"))

    # -- collections ------------------------------------------------------------------------

    def _hypervisors(self, version: Version) -> list[Hypervisor]:
        raw = self._pages("/os-hypervisors/detail", "hypervisors", {}, version, paged=version >= (2, 33))
        hypervisors = []
        for item in raw:
            try:
                service = item.get("service") or {}
                hypervisors.append(
                    Hypervisor(
                        id=str(item["id"]),
                        hostname=str(item["hypervisor_hostname"]),
                        service_host=service.get("host"),
                        enabled=item["status"] == "enabled",
                        up=item["state"] == "up",
                        disabled_reason=service.get("disabled_reason"),
                        host_ip=str(item["host_ip"]) if item.get("host_ip") else None,
                    )
                )
            except (KeyError, TypeError) as error:
                raise _malformed("GET /os-hypervisors/detail", f"hypervisor entry lacks {error}") from None
        return hypervisors

    def _flavors(self, version: Version) -> dict[str, Flavor]:
        raw = self._pages("/flavors/detail", "flavors", {"is_public": "None"}, version, paged=True)
        flavors: dict[str, Flavor] = {}
        for item in raw:
            try:
                flavor_id = str(item["id"])
                specs = item.get("extra_specs")
                if specs is None:  # before 2.61: one call per flavor
                    body = self.client.get("compute", f"/flavors/{flavor_id}/os-extra_specs", microversion=version)
                    specs = body.get("extra_specs", {})
                flavors[flavor_id] = Flavor(
                    id=flavor_id,
                    name=str(item["name"]),
                    vcpus=int(item["vcpus"]),
                    ram_mb=int(item["ram"]),
                    disk_gb=int(item["disk"]),
                    ephemeral_gb=int(item.get("OS-FLV-EXT-DATA:ephemeral") or 0),
                    swap_mb=int(item.get("swap") or 0),  # "" means none
                    extra_specs={str(k): str(v) for k, v in dict(specs).items()},
                    is_public=bool(item.get("os-flavor-access:is_public", True)),
                )
            except (KeyError, TypeError, ValueError) as error:
                raise _malformed("GET /flavors/detail", f"flavor entry {item.get('id')!r}: {error}") from None
        for flavor in flavors.values():
            if not flavor.is_public:
                body = self.client.get("compute", f"/flavors/{flavor.id}/os-flavor-access", microversion=version)
                access = _list(body, "flavor_access", f"GET /flavors/{flavor.id}/os-flavor-access")
                flavor.projects = sorted(str(a["tenant_id"]) for a in access if "tenant_id" in a)
        return flavors

    def _aggregates(self, version: Version) -> list[Aggregate]:
        body = self.client.get("compute", "/os-aggregates", microversion=version)
        aggregates = []
        for item in _list(body, "aggregates", "GET /os-aggregates"):
            try:
                metadata = {str(k): str(v) for k, v in (item.get("metadata") or {}).items()}
                aggregates.append(
                    Aggregate(
                        id=str(item["id"]),
                        # before 2.41 there is no uuid; such an aggregate cannot be matched to Placement
                        uuid=str(item.get("uuid") or f"nova-aggregate-{item['id']}"),
                        name=str(item["name"]),
                        zone=item.get("availability_zone") or metadata.get("availability_zone"),
                        hosts=[str(h) for h in item.get("hosts") or []],
                        metadata=metadata,
                    )
                )
            except (KeyError, TypeError) as error:
                raise _malformed("GET /os-aggregates", f"aggregate entry lacks {error}") from None
        return aggregates

    def _servers(self, version: Version, flavors: dict[str, Flavor], state: NovaState) -> list[Server]:
        raw = self._pages("/servers/detail", "servers", {"all_tenants": "1"}, version, paged=True)
        # Nova leaves the field out (200, no 403) when policy hides it: every server would look unplaced and the
        # headroom would count their capacity as free. Servers of a down cell (status UNKNOWN) never carry it.
        hidden = [i for i in raw if HOST_FIELD not in i and i.get("status") != "UNKNOWN"]
        if hidden:
            raise SourceError(
                "forbidden",
                f"cloud {self.client.cloud_label}: compute GET /servers/detail lists {len(hidden)} of {len(raw)} "
                f"server(s) without {HOST_FIELD}: Nova hides where servers run from this account (policy "
                "os_compute_api:os-extended-server-attributes, opened by deploy/openstack/nova-policy.yaml)",
            )
        by_name: dict[str, Flavor] = {f.name: f for f in flavors.values()}
        servers = []
        for item in raw:
            try:
                flavor = _server_flavor(item.get("flavor") or {}, flavors, by_name)
                if flavor is None:
                    state.skipped["server_flavor_unknown"] += 1
                    state.notes.append(
                        f"server {item['id']}: its flavor {item.get('flavor')!r} no longer exists; sizes unknown"
                    )
                servers.append(
                    Server(
                        id=str(item["id"]),
                        name=str(item.get("name") or item["id"]),
                        status=str(item["status"]),
                        project=item.get("tenant_id"),
                        host=item.get(HOST_FIELD),
                        zone=item.get("OS-EXT-AZ:availability_zone") or None,
                        flavor=flavor,
                        boot_from_volume=item.get("image") in ("", None),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                raise _malformed("GET /servers/detail", f"server entry {item.get('id')!r}: {error}") from None
        return servers

    def _read_limits(self, project: str, version: Version, now: float) -> _QuotaLimits:
        body = self.client.get("compute", f"/os-quota-sets/{project}/detail", microversion=version)
        quota_set = body.get("quota_set")
        if not isinstance(quota_set, dict):
            raise _malformed(f"GET /os-quota-sets/{project}/detail", "no 'quota_set' object")
        limits: dict[str, float] = {}
        reserved: dict[str, float] = {}
        for key, _, _ in QUOTA_KEYS:
            entry = quota_set.get(key)
            if isinstance(entry, dict):
                try:
                    limits[key] = float(entry.get("limit", -1))
                    reserved[key] = float(entry.get("reserved", 0))
                except (TypeError, ValueError):
                    raise _malformed(f"GET /os-quota-sets/{project}/detail", f"{key!r} is not a number") from None
        # Spread re-reads: each project comes due between 0.75 and 1.25 intervals from now (by its id), so a
        # cloud's projects are not all read again in the same poll an hour after start.
        spread = 0.75 + 0.5 * (zlib.crc32(project.encode()) / 2**32)
        return _QuotaLimits(limits, reserved, now + self.quotas_interval * spread)


def _server_flavor(embedded: dict[str, Any], flavors: dict[str, Flavor], by_name: dict[str, Flavor]) -> Flavor | None:
    """The flavor a server was booted with: embedded (>= 2.47) or looked up by id (before)."""
    if "vcpus" in embedded:
        name = str(embedded.get("original_name") or "")
        known = by_name.get(name)
        return Flavor(
            id=known.id if known else name,
            name=name,
            vcpus=int(embedded["vcpus"]),
            ram_mb=int(embedded["ram"]),
            disk_gb=int(embedded["disk"]),
            ephemeral_gb=int(embedded.get("ephemeral") or 0),
            swap_mb=int(embedded.get("swap") or 0),
            extra_specs={str(k): str(v) for k, v in (embedded.get("extra_specs") or {}).items()},
            is_public=known.is_public if known else True,
        )
    flavor_id = embedded.get("id")
    return flavors.get(str(flavor_id)) if flavor_id is not None else None
