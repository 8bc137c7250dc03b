"""Pure logic of the federation support: detection, member mapping, Karmada object reading,
and the expectations section (no cluster)."""

from __future__ import annotations

import pytest
from fleetcheck import federation, karmada
from fleetcheck.expectations import Expectations, ExpectationsError
from fleetcheck.targets import Target, ordered_pairs


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
    assert karmada.object_path("v1", "configmaps", "ns", "x") == \
        "/api/v1/namespaces/ns/configmaps/x"
    assert karmada.object_path("policy.karmada.io/v1alpha1", "clustertaintpolicies") == \
        "/apis/policy.karmada.io/v1alpha1/clustertaintpolicies"


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
