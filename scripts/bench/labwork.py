"""The parts of scripts/bench-suites that touch the lab: the floor (namespace, restricted pods,
Ready, one exec, delete), counting the pods a fleetcheck run creates, the ServiceAccounts of the
50-context part, and the loopback listener that accepts and never answers.

Everything talks to the lab through the official kubernetes Python client, with clients built
by fleetcheck's own loader (``fleetcheck.core.targets.build_api_client``: the context's entries only,
client keys in memory).  Every object created here is labelled
``app.kubernetes.io/managed-by=fleetcheck-bench`` and removed by :meth:`Cleanup.run`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from benchlib import BENCH_LABEL, SA_NAMESPACE
from fleetcheck.core import kubeconfig as kubeconfig_mod
from fleetcheck.core.targets import build_api_client
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

RUN_LABEL = "fleetcheck-bench/run"
READER_ROLE = "fc-bench:node-lease-reader"
VIEW_BINDING = "fc-bench:view"
READER_BINDING = "fc-bench:node-lease-reader"


def api_clients(kubeconfig: Path, contexts: Sequence[str],
                request_timeout: float = 30.0) -> dict[str, k8s.ApiClient]:
    kc = kubeconfig_mod.load([kubeconfig])
    return {c: build_api_client(kc, c, connect_timeout=3.0, request_timeout=request_timeout)
            for c in contexts}


def lab_clusters(kubeconfig: Path, contexts: Sequence[str]) -> dict[str, dict[str, str]]:
    """context -> {server, certificate-authority-data} of the lab's admin contexts."""
    data = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
    clusters = {c["name"]: c["cluster"] for c in data.get("clusters") or []}
    ctxs = {c["name"]: c["context"] for c in data.get("contexts") or []}
    out = {}
    for name in contexts:
        cluster = clusters[ctxs[name]["cluster"]]
        out[name] = {"server": cluster["server"],
                     "certificate-authority-data": cluster["certificate-authority-data"]}
    return out


def _ignore_status(fn: Callable[[], Any], *statuses: int) -> Any:
    try:
        return fn()
    except ApiException as exc:
        if exc.status not in statuses:
            raise
        return None


# --- cleanup ---------------------------------------------------------------------------------

class Cleanup:
    """Undo actions registered while the bench runs; :meth:`run` is idempotent, never raises,
    and runs each action once (also after Ctrl-C)."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], Any]]] = []
        self._lock = threading.Lock()

    def add(self, what: str, action: Callable[[], Any]) -> None:
        with self._lock:
            self._actions.append((what, action))

    def run(self, log: Callable[[str], None] = print) -> None:
        while True:
            with self._lock:
                if not self._actions:
                    return
                what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - report and go on with the rest
                log(f"cleanup: {what} failed: {type(exc).__name__}: {str(exc)[:200]}")


# --- floor ------------------------------------------------------------------------------------

def floor_pod(name: str, image: str) -> dict[str, Any]:
    """A busybox pod that satisfies PodSecurity restricted (as fleetcheck's probes do)."""
    security = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": dict(BENCH_LABEL)},
        "spec": {
            "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1, "activeDeadlineSeconds": 3600,
            "securityContext": security,
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "securityContext": {**security, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "200m", "memory": "64Mi"}},
            }],
        },
    }


def bench_namespace(name: str, bench_id: str, ttl_s: int = 7200) -> dict[str, Any]:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_s)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name,
        "labels": {**BENCH_LABEL, RUN_LABEL: bench_id,
                   "pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"},
        "annotations": {"fleetcheck-bench/expires-at":
                        expires.replace(microsecond=0).isoformat()}}}


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


