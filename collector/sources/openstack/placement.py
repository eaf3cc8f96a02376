"""Reading Placement: resource providers, their inventories and usages, the traits that matter.

Placement has no bulk endpoint for inventories or usages, so the per-provider reads are what a
poll costs. Two facts keep that cost low:

* A provider's `generation` (returned by `GET /resource_providers`) is bumped by Placement on every
  change to the provider's inventory, traits, aggregates *and allocations*. Inventories and usages
  are cached per provider with the generation they were read at and re-read only when it moved.
  A poll of a quiet cloud is then one list call plus a handful; a busy one pays two GETs per
  provider that changed.
* Traits are read the other way round: one `GET /resource_providers?required=<TRAIT>` per trait
  that matters (COMPUTE_STATUS_DISABLED, MISC_SHARES_VIA_AGGREGATE, every CUSTOM_* trait in use
  and every trait a flavor requires or forbids) instead of one traits call per provider; those
  answers are also reused while no provider generation changed.

Changed providers are read `concurrency` at a time (default 4): production Placement runs several
API workers, so a cold poll of a big cloud takes a fraction of the sequential time.

Sharing providers (trait MISC_SHARES_VIA_AGGREGATE) also get their aggregates read (they are few),
which is how their pool is found; compute hosts' aggregates come from Nova's os-aggregates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from collector.sources.base import SourceError
from collector.sources.openstack.client import OpenStackClient, Version

DISABLED_TRAIT = "COMPUTE_STATUS_DISABLED"
SHARING_TRAIT = "MISC_SHARES_VIA_AGGREGATE"
INVENTORY_FIELDS = ("total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio")


@dataclass
class Provider:
    """One resource provider as this poll saw it."""

    uuid: str
    name: str
    generation: int
    parent: str | None
    root: str
    inventories: dict[str, dict[str, float]] = field(default_factory=dict)
    usages: dict[str, float] = field(default_factory=dict)
    traits: set[str] = field(default_factory=set)
    aggregates: list[str] = field(default_factory=list)
    """Read for sharing providers only (compute hosts: see Nova's aggregates)."""

    @property
    def is_root(self) -> bool:
        return self.parent is None


@dataclass
class PlacementState:
    providers: dict[str, Provider]
    interesting_traits: set[str]
    """Traits whose providers were looked up; `Provider.traits` is complete for these only."""
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def sharing(self) -> list[Provider]:
        return [p for p in self.providers.values() if SHARING_TRAIT in p.traits]


@dataclass
class _Cached:
    generation: int
    inventories: dict[str, dict[str, float]]
    usages: dict[str, float]
    aggregates: list[str] | None = None


class PlacementReader:
    """Reads Placement for one cloud; keeps a generation-keyed cache between polls."""

    def __init__(self, client: OpenStackClient, concurrency: int = 4):
        self.client = client
        self.concurrency = concurrency
        self._cache: dict[str, _Cached] = {}
        self._trait_cache: dict[str, set[str]] = {}
        self._trait_fingerprint: tuple[tuple[str, int], ...] | None = None
        self._custom_traits: list[str] = []

    def reset(self) -> None:
        """Forget everything cached (e.g. after the connection was re-created)."""
        self._cache.clear()
        self._trait_cache.clear()
        self._trait_fingerprint = None

    def read(self, flavor_traits: Iterable[str] = ()) -> PlacementState:
        version = self.client.microversion("placement")
        listing = self._get("/resource_providers", version)
        providers = _parse_providers(listing)
        state = PlacementState(providers=providers, interesting_traits=set())
        # Drop cache entries of providers that are gone.
        for uuid in set(self._cache) - set(providers):
            del self._cache[uuid]

        fingerprint = tuple(sorted((p.uuid, p.generation) for p in providers.values()))
        self._read_traits(state, set(flavor_traits), fingerprint, version)

        stale = [
            p for p in providers.values() if (c := self._cache.get(p.uuid)) is None or c.generation != p.generation
        ]
        fresh = self._read_many(stale, version)
        for provider in list(providers.values()):
            if provider.uuid in fresh:
                result = fresh[provider.uuid]
                if isinstance(result, str):
                    _vanished(state, provider, result)
                    continue
                self._cache[provider.uuid] = result
            cached = self._cache[provider.uuid]
            provider.inventories = cached.inventories
            provider.usages = cached.usages
            if SHARING_TRAIT in provider.traits:
                if cached.aggregates is None:
                    body = self._get(f"/resource_providers/{provider.uuid}/aggregates", version, ok_404=True)
                    if body is None:
                        _vanished(state, provider, "aggregates")
                        continue
                    cached.aggregates = _strings(body.get("aggregates"), "aggregates", provider)
                provider.aggregates = cached.aggregates
        return state

    # -- pieces -----------------------------------------------------------------------------

    def _read_traits(
        self, state: PlacementState, flavor_traits: set[str], fingerprint: tuple[tuple[str, int], ...], version: Version
    ) -> None:
        changed = fingerprint != self._trait_fingerprint
        if changed:
            body = self._get("/traits?associated=true&name=startswith:CUSTOM_", version)
            self._custom_traits = _strings(body.get("traits"), "traits", None)
        wanted = {DISABLED_TRAIT, SHARING_TRAIT, *self._custom_traits, *flavor_traits}
        if changed:
            self._trait_cache.clear()
        for trait in sorted(wanted):
            if trait not in self._trait_cache:
                body = self._get(f"/resource_providers?required={quote(trait)}", version, bad_request_ok=True)
                members = set() if body is None else set(_parse_providers(body))
                self._trait_cache[trait] = members
            for uuid in self._trait_cache[trait]:
                if uuid in state.providers:
                    state.providers[uuid].traits.add(trait)
        self._trait_fingerprint = fingerprint
        state.interesting_traits = wanted

    def _read_many(self, providers: list[Provider], version: Version) -> dict[str, _Cached | str]:
        """Inventories + usages of `providers`, `concurrency` at a time (Placement runs many workers)."""
        if self.concurrency <= 1 or len(providers) < 2:
            return {p.uuid: self._read_provider(p, version) for p in providers}
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(providers)), thread_name_prefix="placement-read"
        ) as pool:
            futures = {p.uuid: pool.submit(self._read_provider, p, version) for p in providers}
            try:
                return {uuid: future.result() for uuid, future in futures.items()}
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _read_provider(self, provider: Provider, version: Version) -> _Cached | str:
        """A provider's inventories and usages, or the name of the read that found it gone (404)."""
        base = f"/resource_providers/{provider.uuid}"
        inventories_body = self._get(f"{base}/inventories", version, ok_404=True)
        if inventories_body is None:
            return "inventories"
        usages_body = self._get(f"{base}/usages", version, ok_404=True)
        if usages_body is None:
            return "usages"
        inventories = _parse_inventories(inventories_body, provider)
        usages = _parse_usages(usages_body, provider)
        return _Cached(generation=provider.generation, inventories=inventories, usages=usages)

    def _get(self, path: str, version: Version, ok_404: bool = False, bad_request_ok: bool = False) -> Any:
        try:
            return self.client.get("placement", path, microversion=version, ok_404=ok_404)
        except SourceError as error:
            # An unknown trait in ?required= is a 400 ("No such trait"): a flavor asking for a trait
            # no provider has ever had. No provider has it, which is the answer we wanted.
            if bad_request_ok and "HTTP 400" in str(error):
                return None
            raise


