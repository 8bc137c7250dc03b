"""The mesh suite without a cluster: detection, names, the data plane's manifests, what istiod
writes (shaped as Istio's source writes it), fingerprints and majorities, the echo's answers,
the expectations section, and (through pytester, with a tiny fake API server) the skip
reasons."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck import mesh
from fleetcheck.kube.api import Response
from fleetcheck.kube.traffic import Request
from fleetcheck.mesh import answers, dataplane, discover, istioparse
from fleetcheck.mesh import istio as meshistio
from fleetcheck.run.expectations import Expectations, ExpectationsError

# --- detection -------------------------------------------------------------------------------

BASE = ["apps", "batch", "policy", "networking.k8s.io"]


@pytest.mark.parametrize(("groups", "kind", "how"), [
    (BASE + ["networking.istio.io", "security.istio.io"], "istio",
     "API groups networking.istio.io, security.istio.io"),
    (BASE + ["security.istio.io"], "istio", "API group security.istio.io"),
    (BASE + ["linkerd.io", "multicluster.linkerd.io"], "linkerd",
     "API groups linkerd.io, multicluster.linkerd.io"),
    (BASE + ["cilium.io"], "cilium", "API group cilium.io"),
    (BASE + ["submariner.io", "multicluster.x-k8s.io"], "submariner", "API group submariner.io"),
    (BASE + ["multicluster.x-k8s.io"], "mcs", "API group multicluster.x-k8s.io"),
    (BASE + ["networking.istio.io", "multicluster.x-k8s.io"], "istio",
     "API group networking.istio.io"),
    (BASE, None, "it serves none of the API groups networking.istio.io"),
    (BASE + ["istio.example.com", "mesh.example.org"], None, "it serves none"),
])
def test_detection_by_api_group(groups: list[str], kind: str | None, how: str) -> None:
    found = discover.detect("lab-a", groups)
    assert found.key == kind
    assert found.how.startswith(how)


def test_detection_skip_reasons() -> None:
    none = discover.detect("lab-a", BASE)
    assert none.skip_reason() == (
        "no service mesh detected on lab-a (it serves none of the API groups "
        "networking.istio.io, security.istio.io, linkerd.io, multicluster.linkerd.io, "
        "cilium.io, submariner.io, multicluster.x-k8s.io)")
    linkerd = discover.detect("lab-b", BASE + ["linkerd.io"])
    assert linkerd.skip_reason() == ("Linkerd detected on lab-b (API group linkerd.io); "
                                     "fleetcheck has no Linkerd adapter yet")
    assert not linkerd.measurable
    assert discover.detect("x", ["multicluster.x-k8s.io"]).skip_reason() == (
        "Multi-Cluster Services API (MCS) detected on x (API group multicluster.x-k8s.io); "
        "fleetcheck has no Multi-Cluster Services API (MCS) adapter yet")
    istio = discover.detect("lab-c", BASE + ["networking.istio.io"])
    assert istio.measurable and istio.skip_reason() is None


def test_detection_override_and_off() -> None:
    assert discover.detect("a", BASE, "istio").key == "istio"
    assert discover.detect("a", BASE, "istio").how == "expectations mesh.type: istio"
    off = discover.detect("a", BASE + ["networking.istio.io"], "none")
    assert off.kind is None and off.off
    assert off.skip_reason() == ("mesh checks are turned off for a (expectations mesh.type: "
                                 "none)")
    forced = discover.detect("a", BASE + ["networking.istio.io"], "linkerd")
    assert forced.key == "linkerd" and "no Linkerd adapter" in (forced.skip_reason() or "")


def test_detection_cilium_needs_a_clustermesh() -> None:
    cni = discover.detect("a", BASE + ["cilium.io"], clustermesh=False)
    assert cni.kind is None
    assert "Cilium is the CNI, not a cluster mesh" in cni.how
    assert discover.detect("a", BASE + ["cilium.io"], clustermesh=True).key == "cilium"


def test_detection_by_namespace_only_without_discovery() -> None:
    found = discover.detect("a", [], namespaces=["default", "istio-system"])
    assert found.key == "istio" and "namespace istio-system" in found.how
    # with discovery, a namespace alone is no mesh
    assert discover.detect("a", BASE, namespaces=["istio-system"]).kind is None
    nothing = discover.detect("a", [], namespaces=["default"])
    assert nothing.kind is None and "none of the namespaces" in nothing.how
    assert discover.detect("a", []).how == "API discovery told nothing"


# --- names and manifests -----------------------------------------------------------------------


def test_short_ids_are_dns_labels_and_distinct() -> None:
    assert discover.short_id("lab-a") == "lab-a"
    eks = discover.short_id("arn:aws:eks:eu-west-1:123456789012:cluster/prod")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", eks) and len(eks) <= 40
    assert discover.short_id("Lab-A") != discover.short_id("lab-a")
    assert discover.short_id("echo") != "echo"  # would collide with the global service
    assert discover.short_id("away-x").startswith("away-x-")
    assert discover.only_service("lab-a") == "fc-mesh-lab-a"
    assert discover.away_service("lab-a") == "fc-mesh-away-lab-a"


def test_mesh_names() -> None:
    exp = Expectations().for_context("a")
    assert discover.mesh_name(exp, "istio", "fc-mesh-echo", "ns") == "fc-mesh-echo.ns.svc.cluster.local"
    assert discover.mesh_name(exp, "mcs", "s", "ns") == "s.ns.svc.clusterset.local"
    exp["dns"]["cluster_domain"] = "corp.internal"
    assert discover.mesh_name(exp, "istio", "s", "ns") == "s.ns.svc.corp.internal"
    exp["mesh"]["names"] = "{service}.{namespace}.global"
    assert discover.mesh_name(exp, "istio", "s", "ns") == "s.ns.global"


class _Probes:
    def __init__(self) -> None:
        self.images = {"busybox": "registry.example/busybox:1.36.1",
                       "curl": "registry.example/curl:8"}
        self.run_id = "fc-test"
        self.ttl_s = 600.0


def test_services_select_per_cluster_and_away() -> None:
    svcs = {s["metadata"]["name"]: s["spec"]["selector"]
            for s in dataplane.services("lab-b", ["lab-a", "lab-b", "lab-c"])}
    assert svcs["fc-mesh-echo"] == {"app": "fc-mesh-echo"}
    assert svcs["fc-mesh-lab-a"] == {"app": "fc-mesh-echo", discover.CLUSTER_LABEL: "lab-a"}
    assert svcs["fc-mesh-lab-b"] == {"app": "fc-mesh-echo", discover.CLUSTER_LABEL: "lab-b"}
    # away from lab-b, seen from lab-b: nothing here; away from lab-a: lab-b's echo counts
    assert svcs["fc-mesh-away-lab-b"] == {"app": "fc-mesh-echo", discover.NOWHERE_LABEL: "true"}
    assert svcs["fc-mesh-away-lab-a"] == {"app": "fc-mesh-echo"}
    assert len(svcs) == 7


def test_echo_and_probe_manifests_are_restricted() -> None:
    dep = dataplane.echo_deployment(_Probes(), "lab-a")  # type: ignore[arg-type]
    spec = dep["spec"]["template"]["spec"]
    assert "activeDeadlineSeconds" not in spec
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "fc-mesh-echo" and labels[discover.CLUSTER_LABEL] == "lab-a"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "fc-mesh-echo",
                                                      discover.CLUSTER_LABEL: "lab-a"}
    c = spec["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    assert {"name": "CLUSTER_NAME", "value": "lab-a"} in c["env"]
    assert "HTTP_X_FORWARDED_CLIENT_CERT" in c["command"][-1]
    pod = dataplane.probe_pod(_Probes())  # type: ignore[arg-type]
    assert pod["metadata"]["name"] == "fc-mesh-probe"
    assert pod["spec"]["containers"][0]["name"] == "curl"
    assert pod["spec"]["containers"][0]["image"] == "registry.example/curl:8"


def test_namespace_labels_inject_and_set_pod_security() -> None:
    exp = Expectations().for_context("a")
    assert dataplane.namespace_labels(meshistio.ADAPTER, exp) == {
        "istio-injection": "enabled", "pod-security.kubernetes.io/enforce": "restricted"}
    exp["mesh"]["pod_security"] = "privileged"
    exp["mesh"]["istio"]["injection_label"] = "istio.io/rev=canary"
    assert dataplane.namespace_labels(meshistio.ADAPTER, exp) == {
        "istio.io/rev": "canary", "pod-security.kubernetes.io/enforce": "privileged"}


# --- what istiod says ----------------------------------------------------------------------------

# debug/clusterz: json of []cluster.DebugInfo (pkg/cluster/debug.go), config cluster first
CLUSTERZ = json.loads(
    '[{"id":"lab-a","secretName":"","syncStatus":"synced"},'
    '{"id":"lab-b","secretName":"istio-system/istio-remote-secret-lab-b","syncStatus":"synced"},'
    '{"id":"lab-c","secretName":"istio-system/istio-remote-secret-lab-c",'
    '"syncStatus":"timeout"}]')


def test_parse_clusterz() -> None:
    clusters = istioparse.parse_clusterz(CLUSTERZ)
    assert [c.id for c in clusters] == ["lab-a", "lab-b", "lab-c"]
    assert istioparse.config_cluster(clusters) == istioparse.RemoteCluster("lab-a", "", "synced")
    assert clusters[1].synced and not clusters[2].synced
    assert clusters[2].describe() == (
        "lab-c [secret istio-system/istio-remote-secret-lab-c, timeout]")
    with pytest.raises(TypeError):
        istioparse.parse_clusterz({"id": "x"})


def _syncz_entry(proxy: str, acked: dict[str, str], error: str = "") -> dict[str, Any]:
    """One xds.SyncStatus as pilot/pkg/xds/debug.go writes it (json tags, omitempty)."""
    urls = {"CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "ECDS": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"}
    resources = {}
    for short, url in urls.items():
        sent = "nonce-" + short if short != "ECDS" else ""
        res = {"sentTime": "2026-01-01T00:00:00Z" if sent else "0001-01-01T00:00:00Z"}
        if sent:
            res["sent"] = sent
        if acked.get(short, sent):
            res["acked"] = acked.get(short, sent)
        if error and short == "RDS":
            res["lastError"] = error
        resources[url] = res
    return {"cluster_id": "lab-a", "proxy": proxy, "proxy_type": "sidecar",
            "istio_version": "1.31-dev", "cluster_sent": "nonce-CDS",
            "cluster_acked": acked.get("CDS", "nonce-CDS"), "listener_sent": "nonce-LDS",
            "listener_acked": "nonce-LDS", "resources": resources}


def test_parse_syncz_states_as_proxy_status() -> None:
    data = [_syncz_entry("fc-mesh-probe.ns", {}),
            _syncz_entry("fc-mesh-echo-1.ns", {"EDS": "nonce-old"}),
            _syncz_entry("bad.ns", {}, error="NACK: invalid route")]
    seen = istioparse.parse_syncz(data, "istiod-1")
    ok = seen["fc-mesh-probe.ns"]
    assert ok.types == {"CDS": "SYNCED", "LDS": "SYNCED", "EDS": "SYNCED", "RDS": "SYNCED",
                        "ECDS": "NOT SENT"}
    assert ok.problems() == [] and ok.istiod == "istiod-1"
    assert seen["fc-mesh-echo-1.ns"].problems() == ["EDS STALE"]
    assert seen["bad.ns"].problems() == ["RDS ERROR (NACK: invalid route)"]


def test_parse_syncz_legacy_fields() -> None:
    data = [{"proxy": "p.ns", "cluster_sent": "1", "cluster_acked": "1", "listener_sent": "2",
             "listener_acked": "1"}]
    sync = istioparse.parse_syncz(data)["p.ns"]
    assert sync.types == {"CDS": "SYNCED", "LDS": "STALE"}
    assert sync.problems() == ["LDS STALE", "EDS never requested", "RDS never requested"]
    assert istioparse.xds_status("", "") == "NOT SENT"


def _pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def test_fingerprints_of_a_bundle() -> None:
    a, b = b"\x30\x03certificate-a", b"\x30\x03certificate-b"
    fps = istioparse.fingerprints(_pem(a) + _pem(b))
    want = hashlib.sha256(a).hexdigest().upper()
    assert fps[0] == ":".join(want[i:i + 2] for i in range(0, 64, 2))
    assert len(fps) == 2 and fps[0] != fps[1]
    with pytest.raises(ValueError):
        istioparse.fingerprints("not a certificate")


def test_majority() -> None:
    assert istioparse.majority({"a": 1, "b": 1, "c": 2}) == (1, ["a", "b"])
    assert istioparse.majority({"a": 1, "b": 2}) == (None, [])
    assert istioparse.majority({"a": 1}) == (1, ["a"])
    assert istioparse.majority({"a": ("x",), "b": ("x",), "c": ("y",), "d": ("y",)}) == (None, [])


def _plane(name: str, root: str, mesh_id: str = "fleetcheck-lab",
           cluster: str | None = None) -> meshistio.ControlPlane:
    return meshistio.ControlPlane(name, "istio-system", [], [], {}, cluster or name, "env",
                                  mesh_id, "cluster.local", "lab-net", "", "", (root,))


def test_fleet_root_of_trust_and_names() -> None:
    from suites.test_mesh import _fleet_problems

    planes = {n: _plane(n, "AA") for n in ("lab-a", "lab-b")}
    planes["lab-c"] = _plane("lab-c", "CC")
    assert _fleet_problems("lab-a", planes) == []
    [problem] = _fleet_problems("lab-c", planes)
    assert problem == ("root of trust differs from the fleet's: lab-c has CC, lab-a, lab-b have "
                       "AA (mTLS between them fails)")
    two = {"lab-a": _plane("lab-a", "AA"), "lab-b": _plane("lab-b", "BB")}
    assert _fleet_problems("lab-a", two) == [
        ("no root of trust is shared by a majority of the Istio clusters: lab-a has AA; lab-b "
        "has BB")]
    dup = {"lab-a": _plane("lab-a", "AA", cluster="Kubernetes"),
           "lab-b": _plane("lab-b", "AA", cluster="Kubernetes"),
           "lab-c": _plane("lab-c", "AA", mesh_id="other")}
    assert _fleet_problems("lab-a", dup) == [
        ("Istio cluster name 'Kubernetes' (env) is also the name of lab-b: every cluster of a "
        "multi-cluster mesh needs a name of its own")]
    assert _fleet_problems("lab-c", dup) == [
        "mesh ID 'other' differs from 'fleetcheck-lab' of lab-a, lab-b"]


def test_mesh_config_and_injector_values() -> None:
    text = "trustDomain: cluster.local\ndefaultConfig:\n  meshId: fleetcheck-lab\n"
    assert istioparse.parse_mesh_config(text) == {"mesh_id": "fleetcheck-lab",
                                                 "trust_domain": "cluster.local"}
    assert istioparse.parse_mesh_config("") == {"mesh_id": "", "trust_domain": ""}
    values = json.dumps({"global": {"network": "lab-net",
                                    "multiCluster": {"clusterName": "lab-a"}}})
    assert istioparse.parse_injector_values(values) == {"network": "lab-net",
                                                       "cluster_name": "lab-a"}


def test_injector_webhooks_and_problems() -> None:
    configs = [{"metadata": {"name": "istio-sidecar-injector"}, "webhooks": [
        {"name": "rev.namespace.sidecar-injector.istio.io", "failurePolicy": "Fail",
         "clientConfig": {"service": {"namespace": "istio-system", "name": "istiod"},
                          "caBundle": "LS0t"}},
        {"name": "rev.object.sidecar-injector.istio.io",
         "clientConfig": {"service": {"namespace": "istio-system", "name": "istiod"}}}]},
        {"metadata": {"name": "other"}, "webhooks": [{"name": "x.example.com"}]}]
    rows = istioparse.injector_webhooks(configs)
    assert [r["ca_bundle"] for r in rows] == [True, False]
    plane = _plane("lab-a", "AA")
    plane.webhooks = rows
    assert plane.webhook_problems() == [
        ("MutatingWebhookConfiguration istio-sidecar-injector: webhook "
        "rev.object.sidecar-injector.istio.io has no caBundle (istiod has not patched it; the "
        "API server cannot verify the injector)")]
    plane.webhooks = []
    assert "sidecars are not injected" in plane.webhook_problems()[0]


def test_deployment_problems() -> None:
    plane = _plane("lab-a", "AA")
    assert plane.deployment_problems("app=istiod") == [
        "no istiod Deployment (app=istiod) in istio-system"]
    plane.deployments = [{"metadata": {"name": "istiod"}, "spec": {"replicas": 1},
                          "status": {"readyReplicas": 0, "conditions": [
                              {"type": "Available", "status": "False",
                               "reason": "MinimumReplicasUnavailable",
                               "message": "Deployment does not have minimum availability."}]}}]
    assert plane.deployment_problems("app=istiod") == [
        ("Deployment istio-system/istiod not Available (0/1 ready; MinimumReplicasUnavailable: "
        "Deployment does not have minimum availability.)")]


# --- the echo's answers ------------------------------------------------------------------------

XFCC = ('By=spiffe://cluster.local/ns/fleetcheck-r-mesh/sa/default;'
        'Hash=3c5f7e6d;Subject="";URI=spiffe://cluster.local/ns/fleetcheck-r-mesh/sa/default')


def test_parse_answer_and_xfcc() -> None:
    body = json.dumps({"cluster": "lab-b", "pod": "fc-mesh-echo-5d9", "podIP": "10.2.0.7",
                       "xfcc": XFCC})
    answer = answers.parse_answer(body + "\n")
    assert answer is not None and answer.cluster == "lab-b"
    assert answer.client_identity == "spiffe://cluster.local/ns/fleetcheck-r-mesh/sa/default"
    assert answer.server_identity == answer.client_identity
    assert answers.parse_answer("no healthy upstream") is None
    assert answers.parse_answer('{"other": 1}') is None
    two = answers.parse_xfcc('By=spiffe://a;URI=spiffe://x,By=spiffe://b;Subject="CN=a,O=b";'
                          'URI=spiffe://y;DNS=d1;DNS=d2')
    assert [e["URI"] for e in two] == ["spiffe://x", "spiffe://y"]
    assert two[1]["Subject"] == "CN=a,O=b" and two[1]["DNS"] == "d1"
    no_mtls = answers.parse_answer(json.dumps({"cluster": "lab-b", "pod": "p", "podIP": "",
                                            "xfcc": ""}))
    assert no_mtls is not None and no_mtls.client_identity is None


def test_batch_parsing_and_spread() -> None:
    ok = json.dumps({"cluster": "lab-a", "pod": "p", "podIP": "", "xfcc": ""})
    ok_b = json.dumps({"cluster": "lab-b", "pod": "q", "podIP": "", "xfcc": ""})
    out = (f"@@fc-req 1\n{ok}\n\n@@fc-status 200 0.004\n@@fc-rc 0\n"
           f"@@fc-req 2\n{ok_b}\n\n@@fc-status 200 0.010\n@@fc-rc 0\n"
           "@@fc-req 3\nno healthy upstream\n@@fc-status 503 0.001\n@@fc-rc 0\n"
           "@@fc-req 4\ncurl: (28) Operation timed out after 5000 milliseconds\n"
           "@@fc-status 000 5.0\n@@fc-rc 28\n")
    replies = answers.parse_batch(out)
    assert [r.status for r in replies] == [200, 200, 503, None]
    assert [r.ok for r in replies] == [True, True, False, False]
    assert replies[2].describe() == "HTTP 503 'no healthy upstream'"
    assert replies[3].describe().startswith("no answer (curl: (28) Operation timed out")
    counts = answers.spread(r.answer.cluster if r.ok and r.answer else None for r in replies)
    assert counts == {"(no answer)": 2, "lab-a": 1, "lab-b": 1}
    assert answers.spread_text({"lab-a": 15, "lab-b": 5}) == "lab-a: 15 (75%), lab-b: 5 (25%)"
    assert "seq 1 20" in answers.batch_script("http://x/", 20, 5)


def test_recovery() -> None:
    def r(start: float, ok: bool) -> Request:
        return Request(start, start + 0.05, ok, "lab-c" if ok else "")
    reqs = [r(0.0, True), r(1.0, True), r(2.1, False), r(2.4, False), r(2.8, True), r(3.0, True)]
    rto, failed = answers.recovery(reqs, 2.0)
    assert failed == 2 and rto == pytest.approx(0.45)
    assert answers.recovery([r(0, True), r(3, True)], 2.0) == (0.0, 0)
    assert answers.recovery([r(0, True), r(3, False)], 2.0) == (None, 1)


def test_sidecar_problem() -> None:
    from kubernetes import client as k8s

    def pod(containers: list[str], ready: bool | None = None) -> k8s.V1Pod:
        statuses = [] if ready is None else [k8s.V1ContainerStatus(
            name="istio-proxy", ready=ready, image="i", image_id="", restart_count=0,
            state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()))]
        return k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name=c)
                                                        for c in containers]),
                         status=k8s.V1PodStatus(container_statuses=statuses))
    assert "no istio-proxy sidecar was injected" in dataplane.sidecar_problem(pod(["curl"]),
                                                                         "istio-proxy")
    assert "running but not ready" in dataplane.sidecar_problem(pod(["curl", "istio-proxy"], False),
                                                            "istio-proxy")
    assert dataplane.sidecar_problem(pod(["curl", "istio-proxy"], True), "istio-proxy") is None


# --- expectations ---------------------------------------------------------------------------------


def test_mesh_expectations_defaults() -> None:
    m = Expectations().for_context("a")["mesh"]
    assert m["type"] == "auto" and m["requests"] == 20 and m["pod_security"] == "restricted"
    assert m["ready_timeout_s"] == 90.0 and m["istio"]["namespace"] == "istio-system"
    assert m["istio"]["istiod_selector"] == "app=istiod"
    merged = Expectations({"version": 1, "defaults": {"mesh": {"istio": {"namespace": "mesh"}}},
                           "contexts": [{"match": "lab-*", "mesh": {"pod_security": "privileged",
                                                                     "cluster_names": {
                                                                         "lab-a": "east"}}}]})
    lab = merged.for_context("lab-a")["mesh"]
    assert lab["istio"] == {"namespace": "mesh", "istiod_selector": "app=istiod",
                            "injection_label": "istio-injection=enabled"}
    assert lab["pod_security"] == "privileged" and lab["cluster_names"] == {"lab-a": "east"}


@pytest.mark.parametrize(("section", "message"), [
    ({"type": "kuma"}, r"defaults\.mesh\.type: 'kuma' is not one of \['auto', 'none', 'istio'"),
    ({"names": "{svc}.{namespace}"}, (r"defaults\.mesh\.names: '\{svc\}\.\{namespace\}' uses "
                                     r"\{svc\}; use \{service\}, \{namespace\}, "
                                     r"\{cluster_domain\}")),
    ({"names": "{service}.global"}, r"defaults\.mesh\.names: .* lacks \{namespace\}"),
    ({"names": "{service}.{namespace}.Svc_X"}, r"does not give a DNS name"),
    ({"names": "{service"}, r"is not a name pattern"),
    ({"requests": 1}, r"defaults\.mesh\.requests: 1 is less than the minimum of 2"),
    ({"pod_security": "open"}, r"defaults\.mesh\.pod_security: 'open' is not one of"),
    ({"ready_timeout_s": 0}, r"defaults\.mesh\.ready_timeout_s"),
    ({"istio": {"injection_label": "istio-injection"}}, r"defaults\.mesh\.istio\.injection_label"),
    ({"istio": {"namespace": "Istio System"}}, r"defaults\.mesh\.istio\.namespace"),
    ({"cluster_names": {"lab-a": ""}}, r"defaults\.mesh\.cluster_names\.lab-a"),
    ({"typo": 1}, r"defaults\.mesh: Additional properties are not allowed \('typo'"),
])
def test_bad_mesh_expectations_fail_at_configure_time(section: dict, message: str) -> None:
    with pytest.raises(ExpectationsError, match=message):
        Expectations({"version": 1, "defaults": {"mesh": section}})


def test_bad_mesh_names_in_a_contexts_entry() -> None:
    with pytest.raises(ExpectationsError, match=r"contexts\[1\]\.mesh\.names"):
        Expectations({"version": 1, "contexts": [
            {"match": "a", "mesh": {"names": "{service}.{namespace}.x"}},
            {"match": "b", "mesh": {"names": "x"}}]})


# --- skip reasons, end to end (pytester, a fake API server) ----------------------------------------


class _FakeApi(BaseHTTPRequestHandler):
    """Just enough of an API server for the preflight: /version, /readyz, /apis (the groups
    of ``GROUPS``), SelfSubjectReview; 404 for the rest."""

    GROUPS: ClassVar[dict[int, list[str]]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/version":
            self._send(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.1"})
        elif self.path.startswith("/readyz"):
            self._send(200, "ok")
        elif self.path == "/apis":
            self._send(200, {"kind": "APIGroupList", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}]}
                for g in self.GROUPS[port]]})
        else:
            self._send(404, {"kind": "Status", "code": 404, "message": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if "selfsubjectreviews" in self.path:
            self._send(201, {"apiVersion": "authentication.k8s.io/v1",
                             "kind": "SelfSubjectReview",
                             "status": {"userInfo": {"username": "tester", "groups": []}}})
        else:
            self._send(404, {"kind": "Status", "code": 404})


@pytest.fixture
def fake_fleet(isolated_pytester: pytest.Pytester) -> Iterator[Path]:
    """Three reachable fake clusters: lab-a serves no mesh group, lab-b Linkerd's, lab-c
    Karmada's (a federation control plane)."""
    groups = {"lab-a": BASE, "lab-b": BASE + ["linkerd.io", "multicluster.linkerd.io"],
              "lab-c": ["cluster.karmada.io", "policy.karmada.io", "work.karmada.io"]}
    servers = {}
    for name, served in groups.items():
        server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
        _FakeApi.GROUPS[server.server_address[1]] = served
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    config = kubeconfig_dict(list(groups))
    for cluster in config["clusters"]:
        name = cluster["name"].removesuffix("-cluster")
        cluster["cluster"]["server"] = f"http://127.0.0.1:{servers[name].server_address[1]}"
    path = isolated_pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_skip_reasons_without_a_measurable_mesh(isolated_pytester: pytest.Pytester,
                                                fake_fleet: Path) -> None:
    suite = Path(mesh.__file__).resolve().parents[3] / "suites" / "test_mesh.py"
    isolated_pytester.makepyfile(test_mesh=suite.read_text())
    result = isolated_pytester.runpytest("-p", "fleetcheck.plugin", f"--kubeconfig={fake_fleet}",
                                         "--contexts=lab-*", "-rs", "-q", "-p",
                                         "no:cacheprovider", "--concurrency=1")
    out = result.stdout.str()
    assert "no service mesh detected on lab-a (it serves none of the API groups " \
           "networking.istio.io" in out
    assert ("Linkerd detected on lab-b (API groups linkerd.io, multicluster.linkerd.io); "
            "fleetcheck has no Linkerd adapter yet") in out
    assert "lab-c is a Karmada federation control plane" in out
    assert "disruptive check: pass --allow-disruptive" in out
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") and not outcomes.get("passed") \
        and not outcomes.get("failed") and not outcomes.get("error"), out


