"""fleetcheck.rbac.api and rbac.discovery against a fake API server (no cluster): the requests
go through fleetcheck.kube.api, and each failure becomes the RBAC suite's sentence.

Every server here is an ``http.server`` on a port of 127.0.0.1 that the test opened itself (or
a port nothing listens on).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fleetcheck.core.verdicts import Unknown
from fleetcheck.rbac import api, discovery
from fleetcheck.rbac.access import Access
from kubernetes import client as k8s

#: (method, path) -> (status, body: JSON-able, or a str sent as text, or None for no body)
Routes = dict[tuple[str, str], tuple[int, Any]]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
REFUSAL = ('clusterroles.rbac.authorization.k8s.io is forbidden: User "viewer" cannot list '
           'resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster '
           "scope")
TIMEOUT = (2.0, 5.0)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


def listing(items: list[dict[str, Any]], token: str = "") -> dict[str, Any]:
    return {"kind": "List", "metadata": {"continue": token} if token else {}, "items": items}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        asked = {"method": self.command, "path": url.path, "accept": self.headers.get("Accept"),
                 "query": dict(urllib.parse.parse_qsl(url.query)),
                 "body": json.loads(raw) if raw else None}
        self.server.requests.append(asked)  # type: ignore[attr-defined]
        query = asked["query"]
        routes: Routes = self.server.routes  # type: ignore[attr-defined]
        key = (self.command, url.path + (f"?continue={query['continue']}"
                                         if "continue" in query else ""))
        code, body = routes.get(key, (404, status(404, "NotFound", "the server could not find "
                                                               "the requested resource")))
        data = b"" if body is None else (body if isinstance(body, str)
                                         else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str)
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def serve() -> Iterator[Callable[[Routes], tuple[k8s.ApiClient, ThreadingHTTPServer]]]:
    """A client of a fake API server answering ``routes``."""
    started: list[tuple[k8s.ApiClient, ThreadingHTTPServer]] = []

    def start(routes: Routes) -> tuple[k8s.ApiClient, ThreadingHTTPServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.routes, server.requests = routes, []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        client = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}"))
        started.append((client, server))
        return client, server

    yield start
    for client, server in started:
        client.close()
        server.shutdown()
        server.server_close()


@pytest.fixture
def nobody() -> Iterator[k8s.ApiClient]:
    """A client of a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    conf.retries = 0
    client = k8s.ApiClient(conf)
    yield client
    client.close()


def test_list_rbac_reads_every_page_without_nulls(serve: Callable[..., Any]) -> None:
    role = {"metadata": {"name": "r", "namespace": "a", "labels": None}, "rules": []}
    client, server = serve({
        ("GET", f"{RBAC}/clusterroles"): (200, listing([{"metadata": {"name": "c1"}}], "t1")),
        ("GET", f"{RBAC}/clusterroles?continue=t1"): (200, listing([{"metadata": {"name": "c2"}}])),
        ("GET", f"{RBAC}/roles"): (200, listing([role])),
        ("GET", f"{RBAC}/clusterrolebindings"): (200, listing([])),
        ("GET", f"{RBAC}/rolebindings"): (200, listing([])),
    })
    objects = api.list_rbac(client, TIMEOUT)
    assert [r["metadata"]["name"] for r in objects.cluster_roles] == ["c1", "c2"]
    assert objects.roles == [{"metadata": {"name": "r", "namespace": "a"}, "rules": []}]
    assert objects.counts() == [("ClusterRoles", 2), ("Roles", 1), ("ClusterRoleBindings", 0),
                                ("RoleBindings", 0)]
    assert all(r["query"].get("limit") for r in server.requests)


