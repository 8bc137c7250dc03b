"""Pure logic of the federation support: detection, member mapping, Karmada object reading,
and the expectations section (no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleetcheck.core import controlplanes as federation
from fleetcheck.core.targets import Target, ordered_pairs
from fleetcheck.federation import karmada
from fleetcheck.kube import api as kube_api
from fleetcheck.kube.api import Api, ApiError
from fleetcheck.run.expectations import Expectations, ExpectationsError


def _cluster(name: str, endpoint: str, ready: str = "True", taints: list | None = None) -> dict:
    return {"metadata": {"name": name},
            "spec": {"apiEndpoint": endpoint, "syncMode": "Push", "taints": taints or []},
            "status": {"kubernetesVersion": "v1.34.4",
                       "conditions": [{"type": "Ready", "status": ready, "reason": "R",
                                       "message": "m"}]}}


def test_control_plane_is_detected_by_api_group_not_name() -> None:
    assert federation.control_plane_kind(["apps", "policy.karmada.io"]) == "karmada"
    assert federation.control_plane_kind(["apps", "karmada.example.com"]) is None
    target = Target("fleet", "https://x:6443", "c", "u", api_groups=("cluster.karmada.io",))
    assert target.federation == "karmada" and target.summary()["federation"] == "karmada"
    reason = federation.workloads_skip_reason("fleet", target.api_groups)
    assert reason.startswith("fleet is a Karmada federation control plane (serves "
                             "cluster.karmada.io)")
    assert "lab-a is not a federation control plane" in \
        federation.not_a_control_plane_reason("lab-a")


def test_control_plane_makes_no_pair() -> None:
    a, b = Target("a", "https://a:1", "a", "u"), Target("b", "https://b:1", "b", "u")
    fed = Target("k", "https://k:1", "k", "u", api_groups=("work.karmada.io",))
    assert [p.id for p in ordered_pairs([a, fed, b])] == ["a->b", "b->a"]


def test_members_map_by_endpoint_or_declaration() -> None:
    clusters = [_cluster("m1", "https://127.0.0.1:26443/"), _cluster("m2", "https://HOST:443"),
                _cluster("m3", "https://10.0.0.9:6443")]
    servers = {"lab-a": "https://127.0.0.1:26443", "prod": "https://host",
               "other": "https://10.9.9.9:6443"}
    assert karmada.member_contexts(clusters, servers) == {"m1": "lab-a", "m2": "prod",
                                                          "m3": None}
    declared = karmada.member_contexts(clusters, servers, {"m3": "other", "m1": "gone"})
    assert declared == {"m1": None, "m2": "prod", "m3": "other"}


def test_cluster_row_and_taints() -> None:
    row = karmada.cluster_row(_cluster("m", "https://e", "False", [
        {"key": "k", "value": "v", "effect": "NoExecute"}, {"key": "c", "effect": "NoSchedule"}]))
    assert row == {"name": "m", "ready": "False", "reason": "R: m", "version": "v1.34.4",
                   "endpoint": "https://e", "sync_mode": "Push",
                   "taints": ["k=v:NoExecute", "c:NoSchedule"]}
    assert karmada.cluster_row(_cluster("ok", "https://e"))["reason"] == ""


@pytest.mark.parametrize(("spec", "evicts"), [
    ({"taints": [{"key": "t", "effect": "NoExecute"}],
      "addOnConditions": [{"conditionType": "Ready", "operator": "NotIn",
                           "statusValues": ["True"]}]}, True),
    ({"taints": [{"key": "t", "effect": "NoExecute"}],
      "addOnConditions": [{"conditionType": "Ready", "operator": "In",
                           "statusValues": ["False", "Unknown"]}]}, True),
    ({"taints": [{"key": "t", "effect": "NoSchedule"}],
      "addOnConditions": [{"conditionType": "Ready", "operator": "NotIn",
                           "statusValues": ["True"]}]}, False),
    ({"taints": [{"key": "t", "effect": "NoExecute"}],
      "addOnConditions": [{"conditionType": "NetworkReady", "operator": "NotIn",
                           "statusValues": ["True"]}]}, False),
    ({"taints": [{"key": "t", "effect": "NoExecute"}],
      "addOnConditions": [{"conditionType": "Ready", "operator": "In",
                           "statusValues": ["True"]}]}, False),
])
def test_which_taint_policies_fail_over(spec: dict, evicts: bool) -> None:
    assert karmada.evicts_not_ready({"spec": spec}) is evicts


def test_binding_readers() -> None:
    rb = {"spec": {"clusters": [{"name": "b"}, {"name": "a"}],
                   "gracefulEvictionTasks": [{"fromCluster": "c"}]},
          "status": {"aggregatedStatus": [{"clusterName": "a", "applied": True}]}}
    assert karmada.placed_clusters(rb) == ["a", "b"]
    assert karmada.eviction_tasks(rb) == [{"fromCluster": "c"}]
    assert karmada.aggregated(rb)["a"]["applied"] is True
    assert karmada.placed_clusters(None) == [] and karmada.eviction_tasks({}) == []
    assert karmada.binding_name("Deployment", "web") == "web-deployment"


def test_paths() -> None:
    assert kube_api.object_path("v1", "configmaps", "ns", "x") == \
        "/api/v1/namespaces/ns/configmaps/x"
    assert kube_api.object_path("policy.karmada.io/v1alpha1", "clustertaintpolicies") == \
        "/apis/policy.karmada.io/v1alpha1/clustertaintpolicies"
    assert karmada.policy_path("PropagationPolicy", "ns", "pp") == \
        "/apis/policy.karmada.io/v1alpha1/namespaces/ns/propagationpolicies/pp"
    assert karmada.policy_path("ClusterPropagationPolicy", "", "cpp") == \
        "/apis/policy.karmada.io/v1alpha1/clusterpropagationpolicies/cpp"


def test_wait_for_returns_value_and_stops_on_time() -> None:
    calls = iter([None, None, "done"])
    value, waited = karmada.wait_for(lambda: next(calls), 5, 0.01)
    assert value == "done" and waited < 1
    value, waited = karmada.wait_for(lambda: None, 0.05, 0.01)
    assert value is None and waited >= 0.05


def test_federation_expectations_are_validated() -> None:
    ok = Expectations({"version": 1, "defaults": {"federation": {
        "members": {"m1": "ctx"}, "max_propagation_s": 5, "allowed_taints": ["x:*"]}}})
    merged = ok.for_context("any")["federation"]
    assert merged["members"] == {"m1": "ctx"} and merged["drift_revert_timeout_s"] == 30.0
    with pytest.raises(ExpectationsError, match=r"defaults\.federation.*max_propagation_s"):
        Expectations({"version": 1, "defaults": {"federation": {"max_propagation_s": 0}}})
    with pytest.raises(ExpectationsError, match=r"defaults\.federation"):
        Expectations({"version": 1, "defaults": {"federation": {"memberz": {}}}})


# --- refusals: a forbidden action is unknown, naming the permission ---------------------------

def rbac_403(verb: str, resource: str, group: str, namespace: str = "") -> dict:
    """The API server's answer when RBAC forbids (as kube-apiserver words it)."""
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
            "code": 403, "details": {"kind": resource, "group": group},
            "message": f'{resource}.{group} is forbidden: User "auditor" cannot {verb} resource '
                       f'"{resource}" in API group "{group}" {where}'}


