"""The lab itself: real clusters, real DNS, real routing between clusters, and nothing past them.

These tests need root and a built lab; `scripts/lab up` is idempotent, so the module fixture
calls it and reuses a healthy lab."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest
from labkit import (
    IMAGE,
    apply,
    exec_in,
    get,
    kubectl,
    lab,
    namespace,
    pod,
    wait_ready,
)

CLUSTERS = ["lab-a", "lab-b", "lab-c"]
NS = "fclab-e2e"
pytestmark = pytest.mark.lab


@pytest.fixture(scope="module", autouse=True)
def lab_up():
    proc = lab("up")
    assert proc.returncode == 0, f"scripts/lab up failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def workload(lab_up):
    """In every cluster: an echo pod behind a ClusterIP service, a busybox and a curl pod."""
    for c in CLUSTERS:
        kubectl(c, "delete", "namespace", NS, "--ignore-not-found", "--wait=true",
                timeout=120)
        apply(c, namespace(NS))
        wait_for_sa(c)
        apply(
            c,
            pod("echo", NS, IMAGE["echo"], labels={"app": "echo"}, port=8080, env={
                "CLUSTER_NAME": c,
                "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
                "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
            }),
            pod("busybox", NS, IMAGE["busybox"], command=["sleep", "3600"]),
            pod("curl", NS, IMAGE["curl"], command=["sleep", "3600"]),
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": NS},
             "spec": {"selector": {"app": "echo"},
                      "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
        )
    info = {}
    for c in CLUSTERS:
        wait_ready(c, NS, "echo", "busybox", "curl")
        info[c] = {
            "echo_pod_ip": get(c, "pod", "echo", NS)["status"]["podIP"],
            "echo_cluster_ip": get(c, "service", "echo", NS)["spec"]["clusterIP"],
            "kubernetes_ip": get(c, "service", "kubernetes", "default")["spec"]["clusterIP"],
        }
    yield info
    for c in CLUSTERS:
        kubectl(c, "delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def wait_for_sa(context: str) -> None:
    from labkit import wait_for

    wait_for(f"default ServiceAccount in {context}/{NS}", lambda: kubectl(
        context, "get", "serviceaccount", "default", f"--namespace={NS}",
        check=False).returncode == 0, timeout=30)


@pytest.mark.parametrize("context", CLUSTERS)
def test_all_nodes_ready(context):
    nodes = json.loads(kubectl(context, "get", "nodes", "-o", "json").stdout)["items"]
    expected = 2 if context == "lab-c" else 1
    assert len(nodes) == expected
    for n in nodes:
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True", f"{context}: node {n['metadata']['name']} is not Ready"
    version = json.loads(kubectl(context, "version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith(("v1.33.", "v1.34.")), version


@pytest.mark.parametrize("context", CLUSTERS)
def test_nslookup_kubernetes_default_gives_service_ip(context, workload):
    r = exec_in(context, NS, "busybox", "nslookup", "kubernetes.default.svc.cluster.local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert workload[context]["kubernetes_ip"] in r.stdout.split("Name:", 1)[1], r.stdout
    r = exec_in(context, NS, "busybox", "nslookup", "kubernetes.default")
    assert workload[context]["kubernetes_ip"] in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("context", CLUSTERS)
def test_pod_reaches_pod_and_cluster_ip(context, workload):
    for addr in (f"{workload[context]['echo_pod_ip']}:8080",
                 f"{workload[context]['echo_cluster_ip']}:80", "echo"):
        r = exec_in(context, NS, "busybox", "timeout", "5", "wget", "-q", "-O", "-",
                    f"http://{addr}/")
        assert r.returncode == 0, f"{context}: wget {addr}: {r.stderr}"
        assert json.loads(r.stdout)["cluster"] == context


PAIRS = list(itertools.permutations(CLUSTERS, 2))


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}->{d}" for s, d in PAIRS])
def test_cross_cluster_echo(src, dst, workload):
    """A curl pod in src gets dst's echo answer by pod IP, ClusterIP and dst's zone name."""
    targets = {
        "pod IP": f"http://{workload[dst]['echo_pod_ip']}:8080/",
        "ClusterIP": f"http://{workload[dst]['echo_cluster_ip']}/",
        "zone name": f"http://echo.{NS}.svc.{dst}.local/",
    }
    for how, url in targets.items():
        r = exec_in(src, NS, "curl", "curl", "-sS", "--max-time", "5", url)
        assert r.returncode == 0, f"{src}->{dst} by {how} ({url}): {r.stderr}"
        answer = json.loads(r.stdout)
        assert answer["cluster"] == dst, f"{src}->{dst} by {how}: answered by {answer}"
        assert answer["pod"] == "echo"


def test_zone_name_resolves_to_peer_truth(workload):
    r = exec_in("lab-a", NS, "busybox", "nslookup", f"echo.{NS}.svc.lab-b.local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert workload["lab-b"]["echo_cluster_ip"] in r.stdout.split("Name:", 1)[1]


@pytest.mark.parametrize("context", CLUSTERS)
def test_restricted_contexts_are_denied(context):
    def can(ctx: str, *args: str) -> str:
        return kubectl(ctx, "auth", "can-i", *args, check=False).stdout.strip()

    viewer, editor = f"viewer@{context}", f"editor@{context}"
    assert can(viewer, "list", "pods", "--all-namespaces") == "yes"
    assert can(viewer, "create", "pods", "-n", "default") == "no"
    assert can(viewer, "get", "secrets", "-n", "kube-system") == "no"
    assert can(viewer, "delete", "nodes") == "no"
    assert can(editor, "create", "deployments", "-n", "team-a") == "yes"
    assert can(editor, "create", "deployments", "-n", "default") == "no"
    assert can(editor, "list", "nodes") == "no"
    denied = kubectl(viewer, "create", "namespace", "fclab-viewer-must-fail", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


@pytest.mark.parametrize("context", CLUSTERS)
def test_isolation_nothing_resolves_or_routes_outside(context, workload):
    """No lab pod resolves a public name or reaches an address past the lab."""
    r = exec_in(context, NS, "busybox", "nslookup", "example.com")
    assert r.returncode != 0 or "Address" not in r.stdout.split("example.com", 1)[-1], r.stdout
    # TEST-NET-3, a documentation address: the first lab hop must refuse it at once.
    # (busybox 1.35's `wget -T` crashes; `timeout` bounds it instead)
    r = exec_in(context, NS, "busybox", "timeout", "3", "wget", "-q", "-O", "-",
                "http://203.0.113.7/")
    assert r.returncode != 0
    assert "unreachable" in r.stderr.lower(), r.stderr
    corefile = get(context, "configmap", "coredns", "kube-system")["data"]["Corefile"]
    assert "forward" not in corefile and "proxy" not in corefile


def test_no_lab_namespace_has_a_default_route():
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout.split()
    lab_ns = [n for n in names if n.startswith("fclab-")]
    assert len(lab_ns) >= 5
    for ns in lab_ns:
        out = subprocess.run(["ip", "-n", ns, "route", "show", "default"], capture_output=True,
                             text=True, check=True).stdout
        assert out.strip() == "", f"{ns} has a default route: {out}"


@pytest.mark.full_lab
def test_karmada_is_up_and_listens_on_loopback_only():
    """The lab's Karmada: its daemons in `status`, every member Cluster Ready, and every
    socket it listens on bound to 127.0.0.1 (nothing of it is reachable from outside)."""
    status = lab("status").stdout
    for daemon in ("etcd", "apiserver", "aggregated-apiserver", "webhook",
                   "kube-controller-manager", "controller-manager", "scheduler"):
        assert f"karmada.{daemon} " in status and "DEAD" not in status, status
    assert "members=3/3 Ready" in status, status
    clusters = json.loads(kubectl("karmada", "get", "clusters", "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in clusters) == ["lab-a", "lab-b", "lab-c"]
    pids = set()
    for pidfile in Path("/run/fleetcheck-lab/pids").glob("karmada.*.pid"):
        pid = pidfile.read_text().strip()
        pids.add(pid)
        pids.update(subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True,
                                   check=False).stdout.split())
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    ours = [line for line in listening if any(f"pid={p}," in line for p in pids)]
    assert ours, "no Karmada listener found"
    for line in ours:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), f"Karmada listens beyond loopback: {line}"


@pytest.mark.full_lab
def test_istio_multi_primary_every_pair_linked():
    """The lab's Istio: istiod Available in every cluster (`status`), and every istiod reads
    both peers as synced remote clusters (its debug/clusterz, asked from inside the pod)."""
    status = lab("status").stdout
    assert "istiod=3/3 Available" in status, status
    for ctx in ("lab-a", "lab-b", "lab-c"):
        pod = kubectl(ctx, "-n", "istio-system", "get", "pods", "-l", "app=istiod", "-o",
                      "jsonpath={.items[0].metadata.name}").stdout
        out = kubectl(ctx, "-n", "istio-system", "exec", pod, "--", "pilot-discovery",
                      "request", "GET", "debug/clusterz").stdout
        clusters = {c["id"]: c for c in json.loads(out)}
        assert set(clusters) == {"lab-a", "lab-b", "lab-c"}, out
        for peer, c in clusters.items():
            if peer != ctx:
                assert c["syncStatus"] == "synced", (ctx, c)
                assert c["secretName"] == f"istio-system/istio-remote-secret-{peer}", (ctx, c)