@pytest.mark.parametrize(("code", "body", "raised", "said"), [
    (403, status(403, "Forbidden", REFUSAL), api.Forbidden,
     f"forbidden to list clusterroles: {REFUSAL}"),
    (401, status(401, "Unauthorized", "Unauthorized"), api.CredentialsRejected,
     "listing clusterroles failed: HTTP 401 Unauthorized"),
    (500, None, Unknown, "listing clusterroles failed: HTTP 500 Internal Server Error"),
    (200, {"kind": "Status"}, Unknown, ("listing clusterroles failed: HTTP 200 answered, but "
                                        'not as a Kubernetes API server: "{\\"kind\\": '
                                        '\\"Status\\"}"')),
])
def test_list_rbac_failures(serve: Callable[..., Any], code: int, body: Any, raised: type,
                            said: str) -> None:
    client, _ = serve({("GET", f"{RBAC}/clusterroles"): (code, body)})
    with pytest.raises(raised) as info:
        api.list_rbac(client, TIMEOUT)
    assert str(info.value) == said
    if raised is api.Forbidden:
        assert (info.value.resource, info.value.group, info.value.server_message) == (
            "clusterroles", "rbac.authorization.k8s.io", REFUSAL)


def test_list_namespaces(serve: Callable[..., Any]) -> None:
    client, _ = serve({("GET", "/api/v1/namespaces"): (200, listing(
        [{"metadata": {"name": n}} for n in ("kube-system", "default")]))})
    assert api.list_namespaces(client, TIMEOUT) == ["default", "kube-system"]
    client, _ = serve({("GET", "/api/v1/namespaces"): (403, status(403, "Forbidden", "no"))})
    with pytest.raises(api.Forbidden) as info:
        api.list_namespaces(client, TIMEOUT)
    assert str(info.value) == "forbidden to list namespaces: no"
    assert (info.value.resource, info.value.group, info.value.server_message) == (
        "namespaces", "", "no")


def test_list_namespaces_unreachable(nobody: k8s.ApiClient) -> None:
    with pytest.raises(Unknown) as info:
        api.list_namespaces(nobody, TIMEOUT)
    assert str(info.value) == ("listing namespaces failed: API server unreachable: connection "
                               "refused")


def test_access_review_asks_and_reads_the_decision(serve: Callable[..., Any]) -> None:
    client, server = serve({("POST", SSAR): (201, {"status": {
        "allowed": False, "denied": True, "reason": "no", "evaluationError": "partial"}})})
    access = Access("get", "secrets", subresource="", namespace="ns", name="db")
    decision = api.access_review(client, access, TIMEOUT)
    assert (decision.allowed, decision.denied, decision.reason, decision.error) == (
        False, True, "no", "partial")
    assert server.requests[0]["body"] == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "secrets", "group": "",
                                        "namespace": "ns", "name": "db"}}}


@pytest.mark.parametrize(("code", "body", "raised", "said"), [
    (401, status(401, "Unauthorized", "Unauthorized"), api.CredentialsRejected,
     "the API server rejected the credentials (HTTP 401)"),
    (403, status(403, "Forbidden", "not you"), Unknown,
     "SelfSubjectAccessReview for list pods in namespace ns failed: HTTP 403 not you"),
])
def test_access_review_failures(serve: Callable[..., Any], code: int, body: Any, raised: type,
                                said: str) -> None:
    client, _ = serve({("POST", SSAR): (code, body)})
    with pytest.raises(raised) as info:
        api.access_review(client, Access("list", "pods", namespace="ns"), TIMEOUT)
    assert type(info.value) is raised and str(info.value) == said
    assert not api.may(client, [Access("list", "pods", namespace="ns")], TIMEOUT)


def test_reviews_unreachable(nobody: k8s.ApiClient) -> None:
    with pytest.raises(Unknown) as info:
        api.access_review(nobody, Access("list", "pods"), TIMEOUT)
    assert str(info.value) == ("SelfSubjectAccessReview for list pods cluster-wide failed: API "
                               "server unreachable: connection refused")
    with pytest.raises(Unknown) as info:
        api.self_subject_review(nobody, TIMEOUT)
    assert str(info.value) == "SelfSubjectReview failed: API server unreachable: connection refused"