WEBHOOK_403 = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
               "code": 403, "message": 'admission webhook "propagationpolicy.karmada.io" denied '
                                       "the request: spec.placement is invalid"}


@pytest.mark.parametrize(("method", "path", "permission"), [
    ("POST", "/apis/policy.karmada.io/v1alpha1/namespaces/default/propagationpolicies",
     ("create", "propagationpolicies", "policy.karmada.io", "default")),
    ("GET", "/apis/cluster.karmada.io/v1alpha1/clusters", ("list", "clusters",
                                                           "cluster.karmada.io", "")),
    ("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.cluster.karmada.io",
     ("get", "apiservices", "apiregistration.k8s.io", "")),
    ("PATCH", "/api/v1/namespaces/fc-fed/configmaps/fleetcheck-fed",
     ("patch", "configmaps", "", "fc-fed")),
    ("PATCH", "/api/v1/namespaces/fc-fed", ("patch", "namespaces", "", "")),
    ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/web/scale",
     ("patch", "deployments/scale", "apps", "ns")),
])
def test_the_permission_a_request_needs(method: str, path: str,
                                        permission: tuple[str, str, str, str]) -> None:
    assert kube_api.permission(method, path) == kube_api.Permission(*permission)


def test_the_authorizers_words_name_the_permission() -> None:
    message = rbac_403("create", "propagationpolicies", "policy.karmada.io", "default")["message"]
    # the server's words win over the request's (an apply may be authorized as a create)
    perm = kube_api.permission("PATCH", "/apis/policy.karmada.io/v1alpha1/namespaces/default/"
                               "propagationpolicies/x", message)
    assert perm == kube_api.Permission("create", "propagationpolicies", "policy.karmada.io",
                                       "default")
    assert str(perm) == ('create propagationpolicies in API group "policy.karmada.io" in '
                         'namespace "default"')
    assert perm.can_i("fed") == ("kubectl --context fed auth can-i create "
                                 "propagationpolicies.policy.karmada.io -n default")
    core = kube_api.permission("GET", "/api/v1/nodes",
                               'nodes is forbidden: User "a" cannot list resource "nodes" in '
                               'API group "" at the cluster scope')
    assert str(core) == 'list nodes in the core API group ("") cluster-wide'
    assert core.can_i("") == "kubectl auth can-i list nodes"


