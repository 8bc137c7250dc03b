"""scripts/failover without a cluster: arguments, errors, placement logic, rendering."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import urllib3
from fleetcheck.cli import failover as fo
from fleetcheck.federation import karmada
from fleetcheck.federation import placement as placement_mod
from fleetcheck.kube.api import ApiError, request
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[3]
TOKEN = "s3cr3t-failover-token-0123456789"


#: what a member Cluster's status lists of its APIs (Karmada's APIEnablement filter reads it)
API_ENABLEMENTS = [{"groupVersion": "v1", "resources": [{"name": "configmaps", "kind": "ConfigMap"},
                                                       {"name": "services", "kind": "Service"}]},
                   {"groupVersion": "apps/v1",
                    "resources": [{"name": "deployments", "kind": "Deployment"},
                                  {"name": "statefulsets", "kind": "StatefulSet"}]}]


def cluster(name: str, ready: str = "True", taints: list | None = None,
            labels: dict | None = None, **spec: Any) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "7"},
            "spec": {"apiEndpoint": f"https://{name}.invalid:6443", "syncMode": "Push",
                     "taints": taints or [], **spec},
            "status": {"kubernetesVersion": "v1.34.4", "apiEnablements": API_ENABLEMENTS,
                       "conditions": [{"type": "Ready", "status": ready,
                                       "reason": "" if ready == "True" else "ClusterNotReachable",
                                       "message": ""}]}}


def binding(ns: str, kind: str, name: str, clusters: list, affinity: list | None = None,
            policy: str = "pp", divided: bool = False, tolerations: list | None = None,
            evicting: list | None = None) -> dict:
    placement: dict[str, Any] = {"replicaScheduling": {
        "replicaSchedulingType": "Divided" if divided else "Duplicated"}}
    if affinity is not None:
        placement["clusterAffinity"] = {"clusterNames": affinity}
    if tolerations:
        placement["clusterTolerations"] = tolerations
    return {"metadata": {"name": f"{name}-{kind.lower()}", "namespace": ns,
                         "annotations": {karmada.PP_NAME_ANNOTATION: policy,
                                         karmada.PP_NAMESPACE_ANNOTATION: ns}},
            "spec": {"resource": {"apiVersion": "v1" if kind in ("ConfigMap", "Service")
                                  else "apps/v1", "kind": kind, "name": name, "namespace": ns},
                     "replicas": 3,
                     "clusters": [{"name": c, "replicas": r} if isinstance(c, str) and r
                                  else {"name": c} for c, r in clusters],
                     "placement": placement,
                     "gracefulEvictionTasks": [{"fromCluster": e} for e in evicting or []]},
            "status": {"conditions": [{"type": "Scheduled", "status": "True"}],
                       "aggregatedStatus": [{"clusterName": c, "applied": True,
                                             "health": "Healthy"} for c, _ in clusters]}}


CLUSTERS = [cluster("lab-a"), cluster("lab-b"), cluster("lab-c")]


# --- arguments ------------------------------------------------------------------------------

def test_help_runs_on_its_own() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "failover"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for verb in ("status", "drain", "uncordon", "switch"):
        assert verb in proc.stdout
    assert "Exit codes" in proc.stdout


def test_parser_verbs_and_defaults() -> None:
    parser = fo.build_parser()
    args = parser.parse_args(["drain", "lab-a", "--dry-run", "--context", "karmada"])
    assert (args.command, args.cluster, args.dry_run, args.timeout) == ("drain", "lab-a", True,
                                                                      120.0)
    args = parser.parse_args(["switch", "ns/deployment/web", "--to", "lab-c", "-o", "json"])
    assert (args.workload, args.to, args.force, args.output) == ("ns/deployment/web", "lab-c",
                                                                 False, "json")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["switch", "ns/deployment/web"])  # --to is required
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args([])


@pytest.mark.parametrize("text, expected", [
    ("shop/deployment/web", placement_mod.Workload("shop", "deployment", "web")),
    ("shop/Deployment/web", placement_mod.Workload("shop", "deployment", "web")),
    ("shop/deploy/web", placement_mod.Workload("shop", "deployment", "web")),
    ("shop/deployments.apps/web", placement_mod.Workload("shop", "deployment", "web")),
    ("clusterrole/view", placement_mod.Workload("", "clusterrole", "view")),
])
def test_parse_workload(text: str, expected: placement_mod.Workload) -> None:
    assert fo.parse_workload(text) == expected


@pytest.mark.parametrize("text", ["web", "a/b/c/d", "shop//web", "shop/deployment/"])
def test_parse_workload_rejects(text: str) -> None:
    with pytest.raises(fo.FailoverError, match="NAMESPACE/KIND/NAME"):
        fo.parse_workload(text)


# --- placement logic --------------------------------------------------------------------------

def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert placement_mod.tolerated(taint, [{"key": "k", "operator": "Exists"}])
    assert placement_mod.tolerated(taint, [{"key": "k", "value": "v", "effect": "NoExecute"}])
    assert placement_mod.tolerated(taint, [{"operator": "Exists"}])
    assert not placement_mod.tolerated(taint, [{"key": "k", "value": "x"}])
    assert not placement_mod.tolerated(taint, [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])
    assert not placement_mod.tolerated(taint, [])


def test_candidates_need_ready_untainted_and_allowed() -> None:
    clusters = [cluster("lab-a"), cluster("lab-b", ready="False"),
                cluster("lab-c", taints=[{"key": "x", "effect": "NoSchedule"}]),
                cluster("lab-d", taints=[{"key": "y", "effect": "PreferNoSchedule"}]),
                cluster("lab-e")]
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    assert placement_mod.candidates(rb, clusters, "lab-a") == ["lab-d", "lab-e"]
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)], affinity=["lab-a", "lab-b", "lab-c"])
    assert placement_mod.candidates(rb, clusters, "lab-a") == []
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)], affinity=["lab-a", "lab-c"],
                 tolerations=[{"key": "x", "operator": "Exists"}])
    assert placement_mod.candidates(rb, clusters, "lab-a") == ["lab-c"]


def test_placement_label_selector_and_affinity_groups() -> None:
    east = cluster("east", labels={"region": "east"})
    west = cluster("west", labels={"region": "west"})
    placement = {"clusterAffinity": {"labelSelector": {"matchLabels": {"region": "east"}}}}
    assert placement_mod.placement_allows(placement, east) and not placement_mod.placement_allows(placement, west)
    placement = {"clusterAffinity": {"labelSelector": {"matchExpressions": [
        {"key": "region", "operator": "NotIn", "values": ["east"]}]}, "exclude": ["west"]}}
    assert not placement_mod.placement_allows(placement, east)
    assert not placement_mod.placement_allows(placement, west)
    placement = {"clusterAffinities": [{"affinityName": "a", "clusterNames": ["east"]},
                                       {"affinityName": "b", "clusterNames": ["west"]}]}
    assert placement_mod.placement_allows(placement, east) and placement_mod.placement_allows(placement, west)


def test_drain_plan_moves_stuck_staying() -> None:
    bindings = [
        binding("ns", "Deployment", "free", [("lab-a", 0)]),
        binding("ns", "Deployment", "pinned", [("lab-a", 0)], affinity=["lab-a"]),
        binding("ns", "Deployment", "tolerant", [("lab-a", 0)],
                tolerations=[{"key": fo.DRAIN_TAINT["key"], "operator": "Exists"}]),
        binding("ns", "Deployment", "elsewhere", [("lab-b", 0)]),
    ]
    plan = fo.drain_plan("lab-a", CLUSTERS, bindings)
    assert [m["workload"] for m in plan["moves"]] == ["ns/deployment/free"]
    assert plan["moves"][0]["candidates"] == ["lab-b", "lab-c"]
    assert [m["workload"] for m in plan["stuck"]] == ["ns/deployment/pinned"]
    assert [m["workload"] for m in plan["staying"]] == ["ns/deployment/tolerant"]
    text = fo.refusal_stuck(plan)
    assert "ns/deployment/pinned (on lab-a)" in text and "Nothing changed" in text


def test_switch_refusal_by_policy_shape() -> None:
    assert fo.switch_refusal({"spec": {"placement": {"clusterAffinity": {}}}}, "c") is None
    assert "clusterAffinities" in fo.switch_refusal(
        {"spec": {"placement": {"clusterAffinities": [{"affinityName": "x"}]}}}, "c")
    assert "at least 2 clusters" in fo.switch_refusal({"spec": {"placement": {
        "spreadConstraints": [{"spreadByField": "cluster", "minGroups": 2}]}}}, "c")


def test_available_and_member_available() -> None:
    rb = binding("ns", "Deployment", "web", [("lab-c", 0)])
    assert fo.available(rb, "lab-c")
    assert not fo.available(rb, "lab-a")
    rb["status"]["aggregatedStatus"][0]["health"] = "Unhealthy"
    assert not fo.available(rb, "lab-c")
    deploy = {"metadata": {"generation": 2}, "spec": {"replicas": 2},
              "status": {"observedGeneration": 2, "availableReplicas": 2}}
    assert fo.member_available(deploy)
    deploy["status"]["availableReplicas"] = 1
    assert not fo.member_available(deploy)
    assert not fo.member_available(None)


# --- rendering ---------------------------------------------------------------------------------

def status_data() -> dict:
    clusters = [cluster("lab-a"), cluster("lab-b", ready="False",
                                          taints=[{"key": "cluster.karmada.io/not-ready",
                                                   "effect": "NoExecute"}])]
    bindings = [binding("shop", "Deployment", "web", [("lab-a", 2), ("lab-c", 1)], divided=True),
                binding("shop", "ConfigMap", "cfg", [("lab-a", 0)], evicting=["lab-b"])]
    return {"context": "karmada", "clusters": [karmada.cluster_row(c) for c in clusters],
            "workloads": sorted((placement_mod.workload_row(b) for b in bindings),
                                key=lambda w: w["workload"])}


def test_render_status_table() -> None:
    text = fo.render_status(status_data())
    lines = text.splitlines()
    assert lines[0] == "Karmada context karmada: 2 member clusters"
    assert any(line.startswith("lab-b") and "False (ClusterNotReachable)" in line
               and "cluster.karmada.io/not-ready:NoExecute" in line for line in lines)
    assert any(line.startswith("shop/deployment/web") and "lab-a(2), lab-c(1)" in line
               and "shop/pp" in line for line in lines)
    assert any(line.startswith("shop/configmap/cfg") and "evicting from lab-b" in line
               for line in lines)
    # columns line up: every row of the clusters table is as wide as its header's columns
    header = next(line for line in lines if line.startswith("CLUSTER"))
    assert header.index("READY") == next(
        line for line in lines if line.startswith("lab-a")).index("True")


def test_status_json_is_plain_data() -> None:
    data = json.loads(json.dumps(status_data()))
    web = next(w for w in data["workloads"] if w["workload"] == "shop/deployment/web")
    assert web["divided"] is True
    assert web["clusters"] == [
        {"name": "lab-a", "replicas": 2, "applied": True, "health": "Healthy"},
        {"name": "lab-c", "replicas": 1, "applied": True, "health": "Healthy"}]
    assert web["policy_kind"] == "PropagationPolicy"


def test_render_plan_and_moved() -> None:
    plan = fo.drain_plan("lab-a", CLUSTERS,
                         [binding("ns", "Deployment", "web", [("lab-a", 0)], affinity=["lab-a",
                                                                                     "lab-b"])])
    text = fo.render_plan(plan, dry_run=True)
    assert "dry run: draining lab-a would move 1 workload(s)" in text
    assert "ns/deployment/web" in text and "lab-b" in text and "nothing changed" in text
    moved = fo.render_moved({"cluster": "lab-a", "seconds": 12.34, "moved": [
        {"workload": "ns/deployment/web", "from": ["lab-a"], "to": ["lab-b"]}]})
    assert moved.splitlines()[0] == "drained lab-a in 12.3s"
    assert "ns/deployment/web  lab-a  lab-b" in moved


# --- errors without a cluster -----------------------------------------------------------------

def kubeconfig(tmp_path: Path, server: str = "https://127.0.0.1:1") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "k",
        "clusters": [{"name": "k", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}]}))
    return path


def test_unknown_context_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = fo.main(["status", "--kubeconfig", str(kubeconfig(tmp_path)), "--context", "nope"])
    err = capsys.readouterr().err
    assert code == 2
    assert "context 'nope' does not exist" in err and "contexts: k" in err


def test_missing_kubeconfig_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert fo.main(["status", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "failover status: error:" in capsys.readouterr().err


def test_unreachable_api_exits_3_without_credentials(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code = fo.main(["status", "--kubeconfig", str(kubeconfig(tmp_path)),
                    "--connect-timeout", "1", "--request-timeout", "2"])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "unreachable" in err and "127.0.0.1:1" in err
    assert TOKEN not in out + err


# --- verbs against a fake Karmada API -------------------------------------------------------

class FakeResponse:
    """What a kubernetes ``ApiClient.call_api`` returns: status, body, headers."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        text = isinstance(body, str)
        self.headers = {"Content-Type": "text/html" if text and body.startswith("<")
                        else "text/plain" if text else "application/json"}
        self._body = (body if text else json.dumps(body)).encode()

    def read(self) -> bytes:
        return self._body


