"""Kubernetes Lease objects (coordination.k8s.io/v1) through the `kubernetes` client.

Every write carries the resourceVersion it read, so two processes racing for the same Lease cannot
both win: the API server refuses the second write with 409 Conflict. Used by membership (one Lease
per collector) and by the planner's leader election (one Lease for all planners).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GROUP_LABEL = "capacityd.io/group"
ROLE_LABEL = "capacityd.io/role"


class LeaseConflict(Exception):
    """Someone else changed the Lease since we read it (409), or created it first."""


class LeaseError(Exception):
    """The API server could not be reached or refused the call for another reason."""


@dataclass(frozen=True)
class LeaseRecord:
    name: str
    holder: str | None
    duration_seconds: int
    renew_time: datetime | None
    transitions: int
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]


def api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient from a kubeconfig file, or from the pod's service account when none is given."""
    from kubernetes import client, config

    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class LeaseStore:
    """Read, create, replace, list and delete Leases in one namespace."""

    def __init__(self, api: Any, namespace: str, timeout: float = 5.0):
        from kubernetes import client

        self.namespace = namespace
        self.timeout = timeout
        self._api = client.CoordinationV1Api(api)

    def _record(self, lease: Any) -> LeaseRecord:
        spec, meta = lease.spec, lease.metadata
        return LeaseRecord(
            name=meta.name,
            holder=spec.holder_identity if spec else None,
            duration_seconds=(spec.lease_duration_seconds or 0) if spec else 0,
            renew_time=spec.renew_time if spec else None,
            transitions=(spec.lease_transitions or 0) if spec else 0,
            resource_version=meta.resource_version or "",
            labels=dict(meta.labels or {}),
            annotations=dict(meta.annotations or {}),
        )

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return func(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            if error.status == 409:
                raise LeaseConflict(f"{what}: changed by another holder") from None
            if error.status == 404:
                return None
            raise LeaseError(f"{what}: HTTP {error.status} {error.reason}") from None
        except Exception as error:  # noqa: BLE001 - connection refused, timeouts, TLS: all "unreachable"
            raise LeaseError(f"{what}: {type(error).__name__}: {error}") from None

    def get(self, name: str) -> LeaseRecord | None:
        lease = self._call(f"read lease {name}", self._api.read_namespaced_lease, name, self.namespace)
        return None if lease is None else self._record(lease)

    def list(self, labels: dict[str, str]) -> list[LeaseRecord]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        answer = self._call("list leases", self._api.list_namespaced_lease, self.namespace, label_selector=selector)
        return [self._record(item) for item in (answer.items if answer is not None else [])]

    def write(
        self,
        name: str,
        holder: str,
        duration_seconds: int,
        *,
        previous: LeaseRecord | None,
        transitions: int,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> LeaseRecord:
        """Create (previous None) or replace (guarded by previous.resource_version) the Lease."""
        from kubernetes import client

        now = datetime.now(UTC)
        body = client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=client.V1ObjectMeta(
                name=name,
                labels=labels,
                annotations=annotations or None,
                resource_version=previous.resource_version if previous is not None else None,
            ),
            spec=client.V1LeaseSpec(
                holder_identity=holder,
                lease_duration_seconds=duration_seconds,
                renew_time=now,
                acquire_time=now,
                lease_transitions=transitions,
            ),
        )
        if previous is None:
            created = self._call(f"create lease {name}", self._api.create_namespaced_lease, self.namespace, body)
            if created is None:
                raise LeaseError(f"create lease {name}: namespace {self.namespace!r} not found")
            return self._record(created)
        replaced = self._call(f"renew lease {name}", self._api.replace_namespaced_lease, name, self.namespace, body)
        if replaced is None:
            raise LeaseConflict(f"renew lease {name}: deleted meanwhile")
        return self._record(replaced)

    def delete(self, name: str) -> None:
        self._call(f"delete lease {name}", self._api.delete_namespaced_lease, name, self.namespace)
