"""Least privilege: the whole catalogue run as identities that may read almost nothing.

The API servers here are ``http.server`` instances on ports of 127.0.0.1 that the test opened
itself (the fake servers of ``fakeapi``).  They answer like Kubernetes: ``/version``, API
discovery, ``/readyz`` and a SelfSubjectReview (user ``viewer``); what the identity may not do
is refused with a Kubernetes ``Status`` 403 in the RBAC authorizer's words.  A refusal is never a
finding about the cluster and never a traceback: every check that runs is ``unknown`` (but for
the few whose answers the servers give), and the checks that used to let the 403 escape name
the permission they lacked.

Three identities:

* ``nothing``: discovery (``/api``, ``/apis``), ``/readyz`` and who-am-I only; everything else,
  SelfSubjectAccessReviews included, is refused.
* ``prober``: may also create namespaces and do anything but exec inside this run's namespaces
  (``fleetcheck-*``): probe pods are created and become Ready (the servers say so, storing
  nothing), and the checks get as far as reading the cluster, which is refused.
* ``stale-authorizer``: SelfSubjectAccessReviews say "allowed" to everything, the requests
  themselves are refused (an authorizer that changed its mind): the checks that ask first and
  then read must still handle the refusal.

The last two may also read the group-version resource lists (``/api/v1``,
``/apis/<group>/<version>``); a group's own document (``/apis/<group>``) is refused to all three,
so a backup stops at discovery instead of archiving what these servers do not store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapi import Answer, _Handler, status, url
from fchelpers import kubeconfig_dict

USER = "viewer"
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.4", "platform": "linux/amd64"}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
POD_IP = "10.244.0.7"
JSON = "application/json"

#: what the servers serve: group version -> [(resource, kind, namespaced)], as a kind cluster
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("namespaces", "Namespace", False), ("nodes", "Node", False),
           ("pods", "Pod", True), ("pods/exec", "PodExecOptions", True),
           ("pods/log", "Pod", True), ("services", "Service", True),
           ("endpoints", "Endpoints", True), ("configmaps", "ConfigMap", True),
           ("secrets", "Secret", True), ("serviceaccounts", "ServiceAccount", True),
           ("serviceaccounts/token", "TokenRequest", True), ("events", "Event", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True),
           ("limitranges", "LimitRange", True), ("resourcequotas", "ResourceQuota", True)],
    "apps/v1": [("deployments", "Deployment", True), ("daemonsets", "DaemonSet", True),
                ("statefulsets", "StatefulSet", True), ("replicasets", "ReplicaSet", True)],
    "authentication.k8s.io/v1": [("selfsubjectreviews", "SelfSubjectReview", False),
                                 ("tokenreviews", "TokenReview", False)],
    "authorization.k8s.io/v1": [
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "discovery.k8s.io/v1": [("endpointslices", "EndpointSlice", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition",
                                 False)],
    "admissionregistration.k8s.io/v1": [
        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
        ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False)],
}


@dataclass(frozen=True)
class Request:
    """What a request asks of the authorizer (``resource`` empty: a non-resource path)."""

    verb: str
    path: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @classmethod
    def parse(cls, method: str, path: str) -> Request:
        bare = path.split("?", 1)[0]
        parts = bare.strip("/").split("/")
        verb = VERBS.get(method, method.lower())
        if parts[:1] == ["api"] and len(parts) > 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) > 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return cls(verb, bare)
        namespace = ""
        if rest[0] == "namespaces" and len(rest) > 2:
            namespace, rest = rest[1], rest[2:]
        name = rest[1] if len(rest) > 1 else ""
        if verb == "get" and not name:
            verb = "list"
        return cls(verb, bare, group, version, rest[0], rest[2] if len(rest) > 2 else "",
                   namespace, name)

    @property
    def refusal(self) -> str:
        """The message of Kubernetes' RBAC authorizer refusing this request."""
        if not self.resource:
            return f'forbidden: User "{USER}" cannot {self.verb} path "{self.path}"'
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        name = f' "{self.name}"' if self.name else ""
        where = (f'in the namespace "{self.namespace}"' if self.namespace
                 else "at the cluster scope")
        return (f'{self.resource}{name} is forbidden: User "{USER}" cannot {self.verb} '
                f'resource "{resource}" in API group "{self.group}" {where}')


def own_namespace(request: Request) -> bool:
    """Inside this run's namespaces (or the namespace object itself), exec aside."""
    ns = request.namespace or (request.name if request.resource == "namespaces" else "")
    return ns.startswith("fleetcheck-") and request.subresource != "exec"