@dataclass
class FloorResult:
    cluster: str
    pods: int
    seconds: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def floor_cluster(api: k8s.ApiClient, cluster: str, pods: int, image: str, bench_id: str,
                  cleanup: Cleanup, timeout_s: float = 180.0) -> FloorResult:
    """Namespace (restricted) -> ``pods`` pods -> all Ready (watch) -> one exec -> delete the
    namespace (not awaited).  Timed from the namespace create to the delete call returning."""
    core = k8s.CoreV1Api(api)
    result = FloorResult(cluster, pods)
    ns = f"fc-bench-floor-{secrets.token_hex(3)}"
    start = time.monotonic()
    deadline = start + timeout_s
    mark = start

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        result.steps[name] = round(now - mark, 3)
        mark = now

    try:
        core.create_namespace(bench_namespace(ns, bench_id))
        cleanup.add(f"delete namespace {ns} on {cluster}",
                    lambda: _ignore_status(lambda: core.delete_namespace(ns), 404, 409))
        step("namespace")
        # the ServiceAccount admission plugin rejects pods until "default" exists (as for
        # fleetcheck's probe namespaces)
        while True:
            try:
                core.read_namespaced_service_account("default", ns)
                break
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        step("default sa")
        names = [f"floor-{i}" for i in range(pods)]
        for name in names:
            core.create_namespaced_pod(ns, floor_pod(name, image))
        step("create pods")
        _wait_ready(core, ns, set(names), deadline)
        step("all ready")
        out = stream(core.connect_get_namespaced_pod_exec, names[0], ns,
                     command=["sh", "-c", "echo ok"], stderr=True, stdin=False, stdout=True,
                     tty=False, _request_timeout=30)
        if "ok" not in (out or ""):
            raise RuntimeError(f"exec printed {out!r}")
        step("exec")
        core.delete_namespace(ns)
        step("delete ns")
        result.seconds = round(time.monotonic() - start, 3)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        result.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        _ignore_status(lambda: core.delete_namespace(ns), 404, 409)
    return result


def _wait_ready(core: k8s.CoreV1Api, ns: str, names: set[str], deadline: float) -> None:
    ready: set[str] = set()
    while True:
        listing = core.list_namespaced_pod(ns)
        ready = {p.metadata.name for p in listing.items if _ready(p)}
        if names <= ready:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"pods not Ready: {sorted(names - ready)}")
        w = k8s_watch.Watch()
        try:
            for event in w.stream(core.list_namespaced_pod, ns,
                                  resource_version=listing.metadata.resource_version,
                                  timeout_seconds=max(1, int(min(remaining, 30))),
                                  _request_timeout=(3, min(remaining, 30) + 5)):
                pod = event["object"]
                if event["type"] in ("ADDED", "MODIFIED") and _ready(pod):
                    ready.add(pod.metadata.name)
                if names <= ready:
                    w.stop()
                    return
        except ApiException as exc:
            if exc.status != 410:  # expired resourceVersion: list again
                raise


def floor_once(apis: Mapping[str, k8s.ApiClient], pods: Mapping[str, int], image: str,
               bench_id: str, cleanup: Cleanup) -> tuple[float, list[FloorResult]]:
    """The floor in every cluster of ``apis`` at once (one thread each): wall seconds and the
    per-cluster results."""
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        futures = [pool.submit(floor_cluster, api, c, pods[c], image, bench_id, cleanup)
                   for c, api in apis.items()]
        results = [f.result() for f in futures]
    return time.monotonic() - start, results


def delete_stale_namespaces(api: k8s.ApiClient) -> list[str]:
    """Delete bench namespaces (label ``managed-by=fleetcheck-bench``) whose expiry passed:
    leftovers of a bench that was killed.  Returns their names."""
    core = k8s.CoreV1Api(api)
    selector = ",".join(f"{k}={v}" for k, v in BENCH_LABEL.items())
    now = dt.datetime.now(dt.UTC)
    gone = []
    for ns in core.list_namespace(label_selector=selector).items:
        expires = (ns.metadata.annotations or {}).get("fleetcheck-bench/expires-at")
        try:
            expired = expires is not None and dt.datetime.fromisoformat(expires) < now
        except ValueError:
            expired = True
        if expired and ns.status.phase != "Terminating":
            _ignore_status(lambda n=ns.metadata.name: core.delete_namespace(n), 404, 409)
            gone.append(ns.metadata.name)
    return gone


# --- counting the pods of a fleetcheck run --------------------------------------------------

