"""Preflight: a context is reachable only when a Kubernetes API answers (no cluster).

Every server here is an ``http.server`` on a port of 127.0.0.1 that the test opened itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapi import (
    BAD_GATEWAY_PAGE,
    NOT_FOUND_PAGE,
    VERSION,
    Answer,
    Answers,
    _Handler,
    everything,
    status,
    url,
)
from fchelpers import kubeconfig_dict
from fleetcheck.kube import preflight as preflight_mod
from kubernetes import client as k8s


@pytest.fixture
def serve() -> Iterator[Callable[[Answers], ThreadingHTTPServer]]:
    """Start an HTTP server on 127.0.0.1 answering with ``answers(method, path)``; each
    server records the requests it got in ``.requests``."""
    servers: list[ThreadingHTTPServer] = []

    def start(answers: Answers) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.answers = answers  # type: ignore[attr-defined]
        server.requests = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_preflight(server: ThreadingHTTPServer, credentials: str | None = "token"
                  ) -> preflight_mod.PreflightResult:
    config = k8s.Configuration(host=url(server))
    config.api_key = {"authorization": "fake-token-0123456789"}
    config.api_key_prefix = {"authorization": "Bearer"}
    client = k8s.ApiClient(config)
    try:
        return preflight_mod.preflight("web", client, url(server), 2.0, credentials=credentials)
    finally:
        client.close()


# --- what counts as a Kubernetes answer -----------------------------------------------------------

@pytest.mark.parametrize(("path", "code", "body", "kind"), [
    ("/version", 200, json.dumps(VERSION), "version"),
    ("/version", 403, status(403, "Forbidden", 'forbidden: User "system:anonymous" cannot get '
                                                'path "/version"'), "Status"),
    ("/version", 401, status(401, "Unauthorized", "Unauthorized"), "Status"),
    ("/api", 200, json.dumps({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": []}), "APIVersions"),
    ("/version", 404, NOT_FOUND_PAGE, None),
    ("/version", 502, BAD_GATEWAY_PAGE, None),
    ("/version", 200, "{}", None),
    ("/version", 200, "[]", None),
    ("/version", 200, json.dumps({"major": 1, "minor": 34, "gitVersion": "v1.34.1"}), None),
    ("/api", 200, json.dumps(VERSION), None),
    ("/version", 200, json.dumps({"kind": "APIVersions", "versions": ["v1"]}), None),
    ("/version", 401, json.dumps({"type": "error", "status": "401"}), None),
    ("/version", 403, json.dumps({"kind": "Status", "apiVersion": "v2"}), None),
    ("/version", 200, "<html>ok</html>", None),
])
def test_kubernetes_answer(path: str, code: int, body: str, kind: str | None) -> None:
    assert preflight_mod.kubernetes_answer(path, code, body) == kind


def test_body_excerpt_removes_control_characters_and_stops_at_80() -> None:
    assert preflight_mod.body_excerpt("") == "empty body"
    assert preflight_mod.body_excerpt("a\x1b[31mred\x07\u202eevil\r\n\tb") == '"a [31mred evil b"'
    long = preflight_mod.body_excerpt("x" * 200)
    assert long == '"' + "x" * 80 + '..."'


# --- preflight() against servers that are not (or are) Kubernetes ---------------------------------

@pytest.mark.parametrize(("answers", "reason"), [
    (everything(404, "text/html", NOT_FOUND_PAGE),
     ('answered, but not as a Kubernetes API server: HTTP 404 from /version '
      '("<!DOCTYPE html> <html><head><title>404 Not Found</title></head> <body><h1>Not Fo...")')),
    (everything(502, "text/html", BAD_GATEWAY_PAGE),
     ('answered, but not as a Kubernetes API server: HTTP 502 from /version ("<html> <head>'
      '<title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Ga...")')),
    (everything(200, "application/json", "{}"),
     'answered, but not as a Kubernetes API server: HTTP 200 from /version ("{}")'),
    (everything(200, "text/plain", ""),
     "answered, but not as a Kubernetes API server: HTTP 200 from /version (empty body)"),
])
def test_a_server_that_is_not_kubernetes_is_unusable(serve: Callable[[Answers], Any],
                                                     answers: Answers, reason: str) -> None:
    server = serve(answers)
    result = run_preflight(server)
    assert not result.ok
    assert result.reason == f"{url(server)} {reason}"
    assert server.requests == [("GET", "/version"), ("GET", "/api")]


def kubernetes(version: Answer, api: Answer | None = None) -> Answers:
    """A fake API server: ``version`` at /version, ``api`` at /api, ready, and it says who."""
    def answers(method: str, path: str) -> Answer:
        if path == "/version":
            return version
        if path == "/api" and api is not None:
            return api
        if path.startswith("/readyz"):
            return 200, "text/plain", "ok"
        if path == "/apis":
            return 200, "application/json", json.dumps({"kind": "APIGroupList", "groups": []})
        if method == "POST" and "selfsubjectreviews" in path:
            return 201, "application/json", json.dumps({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "status": {"userInfo": {"username": "tester", "groups": ["team"]}}})
        return 404, "application/json", status(404, "NotFound", "the server could not find it")
    return answers


def test_a_kubernetes_api_server_is_reachable(serve: Callable[[Answers], Any]) -> None:
    result = run_preflight(serve(kubernetes((200, "application/json", json.dumps(VERSION)))))
    assert result.ok, result.reason
    assert result.version == "v1.34.1"
    assert result.readyz_status == 200
    assert (result.identity or {}).get("username") == "tester"


def test_version_hidden_but_api_answers_as_kubernetes(serve: Callable[[Answers], Any]) -> None:
    server = serve(kubernetes(
        (404, "text/html", NOT_FOUND_PAGE),
        (200, "application/json", json.dumps({"kind": "APIVersions", "versions": ["v1"]}))))
    result = run_preflight(server)
    assert result.ok, result.reason
    assert result.version is None


def test_a_kubernetes_status_is_proof_enough(serve: Callable[[Answers], Any]) -> None:
    """An API server that forbids /version (anonymous users) or rejects the credentials says
    so with a Status object: it is Kubernetes, and the reason is about permissions."""
    forbidden = serve(kubernetes((403, "application/json", status(
        403, "Forbidden", 'forbidden: User "system:anonymous" cannot get path "/version"'))))
    result = run_preflight(forbidden, credentials=None)
    assert not result.ok
    assert result.reason == f"API server {url(forbidden)} forbids this identity to read " \
                            "/version (HTTP 403)"
    rejected = serve(kubernetes((401, "application/json", status(401, "Unauthorized",
                                                                  "Unauthorized"))))
    result = run_preflight(rejected)
    assert result.reason == f"API server {url(rejected)} rejected the credentials of this " \
                            "context (HTTP 401)"
    # a 401 page that is not a Status object is no proof of Kubernetes
    proxy = serve(everything(401, "text/html", "<h1>401 Authorization Required</h1>"))
    result = run_preflight(proxy)
    assert result.reason == (f"{url(proxy)} answered, but not as a Kubernetes API server: "
                             'HTTP 401 from /version ("<h1>401 Authorization Required</h1>")')


def test_nothing_listening_is_unreachable_naming_the_server() -> None:
    """No answer at all: kube.api's failure, said as before with the server's address."""
    import socket
    with socket.socket() as sock:  # a port of 127.0.0.1 that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    client = k8s.ApiClient(k8s.Configuration(host=server))
    try:
        result = preflight_mod.preflight("web", client, server, 2.0)
    finally:
        client.close()
    assert not result.ok
    assert result.reason == f"API server {server} unreachable: connection refused"


# --- the whole catalogue against contexts that are not Kubernetes ---------------------------------

@pytest.fixture
def not_kubernetes(serve: Callable[[Answers], Any], pytester: pytest.Pytester,
                   monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[tuple[Path, dict[str, ThreadingHTTPServer]]]:
    """A kubeconfig of three contexts whose servers answer everything, but not as Kubernetes:
    web (a 404 page), proxy (nginx's 502 page), json (200 ``{}``)."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    servers = {"web": serve(everything(404, "text/html", NOT_FOUND_PAGE)),
               "proxy": serve(everything(502, "text/html", BAD_GATEWAY_PAGE)),
               "json": serve(everything(200, "application/json", "{}"))}
    config = kubeconfig_dict(list(servers))
    for cluster in config["clusters"]:
        name = cluster["name"].removesuffix("-cluster")
        cluster["cluster"]["server"] = url(servers[name])
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path, servers


