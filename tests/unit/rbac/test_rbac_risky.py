"""Risky-rule analysis (fleetcheck.rbac.risky) and who may hold risky rules
(fleetcheck.rbac.allowlist), on plain data."""

from __future__ import annotations

import pytest
from fleetcheck.rbac import allowlist, risky
from fleetcheck.run.expectations import Expectations, ExpectationsError


def _rule(verbs, resources=(), groups=("",), names=(), urls=()):
    rule = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    if names:
        rule["resourceNames"] = list(names)
    if urls:
        rule = {"verbs": list(verbs), "nonResourceURLs": list(urls)}
    return rule


ADM = "admissionregistration.k8s.io"
CERTS = "certificates.k8s.io"
RBAC = "rbac.authorization.k8s.io"


@pytest.mark.parametrize(("rule", "cluster_wide", "reasons"), [
    (_rule(["*"], ["*"], ["*"]), True, [
        "wildcard-verbs", "wildcard-resources", "wildcard-apigroups", "escalate", "bind",
        "impersonate", "read-secrets", "mint-serviceaccount-tokens", "exec-pods", "attach-pods",
        "ephemeral-containers", "nodes-proxy", "change-admission-webhooks",
        "change-admission-policies"]),
    (_rule(["*"], ["*"], ["*"]), False, [  # namespaced: no cluster-scoped rule, no exec
        "wildcard-verbs", "wildcard-resources", "wildcard-apigroups", "escalate", "bind",
        "impersonate", "read-secrets", "mint-serviceaccount-tokens"]),
    (_rule(["*"], ["configmaps"]), False, ["wildcard-verbs"]),
    (_rule(["get"], ["*"], ["apps"]), True, ["wildcard-resources"]),
    (_rule(["escalate", "bind"], ["clusterroles"], [RBAC]), True, ["escalate", "bind"]),
    (_rule(["escalate"], ["widgets"], ["example.com"]), False, ["escalate"]),  # any resource
    (_rule(["*"], ["roles"], [RBAC]), False, ["wildcard-verbs", "escalate", "bind"]),
    (_rule(["impersonate"], ["serviceaccounts"]), False, ["impersonate"]),
    (_rule(["*"], ["userextras/scopes"], ["authentication.k8s.io"]), True,
     ["wildcard-verbs"]),
    (_rule(["list"], ["secrets"]), True, ["read-secrets"]),
    (_rule(["watch"], ["secrets"]), False, ["read-secrets"]),
    (_rule(["get"], ["secrets"], names=["my-app-secret"]), True, []),
    (_rule(["create", "delete"], ["secrets"]), True, []),
    (_rule(["get"], ["secrets"], ["example.com"]), True, []),  # not the core group
    (_rule(["get"], ["secrets"], ["*"]), True, ["wildcard-apigroups", "read-secrets"]),
    (_rule(["get"], ["nodes/proxy"]), True, ["nodes-proxy"]),
    (_rule(["get"], ["nodes/proxy"]), False, []),  # a RoleBinding cannot grant nodes
    (_rule(["get"], ["nodes/proxy"], ["apps"]), True, []),
    (_rule(["create"], ["pods/exec"]), True, ["exec-pods"]),
    (_rule(["create"], ["*/exec"]), True, ["exec-pods"]),  # "*/subresource" form
    (_rule(["create"], ["pods/*"]), True, []),  # not RBAC syntax: matches nothing
    (_rule(["create"], ["pods/exec"]), False, []),  # namespaced exec: not on the list
    (_rule(["get", "list", "watch"], ["pods", "services", "endpoints", "namespaces"]), True, []),
    (_rule(["get"], urls=["/healthz", "/version"]), True, []),
    (_rule(["*"], urls=["*"]), True, ["wildcard-verbs"]),
    # escalation paths
    (_rule(["create"], ["serviceaccounts/token"]), False, ["mint-serviceaccount-tokens"]),
    (_rule(["create"], ["serviceaccounts/token"]), True, ["mint-serviceaccount-tokens"]),
    (_rule(["get"], ["serviceaccounts/token"]), True, []),
    (_rule(["create"], ["serviceaccounts/token"], ["apps"]), True, []),
    (_rule(["create"], ["pods/attach"]), True, ["attach-pods"]),
    (_rule(["patch"], ["pods/ephemeralcontainers"]), True, ["ephemeral-containers"]),
    (_rule(["get"], ["pods/ephemeralcontainers"]), True, []),
    (_rule(["update"], ["validatingwebhookconfigurations"], [ADM]), True,
     ["change-admission-webhooks"]),
    (_rule(["delete"], ["mutatingwebhookconfigurations"], [ADM]), True,
     ["change-admission-webhooks"]),
    (_rule(["get", "list", "watch"], ["mutatingwebhookconfigurations"], [ADM]), True, []),
    (_rule(["create"], ["mutatingwebhookconfigurations"], [""]), True, []),  # wrong group
    (_rule(["patch"], ["validatingadmissionpolicybindings"], [ADM]), True,
     ["change-admission-policies"]),
])
def test_rule_risks(rule, cluster_wide, reasons):
    assert risky.rule_risks(rule, cluster_wide=cluster_wide) == reasons
    assert set(reasons) <= set(risky.RULES)


