"""failover/node-drain's restore under faults, against the lab's two-node lab-c: an uncordon that
meets a stalled API server is retried until it works; one that cannot finish within
--restore-budget is reported with the command that undoes it (exit 7), and that command works;
a run SIGKILLed while it holds a node cordoned is found by the janitor as soon as its heartbeat
is stale, which uncordons only that node (never one an operator cordoned); a second run never
drains lab-c while the first holds its lock."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import threading
import time
from pathlib import Path

import fclab
import pytest
import yaml
from fleetcheck.failover.drain import CORDONED_BY
from labkit import KUBECTL, kubectl, wait_for
from restore_faults import FaultProxy, background_run, janitor, kill9

SUITE = "suites/test_failover.py"
EXPECTATIONS = fclab.REPO / "scripts" / "lab" / "expectations.yaml"


def _expectations(tmp_path: Path, **failover: object) -> Path:
    data = yaml.safe_load(EXPECTATIONS.read_text())
    data["defaults"]["failover"].update(failover)
    path = tmp_path / "expectations.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _args(kubeconfig: Path, report: Path, run_id: str, expectations: Path,
          *extra: str) -> list[str]:
    return [SUITE, f"--kubeconfig={kubeconfig}", "--contexts=lab-c",
            f"--expectations={expectations}", f"--report-dir={report}", f"--run-id={run_id}",
            *fclab.LAB_IMAGES, "--allow-disruptive", "-k", "node_drain", *extra]


def _nodes(kubeconfig: Path) -> dict[str, tuple[bool, str | None]]:
    """node -> (cordoned, the run that cordoned it)."""
    return {n.metadata.name: (bool(n.spec.unschedulable),
                              (n.metadata.annotations or {}).get(CORDONED_BY))
            for n in fclab.core(kubeconfig, "lab-c").list_node().items}


def _cordoned_by(kubeconfig: Path, run_id: str) -> str | None:
    return next((n for n, (c, by) in _nodes(kubeconfig).items() if c and by == run_id), None)


@pytest.fixture
def uncordon_all(lab_kubeconfig: Path):
    yield
    for node in _nodes(lab_kubeconfig):
        kubectl("lab-c", "uncordon", node, check=False)
        kubectl("lab-c", "annotate", "node", node, f"{CORDONED_BY}-", check=False)


def _fault_when_drained(proxy: FaultProxy, kubeconfig: Path, run_id: str, mode: str,
                        seconds: float | None, stop: threading.Event, hit: list[str]) -> None:
    """As soon as the check's workload has left the cordoned node (the check restores next),
    make the API server unreachable through the run's proxy."""
    api = fclab.core(kubeconfig, "lab-c")
    namespace = f"fleetcheck-{run_id}"
    while not stop.is_set():
        try:
            node = _cordoned_by(kubeconfig, run_id)
            if node:
                pods = api.list_namespaced_pod(
                    namespace, label_selector="app.kubernetes.io/name=fc-drain").items
                ready = [p for p in pods if p.metadata.deletion_timestamp is None and any(
                    c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
                if len(ready) >= 2 and all(p.spec.node_name != node for p in pods):
                    proxy.fault(mode, seconds)
                    hit.append(node)
                    return
        except Exception:  # noqa: BLE001, S110 - not there yet
            pass
        time.sleep(0.2)


def _run_with_fault(lab_kubeconfig: Path, tmp_path: Path, tag: str, mode: str,
                    seconds: float | None, *extra: str):
    proxy = FaultProxy(lab_kubeconfig, "lab-c", tmp_path)
    run_id = f"fc-restore-{tag}-{secrets.token_hex(3)}"
    report = tmp_path / f"report-{tag}"
    stop, hit = threading.Event(), []
    watcher = threading.Thread(target=_fault_when_drained, daemon=True, args=(
        proxy, lab_kubeconfig, run_id, mode, seconds, stop, hit))
    watcher.start()
    try:
        proc = fclab.run(_args(proxy.kubeconfig, report, run_id, _expectations(tmp_path),
                               "--connect-timeout=2", "--request-timeout=3", *extra),
                         cwd=fclab.REPO, timeout=600)
    finally:
        stop.set()
        watcher.join(10)
        proxy.close()
    assert hit, "the fault was never injected: " + (proc.stdout + proc.stderr)[-3000:]
    return run_id, proc, fclab.results(report), hit[0]


def test_uncordon_through_a_stalled_api_server_is_retried_until_done(
        lab_kubeconfig: Path, tmp_path: Path, uncordon_all: None) -> None:
    # 30 s: the exec into the probe pod that reads its clock after the drain (timeout 10 s)
    # stalls too, and the uncordon that follows must still meet the fault
    _run_id, proc, data, node = _run_with_fault(lab_kubeconfig, tmp_path, "stall", "stall", 30)
    out = proc.stdout + proc.stderr
    [change] = data["changes"]
    assert change["what"] == f"cordon of node {node}", change
    assert change["restored"] is True and change["attempts"] >= 2, (change, out[-3000:])
    assert "NOT RESTORED" not in out and proc.returncode != 7, out[-3000:]
    assert _nodes(lab_kubeconfig)[node] == (False, None)
    assert "Traceback" not in out


def test_restore_beyond_its_budget_says_what_is_left_and_its_command_undoes_it(
        lab_kubeconfig: Path, tmp_path: Path, uncordon_all: None) -> None:
    run_id, proc, data, node = _run_with_fault(lab_kubeconfig, tmp_path, "reset", "reset", None,
                                               "--restore-budget=4")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 7, out[-3000:]
    [change] = data["changes"]
    assert change["restored"] is False and change["attempts"] >= 2, change
    line = next(l for l in out.splitlines() if l.startswith("NOT RESTORED: "))
    assert f"cordon of node {node} (via lab-c) is NOT restored after" in line, line
    command = line.split("undo it with: ", 1)[1]
    assert command == (f"kubectl --context lab-c uncordon {node} && kubectl --context lab-c "
                       f"annotate node {node} {CORDONED_BY}-"), command
    record = next(r for r in data["checks"] if r["check_id"] == "failover/node-drain")
    assert record["verdict"] == "unknown" and "NOT restored" in record["message"], record
    assert _nodes(lab_kubeconfig)[node] == (True, run_id)  # still cordoned: nothing lied
    kubectl_bin = shlex.quote(KUBECTL)
    subprocess.run(command.replace("kubectl ", f"{kubectl_bin} --kubeconfig={lab_kubeconfig} "),
                   shell=True, check=True, timeout=60)
    assert _nodes(lab_kubeconfig)[node] == (False, None)
    assert "Traceback" not in out
    # the run could not delete its namespace either (the API was cut): the janitor does
    swept = janitor(lab_kubeconfig, "lab-c", "--run-id", run_id)
    assert f"deleted fleetcheck-{run_id} (run {run_id}" in swept.stdout, swept.stdout


def test_sigkill_mid_drain_janitor_undoes_it_once_the_heartbeat_is_stale(
        lab_kubeconfig: Path, tmp_path: Path, uncordon_all: None) -> None:
    run_id = f"fc-restore-kill-{secrets.token_hex(3)}"
    report = tmp_path / "report-kill"
    log = tmp_path / "run.log"
    proc = background_run(_args(lab_kubeconfig, report, run_id, _expectations(
        tmp_path, node_drain_baseline_s=60)), log)
    try:
        node = wait_for("the run's cordon", lambda: _cordoned_by(lab_kubeconfig, run_id), 300,
                        0.5, why=lambda: log.read_text()[-3000:])
    finally:
        kill9(proc)
    killed_at = time.monotonic()
    other = next(n for n in _nodes(lab_kubeconfig) if n != node)
    kubectl("lab-c", "cordon", other)  # an operator's cordon: never touched

    early = janitor(lab_kubeconfig, "lab-c", "--all-expired")
    if time.monotonic() - killed_at < 25:  # the heartbeat is still fresh: the run may live
        assert f"keeping node {node} cordoned (run {run_id} is alive)" in early.stdout, \
            early.stdout
        assert _nodes(lab_kubeconfig)[node] == (True, run_id)

    said: list[str] = []  # every janitor pass (one may delete, the next uncordon)

    def swept() -> str | None:
        said.append(janitor(lab_kubeconfig, "lab-c", "--all-expired").stdout)
        out = "".join(said)
        return out if f"uncordoned node {node} (run {run_id})" in out else None

    out = wait_for("the janitor to uncordon", swept, 90, 1.0, why=lambda: janitor(
        lab_kubeconfig, "lab-c", "--all-expired", "--dry-run").stdout)
    assert time.monotonic() - killed_at < 75  # well before the namespaces' 1 h expiry
    assert re.search(rf"deleted fleetcheck-{run_id} \(run {run_id}, dead: heartbeat stale\)",
                     out) or f"fleetcheck-{run_id} is already being deleted" in out, out
    nodes = _nodes(lab_kubeconfig)
    assert nodes[node] == (False, None)
    assert nodes[other] == (True, None), "the operator's cordon was touched"


def test_two_runs_never_drain_one_cluster_at_once(lab_kubeconfig: Path, tmp_path: Path,
                                                  uncordon_all: None) -> None:
    first_id = f"fc-restore-first-{secrets.token_hex(3)}"
    log = tmp_path / "first.log"
    first = background_run(_args(lab_kubeconfig, tmp_path / "report-first", first_id,
                                 _expectations(tmp_path, node_drain_baseline_s=25)), log)
    try:
        wait_for("the first run's lock", lambda: _cordoned_by(lab_kubeconfig, first_id) or
                 _lock_holder(lab_kubeconfig) == first_id, 300, 0.5,
                 why=lambda: log.read_text()[-3000:])
        second_id = f"fc-restore-second-{secrets.token_hex(3)}"
        second = fclab.run(_args(lab_kubeconfig, tmp_path / "report-second", second_id,
                                 _expectations(tmp_path), "--lock-wait=3"), cwd=fclab.REPO,
                           timeout=300)
        [record] = [r for r in fclab.results(tmp_path / "report-second")["checks"]
                    if r["check_id"] == "failover/node-drain"]
        assert record["verdict"] == "unknown", record
        assert record["message"].startswith(
            f"failover/node-drain [lab-c]: could not be carried out: another fleetcheck run "
            f"({first_id}, failover/node-drain) holds the disruptive-check lock of lab-c "
            "(Lease kube-system/fleetcheck-disruptive"), record["message"]
        assert second.returncode == 6, second.stdout[-2000:]
        assert not _cordoned_by(lab_kubeconfig, second_id)
    finally:
        first.wait(400)
    data = fclab.results(tmp_path / "report-first")
    [record] = [r for r in data["checks"] if r["check_id"] == "failover/node-drain"]
    assert record["verdict"] == "conformant", (record, log.read_text()[-3000:])
    assert _lock_holder(lab_kubeconfig) is None  # released


def _lock_holder(kubeconfig: Path) -> str | None:
    proc = kubectl("lab-c", "-n", "kube-system", "get", "lease", "fleetcheck-disruptive",
                   "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None
