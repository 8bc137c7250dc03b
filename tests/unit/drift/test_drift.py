"""consistency/drift as plain functions (named test_drift.py: a tests/test_consistency.py would
shadow suites/test_consistency.py when both are imported in one process): normalisation, JSON
paths, majority/reference comparison, Secret digests, the ``consistency`` section's parsing,
reading a cluster through a fake API client (paging, 403, unserved kinds), and the check
itself over fake clusters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleetcheck.drift import read as drift_read
from fleetcheck.drift import spec as drift
from fleetcheck.drift.spec import ABSENT, NO_OBJECT, Difference, SpecError


def cm(data: dict, **meta: Any) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": "ns", **meta}, "data": data}


# --- normalisation --------------------------------------------------------------------------

def test_normalise_drops_server_set_and_bookkeeping_fields() -> None:
    obj = cm({"a": "1"}, uid="u", resourceVersion="9", generation=3,
             creationTimestamp="2026-01-01T00:00:00Z", managedFields=[{"manager": "x"}],
             selfLink="/x", ownerReferences=[{"kind": "Foo"}],
             labels={"app": "web", "app.kubernetes.io/managed-by": "Helm",
                     "propagationpolicy.karmada.io/name": "p",
                     "resourcebinding.karmada.io/uid": "1"},
             annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}",
                          "work.karmada.io/name": "w", "meta.helm.sh/release-name": "r",
                          "team": "blue"})
    obj["status"] = {"x": 1}
    out = drift.normalise(obj)
    assert out == {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "app", "namespace": "ns", "labels": {"app": "web"},
                                "annotations": {"team": "blue"}},
                   "data": {"a": "1"}}
    assert "status" in obj and "uid" in obj["metadata"]  # the input is left alone


def test_normalise_empty_bookkeeping_maps_disappear() -> None:
    out = drift.normalise(cm({}, annotations={"kubectl.kubernetes.io/last-applied-configuration":
                                              "{}"}))
    assert "annotations" not in out["metadata"]


def test_normalise_service_drops_allocated_ips_and_ports() -> None:
    svc = {"kind": "Service", "metadata": {"name": "s"},
           "spec": {"type": "NodePort", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                    "ports": [{"port": 80, "nodePort": 31234}], "selector": {"a": "b"}}}
    assert drift.normalise(svc)["spec"] == {"type": "NodePort", "ports": [{"port": 80}],
                                            "selector": {"a": "b"}}


def test_normalise_serviceaccount_token_secrets() -> None:
    sa = {"kind": "ServiceAccount", "metadata": {"name": "default"},
          "secrets": [{"name": "default-token-abcde"}]}
    assert "secrets" not in drift.normalise(sa)


def test_secret_values_become_digests_never_values() -> None:
    a = {"kind": "Secret", "type": "Opaque", "metadata": {"name": "s"},
         "data": {"password": "aHVudGVyMg=="}, "stringData": {"x": "clear"}}
    b = json.loads(json.dumps(a))
    b["data"]["password"] = "c2VjcmV0"
    na, nb = drift.normalise(a), drift.normalise(b)
    assert "stringData" not in na
    assert na["data"]["password"].startswith("<digest ")
    assert na["data"]["password"] != nb["data"]["password"]
    assert drift.normalise(a) == na  # stable within the run
    text = json.dumps([na, nb])
    assert "aHVudGVyMg" not in text and "hunter2" not in text and "c2VjcmV0" not in text
    diffs = drift.compare({"a": {"s": na}, "b": {"s": nb}})
    assert "aHVudGVyMg" not in diffs[0].describe("a")


def test_deployment_template_bookkeeping() -> None:
    dep = {"kind": "Deployment", "metadata": {"name": "d", "annotations": {
        "deployment.kubernetes.io/revision": "4"}},
        "spec": {"template": {"metadata": {"creationTimestamp": None, "annotations": {
            "kubectl.kubernetes.io/restartedAt": "now"}}, "spec": {"containers": []}}}}
    assert drift.normalise(dep) == {"kind": "Deployment", "metadata": {"name": "d"},
                                    "spec": {"template": {"spec": {"containers": []}}}}


# --- paths ----------------------------------------------------------------------------------

def test_flatten_paths() -> None:
    flat = drift.flatten({"metadata": {"labels": {"app.kubernetes.io/name": "x"}},
                          "spec": {"containers": [{"name": "app", "image": "i:1"}],
                                   "args": ["a", "b"]},
                          "rules": [{"verbs": ["get"]}, {"verbs": ["list"]}],
                          "empty": {}})
    assert flat == {"empty": {}, "metadata.labels['app.kubernetes.io/name']": "x",
                    "rules[0].verbs": ["get"], "rules[1].verbs": ["list"],
                    "spec.args": ["a", "b"], "spec.containers[name=app].image": "i:1",
                    "spec.containers[name=app].name": "app"}


@pytest.mark.parametrize(("path", "patterns", "hit"), [
    ("data.color", ["data.color"], True),
    ("data.color.x", ["data.color"], True),
    ("data.colour", ["data.color"], False),
    ("data.colors", ["data.color"], False),
    ("metadata.labels['a/b']", ["metadata.labels"], True),
    ("spec.containers[name=app].image", ["spec.containers[*].image"], True),
    ("data.x", [], False),
])
def test_ignored(path: str, patterns: list[str], hit: bool) -> None:
    assert drift.ignored(path, patterns) is hit


# --- comparison -----------------------------------------------------------------------------

def fleet3(**changes: dict) -> dict[str, dict[str, dict]]:
    base = {"ConfigMap ns/app": drift.normalise(cm({"color": "red", "size": "1"}))}
    out = {c: json.loads(json.dumps(base)) for c in ("lab-a", "lab-b", "lab-c")}
    for cluster, data in changes.items():
        out[cluster]["ConfigMap ns/app"]["data"].update(data)
    return out


def test_identical_fleet_has_no_differences() -> None:
    assert drift.compare(fleet3()) == []


def test_majority_names_the_odd_cluster_with_both_values() -> None:
    diffs = drift.compare(fleet3(**{"lab-b": {"color": "blue"}}))
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.key, d.path, d.expected, d.basis) == ("ConfigMap ns/app", "data.color", "red",
                                                    "majority")
    assert d.deviants == ["lab-b"]
    assert drift.deviations(diffs, "lab-a") == []
    assert drift.deviations(diffs, "lab-b") == [d]
    assert d.describe("lab-b") == 'ConfigMap ns/app data.color: lab-b "blue" vs lab-a, lab-c "red"'
    rows = drift.table_rows(diffs, ["lab-a", "lab-b", "lab-c"])
    assert rows == [["ConfigMap ns/app", "data.color", '"red"', '"blue"', '"red"', "lab-b"]]


def test_added_field_is_absent_elsewhere() -> None:
    d = drift.compare(fleet3(**{"lab-c": {"extra": "x"}}))[0]
    assert d.path == "data.extra" and d.expected is ABSENT and d.deviants == ["lab-c"]
    assert d.describe("lab-c") == 'ConfigMap ns/app data.extra: lab-c "x" vs lab-a, lab-b (absent)'


def test_no_majority_fails_everyone_and_reference_decides() -> None:
    snaps = fleet3(**{"lab-b": {"color": "blue"}, "lab-c": {"color": "green"}})
    d = drift.compare(snaps)[0]
    assert d.expected is None and d.basis == "no majority"
    assert d.deviants == ["lab-a", "lab-b", "lab-c"]
    d = drift.compare(snaps, reference="lab-b")[0]
    assert d.expected == "blue" and d.deviants == ["lab-a", "lab-c"]
    two = {"a": {"k": {"v": 1}}, "b": {"k": {"v": 2}}}
    assert drift.compare(two)[0].deviants == ["a", "b"]


def test_missing_and_extra_objects_are_named() -> None:
    snaps = fleet3()
    del snaps["lab-c"]["ConfigMap ns/app"]
    snaps["lab-a"]["ConfigMap ns/only-a"] = {"data": {}}
    diffs = drift.compare(snaps)
    by_key = {d.key: d for d in diffs}
    missing, extra = by_key["ConfigMap ns/app"], by_key["ConfigMap ns/only-a"]
    assert missing.path == "" and missing.deviants == ["lab-c"]
    assert missing.describe("lab-c") == "ConfigMap ns/app: missing on lab-c (present on lab-a, lab-b)"
    assert extra.deviants == ["lab-a"]
    assert extra.describe("lab-a") == "ConfigMap ns/only-a: present on lab-a but missing on lab-b, lab-c"
    assert [d.key for d in drift.deviations(diffs, "lab-b")] == []
    rows = drift.table_rows([missing], ["lab-a", "lab-b", "lab-c"])
    assert rows == [["ConfigMap ns/app", "(object)", "(present)", "(present)", "(no object)",
                     "lab-c"]]


def test_fields_of_a_missing_object_compare_over_holders_only() -> None:
    snaps = fleet3(**{"lab-b": {"color": "blue"}})
    del snaps["lab-c"]["ConfigMap ns/app"]
    diffs = drift.compare(snaps)
    field = next(d for d in diffs if d.path)
    assert set(field.values) == {"lab-a", "lab-b"} and field.expected is None
    assert NO_OBJECT not in field.values.values()


def test_ignore_for_skips_paths() -> None:
    snaps = fleet3(**{"lab-b": {"color": "blue"}})
    assert drift.compare(snaps, ignore_for={"ConfigMap ns/app": ("data.color",)}) == []


def test_render_marks_and_long_values() -> None:
    assert drift.render(ABSENT) == "(absent)"
    assert drift.render("(absent)") == '"(absent)"'
    assert drift.render("x" * 500, 20).endswith("...") and len(drift.render("x" * 500, 20)) == 20
    d = Difference("k", "p", {"a": "(absent)", "b": ABSENT}, None)
    assert d.deviants == ["a", "b"]


# --- the section ------------------------------------------------------------------------------

def test_parse_full_section() -> None:
    config = drift.parse({
        "objects": [{"kind": "ClusterRole", "selector": "kubernetes.io/bootstrapping=rbac-defaults"},
                    {"kind": "Widget", "apiVersion": "example.com/v1", "namespace": "a",
                     "names": ["w"], "ignore": ["spec.x"]}],
        "facts": {"crds": True, "psa_namespaces": ["default"]},
        "ignore": ["metadata.annotations"], "reference": "lab-a", "clusters": ["lab-*"]})
    assert config and config.objects[0].api_version == "rbac.authorization.k8s.io/v1"
    assert config.objects[1].group_version == ("example.com", "v1")
    assert config.facts.crds and not config.facts.webhooks
    assert config.reference == "lab-a" and config.clusters == ("lab-*",)
    assert "Widget (example.com/v1) in namespace a named w" in config.objects[1].describe()
    assert not drift.parse({}) and not drift.parse(None)
    assert not drift.parse({"facts": {"crds": False}})


@pytest.mark.parametrize(("section", "message"), [
    ({"objects": [{"kind": "Widget"}]}, r"objects\[0\]: kind 'Widget' is not one .* apiVersion"),
    ({"objects": [{"kind": "ClusterRole", "namespace": "x"}]},
     r"objects\[0\]: ClusterRole is cluster-scoped; remove namespace 'x'"),
    ({"objects": [{"kind": "Secret", "namespace": "x"}]},
     r"objects\[0\]: comparing every Secret is refused"),
    ({"objects": [{"kind": "ConfigMap", "selector": "a=b,,c"}]},
     r"objects\[0\]\.selector: not a label selector"),
    ({"objects": [{"kind": "ConfigMap", "selector": "a in (x"}]},
     r"objects\[0\]\.selector: not a label selector"),
    ({"objects": [{"kind": "ConfigMap", "ignore": [".data"]}]},
     r"objects\[0\]\.ignore\[0\]: not a field path"),
    ({"ignore": ["$.x"]}, r"ignore\[0\]: not a field path"),
])
def test_parse_errors_name_the_entry(section: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        drift.parse(section)


@pytest.mark.parametrize("selector", ["a=b", "a==b,c!=d", "a", "!a", "k in (x, y),z notin (w)",
                                      "app.kubernetes.io/name=web", "a="])
def test_selectors_accepted(selector: str) -> None:
    drift.check_selector(selector)


# --- reading through a fake API client ----------------------------------------------------------

class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self._body = json.dumps(body).encode()

    def read(self) -> bytes:
        return self._body


class FakeClient:
    """Answers GETs from ``routes`` (path -> (status, body) or list of pages)."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, list]] = []

    def param_serialize(self, method: str, resource_path: str, query_params: list | None,
                        **_: Any) -> tuple:
        return method, resource_path, {}, None, list(query_params or [])

    def call_api(self, method: str, url: str, headers: Any, body: Any, post: list,
                 _request_timeout: Any = None) -> FakeResponse:
        self.calls.append((url, post))
        answer = self.routes.get(url, (404, {"message": "not found"}))
        if isinstance(answer, list):
            token = dict(post).get("continue", "")
            return FakeResponse(200, answer[int(token or 0)])
        return FakeResponse(*answer)


