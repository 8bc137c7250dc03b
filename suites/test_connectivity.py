"""Connectivity checks: can the fleet's API servers be reached and do they say they are ready."""

from __future__ import annotations

import json
import re
import time

import pytest
from fleetcheck import CheckInfo, Evidence, Pair, Target, Unknown, forbidden_unknown, refused
from fleetcheck.kube import leases, workloads
from fleetcheck.kube import traffic as netprobe
from fleetcheck.kube.api import Api, ApiError
from fleetcheck.kube.preflight import unanswered
from fleetcheck.kube.traffic import HttpResult
from kubernetes.client.exceptions import ApiException


@pytest.mark.check("connectivity/api-ready", level="required")
def test_api_ready(target: Target, check: CheckInfo, evidence: Evidence, expectations: dict) -> None:
    """``/readyz`` answers ``ok`` within the connect timeout; the server version is recorded."""
    timeout = float(expectations["connectivity"]["api_ready_timeout_s"])
    api = Api(target.api_client, (target.connect_timeout, timeout), target.name)
    start = time.monotonic()
    try:
        status, body = api.get_text("/readyz")
    except ApiError as exc:
        if exc.kind != "timeout":  # reachable at preflight, not any more
            raise Unknown(f"GET /readyz failed: {unanswered(exc, target.server)}") from None
        # the server took the connection (preflight reached it) but did not say it is ready
        status, body = 0, f"no answer within {timeout:g}s"
    elapsed = time.monotonic() - start
    evidence.text(
        "GET /readyz",
        f"server: {target.server}\nstatus: {status}\nelapsed: {elapsed:.3f}s\nbody: {body}",
    )
    evidence.text("server version", f"{target.version or 'unknown'}")
    _forbidden_is_unknown(target, "/readyz", status, body)
    check.require(
        status == 200 and body.strip() == "ok" and elapsed <= timeout,
        expected=f"GET /readyz -> HTTP 200 'ok' within {timeout:g}s",
        observed=(f"HTTP {status} {_readyz_summary(body)} after {elapsed:.2f}s" if status
                  else body),
    )


def _readyz_summary(body: str) -> str:
    """What a not-ready ``/readyz`` said: its failing sub-checks (``[-]...`` lines) when it
    lists them, else the start of the body."""
    failing = [line.strip() for line in body.splitlines() if line.strip().startswith("[-]")]
    if failing:
        return "failing: " + "; ".join(failing)
    return repr(body.strip()[:200])


@pytest.mark.check("connectivity/version-skew", level="required")
def test_version_skew(target: Target, fleet, check: CheckInfo, evidence: Evidence,
                      expectations: dict) -> None:
    """The server version is in the supported range, and the fleet's minor versions are
    within the configured spread of each other."""
    fleet_exp = fleet.expectations.fleet
    # a context's own connectivity.min_version (file defaults or a contexts entry) wins
    minimum = expectations["connectivity"].get("min_version") or fleet_exp["min_version"]
    bound = int(fleet_exp.get("max_minor_skew", 1))
    versions = {name: t.version for name, t in fleet.targets.items() if t.version}
    evidence.table("server versions", ["context", "version"],
                   [[n, v] for n, v in sorted(versions.items())])
    if not target.version:
        raise Unknown("the server did not report its version")
    mine = parse_version(target.version)
    check.require(
        mine >= parse_version(minimum),
        expected=f"server version >= {minimum}",
        observed=f"{target.version}",
    )
    minors = {n: parse_version(v)[:2] for n, v in versions.items()}
    lowest = min(minors.items(), key=lambda kv: kv[1])
    highest = max(minors.items(), key=lambda kv: kv[1])
    spread = highest[1][1] - lowest[1][1] if highest[1][0] == lowest[1][0] else 99
    check.require(
        spread <= bound,
        expected=f"minor versions across the fleet within {bound} of each other",
        observed=f"{highest[0]} runs {versions[highest[0]]}, {lowest[0]} runs "
                 f"{versions[lowest[0]]} (spread {spread})",
    )


