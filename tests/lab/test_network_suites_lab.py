"""The connectivity and DNS suites against the lab: conformant when healthy (serially and
under xdist), and for every check a fault that makes exactly that check's ids non-conformant.

Every fault is undone in a ``finally``, and the lab is checked healthy again afterwards."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from fclab import CLUSTERS, LAB_IMAGES, REPO, core, results, run, wait_run_gone
from labkit import get, kubectl, lab, lab_healthy, wait_for

SUITES = ["suites/test_connectivity.py", "suites/test_dns.py"]
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
PAIRS = [f"{a}->{b}" for a in CLUSTERS for b in CLUSTERS if a != b]
PER_CONTEXT = ["connectivity/api-ready", "connectivity/version-skew", "connectivity/nodes-ready",
               "connectivity/control-plane", "connectivity/pod-to-pod",
               "connectivity/pod-to-service", "connectivity/pod-to-apiserver", "dns/coredns",
               "dns/in-cluster"]
PER_PAIR = ["connectivity/cross-cluster-pod", "connectivity/cross-cluster-service",
            "dns/cross-cluster"]
ALL_IDS = {(c, ctx) for c in PER_CONTEXT for ctx in CLUSTERS} | {
    (c, p) for c in PER_PAIR for p in PAIRS}


def run_suites(tmp_path: Path, tag: str, *extra: str, expectations: dict | None = None,
               expect_ids: set[tuple[str, str]] = ALL_IDS,
               wait_gone: bool = False,
               reachable: list[str] = CLUSTERS) -> dict[tuple[str, str], dict]:
    """Run both suites against lab-*; return {(check id, context): result record}."""
    exp_file = EXPECTATIONS
    if expectations is not None:
        exp_file = tmp_path / f"expectations-{tag}.yaml"
        exp_file.write_text(yaml.safe_dump(expectations))
    report = tmp_path / f"report-{tag}"
    run_id = f"fc-net-{tag}-{secrets.token_hex(3)}"
    kubeconfig = subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "scripts/lab"),
                                 "kubeconfig"], capture_output=True, text=True,
                                check=True).stdout.strip()
    proc = run([*SUITES, "--contexts=lab-*", f"--kubeconfig={kubeconfig}",
                f"--expectations={exp_file}", f"--report-dir={report}", f"--run-id={run_id}",
                *LAB_IMAGES, "-q", *extra], cwd=REPO, timeout=600)
    out = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), out[-3000:]
    records = {(c["check_id"], c["context"]): c for c in results(report)["checks"]}
    assert set(records) == expect_ids, f"checks run: {sorted(set(records) ^ expect_ids)}"
    # cleanup was issued: every namespace of the run is gone or terminating
    for ctx in reachable:
        for ns in core(Path(kubeconfig), ctx).list_namespace(
                label_selector=f"fleetcheck.io/run-id={run_id}").items:
            assert ns.metadata.deletion_timestamp, f"{ctx}: {ns.metadata.name} left behind"
    if wait_gone:
        left = wait_run_gone(Path(kubeconfig), run_id, CLUSTERS)
        assert not left, f"the run left objects behind: {left}"
    return records


def assert_only(records: dict[tuple[str, str], dict], bad: dict[tuple[str, str], list[str]]):
    """Exactly the ``bad`` ids are non-conformant, each message containing the given words;
    every other check is conformant."""
    for key, record in sorted(records.items()):
        if key in bad:
            assert record["verdict"] == "non-conformant", (key, record["verdict"],
                                                           record["message"])
            for word in [key[1], *bad[key]]:
                assert word in record["message"], (key, word, record["message"])
        else:
            assert record["verdict"] == "conformant", (key, record["verdict"],
                                                       record["message"])


def lab_expectations() -> dict:
    return yaml.safe_load(EXPECTATIONS.read_text())



@contextmanager
def in_netns(netns: str, add: list[str], remove: list[str]) -> Iterator[None]:
    """Run ``ip``/``iptables`` commands in a lab namespace; undo them afterwards."""
    def sh(cmd: list[str]) -> None:
        subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", *cmd], check=True,
                       capture_output=True)
    sh(add)
    try:
        yield
    finally:
        sh(remove)


def test_healthy_lab_is_conformant_serially(tmp_path):
    records = run_suites(tmp_path, "serial", wait_gone=True)
    assert_only(records, {})
    dns = records[("dns/in-cluster", "lab-a")]
    table = next(e["content"] for e in dns["evidence"] if e["name"] == "lookups")
    assert "NXDOMAIN" in table and "kubernetes.default.svc.cluster.local" in table


def test_healthy_lab_is_conformant_under_xdist(tmp_path):
    assert_only(run_suites(tmp_path, "xdist", "-n", "3"), {})


def test_stopped_kubelet_makes_only_nodes_ready_non_conformant(tmp_path):
    assert lab("stop", "lab-c-n2.kubelet").returncode == 0
    try:
        wait_for("lab-c-n2 NotReady and tainted", lambda: any(
            t["key"] == "node.kubernetes.io/unreachable"
            for t in get("lab-c", "node", "lab-c-n2")["spec"].get("taints", [])), timeout=90)
        records = run_suites(tmp_path, "kubelet")
    finally:
        lab("start", "lab-c-n2.kubelet")
        lab_healthy()
    assert_only(records, {("connectivity/nodes-ready", "lab-c"): ["lab-c-n2", "1/2 Ready"]})


def test_stopped_coredns_fails_dns_of_that_cluster(tmp_path):
    kubectl("lab-b", "scale", "deployment/coredns", "-n", "kube-system", "--replicas=0")
    try:
        wait_for("CoreDNS of lab-b gone", lambda: not get(
            "lab-b", "deployment", "coredns", "kube-system")["status"].get("readyReplicas"))
        records = run_suites(tmp_path, "coredns")
    finally:
        kubectl("lab-b", "scale", "deployment/coredns", "-n", "kube-system", "--replicas=1")
        lab_healthy()
    assert_only(records, {
        ("dns/coredns", "lab-b"): ["coredns: 0/0 ready"],
        ("dns/in-cluster", "lab-b"): ["DNS failure"],
        ("dns/cross-cluster", "lab-b->lab-a"): ["DNS failure"],
        ("dns/cross-cluster", "lab-b->lab-c"): ["DNS failure"],
    })


def test_removed_service_route_fails_cross_cluster_service(tmp_path):
    """The router loses its route to lab-b's service range: only traffic to lab-b's
    ClusterIPs from other clusters breaks."""
    route = ["10.101.0.0/16", "via", "10.200.2.10"]
    with in_netns("fclab-router", ["ip", "route", "del", *route],
                  ["ip", "route", "add", *route]):
        records = run_suites(tmp_path, "svcroute")
    assert_only(records, {
        ("connectivity/cross-cluster-service", "lab-a->lab-b"): ["lab-b", "ClusterIP"],
        ("connectivity/cross-cluster-service", "lab-c->lab-b"): ["lab-b", "ClusterIP"],
    })


def test_removed_pod_route_fails_cross_cluster_pod_both_ways(tmp_path):
    """lab-a's node loses its route to lab-b's pods: lab-a cannot reach lab-b's pods, and
    lab-b's pods get no answers from lab-a (their CoreDNS included)."""
    route = ["10.11.0.0/16", "via", "10.200.0.1", "dev", "eth0", "onlink"]
    with in_netns("fclab-lab-a-n1", ["ip", "route", "del", "10.11.0.0/16"],
                  ["ip", "route", "add", *route]):
        records = run_suites(tmp_path, "podroute")
    assert_only(records, {
        ("connectivity/cross-cluster-pod", "lab-a->lab-b"): ["pod IP"],
        ("connectivity/cross-cluster-pod", "lab-b->lab-a"): ["pod IP"],
        ("connectivity/cross-cluster-service", "lab-b->lab-a"): ["ClusterIP"],
        ("dns/cross-cluster", "lab-b->lab-a"): ["lab-a.local"],
    })