def page(items: list[dict], cont: str = "") -> dict:
    return {"items": items, "metadata": {"continue": cont}}


def test_read_cluster_objects_facts_and_paging() -> None:
    client = FakeClient({
        "/api/v1/namespaces/ns/configmaps": [page([cm({"a": "1"})], "1"),
                                             page([{**cm({"b": "2"}), "metadata": {
                                                 "name": "other", "namespace": "ns"}}])],
        "/apis/example.com/v1": (200, {"resources": [
            {"name": "widgets", "kind": "Widget", "namespaced": False},
            {"name": "widgets/status", "kind": "Widget", "namespaced": False}]}),
        "/apis/example.com/v1/widgets": (200, page([{"metadata": {"name": "w1"},
                                                     "spec": {"x": 1}}])),
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": (200, page([
            {"metadata": {"name": "widgets.example.com"},
             "spec": {"scope": "Cluster", "versions": [{"name": "v2", "served": False},
                                                       {"name": "v1", "served": True}]}}])),
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": (200, page([
            {"metadata": {"name": "vw"}, "webhooks": [
                {"name": "b.x", "rules": [{"operations": ["CREATE"]}], "failurePolicy": "Fail",
                 "clientConfig": {"caBundle": "Zm9v"}}]}])),
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": (200, page([])),
        "/api/v1/namespaces/default": (200, {"metadata": {"name": "default", "labels": {
            "pod-security.kubernetes.io/enforce": "baseline", "other": "x"}}}),
    })
    config = drift.parse({
        "objects": [{"kind": "ConfigMap", "namespace": "ns", "selector": "a=b"},
                    {"kind": "Widget", "apiVersion": "example.com/v1", "ignore": ["spec.y"]},
                    {"kind": "Gadget", "apiVersion": "example.com/v1"}],
        "facts": {"crds": True, "webhooks": True, "psa_namespaces": ["default", "gone"]},
        "ignore": ["data.z"]})
    snap = drift_read.read_cluster(client, config, (1, 1), "lab-a")
    assert sorted(snap.items) == [
        "CRD widgets.example.com", "ConfigMap ns/app", "ConfigMap ns/other",
        "Namespace default PodSecurity labels", "ValidatingWebhookConfiguration vw",
        "Widget w1"]
    assert snap.items["CRD widgets.example.com"] == {"scope": "Cluster",
                                                     "served versions": ["v1"]}
    assert snap.items["ValidatingWebhookConfiguration vw"] == {"webhooks": [
        {"name": "b.x", "rules": [{"operations": ["CREATE"]}], "failurePolicy": "Fail"}]}
    assert snap.items["Namespace default PodSecurity labels"] == {
        "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}
    assert snap.items["Widget w1"]["kind"] == "Widget"
    assert snap.ignore["Widget w1"] == ("spec.y", "data.z")
    assert snap.unserved == ["Gadget (example.com/v1)"]
    assert ("namespace gone", 0) in snap.counts
    first = client.calls[0][1]
    assert ("labelSelector", "a=b") in first and ("limit", 500) in first  # before encoding


def test_read_cluster_forbidden_and_errors() -> None:
    config = drift.parse({"objects": [{"kind": "ConfigMap", "namespace": "ns", "names": ["b"]}]})
    with pytest.raises(drift_read.Forbidden, match="forbidden to list ConfigMap"):
        drift_read.read_cluster(FakeClient({"/api/v1/namespaces/ns/configmaps": (
            403, {"message": "nope"})}), config, (1, 1), "x")
    with pytest.raises(drift_read.ReadError, match="HTTP 500 boom"):
        drift_read.read_cluster(FakeClient({"/api/v1/namespaces/ns/configmaps": (
            500, {"message": "boom"})}), config, (1, 1), "x")
    snap = drift_read.read_cluster(FakeClient({"/api/v1/namespaces/ns/configmaps": (
        200, page([cm({}), {**cm({}), "metadata": {"name": "b", "namespace": "ns"}}]))}),
        config, (1, 1), "x")
    assert list(snap.items) == ["ConfigMap ns/b"]


class RefusingClient(FakeClient):
    """Nothing listens: every request fails as urllib3 fails a refused connection."""

    def call_api(self, *_: Any, **__: Any) -> FakeResponse:
        import urllib3
        raise urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")


def test_read_cluster_failures_keep_their_sentences() -> None:
    """kube.api's failures become drift's two outcomes, with the sentences the check shows."""
    config = drift.parse({"objects": [{"kind": "ConfigMap", "namespace": "ns"}]})
    with pytest.raises(drift_read.ReadError) as failed:
        drift_read.read_cluster(RefusingClient({}), config, (1, 1), "x")
    assert str(failed.value) == ("GET /api/v1/namespaces/ns/configmaps: API server unreachable: "
                                 "connection refused")
    widgets = drift.parse({"objects": [{"kind": "Widget", "apiVersion": "example.com/v1"}]})
    with pytest.raises(drift_read.Forbidden) as refused:
        drift_read.read_cluster(FakeClient({"/apis/example.com/v1": (403, {"message": "no"})}),
                                widgets, (1, 1), "x")
    assert str(refused.value) == "forbidden to read API discovery of example.com/v1: no"
    with pytest.raises(drift_read.ReadError) as failed:
        drift_read.read_cluster(FakeClient({"/apis/example.com/v1": (503, {"message": "busy"})}),
                                widgets, (1, 1), "x")
    assert str(failed.value) == "API discovery of example.com/v1: HTTP 503 busy"
    psa = drift.parse({"facts": {"psa_namespaces": ["default"]}})
    with pytest.raises(drift_read.Forbidden) as refused:
        drift_read.read_cluster(FakeClient({"/api/v1/namespaces/default": (
            403, {"message": "nope"})}), psa, (1, 1), "x")
    assert str(refused.value) == "forbidden to get namespace default: nope"
    with pytest.raises(drift_read.ReadError) as failed:
        drift_read.read_cluster(FakeClient({CM_PATH: (200, [])}), config, (1, 1), "x")
    assert str(failed.value) == ("listing ConfigMap in namespace ns failed: HTTP 200 answered, "
                                 'but not as a Kubernetes API server: "[]"')


# --- the check itself, over fake clusters ------------------------------------------------------

def _load_suite() -> Any:
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[3] / "suites" / "test_consistency.py"
    spec = importlib.util.spec_from_file_location("fc_suite_consistency", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


SUITE = _load_suite()
CM_PATH = "/api/v1/namespaces/ns/configmaps"


class FakeTarget:
    def __init__(self, name: str, cluster: str, client: Any) -> None:
        self.name, self.cluster_id, self.api_client = name, cluster, client
        self.unreachable: str | None = None
        self.timeout = (1.0, 1.0)


class FakeFleet:
    def __init__(self, colors: dict[str, str | None], extra: dict[str, FakeTarget] | None = None,
                 forbidden: tuple[str, ...] = ()) -> None:
        import secrets
        self.run_id = "t" + secrets.token_hex(4)
        self.targets: dict[str, FakeTarget] = {}
        self.clusters: dict[str, list[str]] = {}
        for cluster, color in colors.items():
            items = [] if color is None else [cm({"color": color})]
            answer = (403, {"message": "no"}) if cluster in forbidden else (200, page(items))
            self.targets[cluster] = FakeTarget(cluster, cluster, FakeClient({CM_PATH: answer}))
            self.clusters[cluster] = [cluster]
        for name, target in (extra or {}).items():
            self.targets[name] = target
            self.clusters[target.cluster_id].insert(0, name)


def run_check(fleet: FakeFleet, context: str, section: dict | None = None) -> Any:
    from fleetcheck import CheckInfo, Evidence
    section = {"objects": [{"kind": "ConfigMap", "namespace": "ns"}]} if section is None else section
    evidence = Evidence()
    SUITE.test_drift(fleet.targets[context], fleet, CheckInfo("consistency/drift", context=context),
                     evidence, {"consistency": section})
    return evidence


def test_check_fails_only_the_drifted_cluster_with_the_fleet_table() -> None:
    from fleetcheck import NonConformant
    fleet = FakeFleet({"lab-a": "red", "lab-b": "blue", "lab-c": "red"})
    evidence = run_check(fleet, "lab-a")
    table = next(i for i in evidence if i.name.startswith("differences across the fleet"))
    assert 'data.color  "red"  "blue"  "red"  lab-b' in table.content
    with pytest.raises(NonConformant) as failed:
        run_check(fleet, "lab-b")
    message = str(failed.value)
    assert message.startswith("consistency/drift [lab-b]: expected ConfigMap in namespace ns on "
                              "lab-b as on the majority of lab-a, lab-b, lab-c")
    assert 'ConfigMap ns/app data.color: lab-b "blue" vs lab-a, lab-c "red"' in message


def test_check_reference_and_missing_object() -> None:
    from fleetcheck import NonConformant
    fleet = FakeFleet({"lab-a": "red", "lab-b": "blue", "lab-c": None})
    with pytest.raises(NonConformant, match="missing on lab-c"):
        run_check(fleet, "lab-c")
    with pytest.raises(NonConformant, match=r"no majority|lab-a \"red\" vs lab-b \"blue\""):
        run_check(fleet, "lab-a")
    section = {"objects": [{"kind": "ConfigMap", "namespace": "ns"}], "reference": "lab-b"}
    run_check(fleet, "lab-b", section)
    with pytest.raises(NonConformant, match=r"as on reference lab-b.*lab-a \"red\" vs lab-b"):
        run_check(fleet, "lab-a", section)


def test_check_skips_with_reasons() -> None:
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red"})
    with pytest.raises(pytest.skip.Exception, match="select nothing to compare"):
        run_check(fleet, "lab-a", {})
    with pytest.raises(pytest.skip.Exception, match="not among consistency.clusters"):
        run_check(fleet, "lab-a", {"objects": [{"kind": "ConfigMap"}], "clusters": ["prod-*"]})
    with pytest.raises(pytest.skip.Exception, match="fewer than 2 clusters"):
        run_check(fleet, "lab-a", {"objects": [{"kind": "ConfigMap"}], "clusters": ["lab-a"]})


def test_check_reads_through_a_capable_context_of_the_cluster_or_is_unknown() -> None:
    from fleetcheck import Unknown
    viewer = FakeTarget("viewer@lab-a", "lab-a",
                        FakeClient({CM_PATH: (403, {"message": "forbidden"})}))
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red"}, extra={"viewer@lab-a": viewer})
    evidence = run_check(fleet, "viewer@lab-a")
    read = next(i for i in evidence if i.name.startswith("clusters compared")).content
    assert "read through               lab-a  lab-b" in read  # the viewer being forbidden
    assert "ConfigMap in namespace ns  1      1" in read
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red"}, forbidden=("lab-a",))
    with pytest.raises(Unknown, match="cluster lab-a could not be read: no selected context "
                                      "may read it: lab-a: forbidden to list ConfigMap"):
        run_check(fleet, "lab-a")
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red"}, forbidden=("lab-b",))
    with pytest.raises(Unknown, match="only lab-a could be read"):
        run_check(fleet, "lab-a")
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red", "lab-c": "red"}, forbidden=("lab-c",))
    evidence = run_check(fleet, "lab-a")  # compared with lab-b; lab-c named as not read
    read = next(i for i in evidence if i.name.startswith("clusters compared")).content
    assert "NOT READ" in read and "forbidden to list ConfigMap" in read
    notes = next(i for i in evidence if i.name == "comparison").content
    assert "not compared: lab-c: no selected context may read it" in notes


def test_check_unknown_when_no_cluster_serves_the_kind() -> None:
    from fleetcheck import Unknown
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red"})
    with pytest.raises(Unknown, match=r"no compared cluster serves Gizmo \(example.com/v1\)"):
        run_check(fleet, "lab-a", {"objects": [{"kind": "Gizmo", "apiVersion": "example.com/v1"}]})


def test_a_cluster_not_serving_a_builtin_kind_lacks_its_objects() -> None:
    """A federation API server (Karmada) or a trimmed one may not serve a kind: its objects
    are missing there, the read does not fail."""
    from fleetcheck import NonConformant
    fleet = FakeFleet({"lab-a": "red", "lab-b": "red", "karmada": "red"})
    fleet.targets["karmada"].api_client = FakeClient({})  # 404 for everything
    run_check(fleet, "lab-a")
    with pytest.raises(NonConformant, match="ConfigMap ns/app: missing on karmada"):
        run_check(fleet, "karmada")
    snap = drift_read.snapshot(fleet, "karmada", drift.parse({"objects": [
        {"kind": "ConfigMap", "namespace": "ns"}], "facts": {"crds": True, "webhooks": True}}))
    assert snap.error is None and snap.unserved == ["ConfigMap in namespace ns"]