@pytest.mark.parametrize(("rule", "namespace", "reasons"), [
    (_rule(["create"], ["pods/exec"]), "kube-system", ["exec-pods"]),
    (_rule(["get"], ["pods/attach"]), "kube-system", ["attach-pods"]),
    (_rule(["update"], ["pods/ephemeralcontainers"]), "kube-system", ["ephemeral-containers"]),
    (_rule(["create"], ["pods/exec"]), "team-a", []),
])
def test_exec_like_rules_in_privileged_namespaces(rule, namespace, reasons):
    assert risky.rule_risks(rule, cluster_wide=False, namespace=namespace) == reasons


@pytest.mark.parametrize(("rules", "cluster_wide", "risky_csr"), [
    ([_rule(["update"], ["certificatesigningrequests/approval"], [CERTS]),
      _rule(["approve"], ["signers"], [CERTS], names=["kubernetes.io/kube-apiserver-client"])],
     True, True),
    ([_rule(["*"], ["*"], [CERTS])], True, True),
    ([_rule(["update"], ["certificatesigningrequests/approval"], [CERTS])], True, False),
    ([_rule(["approve"], ["signers"], [CERTS])], True, False),
    ([_rule(["update"], ["certificatesigningrequests/approval"], [""]),
      _rule(["approve"], ["signers"], [CERTS])], True, False),
    ([_rule(["update"], ["certificatesigningrequests/approval"], [CERTS]),
      _rule(["approve"], ["signers"], [CERTS])], False, False),
])
def test_approving_csrs_needs_both_halves(rules, cluster_wide, risky_csr):
    reasons, shown = risky.role_risks(rules, cluster_wide=cluster_wide)
    assert ("approve-csrs" in reasons) is risky_csr
    if risky_csr:
        assert shown


