"""Trustworthy verdicts against the lab: broken credentials, one cluster behind several
contexts, a dead scheduler or controller-manager, unschedulable probes, a forbidden /readyz,
a broken node-to-node path, a peer service without endpoints.

Each fault is undone in a ``finally``; the lab is checked healthy again afterwards."""

from __future__ import annotations

import base64
import json
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from fclab import CLUSTERS, LAB_IMAGES, REPO, results, run
from labkit import apply, get, kubectl, lab, lab_healthy, wait_for

EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
CONNECTIVITY = "suites/test_connectivity.py"
PER_CONTEXT_API = ["connectivity/api-ready", "connectivity/version-skew",
                   "connectivity/nodes-ready", "connectivity/control-plane"]
POD_CHECKS = ["connectivity/pod-to-pod", "connectivity/pod-to-service",
              "connectivity/pod-to-apiserver"]
EXEC_API = "client.authentication.k8s.io/v1"


def lab_kubeconfig() -> Path:
    return Path(subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "scripts/lab"),
                                "kubeconfig"], capture_output=True, text=True,
                               check=True).stdout.strip())



def fleetcheck(tmp_path: Path, tag: str, *args: str, kubeconfig: Path | None = None,
               contexts: str = "lab-*", expectations: dict | None = None,
               suites: tuple[str, ...] = (CONNECTIVITY,),
               timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict]:
    exp = EXPECTATIONS
    if expectations is not None:
        exp = tmp_path / f"expectations-{tag}.yaml"
        exp.write_text(yaml.safe_dump(expectations))
    report = tmp_path / f"report-{tag}"
    proc = run([*suites, f"--contexts={contexts}",
                f"--kubeconfig={kubeconfig or lab_kubeconfig()}", f"--expectations={exp}",
                f"--report-dir={report}", f"--run-id=fc-trust-{tag}-{secrets.token_hex(3)}",
                *LAB_IMAGES, "-q", "-p", "no:randomly", *args], cwd=REPO, timeout=timeout)
    assert (report / "results.json").is_file(), (proc.stdout + proc.stderr)[-3000:]
    return proc, {(c["check_id"], c["context"]): c for c in results(report)["checks"]}


def derived_kubeconfig(tmp_path: Path, name: str, source: str, user: dict | None = None,
                       cluster_of: str | None = None) -> Path:
    """The lab kubeconfig plus context ``name``: ``source``'s cluster, and ``user`` (default:
    ``source``'s user)."""
    data = yaml.safe_load(lab_kubeconfig().read_text())
    ctx = next(c for c in data["contexts"] if c["name"] == source)["context"]
    user_name = ctx["user"]
    if user is not None:
        user_name = f"{name}-user"
        data["users"].append({"name": user_name, "user": user})
    data["contexts"].append({"name": name, "context": {"cluster": cluster_of or ctx["cluster"],
                                                        "user": user_name}})
    path = tmp_path / f"kubeconfig-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def lab_user(context: str) -> dict:
    data = yaml.safe_load(lab_kubeconfig().read_text())
    ctx = next(c for c in data["contexts"] if c["name"] == context)["context"]
    return next(u for u in data["users"] if u["name"] == ctx["user"])["user"]


def pem(user: dict, key: str) -> str:
    if user.get(f"{key}-data"):
        return base64.b64decode(user[f"{key}-data"]).decode()
    return Path(user[key]).read_text()


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def exec_user(command: Path) -> dict:
    return {"exec": {"apiVersion": EXEC_API, "command": str(command),
                     "interactiveMode": "Never"}}


# --- credentials ------------------------------------------------------------------------------

def test_failing_exec_plugin_is_unknown_everywhere_never_anonymous(tmp_path):
    leaked = "refresh_token=" + secrets.token_hex(16)
    plugin = script(tmp_path / "fail", f'echo "token refresh failed: {leaked}" >&2; exit 1')
    kc = derived_kubeconfig(tmp_path, "exec-fail", "lab-a", exec_user(plugin))
    proc, records = fleetcheck(tmp_path, "execfail", kubeconfig=kc,
                               contexts="lab-a,exec-fail", suites=(CONNECTIVITY,
                                                                   "suites/test_rbac.py"))
    mine = {k: r for k, r in records.items() if k[1] == "exec-fail"}
    assert mine
    for (check_id, _), record in mine.items():
        assert record["verdict"] in ("unknown", "skipped"), (check_id, record)
        if record["verdict"] == "unknown":
            message = record["message"]
            assert f"exec credential plugin '{plugin}' failed (exit 1)" in message, message
            assert "token refresh failed" in message
            assert "forbidden" not in message and "anonymous" not in message
    for check_id in PER_CONTEXT_API:
        assert records[(check_id, "exec-fail")]["verdict"] == "unknown"
    out = proc.stdout + proc.stderr + json.dumps(list(records.values()))
    assert leaked.split("=")[1] not in out
    assert proc.returncode == 6, proc.stdout[-2000:]