def test_catalogue_against_servers_that_are_not_kubernetes(
        pytester: pytest.Pytester,
        not_kubernetes: tuple[Path, dict[str, ThreadingHTTPServer]]) -> None:
    kubeconfig, servers = not_kubernetes
    result = pytester.runpytest_subprocess(
        f"--kubeconfig={kubeconfig}", "--contexts=web,proxy,json", "--fleetcheck-suites=always",
        "--connect-timeout=2", "-p", "no:cacheprovider", "-rA")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out
    assert "non-conformant:" not in out.lower().replace("0 non-conformant,", "")
    assert result.ret == 6, out  # EXIT_UNKNOWN
    reports = sorted((pytester.path / "reports").iterdir())
    assert len(reports) == 1
    data = json.loads((reports[0] / "results.json").read_text())
    checks = data["checks"]
    ran = [c for c in checks if c["verdict"] != "skipped"]
    assert ran and {c["verdict"] for c in ran} == {"unknown"}, \
        {(c["check_id"], c["verdict"]) for c in ran}
    # skipped only for what does not apply whatever the clusters are: disruptive checks
    skipped = [c for c in checks if c["verdict"] == "skipped"]
    assert all("disruptive" in c["message"] for c in skipped), skipped
    checked = {c["check_id"] for c in ran}
    assert {"connectivity/api-ready", "dns/coredns", "federation/control-plane",
            "mesh/control-plane"} <= checked
    said = {
        "web": 'answered, but not as a Kubernetes API server: HTTP 404 from /version '
               '("<!DOCTYPE html>',
        "proxy": 'answered, but not as a Kubernetes API server: HTTP 502 from /version '
                 '("<html> <head><title>502 Bad Gateway</title>',
        "json": 'answered, but not as a Kubernetes API server: HTTP 200 from /version ("{}")',
    }
    for check in ran:
        contexts = check.get("contexts") or [check.get("context")]
        assert any(f"{url(servers[c])} {said[c]}" in check["message"] for c in contexts), check
    for name, server in servers.items():
        assert set(server.requests) <= {("GET", "/version"), ("GET", "/api")}, \
            (name, server.requests)