def _forbidden_is_unknown(target: Target, path: str, status: int, body: str) -> None:
    """HTTP 401/403: the identity may not read ``path``, so readiness was not measured."""
    if refused(status, body):
        try:
            message = str(json.loads(body).get("message") or "")
        except (ValueError, AttributeError):
            message = body.strip()[:200]
        unknown = forbidden_unknown(None, "get", path.split("?", 1)[0], context=target.name,
                                    status=status, message=message)
        raise Unknown(f"the server's readiness was not measured: {unknown}")


def parse_version(text: str) -> tuple[int, int, int]:
    """``v1.34.4`` / ``1.25`` / ``v1.30.2-eks-1`` -> (1, 34, 4)."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not a Kubernetes version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@pytest.mark.check("connectivity/nodes-ready", level="required")
@pytest.mark.workloads
def test_nodes_ready(target: Target, check: CheckInfo, evidence: Evidence,
                     expectations: dict) -> None:
    """Every node reports Ready; the report gives ready/total."""
    try:
        nodes = target.core().list_node().items
    except ApiException as exc:
        raise forbidden_unknown(exc, "list", "nodes", context=target.name) from None
    rows, not_ready = [], []
    for node in nodes:
        cond = {c.type: c for c in node.status.conditions or []}.get("Ready")
        status = cond.status if cond else "Unknown"
        reason = f"{cond.reason}: {cond.message}" if cond and status != "True" else ""
        rows.append([node.metadata.name, status, node.status.node_info.kubelet_version,
                     reason[:200]])
        if status != "True":
            not_ready.append(f"{node.metadata.name} ({cond.reason if cond else 'no condition'})")
    evidence.table("nodes", ["node", "Ready", "kubelet", "reason"], rows)
    minimum = int(expectations["connectivity"].get("nodes_min_ready", 1))
    ready = len(nodes) - len(not_ready)
    check.require(
        not not_ready and ready >= minimum,
        expected=f"every node Ready (at least {minimum})",
        observed=f"{ready}/{len(nodes)} Ready" + (
            f"; not Ready: {', '.join(not_ready)}" if not_ready else ""),
    )


def _verbose_health(target: Target, path: str, evidence: Evidence) -> tuple[int, list[str]]:
    try:
        status, body = Api(target.api_client, target.timeout, target.name).get_text(
            f"{path}?verbose")
    except ApiError as exc:  # reachable at preflight, not any more
        raise Unknown(f"GET {path}?verbose failed: {unanswered(exc, target.server)}") from None
    evidence.text(f"GET {path}?verbose -> {status}", body)
    _forbidden_is_unknown(target, f"{path}?verbose", status, body)
    failed = [line[3:].strip() for line in body.splitlines() if line.startswith("[-]")]
    return status, failed


@pytest.mark.check("connectivity/control-plane", level="required")
def test_control_plane(target: Target, check: CheckInfo, evidence: Evidence,
                       expectations: dict) -> None:
    """Every ``/readyz?verbose`` and ``/livez?verbose`` sub-check (etcd, informers,
    post-start hooks, ...) is ok, and the components that make the cluster work are alive:
    the leader-election Leases of ``connectivity.control_plane_leases`` (default
    kube-scheduler and kube-controller-manager in kube-system) are held and renewed within
    their duration (measured against the API server's clock).  A Lease that does not exist
    (leader election off, a managed control plane that hides it) is reported, and is
    non-conformant only with ``connectivity.require_control_plane_leases: true``."""
    conn = expectations["connectivity"]
    problems = []
    for path in ("/readyz", "/livez"):
        status, failed = _verbose_health(target, path, evidence)
        if status != 200 or failed:
            problems.append(f"{path}: HTTP {status}" + (f", failing: {'; '.join(failed)}"
                                                         if failed else ""))
    names = list(conn.get("control_plane_leases") or [])
    required = bool(conn.get("require_control_plane_leases"))
    rows, lease_problems, unreadable = leases.assess(target, names, required)
    if names:
        evidence.table("leader-election leases", ["lease", "holder", "renewed", "age",
                                                  "duration", "state"], rows)
    problems += lease_problems
    if unreadable and required and not problems:
        raise Unknown("; ".join(unreadable) + ": control-plane liveness was not measured")
    check.require(not problems, expected="/readyz and /livez: every sub-check ok; "
                  + (f"leases {', '.join(names)} held and fresh" if names else "no leases"),
                  observed="; ".join(problems))


def _latency_ok(check: CheckInfo, expectations: dict, what: str, ms: float | None) -> None:
    limit = expectations["connectivity"].get("max_latency_ms")
    if limit is not None and ms is not None:
        check.require(ms <= float(limit), expected=f"{what} within {limit:g} ms",
                      observed=f"{ms:.0f} ms")


def _echo_answer(check: CheckInfo, result: HttpResult, expected_cluster: str,
                 what: str) -> None:
    served = result.json().get("cluster")
    check.require(
        result.ok and served == expected_cluster,
        expected=f"{what}: HTTP 2xx from the echo server of {expected_cluster}",
        observed=result.describe() + (f"; answered by cluster {served!r}" if result.ok else ""),
    )


@pytest.mark.check("connectivity/pod-to-pod", level="required")
def test_pod_to_pod(target: Target, probes, check: CheckInfo, evidence: Evidence,
                    expectations: dict) -> None:
    """A probe pod reaches echo pods by pod IP over TCP/HTTP: one on its own node and, where
    the cluster has more than one schedulable node, one on another node (placed there
    deliberately); the evidence names the nodes of both ends."""
    client = probes.curl
    client_node = client.pod().spec.node_name
    targets = workloads.pod_targets(probes, client_node)
    timeout = float(expectations["connectivity"]["tcp_timeout_s"])
    if not any(t.relation == "other node" for t in targets):
        evidence.text("nodes", f"{target.name} has one schedulable node ({client_node}): "
                      "only the same-node path can be measured")
    rows, failures, slow = [], [], []
    limit = expectations["connectivity"].get("max_latency_ms")
    for t in targets:
        result = netprobe.http_get(client, t.url(), timeout)
        served = result.json().get("cluster")
        ok = result.ok and served == target.cluster_id
        rows.append([t.relation, client_node, f"{t.pod} on {t.node}", t.pod_ip,
                     result.describe() if ok else f"FAIL: {result.describe()}"])
        if not ok:
            failures.append(f"{t.relation} ({client_node} -> {t.node}): {result.describe()}"
                            + (f"; answered by cluster {served!r}" if result.ok else ""))
        elif limit is not None and result.connect_ms is not None \
                and result.connect_ms > float(limit):
            slow.append(f"{t.relation} ({client_node} -> {t.node}): {result.connect_ms:.0f} ms")
    evidence.table("pod-to-pod paths", ["path", "from node", "to pod", "pod IP", "result"],
                   rows)
    check.require(
        not failures,
        expected=f"HTTP 2xx from the echo pods of {target.cluster_id} by pod IP, "
                 + " and ".join(f"{t.relation} ({client_node} -> {t.node})" for t in targets),
        observed="; ".join(failures))
    check.require(not slow, expected=f"TCP connect to a pod within {limit} ms",
                  observed="; ".join(slow))


@pytest.mark.check("connectivity/pod-to-service", level="required")
def test_pod_to_service(target: Target, probes, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """A probe pod reaches a ClusterIP service (the echo service), and every service the
    expectations list (``connectivity.services``) over TCP."""
    server = workloads.echo(probes)
    timeout = float(expectations["connectivity"]["tcp_timeout_s"])
    _require_endpoints(probes, server, target.name)
    result = netprobe.http_get(probes.curl, server.service_url(), timeout)
    _echo_answer(check, result, target.cluster_id,
                 f"service {server.namespace}/fc-echo by ClusterIP")
    _latency_ok(check, expectations, "TCP connect to a service", result.connect_ms)
    failures, rows = [], []
    for svc in expectations["connectivity"]["services"]:
        ns, name, port = svc["namespace"], svc["name"], int(svc["port"])
        try:
            obj = target.core().read_namespaced_service(name, ns)
        except ApiException as exc:
            if exc.status != 404:  # a refusal or a failure: nothing measured about the service
                raise forbidden_unknown(exc, "get", "services", namespace=ns,
                                        context=target.name) from None
            failures.append(f"{ns}/{name}: cannot read the service (HTTP {exc.status})")
            rows.append([f"{ns}/{name}", port, "-", "-", f"HTTP {exc.status}"])
            continue
        ip = obj.spec.cluster_ip
        endpoints = workloads.ready_endpoint_ips(probes, name, ns)
        tcp = netprobe.tcp_connect(probes.busybox, ip, port, timeout)
        rows.append([f"{ns}/{name}", port, ip, len(endpoints), tcp.describe()])
        if not tcp.connected:
            failures.append(f"{ns}/{name} ({ip}:{port}, {len(endpoints)} ready endpoints): "
                            f"{tcp.detail}")
    if expectations["connectivity"]["services"]:
        evidence.table("listed services", ["service", "port", "ClusterIP", "ready endpoints",
                                           "result"], rows)
    check.require(not failures, expected="every listed service accepts a TCP connection",
                  observed="; ".join(failures))


@pytest.mark.check("connectivity/pod-to-apiserver", level="required")
def test_pod_to_apiserver(target: Target, probes, check: CheckInfo, expectations: dict) -> None:
    """A probe pod reaches the API server through the ``kubernetes.default`` service
    (ClusterIP from the API, port 443; any HTTP answer proves the path)."""
    try:
        svc = target.core().read_namespaced_service("kubernetes", "default")
    except ApiException as exc:
        raise forbidden_unknown(exc, "get", "services", namespace="default",
                                context=target.name) from None
    ip, port = svc.spec.cluster_ip, svc.spec.ports[0].port
    timeout = float(expectations["connectivity"]["tcp_timeout_s"])
    result = netprobe.http_get(probes.curl, f"https://{ip}:{port}/readyz", timeout,
                               insecure=True)
    check.require(result.status is not None,
                  expected=f"an HTTPS answer from kubernetes.default ({ip}:{port})",
                  observed=result.describe())
    _latency_ok(check, expectations, "TCP connect to the API server", result.connect_ms)


def _require_endpoints(probes, server: workloads.Echo, where: str) -> None:
    """The echo service must have a ready endpoint, or the path to it cannot be measured."""
    if not workloads.ready_endpoint_ips(probes, workloads.ECHO, server.namespace):
        raise Unknown(f"service {server.namespace}/{workloads.ECHO} on {where} has no ready "
                      "endpoints (EndpointSlices), so the path to it cannot be measured")


def _cross_cluster(pair: Pair, fleet, probes, check: CheckInfo, expectations: dict,
                   by: str) -> None:
    if not fleet.expectations.fleet.get("flat_networking"):
        pytest.skip("the fleet does not declare flat networking "
                    "(expectations: fleet.flat_networking)")
    dst = fleet.probes(pair.target.name)
    server = workloads.echo(dst)
    url = server.pod_url() if by == "pod IP" else server.service_url()
    timeout = float(expectations["connectivity"]["tcp_timeout_s"])
    if by == "ClusterIP":
        _require_endpoints(dst, server, pair.target.name)
    result = netprobe.http_get(probes.curl, url, timeout)
    _echo_answer(check, result, pair.target.cluster_id,
                 f"{pair.source.name} -> echo of {pair.target.name} by {by}")
    _latency_ok(check, expectations, f"TCP connect to {pair.target.name}", result.connect_ms)


@pytest.mark.check("connectivity/cross-cluster-pod", level="required")
@pytest.mark.requires_clusters(2)
def test_cross_cluster_pod(pair: Pair, fleet, probes, check: CheckInfo,
                           expectations: dict) -> None:
    """A probe in the source cluster reaches a pod of the target cluster by pod IP
    (where the fleet declares flat networking)."""
    _cross_cluster(pair, fleet, probes, check, expectations, "pod IP")


@pytest.mark.check("connectivity/cross-cluster-service", level="required")
@pytest.mark.requires_clusters(2)
def test_cross_cluster_service(pair: Pair, fleet, probes, check: CheckInfo,
                               expectations: dict) -> None:
    """A probe in the source cluster reaches a ClusterIP service of the target cluster
    (where the fleet declares flat networking with routed service ranges)."""
    _cross_cluster(pair, fleet, probes, check, expectations, "ClusterIP")