def test_exec_plugin_credentials_work_serially_and_under_xdist(tmp_path):
    admin = lab_user("lab-b")
    status = {"clientCertificateData": pem(admin, "client-certificate"),
              "clientKeyData": pem(admin, "client-key")}
    answer = tmp_path / "credential.json"
    answer.write_text(json.dumps({"apiVersion": EXEC_API, "kind": "ExecCredential",
                                  "status": status}))
    count = tmp_path / "count"
    plugin = script(tmp_path / "ok", f"echo x >> {count}; cat {answer}")
    kc = derived_kubeconfig(tmp_path, "exec-ok", "lab-b", exec_user(plugin))
    exp = yaml.safe_load(EXPECTATIONS.read_text())
    for mode in (["-n", "0"], ["-n", "2"]):
        count.write_text("")
        _, records = fleetcheck(tmp_path, f"execok{mode[1]}", *mode, "-k", "api-ready or "
                                "control-plane or pod-to-pod", kubeconfig=kc,
                                contexts="lab-a,exec-ok", expectations=exp)
        for check_id in ("connectivity/api-ready", "connectivity/control-plane",
                         "connectivity/pod-to-pod"):
            record = records[(check_id, "exec-ok")]
            assert record["verdict"] == "conformant", (mode, check_id, record["message"])
        # the plugin ran once for the whole run, workers included
        assert count.read_text().count("x") == 1, mode


def test_hung_exec_plugin_does_not_stall_the_others(tmp_path):
    plugin = script(tmp_path / "hang", "sleep 600")
    kc = derived_kubeconfig(tmp_path, "exec-hang", "lab-a", exec_user(plugin))
    start = time.monotonic()
    _proc, records = fleetcheck(tmp_path, "exechang", "-k", "api-ready or version-skew",
                               kubeconfig=kc, contexts="lab-*,exec-hang", timeout=120)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed
    hung = records[("connectivity/api-ready", "exec-hang")]
    assert hung["verdict"] == "unknown"
    assert "did not finish within 3s" in hung["message"], hung["message"]
    for ctx in CLUSTERS:
        assert records[("connectivity/api-ready", ctx)]["verdict"] == "conformant"


def test_credentials_that_are_not_presented_are_never_anonymous_access(tmp_path):
    """An auth-provider the client does not know sends nothing: the server answers as
    system:anonymous, which is not the context's identity."""
    kc = derived_kubeconfig(tmp_path, "anon", "lab-a",
                            {"auth-provider": {"name": "fleetcheck-unknown-provider",
                                               "config": {"x": "y"}}})
    _, records = fleetcheck(tmp_path, "anon", "-k", "api-ready or control-plane or "
                            "version-skew", kubeconfig=kc, contexts="lab-a,anon")
    for check_id in ("connectivity/api-ready", "connectivity/control-plane",
                     "connectivity/version-skew"):
        record = records[(check_id, "anon")]
        assert record["verdict"] == "unknown", record
        assert "serves this context as system:anonymous" in record["message"]
        assert "auth-provider 'fleetcheck-unknown-provider'" in record["message"]


# --- one cluster behind several contexts ---------------------------------------------------------

def test_alias_context_is_conformant_and_makes_no_pair(tmp_path):
    kc = derived_kubeconfig(tmp_path, "alias-a", "lab-a")
    _, records = fleetcheck(tmp_path, "alias", kubeconfig=kc, contexts="lab-*,alias-a",
                            suites=(CONNECTIVITY, "suites/test_dns.py"))
    for key, record in records.items():
        assert record["verdict"] == "conformant", (key, record["message"])
    assert ("connectivity/pod-to-pod", "alias-a") in records
    # one cluster, one set of pairs: through the context that represents it (same identity,
    # so the same capability: the tie goes to the name, alias-a, whatever the --contexts order)
    assert not [k for k in records if "->" in k[1] and "lab-a" in k[1].split("->")]
    assert not [k for k in records if k[1] in ("alias-a->lab-a", "lab-a->alias-a")]
    assert ("connectivity/cross-cluster-pod", "alias-a->lab-b") in records


