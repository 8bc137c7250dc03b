"""API discovery (fleetcheck.rbac.discovery) on plain documents: which expectations tuples
name something the server does not serve."""

from __future__ import annotations

import pytest
from fleetcheck.rbac import discovery
from fleetcheck.rbac.access import Access

CORE_V1 = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "pods"}, {"name": "pods/exec"}, {"name": "pods/log"}, {"name": "secrets"},
    {"name": "serviceaccounts"}, {"name": "serviceaccounts/token"}, {"name": "nodes"},
    {"name": "nodes/proxy"}, {"name": "namespaces"}]}
APPS_V1 = {"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
    {"name": "deployments"}, {"name": "deployments/scale"}]}
AGG_CORE = {"kind": "APIGroupDiscoveryList", "items": [{"metadata": {}, "versions": [
    {"version": "v1", "resources": [
        {"resource": "pods", "subresources": [{"subresource": "exec"}, {"subresource": "log"}]},
        {"resource": "secrets"}, {"resource": "nodes", "subresources": [{"subresource": "proxy"}]},
        {"resource": "serviceaccounts", "subresources": [{"subresource": "token"}]},
        {"resource": "namespaces"}]}]}]}
AGG_APIS = {"kind": "APIGroupDiscoveryList", "items": [
    {"metadata": {"name": "apps"}, "versions": [{"version": "v1", "resources": [
        {"resource": "deployments", "subresources": [{"subresource": "scale"}]}]}]},
    {"metadata": {"name": "example.com"}, "versions": [{"version": "v1", "resources": [
        {"resource": "widgets"}]}]}]}


def _legacy() -> discovery.Served:
    served = discovery.Served()
    discovery.add_resource_list(served, "", CORE_V1)
    discovery.add_resource_list(served, "apps", APPS_V1)
    discovery.add_resource_list(served, "example.com", {"resources": [{"name": "widgets"}]})
    return served


@pytest.fixture(params=["legacy", "aggregated"])
def served(request) -> discovery.Served:
    if request.param == "legacy":
        return _legacy()
    return discovery.from_aggregated(AGG_CORE, AGG_APIS)


@pytest.mark.parametrize(("entry", "problem"), [
    ({"verb": "get", "resource": "pods"}, None),
    ({"verb": "create", "resource": "pods/exec"}, None),
    ({"verb": "create", "resource": "serviceaccounts/token"}, None),
    ({"verb": "list", "resource": "deployments"}, None),
    ({"verb": "list", "resource": "deployments.apps"}, None),
    ({"verb": "get", "resource": "*"}, None),
    ({"verb": "get", "resource": "pods", "subresource": "*"}, None),
    ({"verb": "get", "resource": "widgets.example.com"}, None),
    ({"verb": "get", "resource": "podz"}, ("resource 'podz' is not served", "")),
    ({"verb": "get", "resource": "pods/execc"},
     ("subresource 'execc' of 'pods' is not served", "its subresources: exec, log")),
    ({"verb": "get", "resource": "widgets"},
     ("resource 'widgets' is not served",
      "it is served in API group example.com: write 'widgets.example.com'")),
    ({"verb": "get", "resource": "deployments", "group": "extensions"},
     ("API group 'extensions' (of 'deployments.extensions') is not served", "")),
    ({"verb": "get", "resource": "pods", "group": "apps"},
     ("resource 'pods' of API group 'apps' is not served",
      "it is served in the core group: write 'pods'")),
    ({"verb": "get", "resource": "podz", "group": "*"},
     ("resource 'podz' is not served in any API group", "")),
])
def test_problem(served, entry, problem):
    assert served.problem(Access.parse(entry)) == problem


@pytest.mark.parametrize("entry", [
    {"verb": "impersonate", "resource": "users"},
    {"verb": "impersonate", "resource": "groups"},
    {"verb": "impersonate", "resource": "serviceaccounts", "namespace": "a"},
    {"verb": "impersonate", "resource": "uids.authentication.k8s.io"},
    {"verb": "impersonate", "resource": "userextras.authentication.k8s.io/scopes"},
    {"verb": "approve", "resource": "signers.certificates.k8s.io"},
    {"verb": "get", "resource": "nodes/metrics"},
    {"verb": "get", "resource": "nodes/stats"},
])
def test_authorization_only_resources_are_never_called_unserved(served, entry):
    """Resources that exist only for authorization (impersonation, CSR signers, the kubelet
    API's node subresources) are not in discovery, yet are real RBAC questions."""
    assert served.problem(Access.parse(entry)) is None


def test_unavailable_group_is_never_judged():
    served = _legacy()
    served.unavailable.add("metrics.k8s.io")
    assert served.problem(Access.parse({"verb": "get", "resource": "podz.metrics.k8s.io"})) is None


def test_entry_problems_name_the_entry_and_server():
    served = _legacy()
    accesses = [Access.parse(e) for e in (
        {"verb": "get", "resource": "pods"}, {"verb": "get", "resource": "podz"},
        {"verb": "get", "resource": "pods/logs"})]
    assert discovery.entry_problems(served, accesses, "deny", "https://10.0.0.1:6443") == [
        ("expectations rbac.deny[1]: resource 'podz' is not served by "
         "https://10.0.0.1:6443 (API discovery); fix the expectations file"),
        ("expectations rbac.deny[2]: subresource 'logs' of 'pods' is not served by "
         "https://10.0.0.1:6443 (API discovery); its subresources: exec, log; fix the "
         "expectations file")]