#: identity -> (may it do the request?, what its SelfSubjectAccessReviews answer)
POLICIES: dict[str, tuple[Callable[[Request], bool], Callable[[Request], bool] | None]] = {
    "nothing": (lambda r: False, None),
    "prober": ((lambda r: own_namespace(r) or (r.resource, r.verb) in {
        ("namespaces", "create"), ("selfsubjectaccessreviews", "create")}), None),
    "stale-authorizer": ((lambda r: r.resource == "selfsubjectaccessreviews"),
                         lambda r: True),
}


def _discovery(path: str) -> Any:
    """The discovery document at ``path`` (``None``: not a discovery path)."""
    groups = sorted({gv.split("/")[0] for gv in RESOURCES if "/" in gv})
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "172.18.0.2:6443"}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]}
    gv = path.removeprefix("/api/").removeprefix("/apis/")
    if gv in RESOURCES:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": r, "singularName": "", "namespaced": ns, "kind": k,
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            for r, k, ns in RESOURCES[gv]]}
    return None


def _kind(request: Request) -> str:
    gv = f"{request.group}/{request.version}" if request.group else request.version
    return next((k for r, k, _ in RESOURCES.get(gv, []) if r == request.resource), "Object")


def _object(request: Request, body: Any) -> dict[str, Any]:
    """What the server holds under a name it was asked for: created on the spot, Ready."""
    gv = f"{request.group}/{request.version}" if request.group else request.version
    obj = dict(body) if isinstance(body, dict) else {}
    meta = dict(obj.get("metadata") or {})
    meta.setdefault("name", request.name or "x")
    if request.namespace:
        meta["namespace"] = request.namespace
    meta.update({"uid": "00000000-0000-0000-0000-000000000001", "resourceVersion": "1",
                 "creationTimestamp": "2026-01-01T00:00:00Z"})
    obj.update({"apiVersion": gv, "kind": _kind(request), "metadata": meta})
    if request.resource == "pods":
        obj.setdefault("spec", {"containers": [{"name": "main", "image": "busybox"}]})
        obj["spec"]["nodeName"] = "node-1"
        obj["status"] = {"phase": "Running", "podIP": POD_IP, "conditions": [
            {"type": t, "status": "True"} for t in ("PodScheduled", "Initialized",
                                                     "ContainersReady", "Ready")]}
    elif request.resource == "services":
        obj.setdefault("spec", {})
        obj["spec"].setdefault("clusterIP", "10.96.0.10")
        obj["spec"].setdefault("ports", [{"port": 80}])
    elif request.resource == "namespaces":
        obj["status"] = {"phase": "Active"}
    elif request.subresource == "token":
        obj.update({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "status": {"token": "e30.e30.sig",
                               "expirationTimestamp": "2026-01-01T00:10:00Z"}})
    return obj


def _list(request: Request) -> dict[str, Any]:
    items = []
    if request.resource == "endpointslices":
        items = [{"metadata": {"name": "slice", "namespace": request.namespace},
                  "addressType": "IPv4",
                  "endpoints": [{"addresses": [POD_IP], "conditions": {"ready": True}}]}]
    return {"apiVersion": "v1", "kind": _kind(request) + "List",
            "metadata": {"resourceVersion": "1"}, "items": items}


def least_privilege(policy: str) -> Callable[[str, str, Any], Answer]:
    """What an API server answers an identity under ``policy`` (see :data:`POLICIES`)."""
    may, reviews = POLICIES[policy]

    def answer(method: str, path: str, body: Any) -> Answer:
        request = Request.parse(method, path)
        if request.path == "/version":
            return 200, JSON, json.dumps(VERSION)
        if request.path == "/readyz":
            return 200, "text/plain", "ok"
        document = _discovery(request.path) if method == "GET" else None
        if document is not None and (request.path in ("/api", "/apis") or policy != "nothing"):
            return 200, JSON, json.dumps(document)
        if request.resource == "selfsubjectreviews" and method == "POST":
            return 201, JSON, json.dumps({
                "apiVersion": f"authentication.k8s.io/{request.version}",
                "kind": "SelfSubjectReview", "metadata": {},
                "status": {"userInfo": {"username": USER,
                                        "groups": ["auditors", "system:authenticated"]}}})
        if not may(request):
            return 403, JSON, status(403, "Forbidden", request.refusal)
        if request.resource == "selfsubjectaccessreviews":
            attrs = ((body or {}).get("spec") or {}).get("resourceAttributes") or {}
            asked = Request(attrs.get("verb", ""), "", attrs.get("group", ""), "v1",
                            attrs.get("resource", ""), attrs.get("subresource", ""),
                            attrs.get("namespace", ""), attrs.get("name", ""))
            allowed = (reviews or may)(asked)
            return 201, JSON, json.dumps({**(body or {}), "status": {
                "allowed": allowed, "reason": "" if allowed else "no RBAC rule allows it"}})
        if method == "DELETE":
            return 200, JSON, json.dumps({"kind": "Status", "apiVersion": "v1",
                                          "status": "Success"})
        if request.verb == "list":
            return 200, JSON, json.dumps(_list(request))
        return (201 if method == "POST" else 200), JSON, json.dumps(_object(request, body))

    return answer


