"""Who represents a cluster: chosen for what its identity may do, never by selection order
(issue 20).  No cluster: plain targets, and fake API servers on 127.0.0.1 ports this test
opens itself, which answer SelfSubjectAccessReviews from a small role table per token."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from fleetcheck.core import kubeconfig as kubeconfig_mod
from fleetcheck.core.targets import Target, assign_clusters, make_target, ordered_pairs
from fleetcheck.core.verdicts import Unknown
from fleetcheck.federation import failover as fedfailover
from fleetcheck.federation import karmada
from fleetcheck.federation import probe as fedprobe
from fleetcheck.kube import api as kube_api
from fleetcheck.kube import preflight as preflight_mod

PLUGIN = ("-p", "fleetcheck.plugin")
EVERYTHING = {r.key: True for r in preflight_mod.ACCESS_REVIEWS}
READ_ONLY = {k: k.startswith(("get ", "list ")) and "nodes" not in k for k in EVERYTHING}
NOTHING = dict.fromkeys(EVERYTHING, False)
#: fake runs stay alive: fedprobe caches per run by id(), which a freed object's successor reuses
_RUNS: list[Any] = []


# --- plain targets ---------------------------------------------------------------------------

def _lab(access: dict[str, dict[str, bool]] | None = None) -> list[Target]:
    """Two clusters, each with an admin, a viewer and an editor context (the lab's names)."""
    access = access or {}
    out = []
    for cluster in ("lab-a", "lab-b"):
        for who, default in (("", EVERYTHING), ("viewer@", READ_ONLY), ("editor@", NOTHING)):
            name = f"{who}{cluster}"
            out.append(Target(name, f"https://{cluster}:6443", cluster, f"u-{name}",
                              cluster_key=f"https://{cluster}:6443#ca-{cluster}",
                              access=dict(access.get(name, default))))
    return out


def _assignment(targets: list[Target]) -> tuple[dict, dict, set[str]]:
    clusters = assign_clusters(targets)
    return (clusters, {t.name: t.cluster_id for t in targets},
            {p.id for p in ordered_pairs(targets)})


def test_representatives_and_pairs_are_the_same_for_every_selection_order() -> None:
    seen = set()
    for order in itertools.permutations(range(6)):
        targets = _lab()
        clusters, ids, pairs = _assignment([targets[i] for i in order])
        seen.add(json.dumps([clusters, ids, sorted(pairs)], sort_keys=True))
    assert len(seen) == 1
    clusters, ids, pairs = json.loads(seen.pop())
    assert clusters == {"lab-a": ["lab-a", "viewer@lab-a", "editor@lab-a"],
                        "lab-b": ["lab-b", "viewer@lab-b", "editor@lab-b"]}
    assert ids == {"lab-a": "lab-a", "viewer@lab-a": "lab-a", "editor@lab-a": "lab-a",
                   "lab-b": "lab-b", "viewer@lab-b": "lab-b", "editor@lab-b": "lab-b"}
    assert set(pairs) == {"lab-a->lab-b", "lab-b->lab-a"}


def test_capability_beats_name_and_ties_go_by_name() -> None:
    # the admin is named to sort last: it still represents its cluster
    targets = _lab({"z-admin": EVERYTHING})
    targets.append(Target("z-admin", "https://lab-a:6443", "lab-a", "u",
                          cluster_key=targets[0].cluster_key, access=dict(EVERYTHING)))
    targets[0].access = dict(READ_ONLY)  # lab-a is only a viewer now
    clusters, ids, _ = _assignment(targets)
    assert clusters["z-admin"] == ["z-admin", "lab-a", "viewer@lab-a", "editor@lab-a"]
    assert ids["editor@lab-a"] == "z-admin"
    # equal capability: the name decides, whatever the order
    for order in ([0, 1], [1, 0]):
        pair = [Target(n, "https://x:1", "x", "u", cluster_key="k", access=dict(READ_ONLY))
                for n in ("b-view", "a-view")]
        assert assign_clusters([pair[i] for i in order]) == {"a-view": ["a-view", "b-view"]}


def test_unreachable_context_never_represents_a_reachable_cluster() -> None:
    targets = _lab()
    targets[0].unreachable = "API server https://lab-a:6443 unreachable: connection refused"
    _, ids, pairs = _assignment(targets)
    assert ids["lab-a"] == "viewer@lab-a" and ids["editor@lab-a"] == "viewer@lab-a"
    assert pairs == {"viewer@lab-a->lab-b", "lab-b->viewer@lab-a"}


def test_before_the_preflight_the_order_is_by_name_not_by_selection() -> None:
    for order in itertools.permutations(["lab-a", "editor@lab-a", "viewer@lab-a"]):
        targets = [Target(n, "https://a:1", "a", "u", cluster_key="k") for n in order]
        assert assign_clusters(targets) == {
            "editor@lab-a": ["editor@lab-a", "lab-a", "viewer@lab-a"]}


def test_preflight_result_with_access_round_trips_for_xdist_workers() -> None:
    result = preflight_mod.PreflightResult(
        "lab-a", True, access={"create pods/exec": True, "list nodes": False,
                               "get clusters.cluster.karmada.io": None})
    back = preflight_mod.PreflightResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result


def test_members_map_to_the_context_that_may_read_them_then_by_name() -> None:
    clusters = [{"metadata": {"name": "m1"}, "spec": {"apiEndpoint": "https://a:6443"}}]
    servers = {"editor@a": "https://a:6443", "a": "https://a:6443", "viewer@a": "https://a:6443"}
    for order in itertools.permutations(servers):
        ordered = {c: servers[c] for c in order}
        assert karmada.member_contexts(clusters, ordered) == {"m1": "a"}  # by name alone
        preference = {"editor@a": (0,), "a": (-3,), "viewer@a": (-2,)}
        assert karmada.member_contexts(clusters, ordered, None, preference) == {"m1": "a"}
        preference = {"editor@a": (0,), "a": (-2,), "viewer@a": (-2,)}
        assert karmada.member_contexts(clusters, ordered, None, preference) == {"m1": "a"}
        preference = {"editor@a": (-3,), "a": (0,), "viewer@a": (0,)}
        assert karmada.member_contexts(clusters, ordered, None, preference) == {
            "m1": "editor@a"}


# --- a fake API server per cluster -------------------------------------------------------------

#: token -> (username, rule); a rule answers (verb, resource, group, subresource, namespace)
ROLES: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "tok-admin": ("admin", lambda a: True),
    "tok-viewer": ("viewer", lambda a: a["verb"] in ("get", "list", "watch")
                   and a["resource"] != "nodes" and not a.get("subresource")),
    "tok-editor": ("editor", lambda a: a.get("namespace") == "team-a"),
}
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.1", "platform": "linux/amd64"}


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApi(BaseHTTPRequestHandler):
    """Enough of a Kubernetes API server for the preflight, the checks below and cleanup."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, data: Any) -> None:
        body = (data if isinstance(data, str) else json.dumps(data)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length) or b"{}") if length else {}
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        user, rule = ROLES.get(token, ("system:anonymous", lambda a: False))
        path = self.path.split("?", 1)[0]
        server = self.server
        server.requests.append((self.command, path, user))  # type: ignore[attr-defined]
        if path == "/version":
            return self._send(200, VERSION)
        if path in ("/readyz", "/livez"):
            return self._send(200, "ok")
        if path == "/apis":
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/v1alpha1",
                                                "version": "v1alpha1"}]}
                      for g in server.groups]  # type: ignore[attr-defined]
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                    "groups": groups})
        if path.endswith("/selfsubjectreviews"):
            return self._send(201, {**sent, "status": {"userInfo": {
                "username": user, "groups": ["system:authenticated"]}}})
        if path.endswith("/selfsubjectaccessreviews"):
            time.sleep(server.ssar_delay)  # type: ignore[attr-defined]
            attrs = sent["spec"]["resourceAttributes"]
            return self._send(201, {**sent, "status": {"allowed": bool(rule(attrs))}})
        if self.command == "GET":
            need = kube_api.permission("GET", path)
            verb, plural, group, namespace = need.verb, need.resource, need.group, need.namespace
            if not rule({"verb": verb, "resource": plural, "group": group,
                         "namespace": namespace}):
                where = f' in the namespace "{namespace}"' if namespace else ""
                return self._send(403, _status(403, "Forbidden", (
                    f'{need.kubectl} is forbidden: User "{user}" cannot {verb} resource '
                    f'"{plural}" in API group "{group}"{where}')))
            if path in server.objects:  # type: ignore[attr-defined]
                return self._send(200, server.objects[path])  # type: ignore[attr-defined]
            if verb == "list":
                return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {},
                                        "items": []})
        return self._send(404, _status(404, "NotFound", f"{path} not found"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture
def api_servers() -> Iterator[Callable[..., ThreadingHTTPServer]]:
    """Start a fake API server on 127.0.0.1 (``groups``: the API groups it serves,
    ``objects``: path -> object it answers GET with)."""
    started: list[ThreadingHTTPServer] = []

    def start(groups: tuple[str, ...] = (), objects: dict[str, Any] | None = None,
              ssar_delay: float = 0.0) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
        server.groups, server.objects = groups, objects or {}  # type: ignore[attr-defined]
        server.ssar_delay, server.requests = ssar_delay, []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    start.started = started  # type: ignore[attr-defined]
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def lab_kubeconfig(path: Path, servers: dict[str, ThreadingHTTPServer]) -> Path:
    """Contexts ``<cluster>`` (admin), ``viewer@<cluster>``, ``editor@<cluster>`` per server
    (only the admin one for a cluster named ``karmada``)."""
    data: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                            "contexts": [], "current-context": ""}
    for cluster, server in servers.items():
        data["clusters"].append({"name": cluster, "cluster": {"server": url(server)}})
        for who in ("", "viewer@", "editor@") if cluster != "karmada" else ("",):
            name = f"{who}{cluster}"
            role = who.rstrip("@") or "admin"
            data["users"].append({"name": name, "user": {"token": f"tok-{role}"}})
            data["contexts"].append({"name": name, "context": {"cluster": cluster,
                                                               "user": name}})
    path.write_text(yaml.safe_dump(data))
    return path


def test_preflight_learns_what_each_identity_may_do_within_the_timeout(api_servers) -> None:
    server = api_servers()
    from kubernetes import client as k8s

    def access(token: str, timeout: float = 2.0) -> preflight_mod.PreflightResult:
        config = k8s.Configuration(host=url(server))
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
        client = k8s.ApiClient(config)
        try:
            return preflight_mod.preflight("ctx", client, url(server), timeout,
                                           credentials="token",
                                           access_namespace="fleetcheck-fc-x")
        finally:
            client.close()

    admin, viewer, editor = access("tok-admin"), access("tok-viewer"), access("tok-editor")
    assert admin.ok and admin.access == EVERYTHING
    assert viewer.access == READ_ONLY and editor.access == NOTHING
    asked = [p for m, p, u in server.requests if p.endswith("selfsubjectaccessreviews")]
    assert len(asked) == 3 * len(preflight_mod.ACCESS_REVIEWS)
    # without the namespace (callers that need no capability) nothing is asked
    config = k8s.Configuration(host=url(server))
    client = k8s.ApiClient(config)
    try:
        assert preflight_mod.preflight("ctx", client, url(server), 2.0).access == {}
    finally:
        client.close()
    # a server slow to answer: the questions give up with the connect timeout, unanswered
    slow = api_servers(ssar_delay=3.0)
    server = slow
    start = time.monotonic()
    late = access("tok-admin", timeout=0.5)
    assert late.ok and late.access == dict.fromkeys(EVERYTHING)
    assert time.monotonic() - start < 2.5


# --- whole runs: the plugin with contexts listed in every order --------------------------------

CHECKS = '''
import pytest

@pytest.mark.check("demo/once-per-cluster")
def test_once(target):
    if target.cluster_id != target.name:
        pytest.skip(f"{target.name} is the same cluster as {target.cluster_id}")
    assert target.access.get("create pods/exec"), target.access

@pytest.mark.check("demo/cluster-id")
def test_cluster_id(target, fleet):
    assert target.cluster_id == target.name.split("@")[-1], target.cluster_id
    assert fleet.clusters[target.cluster_id][0] == target.cluster_id, fleet.clusters

@pytest.mark.requires_clusters(2)
@pytest.mark.check("demo/pair")
def test_pair(pair):
    assert "@" not in pair.id, pair.id
'''

NAMES = ["editor@lab-a", "editor@lab-b", "lab-a", "lab-b", "viewer@lab-a", "viewer@lab-b"]


def _verdicts(report: Path) -> dict[tuple[str, str], str]:
    data = json.loads((report / "results.json").read_text())
    return {(c["check_id"], c["context"]): c["verdict"] for c in data["checks"]}


def test_every_selection_order_gives_the_same_verdicts(isolated_pytester: pytest.Pytester,
                                                       api_servers) -> None:
    pytester = isolated_pytester
    servers = {"lab-a": api_servers(), "lab-b": api_servers()}
    kubeconfig = lab_kubeconfig(pytester.path / "kubeconfig.yaml", servers)
    pytester.makepyfile(test_checks=CHECKS)
    orders = {"main": "lab-*,viewer@*,editor@*", "alphabetical": ",".join(NAMES),
              "reverse": ",".join(reversed(NAMES))}
    runs = {}
    for tag, contexts in orders.items():
        report = pytester.path / f"report-{tag}"
        result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}",
                                    f"--contexts={contexts}", f"--report-dir={report}",
                                    "--connect-timeout=2", "-rs")
        assert "Traceback" not in result.stdout.str()
        result.assert_outcomes(passed=6 + 2 + 2, skipped=4)
        runs[tag] = _verdicts(report)
    assert runs["alphabetical"] == runs["main"] == runs["reverse"]
    assert runs["main"][("demo/pair", "lab-a->lab-b")] == "conformant"
    assert runs["main"][("demo/once-per-cluster", "editor@lab-a")] == "skipped"
    # the collection only (no preflight): the order of names, whatever the selection order
    listed = set()
    for contexts in orders.values():
        result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}",
                                    f"--contexts={contexts}", "--collect-only", "-q")
        listed.add(frozenset(re.findall(r"test_pair\[([^\]]+)\]", result.stdout.str())))
    assert listed == {frozenset({"editor@lab-a->editor@lab-b", "editor@lab-b->editor@lab-a"})}


def test_xdist_workers_agree_with_the_controller(isolated_pytester: pytest.Pytester,
                                                 api_servers) -> None:
    pytester = isolated_pytester
    servers = {"lab-a": api_servers(), "lab-b": api_servers()}
    kubeconfig = lab_kubeconfig(pytester.path / "kubeconfig.yaml", servers)
    pytester.makepyfile(test_checks=CHECKS)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(*PLUGIN, f"--kubeconfig={kubeconfig}",
                                           f"--contexts={','.join(NAMES)}", "-n", "2",
                                           f"--report-dir={report}", "--connect-timeout=2")
    assert "Traceback" not in result.stdout.str()
    result.assert_outcomes(passed=6 + 2 + 2, skipped=4)
    assert _verdicts(report)[("demo/pair", "lab-b->lab-a")] == "conformant"


# --- federation: members read through the context that may read them ---------------------------

def _federation_lab(api_servers, tmp_path: Path) -> tuple[dict[str, Target], str]:
    namespace = "fleetcheck-fc-x-fo"
    deployment = kube_api.object_path("apps/v1", "deployments", namespace, fedfailover.NAME)
    members = {c: api_servers(objects={deployment: {"status": {"availableReplicas": 1}}})
               for c in ("lab-a", "lab-b")}
    clusters = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": f"member-{c[-1]}"}, "spec": {"apiEndpoint": url(s)},
         "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        for c, s in members.items()]}
    control = api_servers(groups=("cluster.karmada.io", "policy.karmada.io"),
                          objects={karmada.CLUSTERS: clusters})
    kc = kubeconfig_mod.load([lab_kubeconfig(tmp_path / "kc.yaml",
                                             {**members, "karmada": control})])
    targets = {}
    for name in kc.contexts:
        target = make_target(kc, name, connect_timeout=2, request_timeout=2)
        result = preflight_mod.preflight(name, target.api_client, target.server, 2.0,
                                         credentials="token", access_namespace="fleetcheck-fc-x")
        assert result.ok, result.reason
        target.access, target.api_groups = result.access, tuple(result.api_groups)
        targets[name] = target
    return targets, namespace


def test_federation_reads_members_through_the_capable_context_in_any_order(
        api_servers, tmp_path: Path) -> None:
    targets, namespace = _federation_lab(api_servers, tmp_path)
    names = sorted(targets)
    for order in (names, list(reversed(names))):
        fleet = SimpleNamespace(targets={n: targets[n] for n in order})
        _RUNS.append(fleet)
        fed = fedprobe.federation(fleet, targets["karmada"], {"federation": {}})
        assert fed.members == {"member-a": "lab-a", "member-b": "lab-b"}
        assert fedfailover.available_on(fed, "member-a", namespace, fedfailover.NAME) == 1


def test_a_forbidden_member_read_is_a_sentence_naming_the_permission(
        api_servers, tmp_path: Path) -> None:
    targets, namespace = _federation_lab(api_servers, tmp_path)
    fleet = SimpleNamespace(targets=targets)
    _RUNS.append(fleet)
    # the expectations map member-a to the editor, who may not read the run's namespaces
    fed = fedprobe.federation(fleet, targets["karmada"],
                              {"federation": {"members": {"member-a": "editor@lab-a"}}})
    with pytest.raises(Unknown) as denied:
        fedfailover.available_on(fed, "member-a", namespace, fedfailover.NAME)
    message = str(denied.value)
    assert message == (
        f"member cluster member-a: the identity of context editor@lab-a is not permitted to get "
        f'deployments in API group "apps" in namespace "{namespace}" (HTTP 403: '
        f'deployments.apps is forbidden: User "editor" cannot get resource "deployments" in API '
        f'group "apps" in the namespace "{namespace}"; check it: kubectl --context editor@lab-a '
        f"auth can-i get deployments.apps -n {namespace}; grant it, or select a context that "
        "may)"), message
    assert isinstance(denied.value, kube_api.ApiError) and denied.value.status == 403
    # wrapped as the checks wrap member reads, the sentence stays whole
    wrapped = fedprobe._unknown("karmada: reading the members' copies failed", denied.value)
    assert str(wrapped) == f"karmada: reading the members' copies failed: {message}"
    with pytest.raises(Unknown, match='context editor@lab-a is not permitted to get configmaps '
                                      'in the core API group \\(""\\) in namespace "x"'):
        fedprobe.member_copy(fed, "member-a", "x")


def test_a_member_that_does_not_answer_is_a_sentence_too(api_servers, tmp_path: Path) -> None:
    targets, namespace = _federation_lab(api_servers, tmp_path)
    fleet = SimpleNamespace(targets=targets)
    _RUNS.append(fleet)
    fed = fedprobe.federation(fleet, targets["karmada"], {"federation": {}})
    member = next(s for s in api_servers.started if url(s) == targets["lab-a"].server)
    member.shutdown()
    member.server_close()
    targets["lab-a"].api_client.rest_client.pool_manager.clear()  # no kept-alive connection
    with pytest.raises(Unknown) as silent:
        fedfailover.available_on(fed, "member-a", namespace, fedfailover.NAME)
    assert str(silent.value).startswith("member cluster member-a: context lab-a got no answer: "
                                        "API server"), str(silent.value)
