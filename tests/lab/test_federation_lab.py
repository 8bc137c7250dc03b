"""The federation/* suite against the lab's Karmada control plane (context ``karmada``): all
conformant when healthy, and for each check a fault that makes it non-conformant, with the
exact verdict of every other federation check asserted too.

Faults: Karmada components stopped (``scripts/lab stop karmada.<component>``), the lab's
ClusterTaintPolicy deleted, a taint on Cluster lab-b, a ClusterOverridePolicy of our own
(``fleetcheck-selftest-leak``).  Every fault is undone in a ``finally`` and the lab is waited
healthy again (``scripts/lab status`` exits 0).  Run under ``flock /tmp/fclab.lock``: others
inject faults into the same lab.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fclab import CLUSTERS, REPO, results, run
from labkit import KUBECONFIG, LAB, get, kubectl, lab, lab_healthy, run_namespaces_left, wait_for

# needs the lab's Karmada and Istio (`scripts/lab up`, not `--stage core`)
pytestmark = pytest.mark.full_lab

SUITE = "suites/test_federation.py"
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
KARMADA = "karmada"
CONTEXTS = [*CLUSTERS, KARMADA]
CHECKS = ["federation/control-plane", "federation/clusters-ready", "federation/propagation",
          "federation/override-scoped", "federation/drift-revert"]
KARMADA_DAEMONS = ["etcd", "apiserver", "aggregated-apiserver", "webhook",
                   "kube-controller-manager", "controller-manager", "scheduler"]
TAINT_POLICY = "fleetcheck-lab-not-ready"
NOT_A_CONTROL_PLANE = "is not a federation control plane"
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                 "selfLink")


@dataclass
class FedRun:
    records: dict[tuple[str, str], dict]
    output: str
    probe_run_id: str
    seconds: float

    def on_karmada(self, check_id: str) -> dict:
        return self.records[(check_id, KARMADA)]


def run_fed(tmp_path: Path, tag: str, *extra: str, expectations: dict | None = None,
            env_extra: dict[str, str] | None = None, timeout: float = 300,
            unreachable: dict[str, str] | None = None) -> FedRun:
    """Run the federation suite on lab-* and karmada; every check must have a record, and
    every one on lab-a|b|c is skipped as not a control plane, except on the ``unreachable``
    contexts: unknown there (whether they are control planes cannot be told), the message
    containing the given fragment."""
    exp_file = EXPECTATIONS
    if expectations is not None:
        exp_file = tmp_path / f"expectations-{tag}.yaml"
        exp_file.write_text(yaml.safe_dump(expectations))
    report = tmp_path / f"report-{tag}"
    start = time.monotonic()
    proc = run([SUITE, "--contexts=lab-*,karmada", f"--kubeconfig={KUBECONFIG}",
                f"--expectations={exp_file}", f"--report-dir={report}",
                f"--run-id=fc-fed-{tag}-{secrets.token_hex(3)}",
                "--probe-image=busybox=lab.fleetcheck.invalid/busybox:1.35.0", "-q", *extra],
               cwd=REPO, timeout=timeout, env_extra=env_extra)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-3000:]
    data = results(report)
    records = {(c["check_id"], c["context"]): c for c in data["checks"]}
    want = {(c, ctx) for c in CHECKS for ctx in CONTEXTS}
    assert set(records) == want, f"checks run: {sorted(set(records) ^ want)}\n{output[-2000:]}"
    unreachable = unreachable or {}
    for ctx in CLUSTERS:
        for check_id in CHECKS:
            record = records[(check_id, ctx)]
            verdict, fragment = (("unknown", unreachable[ctx]) if ctx in unreachable
                                 else ("skipped", f"{ctx} {NOT_A_CONTROL_PLANE}"))
            assert record["verdict"] == verdict, (check_id, ctx, record["verdict"],
                                                  record["message"])
            assert fragment in record["message"], (check_id, ctx, record["message"])
    return FedRun(records, output, data["probe_run_id"], seconds)


def assert_karmada(fed: FedRun, expected: dict[str, tuple[str, list[str]]]) -> None:
    """The federation checks on karmada: those in ``expected`` have that verdict and every
    fragment in their message; all others are conformant."""
    for check_id in CHECKS:
        record = fed.on_karmada(check_id)
        verdict, fragments = expected.get(check_id, ("conformant", []))
        assert record["verdict"] == verdict, (check_id, record["verdict"], record["message"])
        for fragment in fragments:
            assert fragment in record["message"], (check_id, fragment, record["message"])


def lab_expectations(**federation: Any) -> dict:
    """The lab's expectations with ``defaults.federation`` settings of the test's own."""
    data = yaml.safe_load(EXPECTATIONS.read_text())
    data.setdefault("defaults", {}).setdefault("federation", {}).update(federation)
    return data



def restore_karmada() -> None:
    """Start every Karmada component that is not running (`start` is a no-op for those that
    are), then wait until the lab is healthy (Karmada readyz 200, every member Ready)."""
    for daemon in KARMADA_DAEMONS:
        lab("start", f"karmada.{daemon}")
    lab_healthy(timeout=240, interval=3)


@contextmanager
def stopped(component: str) -> Iterator[None]:
    proc = lab("stop", component)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield
    finally:
        restore_karmada()


def namespaces_left(probe_run_id: str) -> dict[str, list[str]]:
    return run_namespaces_left(probe_run_id, CONTEXTS)


def cluster_taints(name: str) -> list[dict]:
    return get(KARMADA, "cluster", name).get("spec", {}).get("taints") or []


def set_cluster_taints(name: str, taints: list[dict]) -> None:
    kubectl(KARMADA, "patch", "cluster", name, "--type=merge",
            "-p", json.dumps({"spec": {"taints": taints}}))


def cluster_ready(name: str) -> str:
    for cond in get(KARMADA, "cluster", name).get("status", {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"]
    return "Unknown"


# --- healthy ---------------------------------------------------------------------------------

def test_healthy_federation_is_conformant_and_cleaned_up(tmp_path):
    fed = run_fed(tmp_path, "healthy")
    assert_karmada(fed, {})
    latency = next(e["content"] for e in fed.on_karmada("federation/propagation")["evidence"]
                   if e["name"] == "latency")
    assert "applied on every placed member after" in latency, latency
    assert "Deployment available after" in latency, latency
    drift = next(e["content"] for e in fed.on_karmada("federation/drift-revert")["evidence"]
                 if e["name"] == "drift")
    assert "reverted to" in drift, drift
    # the namespace goes from Karmada and then, through Karmada, from the members
    deadline = time.monotonic() + 45
    left = namespaces_left(fed.probe_run_id)
    while left and time.monotonic() < deadline:
        time.sleep(2)
        left = namespaces_left(fed.probe_run_id)
    assert not left, f"the run left namespaces behind: {left}"


# --- control-plane ---------------------------------------------------------------------------

def test_deleted_taint_policy_fails_control_plane(tmp_path):
    policy = get(KARMADA, "clustertaintpolicy", TAINT_POLICY)
    for key in SERVER_FIELDS:
        policy["metadata"].pop(key, None)
    policy.pop("status", None)
    kubectl(KARMADA, "delete", "clustertaintpolicy", TAINT_POLICY)
    try:
        fed = run_fed(tmp_path, "taintpolicy")
    finally:
        kubectl(KARMADA, "create", "-f", "-", input=json.dumps(policy))
    restored = get(KARMADA, "clustertaintpolicy", TAINT_POLICY)
    assert restored["spec"] == policy["spec"]
    assert_karmada(fed, {"federation/control-plane": ("non-conformant", [
        "no ClusterTaintPolicy taints a not-Ready member NoExecute"])})


def test_stopped_webhook_fails_control_plane(tmp_path):
    with stopped("karmada.webhook"):
        fed = run_fed(tmp_path, "webhook")
    assert_karmada(fed, {
        "federation/control-plane": ("non-conformant", [
            "a dry-run PropagationPolicy was refused: HTTP 500",
            'failed calling webhook "propagationpolicy.karmada.io"', "connection refused"]),
        # the probe's OverridePolicy (created before its PropagationPolicy) is refused too
        "federation/propagation": ("unknown", [
            "karmada: creating the probe workload failed: apply OverridePolicy",
            'failed calling webhook "overridepolicy.karmada.io"', "connection refused"]),
        "federation/override-scoped": ("unknown", ["creating the probe workload failed"]),
        "federation/drift-revert": ("unknown", ["creating the probe workload failed"]),
    })


# --- clusters-ready --------------------------------------------------------------------------

def test_unexpected_taint_fails_clusters_ready(tmp_path):
    before = cluster_taints("lab-b")
    taint = {"key": "fleetcheck.io/selftest", "value": "x", "effect": "NoSchedule"}
    set_cluster_taints("lab-b", [*before, taint])
    try:
        fed = run_fed(tmp_path, "taint")
    finally:
        set_cluster_taints("lab-b", before)
    assert cluster_taints("lab-b") == before
    assert_karmada(fed, {"federation/clusters-ready": ("non-conformant", [
        "lab-b: unexpected taint fleetcheck.io/selftest=x:NoSchedule"])})
    assert "lab-a:" not in fed.on_karmada("federation/clusters-ready")["message"]
    # the probe is placed on Ready members the scheduler accepts: lab-a and lab-c
    placed = json.loads(next(e["content"] for e in fed.on_karmada(
        "federation/propagation")["evidence"] if e["name"] == "propagation"))["placement"]
    assert placed == ["lab-a", "lab-c"], placed


def test_member_apiserver_down_fails_clusters_ready(tmp_path):
    """lab-c's API server stops: Karmada marks lab-c Ready=False (and the lab's
    ClusterTaintPolicy taints it NoExecute); both are gone again once it is back."""
    proc = lab("stop", "lab-c-n1.kube-apiserver")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        wait_for("Karmada to show lab-c Ready=False", lambda: cluster_ready("lab-c") == "False",
                 timeout=90, interval=2)
        fed = run_fed(tmp_path, "memberdown", unreachable={
            "lab-c": "could not be carried out: API server https://127.0.0.1:26445"})
    finally:
        lab("start", "lab-c-n1.kube-apiserver")
        wait_for("lab-c Ready again", lambda: cluster_ready("lab-c") == "True", timeout=120,
                 interval=2)
        wait_for("the not-ready taint removed from lab-c",
                 lambda: not cluster_taints("lab-c"), timeout=60, interval=2)
        lab_healthy(timeout=240, interval=3)
    message = fed.on_karmada("federation/clusters-ready")["message"]
    expected = {"federation/clusters-ready": ("non-conformant", [
        "lab-c: Ready=False (ClusterNotReachable: cluster is not reachable)",
        # Karmada's own NoSchedule taint, and the lab's ClusterTaintPolicy's NoExecute one
        "lab-c: unexpected taint cluster.karmada.io/not-ready:NoSchedule",
        "lab-c: unexpected taint cluster.karmada.io/not-ready:NoExecute"])}
    assert "lab-a:" not in message and "lab-b:" not in message, message
    # the probe is placed on lab-a and lab-b (the first two Ready members): the rest is
    # conformant
    assert_karmada(fed, expected)


# --- propagation -----------------------------------------------------------------------------

def test_stopped_scheduler_fails_propagation(tmp_path):
    expectations = lab_expectations(propagation_timeout_s=8)
    with stopped("karmada.scheduler"):
        fed = run_fed(tmp_path, "scheduler", expectations=expectations)
    assert_karmada(fed, {
        "federation/propagation": ("non-conformant", [
            "ResourceBinding fleetcheck-fed-configmap not Scheduled and FullyApplied within 8s",
            "ResourceBinding fleetcheck-fed-deployment not Scheduled and FullyApplied within 8s"]),
        "federation/override-scoped": ("unknown", ["the probe workload did not propagate"]),
        "federation/drift-revert": ("unknown", ["the probe workload did not propagate"]),
    })


# --- override-scoped -------------------------------------------------------------------------

LEAK_POLICY = {
    "apiVersion": "policy.karmada.io/v1alpha1", "kind": "ClusterOverridePolicy",
    "metadata": {"name": "fleetcheck-selftest-leak"},
    "spec": {
        "resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "fleetcheck-fed"}],
        "overrideRules": [{
            "targetCluster": {"clusterNames": CLUSTERS},
            "overriders": {"labelsOverrider": [{
                "operator": "add", "value": {"fleetcheck.io/override": "leak"}}]},
        }],
    },
}


def test_leaking_cluster_override_fails_override_scoped(tmp_path):
    """A ClusterOverridePolicy labels every fleetcheck-fed ConfigMap: the copy on lab-b (not
    the probe's override target lab-a) carries the label.  On lab-a the probe's own
    OverridePolicy is applied after the ClusterOverridePolicy and wins."""
    kubectl(KARMADA, "create", "-f", "-", input=json.dumps(LEAK_POLICY))
    try:
        fed = run_fed(tmp_path, "override")
    finally:
        kubectl(KARMADA, "delete", "clusteroverridepolicy", "fleetcheck-selftest-leak",
                "--ignore-not-found")
    record = fed.on_karmada("federation/override-scoped")
    assert_karmada(fed, {"federation/override-scoped": ("non-conformant", [
        ("lab-b: the ConfigMap carries fleetcheck.io/override=leak, an override that targets "
         "lab-a only")])})
    assert "does not carry" not in record["message"], record["message"]
    table = next(e["content"] for e in record["evidence"]
                 if e["name"] == "override label on the members' ConfigMap")
    assert [line.split() for line in table.splitlines()[2:]] == [
        ["lab-a", "lab-a"], ["lab-b", "leak"], ["lab-c", "(no", "copy)"]], table


# --- drift-revert ----------------------------------------------------------------------------

STOP_BEFORE_DRIFT = '''
import os
import subprocess
import sys


def pytest_runtest_setup(item):
    """Stop Karmada's controller-manager just before drift-revert runs on karmada."""
    if item.name == "test_drift_revert[karmada]":
        proc = subprocess.run([sys.executable, os.environ["FC_LAB"], "stop",
                               "karmada.controller-manager"], capture_output=True, text=True)
        with open(os.environ["FC_STOP_MARK"], "w") as mark:
            mark.write(f"{proc.returncode} {proc.stdout} {proc.stderr}")
'''


def test_stopped_controller_manager_fails_drift_revert(tmp_path):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "fc_stop_before_drift.py").write_text(STOP_BEFORE_DRIFT)
    mark = tmp_path / "stopped"
    expectations = lab_expectations(drift_revert_timeout_s=5)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_dir),
                                                      os.environ.get("PYTHONPATH")])),
           "FC_LAB": str(LAB), "FC_STOP_MARK": str(mark)}
    try:
        fed = run_fed(tmp_path, "drift", "--concurrency=1", "-p", "fc_stop_before_drift",
                      expectations=expectations, env_extra=env)
    finally:
        restore_karmada()
    assert mark.read_text().startswith("0 "), mark.read_text()
    assert_karmada(fed, {"federation/drift-revert": ("non-conformant", [
        "still has data.probe='drifted-by-fleetcheck'", "did not revert the drift"])})


# --- Karmada down ----------------------------------------------------------------------------

def test_stopped_karmada_apiserver_makes_federation_unknown(tmp_path):
    with stopped("karmada.apiserver"):
        fed = run_fed(tmp_path, "apiserver", timeout=120)
    assert fed.seconds < 60, f"the run took {fed.seconds:.0f}s"
    refused = ("could not be carried out: API server https://127.0.0.1:26460 unreachable: "
               "connection refused")
    assert_karmada(fed, {c: ("unknown", [refused]) for c in CHECKS})


@pytest.fixture(autouse=True, scope="module")
def _lab_healthy_before_and_after():
    lab_healthy(timeout=240, interval=3)
    yield
    lab_healthy(timeout=240, interval=3)
