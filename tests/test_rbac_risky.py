"""Risky-rule analysis (fleetcheck.rbac.risky) on plain data."""

from __future__ import annotations

import pytest
from fleetcheck.rbac import risky


def _rule(verbs, resources=(), groups=("",), names=(), urls=()):
    rule = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    if names:
        rule["resourceNames"] = list(names)
    if urls:
        rule = {"verbs": list(verbs), "nonResourceURLs": list(urls)}
    return rule


@pytest.mark.parametrize(("rule", "cluster_wide", "reasons"), [
    (_rule(["*"], ["*"], ["*"]), True, ["wildcard verbs", "wildcard resources",
                                        "wildcard apiGroups", "read secrets", "nodes/proxy",
                                        "pods/exec cluster-wide"]),
    (_rule(["*"], ["configmaps"]), False, ["wildcard verbs"]),
    (_rule(["get"], ["*"], ["apps"]), True, ["wildcard resources"]),
    (_rule(["escalate", "bind"], ["clusterroles"], ["rbac.authorization.k8s.io"]), True,
     ["escalate", "bind"]),
    (_rule(["impersonate"], ["serviceaccounts"]), False, ["impersonate"]),
    (_rule(["list"], ["secrets"]), True, ["read secrets"]),
    (_rule(["watch"], ["secrets"]), False, ["read secrets (in the namespace)"]),
    (_rule(["get"], ["secrets"], names=["my-app-secret"]), True, []),
    (_rule(["create", "delete"], ["secrets"]), True, []),
    (_rule(["get"], ["secrets"], ["example.com"]), True, []),  # not the core group
    (_rule(["get"], ["nodes/proxy"]), False, ["nodes/proxy"]),
    (_rule(["create"], ["pods/exec"]), True, ["pods/exec cluster-wide"]),
    (_rule(["create"], ["pods/exec"]), False, []),  # namespaced exec: not on the list
    (_rule(["get", "list", "watch"], ["pods", "services", "endpoints", "namespaces"]), True, []),
    (_rule(["get"], urls=["/healthz", "/version"]), True, []),
    (_rule(["*"], urls=["*"]), True, ["wildcard verbs"]),
])
def test_rule_risks(rule, cluster_wide, reasons):
    assert risky.rule_risks(rule, cluster_wide=cluster_wide) == reasons


def _crb(name, role, subjects, labels=None):
    return {"metadata": {"name": name, **({"labels": labels} if labels else {})},
            "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects}


def _rb(ns, name, kind, role, subjects):
    return {"metadata": {"name": name, "namespace": ns},
            "roleRef": {"kind": kind, "name": role}, "subjects": subjects}


CLUSTER_ROLES = [
    {"metadata": {"name": "cluster-admin"}, "rules": [_rule(["*"], ["*"], ["*"]),
                                                      _rule(["*"], urls=["*"])]},
    {"metadata": {"name": "dns-reader"},
     "rules": [_rule(["list", "watch"], ["endpoints", "services", "pods", "namespaces"]),
               _rule(["list", "watch"], ["endpointslices"], ["discovery.k8s.io"])]},
    {"metadata": {"name": "edit"}, "rules": [_rule(["get", "list"], ["secrets"]),
                                             _rule(["impersonate"], ["serviceaccounts"])]},
    {"metadata": {"name": "system:controller:ns"}, "rules": [_rule(["delete"], ["*"], ["*"])]},
]
ROLES = [{"metadata": {"name": "reader", "namespace": "prod"},
          "rules": [_rule(["get"], ["secrets"])]}]
SA = {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}


def test_analyse_findings_and_default_allowlist():
    crbs = [
        _crb("cluster-admin", "cluster-admin", [{"kind": "Group", "name": "system:masters"}]),
        _crb("system:controller:ns", "system:controller:ns", [
            {"kind": "ServiceAccount", "name": "namespace-controller",
             "namespace": "kube-system"}]),
        _crb("dns-peer", "dns-reader", [{"kind": "User", "name": "dns"}]),
        _crb("fc-rbac-evil", "cluster-admin", [SA]),
        _crb("open-door", "cluster-admin", [{"kind": "Group", "name": "system:authenticated"}]),
        _crb("dangling", "does-not-exist", [{"kind": "User", "name": "x"}]),
    ]
    rbs = [_rb("prod", "readers", "Role", "reader", [{"kind": "ServiceAccount", "name": "app"}])]
    findings = risky.analyse(CLUSTER_ROLES, ROLES, crbs, rbs, ["system:*", "cluster-admin"])
    bad = {str(f.subject): f for f in findings if f.allowed_by is None}
    ok = {str(f.subject): f.allowed_by for f in findings if f.allowed_by}
    assert ok == {"Group:system:masters": "cluster-admin",
                  "ServiceAccount:kube-system/namespace-controller": "system:*"}
    # a bare system:* never matches subjects: system:authenticated and SAs are reported
    assert set(bad) == {"ServiceAccount:ci/deployer", "Group:system:authenticated",
                        "ServiceAccount:prod/app"}
    evil = bad["ServiceAccount:ci/deployer"]
    assert str(evil.binding) == "ClusterRoleBinding fc-rbac-evil"
    assert evil.role == "ClusterRole cluster-admin"
    assert evil.reasons[0] == "cluster-admin" and "wildcard verbs" in evil.reasons
    assert "verbs=[*] apiGroups=[*] resources=[*]" in evil.rules
    assert evil.render().startswith(
        "ServiceAccount:ci/deployer via ClusterRoleBinding fc-rbac-evil -> ClusterRole "
        "cluster-admin: cluster-admin, wildcard verbs")
    # the namespaced SA subject takes the RoleBinding's namespace
    app = bad["ServiceAccount:prod/app"]
    assert app.reasons == ["read secrets (in the namespace)"]
    assert str(app.binding) == "RoleBinding prod/readers" and app.role == "Role prod/reader"


@pytest.mark.parametrize(("entry", "allowed"), [
    ("ServiceAccount:ci/*", True), ("ServiceAccount:ci/deployer", True), ("ci/*", False),
    ("fc-rbac-*", True), ("cluster-admin", False), ("system:*", False),
    ("system:serviceaccount:ci:deployer", False),
])
def test_allowlist_matches_bindings_and_kinded_subjects_never_roles(entry, allowed):
    crbs = [_crb("fc-rbac-evil", "cluster-admin", [SA])]
    [finding] = risky.analyse(CLUSTER_ROLES, [], crbs, [], [entry])
    assert (finding.allowed_by == entry) is allowed


def test_rolebinding_allowlisted_by_namespace_slash_name():
    rbs = [_rb("team-a", "editor", "ClusterRole", "edit", [{"kind": "User", "name": "ed"}])]
    [finding] = risky.analyse(CLUSTER_ROLES, [], [], rbs, ["team-a/editor"])
    assert finding.allowed_by == "team-a/editor"
    assert finding.reasons == ["read secrets (in the namespace)", "impersonate"]
    [finding] = risky.analyse(CLUSTER_ROLES, [], [], rbs, ["team-b/editor"])
    assert finding.allowed_by is None


def test_not_risky_bindings_give_no_findings():
    crbs = [_crb("dns-peer", "dns-reader", [{"kind": "User", "name": "dns"}])]
    assert risky.analyse(CLUSTER_ROLES, [], crbs, [], []) == []


def test_render_rule():
    assert risky.render_rule(_rule(["get"], ["secrets"], names=["a", "b"])) == (
        'verbs=[get] apiGroups=[""] resources=[secrets] resourceNames=[a,b]')