class FakeClient:
    """A kubernetes ``ApiClient`` as kube.api uses it: every request is answered ``answer``
    (status, body), or raises it (what urllib3 or the REST layer raise instead of an answer)."""

    def __init__(self, answer: tuple[int, Any] | BaseException) -> None:
        self.answer = answer

    def param_serialize(self, method: str, resource_path: str, **_: Any) -> tuple:
        return method, resource_path, {}, None, []

    def call_api(self, *args: Any, **kwargs: Any) -> FakeResponse:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return FakeResponse(*self.answer)


def no_answer(exc: BaseException, what: str = "list member Clusters") -> ApiError:
    """The :class:`ApiError` kube.api raises when a request gets ``exc`` instead of an answer."""
    with pytest.raises(ApiError) as raised:
        request(FakeClient(exc), "GET", karmada.CLUSTERS, timeout=1, what=what)
    return raised.value


class FakeApi:
    """Enough of kube.api's Api for the verbs: clusters, bindings, policies; records changes."""

    def __init__(self, clusters: list[dict], bindings: list[dict],
                 policies: dict[str, dict] | None = None) -> None:
        self.clusters = {c["metadata"]["name"]: c for c in clusters}
        self.bindings = bindings
        self.policies = policies or {}
        self.patches: list[tuple[str, dict]] = []
        self.context = "karmada"

    def list(self, path: str, **_: Any) -> list:
        if path == karmada.CLUSTERS:
            return list(self.clusters.values())
        if path.endswith("/clusterresourcebindings"):
            return []
        return self.bindings

    def get(self, path: str, what: str | None = None, *, missing_ok: bool = False) -> Any:
        if path.startswith(karmada.CLUSTERS + "/"):
            return self.clusters[path.rsplit("/", 1)[1]]
        if path in self.policies:
            return self.policies[path]
        if missing_ok:
            return None
        raise ApiError(what or path, "missing", 404, "not found")

    def merge_patch(self, path: str, patch: dict, what: str = "") -> Any:
        self.patches.append((path, patch))
        return {}


