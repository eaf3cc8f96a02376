"""A faithful stand-in kube-apiserver (and fake kubelets) on loopback, for the demo, tests and benchmarks.

The unchanged `kubernetes` client talks to it exactly as to a real API server (HTTPS, bearer tokens,
kubeconfig). What it implements is what capacityd and the client depend on, modelled on the real
server (behaviour checked against kube-apiserver 1.20 in tests/kubernetes/test_e2e_apiserver.py):

* `GET /api/v1/nodes`, `/api/v1/pods`, `/api/v1/namespaces/<ns>/pods`, `/api/v1/nodes/<name>`,
  `/version`; lists honour `limit`, `continue`, `resourceVersion` (`0` = from the watch cache:
  `limit` ignored), equality `labelSelector` and the `fieldSelector`s the real server supports for
  these resources, and report `metadata.resourceVersion`, `continue`, `remainingItemCount`;
* consistent paginated lists: every write creates a new resourceVersion and keeps the old snapshot
  until `compact()` (etcd compaction); a continue token is base64 of
  `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\\u0000"}`: a garbled one -> 400, one older than the
  compaction -> 410 `Expired` (with a fresh token, like the real server);
* errors as `Status` objects with the real messages (401 Unauthorized, 403 RBAC `Forbidden`,
  404 NotFound, 503 for an unreachable kubelet);
* the node proxy `GET /api/v1/nodes/<node>/proxy/<path>`, where the client sends the path with an
  encoded slash (`metrics%2Fresource`), forwarding to the node's fake kubelet;
* quantities are strings, timestamps RFC 3339, objects shaped like real ones (builders below).

`FakeKubelet` renders `/metrics/resource` in the kubelet's format (the real capture in
`testdata/metrics_resource_v1.35.txt`), with CPU counters that grow with time; behaviours `ok`,
`hang`, `malformed`, `down`, `forbidden` and `reset_counters()` make the failure cases, and a `Fault`
(oversize, drip, truncated answers) spoils the transport of a kubelet's or the lists' answers.
`KubeletServer` serves fake kubelets over HTTPS for `kubelet.mode: direct` and behind a real
API server's node proxy.

Run standalone (the benchmark does): `python -m collector.demo.standins.kubernetes --nodes 5000
--pods 150000 --workdir DIR` prints one JSON line with the kubeconfig path and serves until stdin closes.

Kept in one module (over 500 lines on purpose): it is one fake service — model, list/paging, proxy, fake kubelets
and fault injection share the same state, and tests compare it as a whole with the real kube-apiserver.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import datetime as dt
import hashlib
import ipaddress
import json
import random
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import yaml

__all__ = [
    "FakeKubelet",
    "Fault",
    "KubeletServer",
    "StandinApiServer",
    "TLSFiles",
    "User",
    "make_node",
    "make_pod",
    "make_tls",
    "write_kubeconfig",
]

ADMIN_PERMISSIONS = frozenset({"list nodes", "get nodes", "list pods", "get pods", "get nodes/proxy"})
COLLECTOR_PERMISSIONS = ADMIN_PERMISSIONS


@dataclass(frozen=True)
class User:
    name: str
    permissions: frozenset[str] = ADMIN_PERMISSIONS
    groups: tuple[str, ...] = ("system:authenticated",)


# --- TLS and kubeconfig -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls(
    directory: Path,
    ips: Sequence[str] = ("127.0.0.1",),
    names: Sequence[str] = ("localhost",),
    common_name: str = "kube-apiserver",
) -> TLSFiles:
    """A throw-away CA and a server certificate for `ips`/`names`, written under `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.crt", directory / f"{common_name}.crt", directory / f"{common_name}.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    return files


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path | None,
    token: str,
    context: str,
    cluster: str | None = None,
    user: str = "capacityd",
) -> Path:
    """A kubeconfig with one cluster, one token user and one context (the shape kubectl writes)."""
    cluster = cluster or context
    entry: dict[str, Any] = {"server": server}
    if ca_cert is not None:
        entry["certificate-authority-data"] = base64.b64encode(ca_cert.read_bytes()).decode()
    else:
        entry["insecure-skip-tls-verify"] = True
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


# --- object builders -----------------------------------------------------------------------------

_CREATED = "2026-01-05T08:00:00Z"


def _uid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "standin/" + "/".join(map(str, parts))))


def make_node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    allocatable_cpu: str | None = None,
    allocatable_memory: str | None = None,
    pods: str = "110",
    ephemeral_storage: str = "81106868Ki",
    allocatable_ephemeral_storage: str | None = "74747241721",
    extended: Mapping[str, str] | None = None,
    provider_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    unschedulable: bool = False,
    ready: str = "True",
    address: str = "10.0.0.10",
    kubelet_port: int = 10250,
    uid: str | None = None,
) -> dict[str, Any]:
    """A Node as the API returns it (cf. testdata/nodelist_openstack.json)."""
    capacity = {
        "cpu": cpu,
        "ephemeral-storage": ephemeral_storage,
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": memory,
        "pods": pods,
        **(extended or {}),
    }
    allocatable = {**capacity, "cpu": allocatable_cpu or cpu, "memory": allocatable_memory or memory}
    if allocatable_ephemeral_storage:
        allocatable["ephemeral-storage"] = allocatable_ephemeral_storage
    heartbeat = "2026-01-05T08:10:00Z"
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": _CREATED,
        }
        for kind, reason, message in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": ready,
            "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
            "message": "kubelet is posting ready status" if ready == "True" else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": _CREATED,
        }
    )
    spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    if provider_id:
        spec["providerID"] = provider_id
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": uid or _uid("node", name),
            "resourceVersion": "1",
            "creationTimestamp": _CREATED,
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                **(labels or {}),
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": _uid("boot", name),
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.1.0-28-amd64",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.30.6",
                "machineID": _uid("machine", name).replace("-", ""),
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": _uid("system", name),
            },
        },
    }


Container = tuple[str, Mapping[str, str], Mapping[str, str]]
"""(name, requests, limits) of a container in `make_pod`."""


def make_pod(
    namespace: str,
    name: str,
    *,
    node: str | None,
    phase: str = "Running",
    containers: Sequence[Container] = (("app", {"cpu": "100m", "memory": "128Mi"}, {}),),
    init_containers: Sequence[Container] = (),
    sidecars: Sequence[str] = (),
    owner: tuple[str, str] | None = None,
    template_hash: str | None = None,
    overhead: Mapping[str, str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A Pod as the API returns it (cf. testdata/podlist_v1.35.json); `sidecars` names restartable inits."""

    def container(entry: Container, init: bool) -> dict[str, Any]:
        cname, requests, limits = entry
        resources: dict[str, Any] = {}
        if requests:
            resources["requests"] = dict(requests)
        if limits:
            resources["limits"] = dict(limits)
        out: dict[str, Any] = {
            "name": cname,
            "image": f"registry.example/{cname}:1.0",
            "resources": resources,
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
            # what real pods carry besides resources (the service-account token mount, env, a port, a probe)
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "LOG_LEVEL", "value": "info"},
            ],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "volumeMounts": [
                {
                    "name": "kube-api-access",
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }
            ],
        }
        if init and cname in sidecars:
            out["restartPolicy"] = "Always"
        elif init:
            del out["readinessProbe"]  # probes are for long-running containers (the API rejects them here)
        return out

    pod_labels = dict(labels or {})
    if template_hash:
        pod_labels["pod-template-hash"] = template_hash
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or _uid("pod", namespace, name),
        "resourceVersion": "1",
        "creationTimestamp": _CREATED,
        "labels": pod_labels,
    }
    if owner:
        kind, owner_name = owner
        api_version = (
            "apps/v1"
            if kind in ("ReplicaSet", "StatefulSet", "DaemonSet", "Deployment")
            else ("batch/v1" if kind == "Job" else "v1")
        )
        metadata["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": _uid(kind, namespace, owner_name),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: dict[str, Any] = {
        "containers": [container(c, False) for c in containers],
        "restartPolicy": "Never" if phase in ("Succeeded", "Failed") else "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    spec["volumes"] = [
        {
            "name": "kube-api-access",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        }
    ]
    spec["serviceAccountName"] = "default"
    if init_containers:
        spec["initContainers"] = [container(c, True) for c in init_containers]
    if node:
        spec["nodeName"] = node
    if overhead:
        spec["overhead"] = dict(overhead)
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable"}
    if node:
        status.update(
            {
                "hostIP": "10.0.0.10",
                "podIP": "10.244.0.12",
                "startTime": _CREATED,
                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _CREATED}],
                "containerStatuses": [
                    {
                        "name": c[0],
                        "ready": phase == "Running",
                        "restartCount": 0,
                        "image": f"registry.example/{c[0]}:1.0",
                        "imageID": "",
                        "started": phase == "Running",
                        "state": {"running": {"startedAt": _CREATED}}
                        if phase == "Running"
                        else {
                            "terminated": {
                                "exitCode": 0 if phase == "Succeeded" else 1,
                                "reason": "Completed" if phase == "Succeeded" else "Error",
                                "startedAt": _CREATED,
                                "finishedAt": _CREATED,
                            }
                        },
                    }
                    for c in containers
                ],
            }
        )
    else:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
                "lastTransitionTime": _CREATED,
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


# --- fake kubelets ---------------------------------------------------------------------------------

_QUANTITY_SCALE = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}


def _approx(quantity: str | None, default: float) -> float:
    """A float for a quantity string, good enough to make plausible usage (never used by the collector)."""
    if not quantity:
        return default
    try:
        for suffix, scale in _QUANTITY_SCALE.items():
            if quantity.endswith(suffix):
                return float(quantity[: -len(suffix)]) * scale
        return float(quantity)
    except ValueError:
        return default  # a pod with a broken spec still runs something


@dataclass
class _PodLoad:
    namespace: str
    name: str
    containers: list[tuple[str, float, float]]  # name, cores used, bytes used


def _pod_loads(pods: Iterable[Mapping[str, Any]]) -> list[_PodLoad]:
    """What a kubelet needs to know of its running pods to make up their usage."""
    loads: list[_PodLoad] = []
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Running":
            continue
        meta = pod["metadata"]
        containers: list[tuple[str, float, float]] = []
        for c in pod["spec"].get("containers", ()):
            requests = (c.get("resources") or {}).get("requests") or {}
            digest = hashlib.blake2s(f"{meta['namespace']}/{meta['name']}/{c['name']}".encode(), digest_size=2).digest()
            share = 0.3 + 0.6 * (int.from_bytes(digest, "big") / 65535)
            containers.append(
                (
                    c["name"],
                    _approx(requests.get("cpu"), 0.05) * share,
                    round(_approx(requests.get("memory"), 64 * 2**20) * share),
                )
            )
        loads.append(_PodLoad(meta["namespace"], meta["name"], containers))
    return loads


class FakeKubelet:
    """One node's kubelet: renders `/metrics/resource` for the running pods bound to the node.

    Usage is deterministic: each container uses a share (30-90 %, from a hash of its name) of its
    CPU request (default 50m) and of its memory request (default 64 MiB); counters grow from `boot`.
    """

    def __init__(self, node: str, behaviour: str = "ok", hang_seconds: float = 60.0, fault: Fault | None = None):
        self.node = node
        self.behaviour = behaviour
        self.fault = fault
        """A transport fault for this kubelet's answers (oversize, drip, truncated), else None."""
        self.hang_seconds = hang_seconds
        self.boot = time.time() - 3600.0
        self.pods: list[_PodLoad] = []
        self.requests = 0

    def set_pods(self, pods: Iterable[Mapping[str, Any]]) -> None:
        self.pods = _pod_loads(pods)

    def reset_counters(self) -> None:
        """As after a node reboot: every CPU counter starts again from zero."""
        self.boot = time.time()

    def metrics(self, now: float | None = None) -> str:
        """The `/metrics/resource` text (format of a v1.30+ kubelet, cf. testdata)."""
        now = time.time() if now is None else now
        if self.behaviour == "malformed":
            return (
                "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time\n"
                "node_cpu_usage_seconds_total{ 12.5\nnode_memory_working_set_bytes\n"
            )
        up = max(now - self.boot, 0.0)
        ts = int(now * 1000)
        pods = sorted(self.pods, key=lambda p: (p.namespace, p.name))
        rows = [(p, c) for p in pods for c in sorted(p.containers)]
        out: list[str] = [
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in "
            "core-seconds",
            "# TYPE container_cpu_usage_seconds_total counter",
        ]
        out += [
            f'container_cpu_usage_seconds_total{{container="{c[0]}",namespace="{p.namespace}",pod="{p.name}"}} '
            f"{c[1] * up:.6f} {ts}"
            for p, c in rows
        ]
        out += [
            "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes",
            "# TYPE container_memory_working_set_bytes gauge",
        ]
        out += [
            f'container_memory_working_set_bytes{{container="{c[0]}",namespace="{p.namespace}",pod="{p.name}"}} '
            f"{c[2]:.7g} {ts}"
            for p, c in rows
        ]
        out += [
            "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds",
            "# TYPE container_start_time_seconds gauge",
        ]
        out += [
            f'container_start_time_seconds{{container="{c[0]}",namespace="{p.namespace}",pod="{p.name}"}} '
            f"{self.boot:.10g}"
            for p, c in rows
        ]
        node_cpu = 0.25 + sum(c[1] for _, c in rows)
        node_memory = 512 * 2**20 + sum(c[2] for _, c in rows)
        out += [
            "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds",
            "# TYPE node_cpu_usage_seconds_total counter",
            f"node_cpu_usage_seconds_total {node_cpu * up:.6f} {ts}",
            "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes",
            "# TYPE node_memory_working_set_bytes gauge",
            f"node_memory_working_set_bytes {node_memory:.9g} {ts}",
            "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            "# TYPE pod_cpu_usage_seconds_total counter",
        ]
        out += [
            f'pod_cpu_usage_seconds_total{{namespace="{p.namespace}",pod="{p.name}"}} '
            f"{sum(c[1] for c in p.containers) * up:.6f} {ts}"
            for p in pods
        ]
        out += [
            "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes",
            "# TYPE pod_memory_working_set_bytes gauge",
        ]
        out += [
            f'pod_memory_working_set_bytes{{namespace="{p.namespace}",pod="{p.name}"}} '
            f"{sum(c[2] for c in p.containers):.9g} {ts}"
            for p in pods
        ]
        out += [
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, "
            "0 otherwise",
            "# TYPE resource_scrape_error gauge",
            "resource_scrape_error 0",
            "",
        ]
        return "\n".join(out)


@dataclass
class Fault:
    """An injected transport fault for 200 answers (lists of the API server, or one fake kubelet):

    * `oversize`: the body padded (valid JSON / Prometheus text) to `size` bytes, Content-Length announced;
    * `oversize_unannounced`: the same without Content-Length (the body ends when the connection closes);
    * `drip`: the real body, one byte every `interval` seconds;
    * `truncated`: Content-Length of the whole body, then half of it and the connection closed.
    """

    kind: str
    size: int = 100 * 2**20
    interval: float = 1.0
    sent: int = 0
    """Bytes of oversize bodies written so far (the client's socket buffers included)."""

    KINDS: ClassVar[frozenset[str]] = frozenset({"oversize", "oversize_unannounced", "drip", "truncated"})

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (one of {sorted(self.KINDS)})")


def _pad(body: bytes, size: int) -> bytes:
    """`body` grown to `size` bytes and still well-formed: JSON gets a padding field, text a comment."""
    missing = max(0, size - len(body))
    if body.startswith(b"{"):
        return b'{"padding":"' + b"x" * max(0, missing - 14) + b'",' + body[1:]
    return b"# " + b"x" * max(0, missing - 3) + b"\n" + body


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin"
    disable_nagle_algorithm = True  # headers and body are two writes: without this, 40 ms per answer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_faulty(self, fault: Fault, body: bytes, content_type: str) -> None:
        """A 200 answer of `body` spoiled as `fault` says (see `Fault`)."""
        if fault.kind.startswith("oversize"):
            body = _pad(body, fault.size)
        announced = fault.kind != "oversize_unannounced"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if announced:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")  # the body ends when the connection does (HTTP/1.1 allows it)
            self.close_connection = True
        self.end_headers()
        try:
            if fault.kind == "truncated":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # half the announced bytes, then the end
            elif fault.kind == "drip":
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(fault.interval)
            else:
                for start in range(0, len(body), 64 * 1024):  # counted, to show how much a client took
                    self.wfile.write(body[start : start + 64 * 1024])
                    fault.sent += len(body[start : start + 64 * 1024])
        except OSError:
            self.close_connection = True  # the client gave up (as it should): nothing to report


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    server_address: tuple[str, int]  # always bound to an AF_INET (host, port)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: TLSFiles):
        super().__init__(address, handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.cert), str(tls.key))
        self.socket = context.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeouts in tests) is not an error worth a traceback


def _serve(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return thread


class KubeletServer:
    """Fake kubelets over HTTPS: `/metrics/resource` (and `/healthz`) of one node per (address, port)."""

    def __init__(self, kubelets: Iterable[tuple[str, int, FakeKubelet]], tls: TLSFiles, token: str | None = None):
        """kubelets: (address, port, kubelet); port 0 picks a free port (see `addresses`)."""
        self.kubelets: dict[tuple[str, int], FakeKubelet] = {}
        self.token = token
        self.servers: list[_TLSServer] = []
        self.requests: list[tuple[str, str, str]] = []  # (node, path, authorization present)
        outer = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                kubelet = outer.kubelets[self.server.server_address[:2]]  # type: ignore[index]
                auth = self.headers.get("Authorization", "")
                outer.requests.append((kubelet.node, self.path, "yes" if auth else "no"))
                if outer.token is not None and auth != f"Bearer {outer.token}":
                    self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8")
                    return
                if self.path.split("?")[0] == "/healthz":
                    self._send(200, b"ok", "text/plain; charset=utf-8")
                    return
                if self.path.split("?")[0] != "/metrics/resource":
                    self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
                    return
                _kubelet_answer(kubelet, self)

        self.addresses: dict[str, tuple[str, int]] = {}
        """node -> (address, port) actually bound."""
        for address, port, kubelet in kubelets:
            server = _TLSServer((address, port), Handler, tls)
            bound = server.server_address[:2]
            self.kubelets[bound] = kubelet
            self.addresses[kubelet.node] = bound
            self.servers.append(server)
        for server in self.servers:
            _serve(server, f"kubelet-{server.server_address[0]}")

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def _kubelet_answer(kubelet: FakeKubelet, handler: _QuietHandler) -> None:
    kubelet.requests += 1
    if kubelet.behaviour == "hang":
        time.sleep(kubelet.hang_seconds)
    if kubelet.behaviour == "forbidden":
        handler._send(
            403,
            b"Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=metrics)\n",
            "text/plain; charset=utf-8",
        )
        return
    if kubelet.fault is not None:
        handler._send_faulty(kubelet.fault, kubelet.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        return
    handler._send(200, kubelet.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")


# --- the API server ----------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    rv: int
    keys: list[str]
    blobs: list[bytes]
    index: list[tuple[str | None, str | None, str, Mapping[str, str]]]
    """Per item: (spec.nodeName, status.phase, metadata.name, labels), for field/label selectors."""


@dataclass
class _Resource:
    kind: str
    namespaced: bool
    snapshots: dict[int, _Snapshot] = field(default_factory=dict)
    current: _Snapshot | None = None


def _key(item: Mapping[str, Any], namespaced: bool) -> str:
    meta = item["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if namespaced else meta["name"]


def _status(
    code: int,
    reason: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": dict(metadata or {}),
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return orjson.dumps(body)


class _ApiError(Exception):
    def __init__(self, code: int, body: bytes):
        self.code, self.body = code, body


class StandinApiServer:
    """The stand-in kube-apiserver: an HTTPS server on 127.0.0.1 backed by in-memory MVCC snapshots."""

    def __init__(self, workdir: Path, *, users: Mapping[str, User] | None = None, host: str = "127.0.0.1"):
        self.workdir = Path(workdir)
        self.tls = make_tls(self.workdir / "pki", ips=(host,))
        self.users: dict[str, User] = dict(users or {"admin-token": User("admin")})
        self._lock = threading.Lock()
        self._rv = 100
        self._resources = {"nodes": _Resource("Node", False), "pods": _Resource("Pod", True)}
        self.kubelets: dict[str, FakeKubelet] = {}
        self.after_page: Callable[[str, int], None] | None = None
        """Test hook: called with (resource, page number) after a page with a continue token is served."""
        self.requests: list[str] = []
        self.record_requests = False
        self.down = False
        self.list_fault: Fault | None = None
        """A transport fault for list answers (oversize, drip, truncated); None = healthy."""
        self._loads: dict[str, list[_PodLoad]] = {}
        outer = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                outer._handle(self)

        self._server = _TLSServer((host, 0), Handler, self.tls)
        self.port = self._server.server_address[1]
        self.url = f"https://{host}:{self.port}"
        self._thread = _serve(self._server, "standin-apiserver")
        self._set("nodes", [])
        self._set("pods", [])

    # --- data ------------------------------------------------------------------------------------

    def set_nodes(self, nodes: Sequence[Mapping[str, Any]], kubelets: Mapping[str, FakeKubelet] | None = None) -> None:
        """Replace all nodes; each gets a fake kubelet (given, or a healthy one) reachable via the proxy."""
        self._set("nodes", nodes)
        given = dict(kubelets or {})
        self.kubelets = {
            n["metadata"]["name"]: given.get(n["metadata"]["name"])
            or self.kubelets.get(n["metadata"]["name"])
            or FakeKubelet(n["metadata"]["name"])
            for n in nodes
        }
        self._sync_kubelets()

    def set_pods(self, pods: Sequence[Mapping[str, Any]]) -> None:
        """Replace all pods; the running ones show up in their node's kubelet metrics."""
        self._set("pods", pods)
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if node:
                by_node.setdefault(node, []).append(pod)
        self._loads = {node: _pod_loads(node_pods) for node, node_pods in by_node.items()}
        self._sync_kubelets()

    def _sync_kubelets(self) -> None:
        for name, kubelet in self.kubelets.items():
            kubelet.pods = self._loads.get(name, [])

    def _set(self, resource: str, items: Sequence[Mapping[str, Any]]) -> None:
        res = self._resources[resource]
        with self._lock:
            self._rv += 1
            rv = self._rv
        keyed = sorted(((_key(item, res.namespaced), item) for item in items), key=lambda pair: pair[0])
        blobs, index = [], []
        for _, item in keyed:
            item = {**item, "metadata": {**item["metadata"], "resourceVersion": str(rv)}}
            blobs.append(orjson.dumps(item))
            index.append(
                (
                    (item.get("spec") or {}).get("nodeName"),
                    (item.get("status") or {}).get("phase"),
                    item["metadata"]["name"],
                    item["metadata"].get("labels") or {},
                )
            )
        snapshot = _Snapshot(rv, [k for k, _ in keyed], blobs, index)
        with self._lock:
            res.snapshots[rv] = snapshot
            res.current = snapshot

    def compact(self) -> None:
        """etcd compaction: forget every snapshot but the newest (older continue tokens -> 410)."""
        with self._lock:
            for res in self._resources.values():
                assert res.current is not None
                res.snapshots = {res.current.rv: res.current}

    def touch(self, resource: str = "pods") -> None:
        """A write that changes nothing visible (a new resourceVersion), so a later compact() bites."""
        res = self._resources[resource]
        assert res.current is not None
        with self._lock:
            self._rv += 1
            current = res.current
            res.current = _Snapshot(self._rv, current.keys, current.blobs, current.index)
            res.snapshots[self._rv] = res.current

    def kubeconfig(
        self, path: Path, token: str = "admin-token", context: str = "standin", cluster: str | None = None
    ) -> Path:
        return write_kubeconfig(path, self.url, self.tls.ca_cert, token, context, cluster)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- HTTP ------------------------------------------------------------------------------------

    def _handle(self, handler: _QuietHandler) -> None:
        if self.record_requests:
            self.requests.append(handler.path)
        try:
            if self.down:
                raise _ApiError(
                    503, _status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
                )
            user = self._authenticate(handler)
            raw_path, _, query_text = handler.path.partition("?")
            query = urllib.parse.parse_qs(query_text, keep_blank_values=True)
            parts = [p for p in raw_path.split("/") if p]
            if parts == ["version"]:
                handler._send(
                    200,
                    orjson.dumps(
                        {"major": "1", "minor": "30", "gitVersion": "v1.30.6-standin", "platform": "linux/amd64"}
                    ),
                )
                return
            if parts[:2] != ["api", "v1"]:
                raise _ApiError(404, _status(404, "NotFound", "the server could not find the requested resource"))
            rest = parts[2:]
            if rest == ["nodes"]:
                self._list(handler, user, "nodes", None, query)
            elif rest == ["pods"]:
                self._list(handler, user, "pods", None, query)
            elif len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "pods":
                self._list(handler, user, "pods", urllib.parse.unquote(rest[1]), query)
            elif len(rest) == 2 and rest[0] == "nodes":
                self._get_node(handler, user, urllib.parse.unquote(rest[1]))
            elif len(rest) >= 3 and rest[0] == "nodes" and rest[2] == "proxy":
                # The client encodes the proxied path's slashes (metrics%2Fresource): decode, as the real server does.
                path = urllib.parse.unquote("/".join(rest[3:]))
                self._proxy(handler, user, urllib.parse.unquote(rest[1]), path)
            else:
                raise _ApiError(404, _status(404, "NotFound", "the server could not find the requested resource"))
        except _ApiError as error:
            handler._send(error.code, error.body)

    def _authenticate(self, handler: _QuietHandler) -> User:
        auth = handler.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        user = self.users.get(token) if token else None
        if user is None:
            raise _ApiError(401, _status(401, "Unauthorized", "Unauthorized"))
        return user

    def _authorize(
        self, user: User, verb: str, resource: str, name: str | None = None, namespace: str | None = None
    ) -> None:
        if f"{verb} {resource}" in user.permissions:
            return
        base, _, _sub = resource.partition("/")
        what = f'{base} "{name}"' if name else base
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = f'{what} is forbidden: User "{user.name}" cannot {verb} resource "{resource}" in API group "" {scope}'
        details: dict[str, Any] = {"kind": base}
        if name:
            details["name"] = name
        raise _ApiError(403, _status(403, "Forbidden", message, details))

    def _list(
        self, handler: _QuietHandler, user: User, resource: str, namespace: str | None, query: Mapping[str, list[str]]
    ) -> None:
        self._authorize(user, "list", resource, namespace=namespace)
        res = self._resources[resource]
        limit = _int_param(query, "limit")
        token = (query.get("continue") or [""])[0]
        resource_version = (query.get("resourceVersion") or [""])[0]
        selectors = _selectors(query, resource)
        with self._lock:
            current = res.current
            snapshots = dict(res.snapshots)
        assert current is not None
        start_key = ""
        snapshot = current
        if token:
            rv, start_key = _decode_continue(token)
            if rv not in snapshots:  # compacted away (or never existed)
                fresh = _encode_continue(current.rv, start_key) if start_key else ""
                raise _ApiError(
                    410,
                    _status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start "
                        "a new list without the continue parameter, or use the continue token in this response to "
                        "retrieve the remainder of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted between the time the "
                        "first chunk was returned and now may show up in the list.",
                        metadata={"continue": fresh} if fresh else None,
                    ),
                )
            snapshot = snapshots[rv]
        elif resource_version == "0":
            limit = None  # served from the watch cache: the real server ignores limit
        prefix = f"{namespace}/" if namespace else ""
        position = bisect.bisect_left(snapshot.keys, max(start_key, prefix))
        chosen: list[bytes] = []
        last_key, more = "", False
        n = len(snapshot.keys)
        while position < n:
            key = snapshot.keys[position]
            if prefix and not key.startswith(prefix):
                break
            if selectors(snapshot.index[position]):
                if limit and len(chosen) >= limit:
                    more = True
                    break
                chosen.append(snapshot.blobs[position])
                last_key = key
            position += 1
        metadata: dict[str, Any] = {"resourceVersion": str(snapshot.rv)}
        if more:
            # like the real server: continue right after the last key returned ("<key>\0" sorts next)
            metadata["continue"] = _encode_continue(snapshot.rv, last_key + "\u0000")
            remaining = (
                (n - position) if not prefix else sum(1 for k in snapshot.keys[position:] if k.startswith(prefix))
            )
            if not selectors.filtering:
                metadata["remainingItemCount"] = remaining
        body = b"".join(
            (
                b'{"kind":"',
                res.kind.encode(),
                b'List","apiVersion":"v1","metadata":',
                orjson.dumps(metadata),
                b',"items":[',
                b",".join(chosen),
                b"]}",
            )
        )
        if self.list_fault is not None:
            handler._send_faulty(self.list_fault, body, "application/json")
        else:
            handler._send(200, body)
        if more and self.after_page is not None:
            self.after_page(resource, int(bool(token)) + 1)

    def _get_node(self, handler: _QuietHandler, user: User, name: str) -> None:
        self._authorize(user, "get", "nodes", name=name)
        blob = self._node_blob(name)
        handler._send(200, blob)

    def _node_blob(self, name: str) -> bytes:
        res = self._resources["nodes"]
        assert res.current is not None
        position = bisect.bisect_left(res.current.keys, name)
        if position >= len(res.current.keys) or res.current.keys[position] != name:
            raise _ApiError(404, _status(404, "NotFound", f'nodes "{name}" not found', {"name": name, "kind": "nodes"}))
        return res.current.blobs[position]

    def _proxy(self, handler: _QuietHandler, user: User, node: str, path: str) -> None:
        name = node.split(":", 1)[0]  # nodes/<name>:<port>/proxy is allowed too
        self._authorize(user, "get", "nodes/proxy", name=name)
        node_object = orjson.loads(self._node_blob(name))
        kubelet = self.kubelets.get(name)
        address = next(
            (a["address"] for a in node_object["status"].get("addresses", ()) if a["type"] == "InternalIP"), name
        )
        if kubelet is None or kubelet.behaviour == "down":
            raise _ApiError(
                503,
                _status(
                    503,
                    "ServiceUnavailable",
                    f"error trying to reach service: dial tcp {address}:10250: connect: connection refused",
                ),
            )
        if path != "metrics/resource":
            handler._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        _kubelet_answer(kubelet, handler)


def _int_param(query: Mapping[str, list[str]], name: str) -> int | None:
    value = (query.get(name) or [""])[0]
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _ApiError(400, _status(400, "BadRequest", f"{name}: Invalid value: {value!r}")) from None
    return number if number > 0 else None


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unexpected version")
        rv, start = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise _ApiError(
            400, _status(400, "BadRequest", f"invalid continue token: continue key is not valid: {error}")
        ) from None
    return rv, start


class _Selector:
    def __init__(self, checks: list[Callable[[tuple[str | None, str | None, str, Mapping[str, str]]], bool]]):
        self.checks = checks
        self.filtering = bool(checks)

    def __call__(self, entry: tuple[str | None, str | None, str, Mapping[str, str]]) -> bool:
        return all(check(entry) for check in self.checks)


_FIELDS: dict[str, dict[str, int | None]] = {
    "pods": {"spec.nodeName": 0, "status.phase": 1, "metadata.name": 2},
    "nodes": {"metadata.name": 2, "spec.unschedulable": None},
}


def _label_check(term: str) -> Callable[[Any], bool]:
    """One equality-based label selector term: k=v, k==v, k!=v, k, !k."""
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return lambda e: e[3].get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return lambda e: e[3].get(key) == value
    if term.startswith("!"):
        missing = term[1:].strip()
        return lambda e: missing not in e[3]
    return lambda e: term in e[3]


def _selectors(query: Mapping[str, list[str]], resource: str) -> _Selector:
    checks: list[Callable[[Any], bool]] = []
    for term in filter(None, (query.get("fieldSelector") or [""])[0].split(",")):
        negate = "!=" in term
        name, _, value = term.partition("!=" if negate else "=")
        value = value.lstrip("=")
        if name not in _FIELDS[resource] or _FIELDS[resource][name] is None:
            raise _ApiError(400, _status(400, "BadRequest", f"field label not supported: {name}"))
        slot = _FIELDS[resource][name]

        def check(e: Any, s: int | None = slot, v: str = value, n: bool = negate) -> bool:
            return ((e[s] or "") == v) != n

        checks.append(check)
    for term in filter(None, (query.get("labelSelector") or [""])[0].split(",")):
        checks.append(_label_check(term.strip()))
    return _Selector(checks)


# --- a synthetic cluster (benchmarks) ---------------------------------------------------------------


def synthetic_cluster(nodes: int, pods: int, seed: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`nodes` OpenStack-backed nodes in 3 pools and `pods` pods of ~40 deployments' worth of shapes each."""
    rng = random.Random(seed)
    node_objects = []
    for i in range(nodes):
        name = f"node-{i:05d}"
        pool = ("general", "memory", "batch")[i % 3]
        node_objects.append(
            make_node(
                name,
                cpu="16",
                memory="64Gi",
                allocatable_cpu="15890m",
                allocatable_memory="63917756Ki",
                pods="110",
                provider_id=f"openstack:///{_uid('server', name)}",
                labels={
                    "node.kubernetes.io/pool": pool,
                    "topology.kubernetes.io/zone": f"az{i % 3 + 1}",
                    "node.kubernetes.io/instance-type": "m1.xlarge",
                },
                address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            )
        )
    shapes = [("100m", "128Mi"), ("250m", "256Mi"), ("500m", "1Gi"), ("1", "2Gi"), ("50m", "64Mi")]
    pod_objects = []
    for j in range(pods):
        namespace = f"team-{j % 50:02d}"
        app = f"app-{j % 997:03d}"
        node = f"node-{j % nodes:05d}"
        cpu, memory = shapes[j % len(shapes)]
        kind = j % 20
        phase = "Succeeded" if kind == 19 else "Running"
        containers: list[Container] = [(app, {"cpu": cpu, "memory": memory}, {"memory": memory})]
        init: list[Container] = []
        sidecars: tuple[str, ...] = ()
        if kind in (1, 2):
            containers.append(("proxy", {"cpu": "50m", "memory": "64Mi"}, {"cpu": "200m", "memory": "128Mi"}))
        if kind == 3:
            init = [("migrate", {"cpu": "1", "memory": "512Mi"}, {}), ("mesh", {"cpu": "100m", "memory": "64Mi"}, {})]
            sidecars = ("mesh",)
        if kind < 12:
            owner, template_hash = ("ReplicaSet", f"{app}-{rng.randrange(16**9):09x}"), None
            template_hash = owner[1].rsplit("-", 1)[1]
            name = f"{owner[1]}-{rng.randrange(36**5):05x}"
        elif kind < 16:
            owner, template_hash, name = ("StatefulSet", app), None, f"{app}-{j}"
        elif kind < 19:
            owner, template_hash, name = ("DaemonSet", f"ds-{app}"), None, f"ds-{app}-{j:06x}"
        else:
            owner, template_hash, name = ("Job", f"{app}-job-{j}"), None, f"{app}-job-{j}-x{j % 7}"
        pod_objects.append(
            make_pod(
                namespace,
                f"{name}-{j}",
                node=node,
                phase=phase,
                containers=containers,
                init_containers=init,
                sidecars=sidecars,
                owner=owner,
                template_hash=template_hash,
                labels={"app": app},
            )
        )
    return node_objects, pod_objects


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a synthetic cluster until stdin closes (so the server never outlives its parent)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    server = StandinApiServer(args.workdir)
    nodes, pods = synthetic_cluster(args.nodes, args.pods)
    server.set_nodes(nodes)
    server.set_pods(pods)
    del nodes, pods
    kubeconfig = server.kubeconfig(args.workdir / "kubeconfig", context="standin")
    print(json.dumps({"kubeconfig": str(kubeconfig), "url": server.url}), flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
