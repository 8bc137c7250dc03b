"""scripts/kind-fleet's pure logic (no Docker, no kind): subnet plan, kind configs, route plan,
peer DNS zones, kubeconfig merge, the expectations file and the nightly workflow's shape."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "kind-fleet.d"))

from fleetcheck.run import expectations
from kindfleet import dns, kubeconfig, plan, routes

KIND_FLEET = ROOT / "scripts" / "kind-fleet"
KUBEADM_COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""


# ------------------------------------------------------------------ subnet plan, configs


def test_default_fleet_three_clusters_last_with_a_worker():
    fleet = plan.fleet_plan()
    assert [c.name for c in fleet] == ["fc-a", "fc-b", "fc-c"]
    assert [c.context for c in fleet] == ["kind-fc-a", "kind-fc-b", "kind-fc-c"]
    assert [c.workers for c in fleet] == [0, 0, 1]
    assert fleet[2].node_names == ["fc-c-control-plane", "fc-c-worker"]
    assert fleet[1].zone == "kind-fc-b.local"


def test_node_names_follow_kind():
    c = plan.ClusterPlan("x", 3, "10.244.0.0/16", "10.96.0.0/16")
    assert c.node_names == ["x-control-plane", "x-worker", "x-worker2", "x-worker3"]


@pytest.mark.parametrize("count", [1, 2, 3, 8, 16])
def test_subnets_distinct_private_and_inside_the_pools(count: int):
    fleet = plan.fleet_plan(count)
    nets = [ipaddress.ip_network(c.pod_subnet) for c in fleet]
    nets += [ipaddress.ip_network(c.service_subnet) for c in fleet]
    assert len(set(nets)) == 2 * count
    for i, a in enumerate(nets):
        assert a.is_private and a.prefixlen == 16
        assert all(not a.overlaps(b) for b in nets[i + 1:]), a
    assert all(ipaddress.ip_network(c.pod_subnet).subnet_of(ipaddress.ip_network(plan.POD_POOL))
               for c in fleet)
    assert fleet[0].pod_subnet == "10.244.0.0/16"  # kind's default, then the next ones


def test_plan_refuses_what_cannot_work():
    with pytest.raises(plan.PlanError, match="17 /16 subnets"):
        plan.fleet_plan(17)
    with pytest.raises(plan.PlanError, match="must start with 'kind-'"):
        plan.fleet_plan(3, "fc")
    with pytest.raises(plan.PlanError, match="lower-case"):
        plan.fleet_plan(3, "kind-FC")
    with pytest.raises(plan.PlanError, match="between 1 and 26"):
        plan.fleet_plan(0)
    with pytest.raises(plan.PlanError, match="out of range"):
        plan.fleet_plan(2, multi_node=[2])


def test_plan_avoids_networks_in_use():
    with pytest.raises(plan.PlanError, match="10.245.0.0/16 with 10.245.3.0/24"):
        plan.fleet_plan(3, reserved=["10.245.3.0/24", "172.18.0.0/16"])
    assert plan.fleet_plan(3, reserved=["172.18.0.0/16", "fc00:f853:ccd:e793::/64"])
    assert plan.overlaps(["10.0.0.0/16"], ["0.0.0.0/0"]) == []  # a default route is no clash


def test_kind_config_is_what_kind_expects():
    fleet = plan.fleet_plan(3, multi_node=[0, 2])
    doc = yaml.safe_load(plan.kind_config(fleet[0]))
    assert doc == {
        "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": "fc-a",
        "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/16"},
        "nodes": [{"role": "control-plane"}, {"role": "worker"}],
    }
    pinned = yaml.safe_load(plan.kind_config(fleet[1], "kindest/node:v1.33.1@sha256:" + "a" * 64))
    assert [n["image"] for n in pinned["nodes"]] == ["kindest/node:v1.33.1@sha256:" + "a" * 64]


def test_fleet_members_are_what_down_deletes():
    existing = ["fc-a", "fc-b", "fc-z", "fc-ab", "other", "fc", "xfc-a", "kind-fc-a"]
    assert plan.fleet_members(existing, "kind-fc") == ["fc-a", "fc-b", "fc-z"]


def test_cli_writes_configs_and_refuses_bad_input(tmp_path: Path):
    proc = subprocess.run([sys.executable, KIND_FLEET, "configs", "--out", tmp_path,
                           "--clusters", "2"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc-a.kind.yaml", "fc-b.kind.yaml"]
    bad = subprocess.run([sys.executable, KIND_FLEET, "configs", "--out", tmp_path,
                          "--name-prefix", "fc"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "must start with 'kind-'" in bad.stderr
    helped = subprocess.run([sys.executable, KIND_FLEET, "--help"], capture_output=True,
                            text=True, check=False)
    assert helped.returncode == 0 and "up" in helped.stdout and "down" in helped.stdout


# ------------------------------------------------------------------ routes


def node_list(*nodes: tuple[str, str, str]) -> dict[str, Any]:
    """``kubectl get nodes -o json`` for (name, ip, podCIDR) triples."""
    return {"items": [{"metadata": {"name": n}, "spec": {"podCIDR": cidr},
                       "status": {"addresses": [{"type": "Hostname", "address": n},
                                                {"type": "InternalIP", "address": "fc00::9"},
                                                {"type": "InternalIP", "address": ip}]}}
                      for n, ip, cidr in nodes]}


def fleet_nodes() -> tuple[list[plan.ClusterPlan], list[routes.Node]]:
    fleet = plan.fleet_plan(3)
    nodes = routes.nodes_from_api("fc-a", node_list(
        ("fc-a-control-plane", "172.18.0.2", "10.244.0.0/24")))
    nodes += routes.nodes_from_api("fc-b", node_list(
        ("fc-b-control-plane", "172.18.0.3", "10.245.0.0/24")))
    nodes += routes.nodes_from_api("fc-c", node_list(
        ("fc-c-control-plane", "172.18.0.4", "10.246.0.0/24"),
        ("fc-c-worker", "172.18.0.5", "10.246.1.0/24")))
    return fleet, nodes


def test_nodes_from_api_take_the_ipv4_internal_ip():
    _, nodes = fleet_nodes()
    assert nodes[0] == routes.Node("fc-a", "fc-a-control-plane", "172.18.0.2", "10.244.0.0/24")
    with pytest.raises(plan.PlanError, match="no IPv4 InternalIP or podCIDR"):
        routes.nodes_from_api("fc-a", {"items": [{"metadata": {"name": "n"}, "spec": {},
                                                  "status": {"addresses": []}}]})


def test_route_plan_reaches_every_peer_pod_range_and_service_range():
    fleet, nodes = fleet_nodes()
    plan_ = routes.route_plan(fleet, nodes)
    table: dict[str, dict[str, str]] = {}
    for r in plan_:
        assert r.destination not in table.setdefault(r.node, {}), r  # one route per destination
        table[r.node][r.destination] = r.via
    assert table["fc-a-control-plane"] == {
        "10.245.0.0/24": "172.18.0.3", "10.97.0.0/16": "172.18.0.3",
        "10.246.0.0/24": "172.18.0.4", "10.246.1.0/24": "172.18.0.5",
        "10.98.0.0/16": "172.18.0.4",
    }
    # the worker of fc-c routes too, and never to its own cluster
    assert table["fc-c-worker"] == {
        "10.244.0.0/24": "172.18.0.2", "10.96.0.0/16": "172.18.0.2",
        "10.245.0.0/24": "172.18.0.3", "10.97.0.0/16": "172.18.0.3",
    }
    # every pod range of every node is reachable from every node of every other cluster
    for src in nodes:
        for dst in nodes:
            if src.cluster != dst.cluster:
                assert table[src.name][dst.pod_cidr] == dst.ip
    assert len(plan_) == 5 + 5 + 2 * 4  # fc-a, fc-b: 5 routes each; both fc-c nodes: 4 each
    assert plan_[0].command() == ["docker", "exec", "fc-a-control-plane", "ip", "route",
                                  "replace", "10.245.0.0/24", "via", "172.18.0.3"]


def test_route_plan_refuses_inconsistent_nodes():
    fleet, nodes = fleet_nodes()
    with pytest.raises(plan.PlanError, match="fc-c-worker not found"):
        routes.route_plan(fleet, nodes[:-1])
    stray = [*nodes[:-1], routes.Node("fc-c", "fc-c-worker", "172.18.0.5", "10.244.9.0/24")]
    with pytest.raises(plan.PlanError, match="outside 10.246.0.0/16"):
        routes.route_plan(fleet, stray)
    dup = [*nodes[:-1], routes.Node("fc-c", "fc-c-worker", "172.18.0.2", "10.246.1.0/24")]
    with pytest.raises(plan.PlanError, match="share the address"):
        routes.route_plan(fleet, dup)


# ------------------------------------------------------------------ DNS


def test_corefile_adds_one_zone_per_peer_and_is_idempotent():
    fleet = plan.fleet_plan(3)
    peers = fleet[1:]
    once = dns.corefile_with_peers(KUBEADM_COREFILE, peers)
    assert once.startswith(KUBEADM_COREFILE)  # kind's own server block untouched
    assert dns.corefile_with_peers(once, peers) == once
    assert "kind-fc-b.local:53 {" in once and "kind-fc-c.local:53 {" in once
    assert "kind-fc-a.local" not in once  # never its own zone
    assert ("kubeconfig /etc/coredns-peers/kind-fc-b.kubeconfig kind-fc-b" in once)
    assert "forward" not in once[len(KUBEADM_COREFILE):]  # peer zones never go upstream
    assert dns.corefile_with_peers(once, []) == KUBEADM_COREFILE
    # a fleet shrunk from 3 to 2 drops the stale block
    assert "kind-fc-c" not in dns.corefile_with_peers(once, peers[:1])
    assert once.count("{") == once.count("}")


def test_peer_zone_matches_the_expectations_pattern():
    """The name the dns/cross-cluster check asks for lies in the zone the peer block serves."""
    data = yaml.safe_load((ROOT / "scripts" / "kind-fleet.expectations.yaml").read_text())
    pattern = data["defaults"]["dns"]["cross_cluster_pattern"]
    peer = plan.fleet_plan(3)[1]
    name = pattern.format(service="echo", namespace="fc-x", cluster=peer.context,
                          cluster_name=peer.name)
    assert name == f"echo.fc-x.svc.{peer.zone}"
    assert f"kubernetes {peer.zone} {{" in dns.peer_block(peer)


def test_peer_kubeconfig_and_secret():
    peer = plan.fleet_plan(3)[1]
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    kc = dns.peer_kubeconfig(peer, "https://172.18.0.3:6443", ca, "tok")
    merged = kubeconfig.merge([kc])  # well-formed: references resolve
    assert merged["current-context"] == "kind-fc-b"
    assert kc["clusters"][0]["cluster"] == {"server": "https://172.18.0.3:6443",
                                            "certificate-authority-data": ca}
    assert kc["users"][0]["user"] == {"token": "tok"}
    secret = dns.peers_secret({peer.context: kc})
    assert secret["metadata"] == {"name": dns.PEERS_SECRET, "namespace": "kube-system",
                                  "labels": dns.LABELS}
    stored = json.loads(base64.b64decode(secret["data"]["kind-fc-b.kubeconfig"]))
    assert stored == kc


def test_reader_is_read_only_and_not_risky():
    objs = {o["kind"]: o for o in dns.reader_objects()}
    assert set(objs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret"}
    verbs = {v for rule in objs["ClusterRole"]["rules"] for v in rule["verbs"]}
    assert verbs == {"list", "watch"}
    resources = {r for rule in objs["ClusterRole"]["rules"] for r in rule["resources"]}
    assert "secrets" not in resources and "*" not in resources
    assert objs["Secret"]["type"] == "kubernetes.io/service-account-token"
    assert objs["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": dns.READER, "namespace": "kube-system"}]
    from fleetcheck.rbac import risky
    for rule in objs["ClusterRole"]["rules"]:
        assert risky.rule_risks(rule, cluster_wide=True) == []


def test_coredns_patch_mounts_peers_and_rolls_on_change():
    secret = dns.peers_secret({"kind-fc-b": {"a": 1}})
    patch = dns.coredns_patch("x", secret)
    spec = patch["spec"]["template"]["spec"]
    assert spec["volumes"][0]["secret"]["secretName"] == dns.PEERS_SECRET
    assert spec["containers"][0]["name"] == "coredns"
    assert spec["containers"][0]["volumeMounts"][0]["mountPath"] == dns.MOUNT
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations == dns.coredns_patch("x", secret)["spec"]["template"]["metadata"][
        "annotations"]
    assert annotations != dns.coredns_patch("y", secret)["spec"]["template"]["metadata"][
        "annotations"]


# ------------------------------------------------------------------ kubeconfig merge


def kind_kubeconfig(name: str, port: int) -> dict[str, Any]:
    """A kubeconfig as ``kind export kubeconfig`` writes it."""
    ctx = f"kind-{name}"
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": ctx, "cluster": {"server": f"https://127.0.0.1:{port}",
                                                   "certificate-authority-data": "Q0E="}}],
            "users": [{"name": ctx, "user": {"client-certificate-data": "Yw==",
                                             "client-key-data": "aw=="}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
            "current-context": ctx}


def test_merge_kind_kubeconfigs():
    docs = [kind_kubeconfig(n, 40000 + i) for i, n in enumerate(["fc-a", "fc-b", "fc-c"])]
    merged = kubeconfig.merge(docs)
    assert [c["name"] for c in merged["contexts"]] == ["kind-fc-a", "kind-fc-b", "kind-fc-c"]
    assert merged["current-context"] == "kind-fc-a"
    assert kubeconfig.merge([*docs, docs[1]]) == merged  # the same entry twice is fine
    assert docs[0]["contexts"][0]["name"] == "kind-fc-a"  # inputs untouched
    assert kubeconfig.merge(docs, current_context="kind-fc-c")["current-context"] == "kind-fc-c"


def test_merge_refuses_conflicts_and_dangling_references():
    a = kind_kubeconfig("fc-a", 40000)
    other = kind_kubeconfig("fc-a", 40001)
    with pytest.raises(kubeconfig.MergeError, match="'kind-fc-a' is defined twice"):
        kubeconfig.merge([a, other])
    dangling = kind_kubeconfig("fc-b", 40002)
    dangling["users"] = []
    with pytest.raises(kubeconfig.MergeError, match="names user 'kind-fc-b'"):
        kubeconfig.merge([a, dangling])
    with pytest.raises(kubeconfig.MergeError, match="current-context 'kind-x'"):
        kubeconfig.merge([a], current_context="kind-x")


def test_merged_kubeconfig_selects_in_fleetcheck(tmp_path: Path):
    """fleetcheck reads the merged kubeconfig and --contexts='kind-*' selects the fleet."""
    from fleetcheck.core import kubeconfig as fc_kubeconfig
    path = tmp_path / "kc.yaml"
    docs = [kind_kubeconfig(n, 40000 + i) for i, n in enumerate(["fc-a", "fc-b", "fc-c"])]
    path.write_text(yaml.safe_dump(kubeconfig.merge(docs)))
    loaded = fc_kubeconfig.load([path])
    assert loaded.select(["kind-*"]) == ["kind-fc-a", "kind-fc-b", "kind-fc-c"]


# ------------------------------------------------------------------ expectations, workflow


def test_expectations_file_loads_with_the_schema():
    exp = expectations.load(ROOT / "scripts" / "kind-fleet.expectations.yaml")
    assert exp.fleet["flat_networking"] is True
    for c in plan.fleet_plan(3):
        eff = exp.for_context(c.context)
        assert eff["rbac"]["identity"] == "kubernetes-admin"
        assert eff["dns"]["cross_cluster_pattern"]
        assert exp.entries_for(c.context) == [0]


def test_nightly_workflow_shape():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key 'on' as True
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    steps = wf["jobs"]["kind-fleet"]["steps"]
    for step in steps:
        if "uses" in step:  # third-party code pinned to a commit
            ref = step["uses"].split("@", 1)[1]
            assert len(ref) == 40 and int(ref, 16) >= 0, step["uses"]
    by_name = {s.get("name", s.get("uses", "")): s for s in steps}
    for name in ("Upload reports", "Publish JUnit as a check", "Delete the kind fleet"):
        assert by_name[name]["if"] == "always()", name
    run = by_name["Run fleetcheck"]["run"]
    for part in ("suites", "--contexts='kind-*'", "-n auto", "--run-id=",
                 "--expectations=scripts/kind-fleet.expectations.yaml", "--report-dir="):
        assert part in run, part
    assert by_name["Upload reports"]["with"]["path"] == "reports/"
    order = [s.get("name") for s in steps]
    assert order.index("Create the kind fleet") < order.index("Run fleetcheck") < order.index(
        "Delete the kind fleet")
    assert by_name["Publish JUnit as a check"]["with"]["report_paths"].endswith("/junit.xml")