@pytest.mark.parametrize(("status", "data", "refused"), [
    (403, rbac_403("list", "clusters", "cluster.karmada.io"), True),
    (401, {"kind": "Status", "code": 401, "message": "Unauthorized"}, True),
    (403, "<html>403 Forbidden</html>", True),
    (403, WEBHOOK_403, False),
    (403, {"message": "propagationpolicies.policy.karmada.io \"x\" is forbidden: "
                      "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no"}, False),
    (404, {"message": "not found"}, False),
    (409, {"message": "conflict"}, False),
    (500, {"message": "etcd"}, False),
    (201, {}, False),
])
def test_which_answers_refuse_the_identity(status: int, data: object, refused: bool) -> None:
    assert kube_api.refused(status, data) is refused


class FakeResponse:
    """What a kubernetes ``ApiClient.call_api`` returns: a JSON answer."""

    def __init__(self, status: int, data: object) -> None:
        self.status, self.headers = status, {"Content-Type": "application/json"}
        self._body = json.dumps(data).encode()

    def read(self) -> bytes:
        return self._body


class FakeKarmada:
    """A fake API server as a kubernetes ``ApiClient`` under kube.api: it answers
    ``routes[(method, path)] = (status, data)``, 404 for the rest."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, object]]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, str, list]] = []

    def param_serialize(self, method: str, resource_path: str, query_params: list | None = None,
                        **_: Any) -> tuple:
        return method, resource_path, {}, None, list(query_params or [])

    def call_api(self, method: str, url: str, headers: object, body: object, query: list,
                 **_: Any) -> FakeResponse:
        self.calls.append((method, url, query))
        return FakeResponse(*self.routes.get((method, url), (
            404, {"kind": "Status", "code": 404, "message": "not found"})))


def test_a_refused_request_is_an_unknown_naming_the_permission() -> None:
    from fleetcheck.core.verdicts import Unknown
    from fleetcheck.federation import probe as fedprobe

    path = "/apis/cluster.karmada.io/v1alpha1/clusters"
    fake = FakeKarmada({("GET", path): (403, rbac_403("list", "clusters",
                                                       "cluster.karmada.io"))})
    api = Api(fake, (1.0, 1.0), "fed")  # type: ignore[arg-type]
    with pytest.raises(ApiError) as raised:
        api.list(path, what="list member Clusters")
    exc = raised.value
    assert exc.denied and exc.status == 403 and exc.context == "fed"
    assert str(exc).startswith("list member Clusters: HTTP 403 clusters.cluster.karmada.io is "
                               "forbidden")  # as before: failovercli and janitor print it
    unknown = fedprobe._unknown("fed: cannot list member Clusters", exc)
    assert isinstance(unknown, Unknown)
    assert unknown.reason.startswith(
        'fed: cannot list member Clusters: the identity of context fed is not permitted to list '
        'clusters in API group "cluster.karmada.io" cluster-wide (HTTP 403: ')
    assert "kubectl --context fed auth can-i list clusters.cluster.karmada.io;" in unknown.reason
    # 401: the credentials, not a permission
    fake.routes[("GET", path)] = (401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
    with pytest.raises(ApiError) as raised:
        api.list(path)
    assert fedprobe._unknown("fed: x", raised.value).reason == (
        "fed: x: the API server rejected the credentials of context fed (HTTP 401) asked to "
        'list clusters in API group "cluster.karmada.io" cluster-wide: Unauthorized')
    # other failures keep their wording
    fake.routes[("GET", path)] = (500, {"message": "etcdserver: request timed out"})
    with pytest.raises(ApiError) as raised:
        api.list(path, what="list member Clusters")
    assert not raised.value.denied
    assert fedprobe._unknown("fed: y", raised.value).reason == \
        "fed: y: list member Clusters: HTTP 500 etcdserver: request timed out"


# --- federation/control-plane over a fake control plane ----------------------------------------

POLICIES = f"{karmada.POLICY}/namespaces/default/propagationpolicies"
APISERVICE = f"/apis/apiregistration.k8s.io/v1/apiservices/{karmada.CLUSTER_APISERVICE}"
EVICTING = {"metadata": {"name": "evict"}, "spec": {
    "taints": [{"key": "t", "effect": "NoExecute"}],
    "addOnConditions": [{"conditionType": "Ready", "operator": "NotIn",
                         "statusValues": ["True"]}]}}


def run_control_plane_check(monkeypatch: pytest.MonkeyPatch,
                            routes: dict[tuple[str, str], tuple[int, object]]) -> None:
    """Run suites/test_federation.py's ``test_control_plane`` against ``routes``."""
    from fleetcheck.core.checks import CheckInfo
    from fleetcheck.core.evidence import Evidence
    from fleetcheck.federation import probe as fedprobe

    import suites.test_federation as suite

    answers = {("GET", APISERVICE): (200, {"metadata": {"name": karmada.CLUSTER_APISERVICE},
                                           "status": {"conditions": [
                                               {"type": "Available", "status": "True"}]}}),
               ("GET", f"{karmada.POLICY}/clustertaintpolicies"): (200, {"items": [EVICTING]}),
               **routes}
    target = Target("fed", "https://k:1", "k", "u", api_groups=("cluster.karmada.io",))
    api = Api(FakeKarmada(answers), (1.0, 1.0), "fed")  # type: ignore[arg-type]
    fed = fedprobe.Federation(target, api, [], {})
    monkeypatch.setattr(fedprobe, "federation", lambda fleet, t, exp: fed)
    expectations = Expectations({"version": 1}).for_context("fed")
    suite.test_control_plane(target, object(), CheckInfo("federation/control-plane",
                                                         context="fed"),
                             Evidence(), expectations)