def run_fake(monkeypatch: pytest.MonkeyPatch, api: FakeApi, argv: list[str]) -> int:
    def connect(args: argparse.Namespace) -> fo.Session:
        return fo.Session(kc=None, context="karmada", api=api, args=args)  # type: ignore[arg-type]

    monkeypatch.setattr(fo, "connect", connect)
    return fo.main(argv)


def test_drain_refuses_when_nothing_can_take_it(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)],
                                     affinity=["lab-a"])])
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 2
    assert "refusing to drain lab-a" in capsys.readouterr().err
    assert api.patches == []


def test_drain_dry_run_changes_nothing(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)])])
    assert run_fake(monkeypatch, api, ["drain", "lab-a", "--dry-run", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and data["moves"][0]["candidates"] == ["lab-b", "lab-c"]
    assert api.patches == []


def test_drain_taints_once_and_reports(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    api = FakeApi(CLUSTERS, [rb])

    def patch(path: str, body: dict, what: str = "") -> dict:
        api.patches.append((path, body))
        rb["spec"]["clusters"] = [{"name": "lab-b"}]  # Karmada moves it
        return {}

    api.merge_patch = patch  # type: ignore[method-assign]
    assert run_fake(monkeypatch, api, ["drain", "lab-a", "--timeout", "5"]) == 0
    (path, body), = api.patches
    assert path == f"{karmada.CLUSTERS}/lab-a"
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["spec"]["taints"] == list(fo.DRAIN_TAINTS)
    out = capsys.readouterr().out
    assert "drained lab-a in" in out and "ns/deployment/web  lab-a  lab-b" in out


def test_unknown_cluster_and_workload(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)])])
    assert run_fake(monkeypatch, api, ["drain", "lab-z"]) == 2
    assert "unknown cluster 'lab-z'" in capsys.readouterr().err
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/nope", "--to", "lab-b"]) == 2
    assert "unknown workload ns/deployment/nope" in capsys.readouterr().err
    assert api.patches == []


def test_switch_refusals(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    clusters = [cluster("lab-a"), cluster("lab-b", ready="False"),
                cluster("lab-c", taints=[fo.DRAIN_TAINT])]
    pp_path = karmada.policy_path("PropagationPolicy", "ns", "pp")
    policy = {"metadata": {"resourceVersion": "3"},
              "spec": {"placement": {"clusterAffinity": {"clusterNames": ["lab-a"]}}}}
    api = FakeApi(clusters + [cluster("lab-d")],
                  [binding("ns", "Deployment", "web", [("lab-a", 0)]),
                   binding("ns", "Deployment", "api", [("lab-a", 0)])], {pp_path: policy})
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-b"]) == 2
    assert "lab-b is not Ready" in capsys.readouterr().err
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c"]) == 2
    assert "tainted fleetcheck.io/drain=failover:NoExecute" in capsys.readouterr().err
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-d"]) == 2
    err = capsys.readouterr().err
    assert "also propagates ns/deployment/api" in err and "--force" in err
    assert api.patches == []


def test_switch_patches_the_policy(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    api, _ = switched_api()
    monkeypatch.setattr(fo.Session, "member_api", lambda self, c: None)
    code = run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c",
                                       "-o", "json", "--timeout", "5"])
    assert code == 0, capsys.readouterr().err
    (path, body), = api.patches
    assert path == PP_PATH
    assert body["spec"]["placement"]["clusterAffinity"]["clusterNames"] == ["lab-c"]
    assert body["metadata"]["resourceVersion"] == "3"
    assert json.loads(body["metadata"]["annotations"][fo.PREVIOUS_AFFINITY_ANNOTATION]) == {
        "clusterNames": ["lab-a", "lab-b"]}
    data = json.loads(capsys.readouterr().out)
    assert data["available"] and data["to"] == "lab-c" and data["from"] == ["lab-a"]
    assert "no context" in data["member"]