class _WithBody(_Handler):
    """``fakeapi``'s handler, also passing the request's JSON body to the answers."""

    def answers(self, raw: bytes) -> tuple[int, str, str]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return self.server.answers(self.command, self.path, body)  # type: ignore[attr-defined]


def _expectations(policy: str) -> dict[str, Any]:
    rbac: dict[str, Any] = {
        "identity": USER, "groups": ["auditors"],
        "allow": [{"verb": "list", "resource": "pods", "namespace": "default"}],
        "deny": [{"verb": "get", "resource": "secrets", "namespace": "kube-system"}],
        "namespaces": ["team-*"], "forbidden_namespaces": ["kube-system"]}
    if policy != "nothing":  # their access reviews answer: measured, not refused
        rbac = {"namespaces": ["team-*"]}
    return {
        "version": 1,
        "fleet": {"flat_networking": True},
        "defaults": {
            "connectivity": {"services": [{"namespace": "default", "name": "kubernetes",
                                           "port": 443}]},
            "dns": {"cross_cluster_pattern": "{service}.{namespace}.svc.{cluster}.local"},
            "rbac": rbac,
            "consistency": {"objects": [{"kind": "ConfigMap", "namespace": "kube-system"}],
                            "facts": {"crds": True, "webhooks": True,
                                      "psa_namespaces": ["default"]}},
        },
    }


