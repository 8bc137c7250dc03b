"""The plugin against the real lab: api-ready, dead contexts, probe lifecycle, cleanup on
success, failure, SIGINT, SIGTERM, and SIGKILL followed by the janitor."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fclab import (
    CLUSTERS,
    LAB_IMAGES,
    REPO,
    core,
    probe_project,
    pytest_cmd,
    results,
    run,
    run_objects,
    verdicts,
    wait_run_gone,
)

JANITOR = [sys.executable, str(REPO / "scripts" / "janitor.py")]


def run_id(tag: str) -> str:
    return f"fc-lab-{tag}-{int(time.time() * 1000) % 10**8}"


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_api_ready_green_with_report(lab_kubeconfig: Path, tmp_path: Path,
                                     xdist: list[str]) -> None:
    out = tmp_path / "reports"
    proc = run(["suites/test_connectivity.py", "-k", "test_api_ready",
                f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-*", f"--report-dir={out}",
                *xdist], cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(out) == {f"test_api_ready[{c}]": "conformant" for c in CLUSTERS}
    data = results(out)
    assert all(c["version"] and c["version"].startswith("v1.") for c in data["contexts"])
    assert all(c["identity"]["username"] for c in data["contexts"])
    for name in ("report.html", "junit.xml", "metrics.txt", "SHA256SUMS"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "Context lab-b" in page and "v1." in page


def test_dead_context_is_unknown_quickly_while_others_pass(lab_kubeconfig: Path,
                                                           tmp_path: Path) -> None:
    dead = tmp_path / "dead.yaml"
    data = kubeconfig_dict(["dead"])
    # a context that reaches lab-a's API server with a token it does not know
    lab = yaml.safe_load(lab_kubeconfig.read_text())
    lab_a = next(c for c in lab["contexts"] if c["name"] == "lab-a")["context"]["cluster"]
    cluster = next(c for c in lab["clusters"] if c["name"] == lab_a)["cluster"]
    data["clusters"].append({"name": "badcreds-cluster", "cluster": cluster})
    data["users"].append({"name": "badcreds-user", "user": {"token": "not-a-valid-token-123"}})
    data["contexts"].append({"name": "badcreds", "context": {"cluster": "badcreds-cluster",
                                                             "user": "badcreds-user"}})
    dead.write_text(yaml.safe_dump(data))
    out = tmp_path / "reports"
    start = time.monotonic()
    proc = run(["suites/test_connectivity.py", "-k", "test_api_ready",
                f"--kubeconfig={lab_kubeconfig}", f"--kubeconfig={dead}",
                "--contexts=lab-*,dead,badcreds", f"--report-dir={out}"], cwd=REPO)
    elapsed = time.monotonic() - start
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert verdicts(out) == {
        "test_api_ready[lab-a]": "conformant", "test_api_ready[lab-b]": "conformant",
        "test_api_ready[lab-c]": "conformant", "test_api_ready[dead]": "unknown",
        "test_api_ready[badcreds]": "unknown"}
    contexts = {c["name"]: c for c in results(out)["contexts"]}
    assert contexts["dead"]["preflight_s"] <= 5
    assert "connection refused" in contexts["dead"]["unreachable"]
    assert "rejected the credentials of this context (HTTP 401)" in \
        contexts["badcreds"]["unreachable"]
    assert "not-a-valid-token-123" not in (out / "report.html").read_text() + proc.stdout
    assert elapsed <= 30, f"whole run took {elapsed:.1f}s"


LIFECYCLE_CHECKS = '''
import datetime as dt
import pytest
from kubernetes import client as k8s
from fleetcheck.kube.manifests import restricted_pod

@pytest.mark.check("demo/exec")
def test_exec(target, probes, evidence):
    bb = probes.busybox
    evidence.text("busybox uid", bb.pod().metadata.uid)
    r = bb.exec(["sh", "-c", "echo out; echo err >&2; id -u; exit 3"], timeout=30)
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\\n65534\\n", "err\\n"), r.render()
    r = bb.exec(["sleep", "20"], timeout=2)
    assert r.timed_out and r.exit_code is None and r.duration_s < 6, r.render()
    r = probes.curl.exec(["curl", "--version"], timeout=30)
    assert r.ok and r.stdout.startswith("curl "), r.render()

@pytest.mark.check("demo/spec")
def test_spec(target, probes, evidence):
    api = k8s.CoreV1Api(target.api_client)
    ns = api.read_namespace(probes.namespace)
    labels, notes = ns.metadata.labels, ns.metadata.annotations
    assert labels["app.kubernetes.io/managed-by"] == "fleetcheck"
    assert labels["fleetcheck.io/run-id"] == probes.run_id
    assert probes.run_id in ns.metadata.name
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    expires = dt.datetime.fromisoformat(notes["fleetcheck.io/expires-at"].replace("Z", "+00:00"))
    assert expires > dt.datetime.now(dt.UTC)
    pod = probes.busybox.pod()
    evidence.text("busybox uid", pod.metadata.uid)
    c = pod.spec.containers[0]
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 65534
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert c.security_context.allow_privilege_escalation is False
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.image_pull_policy == "IfNotPresent" and c.image.startswith("lab.fleetcheck.invalid/")
    assert c.resources.requests and c.resources.limits and pod.spec.active_deadline_seconds

@pytest.mark.check("demo/deploy")
def test_deploy(target, probes):
    probes.deploy(restricted_pod("web", probes.images["busybox"], ["httpd", "-f", "-p", "8080"],
                                 run_id=probes.run_id, ttl_s=600, ports=[8080],
                                 labels={"app": "web"}))
    probes.deploy({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    pod = probes.wait_ready("web")
    r = probes.busybox.exec(["sh", "-c", f"nc -w 3 {pod.status.pod_ip} 8080 </dev/null"], timeout=15)
    assert r.ok, r.render()
    # kube-proxy programs a new service within seconds: give it up to 15
    r = probes.busybox.exec(["sh", "-c", "for i in $(seq 30); do nc -w 3 web 80 </dev/null "
                             "&& exit 0; sleep 0.5; done; exit 1"], timeout=40)
    assert r.ok, r.render()
    scratch = probes.scratch_namespace("restore")
    assert scratch == probes.namespace + "-restore" == probes.scratch_namespace("restore")
'''


def _uids(out: Path) -> dict[str, set[str]]:
    uids: dict[str, set[str]] = {}
    for check in results(out)["checks"]:
        for item in check["evidence"]:
            if item["name"] == "busybox uid":
                uids.setdefault(check["context"], set()).add(item["content"])
    return uids


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_probe_lifecycle(lab_kubeconfig: Path, tmp_path: Path, xdist: list[str]) -> None:
    project = probe_project(tmp_path, LIFECYCLE_CHECKS)
    rid = run_id("life")
    contexts = CLUSTERS if xdist else ["lab-a"]
    proc = run([f"--kubeconfig={lab_kubeconfig}", f"--contexts={','.join(contexts)}",
                f"--run-id={rid}", *LAB_IMAGES, *xdist], cwd=project)
    out = project / "reports" / rid
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(verdicts(out).values()) == {"conformant"}
    # the busybox probe was created once per context and reused by both checks
    uids = _uids(out)
    assert set(uids) == set(contexts) and all(len(u) == 1 for u in uids.values()), uids
    exec_evidence = [i for c in results(out)["checks"] for i in c["evidence"]
                     if i["kind"] == "command"]
    assert any("exit code 3" in i["content"] for i in exec_evidence)
    assert sorted(results(out)["cleanup"]["lab-a"]["deleted"]) == [
        f"fleetcheck-{rid}", f"fleetcheck-{rid}-restore"]
    assert wait_run_gone(lab_kubeconfig, rid, contexts) == {}


NEVER_READY_CHECKS = '''
import pytest

@pytest.mark.check("demo/first")
def test_first(target, probes):
    probes.busybox.exec(["true"], timeout=10)

@pytest.mark.check("demo/second")
def test_second(target, probes):
    probes.busybox.exec(["true"], timeout=10)
'''


def test_probe_never_ready_is_unknown_with_events(lab_kubeconfig: Path, tmp_path: Path) -> None:
    project = probe_project(tmp_path, NEVER_READY_CHECKS)
    rid = run_id("nr")
    proc = run([f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-b", f"--run-id={rid}",
                "--probe-image=busybox=lab.fleetcheck.invalid/busybox:0.0.0-missing",
                "--probe-ready-timeout=60"], cwd=project)
    out = project / "reports" / rid
    assert proc.returncode == 6, proc.stdout + proc.stderr
    checks = {c["check_id"]: c for c in results(out)["checks"]}
    for check in checks.values():
        assert check["verdict"] == "unknown"
        assert "did not become Ready" in check["message"]
        assert "ErrImagePull" in check["message"] or "ImagePullBackOff" in check["message"]
        names = {i["name"] for i in check["evidence"]}
        assert any(n.startswith("events of pod probe") for n in names), names
        assert any(n.endswith("status") for n in names), names
    # the failure is remembered: the second check does not wait again
    assert checks["demo/second"]["duration_s"] < 2
    assert wait_run_gone(lab_kubeconfig, rid, ["lab-b"]) == {}


def test_forbidden_context_is_unknown_for_probes_only(lab_kubeconfig: Path,
                                                      tmp_path: Path) -> None:
    project = probe_project(tmp_path, '''
import pytest

@pytest.mark.check("demo/api")
def test_api(target):
    assert target.version and target.identity["username"]

@pytest.mark.check("demo/probe")
def test_probe(target, probes):
    probes.busybox
''')
    rid = run_id("forbid")
    proc = run([f"--kubeconfig={lab_kubeconfig}", "--contexts=viewer@lab-a", f"--run-id={rid}",
                *LAB_IMAGES], cwd=project)
    out = project / "reports" / rid
    assert proc.returncode == 6, proc.stdout + proc.stderr
    checks = {c["check_id"]: c for c in results(out)["checks"]}
    assert checks["demo/api"]["verdict"] == "conformant"
    assert checks["demo/probe"]["verdict"] == "unknown"
    assert "forbidden to create the probe namespace" in checks["demo/probe"]["message"]


FAILING_CHECK = '''
import pytest

@pytest.mark.check("demo/fails")
def test_fails(target, probes, check):
    r = probes.busybox.exec(["sh", "-c", "exit 1"], timeout=10)
    check.require(r.ok, expected="exit 0", observed=f"exit {r.exit_code}")
'''


def test_keep_on_failure_then_janitor_by_run_id(lab_kubeconfig: Path, tmp_path: Path) -> None:
    project = probe_project(tmp_path, FAILING_CHECK)
    rid = run_id("keep")
    proc = run([f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-c", f"--run-id={rid}",
                "--keep-on-failure", *LAB_IMAGES], cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"kept probe namespace(s) on lab-c (--keep-on-failure): fleetcheck-{rid}" in proc.stdout
    assert run_objects(lab_kubeconfig, rid, ["lab-c"])  # still there for inspection
    time.sleep(1)
    assert run_objects(lab_kubeconfig, rid, ["lab-c"])

    janitor = [*JANITOR, f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-*"]
    dry = subprocess.run([*janitor, "--run-id", rid, "--dry-run"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert dry.returncode == 0 and f"lab-c: would delete fleetcheck-{rid}" in dry.stdout, dry
    assert run_objects(lab_kubeconfig, rid, ["lab-c"])
    done = subprocess.run([*janitor, "--run-id", rid], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and f"lab-c: deleted fleetcheck-{rid}" in done.stdout, done
    assert wait_run_gone(lab_kubeconfig, rid, ["lab-c"]) == {}


HANGING_CHECK = '''
import os, pathlib, time
import pytest

@pytest.mark.check("demo/hangs")
def test_hangs(target, probes):
    probes.busybox.exec(["true"], timeout=30)
    pathlib.Path(os.environ["FC_MARKER"]).write_text(probes.namespace)
    time.sleep(600)
'''


def _start_hanging_run(lab_kubeconfig: Path, tmp_path: Path, rid: str,
                       extra: list[str]) -> tuple[subprocess.Popen, Path]:
    project = probe_project(tmp_path, HANGING_CHECK)
    marker = tmp_path / "probes-ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["FC_MARKER"] = str(marker)
    proc = subprocess.Popen(
        pytest_cmd(f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-a,lab-b",
                   f"--run-id={rid}", *LAB_IMAGES, *extra),
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"probes never came up:\n{proc.communicate()[0]}")
        time.sleep(0.5)
    return proc, project


@pytest.mark.parametrize(
    ("sig", "extra"),
    [(signal.SIGINT, []), (signal.SIGTERM, []), (signal.SIGTERM, ["-n", "2"])],
    ids=["SIGINT", "SIGTERM", "SIGTERM-xdist"],
)
def test_interrupt_cleans_up(lab_kubeconfig: Path, tmp_path: Path, sig: signal.Signals,
                             extra: list[str]) -> None:
    rid = run_id(sig.name.lower()[3:])
    proc, project = _start_hanging_run(lab_kubeconfig, tmp_path, rid, extra)
    assert run_objects(lab_kubeconfig, rid, ["lab-a", "lab-b"])
    proc.send_signal(sig)
    try:
        output = proc.communicate(timeout=90)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    left = wait_run_gone(lab_kubeconfig, rid, CLUSTERS)
    assert left == {}, f"left behind after {sig.name}: {left}\n{output}"
    assert (project / "reports" / rid / "results.json").is_file()


def test_sigkill_then_janitor_deletes_expired_and_nothing_else(lab_kubeconfig: Path,
                                                                tmp_path: Path) -> None:
    rid = run_id("kill")
    ttl = 20
    proc, _ = _start_hanging_run(lab_kubeconfig, tmp_path, rid, [f"--probe-ttl={ttl}"])
    started = time.monotonic()
    proc.kill()
    proc.wait(timeout=30)
    assert run_objects(lab_kubeconfig, rid, ["lab-a"])  # SIGKILL: nothing was cleaned up

    # decoys the janitor must never touch: expired, labelled, but not named as fleetcheck names
    api = core(lab_kubeconfig, "lab-a")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    decoy = f"decoy-{rid}"
    api.create_namespace({"metadata": {"name": decoy, "labels": {
        "app.kubernetes.io/managed-by": "fleetcheck", "fleetcheck.io/run-id": rid},
        "annotations": {"fleetcheck.io/expires-at": past}}})
    try:
        janitor = [*JANITOR, f"--kubeconfig={lab_kubeconfig}", "--contexts=lab-a,lab-b",
                   "--all-expired"]
        early = subprocess.run(janitor, capture_output=True, text=True, timeout=60, check=False)
        assert early.returncode == 0, early
        assert f"lab-a: keeping fleetcheck-{rid}" in early.stdout, early.stdout
        assert f"lab-a: skipping {decoy}: not a fleetcheck probe namespace" in early.stdout

        time.sleep(max(0.0, ttl + 2 - (time.monotonic() - started)))
        late = subprocess.run(janitor, capture_output=True, text=True, timeout=60, check=False)
        assert late.returncode == 0, late
        # serial runs prepare every context's probes in the background: lab-b has them too
        assert f"lab-a: deleted fleetcheck-{rid} (run {rid}, expired" in late.stdout, late.stdout
        assert f"lab-b: skipping {decoy}" not in late.stdout
        decoy_only = {"lab-a": [f"namespace/{decoy}"]}
        left = wait_run_gone(lab_kubeconfig, rid, ["lab-a", "lab-b"], expect=decoy_only)
        assert left == decoy_only, left
    finally:
        api.delete_namespace(decoy)