def test_self_subject_review_refused(serve: Callable[..., Any]) -> None:
    client, _ = serve({("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"): (
        403, status(403, "Forbidden", "who are you to ask"))})
    with pytest.raises(Unknown) as info:
        api.self_subject_review(client, TIMEOUT)
    assert type(info.value) is Unknown
    assert str(info.value) == "SelfSubjectReview v1: HTTP 403 who are you to ask"


def test_service_account_token(serve: Callable[..., Any]) -> None:
    sas = "/api/v1/namespaces/ns/serviceaccounts"
    client, server = serve({
        ("POST", sas): (201, {"metadata": {"name": "sa"}}),
        ("POST", f"{sas}/sa/token"): (201, {"status": {
            "token": "a.b.c", "expirationTimestamp": "2026-01-01T00:10:00Z"}}),
        ("DELETE", f"{sas}/sa"): (200, {"kind": "Status", "status": "Success"}),
    })
    token, expiry = api.service_account_token(client, "ns", "sa", {"run": "r1"}, 600, TIMEOUT)
    assert token == "a.b.c"
    assert expiry == dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)
    assert server.requests[0]["body"]["metadata"] == {"name": "sa", "labels": {"run": "r1"}}
    assert server.requests[1]["body"]["spec"] == {"audiences": [], "expirationSeconds": 600}
    api.delete_service_account(client, "ns", "sa", TIMEOUT)
    api.delete_service_account(client, "ns", "gone", TIMEOUT)  # 404: nothing to do
    assert [r["method"] for r in server.requests] == ["POST", "POST", "DELETE", "DELETE"]


def test_service_account_token_refused(serve: Callable[..., Any]) -> None:
    client, _ = serve({("POST", "/api/v1/namespaces/ns/serviceaccounts"): (
        403, status(403, "Forbidden", "no"))})
    with pytest.raises(Unknown) as info:
        api.service_account_token(client, "ns", "sa", {}, 600, TIMEOUT)
    assert str(info.value) == "cannot create ServiceAccount ns/sa or its token: HTTP 403 no"


def test_discovery_aggregated_then_legacy(serve: Callable[..., Any]) -> None:
    agg = {"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": "apps"}, "versions": [
        {"resources": [{"resource": "deployments",
                        "subresources": [{"subresource": "scale"}]}]}]}]}
    client, server = serve({("GET", "/api"): (200, agg), ("GET", "/apis"): (200, agg)})
    served = discovery.fetch(client, TIMEOUT)
    assert served.resources == {"apps": {"deployments": {"scale"}}}
    assert server.requests[0]["accept"] == discovery.AGGREGATED
    client, _ = serve({
        ("GET", "/api"): (200, {"kind": "APIVersions"}),
        ("GET", "/api/v1"): (200, {"resources": [{"name": "pods"}, {"name": "pods/log"}]}),
        ("GET", "/apis"): (200, {"groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1"}]},
            {"name": "metrics.k8s.io", "versions": [{"groupVersion": "metrics.k8s.io/v1"}]}]}),
        ("GET", "/apis/apps/v1"): (200, {"resources": [{"name": "deployments"}]}),
        ("GET", "/apis/metrics.k8s.io/v1"): (503, status(503, "ServiceUnavailable", "down")),
    })
    served = discovery.fetch(client, TIMEOUT)
    assert served.resources == {"": {"pods": {"log"}}, "apps": {"deployments": set()},
                                "metrics.k8s.io": {}}
    assert served.unavailable == {"metrics.k8s.io"}


def test_discovery_failures(serve: Callable[..., Any], nobody: k8s.ApiClient) -> None:
    client, _ = serve({("GET", "/api"): (200, "<html>proxy</html>")})
    with pytest.raises(discovery.DiscoveryError) as info:
        discovery.fetch(client, TIMEOUT)
    assert str(info.value) == ('GET /api: HTTP 200 answered, but not as a Kubernetes API '
                               'server: "<html>proxy</html>"')
    with pytest.raises(discovery.DiscoveryError) as info:
        discovery.fetch(nobody, TIMEOUT)
    assert str(info.value) == "GET /api: API server unreachable: connection refused"