class PodCounter:
    """Watch every pod of one cluster during a run; count the distinct pods created in
    namespaces ``fleetcheck-<run-id>*`` (probe namespace, scratch and round-trip namespaces)
    and how many of them were seen Ready."""

    def __init__(self, cluster: str, api: k8s.ApiClient, prefix: str) -> None:
        self.cluster = cluster
        self.core = k8s.CoreV1Api(api)
        self.prefix = prefix
        self.created: dict[str, str] = {}  # uid -> namespace/name
        self.ready: set[str] = set()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"podcount-{cluster}",
                                        daemon=True)

    def start(self) -> PodCounter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _see(self, pod: Any) -> None:
        meta = pod.metadata
        if meta is None or not (meta.namespace or "").startswith(self.prefix):
            return
        self.created[meta.uid] = f"{meta.namespace}/{meta.name}"
        if _ready(pod):
            self.ready.add(meta.uid)

    def _loop(self) -> None:
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = self.core.list_pod_for_all_namespaces(_request_timeout=(3, 20))
                    rv = listing.metadata.resource_version
                    for pod in listing.items:
                        self._see(pod)
                w = k8s_watch.Watch()
                for event in w.stream(self.core.list_pod_for_all_namespaces, resource_version=rv,
                                      timeout_seconds=2, _request_timeout=(3, 10)):
                    if event["type"] == "ERROR":
                        rv = None
                        break
                    pod = event["object"]
                    if pod.metadata is not None and pod.metadata.resource_version:
                        rv = pod.metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._see(pod)
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                else:
                    self.error = f"HTTP {exc.status}"
                    time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - a counting gap is reported, not fatal
                self.error = type(exc).__name__
                time.sleep(0.5)


# --- ServiceAccounts of the 50-context part ---------------------------------------------------

def _meta(name: str, bench_id: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**BENCH_LABEL, RUN_LABEL: bench_id}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def setup_accounts(api: k8s.ApiClient, cluster: str, accounts: Sequence[str], bench_id: str,
                   cleanup: Cleanup, expiration_s: int = 3600) -> dict[str, str]:
    """In one cluster: namespace ``fc-bench`` with ServiceAccounts ``accounts``, bound to
    ClusterRole ``view`` and to a ClusterRole reading nodes and leases; returns SA -> a
    TokenRequest token valid ``expiration_s``.  Registers the removal with ``cleanup`` before
    creating anything."""
    core = k8s.CoreV1Api(api)
    rbac = k8s.RbacAuthorizationV1Api(api)
    cleanup.add(f"delete ClusterRoleBindings, ClusterRole and namespace {SA_NAMESPACE} on "
                f"{cluster}", lambda: teardown_accounts(api))
    _await_namespace_gone(core, SA_NAMESPACE)
    ns = bench_namespace(SA_NAMESPACE, bench_id)
    _ignore_status(lambda: core.create_namespace(ns), 409)
    for sa in accounts:
        _ignore_status(lambda sa=sa: core.create_namespaced_service_account(
            SA_NAMESPACE, {"metadata": _meta(sa, bench_id)}), 409)
    role = {"metadata": _meta(READER_ROLE, bench_id), "rules": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "list", "watch"]}]}
    _ignore_status(lambda: rbac.create_cluster_role(role), 409)
    subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": SA_NAMESPACE}
                for sa in accounts]
    for binding, role_name in ((VIEW_BINDING, "view"), (READER_BINDING, READER_ROLE)):
        body = {"metadata": _meta(binding, bench_id), "subjects": subjects,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role_name}}
        _ignore_status(lambda b=binding: rbac.delete_cluster_role_binding(b), 404)
        rbac.create_cluster_role_binding(body)
    tokens = {}
    for sa in accounts:
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s))
        tokens[sa] = core.create_namespaced_service_account_token(sa, SA_NAMESPACE,
                                                                  request).status.token
    return tokens


def _await_namespace_gone(core: k8s.CoreV1Api, name: str, timeout_s: float = 90) -> None:
    """A leftover ``fc-bench`` that is terminating must be gone before it is made again."""
    deadline = time.monotonic() + timeout_s
    while True:
        ns = _ignore_status(lambda: core.read_namespace(name), 404)
        if ns is None or ns.status.phase != "Terminating":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} is still terminating after {timeout_s:.0f}s")
        time.sleep(0.5)


def teardown_accounts(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    rbac = k8s.RbacAuthorizationV1Api(api)
    for binding in (VIEW_BINDING, READER_BINDING):
        _ignore_status(lambda b=binding: rbac.delete_cluster_role_binding(b), 404)
    _ignore_status(lambda: rbac.delete_cluster_role(READER_ROLE), 404)
    _ignore_status(lambda: core.delete_namespace(SA_NAMESPACE), 404)


# --- dead endpoints ---------------------------------------------------------------------------

def unused_loopback_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports where nothing listens (bound, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SilentListener:
    """A loopback TCP listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="silent-listener", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self.sock.close()