def test_control_plane_forbidden_dry_run_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A least-privilege identity may not create a PropagationPolicy, dry run or not: the
    webhook was not tried, the check is unknown and says which permission is missing."""
    from fleetcheck.core.verdicts import Unknown

    forbidden = rbac_403("create", "propagationpolicies", "policy.karmada.io", "default")
    with pytest.raises(Unknown) as raised:
        run_control_plane_check(monkeypatch, {("POST", POLICIES): (403, forbidden)})
    assert raised.value.reason.startswith(
        "fed: the control plane could not be checked: the identity of context fed is not "
        'permitted to create propagationpolicies in API group "policy.karmada.io" in namespace '
        '"default" (HTTP 403: ')
    assert "kubectl --context fed auth can-i create propagationpolicies.policy.karmada.io " \
           "-n default" in raised.value.reason
    with pytest.raises(Unknown, match=r"rejected the credentials of context fed \(HTTP 401\)"):
        run_control_plane_check(monkeypatch, {("POST", POLICIES): (
            401, {"kind": "Status", "code": 401, "message": "Unauthorized"})})
    # forbidden to read the APIService or the taint policies: unknown too, never a traceback
    with pytest.raises(Unknown, match=r'not permitted to get apiservices in API group '
                                      r'"apiregistration.k8s.io" cluster-wide'):
        run_control_plane_check(monkeypatch, {("GET", APISERVICE): (
            403, rbac_403("get", "apiservices", "apiregistration.k8s.io"))})


def test_control_plane_webhook_denial_is_still_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The admission webhook refusing the policy (a 403 too) is what the check measures."""
    from fleetcheck.core.verdicts import NonConformant

    with pytest.raises(NonConformant, match="a dry-run PropagationPolicy was refused: HTTP 403 "
                                            'admission webhook "propagationpolicy.karmada.io" '
                                            "denied the request"):
        run_control_plane_check(monkeypatch, {("POST", POLICIES): (403, WEBHOOK_403)})
    admitted = {"metadata": {"labels": {"propagationpolicy.karmada.io/permanent-id": "x"}}}
    run_control_plane_check(monkeypatch, {("POST", POLICIES): (201, admitted)})