def test_interrupt_says_what_is_left(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    api = FakeApi(CLUSTERS, [rb])

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(karmada, "wait_for", interrupted)
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: lab-a stays cordoned and drained" in err
    assert "failover uncordon lab-a" in err
    # interrupted before any change
    monkeypatch.setattr(fo.Session, "cluster", interrupted)
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 130
    assert "interrupted: nothing was changed" in capsys.readouterr().err


# --- every placement field of Karmada v1.18 (policy.karmada.io/v1alpha1 Placement) ------------

def placed(placement: dict, on: tuple = ("lab-a",), name: str = "web", ns: str = "ns",
           kind: str = "Deployment", **spec: Any) -> dict:
    """A binding of ``ns/kind/name`` placed on ``on`` with exactly ``placement``."""
    rb = binding(ns, kind, name, [(c, 0) for c in on])
    rb["spec"]["placement"] = placement
    rb["spec"].update(spec)
    return rb


def plan_of(placement: dict, clusters: list, on: tuple = ("lab-a",), others: tuple = (),
            **spec: Any) -> dict:
    """drain_plan of lab-a for one workload with ``placement``: its row and where it is."""
    plan = fo.drain_plan("lab-a", clusters, [placed(placement, on, **spec), *others])
    for where in ("moves", "stuck", "staying", "undecided"):
        for row in plan.get(where) or []:
            if row["workload"] == "ns/deployment/web":
                return {"where": where, **row}
    raise AssertionError(plan)


#: lab-d has only the deprecated spec.zone, which Karmada never reads (it matches spec.zones)
FIELDED = [cluster("lab-a", provider="aws", region="eu", zones=["eu-1a"]),
           cluster("lab-b", provider="aws", region="eu", zones=["eu-1b"]),
           cluster("lab-c", provider="gcp", region="us", zones=["us-1a", "us-1b"]),
           cluster("lab-d", zone="eu-1a")]


@pytest.mark.parametrize("expr, expected", [
    ({"key": "provider", "operator": "In", "values": ["aws"]}, ["lab-b"]),
    ({"key": "provider", "operator": "NotIn", "values": ["aws"]}, ["lab-c", "lab-d"]),
    ({"key": "region", "operator": "In", "values": ["us"]}, ["lab-c"]),
    ({"key": "region", "operator": "NotIn", "values": ["eu"]}, ["lab-c", "lab-d"]),
    ({"key": "zone", "operator": "In", "values": ["us-1b"]}, ["lab-c"]),
    ({"key": "zone", "operator": "In", "values": ["eu-1a"]}, []),  # lab-a leaves; lab-d: spec.zone
    ({"key": "zone", "operator": "NotIn", "values": ["eu-1b"]}, ["lab-c", "lab-d"]),
    ({"key": "zone", "operator": "Exists"}, ["lab-b", "lab-c"]),
    ({"key": "zone", "operator": "DoesNotExist"}, ["lab-d"]),
    ({"key": "region", "operator": "In", "values": ["ap"]}, []),
])
def test_field_selector(expr: dict, expected: list) -> None:
    row = plan_of({"clusterAffinity": {"fieldSelector": {"matchExpressions": [expr]}}}, FIELDED)
    assert row["where"] == ("moves" if expected else "stuck")
    assert row["candidates"] == expected
    if not expected:
        assert "not allowed by its cluster affinity" in row["why"]


def test_cluster_affinity_names_exclude_labels_together() -> None:
    clusters = [cluster("lab-a"), cluster("lab-b", labels={"tier": "gold"}),
                cluster("lab-c", labels={"tier": "gold"}), cluster("lab-d")]
    row = plan_of({"clusterAffinity": {"clusterNames": ["lab-a", "lab-b", "lab-c"],
                                       "exclude": ["lab-c"],
                                       "labelSelector": {"matchExpressions": [
                                           {"key": "tier", "operator": "Exists"}]}}}, clusters)
    assert row["candidates"] == ["lab-b"]
    row = plan_of({"clusterAffinity": {"labelSelector": {"matchExpressions": [
        {"key": "tier", "operator": "DoesNotExist"}]}}}, clusters)
    assert row["candidates"] == ["lab-d"]


def test_cluster_affinities_go_to_the_next_term_only() -> None:
    terms = [{"affinityName": "primary", "clusterNames": ["lab-a", "lab-b"]},
             {"affinityName": "backup", "clusterNames": ["lab-c", "lab-d"]}]
    four = [cluster("lab-a"), cluster("lab-b"), cluster("lab-c"), cluster("lab-d")]
    # the scheduler stays in the term it is in while that term has a cluster left
    row = plan_of({"clusterAffinities": terms}, four)
    assert (row["candidates"], row["term"]) == (["lab-b"], "primary")
    # ... and goes to the next term when not
    four[1] = cluster("lab-b", ready="False")
    row = plan_of({"clusterAffinities": terms}, four)
    assert (row["candidates"], row["term"]) == (["lab-c", "lab-d"], "backup")
    # never back to an earlier term: scheduled by "backup" on lab-c, draining lab-c
    rb = placed({"clusterAffinities": [{"affinityName": "primary", "clusterNames": ["lab-b"]},
                                       {"affinityName": "backup", "clusterNames": ["lab-a"]}]})
    rb["status"]["schedulerObservingAffinityName"] = "backup"
    plan = fo.drain_plan("lab-a", [cluster("lab-a"), cluster("lab-b")], [rb])
    assert [s["workload"] for s in plan["stuck"]] == ["ns/deployment/web"]
    assert "term backup" in plan["stuck"][0]["why"]


def test_cluster_affinities_term_must_meet_spread_constraints() -> None:
    four = [cluster("lab-a"), cluster("lab-b"), cluster("lab-c"), cluster("lab-d")]
    row = plan_of({"clusterAffinities": [
        {"affinityName": "primary", "clusterNames": ["lab-a", "lab-b"]},
        {"affinityName": "backup", "clusterNames": ["lab-c", "lab-d"]}],
        "spreadConstraints": [{"spreadByField": "cluster", "minGroups": 2}]}, four)
    assert (row["candidates"], row["term"]) == (["lab-c", "lab-d"], "backup")


def test_overflow_affinities_count_for_workloads_only() -> None:
    placement = {"clusterAffinities": [{"affinityName": "primary", "clusterNames": ["lab-a"],
                                        "overflowAffinities": [{"affinityName": "burst",
                                                                "clusterNames": ["lab-b"]}]}]}
    assert plan_of(placement, CLUSTERS)["candidates"] == ["lab-b"]
    plan = fo.drain_plan("lab-a", CLUSTERS, [placed(placement, kind="ConfigMap", replicas=0)])
    assert [s["workload"] for s in plan["stuck"]] == ["ns/configmap/web"]


def test_tolerations_for_a_while_still_leave() -> None:
    drain = {"key": fo.DRAIN_TAINT["key"], "operator": "Exists", "effect": "NoExecute"}
    assert plan_of({"clusterTolerations": [drain]}, CLUSTERS)["where"] == "staying"
    row = plan_of({"clusterTolerations": [{**drain, "tolerationSeconds": 30}]}, CLUSTERS)
    assert row["where"] == "moves" and row["after_s"] == 30
    assert "after its tolerationSeconds 30" in fo.render_plan(
        fo.drain_plan("lab-a", CLUSTERS, [placed({"clusterTolerations": [
            {**drain, "tolerationSeconds": 30}]})]), dry_run=True)


def test_candidate_taints() -> None:
    no_exec = {"key": "maint", "effect": "NoExecute"}
    no_sched = {"key": "full", "effect": "NoSchedule"}
    clusters = [cluster("lab-a"), cluster("lab-b", taints=[no_exec]),
                cluster("lab-c", taints=[no_sched])]
    # a NoExecute taint tolerated for a while evicts later: no destination
    row = plan_of({"clusterTolerations": [{"key": "maint", "operator": "Exists",
                                           "tolerationSeconds": 60}]}, clusters)
    assert row["where"] == "stuck" and "lab-b: untolerated taint maint:NoExecute" in row["why"]
    assert "lab-c: untolerated taint full:NoSchedule" in row["why"]
    row = plan_of({"clusterTolerations": [{"key": "maint", "operator": "Exists"}]}, clusters)
    assert row["candidates"] == ["lab-b"]
    # where the workload runs already, the scheduler keeps it despite a NoSchedule taint
    row = plan_of({}, clusters, on=("lab-a", "lab-c"))
    assert row["candidates"] == ["lab-c"]
    # a toleration operator Kubernetes 1.35 added (Gt/Lt) is not guessed at
    row = plan_of({"clusterTolerations": [{"key": "full", "operator": "Gt", "value": "1"}]},
                  clusters)
    assert row["where"] == "undecided"
    assert row["field"] == "spec.placement.clusterTolerations[0].operator 'Gt'"


REGIONS = [cluster("lab-a", region="eu", provider="aws", zones=["z1"]),
           cluster("lab-b", region="eu", provider="aws", zones=["z1"], labels={"rack": "r1"}),
           cluster("lab-c", region="eu", provider="aws", zones=["z1"], labels={"rack": "r1"})]


@pytest.mark.parametrize("constraint, need", [
    ({"spreadByField": "cluster", "minGroups": 3}, "at least 3 clusters"),
    ({"spreadByField": "region", "minGroups": 2}, "at least 2 regions"),
    ({"spreadByField": "zone", "minGroups": 2}, "at least 2 zones"),
    ({"spreadByField": "provider", "minGroups": 2}, "at least 2 providers"),
    ({"spreadByLabel": "rack", "minGroups": 2}, "at least 2 values of the cluster label rack"),
])
def test_spread_constraints_min_groups(constraint: dict, need: str) -> None:
    placement = {"spreadConstraints": [{"spreadByField": "cluster", "minGroups": 1},
                                       constraint]}
    row = plan_of(placement, REGIONS)
    assert row["where"] == "stuck" and need in row["why"], row
    wider = [*REGIONS, cluster("lab-d", region="us", provider="gcp", zones=["z2"],
                               labels={"rack": "r2"})]
    assert plan_of(placement, wider)["candidates"] == ["lab-b", "lab-c", "lab-d"]


def test_spread_by_field_needs_the_field_and_max_groups_does_not_bind() -> None:
    clusters = [cluster("lab-a", region="eu"), cluster("lab-b", region="eu"), cluster("lab-c"),
                cluster("lab-d", region="us")]
    row = plan_of({"spreadConstraints": [{"spreadByField": "cluster", "maxGroups": 1},
                                         {"spreadByField": "region", "maxGroups": 1}]}, clusters)
    assert row["candidates"] == ["lab-b", "lab-d"]  # lab-c has no spec.region
    row = plan_of({"clusterAffinity": {"clusterNames": ["lab-a", "lab-c"]},
                   "spreadConstraints": [{"spreadByField": "region"}]}, clusters)
    assert row["where"] == "stuck" and "lab-c: no spec.region (spreadByField region)" in row["why"]


def test_replica_scheduling() -> None:
    divided = {"replicaScheduling": {"replicaSchedulingType": "Divided",
                                     "replicaDivisionPreference": "Aggregated"}}
    # divided over lab-a and lab-b: lab-b alone takes them (capacity is not estimated)
    row = plan_of({**divided, "clusterAffinity": {"clusterNames": ["lab-a", "lab-b"]}},
                  CLUSTERS, on=("lab-a", "lab-b"))
    assert row["candidates"] == ["lab-b"]
    # ... but nowhere is nowhere, divided or duplicated
    for strategy in (divided, {"replicaScheduling": {"replicaSchedulingType": "Duplicated"}}):
        assert plan_of({**strategy, "clusterAffinity": {"clusterNames": ["lab-a"]}},
                       CLUSTERS)["where"] == "stuck"
    # static weights: only clusters with a positive weight get replicas
    weighted = {"replicaScheduling": {
        "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted",
        "weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["lab-a", "lab-c"]}, "weight": 2}]}}}
    assert plan_of(weighted, CLUSTERS)["candidates"] == ["lab-c"]
    # Karmada ignores spread constraints for static weights
    row = plan_of({**weighted, "spreadConstraints": [{"spreadByField": "cluster",
                                                      "minGroups": 3}]}, CLUSTERS)
    assert row["where"] == "moves"
    row = plan_of({"replicaScheduling": {"replicaSchedulingType": "Sharded"}}, CLUSTERS)
    assert row["field"] == "spec.placement.replicaScheduling.replicaSchedulingType 'Sharded'"


def test_workload_affinity_and_anti_affinity() -> None:
    def other(on: str, ns: str = "ns", **groups: str) -> dict:
        rb = binding(ns, "Deployment", "db", [(on, 0)])
        rb["spec"]["workloadAffinityGroups"] = groups
        return rb

    wa = {"workloadAffinity": {"antiAffinity": {"groupByLabelKey": "app.group"}}}
    row = plan_of(wa, CLUSTERS, others=(other("lab-b", antiAffinityGroup="g"),),
                  workloadAffinityGroups={"antiAffinityGroup": "g"})
    assert row["candidates"] == ["lab-c"]
    row = plan_of(wa, CLUSTERS, others=(other("lab-b", ns="elsewhere", antiAffinityGroup="g"),),
                  workloadAffinityGroups={"antiAffinityGroup": "g"})
    assert row["candidates"] == ["lab-b", "lab-c"]
    wa = {"workloadAffinity": {"affinity": {"groupByLabelKey": "app.group"}}}
    row = plan_of(wa, CLUSTERS, others=(other("lab-c", affinityGroup="g"),),
                  workloadAffinityGroups={"affinityGroup": "g"})
    assert row["candidates"] == ["lab-c"]
    # a group member that runs only on the drained cluster moves too: it binds nothing
    row = plan_of(wa, CLUSTERS, others=(other("lab-a", affinityGroup="g"),),
                  workloadAffinityGroups={"affinityGroup": "g"})
    assert row["candidates"] == ["lab-b", "lab-c"]


def test_api_enablement_and_eviction_in_progress() -> None:
    clusters = [cluster("lab-a"), cluster("lab-b"), cluster("lab-c")]
    clusters[1]["status"]["apiEnablements"] = [{"groupVersion": "v1", "resources": [
        {"name": "configmaps", "kind": "ConfigMap"}]}]
    row = plan_of({}, clusters)
    assert row["candidates"] == ["lab-c"]
    rb = placed({})
    rb["spec"]["gracefulEvictionTasks"] = [{"fromCluster": "lab-c"}]
    plan = fo.drain_plan("lab-a", clusters, [rb])
    assert "lab-c: its graceful eviction from there is under way" in plan["stuck"][0]["why"]
    assert "lab-b: does not list apps/v1 Deployment among its APIs" in plan["stuck"][0]["why"]


@pytest.mark.parametrize("placement, field", [
    ({"futureField": {}}, "spec.placement.futureField"),
    ({"clusterAffinity": {"clusterSet": "x"}}, "spec.placement.clusterAffinity.clusterSet"),
    ({"clusterAffinity": {"fieldSelector": {"matchExpressions": [
        {"key": "rack", "operator": "In", "values": ["1"]}]}}},
     "spec.placement.clusterAffinity.fieldSelector.matchExpressions[0].key 'rack'"),
    ({"clusterAffinity": {"labelSelector": {"matchExpressions": [
        {"key": "n", "operator": "Gt", "values": ["1"]}]}}},
     "spec.placement.clusterAffinity.labelSelector.matchExpressions[0].operator 'Gt'"),
    ({"clusterAffinities": [{"affinityName": "a", "overflowAffinities": [
        {"affinityName": "b", "weight": 1}]}]},
     "spec.placement.clusterAffinities[0].overflowAffinities[0].weight"),
    ({"spreadConstraints": [{"spreadByField": "rack"}]},
     "spec.placement.spreadConstraints[0].spreadByField 'rack'"),
    ({"replicaScheduling": {"weightPreference": {"dynamicWeight": "Cost"}}},
     "spec.placement.replicaScheduling.weightPreference.dynamicWeight 'Cost'"),
    ({"workloadAffinity": {"preferredAffinity": {}}},
     "spec.placement.workloadAffinity.preferredAffinity"),
])
def test_placement_fields_not_understood_are_named(placement: dict, field: str) -> None:
    assert placement_mod.not_understood(placement) == field
    row = plan_of(placement, CLUSTERS)
    assert (row["where"], row["field"]) == ("undecided", field)


def test_every_placement_field_of_karmada_1_18_is_understood() -> None:
    placement = {
        "clusterAffinity": {"clusterNames": ["a"], "exclude": ["b"],
                            "labelSelector": {"matchLabels": {"x": "y"}, "matchExpressions": [
                                {"key": "x", "operator": "NotIn", "values": ["z"]}]},
                            "fieldSelector": {"matchExpressions": [
                                {"key": "zone", "operator": "In", "values": ["z1"]}]}},
        "clusterTolerations": [{"key": "k", "operator": "Equal", "value": "v",
                                "effect": "NoExecute", "tolerationSeconds": 5}],
        "spreadConstraints": [{"spreadByField": "cluster", "minGroups": 1, "maxGroups": 2},
                              {"spreadByLabel": "rack", "minGroups": 1}],
        "replicaScheduling": {"replicaSchedulingType": "Divided",
                              "replicaDivisionPreference": "Weighted",
                              "weightPreference": {"dynamicWeight": "AvailableReplicas",
                                                   "staticWeightList": [
                                                       {"targetCluster": {"clusterNames": ["a"]},
                                                        "weight": 1}]}},
        "workloadAffinity": {"affinity": {"groupByLabelKey": "g"},
                             "antiAffinity": {"groupByLabelKey": "h"}}}
    assert placement_mod.not_understood(placement) is None
    terms = {"clusterAffinities": [{"affinityName": "a", "clusterNames": ["a"],
                                    "overflowAffinities": [{"affinityName": "b",
                                                            "clusterNames": ["b"]}]}]}
    assert placement_mod.not_understood(terms) is None
    assert placement_mod.PLACEMENT_FIELDS == {"clusterAffinity", "clusterAffinities", "clusterTolerations",
                                   "spreadConstraints", "replicaScheduling", "workloadAffinity"}


def test_drain_refuses_what_it_cannot_evaluate_unless_forced(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    rb = placed({"futureField": {"x": 1}})
    api = FakeApi(CLUSTERS, [rb])
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 2
    err = capsys.readouterr().err
    assert ("cannot tell where 1 workload(s) would go: ns/deployment/web (on lab-a): placement "
            "field spec.placement.futureField is not understood") in err
    assert "Use --force to drain anyway" in err and api.patches == []
    assert run_fake(monkeypatch, api, ["drain", "lab-a", "--dry-run"]) == 2

    def patch(path: str, body: dict, what: str = "") -> dict:
        api.patches.append((path, body))
        rb["spec"]["clusters"] = [{"name": "lab-b"}]
        return {}

    api.merge_patch = patch  # type: ignore[method-assign]
    assert run_fake(monkeypatch, api, ["drain", "lab-a", "--force", "--timeout", "5"]) == 0
    out, err = capsys.readouterr()
    assert "cannot tell where ns/deployment/web (on lab-a) would go" in out
    assert "draining anyway (--force)" in out and len(api.patches) == 1
    assert "undo: 'failover uncordon lab-a'" in err


def test_drain_refusal_says_why(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(REGIONS, [placed({"spreadConstraints": [
        {"spreadByField": "cluster", "minGroups": 1},
        {"spreadByField": "region", "minGroups": 2}]})])
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 2
    err = capsys.readouterr().err
    assert "refusing to drain lab-a" in err and "ns/deployment/web (on lab-a):" in err
    assert "need at least 2 regions (minGroups 2); the clusters that fit give 1 (eu)" in err
    assert api.patches == []


# --- switch: placement guards, member checks, undo ---------------------------------------------

PP_PATH = karmada.policy_path("PropagationPolicy", "ns", "pp")


def pp(placement: dict, annotations: dict | None = None) -> dict:
    return {"metadata": {"resourceVersion": "3", "annotations": annotations or {}},
            "spec": {"placement": placement}}


@pytest.mark.parametrize("placement, clusters, expected", [
    ({"spreadConstraints": [{"spreadByField": "cluster"},
                            {"spreadByField": "region", "minGroups": 2}]},
     [cluster("lab-a", region="eu"), cluster("lab-c", region="us")],
     "need at least 2 regions"),
    ({"spreadConstraints": [{"spreadByField": "cluster"}, {"spreadByField": "zone"}]},
     [cluster("lab-a"), cluster("lab-c")], "lab-c: no spec.zones (spreadByField zone)"),
    ({}, [cluster("lab-a"), {**cluster("lab-c"), "status": {
        **cluster("lab-c")["status"], "apiEnablements": []}}],
     "does not list apps/v1 Deployment among its APIs"),
])
def test_switch_refuses_what_karmada_would_not_schedule(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, placement: dict,
        clusters: list, expected: str) -> None:
    api = FakeApi(clusters, [placed(placement)], {PP_PATH: pp(placement)})
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c"]) == 2
    err = capsys.readouterr().err
    assert "refusing to switch ns/deployment/web" in err and expected in err
    assert "nothing changed" in err and api.patches == []


def test_switch_refuses_anti_affinity_and_unknown_fields(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    db = binding("ns", "Deployment", "db", [("lab-c", 0)], policy="other")
    db["spec"]["workloadAffinityGroups"] = {"antiAffinityGroup": "g"}
    placement = {"workloadAffinity": {"antiAffinity": {"groupByLabelKey": "app"}}}
    api = FakeApi(CLUSTERS, [placed(placement, workloadAffinityGroups={"antiAffinityGroup": "g"}),
                             db], {PP_PATH: pp(placement)})
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c"]) == 2
    assert "workloadAntiAffinity group g: ns/deployment/db runs there" in capsys.readouterr().err
    placement = {"futureField": 1}
    api = FakeApi(CLUSTERS, [placed(placement)], {PP_PATH: pp(placement)})
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c"]) == 2
    err = capsys.readouterr().err
    assert "placement field spec.placement.futureField of PropagationPolicy ns/pp is not " \
           "understood" in err and "--force" in err and api.patches == []


class FakeMember:
    """A member cluster's API whose GET fails with ``error`` (or answers ``answer``)."""

    context = "lab-c"

    def __init__(self, error: BaseException | None = None, answer: Any = None) -> None:
        self.error, self.answer = error, answer

    def get(self, path: str, what: str | None = None, *, missing_ok: bool = False) -> Any:
        if self.error is not None:
            raise self.error
        return self.answer


def switched_api() -> tuple[FakeApi, dict]:
    policy = pp({"clusterAffinity": {"clusterNames": ["lab-a", "lab-b"]}})
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    api = FakeApi(CLUSTERS, [rb], {PP_PATH: policy})

    def patch(path: str, body: dict, what: str = "") -> dict:
        api.patches.append((path, body))
        rb["spec"]["clusters"] = [{"name": "lab-c"}]
        rb["status"]["aggregatedStatus"] = [{"clusterName": "lab-c", "applied": True,
                                             "health": "Healthy"}]
        return {}

    api.merge_patch = patch  # type: ignore[method-assign]
    return api, policy


@pytest.mark.parametrize("member, expected", [
    (FakeMember(no_answer(urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused")),
        "get deployment")), "unreachable: connection refused"),
    (FakeMember(ApiError("get deployment", "forbidden", 403, 'deployments.apps "web" is '
                         "forbidden")), "forbidden"),
    (FakeMember(ApiError("get deployment", "unauthorized", 401, "Unauthorized")),
     "credentials of context 'lab-c' were rejected"),
    (FakeMember(answer="<html>proxy error</html>"), "not Kubernetes JSON"),
])
def test_switch_member_unreachable_or_forbidden_exits_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, member: FakeMember,
        expected: str) -> None:
    api, _ = switched_api()
    monkeypatch.setattr(fo.Session, "member_api", lambda self, c: member)
    code = run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c",
                                       "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert ("ns/deployment/web is applied and Healthy on lab-c as Karmada reports it, but "
            "member lab-c (context lab-c) could not be checked") in err
    assert expected in err
    # what is left, and how to undo it
    assert "state: PropagationPolicy ns/pp now places ns/deployment/web on lab-c only" in err
    assert "'failover restore ns/deployment/web'" in err
    assert "Traceback" not in err


def test_switch_member_context_unusable_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture,
                                                 tmp_path: Path) -> None:
    from fleetcheck.core import kubeconfig as kubeconfig_mod

    path = kubeconfig(tmp_path, server="https://lab-c.invalid:6443")
    kc = kubeconfig_mod.load([path])

    def broken(kc: Any, name: str, args: argparse.Namespace) -> Any:
        raise fo.FailoverError(f"context {name!r}: cannot build a client from the kubeconfig")

    monkeypatch.setattr(fo, "_client", broken)
    session = fo.Session(kc=kc, context="karmada", api=None,  # type: ignore[arg-type]
                         args=fo.build_parser().parse_args(["status"]))
    with pytest.raises(fo.FailoverError) as exc:
        session.member_api(cluster("lab-c"))
    assert exc.value.code == 3 and "member lab-c: context 'k'" in str(exc.value)


def test_switch_prints_undo_and_restore_undoes_it(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    api, policy = switched_api()
    monkeypatch.setattr(fo.Session, "member_api", lambda self, c: FakeMember(answer={
        "metadata": {"generation": 1}, "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "availableReplicas": 1}}))
    assert run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c",
                                       "-o", "json", "--timeout", "5"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["undo"] == "failover restore ns/deployment/web"
    assert "undo: 'failover restore ns/deployment/web'" in err
    (_, body), = api.patches
    # what the policy looks like now (as the API server would merge the patch)
    policy["metadata"]["annotations"].update(body["metadata"]["annotations"])
    policy["spec"]["placement"]["clusterAffinity"] = {"clusterNames": ["lab-c"]}
    assert run_fake(monkeypatch, api, ["restore", "ns/deployment/web", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    path, body = api.patches[-1]
    assert path == PP_PATH and body["metadata"]["resourceVersion"] == "3"
    assert body["metadata"]["annotations"] == {fo.PREVIOUS_AFFINITY_ANNOTATION: None}
    assert body["spec"]["placement"]["clusterAffinity"] == {"clusterNames": ["lab-a", "lab-b"]}
    data = json.loads(out)
    assert data["restored"] == {"clusterNames": ["lab-a", "lab-b"]}
    assert data["undo"] == "failover switch ns/deployment/web --to lab-c"
    assert "undo: 'failover switch ns/deployment/web --to lab-c'" in err


def test_restore_without_a_switch_refuses(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)])],
                  {PP_PATH: pp({})})
    assert run_fake(monkeypatch, api, ["restore", "ns/deployment/web"]) == 2
    assert "nothing to restore" in capsys.readouterr().err and api.patches == []


def test_merge_replacement_nulls_what_is_gone() -> None:
    current = {"clusterNames": ["c"], "labelSelector": {"matchLabels": {"a": "1", "b": "2"}}}
    new = {"labelSelector": {"matchLabels": {"a": "1"}}, "exclude": ["x"]}
    assert fo.merge_replacement(current, new) == {
        "clusterNames": None, "labelSelector": {"matchLabels": {"a": "1", "b": None}},
        "exclude": ["x"]}


# --- API failures: never exit 0, never a traceback ----------------------------------------------

class FailingApi(FakeApi):
    def __init__(self, error: BaseException) -> None:
        super().__init__(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)])])
        self.error = error

    def list(self, path: str, **_: Any) -> list:
        raise self.error


TLS_ERROR = ApiException(status=0, reason="SSLError\n[SSL: CERTIFICATE_VERIFY_FAILED] "
                                          "certificate verify failed")


@pytest.mark.parametrize("verb", [["status"], ["drain", "lab-a"], ["uncordon", "lab-a"],
                                  ["switch", "ns/deployment/web", "--to", "lab-b"],
                                  ["restore", "ns/deployment/web"]])
@pytest.mark.parametrize("error, expected", [
    (no_answer(TLS_ERROR), "TLS handshake/verification failed"),
    (ApiError("list member Clusters", "forbidden", 403, "clusters.cluster.karmada.io is "
              "forbidden"), "forbidden: the identity of context 'karmada'"),
    (ApiError("list ResourceBindings", "forbidden", 403, "forbidden", method="GET",
              path=f"{karmada.BINDINGS_VERSION}/resourcebindings", context="karmada"),
     ("the identity of context karmada is not permitted to list resourcebindings in API "
      'group "work.karmada.io" cluster-wide')),
    (no_answer(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")),
     "did not answer in time"),
])
def test_every_verb_reports_api_failures(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture, verb: list,
                                         error: BaseException, expected: str) -> None:
    code = run_fake(monkeypatch, FailingApi(error), verb)
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"failover {verb[0]}: error: Karmada API (context karmada): " in err
    assert expected in err and "state: nothing was changed" in err


def test_a_change_without_an_answer_may_have_been_made(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    api = FakeApi(CLUSTERS, [binding("ns", "Deployment", "web", [("lab-a", 0)])])

    def timeout(path: str, body: dict, what: str = "") -> dict:
        raise no_answer(urllib3.exceptions.ReadTimeoutError(None, path, "read timed out"), what)

    api.merge_patch = timeout  # type: ignore[method-assign]
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 3
    err = capsys.readouterr().err
    assert "lab-a may or may not be cordoned and drained now" in err
    assert "'failover uncordon lab-a' removes them" in err

    def conflict(path: str, body: dict, what: str = "") -> dict:
        raise ApiError(what, "conflict", 409, "the object has been modified")

    api.merge_patch = conflict  # type: ignore[method-assign]
    assert run_fake(monkeypatch, api, ["drain", "lab-a"]) == 3
    assert "state: nothing was changed" in capsys.readouterr().err


def test_uncordon_prints_undo_and_changes_nothing_when_not_drained(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    api = FakeApi([cluster("lab-a", taints=list(fo.DRAIN_TAINTS)), cluster("lab-b")], [])
    assert run_fake(monkeypatch, api, ["uncordon", "lab-a"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("uncordoned lab-a") and "undo: 'failover drain lab-a'" in err
    assert len(api.patches) == 1
    assert run_fake(monkeypatch, api, ["uncordon", "lab-b"]) == 0
    assert "nothing to remove, nothing changed" in capsys.readouterr().out
    assert len(api.patches) == 1


def test_connect_refuses_an_answer_that_is_not_kubernetes(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture,
                                                          tmp_path: Path) -> None:
    def answering(answer: tuple[int, Any] | BaseException) -> None:
        monkeypatch.setattr(fo, "_client", lambda *a: FakeClient(answer))

    answering((200, "<html>login</html>"))
    assert fo.main(["status", "--kubeconfig", str(kubeconfig(tmp_path))]) == 3
    err = capsys.readouterr().err
    assert "not a Kubernetes API server" in err and "Traceback" not in err
    answering((403, {"message": "forbidden"}))
    assert fo.main(["status", "--kubeconfig", str(kubeconfig(tmp_path))]) == 3
    assert "forbidden: the identity of context 'k'" in capsys.readouterr().err
    answering(TLS_ERROR)
    assert fo.main(["status", "--kubeconfig", str(kubeconfig(tmp_path))]) == 3
    assert "TLS handshake/verification failed" in capsys.readouterr().err
