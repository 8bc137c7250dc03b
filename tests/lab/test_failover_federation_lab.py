"""failover/cluster-outage and failover/drain against the lab's Karmada: conformant on a healthy
lab, non-conformant with a precise message under the faults they exist for, skipped without
--allow-disruptive.  Every test restores the lab (components, taints, policies) afterwards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import fclab
import labkit
import pytest
import yaml

# needs the lab's Karmada and Istio (`scripts/lab up`, not `--stage core`)
pytestmark = pytest.mark.full_lab

LAB_EXPECTATIONS = fclab.REPO / "scripts" / "lab" / "expectations.yaml"
SUITE = "suites/test_failover.py"
KARMADA_STATE = Path("/var/lib/fleetcheck-lab/karmada")
TAINT_POLICY = "fleetcheck-lab-not-ready"


def _expectations(tmp_path: Path, **failover: object) -> Path:
    data = yaml.safe_load(LAB_EXPECTATIONS.read_text())
    fo = data["defaults"].setdefault("failover", {})
    fo.update(failover)
    lab = str(fclab.REPO / "scripts" / "lab")
    for verb in ("stop", "start"):  # the copy lives elsewhere: name the lab CLI absolutely
        fo["outage"][verb] = [lab if a == "." else a for a in fo["outage"][verb]]
    path = tmp_path / "expectations.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(tmp_path: Path, lab_kubeconfig: Path, expectations: Path, *extra: str):
    report = tmp_path / "report"
    if "-k" not in extra:  # failover/node-drain (same module) has lab tests of its own
        extra = (*extra, "-k", "cluster_outage or test_drain")
    proc = fclab.run([str(fclab.REPO / SUITE), f"--kubeconfig={lab_kubeconfig}",
                      "--contexts=lab-*,karmada", f"--expectations={expectations}",
                      *fclab.LAB_IMAGES, f"--report-dir={report}", "--concurrency=1", *extra],
                     cwd=fclab.REPO, timeout=600)
    return proc, report


def _check(report: Path, check_id: str) -> dict:
    return next(c for c in fclab.results(report)["checks"]
                if c["check_id"] == check_id and c["context"] == "karmada")


def _clusters() -> list[dict]:
    return json.loads(labkit.kubectl("karmada", "get", "clusters", "-o", "json").stdout)["items"]


def _wait_lab_healthy(timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if labkit.lab("status").returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"lab not healthy again: {labkit.lab('status').stdout[-2000:]}")


def _assert_restored() -> None:
    """Every member Ready again and no taint fleetcheck set left on any Cluster."""
    _wait_lab_healthy()
    for cluster in _clusters():
        keys = [t["key"] for t in cluster["spec"].get("taints") or []]
        assert not [k for k in keys if "fleetcheck.io/" in k], (cluster["metadata"], keys)


@pytest.fixture
def restore_karmada():
    yield
    (KARMADA_STATE / "controller-manager.extra-args").unlink(missing_ok=True)
    labkit.lab("stop", "karmada.controller-manager")
    labkit.lab("start", "karmada.controller-manager")
    _assert_restored()


def test_outage_and_drain_conformant_on_a_healthy_lab(tmp_path, lab_kubeconfig):
    proc, report = _run(tmp_path, lab_kubeconfig, _expectations(tmp_path),
                        "--allow-disruptive")
    outage, drain = _check(report, "failover/cluster-outage"), _check(report, "failover/drain")
    assert (outage["verdict"], drain["verdict"]) == ("conformant", "conformant"), proc.stdout[-4000:]
    rto = next(e["content"] for e in outage["evidence"] if e["name"] == "RTO")
    assert "outage commands" in rto and float(rto.split("s", 1)[0]) < 90
    timeline = next(e["content"] for e in outage["evidence"] if e["name"] == "failover timeline")
    for step in ("graceful-eviction tasks cleared", "Ready again", "no copy left on",
                 "no flap-back"):
        assert step in timeline, timeline
    drained = next(e["content"] for e in drain["evidence"] if e["name"] == "drain timeline")
    assert "not the cordoned" in drained and "stayed on the cordoned" in drained, drained
    assert fclab.verdicts(report)["test_cluster_outage[lab-a]"] == "skipped"
    _assert_restored()


def test_skipped_without_allow_disruptive(tmp_path, lab_kubeconfig):
    proc, report = _run(tmp_path, lab_kubeconfig, _expectations(tmp_path))
    for check_id in ("failover/cluster-outage", "failover/drain"):
        entry = _check(report, check_id)
        assert entry["verdict"] == "skipped", proc.stdout[-3000:]
        assert "--allow-disruptive" in entry["message"]


def test_no_eviction_makes_outage_and_drain_non_conformant(tmp_path, lab_kubeconfig,
                                                            restore_karmada):
    """Karmada's controller-manager without NoExecute taint eviction: a lost member keeps its
    workload (outage) and a NoExecute taint moves nothing (drain)."""
    (KARMADA_STATE / "controller-manager.extra-args").write_text(
        "--enable-no-execute-taint-eviction=false\n")
    labkit.lab("stop", "karmada.controller-manager")
    assert labkit.lab("start", "karmada.controller-manager").returncode == 0
    _wait_lab_healthy()
    # one run each: a workload left where the outage put it must not decide the drain's verdict
    expectations = _expectations(tmp_path, rto_s=20)
    proc, report = _run(tmp_path / "outage", lab_kubeconfig, expectations, "--allow-disruptive",
                        "-k", "cluster_outage")
    outage = _check(report, "failover/cluster-outage")
    assert outage["verdict"] == "non-conformant", proc.stdout[-4000:]
    assert "did not become Available on another member within 20s of lab-" in outage["message"]
    proc, report = _run(tmp_path / "drain", lab_kubeconfig, expectations, "--allow-disruptive",
                        "-k", "test_drain")
    drain = _check(report, "failover/drain")
    assert drain["verdict"] == "non-conformant", proc.stdout[-4000:]
    assert "the NoExecute taint did not evict the workload from lab-" in drain["message"]
    assert "within 20s" in drain["message"]


def test_outage_without_taint_policy_evicts_nothing(tmp_path, lab_kubeconfig):
    """The ClusterTaintPolicy removed: a member that is lost is never tainted, nothing moves."""
    policy = json.loads(labkit.kubectl("karmada", "get", "clustertaintpolicy", TAINT_POLICY,
                                       "-o", "json").stdout)
    labkit.kubectl("karmada", "delete", "clustertaintpolicy", TAINT_POLICY)
    try:
        proc, report = _run(tmp_path, lab_kubeconfig, _expectations(tmp_path, rto_s=25),
                            "--allow-disruptive", "-k", "cluster_outage")
        outage = _check(report, "failover/cluster-outage")
        assert outage["verdict"] == "non-conformant", proc.stdout[-4000:]
        assert "did not become Available on another member within 25s" in outage["message"]
    finally:
        meta = policy["metadata"]
        policy["metadata"] = {"name": meta["name"], "labels": meta.get("labels") or {}}
        labkit.apply("karmada", policy)
    _assert_restored()


def test_janitor_removes_the_taints_of_finished_runs_only(lab_kubeconfig):
    """After a SIGKILL the failover checks' taints stay on the Clusters: the janitor removes
    those of runs that are over (--all-expired) or of a given run (--run-id), never a taint
    someone else set, nor one of a run that is still going."""
    import subprocess
    import sys

    janitor = [sys.executable, str(fclab.REPO / "scripts" / "janitor.py"),
               f"--kubeconfig={lab_kubeconfig}", "--contexts=karmada"]
    finished, other = "fc-20200101-000000-dead", "fc-20200101-000000-beef"
    planted = [{"key": "check.fleetcheck.io/cordon", "value": finished, "effect": "NoSchedule"},
               {"key": "check.fleetcheck.io/drain", "value": other, "effect": "NoSchedule"},
               {"key": "ops.example.com/maintenance", "effect": "NoSchedule"},
               # the failover CLI's drain: an operator's decision, never the janitor's
               {"key": "fleetcheck.io/cordon", "value": "failover", "effect": "NoSchedule"}]

    def taints() -> list[dict]:
        cluster = json.loads(labkit.kubectl("karmada", "get", "cluster", "lab-b", "-o",
                                            "json").stdout)
        return cluster["spec"].get("taints") or []

    def set_taints(value: list[dict]) -> None:
        labkit.kubectl("karmada", "patch", "cluster", "lab-b", "--type=merge", "-p",
                       json.dumps({"spec": {"taints": value}}))

    before = taints()
    set_taints(before + planted)
    try:
        dry = subprocess.run([*janitor, "--all-expired", "--dry-run"], capture_output=True,
                             text=True, timeout=60, check=False)
        assert dry.returncode == 0, dry.stderr
        assert f"would remove taint check.fleetcheck.io/cordon={finished}:NoSchedule from Cluster " \
               "lab-b" in dry.stdout, dry.stdout
        assert "ops.example.com" not in dry.stdout and "=failover" not in dry.stdout
        assert len(taints()) == len(before) + 4
        by_run = subprocess.run([*janitor, "--run-id", other], capture_output=True, text=True,
                                timeout=60, check=False)
        assert f"removed taint check.fleetcheck.io/drain={other}:NoSchedule" in by_run.stdout
        assert finished not in by_run.stdout, by_run.stdout
        expired = subprocess.run([*janitor, "--all-expired"], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert f"removed taint check.fleetcheck.io/cordon={finished}:NoSchedule" in expired.stdout
        assert [t["key"] for t in taints() if t not in before] == [
            "ops.example.com/maintenance", "fleetcheck.io/cordon"]
    finally:
        set_taints(before)