@pytest.fixture
def viewer_fleet(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[[str], tuple[Path, Path]]]:
    """Two contexts, lab-a and lab-b (two clusters), each an API server of its own that
    refuses ``viewer`` what the policy does not allow."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    servers: list[ThreadingHTTPServer] = []

    def start(policy: str) -> tuple[Path, Path]:
        by_name = {}
        for name in ("lab-a", "lab-b"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _WithBody)
            server.answers = least_privilege(policy)  # type: ignore[attr-defined]
            server.requests = []  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            by_name[name] = server
        config = kubeconfig_dict(list(by_name))
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = url(by_name[cluster["name"].removesuffix("-cluster")])
        kubeconfig = pytester.path / "kubeconfig.yaml"
        kubeconfig.write_text(yaml.safe_dump(config))
        expectations = pytester.path / "expectations.yaml"
        expectations.write_text(yaml.safe_dump(_expectations(policy)))
        return kubeconfig, expectations

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


#: checks the fake servers answer enough to measure: /readyz, /version, SelfSubjectReview
MEASURED = {"connectivity/api-ready", "connectivity/version-skew", "rbac/identity"}
#: skipped whatever the identity may do: nothing of theirs on these servers, or not asked for
NOT_APPLICABLE = ("disruptive check", "is not a federation control plane",
                  "no service mesh detected", "not a client certificate",
                  "the expectations give no rbac.")
SERVICES_IN_DEFAULT = 'cannot get resource "services" in API group "" in the namespace "default"'
#: check -> (the server's words it passes on, the kubectl command it says checks the permission)
#: for the refusals that used to escape as a traceback (or be a verdict on the cluster)
NAMED: dict[str, tuple[str, str | None]] = {
    "backup/velero": ('cannot get path "/apis/velero.io"', "auth can-i get /apis/velero.io"),
    "connectivity/nodes-ready": (('cannot list resource "nodes" in API group "" at the cluster '
                                 "scope"), "auth can-i list nodes"),
    "connectivity/pod-to-apiserver": (SERVICES_IN_DEFAULT, "auth can-i get services -n default"),
    "dns/coredns": (('cannot list resource "deployments" in API group "apps" in the namespace '
                    '"kube-system"'), "auth can-i list deployments.apps -n kube-system"),
    "connectivity/control-plane": ('cannot get path "/livez"', "auth can-i get /livez"),
}
NAMED_BY_POLICY: dict[str, dict[str, tuple[str, str | None]]] = {
    "nothing": {},
    "prober": {
        "connectivity/pod-to-pod": ('cannot list resource "nodes"', "auth can-i list nodes"),
        "rbac/namespace-access": ("may not list namespaces", "auth can-i list namespaces"),
        "backup/restore-roundtrip": ('cannot get path "/api', None),
    },
    "stale-authorizer": {
        "rbac/namespace-access": ('cannot list resource "namespaces"',
                                  "auth can-i list namespaces"),
        "rbac/risky-bindings": ('cannot list resource "clusterroles"',
                                "auth can-i list clusterroles.rbac.authorization.k8s.io"),
    },
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_least_privilege_catalogue_is_unknown_not_a_traceback(
        pytester: pytest.Pytester, viewer_fleet: Callable[[str], tuple[Path, Path]],
        policy: str) -> None:
    kubeconfig, expectations = viewer_fleet(policy)
    result = pytester.runpytest_subprocess(
        f"--kubeconfig={kubeconfig}", "--contexts=lab-a,lab-b", f"--expectations={expectations}",
        "--fleetcheck-suites=always", "--connect-timeout=2", "--request-timeout=5",
        "--tb=native", "-p", "no:cacheprovider", "-rA")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out, out
    reports = sorted((pytester.path / "reports").iterdir())
    assert len(reports) == 1, out
    checks = json.loads((reports[0] / "results.json").read_text())["checks"]
    verdicts = {(c["check_id"], c.get("context") or "->".join(c.get("contexts") or [])):
                (c["verdict"], c["message"]) for c in checks}
    assert not [k for k, (v, _) in verdicts.items() if v == "non-conformant"], verdicts
    # an exception other than Unknown ("could not be carried out (call error)"): a bug
    assert not [(k, m) for k, (_, m) in verdicts.items() if " error): " in m], verdicts
    skipped = [(k, m) for k, (v, m) in verdicts.items() if v == "skipped"]
    assert all(any(s in m for s in NOT_APPLICABLE) for _, m in skipped), skipped
    ran = {k: (v, m) for k, (v, m) in verdicts.items() if v != "skipped"}
    measured = {k for k, (v, _) in ran.items() if v == "conformant"}
    assert {check for check, _ in measured} <= MEASURED, measured
    assert {k for k, (v, _) in ran.items() if v != "unknown"} == measured
    for check, (words, can_i) in {**NAMED, **NAMED_BY_POLICY[policy]}.items():
        for context in ("lab-a", "lab-b"):
            verdict, message = ran.get((check, context), ("not run", ""))
            assert verdict == "unknown", (check, context, verdict, message)
            assert words in message and USER in message, (check, context, message)
            if can_i:
                assert f"check with: kubectl --context {context} {can_i}" in message, \
                    (check, message)


# --- the sentence, and refusals the catalogue run above does not reach ----------------------------

def test_forbidden_unknown_names_the_permission() -> None:
    from fleetcheck.core.verdicts import forbidden_unknown, refused
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=403, reason="Forbidden")
    exc.body = status(403, "Forbidden", Request.parse("GET", "/api/v1/nodes").refusal)
    assert str(forbidden_unknown(exc, "list", "nodes", context="lab-a")) == (
        'forbidden to list nodes on lab-a (HTTP 403): nodes is forbidden: User "viewer" cannot '
        'list resource "nodes" in API group "" at the cluster scope; check with: kubectl '
        "--context lab-a auth can-i list nodes")
    said = str(forbidden_unknown(None, "list", "endpointslices", group="discovery.k8s.io",
                                 namespace="kube-system", context="lab-b", status=403,
                                 message="no"))
    assert said == ("forbidden to list endpointslices.discovery.k8s.io in namespace kube-system "
                    "on lab-b (HTTP 403): no; check with: kubectl --context lab-b auth can-i "
                    "list endpointslices.discovery.k8s.io -n kube-system")
    assert "auth can-i list backups.velero.io -A" in str(forbidden_unknown(
        None, "list", "backups", group="velero.io", namespace="*", status=403, message="no"))
    assert "auth can-i get /livez" in str(forbidden_unknown(
        None, "get", "/livez", group="", status=403, message="no"))
    assert str(forbidden_unknown(None, "list", "nodes", context="lab-a", status=401,
                                 message="Unauthorized")).startswith(
        "the API server on lab-a rejected the credentials (HTTP 401) when asked to list nodes")
    webhook = 'admission webhook "deny.example.com" denied the request: no'
    assert not refused(403, webhook) and refused(403, "forbidden") and refused(401)
    assert str(forbidden_unknown(None, "create", "pods", namespace="ns", status=403,
                                 message=webhook)) == f"cannot create pods in namespace ns: " \
                                                      f"HTTP 403 {webhook}"
    assert str(forbidden_unknown(None, "list", "nodes", status=500, message="etcd down")) == \
        "cannot list nodes: HTTP 500 etcd down"


def _suite(name: str) -> Any:
    """A module of the catalogue (suites/), imported under a name of its own."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "suites" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fc_forbidden_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("code", "verdict"), [(403, "unknown"), (401, "unknown"),
                                               (500, "unknown"), (404, "non-conformant")])