def test_blocked_pod_traffic_fails_pod_to_pod(tmp_path):
    """lab-a's node drops new pod-to-pod connections that no service translated."""
    rule = ["FORWARD", "-s", "10.10.0.0/16", "-d", "10.10.0.0/16", "-m", "conntrack",
            "--ctstate", "NEW", "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "REJECT"]
    with in_netns("fclab-lab-a-n1", ["iptables", "-I", *rule], ["iptables", "-D", *rule]):
        records = run_suites(tmp_path, "podfilter")
    assert_only(records, {("connectivity/pod-to-pod", "lab-a"): ["pod IP", "failed"]})


def test_blocked_apiserver_fails_pod_to_apiserver(tmp_path):
    """lab-a's API server refuses pods (CoreDNS excepted, so DNS keeps working)."""
    dns_ip = json.loads(kubectl("lab-a", "get", "pods", "-n", "kube-system", "-l",
                                "k8s-app=kube-dns", "-o", "json").stdout)["items"][0][
        "status"]["podIP"]
    allow = ["INPUT", "-s", dns_ip, "-j", "ACCEPT"]
    block = ["INPUT", "-s", "10.10.0.0/16", "-p", "tcp", "--dport", "6443", "-j", "REJECT"]
    with in_netns("fclab-lab-a-n1", ["iptables", "-I", *block], ["iptables", "-D", *block]), \
            in_netns("fclab-lab-a-n1", ["iptables", "-I", *allow], ["iptables", "-D", *allow]):
        records = run_suites(tmp_path, "apiblock")
    assert_only(records, {("connectivity/pod-to-apiserver", "lab-a"): ["kubernetes.default"]})


def test_service_without_endpoints_fails_pod_to_service(tmp_path):
    ns = "fc-fault-noendpoints"
    kubectl("lab-a", "create", "namespace", ns)
    try:
        kubectl("lab-a", "create", "service", "clusterip", "orphan", "--tcp=80:8080", "-n", ns)
        expectations = lab_expectations()
        expectations["contexts"].append({"match": "lab-a", "connectivity": {"services": [
            {"namespace": "kube-system", "name": "kube-dns", "port": 53},
            {"namespace": ns, "name": "orphan", "port": 80}]}})
        records = run_suites(tmp_path, "noendpoints", expectations=expectations)
    finally:
        kubectl("lab-a", "delete", "namespace", ns, "--wait=false", check=False)
    assert_only(records, {("connectivity/pod-to-service", "lab-a"): [
        f"{ns}/orphan", "0 ready endpoints"]})
    assert "kube-system/kube-dns" not in records[("connectivity/pod-to-service",
                                                   "lab-a")]["message"]


def set_corefile(context: str, text: str) -> None:
    """Replace the cluster's Corefile and wait until CoreDNS has restarted with it."""
    patch = json.dumps({"data": {"Corefile": text}})
    kubectl(context, "patch", "configmap", "coredns", "-n", "kube-system", "-p", patch)
    kubectl(context, "rollout", "restart", "deployment/coredns", "-n", "kube-system")
    kubectl(context, "rollout", "status", "deployment/coredns", "-n", "kube-system",
            "--timeout=90s", timeout=100)


@contextmanager
def changed_corefile(context: str, change: Callable[[str], str]) -> Iterator[str]:
    """The cluster's Corefile replaced by ``change(original)`` inside the block (which gets
    the changed text); the original restored and the lab checked healthy after it."""
    original = get(context, "configmap", "coredns", "kube-system")["data"]["Corefile"]
    changed = change(original)
    assert changed != original
    set_corefile(context, changed)
    try:
        yield changed
    finally:
        set_corefile(context, original)
        lab_healthy()


def test_missing_peer_zone_fails_cross_cluster_dns(tmp_path):
    def without_lab_c(corefile: str) -> str:
        return "\n\n".join(b for b in corefile.split("\n\n")
                           if not b.lstrip().startswith("lab-c.local"))

    with changed_corefile("lab-a", without_lab_c):
        records = run_suites(tmp_path, "zone")
    assert_only(records, {("dns/cross-cluster", "lab-a->lab-c"): ["lab-c.local"]})


def test_slow_dns_fails_dns_latency(tmp_path):
    """lab-a's CoreDNS holds every query 1.5 s (the lab's fcdelay plugin): the lookups made
    through it answer correctly but too slowly, measured three times, and only they fail."""
    with changed_corefile("lab-a", lambda corefile: corefile.replace(
            "    errors\n", "    errors\n    fcdelay 1500ms\n")) as slow:
        assert slow.count("fcdelay") == 3, slow  # the cluster's own zone and both peers' zones
        records = run_suites(tmp_path, "slowdns")
    slow_words = ["resolved within 1000 ms", "3 lookups took"]
    assert_only(records, {("dns/in-cluster", "lab-a"): slow_words,
                          ("dns/cross-cluster", "lab-a->lab-b"): ["lab-b.local", *slow_words],
                          ("dns/cross-cluster", "lab-a->lab-c"): ["lab-c.local", *slow_words]})


def test_min_version_above_the_fleet_fails_version_skew(tmp_path):
    expectations = lab_expectations()
    expectations["fleet"]["min_version"] = "1.99"
    records = run_suites(tmp_path, "version", expectations=expectations)
    assert_only(records, {(
        "connectivity/version-skew", c): ["1.99", "v1.34"] for c in CLUSTERS})


def test_stopped_etcd_fails_api_ready_and_control_plane(tmp_path):
    """lab-b's etcd is down: its API server still answers, but is not ready."""
    selected = {(c, ctx) for c in ("connectivity/api-ready", "connectivity/control-plane")
                for ctx in CLUSTERS}
    assert lab("stop", "lab-b-n1.etcd").returncode == 0
    try:
        # with etcd gone, /readyz takes ~4s to say so: give it the time to answer
        expectations = lab_expectations()
        expectations["defaults"]["connectivity"]["api_ready_timeout_s"] = 8
        records = run_suites(tmp_path, "etcd", "-k", "api-ready or control-plane",
                             expect_ids=selected, reachable=["lab-a", "lab-c"],
                             expectations=expectations)
    finally:
        lab("start", "lab-b-n1.etcd")
        lab_healthy()
    assert_only(records, {("connectivity/api-ready", "lab-b"): ["HTTP 500", "failing: [-]etcd"],
                          ("connectivity/control-plane", "lab-b"): ["etcd"]})


@pytest.fixture(autouse=True, scope="module")
def _lab_up():
    proc = lab("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    lab_healthy()
