"""scripts/failover against the lab's Karmada control plane (context ``karmada``), every verb.

A scratch namespace with one Deployment and a PropagationPolicy (clusterAffinity lab-a, lab-b;
spread over exactly one cluster) is created in Karmada; the tests run in file order on it.
The last test restores the switch and switches again with a member context whose token the
member rejects.  Everything is removed at the end: the namespace in Karmada (Karmada removes
it from the members) and every taint the tests or the CLI put on a Cluster.  Run the lab tests
under ``flock /tmp/fclab.lock`` (drain taints a whole member cluster).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetcheck.cli import failover as fo
from fleetcheck.core import kubeconfig as kubeconfig_mod
from fleetcheck.core.targets import build_api_client
from fleetcheck.federation import karmada
from fleetcheck.kube import api as kube_api
from labkit import (
    IMAGE,
    KUBECONFIG,
    RESOURCES,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    lab,
    namespace,
)

# needs the lab's Karmada and Istio (`scripts/lab up`, not `--stage core`)
pytestmark = pytest.mark.full_lab

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "karmada"
NAME = "fo-web"
TEST_TAINT = {"key": "fleetcheck.io/failover-lab-test", "effect": "NoSchedule"}
TIMES: dict[str, float] = {}


def karmada_api(context: str = CONTEXT) -> kube_api.Api:
    kc = kubeconfig_mod.load([Path(KUBECONFIG)])
    return kube_api.Api(build_api_client(kc, context, connect_timeout=3, request_timeout=15),
                       (3, 15), context)


def failover(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "failover"), *args,
                           "--kubeconfig", str(KUBECONFIG)]
                          + ([] if any(a.startswith("--context") for a in args)
                             else ["--context", CONTEXT]),
                          capture_output=True, text=True, timeout=timeout, check=False)
    print(f"$ failover {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def deployment(ns: str) -> dict:
    container = {"name": "sleep", "image": IMAGE["busybox"], "imagePullPolicy": "IfNotPresent",
                 "command": ["sleep", "3600"], "securityContext": RESTRICTED_CONTAINER,
                 "resources": RESOURCES}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}},
                     "template": {"metadata": {"labels": {"app": NAME}},
                                  "spec": {"securityContext": RESTRICTED_POD,
                                           "containers": [container],
                                           "terminationGracePeriodSeconds": 1,
                                           "enableServiceLinks": False}}}}


def policy(ns: str, clusters: list[str]) -> dict:
    return {"apiVersion": "policy.karmada.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": NAME, "namespace": ns},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": NAME}],
                     "placement": {
                         "clusterAffinity": {"clusterNames": clusters},
                         "spreadConstraints": [{"spreadByField": "cluster", "maxGroups": 1,
                                                "minGroups": 1}],
                         "replicaScheduling": {"replicaSchedulingType": "Duplicated"}}}}


def rb(api: kube_api.Api, ns: str) -> dict | None:
    return karmada.binding(api, ns, "Deployment", NAME)


def wait(what: str, probe, timeout: float = 90) -> Any:
    value, _ = karmada.wait_for(probe, timeout, interval_s=1.0)
    assert value, f"timed out after {timeout}s waiting for {what}"
    return value


def healthy_on(api: kube_api.Api, ns: str) -> str | None:
    """The one cluster the workload runs on, applied and healthy, nothing being evicted."""
    b = rb(api, ns)
    placed = karmada.placed_clusters(b)
    if len(placed) == 1 and fo.available(b, placed[0]) and not karmada.eviction_tasks(b):
        return placed[0]
    return None


def set_policy(api: kube_api.Api, ns: str, clusters: list[str]) -> None:
    """Set the policy's clusters and wait until the binding's placement has them."""
    api.apply(policy(ns, clusters))
    wait(f"binding placement {clusters}", lambda: (
        ((rb(api, ns) or {}).get("spec") or {}).get("placement", {}).get("clusterAffinity", {})
        .get("clusterNames") == clusters and healthy_on(api, ns)), 90)


def taints(api: kube_api.Api, cluster: str) -> list[dict]:
    return list((api.get(f"{karmada.CLUSTERS}/{cluster}").get("spec") or {}).get("taints")
                or [])


@pytest.fixture(scope="module")
def scratch() -> Iterator[dict]:
    """The scratch namespace with the Deployment on exactly one of lab-a, lab-b."""
    api = karmada_api()
    ns = f"fleetcheck-failover-{uuid.uuid4().hex[:6]}"
    before = {c: taints(api, c) for c in ("lab-a", "lab-b", "lab-c")}
    try:
        api.apply(namespace(ns))
        api.apply(deployment(ns))
        api.apply(policy(ns, ["lab-a", "lab-b"]))
        on = wait("the Deployment applied and healthy on one cluster",
                  lambda: healthy_on(api, ns), 120)
        yield {"api": api, "ns": ns, "workload": f"{ns}/deployment/{NAME}", "first": on}
    finally:
        problems = []
        for cluster in ("lab-a", "lab-b", "lab-c"):
            try:
                karmada.change_taints(api, cluster, remove=[*fo.DRAIN_TAINTS, TEST_TAINT])
                if taints(api, cluster) != before[cluster]:
                    problems.append(f"taints of {cluster} not restored: {taints(api, cluster)}")
            except Exception as exc:  # noqa: BLE001 - go on cleaning up, report at the end
                problems.append(f"{cluster}: {exc}")
        api.delete(kube_api.object_path("v1", "namespaces", None, ns))
        gone, _ = karmada.wait_for(lambda: api.get(kube_api.object_path(
            "v1", "namespaces", None, ns), missing_ok=True) is None, 90, interval_s=1.0)
        if not gone:
            problems.append(f"namespace {ns} still in Karmada after 90s")
        print("measured:", json.dumps(TIMES))
        assert not problems, problems


def test_status_shows_the_workload(scratch: dict) -> None:
    proc = failover("status")
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^{re.escape(scratch['workload'])}\s+{scratch['first']}\s", proc.stdout,
                     re.MULTILINE), proc.stdout
    assert re.search(r"^lab-c\s+True\s+v1\.", proc.stdout, re.MULTILINE)
    data = json.loads(failover("status", "-o", "json").stdout)
    row = next(w for w in data["workloads"] if w["workload"] == scratch["workload"])
    assert [c["name"] for c in row["clusters"]] == [scratch["first"]]
    assert row["policy"] == f"{scratch['ns']}/{NAME}"
    assert {c["name"] for c in data["clusters"]} >= {"lab-a", "lab-b", "lab-c"}
    token_like = re.compile(r"eyJ[A-Za-z0-9_-]{20,}")  # a service-account token (JWT)
    assert not token_like.search(proc.stdout + proc.stderr)


def test_errors(scratch: dict) -> None:
    proc = failover("status", "--context", "lab-a")
    assert proc.returncode == 2 and "not a Karmada control plane" in proc.stderr
    proc = failover("drain", "lab-z")
    assert proc.returncode == 2 and "unknown cluster 'lab-z'" in proc.stderr
    proc = failover("switch", f"{scratch['workload']}", "--to", "lab-z")
    assert proc.returncode == 2 and "unknown cluster 'lab-z'" in proc.stderr
    proc = failover("switch", f"{scratch['ns']}/deployment/nope", "--to", "lab-c")
    assert proc.returncode == 2 and "unknown workload" in proc.stderr


def test_drain_dry_run_changes_nothing(scratch: dict) -> None:
    api, ns = scratch["api"], scratch["ns"]
    on = healthy_on(api, ns)
    other = {"lab-a": "lab-b", "lab-b": "lab-a"}[on]
    before_taints, before_rb = taints(api, on), rb(api, ns)
    proc = failover("drain", on, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^{re.escape(scratch['workload'])}\s+{on}\s+{other}$", proc.stdout, re.MULTILINE)
    assert "nothing changed" in proc.stdout
    assert taints(api, on) == before_taints
    after = rb(api, ns)
    assert after["metadata"]["resourceVersion"] == before_rb["metadata"]["resourceVersion"]


def test_drain_refuses_when_no_other_cluster_may_take_it(scratch: dict) -> None:
    api, ns = scratch["api"], scratch["ns"]
    on = healthy_on(api, ns)
    set_policy(api, ns, [on])
    try:
        before = taints(api, on)
        proc = failover("drain", on)
        assert proc.returncode == 2, proc.stderr
        assert f"refusing to drain {on}" in proc.stderr and scratch["workload"] in proc.stderr
        assert taints(api, on) == before
        assert healthy_on(api, ns) == on
    finally:
        set_policy(api, ns, ["lab-a", "lab-b"])


def test_drain_moves_it_then_uncordon(scratch: dict) -> None:
    api, ns, workload = scratch["api"], scratch["ns"], scratch["workload"]
    on = healthy_on(api, ns)
    other = {"lab-a": "lab-b", "lab-b": "lab-a"}[on]
    try:
        proc = failover("drain", on, "--timeout", "150", timeout=240)
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"^{re.escape(workload)}\s+{on}\s+{other}$", proc.stdout, re.MULTILINE)
        TIMES["drain_s"] = float(re.search(r"drained \S+ in ([0-9.]+)s", proc.stdout)[1])
        assert karmada.placed_clusters(rb(api, ns)) == [other]
        assert not karmada.eviction_tasks(rb(api, ns))
        keys = {(t["key"], t["effect"]) for t in taints(api, on)}
        assert {(t["key"], t["effect"]) for t in fo.DRAIN_TAINTS} <= keys

        # a drained (NoExecute-tainted) cluster is no switch target
        proc = failover("switch", workload, "--to", on)
        assert proc.returncode == 2
        assert f"{on} is tainted" in proc.stderr and "NoExecute" in proc.stderr
        assert karmada.placed_clusters(rb(api, ns)) == [other]

        # the drained cluster's own workloads are gone from it: draining the other one now
        # has nowhere to go (the policy allows only lab-a and lab-b)
        proc = failover("drain", other, "--dry-run")
        assert proc.returncode == 2 and f"refusing to drain {other}" in proc.stderr
    finally:
        proc = failover("uncordon", on)
    assert proc.returncode == 0, proc.stderr
    assert f"uncordoned {on}" in proc.stdout
    keys = {(t["key"], t["effect"]) for t in taints(api, on)}
    assert not keys & {(t["key"], t["effect"]) for t in fo.DRAIN_TAINTS}


def test_drain_interrupted_leaves_it_drained(scratch: dict) -> None:
    """Ctrl-C while drain waits: exit 130, the cluster stays tainted, the message says so.
    The Karmada scheduler is stopped meanwhile, so the wait cannot end before the signal."""
    api, ns, workload = scratch["api"], scratch["ns"], scratch["workload"]
    on = healthy_on(api, ns)
    other = {"lab-a": "lab-b", "lab-b": "lab-a"}[on]
    stopped = lab("stop", "karmada.scheduler", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    try:
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "failover"), "drain",
                                 on, "--timeout", "120", "--kubeconfig", str(KUBECONFIG),
                                 "--context", CONTEXT],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()
        assert first.startswith(f"tainted {on}"), first + proc.stderr.read()
        wait("the taint eviction", lambda: any(
            t.get("fromCluster") == on for t in karmada.eviction_tasks(rb(api, ns))), 60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        print(f"$ failover drain {on} (SIGINT) -> {proc.returncode}\n{out}{first}{err}")
        assert proc.returncode == 130, err
        assert f"interrupted: {on} stays cordoned and drained" in err
        assert f"failover uncordon {on}" in err
        keys = {(t["key"], t["effect"]) for t in taints(api, on)}
        assert {(t["key"], t["effect"]) for t in fo.DRAIN_TAINTS} <= keys
        proc = failover("status")
        assert "evicting from " + on in proc.stdout
    finally:
        started = lab("start", "karmada.scheduler", timeout=120)
        assert started.returncode == 0, started.stderr
    assert wait(f"{workload} healthy on {other}", lambda: healthy_on(api, ns) == other, 120)
    proc = failover("uncordon", on)
    assert proc.returncode == 0, proc.stderr


def test_switch_refuses_a_tainted_target(scratch: dict) -> None:
    api, ns = scratch["api"], scratch["ns"]
    on = healthy_on(api, ns)
    karmada.change_taints(api, "lab-c", add=[TEST_TAINT])
    try:
        proc = failover("switch", scratch["workload"], "--to", "lab-c")
        assert proc.returncode == 2
        assert "lab-c is tainted fleetcheck.io/failover-lab-test:NoSchedule" in proc.stderr
        assert "nothing changed" in proc.stderr
        pp = api.get(karmada.policy_path("PropagationPolicy", ns, NAME))
        assert pp["spec"]["placement"]["clusterAffinity"] == {"clusterNames": ["lab-a", "lab-b"]}
        assert healthy_on(api, ns) == on
    finally:
        karmada.change_taints(api, "lab-c", remove=[TEST_TAINT])


def test_switch_to_lab_c(scratch: dict) -> None:
    api, ns, workload = scratch["api"], scratch["ns"], scratch["workload"]
    on = healthy_on(api, ns)
    proc = failover("switch", workload, "--to", "lab-c", "--timeout", "150", timeout=240)
    assert proc.returncode == 0, proc.stderr
    match = re.search(rf"{re.escape(workload)}: Available on lab-c after ([0-9.]+)s \(was on "
                      rf"{on}\); member lab-c \(context lab-c\): availableReplicas >= replicas",
                      proc.stdout)
    assert match, proc.stdout
    TIMES["switch_s"] = float(match[1])
    assert karmada.placed_clusters(rb(api, ns)) == ["lab-c"]
    pp = api.get(karmada.policy_path("PropagationPolicy", ns, NAME))
    assert pp["spec"]["placement"]["clusterAffinity"] == {"clusterNames": ["lab-c"]}
    previous = pp["metadata"]["annotations"][fo.PREVIOUS_AFFINITY_ANNOTATION]
    assert json.loads(previous) == {"clusterNames": ["lab-a", "lab-b"]}
    member = karmada_api("lab-c").get(
        kube_api.object_path("apps/v1", "deployments", ns, NAME))
    assert member["status"].get("availableReplicas", 0) >= 1

    # again: already there, nothing to change
    proc = failover("switch", workload, "--to", "lab-c", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["available"] is True
    assert "already places" in proc.stderr


def test_restore_then_switch_with_a_member_it_cannot_check(scratch: dict,
                                                           tmp_path: Path) -> None:
    """``restore`` undoes the switch above; a switch whose member cannot be checked (its
    context presents a token the member rejects: HTTP 401) exits 3, says what is left and how
    to undo it, never 0."""
    api, ns, workload = scratch["api"], scratch["ns"], scratch["workload"]
    assert healthy_on(api, ns) == "lab-c"
    proc = failover("restore", workload)
    assert proc.returncode == 0, proc.stderr
    assert f"undo: 'failover switch {workload} --to lab-c'" in proc.stderr
    pp = api.get(karmada.policy_path("PropagationPolicy", ns, NAME))
    assert pp["spec"]["placement"]["clusterAffinity"] == {"clusterNames": ["lab-a", "lab-b"]}
    assert fo.PREVIOUS_AFFINITY_ANNOTATION not in (pp["metadata"].get("annotations") or {})
    wait("the workload back on lab-a or lab-b",
         lambda: healthy_on(api, ns) in ("lab-a", "lab-b"), 120)

    # first file wins per entry: this lab-c context (the lab's lab-c cluster entry, a user
    # with a made-up token) shadows the lab kubeconfig's
    bogus_token = f"fleetcheck-not-a-token-{uuid.uuid4().hex}"
    lab_c = kubeconfig_mod.load([Path(KUBECONFIG)]).contexts["lab-c"]["cluster"]
    bogus = tmp_path / "kubeconfig"
    bogus.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "clusters": [],
        "users": [{"name": "fleetcheck-bogus", "user": {"token": bogus_token}}],
        "contexts": [{"name": "lab-c", "context": {"cluster": lab_c,
                                                   "user": "fleetcheck-bogus"}}]}))
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "failover"), "switch",
                           workload, "--to", "lab-c", "--timeout", "150", "--kubeconfig",
                           str(bogus), "--kubeconfig", str(KUBECONFIG), "--context", CONTEXT],
                          capture_output=True, text=True, timeout=240, check=False)
    print(f"$ failover switch {workload} --to lab-c (lab-c's token rejected) -> "
          f"{proc.returncode}\n{proc.stdout}{proc.stderr}")
    assert proc.returncode == 3, proc.stderr
    assert (f"{workload} is applied and Healthy on lab-c as Karmada reports it, but member "
            "lab-c (context lab-c) could not be checked") in proc.stderr
    assert "401" in proc.stderr
    assert f"now places {workload} on lab-c only" in proc.stderr
    assert f"'failover restore {workload}'" in proc.stderr
    assert bogus_token not in proc.stdout + proc.stderr
    assert karmada.placed_clusters(rb(api, ns)) == ["lab-c"]  # the change stays, as said