# --- reading istiod (API answers faked) ---------------------------------------------------------


class _Target:
    name = "lab-a"
    api_client = object()
    timeout = (1.0, 1.0)


class _ProbeSet:
    target = _Target()


def _istiod_pod(name: str = "istiod-1", command: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "discovery", "image": "reg.example/pilot:1.31.0",
                                 "ports": [{"name": "http-monitoring", "containerPort": 15014}]}
    if command:
        container["command"] = command
    return {"metadata": {"name": name}, "spec": {"containers": [container]},
            "status": {"phase": "Running"}}


def test_istiod_debug_through_the_pod_proxy_else_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetcheck.kube.probes import ExecResult

    calls: list[str] = []

    def fake_request(api: Any, method: str, path: str, **_: Any) -> Response:
        calls.append(path)
        if path.endswith("/proxy/version"):
            return Response(200, "1.31-dev-eed52ebb-Clean")
        return Response(401, "")

    execs: list[list[str]] = []

    def fake_exec(self: Any, argv: list[str], timeout: float = 30, record: bool = True
                  ) -> ExecResult:
        execs.append(argv)
        assert (self.namespace, self.name, self.container) == ("istio-system", "istiod-1",
                                                               "discovery")
        return ExecResult(argv, 0, json.dumps(CLUSTERZ) + "\n", "", 0.1)

    monkeypatch.setattr(meshistio, "request", fake_request)
    monkeypatch.setattr(dataplane.MeshPod, "exec", fake_exec)
    istiod = meshistio.Istiod(_ProbeSet(), Expectations().for_context("lab-a"))  # type: ignore[arg-type]
    pod = _istiod_pod(command=["/usr/local/bin/pilot-discovery"])
    assert istiod.call(pod, "debug/clusterz") == CLUSTERZ
    assert calls == ["/api/v1/namespaces/istio-system/pods/istiod-1:15014/proxy/debug/clusterz"]
    assert execs == [["/usr/local/bin/pilot-discovery", "request", "GET", "debug/clusterz"]]
    assert istiod.access["istiod-1"] == "exec (pod proxy: HTTP 401)"
    istiod.call(pod, "debug/syncz?namespace=ns")  # the proxy is not asked again for /debug
    assert len(calls) == 1 and execs[-1][-1] == "debug/syncz?namespace=ns"
    assert istiod.version(pod) == "1.31-dev-eed52ebb-Clean"  # /version: the proxy answers