def _vanished(state: PlacementState, provider: Provider, what: str) -> None:
    state.providers.pop(provider.uuid, None)
    state.skipped["provider_vanished"] += 1
    state.notes.append(
        f"resource provider {provider.name} ({provider.uuid}) was deleted while it was read ({what}: 404); "
        "left out of this poll"
    )


def _malformed(what: str, provider: Provider | None, problem: str) -> SourceError:
    where = f" of provider {provider.name} ({provider.uuid})" if provider else ""
    return SourceError("malformed_response", f"placement: {what}{where}: {problem}")


def _strings(value: Any, what: str, provider: Provider | None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(what, provider, f"expected a list of strings, got {type(value).__name__}")
    return list(value)


def _parse_providers(body: dict[str, Any]) -> dict[str, Provider]:
    items = body.get("resource_providers")
    if not isinstance(items, list):
        raise _malformed("GET /resource_providers", None, "no 'resource_providers' list in the answer")
    providers: dict[str, Provider] = {}
    for index, item in enumerate(items):
        try:
            uuid = str(item["uuid"])
            providers[uuid] = Provider(
                uuid=uuid,
                name=str(item["name"]),
                generation=int(item["generation"]),
                parent=item.get("parent_provider_uuid"),
                root=str(item.get("root_provider_uuid") or uuid),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _malformed("GET /resource_providers", None, f"provider #{index} lacks a usable {error}") from None
    return providers


def _number(value: Any, what: str, provider: Provider) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(what, provider, f"{value!r} is not a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise _malformed(what, provider, f"{value!r} is not a finite non-negative number")
    return number


def _parse_inventories(body: dict[str, Any], provider: Provider) -> dict[str, dict[str, float]]:
    inventories = body.get("inventories")
    if not isinstance(inventories, dict):
        raise _malformed("inventories", provider, "no 'inventories' object in the answer")
    parsed: dict[str, dict[str, float]] = {}
    for rc, inventory in inventories.items():
        if not isinstance(inventory, dict):
            raise _malformed(f"inventory {rc}", provider, "is not an object")
        fields: dict[str, float] = {}
        for name in INVENTORY_FIELDS:
            if name not in inventory:
                raise _malformed(f"inventory {rc}", provider, f"field {name!r} is missing")
            fields[name] = _number(inventory[name], f"inventory {rc}.{name}", provider)
        parsed[str(rc)] = fields
    return parsed


def _parse_usages(body: dict[str, Any], provider: Provider) -> dict[str, float]:
    usages = body.get("usages")
    if not isinstance(usages, dict):
        raise _malformed("usages", provider, "no 'usages' object in the answer")
    return {str(rc): _number(amount, f"usage {rc}", provider) for rc, amount in usages.items()}
