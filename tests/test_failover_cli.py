"""scripts/failover without a cluster: arguments, errors, placement logic, rendering."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleetcheck import failovercli as fo
from fleetcheck import karmada

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-failover-token-0123456789"


def cluster(name: str, ready: str = "True", taints: list | None = None,
            labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "7"},
            "spec": {"apiEndpoint": f"https://{name}.invalid:6443", "syncMode": "Push",
                     "taints": taints or []},
            "status": {"kubernetesVersion": "v1.34.4",
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
            "spec": {"resource": {"apiVersion": "apps/v1", "kind": kind, "name": name,
                                  "namespace": ns},
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
    ("shop/deployment/web", fo.Workload("shop", "deployment", "web")),
    ("shop/Deployment/web", fo.Workload("shop", "deployment", "web")),
    ("shop/deploy/web", fo.Workload("shop", "deployment", "web")),
    ("shop/deployments.apps/web", fo.Workload("shop", "deployment", "web")),
    ("clusterrole/view", fo.Workload("", "clusterrole", "view")),
])
def test_parse_workload(text: str, expected: fo.Workload) -> None:
    assert fo.parse_workload(text) == expected


@pytest.mark.parametrize("text", ["web", "a/b/c/d", "shop//web", "shop/deployment/"])
def test_parse_workload_rejects(text: str) -> None:
    with pytest.raises(fo.FailoverError, match="NAMESPACE/KIND/NAME"):
        fo.parse_workload(text)


# --- placement logic --------------------------------------------------------------------------

def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert fo.tolerated(taint, [{"key": "k", "operator": "Exists"}])
    assert fo.tolerated(taint, [{"key": "k", "value": "v", "effect": "NoExecute"}])
    assert fo.tolerated(taint, [{"operator": "Exists"}])
    assert not fo.tolerated(taint, [{"key": "k", "value": "x"}])
    assert not fo.tolerated(taint, [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])
    assert not fo.tolerated(taint, [])


def test_candidates_need_ready_untainted_and_allowed() -> None:
    clusters = [cluster("lab-a"), cluster("lab-b", ready="False"),
                cluster("lab-c", taints=[{"key": "x", "effect": "NoSchedule"}]),
                cluster("lab-d", taints=[{"key": "y", "effect": "PreferNoSchedule"}]),
                cluster("lab-e")]
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    assert fo.candidates(rb, clusters, "lab-a") == ["lab-d", "lab-e"]
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)], affinity=["lab-a", "lab-b", "lab-c"])
    assert fo.candidates(rb, clusters, "lab-a") == []
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)], affinity=["lab-a", "lab-c"],
                 tolerations=[{"key": "x", "operator": "Exists"}])
    assert fo.candidates(rb, clusters, "lab-a") == ["lab-c"]


def test_placement_label_selector_and_affinity_groups() -> None:
    east = cluster("east", labels={"region": "east"})
    west = cluster("west", labels={"region": "west"})
    placement = {"clusterAffinity": {"labelSelector": {"matchLabels": {"region": "east"}}}}
    assert fo.placement_allows(placement, east) and not fo.placement_allows(placement, west)
    placement = {"clusterAffinity": {"labelSelector": {"matchExpressions": [
        {"key": "region", "operator": "NotIn", "values": ["east"]}]}, "exclude": ["west"]}}
    assert not fo.placement_allows(placement, east)
    assert not fo.placement_allows(placement, west)
    placement = {"clusterAffinities": [{"affinityName": "a", "clusterNames": ["east"]},
                                       {"affinityName": "b", "clusterNames": ["west"]}]}
    assert fo.placement_allows(placement, east) and fo.placement_allows(placement, west)


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
            "workloads": sorted((fo.workload_row(b) for b in bindings),
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

class FakeApi:
    """Enough of karmada.Api for the verbs: clusters, bindings, policies; records changes."""

    def __init__(self, clusters: list[dict], bindings: list[dict],
                 policies: dict[str, dict] | None = None) -> None:
        self.clusters = {c["metadata"]["name"]: c for c in clusters}
        self.bindings = bindings
        self.policies = policies or {}
        self.patches: list[tuple[str, dict]] = []
        self.name = "karmada"

    def items(self, path: str, what: str | None = None, selector: str | None = None) -> list:
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
        raise karmada.KarmadaError(what or path, 404, "not found")

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
    pp_path = karmada.policy_path("PropagationPolicy", "ns", "pp")
    policy = {"metadata": {"resourceVersion": "3"},
              "spec": {"placement": {"clusterAffinity": {"clusterNames": ["lab-a", "lab-b"]}}}}
    rb = binding("ns", "Deployment", "web", [("lab-a", 0)])
    api = FakeApi(CLUSTERS, [rb], {pp_path: policy})

    def patch(path: str, body: dict, what: str = "") -> dict:
        api.patches.append((path, body))
        rb["spec"]["clusters"] = [{"name": "lab-c"}]
        rb["status"]["aggregatedStatus"] = [{"clusterName": "lab-c", "applied": True,
                                             "health": "Healthy"}]
        return {}

    api.merge_patch = patch  # type: ignore[method-assign]
    monkeypatch.setattr(fo.Session, "member_api", lambda self, c: None)
    code = run_fake(monkeypatch, api, ["switch", "ns/deployment/web", "--to", "lab-c",
                                       "-o", "json", "--timeout", "5"])
    assert code == 0, capsys.readouterr().err
    (path, body), = api.patches
    assert path == pp_path
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
