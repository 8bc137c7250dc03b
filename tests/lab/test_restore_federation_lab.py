"""failover/drain's restore under faults, against the lab's Karmada: the taint removal that meets
a control plane refusing connections is retried until it works; one that cannot finish within
--restore-budget is reported with the command that undoes it (exit 7), and that command works;
a run SIGKILLed while its taints are on a member is found by the janitor as soon as its
heartbeat is stale.  failover/cluster-outage without outage commands is skipped, saying why."""

from __future__ import annotations

import json
import secrets
import shlex
import threading
import time
from pathlib import Path

import fclab
import labkit
import pytest
import yaml
from fleetcheck.federation.failover import CHECK_TAINTS, DRAIN_TAINT
from labkit import wait_for
from restore_faults import FaultProxy, background_run, janitor, kill9

pytestmark = pytest.mark.full_lab

SUITE = "suites/test_failover.py"
LAB_EXPECTATIONS = fclab.REPO / "scripts" / "lab" / "expectations.yaml"


def _expectations(tmp_path: Path, outage: bool = True) -> Path:
    data = yaml.safe_load(LAB_EXPECTATIONS.read_text())
    fo = data["defaults"]["failover"]
    if outage:
        lab = str(fclab.REPO / "scripts" / "lab")
        for verb in ("stop", "start"):
            fo["outage"][verb] = [lab if a == "." else a for a in fo["outage"][verb]]
    else:
        fo.pop("outage", None)
    path = tmp_path / "expectations.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _args(kubeconfig: Path, report: Path, run_id: str, expectations: Path, *extra: str):
    return [SUITE, f"--kubeconfig={kubeconfig}", "--contexts=lab-*,karmada",
            f"--expectations={expectations}", f"--report-dir={report}", f"--run-id={run_id}",
            *fclab.LAB_IMAGES, "--allow-disruptive", "--concurrency=1", *extra]


def _taints() -> dict[str, list[dict]]:
    """Member -> the taints fleetcheck checks set on it (read directly, never through a
    fault proxy)."""
    clusters = json.loads(labkit.kubectl("karmada", "get", "clusters", "-o", "json").stdout)
    return {c["metadata"]["name"]: [t for t in c["spec"].get("taints") or []
                                    if t["key"] in CHECK_TAINTS] for c in clusters["items"]}


def _tainted_by(run_id: str, key: str = DRAIN_TAINT) -> str | None:
    return next((m for m, taints in _taints().items()
                 if any(t["key"] == key and t.get("value") == run_id for t in taints)), None)