def test_a_listed_service_that_may_not_be_read_is_not_a_finding(
        monkeypatch: pytest.MonkeyPatch, code: int, verdict: str) -> None:
    """connectivity/pod-to-service reached the echo server; then reading a service of
    ``connectivity.services`` is refused: that says nothing of the service (it used to be
    non-conformant, "cannot read the service (HTTP 403)").  Only a 404 is a finding."""
    from types import SimpleNamespace

    from fleetcheck.core.checks import CheckInfo
    from fleetcheck.core.evidence import Evidence
    from fleetcheck.core.verdicts import NonConformant, Unknown
    from fleetcheck.kube import traffic as netprobe
    from fleetcheck.kube import workloads
    from kubernetes.client.exceptions import ApiException

    suite = _suite("test_connectivity")
    echo = workloads.Echo("lab-a", "fleetcheck-x", POD_IP, "10.96.0.10", "fc-echo-headless",
                          (POD_IP,))
    monkeypatch.setattr(workloads, "echo", lambda probes: echo)
    monkeypatch.setattr(workloads, "ready_endpoint_ips", lambda probes, name, ns: [POD_IP])
    monkeypatch.setattr(netprobe, "http_get", lambda probe, url, timeout: netprobe.HttpResult(
        url, 200, '{"cluster": "lab-a"}', 1.0, 2.0, "", None))

    def read_namespaced_service(name: str, namespace: str) -> Any:
        exc = ApiException(status=code, reason="Forbidden")
        exc.body = status(code, "Forbidden", Request.parse(
            "GET", f"/api/v1/namespaces/{namespace}/services/{name}").refusal)
        raise exc

    target = SimpleNamespace(name="lab-a", cluster_id="lab-a", core=lambda: SimpleNamespace(
        read_namespaced_service=read_namespaced_service))
    expectations = {"connectivity": {"tcp_timeout_s": 2, "services": [
        {"namespace": "team-a", "name": "api", "port": 8080}]}}
    with pytest.raises((Unknown, NonConformant)) as raised:
        suite.test_pod_to_service(target, SimpleNamespace(curl=None), CheckInfo(
            "connectivity/pod-to-service", context="lab-a"), Evidence(), expectations)
    if verdict == "non-conformant":
        assert isinstance(raised.value, NonConformant), raised.value
        assert "team-a/api: cannot read the service (HTTP 404)" in str(raised.value)
        return
    assert isinstance(raised.value, Unknown), raised.value
    said = str(raised.value)
    assert said.startswith({403: "forbidden to get services in namespace team-a on lab-a "
                                 "(HTTP 403): ",
                            401: "the API server on lab-a rejected the credentials (HTTP 401)",
                            500: "cannot get services in namespace team-a on lab-a: HTTP 500"
                            }[code]), said
    if code == 403:
        assert said.endswith("check with: kubectl --context lab-a auth can-i get services "
                             "-n team-a"), said



def _serve(answers: Callable[[str, str, Any], Answer]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WithBody)
    server.answers = answers  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("code", "verdict"), [(403, "unknown"), (401, "non-conformant")])
