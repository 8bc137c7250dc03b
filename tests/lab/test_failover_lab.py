"""failover/node-drain against the lab: lab-c (two nodes) drains and stays conformant, the
node is uncordoned and nothing of the run is left; lab-a (one node) is skipped; a second node
that cannot take the evicted replica makes the check non-conformant, naming the node and the
pending pod; without --allow-disruptive the check is skipped.  Faults are undone in a
``finally`` and the nodes checked schedulable again."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest
import yaml
from fclab import LAB_IMAGES, REPO, core, results, run, wait_run_gone
from fleetcheck.failover.drain import CORDONED_BY
from labkit import kubectl

SUITE = "suites/test_failover.py"
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
FAULT_TAINT = "fleetcheck.io/lab-fault"


def drain(kubeconfig: Path, tmp_path: Path, tag: str, contexts: str, *extra: str,
          failover: dict | None = None, allow: bool = True,
          run_id: str | None = None) -> tuple[str, list[dict], str]:
    """Run the failover suite; returns (run id, result records, output)."""
    exp_file = EXPECTATIONS
    if failover is not None:
        data = yaml.safe_load(EXPECTATIONS.read_text())
        data["defaults"]["failover"] = {**data["defaults"].get("failover", {}), **failover}
        exp_file = tmp_path / f"expectations-{tag}.yaml"
        exp_file.write_text(yaml.safe_dump(data))
    report = tmp_path / f"report-{tag}"
    run_id = run_id or f"fc-drain-{tag}-{secrets.token_hex(3)}"
    proc = run([SUITE, f"--kubeconfig={kubeconfig}", f"--contexts={contexts}",
                f"--expectations={exp_file}", f"--report-dir={report}", f"--run-id={run_id}",
                *LAB_IMAGES, "-rs", *(["--allow-disruptive"] if allow else []),
                # the module also holds the federation failover checks (lab tests of their own)
                "-k", "node_drain", *extra],
               cwd=REPO, timeout=600)
    out = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), out[-3000:]
    return run_id, results(report)["checks"], out


def assert_nodes_restored(kubeconfig: Path, context: str = "lab-c") -> None:
    for node in core(kubeconfig, context).list_node().items:
        name = node.metadata.name
        assert not node.spec.unschedulable, f"{name} left cordoned"
        assert CORDONED_BY not in (node.metadata.annotations or {}), f"{name}: annotation left"
        assert not [t for t in node.spec.taints or [] if t.key == FAULT_TAINT], name


def only(records: list[dict]) -> dict:
    assert len(records) == 1, records
    return records[0]


def test_healthy_two_node_cluster_drains_conformantly(lab_kubeconfig: Path,
                                                      tmp_path: Path) -> None:
    run_id, records, out = drain(lab_kubeconfig, tmp_path, "ok", "lab-c")
    record = only(records)
    assert record["check_id"] == "failover/node-drain"
    assert record["verdict"] == "conformant", (record["message"], out[-3000:])
    evidence = {e["name"]: e["content"] for e in record["evidence"]}
    assert "node chosen" in evidence and "lab-c-" in evidence["node chosen"]
    assert "workload placement before" in evidence and "workload placement after" in evidence
    assert "longest pause" in evidence
    table = next(v for k, v in evidence.items() if k.startswith("requests to"))
    assert "before the cordon" in table and "during the drain" in table
    assert_nodes_restored(lab_kubeconfig)
    left = wait_run_gone(lab_kubeconfig, run_id, ["lab-c"])
    assert not left, f"the run left objects behind: {left}"


def test_single_node_cluster_is_skipped_with_the_reason(lab_kubeconfig: Path,
                                                        tmp_path: Path) -> None:
    _, records, _ = drain(lab_kubeconfig, tmp_path, "one", "lab-a")
    record = only(records)
    assert record["verdict"] == "skipped"
    assert "needs at least 2 schedulable nodes to drain one; 1 node(s), 1 schedulable" in \
        record["message"], record["message"]


def test_without_allow_disruptive_it_is_skipped(lab_kubeconfig: Path, tmp_path: Path) -> None:
    _, records, _ = drain(lab_kubeconfig, tmp_path, "off", "lab-c", allow=False)
    record = only(records)
    assert record["verdict"] == "skipped"
    assert "disruptive check: pass --allow-disruptive to run it" in record["message"]
    assert_nodes_restored(lab_kubeconfig)


def _taint_probe_node_once_rolled_out(kubeconfig: Path, run_id: str, stop: threading.Event,
                                      tainted: list[str]) -> None:
    """Once the check's workload runs on both nodes (and before the check cordons one, after
    its baseline), taint the probe pod's node NoSchedule: the replica evicted from the other
    node then has nowhere to go."""
    api = core(kubeconfig, "lab-c")
    namespace = f"fleetcheck-{run_id}"
    while not stop.is_set():
        try:
            pods = api.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/name=fc-drain").items
            ready = {p.spec.node_name for p in pods if any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}
            if len(ready) >= 2:
                node = api.read_namespaced_pod("probe", namespace).spec.node_name
                kubectl("lab-c", "taint", "node", node, f"{FAULT_TAINT}=drain:NoSchedule")
                tainted.append(node)
                return
        except Exception:  # noqa: BLE001, S110 - not there yet
            pass
        time.sleep(0.3)


def test_replicas_that_cannot_reschedule_are_non_conformant(lab_kubeconfig: Path,
                                                            tmp_path: Path) -> None:
    run_id = f"fc-drain-fault-{secrets.token_hex(3)}"
    tainted: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_taint_probe_node_once_rolled_out,
                               args=(lab_kubeconfig, run_id, stop, tainted), daemon=True)
    watcher.start()
    try:
        _, records, out = drain(lab_kubeconfig, tmp_path, "fault", "lab-c", "--concurrency=1",
                                failover={"node_drain_baseline_s": 8,
                                          "node_drain_timeout_s": 15}, run_id=run_id)
    finally:
        stop.set()
        watcher.join(10)
        for node in tainted:
            kubectl("lab-c", "taint", "node", node, f"{FAULT_TAINT}-", check=False)
    assert tainted, "the fault was never injected"
    record = only(records)
    assert record["verdict"] == "non-conformant", (record["verdict"], record["message"],
                                                   out[-3000:])
    message = record["message"]
    drained = next(n.metadata.name for n in core(lab_kubeconfig, "lab-c").list_node().items
                   if n.metadata.name != tainted[0])
    assert message.startswith("failover/node-drain [lab-c]: expected the replica(s) evicted "
                              f"from node {drained} rescheduled and Ready"), message
    assert "not Ready elsewhere: fc-drain-" in message and "Pending on no node" in message, \
        message
    assert FAULT_TAINT in message, message  # the scheduler's reason, naming the taint
    assert_nodes_restored(lab_kubeconfig)


@pytest.mark.full_lab  # every suite: federation and mesh included
@pytest.mark.parametrize("contexts", ["lab-b,lab-c,karmada"])
def test_other_verdicts_do_not_change_with_allow_disruptive(lab_kubeconfig: Path,
                                                            tmp_path: Path,
                                                            contexts: str) -> None:
    """Without the flag every disruptive check is skipped, saying why; with it they run
    (conformant on the healthy lab) and every other check of every suite keeps the verdict a
    healthy lab gives it: conformant, or skipped for a reason of its own."""
    def records(tag: str, *extra: str) -> dict[str, dict]:
        report = tmp_path / f"report-{tag}"
        proc = run(["suites", f"--kubeconfig={lab_kubeconfig}", f"--contexts={contexts}",
                    f"--expectations={EXPECTATIONS}", f"--report-dir={report}", *LAB_IMAGES,
                    "-q", *extra], cwd=REPO, timeout=900)
        assert (report / "results.json").is_file(), (proc.stdout + proc.stderr)[-3000:]
        return {r["test"]: r for r in results(report)["checks"]}

    ran = {"suites/test_failover.py::test_node_drain[lab-c]",
           # mesh/failover: each Istio cluster's requests while another's echo is scaled down
           "suites/test_mesh.py::test_failover[lab-b]", "suites/test_mesh.py::test_failover[lab-c]"}
    if "karmada" in contexts:  # the federation failover checks: an outage of a member, a drain
        ran |= {"suites/test_failover.py::test_cluster_outage[karmada]",
                "suites/test_failover.py::test_drain[karmada]"}
    # without the flag: only the checks that could be disruptive are collected (the full suite
    # run below, with the flag, is the comparison of everything else)
    without = records("without", "-k", "failover")
    for test in sorted(ran):
        assert without[test]["verdict"] == "skipped", (test, without[test])
        assert "--allow-disruptive" in without[test]["message"], (test, without[test])
    with_ = records("with", "--allow-disruptive")
    for test in sorted(ran):
        record = with_.pop(test)
        assert record["verdict"] == "conformant", (test, record["message"])
    changed = {t: (r["verdict"], r["message"]) for t, r in with_.items()
               if r["verdict"] not in ("conformant", "skipped")
               or (r["verdict"] == "skipped" and "disruptive" in r["message"])}
    assert not changed, changed
    # the same checks as without the flag, where both ran
    assert {t: r["verdict"] for t, r in with_.items() if t in without} == {
        t: r["verdict"] for t, r in without.items() if t not in ran}
    assert_nodes_restored(lab_kubeconfig)
