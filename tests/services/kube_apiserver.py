"""A real kube-apiserver (1.20, built by scripts/provision/kubernetes.sh) + etcd + fake kubelets, for tests.

Follows shared/recipes/kubernetes: the API server refuses to proxy to loopback kubelet addresses, so
everything runs inside a private network namespace (`unshare -n`) whose `lo` carries test addresses
from 192.0.2.0/24 (TEST-NET-1): the API server advertises 192.0.2.1, fake kubelets listen on
192.0.2.10+ port 10250 (HTTPS), and the collector under test runs in the same namespace.

`KubeApiServer` must therefore be used by a process that is already inside such a namespace;
`run_in_private_netns(module, args)` starts one (`unshare -n <python> -m <module> ...`) and returns its
stdout. etcd and kube-apiserver are started with a parent-death signal and stopped by PID.

    with KubeApiServer(workdir) as api:          # inside the namespace
        api.start(kubelets={"node-a": FakeKubelet("node-a"), ...})
        api.create_namespace("apps"); api.create_node(node); api.create_pod(pod)
        kubeconfig = api.kubeconfig("collector-token")
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from collector.demo.standins.kubernetes import FakeKubelet, KubeletServer, make_tls, write_kubeconfig

CACHE = Path(os.environ.get("CAPACITYD_K8S_CACHE", "/var/cache/capacityd-ci/kubernetes"))
PROVISION_HINT = "run scripts/provision/kubernetes.sh (builds kube-apiserver 1.20 from Debian's source package)"
ADVERTISE = "192.0.2.1"
KUBELET_BASE = 10  # kubelets on 192.0.2.10, .11, ...
SECURE_PORT = 6443

TOKENS = {
    "admin-token": ("admin", "system:masters"),
    "collector-token": ("capacityd", ""),
    "viewer-token": ("viewer", ""),
}

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies, so nothing outlives it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def binaries() -> tuple[Path, Path]:
    """(kube-apiserver, etcd) from the provisioning cache, or an AssertionError naming the fix."""
    apiserver, etcd = CACHE / "bin" / "kube-apiserver", CACHE / "bin" / "etcd"
    missing = [str(p) for p in (apiserver, etcd) if not os.access(p, os.X_OK)]
    if missing:
        raise AssertionError(f"real kube-apiserver not available ({', '.join(missing)} missing): {PROVISION_HINT}")
    return apiserver, etcd


def run_in_private_netns(module: str, args: Sequence[str], timeout: float = 420) -> subprocess.CompletedProcess:
    """Run `python -m module args` in a new network namespace (root needed); its servers die with it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class KubeApiServer:
    """etcd + kube-apiserver + fake kubelets in the current (private) network namespace."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.processes: list[subprocess.Popen] = []
        self.kubelet_server: KubeletServer | None = None
        self.kubelet_addresses: dict[str, str] = {}
        self.url = f"https://127.0.0.1:{SECURE_PORT}"
        self._context: ssl.SSLContext | None = None

    def __enter__(self) -> KubeApiServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self, kubelets: Mapping[str, FakeKubelet]) -> None:
        apiserver, etcd = binaries()
        run = self.workdir
        run.mkdir(parents=True, exist_ok=True)
        addresses = [ADVERTISE] + [f"192.0.2.{KUBELET_BASE + i}" for i in range(len(kubelets))]
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for address in addresses:
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
        self.kubelet_addresses = dict(zip(kubelets, addresses[1:], strict=True))

        tls = make_tls(run / "pki", ips=("127.0.0.1", ADVERTISE), names=("localhost", "kubernetes"))
        kubelet_tls = make_tls(run / "kubelet-pki", ips=addresses[1:], common_name="kubelet")
        self.ca = tls.ca_cert
        self._write_service_account_keys(run)
        (run / "tokens.csv").write_text(
            "".join(
                f"{token},{user},{user}" + (f',"{group}"' if group else "") + "\n"
                for token, (user, group) in TOKENS.items()
            )
        )

        self.kubelet_server = KubeletServer(
            [(self.kubelet_addresses[name], 10250, kubelet) for name, kubelet in kubelets.items()], kubelet_tls
        )

        etcd_log = open(run / "etcd.log", "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.processes.append(
            subprocess.Popen(
                [
                    str(etcd),
                    "--data-dir",
                    str(run / "etcd-data"),
                    "--listen-client-urls",
                    "http://127.0.0.1:2379",
                    "--advertise-client-urls",
                    "http://127.0.0.1:2379",
                    "--listen-peer-urls",
                    "http://127.0.0.1:2380",
                    "--initial-advertise-peer-urls",
                    "http://127.0.0.1:2380",
                    "--initial-cluster",
                    "default=http://127.0.0.1:2380",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                cwd=run,
            )
        )
        self._wait_for("http://127.0.0.1:2379/health", "etcd", 30)

        apiserver_log = open(run / "apiserver.log", "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.processes.append(
            subprocess.Popen(
                [
                    str(apiserver),
                    "--etcd-servers=http://127.0.0.1:2379",
                    "--bind-address=127.0.0.1",
                    f"--advertise-address={ADVERTISE}",
                    f"--secure-port={SECURE_PORT}",
                    "--insecure-port=0",
                    f"--cert-dir={run / 'certs'}",
                    f"--tls-cert-file={tls.cert}",
                    f"--tls-private-key-file={tls.key}",
                    f"--token-auth-file={run / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={run / 'sa.pub'}",
                    f"--service-account-signing-key-file={run / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--disable-admission-plugins=ServiceAccount",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--kubelet-timeout=5s",
                    "--allow-privileged=true",
                    "--v=1",
                ],
                stdout=apiserver_log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                cwd=run,
            )
        )
        self._wait_ready(90)
        self._rbac()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
        if self.kubelet_server is not None:
            self.kubelet_server.stop()
            self.kubelet_server = None

    @staticmethod
    def _write_service_account_keys(run: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (run / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
        (run / "sa.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def _wait_for(self, url: str, what: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise AssertionError(f"{what} did not become ready within {seconds:g}s (logs in {self.workdir})")

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return
                last = body[:200].decode(errors="replace")
            except OSError as error:
                last = str(error)
            time.sleep(0.5)
        raise AssertionError(
            f"kube-apiserver not ready within {seconds:g}s: {last} (log: {self.workdir}/apiserver.log)"
        )

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                tail = (self.workdir / ("etcd.log" if "etcd" in process.args[0] else "apiserver.log")).read_text()
                raise AssertionError(f"{process.args[0]} exited with {process.returncode}:\n{tail[-3000:]}")

    # --- API --------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, token: str = "admin-token") -> tuple[int, bytes]:
        """One HTTPS call to the API server; returns (status, body) for any HTTP status."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.ca))
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._context) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise AssertionError(f"{method} {path}: HTTP {status}: {answer[:500]!r}")
        return json.loads(answer)

    def _rbac(self) -> None:
        rules = [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]}]
        for role, extra in (
            ("capacityd", [{"apiGroups": [""], "resources": ["nodes/proxy", "nodes/metrics"], "verbs": ["get"]}]),
            ("viewer", []),
        ):
            self._ok(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": role},
                    "rules": rules + extra,
                },
            )
            self._ok(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": role},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": role}],
                },
            )

    def create_namespace(self, name: str) -> None:
        self._ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def create_node(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Create a node (status included: nodes may set it on create), pointing at its fake kubelet."""
        name = node["metadata"]["name"]
        node = json.loads(json.dumps(node))
        for meta_field in ("uid", "resourceVersion", "creationTimestamp"):
            node["metadata"].pop(meta_field, None)
        node["status"]["addresses"] = [
            {"type": "InternalIP", "address": self.kubelet_addresses[name]},
            {"type": "Hostname", "address": name},
        ]
        node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
        return self._ok("POST", "/api/v1/nodes", node)

    def create_pod(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """Create a pod bound to its node, then set its status (the create resets status to Pending)."""
        pod = json.loads(json.dumps(pod))
        for meta_field in ("uid", "resourceVersion", "creationTimestamp"):
            pod["metadata"].pop(meta_field, None)
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        status = pod.pop("status", {})
        created = self._ok("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        created["status"] = {**created.get("status", {}), **status}
        return self._ok("PUT", f"/api/v1/namespaces/{namespace}/pods/{name}/status", created)

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (older list snapshots and continue tokens expire)."""
        request = urllib.request.Request(
            "http://127.0.0.1:2379/v3/kv/range", method="POST", data=json.dumps({"key": "AA=="}).encode()
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            revision = int(json.loads(answer.read())["header"]["revision"])
        request = urllib.request.Request(
            "http://127.0.0.1:2379/v3/kv/compaction",
            method="POST",
            data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        return revision

    def kubeconfig(self, token: str, context: str = "e2e") -> Path:
        return write_kubeconfig(self.workdir / f"kubeconfig-{token}", self.url, self.ca, token, context)