def test_per_context_min_version_is_applied(tmp_path):
    expectations = yaml.safe_load(EXPECTATIONS.read_text())
    expectations["contexts"].append({"match": "lab-b", "connectivity": {"min_version": "1.99"}})
    _, records = fleetcheck(tmp_path, "minver", "-k", "version-skew", expectations=expectations)
    bad = records[("connectivity/version-skew", "lab-b")]
    assert bad["verdict"] == "non-conformant", bad
    assert "1.99" in bad["message"]
    for ctx in ("lab-a", "lab-c"):
        assert records[("connectivity/version-skew", ctx)]["verdict"] == "conformant"


# --- control plane ------------------------------------------------------------------------------

@contextmanager
def stopped(component: str) -> Iterator[None]:
    assert lab("stop", component).returncode == 0
    try:
        yield
    finally:
        lab("start", component)
        lab_healthy()


def lease_stale(context: str, name: str) -> bool:
    """Released (a component stopped cleanly gives its Lease up) or not renewed in time."""
    lease = get(context, "lease", name, "kube-system")["spec"]
    renewed = lease.get("renewTime")
    if not renewed or not lease.get("holderIdentity"):
        return True
    import datetime as dt
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(renewed)
    return age.total_seconds() > lease["leaseDurationSeconds"] + 6


def test_stopped_scheduler_fails_control_plane_and_pending_probes_say_why(tmp_path):
    with stopped("lab-b-n1.kube-scheduler"):
        wait_for("lab-b scheduler lease stale", lambda: lease_stale("lab-b", "kube-scheduler"),
                 timeout=60)
        start = time.monotonic()
        _, records = fleetcheck(tmp_path, "nosched", "-k", "control-plane or pod-to-pod",
                                contexts="lab-b")
        elapsed = time.monotonic() - start
    cp = records[("connectivity/control-plane", "lab-b")]
    assert cp["verdict"] == "non-conformant", cp
    assert "kube-system/kube-scheduler" in cp["message"], cp["message"]
    assert "STALE" in cp["message"] or "has no holder" in cp["message"], cp["message"]
    pod = records[("connectivity/pod-to-pod", "lab-b")]
    assert pod["verdict"] == "unknown", pod
    assert "no scheduler acted on the pod" in pod["message"], pod["message"]
    assert elapsed < 90, elapsed


def test_stopped_controller_manager_fails_control_plane(tmp_path):
    with stopped("lab-a-n1.kube-controller-manager"):
        wait_for("lab-a controller-manager lease stale",
                 lambda: lease_stale("lab-a", "kube-controller-manager"), timeout=60)
        _, records = fleetcheck(tmp_path, "nokcm", "-k", "control-plane", contexts="lab-a")
    cp = records[("connectivity/control-plane", "lab-a")]
    assert cp["verdict"] == "non-conformant", cp
    assert "kube-system/kube-controller-manager" in cp["message"], cp["message"]


def test_every_node_tainted_makes_pod_checks_unknown_within_seconds(tmp_path):
    taint = "fleetcheck.io/fault=test:NoSchedule"
    kubectl("lab-a", "taint", "nodes", "--all", taint)
    try:
        start = time.monotonic()
        _, records = fleetcheck(tmp_path, "tainted", "-k", "pod-to", contexts="lab-a")
        elapsed = time.monotonic() - start
    finally:
        kubectl("lab-a", "taint", "nodes", "--all", "fleetcheck.io/fault-", check=False)
    for check_id in POD_CHECKS:
        record = records[(check_id, "lab-a")]
        assert record["verdict"] == "unknown", record
        assert "Unschedulable" in record["message"] and "untolerated taint" in \
            record["message"], record["message"]
    assert elapsed < 45, elapsed


#: bootstrap ClusterRoles through which every identity may read the health endpoints
HEALTH_ROLES = ("system:public-info-viewer", "system:discovery")


def test_forbidden_readyz_is_unknown_not_non_conformant(tmp_path):
    """The identity may read /version but not /readyz: readiness was not measured."""
    health = {"/healthz", "/livez", "/readyz"}
    originals = [get("lab-a", "clusterrole", name) for name in HEALTH_ROLES]

    def plain(role: dict) -> dict:
        role = json.loads(json.dumps(role))
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            role["metadata"].pop(key, None)
        return role

    changed = []
    for role in map(plain, originals):
        role["metadata"].setdefault("annotations", {})[
            "rbac.authorization.kubernetes.io/autoupdate"] = "false"
        for rule in role["rules"]:
            rule["nonResourceURLs"] = [u for u in rule.get("nonResourceURLs", [])
                                       if u not in health]
        changed.append(role)
    apply("lab-a", *changed)
    try:
        _, records = fleetcheck(tmp_path, "readyz403", "-k", "api-ready",
                                contexts="viewer@lab-a")
    finally:
        apply("lab-a", *map(plain, originals))
    record = records[("connectivity/api-ready", "viewer@lab-a")]
    assert record["verdict"] == "unknown", record
    assert "HTTP 403" in record["message"] and "/readyz" in record["message"]


