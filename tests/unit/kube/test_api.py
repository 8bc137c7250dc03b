"""fleetcheck.kube.api against a fake Kubernetes API server (no cluster).

Every server here is an ``http.server`` on a port of 127.0.0.1 that the test opened itself
(or a socket that listens and never answers, or a port nothing listens on).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3
from fleetcheck.kube import api as kapi
from kubernetes import client as k8s

CONTEXT = "ctx-a"
TOKEN = "fake-token-0123456789"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"
AUTHZ = ('leases.coordination.k8s.io is forbidden: User "u" cannot create resource "leases" '
         'in API group "coordination.k8s.io" in the namespace "kube-system"')
WEBHOOK = ('admission webhook "x" denied the request: configmaps named "bad" are not allowed')
BAD_GATEWAY = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
               "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
EXPIRED = ("The provided continue parameter is too old to display a consistent list result. "
           "You can start a new list without the continue parameter.")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"}}


NAMESPACES = [{"metadata": {"name": f"ns-{i}"}} for i in range(5)]
WATCH_EVENTS = [{"type": "ADDED", "object": cm("a")}, {"type": "MODIFIED", "object": cm("b")}]


class FakeApiServer(BaseHTTPRequestHandler):
    """Answers like a Kubernetes API server, by method and path."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def handle_one(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append({  # type: ignore[attr-defined]
            "method": self.command, "path": url.path, "query": query,
            "content_type": self.headers.get("Content-Type"),
            "authorization": self.headers.get("Authorization"),
            "body": json.loads(raw) if raw else None})
        route = (self.command, url.path)
        if query.get("watch") == "true":
            return self.watch(url.path)
        if route == ("GET", "/version"):
            return self.send(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.1"})
        if route == ("GET", "/proxied"):
            return self.send(502, BAD_GATEWAY, "text/html")
        if route == ("GET", "/webpage"):
            return self.send(200, "<html>welcome</html>", "text/html")
        if route == ("GET", "/apis/not.served/v1/things"):
            return self.send(404, "404 page not found\n", "text/plain")
        if route == ("GET", "/api/v1/secrets"):
            return self.send(401, status(401, "Unauthorized", "Unauthorized"))
        if route == ("GET", "/api/v1/nodes"):
            return self.send(500, status(500, "InternalError", "etcdserver: request timed out"))
        if route == ("GET", "/api/v1/namespaces"):
            start = int(query.get("continue") or 0)
            end = start + int(query["limit"])
            meta = {"resourceVersion": "42", **({"continue": str(end)} if end < 5 else {})}
            return self.send(200, {"kind": "NamespaceList", "metadata": meta,
                                   "items": NAMESPACES[start:end]})
        if route == ("GET", "/api/v1/pods"):
            if query.get("continue") == "old":
                return self.send(410, status(410, "Expired", EXPIRED))
            return self.send(200, {"metadata": {"continue": "old"}, "items": [{"a": 1}]})
        if route == ("POST", LEASES):
            return self.send(403, status(403, "Forbidden", AUTHZ))
        if route == ("POST", CONFIGMAPS):
            name = json.loads(raw)["metadata"]["name"]
            if name == "exists":
                return self.send(409, status(409, "AlreadyExists",
                                             'configmaps "exists" already exists'))
            if name == "bad":
                return self.send(403, status(403, "Forbidden", WEBHOOK))
            if name == "invalid":
                return self.send(422, status(422, "Invalid", 'ConfigMap "invalid" is invalid'))
            return self.send(201, json.loads(raw))
        if route == ("PATCH", f"{CONFIGMAPS}/stale"):
            return self.send(409, status(409, "Conflict", "the object has been modified"))
        if self.command in ("GET", "PATCH", "DELETE") and url.path.startswith(CONFIGMAPS + "/"):
            name = url.path.rsplit("/", 1)[1]
            if name.startswith("missing"):
                return self.send(404, status(404, "NotFound", f'configmaps "{name}" not found'))
            return self.send(200, cm(name))
        return self.send(404, status(404, "NotFound", "the server could not find it"))

    def watch(self, path: str) -> None:
        if path.endswith("/expired"):
            events = [{"type": "ERROR", "object": status(410, "Expired", "too old resource "
                                                         "version: 1 (41)")}]
        else:
            events = WATCH_EVENTS
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = json.dumps(events[0]).encode() + b"\n"
        self.chunk(first[:10])  # a line split over two chunks is one event
        self.chunk(first[10:])
        for event in events[1:]:
            time.sleep(0.05)
            self.chunk(json.dumps(event).encode() + b"\n")
        if path.endswith("/hang"):  # never ends the stream: the client stops at its deadline
            self.server.release.wait(10)  # type: ignore[attr-defined]
            return
        self.chunk(b"")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    srv.requests = []  # type: ignore[attr-defined]
    srv.release = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.release.set()  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()


def client_for(host: str) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    cfg.host = host
    cfg.api_key = {"authorization": TOKEN}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    cfg.retries = 0  # no retries anywhere: the layer adds none, the client none either
    return k8s.ApiClient(cfg)


@pytest.fixture
def make_api() -> Iterator[Callable[..., kapi.Api]]:
    clients: list[k8s.ApiClient] = []

    def make(port: int, timeout: kapi.Timeout = (2.0, 2.0), scheme: str = "http") -> kapi.Api:
        clients.append(client_for(f"{scheme}://127.0.0.1:{port}"))
        return kapi.Api(clients[-1], timeout, CONTEXT)

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def api(server: ThreadingHTTPServer, make_api: Callable[..., kapi.Api]) -> kapi.Api:
    return make_api(server.server_address[1])


def last(server: ThreadingHTTPServer) -> dict[str, Any]:
    return server.requests[-1]  # type: ignore[attr-defined]


def raised(call: Callable[[], Any]) -> kapi.ApiError:
    with pytest.raises(kapi.ApiError) as info:
        call()
    return info.value


# --- reading ------------------------------------------------------------------------------------

def test_get_returns_the_json_with_the_context_credentials(api: kapi.Api, server: Any) -> None:
    assert api.get(f"{CONFIGMAPS}/one") == cm("one")
    assert last(server)["authorization"] == f"Bearer {TOKEN}"
    resp = api.request("GET", f"{CONFIGMAPS}/missing-lease")
    assert (resp.status, resp.ok, resp.reason) == (404, False, "NotFound")
    assert resp.date and resp.headers["date"] == resp.date  # the server's clock, even on 404
    assert resp.size == len(resp.body) and json.loads(resp.text) == resp.data


def test_missing_is_none_when_allowed_else_an_error(api: kapi.Api) -> None:
    assert api.get(f"{CONFIGMAPS}/missing", missing_ok=True) is None
    exc = raised(lambda: api.get(f"{CONFIGMAPS}/missing", "read ConfigMap missing"))
    assert (exc.kind, exc.status, exc.context, exc.method) == ("missing", 404, CONTEXT, "GET")
    assert str(exc) == 'read ConfigMap missing: HTTP 404 configmaps "missing" not found'
    assert not exc.denied
    # the API server's own plain-text 404 for a path it does not serve is "missing" too
    assert api.list("/apis/not.served/v1/things", missing_ok=True) is None
    assert raised(lambda: api.get("/apis/not.served/v1/things")).kind == "missing"


def test_list_follows_continue_over_pages(api: kapi.Api, server: Any) -> None:
    assert api.list("/api/v1/namespaces", limit=2, selector="a=b") == NAMESPACES
    queries = [r["query"] for r in server.requests]
    assert [q.get("continue") for q in queries] == [None, "2", "4"]
    assert all(q["limit"] == "2" and q["labelSelector"] == "a=b" for q in queries)
    pages = list(api.pages("/api/v1/namespaces", limit=3))
    assert [len(items) for _, items in pages] == [3, 2]
    assert pages[0][0] == {"resourceVersion": "42", "continue": "3"}


def test_an_expired_continue_token_is_gone_with_what_to_do(api: kapi.Api) -> None:
    exc = raised(lambda: api.list("/api/v1/pods", what="list Pods"))
    assert (exc.kind, exc.status, exc.reason) == ("gone", 410, "Expired")
    assert str(exc) == (f"list Pods: HTTP 410 {EXPIRED} (the list took longer than the server "
                        "keeps a continue token: run it again, or with a larger page size)")


def test_a_list_at_an_exact_resource_version(api: kapi.Api, server: Any) -> None:
    list(api.pages("/api/v1/namespaces", limit=3, resource_version="42"))
    first, second = (r["query"] for r in server.requests)
    assert (first["resourceVersion"], first["resourceVersionMatch"]) == ("42", "Exact")
    assert "resourceVersion" not in second and second["continue"] == "3"


def test_get_text_never_raises_for_a_status(api: kapi.Api) -> None:
    assert api.get_text("/proxied") == (502, BAD_GATEWAY)
    status_, text = api.get_text("/version")
    assert status_ == 200 and json.loads(text)["gitVersion"] == "v1.34.1"


def test_a_proxy_page_is_not_kubernetes(api: kapi.Api) -> None:
    exc = raised(lambda: api.get("/proxied"))
    assert (exc.kind, exc.status) == ("not-kubernetes", 502)
    assert str(exc) == ('GET /proxied: HTTP 502 answered, but not as a Kubernetes API server: '
                        '"<html> <head><title>502 Bad Gateway</title></head> <body> <center>'
                        '<h1>502 Bad Ga..."')
    exc = raised(lambda: api.get("/webpage"))
    assert (exc.kind, exc.status) == ("not-kubernetes", 200)
    assert str(exc).endswith('not as a Kubernetes API server: "<html>welcome</html>"')


def test_unauthorized_names_the_context_and_the_request(api: kapi.Api) -> None:
    exc = raised(lambda: api.get("/api/v1/secrets", "list Secrets"))
    assert (exc.kind, exc.status, exc.denied) == ("unauthorized", 401, True)
    assert exc.permission == kapi.Permission("list", "secrets")
    assert kapi.denial_sentence(exc) == (
        f"the API server rejected the credentials of context {CONTEXT} (HTTP 401) asked to "
        'list secrets in the core API group ("") cluster-wide: Unauthorized')
    assert exc.sentence == f"list Secrets: {kapi.denial_sentence(exc)}"


def test_a_server_error(api: kapi.Api) -> None:
    exc = raised(lambda: api.list("/api/v1/nodes"))
    assert (exc.kind, exc.status, exc.what) == ("server", 500, "list /api/v1/nodes")
    assert str(exc) == "list /api/v1/nodes: HTTP 500 etcdserver: request timed out"
    assert exc.sentence == str(exc) and not exc.denied


# --- writing ------------------------------------------------------------------------------------

def test_forbidden_names_the_permission_and_how_to_check_it(api: kapi.Api) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l", "namespace": "kube-system"}}
    exc = raised(lambda: api.create(LEASES, lease, what="create Lease kube-system/l"))
    assert (exc.kind, exc.status, exc.denied) == ("forbidden", 403, True)
    assert (exc.method, exc.path, exc.context) == ("POST", LEASES, CONTEXT)
    assert exc.permission == kapi.Permission("create", "leases", "coordination.k8s.io",
                                             "kube-system")
    assert str(exc.permission) == ('create leases in API group "coordination.k8s.io" in '
                                   'namespace "kube-system"')
    can_i = f"kubectl --context {CONTEXT} auth can-i create leases.coordination.k8s.io " \
            "-n kube-system"
    assert exc.permission.can_i(CONTEXT) == can_i
    assert kapi.denial_sentence(exc) == (
        f"the identity of context {CONTEXT} is not permitted to create leases in API group "
        f'"coordination.k8s.io" in namespace "kube-system" (HTTP 403: {AUTHZ}; check it: '
        f"{can_i}; grant it, or select a context that may)")
    assert exc.sentence.startswith("create Lease kube-system/l: the identity of context")
    # what verdicts.forbidden_unknown reads of an ApiException, an ApiError has too
    assert json.loads(exc.body)["message"] == AUTHZ and exc.reason == "Forbidden"


def test_an_admission_denial_is_not_a_refusal(api: kapi.Api) -> None:
    exc = raised(lambda: api.create(CONFIGMAPS, cm("bad")))
    assert (exc.kind, exc.status, exc.denied) == ("denied-by-admission", 403, False)
    assert kapi.admission_denial(exc.server_message)
    assert not kapi.refused(exc.status, exc.server_message)
    assert exc.sentence == (f"create {CONFIGMAPS}: HTTP 403 {WEBHOOK} "
                            "(denied by an admission webhook or policy)")


def test_create_conflict_and_invalid(api: kapi.Api, server: Any) -> None:
    assert api.create(CONFIGMAPS, cm("new")) == cm("new")
    assert last(server)["body"] == cm("new")  # a dict body is JSON, encoded once
    assert api.create(CONFIGMAPS, cm("new"), dry_run=True) == cm("new")
    assert last(server)["query"] == {"dryRun": "All"}
    exc = raised(lambda: api.create(CONFIGMAPS, cm("exists")))
    assert (exc.kind, exc.status, exc.reason) == ("conflict", 409, "AlreadyExists")
    assert api.create(CONFIGMAPS, cm("exists"), exists_ok=True) is None
    resp = api.try_create(CONFIGMAPS, cm("exists"))
    assert (resp.status, resp.reason) == (409, "AlreadyExists")
    exc = raised(lambda: api.create(CONFIGMAPS, cm("invalid")))
    assert (exc.kind, exc.status) == ("invalid", 422)
    assert str(exc) == f'create {CONFIGMAPS}: HTTP 422 ConfigMap "invalid" is invalid'


def test_apply_is_server_side_apply_by_fleetcheck(api: kapi.Api, server: Any) -> None:
    assert api.apply(cm("one")) == cm("one")
    req = last(server)
    assert (req["method"], req["path"]) == ("PATCH", f"{CONFIGMAPS}/one")
    assert req["query"] == {"fieldManager": "fleetcheck", "force": "true"}
    assert req["content_type"] == "application/apply-patch+yaml" and req["body"] == cm("one")


@pytest.mark.parametrize(("method", "body", "content_type"), [
    ("merge_patch", {"data": {"k": "v"}}, "application/merge-patch+json"),
    ("strategic_patch", {"data": {"k": "v"}}, "application/strategic-merge-patch+json"),
    ("json_patch", [{"op": "add", "path": "/data/k", "value": "v"}],
     "application/json-patch+json"),
])
def test_patches(api: kapi.Api, server: Any, method: str, body: Any,
                 content_type: str) -> None:
    assert getattr(api, method)(f"{CONFIGMAPS}/one", body) == cm("one")
    assert (last(server)["content_type"], last(server)["body"]) == (content_type, body)


def test_a_conflicting_patch(api: kapi.Api) -> None:
    exc = raised(lambda: api.merge_patch(f"{CONFIGMAPS}/stale", {"metadata": {}}, "set it"))
    assert (exc.kind, exc.status, str(exc)) == ("conflict", 409,
                                                "set it: HTTP 409 the object has been modified")


def test_delete(api: kapi.Api, server: Any) -> None:
    assert api.delete(f"{CONFIGMAPS}/one") == cm("one")
    assert last(server)["body"] == {"propagationPolicy": "Background"}
    assert api.delete(f"{CONFIGMAPS}/missing") is None
    exc = raised(lambda: api.delete(f"{CONFIGMAPS}/missing", missing_ok=False))
    assert (exc.kind, exc.status, exc.method) == ("missing", 404, "DELETE")


# --- watching -----------------------------------------------------------------------------------

def test_watch_yields_the_events_until_the_server_ends(api: kapi.Api, server: Any) -> None:
    events = list(api.watch(CONFIGMAPS, timeout_s=5, resource_version="7"))
    assert events == [(e["type"], e["object"]) for e in WATCH_EVENTS]
    assert last(server)["query"] == {"watch": "true", "timeoutSeconds": "5",
                                     "resourceVersion": "7"}


def test_watch_stops_at_its_deadline_when_the_server_does_not(make_api: Any,
                                                              server: Any) -> None:
    api = make_api(server.server_address[1], (1.0, 0.5))
    start = time.monotonic()
    events = list(api.watch(f"{CONFIGMAPS}/hang", timeout_s=1))
    assert [t for t, _ in events] == ["ADDED", "MODIFIED"]
    assert 1.0 <= time.monotonic() - start < 4


def test_a_watch_error_event_raises_its_status(api: kapi.Api) -> None:
    exc = raised(lambda: list(api.watch(f"{CONFIGMAPS}/expired", timeout_s=5)))
    assert (exc.kind, exc.status, exc.method) == ("gone", 410, "GET")
    assert "list again, and watch from the list's resourceVersion" in str(exc)


# --- no answer ----------------------------------------------------------------------------------

def test_connection_refused_is_unreachable(make_api: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = make_api(port)
    exc = raised(lambda: api.get("/version", "read /version"))
    assert (exc.kind, exc.status, exc.context) == ("unreachable", 0, CONTEXT)
    assert str(exc) == "read /version: API server unreachable: connection refused"
    assert TOKEN not in str(exc) and not exc.denied


def test_a_server_that_never_answers_times_out(make_api: Any) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever answers
        api = make_api(listener.getsockname()[1], (1, 0.5))
        start = time.monotonic()
        exc = raised(lambda: api.get("/version"))
        assert time.monotonic() - start < 2  # the timeout was passed through, no retry
        assert (exc.kind, exc.status) == ("timeout", 0)
        assert str(exc) == "GET /version: API server did not answer in time (read timeout)"
        exc = raised(lambda: api.create(CONFIGMAPS, cm("x")))
        assert (exc.kind, exc.method) == ("timeout", "POST")


def test_tls_to_a_plain_http_server_fails_without_credentials(make_api: Any,
                                                              server: Any) -> None:
    api = make_api(server.server_address[1], scheme="https")
    exc = raised(lambda: api.get("/version"))
    assert exc.kind == "unreachable"
    assert "TLS handshake/verification failed" in str(exc) and TOKEN not in str(exc)


def test_an_api_exception_from_the_client_is_an_answer() -> None:
    class Refusing(k8s.ApiClient):
        def call_api(self, *args: Any, **kwargs: Any) -> Any:
            exc = k8s.ApiException(status=429, reason="Too Many Requests")
            exc.body = json.dumps(status(429, "TooManyRequests", "slow down"))
            exc.headers = {"Retry-After": "1"}
            raise exc

    resp = kapi.request(Refusing(k8s.Configuration()), "GET", "/version", timeout=(1, 1))
    assert (resp.status, resp.message, resp.headers["Retry-After"]) == (429, "slow down", "1")
    assert resp.error("read it").kind == "server"


# --- pure helpers -------------------------------------------------------------------------------

def test_paths() -> None:
    assert kapi.object_path("v1", "configmaps", "ns", "x") == f"{CONFIGMAPS}/x"
    assert kapi.object_path("apps/v1", "deployments") == "/apis/apps/v1/deployments"
    policy = {"apiVersion": "policy.karmada.io/v1alpha1", "kind": "PropagationPolicy",
              "metadata": {"name": "p", "namespace": "n"}}
    assert kapi.path_of(policy) == ("/apis/policy.karmada.io/v1alpha1/namespaces/n/"
                                    "propagationpolicies/p")
    assert kapi.path_of({**policy, "kind": "Widget"}) == ("/apis/policy.karmada.io/v1alpha1/"
                                                          "namespaces/n/widgets/p")
    assert kapi.path_of(policy, "pps").endswith("/namespaces/n/pps/p")
    assert [kapi.plural_of(k) for k in ("Pod", "NetworkPolicy", "Ingress", "Endpoints",
                                        "IngressClass", "Gateway")] == [
        "pods", "networkpolicies", "ingresses", "endpoints", "ingressclasses", "gateways"]


def test_permission_read_from_the_request() -> None:
    perm = kapi.permission("GET", "/apis/apps/v1/namespaces/ns/deployments/x")
    assert perm == kapi.Permission("get", "deployments", "apps", "ns")
    assert kapi.permission("GET", "/api/v1/namespaces/ns/pods?limit=5").verb == "list"
    assert kapi.permission("PATCH", "/api/v1/nodes/n/status") == kapi.Permission(
        "patch", "nodes/status")
    assert kapi.Permission("patch", "nodes/status").kubectl == "nodes/status"


@pytest.mark.parametrize(("exc", "sentence"), [
    (urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.ProtocolError("reset")),
     "API server s: connection broken: reset"),
    (urllib3.exceptions.ConnectTimeoutError(None, "/", "timed out"),
     "API server s unreachable: connection timed out"),
    (k8s.ApiException(status=0, reason="SSLError\ncertificate verify failed"),
     "API server s: TLS handshake/verification failed: SSLError certificate verify failed"),
    (ValueError("odd"), "API server s: ValueError: odd"),
])
def test_describe_error(exc: BaseException, sentence: str) -> None:
    assert kapi.describe_error(exc, "s") == sentence
