"""A failed API request as the backup tool says it (fleetcheck.backup.api): one line with a
hint chosen by the error's kind; a refusal names the ``kubectl auth can-i`` command that checks
the permission.  From plain data, and end to end against a fake API server on a loopback port
the test opens itself (export, re-count at a resourceVersion, restore, the CLI)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from backupkit import (
    TRUST,
    VERSION,
    fake_api,
    forbidden,
    make_archive,
    run_cli,
    status,
)
from fleetcheck.backup import BackupError, ExitCode, export, restore, secrets, verify
from fleetcheck.backup import suite as kit
from fleetcheck.backup.api import backup_error, can_i
from fleetcheck.kube.api import ApiError, Response
from kubernetes import client as k8s

CONFIGMAPS = "/api/v1/namespaces/shop/configmaps"
CAN_I = "check it: kubectl --context lab-a auth can-i list configmaps -n shop"


def _error(method: str, path: str, code: int, body: Any, what: str = "w") -> ApiError:
    return Response(code, body, method=method, path=path).error(what, "lab-a")


# --- plain data -------------------------------------------------------------------------------

def test_a_refusal_names_the_kubectl_auth_can_i_command() -> None:
    exc = backup_error(_error("GET", CONFIGMAPS, 403, forbidden("list", "configmaps", "shop"),
                              f"list {CONFIGMAPS} on context 'lab-a'"))
    assert exc.code == ExitCode.API and exc.status == 403
    assert str(exc) == (
        f"list {CONFIGMAPS} on context 'lab-a': HTTP 403 configmaps is forbidden: User "
        '"viewer" cannot list resource "configmaps" in API group "" in the namespace "shop" '
        f"(the context's identity is not allowed to do this; {CAN_I}; use a context with more "
        "rights)")


@pytest.mark.parametrize(("method", "path", "body", "command"), [
    # the authorizer's words, else the request: a cluster-wide list asks with -A
    ("GET", "/api/v1/configmaps", forbidden("list", "configmaps"),
     "kubectl --context lab-a auth can-i list configmaps -A"),
    ("GET", "/apis/apps/v1/namespaces/shop/deployments", status(403, "Forbidden", "no"),
     "kubectl --context lab-a auth can-i list deployments.apps -n shop"),
    ("POST", "/api/v1/namespaces", forbidden("create", "namespaces"),
     "kubectl --context lab-a auth can-i create namespaces"),
    # non-resource URLs (the server version, discovery) are checked by path
    ("GET", "/version", status(403, "Forbidden", 'forbidden: User "viewer" cannot get path '
                                                 '"/version"'),
     "kubectl --context lab-a auth can-i get /version"),
    ("GET", "/apis/velero.io", status(403, "Forbidden", "no"),
     "kubectl --context lab-a auth can-i get /apis/velero.io"),
])
def test_the_can_i_command_of_a_refused_request(method: str, path: str, body: Any,
                                                command: str) -> None:
    exc = _error(method, path, 403, body)
    assert can_i(exc) == command
    assert f"check it: {command}; use a context with more rights)" in str(backup_error(exc))


@pytest.mark.parametrize(("code", "body", "hint"), [
    (401, status(401, "Unauthorized", "Unauthorized"),
     "(the context's credentials were rejected; refresh them)"),
    (404, status(404, "NotFound", 'configmaps "x" not found'), "(not found)"),
    (403, status(403, "Forbidden", 'admission webhook "deny.example.com" denied the request: '
                                   "no"), "(denied by an admission webhook or policy)"),
    (500, status(500, "InternalError", "etcd down"), "etcd down"),
])
def test_the_hint_follows_the_kind(code: int, body: Any, hint: str) -> None:
    text = str(backup_error(_error("GET", f"{CONFIGMAPS}/x", code, body)))
    assert text.startswith(f"w: HTTP {code} ") and text.endswith(hint), text
    assert "auth can-i" not in text


def test_no_answer_says_to_check_the_server_and_network() -> None:
    exc = ApiError("GET /version on context 'lab-a'", "unreachable", 0,
                   "API server unreachable: connection refused", method="GET", path="/version",
                   context="lab-a")
    error = backup_error(exc)
    assert (str(error), error.code, error.status) == (
        ("GET /version on context 'lab-a': API server unreachable: connection refused (check "
        "the context's server and network)"), ExitCode.API, 0)


def test_gone_has_the_callers_sentence_only_for_a_410() -> None:
    gone = _error("GET", CONFIGMAPS, 410, status(410, "Expired", "too old"))
    assert str(backup_error(gone, gone="run it again")) == "run it again"
    other = _error("GET", CONFIGMAPS, 500, status(500, "InternalError", "x"))
    assert str(backup_error(other, gone="run it again")) == "w: HTTP 500 x"


# --- against a fake API server -----------------------------------------------------------------

RESOURCES = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "namespaces", "kind": "Namespace", "namespaced": False, "verbs": ["get", "list"]},
    {"name": "configmaps", "kind": "ConfigMap", "namespaced": True, "verbs": ["get", "list"]}]}


def _cm(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"},
            "data": {"k": name}}


def cluster(lists: Any) -> Any:
    """Answers of a cluster with namespace ``shop``; ``lists(query)`` answers its ConfigMap
    list."""
    def answers(method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/version":
            return 200, VERSION
        if path == "/api/v1":
            return 200, RESOURCES
        if path == "/api/v1/namespaces/shop":
            return 200, {"metadata": {"name": "shop"}, "status": {"phase": "Active"}}
        if path == CONFIGMAPS:
            return lists(query)
        return 404, status(404, "NotFound", "not found")
    return answers


@pytest.fixture
def client() -> Iterator[Any]:
    made: list[k8s.ApiClient] = []

    def make(url: str) -> k8s.ApiClient:
        made.append(k8s.ApiClient(k8s.Configuration(host=url)))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _export(url_client: k8s.ApiClient, page_size: int = 500) -> export.ContextExport:
    source = export.Source("lab-a", url_client, timeout=(2, 5))
    selection = export.Selection(kinds=["configmaps"], namespaces=["shop"], page_size=page_size)
    return export.export_context(source, selection,
                                 secrets.SecretCodec.new(secrets.generate_key()))


def test_export_refused_names_the_permission(client: Any) -> None:
    refused = cluster(lambda q: (403, forbidden("list", "configmaps", "shop")))
    with fake_api(refused) as server, pytest.raises(BackupError) as raised:
        _export(client(server.url))
    assert raised.value.code == ExitCode.API
    assert str(raised.value).startswith(f"list {CONFIGMAPS} on context 'lab-a': HTTP 403 ")
    assert str(raised.value).endswith(f"(the context's identity is not allowed to do this; "
                                      f"{CAN_I}; use a context with more rights)")


def test_export_pages_and_an_expired_continue_token_is_the_backups_sentence(client: Any
                                                                             ) -> None:
    def lists(query: dict[str, str]) -> tuple[int, Any]:
        if not query.get("continue"):
            return 200, {"kind": "ConfigMapList", "items": [_cm("a")],
                         "metadata": {"resourceVersion": "42", "continue": "t1"}}
        if query["continue"] == "t1":
            return 200, {"kind": "ConfigMapList", "items": [_cm("b")],
                         "metadata": {"resourceVersion": "42"}}
        return 410, status(410, "Expired", "The provided continue parameter is too old")

    with fake_api(cluster(lists)) as server:
        exp = _export(client(server.url), page_size=1)
        [kexp] = exp.kinds
        assert [o["metadata"]["name"] for o in kexp.items] == ["a", "b"]
        assert (kexp.pages, kexp.resource_versions) == (2, ["42"])
        assert [q for m, p, q in server.requests if p == CONFIGMAPS] == [
            {"limit": "1"}, {"limit": "1", "continue": "t1"}]

    def expiring(query: dict[str, str]) -> tuple[int, Any]:
        return lists({"continue": "stale"} if query.get("continue") else query)

    with fake_api(cluster(expiring)) as server, pytest.raises(BackupError) as raised:
        _export(client(server.url), page_size=1)
    assert raised.value.code == ExitCode.API
    assert str(raised.value) == (
        f"listing {CONFIGMAPS} on context 'lab-a' took longer than the server keeps a continue "
        "token (HTTP 410 Expired); run the backup again, or with a larger --page-size")


def test_a_missing_namespace_is_bad_input(client: Any) -> None:
    def answers(method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v1/namespaces/shop":
            return 404, status(404, "NotFound", 'namespaces "shop" not found')
        return cluster(lambda q: (200, {"items": []}))(method, path, query)

    with fake_api(answers) as server, pytest.raises(BackupError) as raised:
        _export(client(server.url))
    assert raised.value.code == ExitCode.USAGE
    assert str(raised.value) == ("namespace 'shop' does not exist on context 'lab-a'; fix "
                                 "--namespaces")


def _recount(client: k8s.ApiClient) -> list[tuple[str, int, int | None, str]]:
    info = {"group": "", "version": "v1", "plural": "configmaps", "kind": "ConfigMap",
            "namespaced": True, "count": 1, "resourceVersion": ["42"]}
    report = SimpleNamespace(metadata={"contexts": {"lab-a": {"kinds": {"configmaps": info}}},
                                       "selection": {"namespaces": ["shop"]}})
    target = SimpleNamespace(api_client=client, timeout=(2, 5), name="lab-a")
    return kit.recount_at_backup_time(target, report, "lab-a")


def test_recount_reads_at_the_archived_resource_version(client: Any) -> None:
    def lists(query: dict[str, str]) -> tuple[int, Any]:
        if query.get("resourceVersion") == "42":
            return 200, {"items": [_cm("a")], "metadata": {"resourceVersion": "42"}}
        return 500, status(500, "InternalError", "not at 42")

    with fake_api(cluster(lists)) as server:
        assert _recount(client(server.url)) == [("configmaps", 1, 1, "")]
        assert [q for _, p, q in server.requests if p == CONFIGMAPS] == [
            {"limit": "500", "resourceVersion": "42", "resourceVersionMatch": "Exact"}]


@pytest.mark.parametrize(("answer", "note"), [
    ((410, status(410, "Expired", "too old resource version: 42 (100)")),
     (f"resourceVersion 42 of {CONFIGMAPS} is compacted away; the counts at backup time cannot "
     "be re-read any more")),
    ((403, forbidden("list", "configmaps", "shop")), CAN_I),
])
def test_recount_that_cannot_read_says_why(client: Any, answer: tuple[int, Any],
                                           note: str) -> None:
    with fake_api(cluster(lambda q: answer)) as server:
        [(name, archived, counted, said)] = _recount(client(server.url))
    assert (name, archived, counted) == ("configmaps", 1, None)
    assert note in said, said


def test_recount_of_an_unreachable_cluster_is_not_measured(client: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [(_, _, counted, said)] = _recount(client(f"http://127.0.0.1:{port}"))
    assert counted is None
    assert said.startswith(f"list {CONFIGMAPS} at resourceVersion 42: API server unreachable")
    assert said.endswith("(check the context's server and network)"), said


def test_a_refused_restore_names_the_permission(tmp_path: Path, client: Any) -> None:
    """The namespace does not exist and the identity may not create one: the dry run says so
    with the command that checks it, and nothing is changed."""
    make_archive(tmp_path / "a.tar.gz", codec=secrets.SecretCodec.new(secrets.generate_key()))
    report = verify.load_verified(tmp_path / "a.tar.gz", trust=TRUST)

    def answers(method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if method == "POST" and path == "/api/v1/namespaces":
            return 403, forbidden("create", "namespaces")
        return 404, status(404, "NotFound", 'namespaces "shop" not found', kind="namespaces",
                           name="shop")

    with fake_api(answers) as server:
        result = restore.restore(client(server.url), "lab-a", report, namespace="shop",
                                 timeout=(2, 5))
        assert all(m in ("GET", "POST") for m, _, _ in server.requests)
        assert all(q.get("dryRun") == "All" for m, _, q in server.requests if m == "POST")
    assert (result.code, result.status) == (ExitCode.API, 403)
    assert "dry run: REJECTED: HTTP 403 namespaces is forbidden: " in result.error
    assert ("check it: kubectl --context lab-a auth can-i create namespaces; use a context "
            "with more rights)") in result.error


def test_the_backup_command_refused_says_one_line_with_the_can_i_command(
        tmp_path: Path) -> None:
    def lists(query: dict[str, str]) -> tuple[int, Any]:
        return 403, forbidden("list", "configmaps", "shop")

    with fake_api(cluster(lists)) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "lab-a",
            "clusters": [{"name": "a", "cluster": {"server": server.url}}],
            "users": [{"name": "a", "user": {"token": "fake-token-0123456789"}}],
            "contexts": [{"name": "lab-a", "context": {"cluster": "a", "user": "a"}}]}))
        proc = run_cli("backup", "--kubeconfig", kubeconfig, "--contexts", "lab-a", "--kinds",
                       "configmaps", "-n", "shop", "-o", tmp_path / "out.tgz", "-q",
                       "--connect-timeout", "2", "--request-timeout", "5")
    assert proc.returncode == ExitCode.API, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"backup backup: error: list {CONFIGMAPS} on context 'lab-a': "
                           "HTTP 403 configmaps is forbidden: "), line
    assert line.endswith(f"{CAN_I}; use a context with more rights)"), line
    assert not list(tmp_path.glob("out.tgz*"))  # no partial archive left behind