def _crb(name, role, subjects, labels=None):
    return {"metadata": {"name": name, **({"labels": labels} if labels else {})},
            "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects}


def _rb(ns, name, kind, role, subjects):
    return {"metadata": {"name": name, "namespace": ns},
            "roleRef": {"kind": kind, "name": role}, "subjects": subjects}


def _sa(ns, name):
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def _user(name):
    return {"kind": "User", "name": name}


def _group(name):
    return {"kind": "Group", "name": name}


CLUSTER_ROLES = [
    {"metadata": {"name": "cluster-admin"}, "rules": [_rule(["*"], ["*"], ["*"]),
                                                      _rule(["*"], urls=["*"])]},
    {"metadata": {"name": "dns-reader"},
     "rules": [_rule(["list", "watch"], ["endpoints", "services", "pods", "namespaces"]),
               _rule(["list", "watch"], ["endpointslices"], ["discovery.k8s.io"])]},
    {"metadata": {"name": "edit"}, "rules": [_rule(["get", "list"], ["secrets"]),
                                             _rule(["impersonate"], ["serviceaccounts"])]},
    {"metadata": {"name": "system:controller:namespace-controller"},
     "rules": [_rule(["delete"], ["*"], ["*"])]},
    {"metadata": {"name": "system:kube-controller-manager"},
     "rules": [_rule(["create"], ["serviceaccounts/token"]),
               _rule(["get", "list"], ["secrets"])]},
    {"metadata": {"name": "system:kube-scheduler"}, "rules": [_rule(["get"], ["secrets"])]},
    {"metadata": {"name": "system:node-proxier"}, "rules": [_rule(["list"], ["secrets"])]},
    {"metadata": {"name": "token-minter"}, "rules": [_rule(["create"], ["serviceaccounts/token"])]},
]
ROLES = [{"metadata": {"name": "reader", "namespace": "prod"},
          "rules": [_rule(["get"], ["secrets"])]},
         {"metadata": {"name": "system:controller:token-cleaner", "namespace": "kube-system"},
          "rules": [_rule(["list", "delete"], ["secrets"])]}]
SA = _sa("ci", "deployer")
DEFAULT_ALLOWLIST: list[str] = []


def test_analyse_findings_and_bootstrap_trust():
    crbs = [
        _crb("cluster-admin", "cluster-admin", [_group("system:masters")]),
        _crb("system:controller:namespace-controller", "system:controller:namespace-controller",
             [_sa("kube-system", "namespace-controller")]),
        _crb("system:kube-controller-manager", "system:kube-controller-manager",
             [_user("system:kube-controller-manager")]),
        _crb("dns-peer", "dns-reader", [_user("dns")]),
        _crb("fc-rbac-evil", "cluster-admin", [SA]),
        _crb("open-door", "cluster-admin", [_group("system:authenticated")]),
        _crb("dangling", "does-not-exist", [_user("x")]),
    ]
    rbs = [_rb("prod", "readers", "Role", "reader", [{"kind": "ServiceAccount", "name": "app"}]),
           _rb("kube-system", "system:controller:token-cleaner", "Role",
               "system:controller:token-cleaner", [_sa("kube-system", "token-cleaner")])]
    findings = risky.analyse(CLUSTER_ROLES, ROLES, crbs, rbs, DEFAULT_ALLOWLIST)
    bad = {str(f.subject): f for f in findings if f.allowed_by is None}
    ok = {str(f.subject): f.allowed_by for f in findings if f.allowed_by}
    assert set(ok) == {"Group:system:masters", "ServiceAccount:kube-system/namespace-controller",
                       "User:system:kube-controller-manager",
                       "ServiceAccount:kube-system/token-cleaner"}
    assert ok["Group:system:masters"] == (
        "Kubernetes bootstrap binding (ClusterRoleBinding cluster-admin -> cluster-admin)")
    assert set(bad) == {"ServiceAccount:ci/deployer", "Group:system:authenticated",
                        "ServiceAccount:prod/app"}
    evil = bad["ServiceAccount:ci/deployer"]
    assert str(evil.binding) == "ClusterRoleBinding fc-rbac-evil"
    assert evil.role == "ClusterRole cluster-admin"
    assert evil.reasons[:2] == ["cluster-admin", "wildcard-verbs"]
    assert "verbs=[*] apiGroups=[*] resources=[*]" in evil.rules
    assert evil.render().startswith(
        "ServiceAccount:ci/deployer via ClusterRoleBinding fc-rbac-evil -> ClusterRole "
        "cluster-admin: cluster-admin, wildcard-verbs")
    assert bad["Group:system:authenticated"].reasons[:2] == ["broad-group", "cluster-admin"]
    # the namespaced SA subject takes the RoleBinding's namespace
    app = bad["ServiceAccount:prod/app"]
    assert app.reasons == ["read-secrets"]
    assert str(app.binding) == "RoleBinding prod/readers" and app.role == "Role prod/reader"
    legend = dict(risky.rules_legend(findings))
    assert "mint-serviceaccount-tokens" in legend and "broad-group" in legend


@pytest.mark.parametrize("allowlist_", [[], ["system:*", "cluster-admin"]])
def test_binding_named_like_bootstrap_grants_nothing_trusted(allowlist_):
    """A name anyone may choose is not trust: system:anything -> system:authenticated."""
    crbs = [_crb("system:anything", "cluster-admin", [_group("system:authenticated")])]
    [finding] = risky.analyse(CLUSTER_ROLES, [], crbs, [], allowlist_)
    assert finding.allowed_by is None
    assert finding.reasons[:2] == ["broad-group", "cluster-admin"]
    assert finding.render().startswith(
        "Group:system:authenticated via ClusterRoleBinding system:anything -> ClusterRole "
        "cluster-admin: broad-group, cluster-admin")


@pytest.mark.parametrize(("binding", "trusted"), [
    (_crb("cluster-admin", "cluster-admin", [_group("system:masters")]), True),
    # extra subject added to a bootstrap binding
    (_crb("cluster-admin", "cluster-admin", [_group("system:authenticated")]), False),
    (_crb("cluster-admin", "cluster-admin", [_user("mallory")]), False),
    (_crb("system:kube-controller-manager", "system:kube-controller-manager",
          [_user("system:kube-controller-manager")]), True),
    (_crb("system:kube-controller-manager", "cluster-admin",
          [_user("system:kube-controller-manager")]), False),  # other roleRef
    (_crb("system:kube-scheduler", "system:kube-scheduler", [_user("system:kube-scheduler")]),
     True),
    (_crb("system:kube-scheduler", "system:kube-scheduler", [_user("mallory")]), False),
    (_crb("system:node-proxier", "system:node-proxier", [_user("system:kube-proxy")]), True),
    (_crb("system:node-proxier", "system:node-proxier",
          [_sa("kube-system", "kube-proxy")]), False),
    (_crb("system:controller:namespace-controller", "system:controller:namespace-controller",
          [_sa("kube-system", "namespace-controller")]), True),
    (_crb("system:controller:namespace-controller", "system:controller:namespace-controller",
          [_sa("default", "namespace-controller")]), False),
    (_crb("system:controller:namespace-controller", "system:controller:namespace-controller",
          [_sa("kube-system", "other-controller")]), False),
    (_crb("system:controller:namespace-controller", "cluster-admin",
          [_sa("kube-system", "namespace-controller")]), False),
    (_crb("system:anything", "cluster-admin", [_group("system:masters")]), False),
])
def test_bootstrap_trust_is_by_exact_identity(binding, trusted):
    [finding] = risky.analyse(CLUSTER_ROLES, [], [binding], [], [])
    assert (finding.allowed_by is not None) is trusted
    if trusted:
        [finding] = risky.analyse(CLUSTER_ROLES, [], [binding], [], [], trust_bootstrap=False)
        assert finding.allowed_by is None


def test_bootstrap_rolebinding_only_in_its_namespace():
    rb = _rb("kube-system", "system:controller:token-cleaner", "Role",
             "system:controller:token-cleaner", [_sa("kube-system", "token-cleaner")])
    [finding] = risky.analyse([], ROLES, [], [rb], [])
    assert finding.allowed_by is not None
    roles = [{"metadata": {"name": "system:controller:token-cleaner", "namespace": "prod"},
              "rules": [_rule(["list"], ["secrets"])]}]
    rb = _rb("prod", "system:controller:token-cleaner", "Role",
             "system:controller:token-cleaner", [_sa("kube-system", "token-cleaner")])
    [finding] = risky.analyse([], roles, [], [rb], [])
    assert finding.allowed_by is None


def test_token_minting_in_kube_system_is_a_finding():
    roles = [{"metadata": {"name": "minter", "namespace": "kube-system"},
              "rules": [_rule(["create"], ["serviceaccounts/token"])]}]
    rbs = [_rb("kube-system", "minter", "Role", "minter",
               [{"kind": "ServiceAccount", "name": "bot"}])]
    [finding] = risky.analyse([], roles, [], rbs, [])
    assert finding.allowed_by is None
    assert finding.reasons == ["mint-serviceaccount-tokens"]
    assert finding.render() == (
        "ServiceAccount:kube-system/bot via RoleBinding kube-system/minter -> Role "
        "kube-system/minter: mint-serviceaccount-tokens "
        '[verbs=[create] apiGroups=[""] resources=[serviceaccounts/token]]')


@pytest.mark.parametrize(("entry", "allowed"), [
    ("ServiceAccount:ci/*", True), ("ServiceAccount:ci/deployer", True),
    ("ServiceAccount:ci/deployer via fc-rbac-evil", True),
    ("ServiceAccount:ci/deployer via ClusterRoleBinding fc-rbac-evil", True),
    ("ServiceAccount:ci/deployer via fc-rbac-*", True),
    ("ServiceAccount:ci/deployer via other", False),
    ("ServiceAccount:ci/deployer via ci/fc-rbac-evil", False),  # a RoleBinding of that name
    ("User:deployer", False), ("cluster-admin", False), ("system:*", False),
])
def test_allowlist_matches_identities(entry, allowed):
    crbs = [_crb("fc-rbac-evil", "cluster-admin", [SA])]
    [finding] = risky.analyse(CLUSTER_ROLES, [], crbs, [], [entry])
    assert (finding.allowed_by == entry) is allowed


@pytest.mark.parametrize("entry", ["ci/*", "fc-rbac-*", "fc-rbac-evil", "team-a/editor",
                                   "system:serviceaccount:ci:deployer", "Robot:x",
                                   "ServiceAccount:deployer", "User:x via a/b/c",
                                   "User:x via RoleBinding name-only"])
def test_allowlist_entries_without_identity_are_errors(entry):
    with pytest.raises(allowlist.AllowlistError) as info:
        allowlist.parse_entry(entry)
    assert repr(entry.strip()) in str(info.value)
    with pytest.raises(allowlist.AllowlistError, match=r"rbac\.risky_allowlist\[1\]: "):
        allowlist.parse(["User:ok", entry])


@pytest.mark.parametrize("group", ["system:authenticated", "system:unauthenticated",
                                   "system:serviceaccounts", "system:serviceaccounts:ci"])
def test_broad_groups_only_by_exact_entry(group):
    crbs = [_crb("open", "token-minter", [_group(group)])]
    for entries in ([], ["Group:system:*"], ["Group:*"], ["Group:system:auth*"]):
        [finding] = risky.analyse(CLUSTER_ROLES, [], crbs, [], entries)
        assert finding.allowed_by is None, entries
        assert finding.reasons == ["broad-group", "mint-serviceaccount-tokens"]
    [finding] = risky.analyse(CLUSTER_ROLES, [], crbs, [], [f"Group:{group}"])
    assert finding.allowed_by == f"Group:{group}"


def test_rolebinding_allowlisted_by_subject_and_namespace_slash_name():
    rbs = [_rb("team-a", "editor", "ClusterRole", "edit", [_user("ed")])]
    [finding] = risky.analyse(CLUSTER_ROLES, [], [], rbs, ["User:ed via team-a/editor"])
    assert finding.allowed_by == "User:ed via team-a/editor"
    assert finding.reasons == ["read-secrets", "impersonate"]
    for entry in ("User:ed via team-b/editor", "User:ed via RoleBinding team-b/editor",
                  "User:ed via editor", "User:other via team-a/editor"):
        [finding] = risky.analyse(CLUSTER_ROLES, [], [], rbs, [entry])
        assert finding.allowed_by is None, entry
    assert risky.allowlisted(finding, ["User:ed via RoleBinding team-a/editor"]) == \
        "User:ed via RoleBinding team-a/editor"


def test_not_risky_bindings_give_no_findings():
    crbs = [_crb("dns-peer", "dns-reader", [_user("dns")])]
    assert risky.analyse(CLUSTER_ROLES, [], crbs, [], []) == []


def test_render_rule():
    assert risky.render_rule(_rule(["get"], ["secrets"], names=["a", "b"])) == (
        'verbs=[get] apiGroups=[""] resources=[secrets] resourceNames=[a,b]')


def test_expectations_reject_a_binding_name_allowlist_entry_at_load_time():
    ok = {"defaults": {"rbac": {"risky_allowlist": ["system:*", "User:ed via team-a/editor"]}}}
    Expectations(ok)
    bad = {"contexts": [{"match": "x", "rbac": {"risky_allowlist": ["User:a", "team-a/e*"]}}]}
    with pytest.raises(ExpectationsError,
                       match=r"invalid at contexts\[0\]\.rbac\.risky_allowlist\[1\]: 'team-a/e\*'"
                             r" names no subject"):
        Expectations(bad)
    assert Expectations({}).for_context("x")["rbac"]["trust_bootstrap"] is True
    assert Expectations({}).for_context("x")["rbac"]["risky_allowlist"] == []


def test_rule_texts_survive_the_scrubber():
    """The legend is evidence: no rule text may look like a credential (``token: x``)."""
    from fleetcheck.core.scrub import Scrubber

    scrub = Scrubber()
    assert {k: scrub(v) for k, v in risky.RULES.items()} == risky.RULES