@pytest.fixture
def untaint_all():
    yield
    clusters = json.loads(labkit.kubectl("karmada", "get", "clusters", "-o", "json").stdout)
    for cluster in clusters["items"]:
        taints = cluster["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] not in CHECK_TAINTS]
        if keep != taints:
            labkit.kubectl("karmada", "patch", "clusters.cluster.karmada.io",
                           cluster["metadata"]["name"], "--type=merge",
                           "-p", json.dumps({"spec": {"taints": keep}}), check=False)
    assert not any(_taints().values())


def _run_with_fault(lab_kubeconfig: Path, tmp_path: Path, tag: str, seconds: float | None,
                    *extra: str):
    """-k test_drain through a proxy to Karmada that resets every connection once the drain
    taint is set."""
    proxy = FaultProxy(lab_kubeconfig, "karmada", tmp_path)
    run_id = f"fc-fedrestore-{tag}-{secrets.token_hex(3)}"
    report = tmp_path / f"report-{tag}"
    stop, hit = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            try:
                member = _tainted_by(run_id)
                if member:
                    proxy.fault("reset", seconds)
                    hit.append(member)
                    return
            except Exception:  # noqa: BLE001, S110 - not yet
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = fclab.run(_args(proxy.kubeconfig, report, run_id, _expectations(tmp_path),
                               "-k", "test_drain", "--connect-timeout=2", "--request-timeout=3",
                               *extra), cwd=fclab.REPO, timeout=600)
    finally:
        stop.set()
        watcher.join(10)
        proxy.close()
    out = proc.stdout + proc.stderr
    assert hit, "the fault was never injected: " + out[-3000:]
    return run_id, proc, out, fclab.results(report), hit[0]


def test_taint_removal_through_a_refusing_control_plane_is_retried_until_done(
        lab_kubeconfig: Path, tmp_path: Path, untaint_all: None) -> None:
    _run_id, proc, out, data, member = _run_with_fault(lab_kubeconfig, tmp_path, "retry", 10)
    changes = {c["what"]: c for c in data["changes"]}
    drain = changes[f"NoExecute taint {DRAIN_TAINT} on Cluster {member}"]
    assert drain["restored"] is True and drain["attempts"] >= 2, (drain, out[-3000:])
    assert all(c["restored"] for c in changes.values()), changes
    assert proc.returncode != 7 and "NOT RESTORED" not in out, out[-3000:]
    assert not _taints()[member]
    assert "Traceback" not in out


def test_taint_removal_beyond_its_budget_prints_the_janitor_command_that_undoes_it(
        lab_kubeconfig: Path, tmp_path: Path, untaint_all: None) -> None:
    run_id, proc, out, data, member = _run_with_fault(lab_kubeconfig, tmp_path, "budget", None,
                                                      "--restore-budget=4")
    assert proc.returncode == 7, out[-3000:]
    left = [c for c in data["changes"] if not c["restored"]]
    assert {c["what"] for c in left} >= {f"NoExecute taint {DRAIN_TAINT} on Cluster {member}"}
    lines = [line for line in out.splitlines() if line.startswith("NOT RESTORED: ")]
    assert len(lines) == len(left), lines
    command = lines[0].split("undo it with: ", 1)[1]
    assert command.startswith("fleetcheck-janitor --kubeconfig=") and command.endswith(
        f" --contexts karmada --run-id {run_id}"), command
    assert _tainted_by(run_id) == member  # still there: nothing lied
    # the printed command, run against the control plane directly (the proxy is gone)
    argv = shlex.split(command)
    argv = [a if not a.startswith("--kubeconfig=") else f"--kubeconfig={lab_kubeconfig}"
            for a in argv[1:]]
    done = janitor(lab_kubeconfig, "karmada", *[a for a in argv if not a.startswith(
        ("--kubeconfig=", "--contexts")) and a != "karmada"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed taint {DRAIN_TAINT}={run_id}:NoExecute from Cluster {member}" in \
        done.stdout, done.stdout
    assert not _taints()[member]
    assert "Traceback" not in out


def test_sigkill_mid_drain_janitor_removes_the_taints_once_the_heartbeat_is_stale(
        lab_kubeconfig: Path, tmp_path: Path, untaint_all: None) -> None:
    run_id = f"fc-fedrestore-kill-{secrets.token_hex(3)}"
    log = tmp_path / "run.log"
    data = yaml.safe_load(_expectations(tmp_path).read_text())
    data["defaults"]["failover"]["cordon_watch_s"] = 60  # a long window with the taint set
    exp = tmp_path / "expectations-kill.yaml"
    exp.write_text(yaml.safe_dump(data))
    proc = background_run(_args(lab_kubeconfig, tmp_path / "report-kill", run_id, exp,
                                "-k", "test_drain"), log)
    try:
        from fleetcheck.federation.failover import CORDON_TAINT

        member = wait_for("the run's cordon taint", lambda: _tainted_by(run_id, CORDON_TAINT),
                          300, 0.5, why=lambda: log.read_text()[-3000:])
    finally:
        kill9(proc)
    killed_at = time.monotonic()

    def swept() -> str | None:
        out = janitor(lab_kubeconfig, "karmada", "--all-expired").stdout
        return out if f"removed taint {CORDON_TAINT}={run_id}:NoSchedule from Cluster " \
                      f"{member}" in out else None

    out = wait_for("the janitor to remove the taint", swept, 90, 1.0, why=lambda: janitor(
        lab_kubeconfig, "karmada", "--all-expired", "--dry-run").stdout)
    assert time.monotonic() - killed_at < 75, out  # not the namespaces' 1 h expiry
    assert not _taints()[member]


def test_cluster_outage_without_outage_commands_is_skipped_with_the_reason(
        lab_kubeconfig: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    fclab.run(_args(lab_kubeconfig, report, f"fc-fedrestore-skip-{secrets.token_hex(3)}",
                    _expectations(tmp_path, outage=False), "-k", "cluster_outage"),
              cwd=fclab.REPO, timeout=300)
    [record] = [r for r in fclab.results(report)["checks"]
                if r["check_id"] == "failover/cluster-outage" and r["context"] == "karmada"]
    assert record["verdict"] == "skipped", record
    assert record["message"].startswith("no failover.outage.stop/start commands in the "
                                        "expectations: an outage needs a way to make a member "
                                        "unreachable"), record["message"]
    assert not any(_taints().values())