# --- data path -------------------------------------------------------------------------------------

@contextmanager
def node_rules(rules: dict[str, list[list[str]]]) -> Iterator[None]:
    def ipt(netns: str, op: str, rule: list[str]) -> None:
        subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "iptables", op, *rule],
                       check=True, capture_output=True)
    for netns, items in rules.items():
        for rule in items:
            ipt(netns, "-I", rule)
    try:
        yield
    finally:
        for netns, items in rules.items():
            for rule in items:
                ipt(netns, "-D", rule)


def test_broken_node_to_node_path_fails_pod_to_pod_whatever_the_scheduler_chose(tmp_path):
    """lab-c's nodes reject new pod connections to the other node's pods that no service
    translated: only the cross-node pod-to-pod path of lab-c is broken."""
    def rule(dest: str) -> list[str]:
        return ["FORWARD", "-s", "10.12.0.0/16", "-d", dest, "-m", "conntrack", "--ctstate",
                "NEW", "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "REJECT"]
    with node_rules({"fclab-lab-c-n1": [rule("10.12.1.0/24")],
                     "fclab-lab-c-n2": [rule("10.12.0.0/24")]}):
        _, records = fleetcheck(tmp_path, "crossnode", "-k", "pod-to-pod",
                                contexts="lab-c,lab-a")
    bad = records[("connectivity/pod-to-pod", "lab-c")]
    assert bad["verdict"] == "non-conformant", bad
    assert "other node" in bad["message"] and "lab-c-n" in bad["message"], bad["message"]
    assert records[("connectivity/pod-to-pod", "lab-a")]["verdict"] == "conformant"
    table = next(e["content"] for e in bad["evidence"] if e["name"] == "pod-to-pod paths")
    assert "same node" in table and "other node" in table


def test_healthy_multi_node_cluster_measures_both_paths(tmp_path):
    _, records = fleetcheck(tmp_path, "bothpaths", "-k", "pod-to-pod", contexts="lab-c")
    record = records[("connectivity/pod-to-pod", "lab-c")]
    assert record["verdict"] == "conformant", record["message"]
    table = next(e["content"] for e in record["evidence"] if e["name"] == "pod-to-pod paths")
    assert "same node" in table and "other node" in table
    assert "lab-c-n1" in table and "lab-c-n2" in table


def test_peer_service_without_endpoints_is_said_so(tmp_path):
    """lab-b's echo service selects nothing (created before the run with this run's labels):
    the cross-cluster service check says the service has no endpoints."""
    run_id = f"fc-trust-noep-{secrets.token_hex(3)}"
    ns = f"fleetcheck-{run_id}"
    labels = {"app.kubernetes.io/managed-by": "fleetcheck", "fleetcheck.io/run-id": run_id}
    apply("lab-b", {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {
                        **labels, "pod-security.kubernetes.io/enforce": "restricted"}}})
    apply("lab-b", {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "fc-echo", "namespace": ns, "labels": labels},
                    "spec": {"selector": {"app.kubernetes.io/name": "nothing"},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    report = tmp_path / "report-noep"
    try:
        run([CONNECTIVITY, "--contexts=lab-a,lab-b", f"--kubeconfig={lab_kubeconfig()}",
             f"--expectations={EXPECTATIONS}", f"--report-dir={report}", f"--run-id={run_id}",
             *LAB_IMAGES, "-q", "-k", "cross-cluster-service"], cwd=REPO, timeout=300)
    finally:
        kubectl("lab-b", "delete", "namespace", ns, "--wait=false", check=False)
    records = {(c["check_id"], c["context"]): c for c in results(report)["checks"]}
    record = records[("connectivity/cross-cluster-service", "lab-a->lab-b")]
    assert record["verdict"] == "unknown", record
    assert "has no ready endpoints" in record["message"], record["message"]
    assert records[("connectivity/cross-cluster-service", "lab-b->lab-a")]["verdict"] == \
        "conformant"


@pytest.fixture(autouse=True, scope="module")
def _lab_up():
    proc = lab("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    lab_healthy()