def test_istiod_unreadable_names_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetcheck import Unknown
    from fleetcheck.kube.probes import ExecResult

    monkeypatch.setattr(meshistio, "request", lambda *a, **k: Response(401, ""))

    def fake_exec(self: Any, argv: list[str], timeout: float = 30, record: bool = True
                  ) -> ExecResult:
        raise Unknown("cannot exec in probe pod istio-system/istiod-1 on lab-a: Forbidden")

    monkeypatch.setattr(dataplane.MeshPod, "exec", fake_exec)
    istiod = meshistio.Istiod(_ProbeSet(), Expectations().for_context("lab-a"))  # type: ignore[arg-type]
    with pytest.raises(Unknown, match=r"cannot read debug/clusterz from istiod pod "
                       r"istio-system/istiod-1: pod proxy: HTTP 401 istiod serves it only to "
                       r"local or workload-authenticated callers; exec: cannot exec.*Forbidden"):
        istiod.call(_istiod_pod(), "debug/clusterz")
    assert istiod.version(_istiod_pod()) == "1.31.0 (image tag)"


def test_read_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _pem(b"\x30\x03root")
    deployment = {"metadata": {"name": "istiod", "labels": {"app": "istiod"}},
                  "spec": {"replicas": 1, "template": {"spec": {"containers": [
                      {"name": "discovery", "image": "reg.example/pilot:1.31.0",
                       "env": [{"name": "CLUSTER_ID", "value": "lab-a"}]}]}}},
                  "status": {"readyReplicas": 1, "conditions": [
                      {"type": "Available", "status": "True"}]}}
    configmaps = {"istio": {"data": {"mesh": "defaultConfig:\n  meshId: fleetcheck-lab\n"
                                             "trustDomain: cluster.local\n"}},
                  "istio-sidecar-injector": {"data": {"values": json.dumps(
                      {"global": {"network": "lab-net"}})}},
                  "istio-ca-root-cert": {"data": {"root-cert.pem": root}}}
    fake = {
        "deployments": lambda self: [deployment],
        "webhook_configurations": lambda self: [],
        "configmap": lambda self, name: configmaps.get(name),
        "namespace_labels": lambda self: {},
        "pods": lambda self: [_istiod_pod()],
        "version": lambda self, pod: "1.31-dev",
    }
    for name, fn in fake.items():
        monkeypatch.setattr(meshistio.Istiod, name, fn)
    exp = Expectations().for_context("lab-a")
    cp = meshistio.read_control_plane(_ProbeSet(), exp)  # type: ignore[arg-type]
    assert (cp.cluster_name, cp.mesh_id, cp.trust_domain, cp.network) == (
        "lab-a", "fleetcheck-lab", "cluster.local", "lab-net")
    assert cp.network_source == "ConfigMap istio-sidecar-injector: values.global.network"
    assert cp.root_fingerprints == tuple(istioparse.fingerprints(root))
    assert cp.versions == {"istiod-1": "1.31-dev"}
    assert cp.deployment_problems("app=istiod") == []
    assert "sidecars are not injected" in cp.webhook_problems()[0]
    del configmaps["istio-ca-root-cert"]
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = []
    cp = meshistio.read_control_plane(_ProbeSet(), exp)  # type: ignore[arg-type]
    assert cp.root_fingerprints is None and cp.root_problem == (
        "ConfigMap istio-system/istio-ca-root-cert does not exist: istiod has not published a "
        "root certificate")
    assert (cp.cluster_name, cp.cluster_name_source) == ("Kubernetes",
                                                         "istiod's default (no CLUSTER_ID)")


