"""What a pod holds on its node: effective requests and limits exactly as the scheduler counts them.

Mirrors `PodRequests` / `PodLimits` in k8s.io/component-helpers/resource/helpers.go (Kubernetes 1.29+):

* app containers are summed;
* init containers run one at a time, so the pod needs the largest of them, except that a
  *restartable* init container (`restartPolicy: Always`, a sidecar) keeps running: every later init
  step needs its own request plus all sidecars started before it, and the app phase needs the app
  containers plus all sidecars;
* the pod needs the max of the init phase and the app phase, per resource;
* pod-level `spec.resources` (PodLevelResources, 1.32+) replaces the container aggregate for the
  resources it sets (cpu, memory);
* `spec.overhead` (RuntimeClass) is added to requests, and to limits only where a limit exists.

Values are exact integers in nano-units (quantity.NANO: 10**9 per core / byte / count) keyed by
capacity-frame resource names (`ephemeral_storage`, `nvidia_com_gpu`). Bad quantities raise
`SpecError` naming the pod and the offending field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from collector.contract.quantity import QuantityError, parse_nanos, resource_name

__all__ = ["Amounts", "SpecError", "effective_resources", "parse_resource_list"]

Amounts = dict[str, int]
"""{resource: nano-units}; dicts returned by parse_resource_list are shared (cached): copy before changing."""
_POD_LEVEL_RESOURCES = ("cpu", "memory")


class SpecError(ValueError):
    """A pod or node whose resources cannot be read; the message names the object and the field."""


def parse_resource_list(values: Mapping[str, Any] | None, where: str) -> Amounts:
    """{"cpu": "100m", "nvidia.com/gpu": "1"} -> {"cpu": 10**8, "nvidia_com_gpu": 10**9} (nano-units).

    The result is cached per distinct map (pods repeat a few shapes) and must not be modified.
    """
    if not values:
        return {}
    if not isinstance(values, Mapping):
        raise SpecError(f"{where}: expected a map of resource quantities")
    try:
        return _parse_items(tuple(values.items()))
    except _BadQuantity as error:
        raise SpecError(f"{where}.{error.key}: {error.problem}") from None
    except TypeError:  # an unhashable value (a list where a quantity belongs): no cache, same checks
        try:
            return _parse_items.__wrapped__(tuple(values.items()))
        except _BadQuantity as error:
            raise SpecError(f"{where}.{error.key}: {error.problem}") from None


class _BadQuantity(Exception):
    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem


@lru_cache(maxsize=4096)
def _parse_items(items: tuple[tuple[str, Any], ...]) -> Amounts:
    out: Amounts = {}
    for key, raw in items:
        name = resource_name(key)
        if name is None:
            continue
        try:
            amount = parse_nanos(raw)
        except QuantityError as error:
            raise _BadQuantity(key, str(error)) from None
        except TypeError:
            raise _BadQuantity(key, f"quantity must be a string, got {type(raw).__name__}") from None
        if amount < 0:
            raise _BadQuantity(key, f"negative quantity {raw!r}")
        out[name] = amount
    return out


def _add(into: Amounts, other: Amounts) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value


def _max(into: Amounts, other: Amounts) -> None:
    for key, value in other.items():
        if value > into.get(key, 0) or key not in into:
            into[key] = value


def _aggregate(app: Iterable[Amounts], init: Iterable[tuple[Amounts, bool]]) -> Amounts:
    """The scheduler's max(init phase, app phase + sidecars) over parsed container amounts."""
    total: Amounts = {}
    for amounts in app:
        _add(total, amounts)
    sidecars: Amounts = {}
    init_peak: Amounts = {}
    for amounts, restartable in init:
        if restartable:
            _add(total, amounts)
            _add(sidecars, amounts)
            step = dict(sidecars)
        else:
            step = dict(amounts)
            _add(step, sidecars)
        _max(init_peak, step)
    _max(total, init_peak)
    return total


def _container_lists(containers: Any, pod: str, kind: str) -> tuple[list[Amounts], list[Amounts]]:
    """Parsed (requests, limits) of each container; the error message is only formatted on an error."""
    requests: list[Amounts] = []
    limits: list[Amounts] = []
    for index, container in enumerate(containers):
        resources = container.get("resources") or {}
        for part, into in (("requests", requests), ("limits", limits)):
            values = resources.get(part)
            if not values:
                into.append(_EMPTY)
                continue
            try:
                into.append(_parse_items(tuple(values.items())))
            except (_BadQuantity, TypeError, AttributeError):
                # the slow path names the pod and the field (and handles unhashable or non-map values)
                into.append(
                    parse_resource_list(values, f"pod {pod}: {kind}[{container.get('name', index)}].resources.{part}")
                )
    return requests, limits


_EMPTY: Amounts = {}


def effective_resources(spec: Mapping[str, Any], pod: str) -> tuple[Amounts, Amounts]:
    """(requests, limits) of a pod spec as the scheduler and kubelet count them.

    `pod` ("namespace/name") only names the pod in error messages. The maps may be shared between
    pods of the same shape: treat them as read-only.
    """
    containers = spec.get("containers") or ()
    init_containers = spec.get("initContainers") or ()
    app_requests, app_limits = _container_lists(containers, pod, "containers")

    if not init_containers and len(app_requests) == 1:
        # The common case (one container, no init): no aggregation, and the cached maps are shared
        # between the many pods of a shape (copied below only if overhead or pod-level values change them).
        requests, limits = app_requests[0], app_limits[0]
    else:
        init_req, init_lim = _container_lists(init_containers, pod, "initContainers")
        restartable = [container.get("restartPolicy") == "Always" for container in init_containers]
        requests = _aggregate(app_requests, zip(init_req, restartable, strict=True))
        limits = _aggregate(app_limits, zip(init_lim, restartable, strict=True))

    pod_level = spec.get("resources") or {}
    overhead = parse_resource_list(spec.get("overhead"), f"pod {pod}: overhead") if spec.get("overhead") else _EMPTY
    if pod_level or overhead:
        requests, limits = dict(requests), dict(limits)
    if pod_level:
        for field, target in (("requests", requests), ("limits", limits)):
            values = parse_resource_list(pod_level.get(field), f"pod {pod}: resources.{field}")
            for name in _POD_LEVEL_RESOURCES:
                if name in values:
                    target[name] = values[name]
    if overhead:
        _add(requests, overhead)
        for key, value in overhead.items():
            if key in limits:
                limits[key] += value
    return requests, limits