def test_a_token_refused_who_am_i_still_authenticates(code: int, verdict: str) -> None:
    """rbac/serviceaccount-token: the fresh token's SelfSubjectReview answered 403 proves the
    token authenticates (the server knew whom it refused): not measured, unknown, no longer
    "the token does not authenticate".  401 is that finding."""
    import base64
    import time
    from types import SimpleNamespace

    from fleetcheck.core.checks import CheckInfo
    from fleetcheck.core.evidence import Evidence
    from fleetcheck.core.verdicts import NonConformant, Unknown
    from kubernetes import client as k8s

    def answers(method: str, path: str, body: Any) -> Answer:
        return code, JSON, status(code, "Forbidden" if code == 403 else "Unauthorized",
                                  Request.parse(method, path).refusal)

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    token = ".".join([part({"alg": "RS256"}), part({
        "sub": "system:serviceaccount:ns:sa", "iat": now, "exp": now + 600}), "c2ln"])
    server = _serve(answers)
    base = k8s.ApiClient(k8s.Configuration(host=url(server)))
    suite = _suite("test_rbac")
    try:
        with pytest.raises((Unknown, NonConformant)) as raised:
            suite._assess_token(SimpleNamespace(api_client=base, timeout=(2, 2)),
                                CheckInfo("rbac/serviceaccount-token", context="lab-a"),
                                Evidence(), token, None, "ns", "sa", 600)
    finally:
        base.close()
        server.shutdown()
        server.server_close()
    if verdict == "unknown":
        assert type(raised.value) is Unknown, raised.value
        assert "HTTP 403" in str(raised.value), raised.value
    else:
        assert isinstance(raised.value, NonConformant), raised.value
        assert "the token does not authenticate" in str(raised.value)


@pytest.mark.parametrize("refused_path", ["/apis/velero.io/v1", "/apis/velero.io/v1/backups"])
def test_velero_that_may_not_be_read_is_unknown(refused_path: str) -> None:
    """backup/velero where Velero is installed but its API (discovery of its version, the list
    of Backups across namespaces) is refused: unknown, naming the permission."""
    from fleetcheck.backup import suite as kit
    from fleetcheck.core.verdicts import Unknown
    from kubernetes import client as k8s

    def answers(method: str, path: str, body: Any) -> Answer:
        bare = path.split("?", 1)[0]
        if bare == refused_path:
            return 403, JSON, status(403, "Forbidden", Request.parse(method, path).refusal)
        if bare == "/apis/velero.io":
            return 200, JSON, json.dumps({"kind": "APIGroup", "name": "velero.io",
                                          "preferredVersion": {"version": "v1"}})
        if bare == "/apis/velero.io/v1":
            return 200, JSON, json.dumps({"kind": "APIResourceList", "resources": [
                {"name": "backups"}, {"name": "backupstoragelocations"}]})
        return 200, JSON, json.dumps({"kind": "List", "metadata": {}, "items": []})

    server = _serve(answers)
    client = k8s.ApiClient(k8s.Configuration(host=url(server)))
    try:
        with pytest.raises(Unknown) as raised:
            kit.velero_state(client, None, (2, 2), context="lab-a")
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    expected = ("auth can-i get /apis/velero.io/v1" if refused_path.endswith("/v1") else
                "auth can-i list backups.velero.io -A")
    assert "(HTTP 403): " in str(raised.value) and str(raised.value).endswith(
        f"check with: kubectl --context lab-a {expected}"), str(raised.value)


def test_a_refused_exec_handshake_names_the_permission_not_the_raw_headers() -> None:
    """The stream helper reports a refused websocket handshake as status 0 with the status
    line, the headers and the body in one string."""
    import json as json_mod

    from fleetcheck.core.verdicts import forbidden_unknown
    from fleetcheck.kube.probes import handshake_refusal
    from kubernetes.client.exceptions import ApiException

    body = json_mod.dumps({"kind": "Status", "apiVersion": "v1", "code": 403,
                           "message": 'pods "probe" is forbidden: User "viewer" cannot create '
                                      'resource "pods/exec" in API group "" in the namespace '
                                      '"ns"'}).encode()
    exc = ApiException(status=0, reason=f"Handshake status 403 Forbidden -+-+- "
                                        f"{{'audit-id': 'abc'}} -+-+- {body!r}")
    status, message = handshake_refusal(exc)
    assert status == 403 and message.startswith('pods "probe" is forbidden')
    text = forbidden_unknown(None, "create", "pods/exec", namespace="ns", context="lab-a",
                             status=status, message=message).reason
    assert "audit-id" not in text
    assert text.endswith("check with: kubectl --context lab-a auth can-i create pods/exec -n ns")
    assert handshake_refusal(ApiException(status=0, reason="Handshake status 502 Bad Gateway "
                                                           "-+-+- {} -+-+- b'<html>'")) == (502, "")