def test_parse_shards_groups_addresses_by_istio_cluster() -> None:
    """``debug/endpointShardz`` as istiod writes it: host -> namespace -> Shards keyed
    ``<provider>/<cluster>``."""
    data = {"kubernetes.default.svc.cluster.local": {"default": {"Shards": {
        "Kubernetes/lab-a": [{"Addresses": ["10.200.1.10"], "EndpointPort": 6443}],
        "Kubernetes/lab-b": [{"Addresses": ["10.200.2.10"]}, {"Addresses": ["10.200.2.11"]}],
    }}}}
    shards = istioparse.parse_shards(data, "kubernetes.default.svc.cluster.local", "default")
    assert shards == {"lab-a": {"10.200.1.10"}, "lab-b": {"10.200.2.10", "10.200.2.11"}}
    assert istioparse.parse_shards(data, "other.svc.cluster.local", "default") == {}
    with pytest.raises(TypeError):
        istioparse.parse_shards([], "x", "y")


# --- a refused request is unknown, never a traceback -------------------------------------------


def test_echo_pods_forbidden_is_unknown() -> None:
    """Listing the echo's pods refused (HTTP 403): an ``unknown`` naming the permission, not
    a kubernetes ``ForbiddenException`` traceback."""
    from fleetcheck.core.verdicts import Unknown
    from kubernetes.client.exceptions import ApiException

    class Core:
        def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
            exc = ApiException(status=403, reason="Forbidden")
            exc.body = json.dumps({"kind": "Status", "code": 403, "message": (
                'pods is forbidden: User "auditor" cannot list resource "pods" in API group "" '
                f'in the namespace "{namespace}"')})
            raise exc

    class Probes:
        core = Core()
        target = _Target()

    with pytest.raises(Unknown) as raised:
        dataplane.echo_pods(Probes(), "fc-mesh")
    assert raised.value.reason.startswith(
        "the identity of context lab-a is not permitted to list pods (core API group) in "
        "namespace fc-mesh (HTTP 403: ")
    assert 'cannot list resource "pods"' in raised.value.reason
