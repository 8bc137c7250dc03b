"""Helpers for tests that drive the local lab directly (kubectl against its kubeconfig)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "scripts" / "lab"
KUBECONFIG = os.environ.get("FLEETCHECK_LAB_KUBECONFIG", "/var/lib/fleetcheck-lab/kubeconfig")
KUBECTL = os.environ.get("FLEETCHECK_LAB_KUBECTL", "/var/cache/fleetcheck-lab/bin/kubectl")
IMAGE = {
    "busybox": "lab.fleetcheck.invalid/busybox:1.35.0",
    "curl": "lab.fleetcheck.invalid/curl:7.88.1",
    "echo": "lab.fleetcheck.invalid/echo:1.0",
}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESOURCES = {"requests": {"cpu": "5m", "memory": "16Mi"},
             "limits": {"cpu": "200m", "memory": "64Mi"}}


def lab(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the lab CLI (`python3 scripts/lab ...`) with this interpreter."""
    return subprocess.run([sys.executable, str(LAB), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def kubectl(context: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([KUBECTL, f"--kubeconfig={KUBECONFIG}", f"--context={context}",
                           "--request-timeout=15s", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl --context={context} {' '.join(args)} failed "
                             f"({proc.returncode}): {proc.stderr.strip()}")
    return proc


def apply(context: str, *objects: dict) -> None:
    kubectl(context, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def get(context: str, kind: str, name: str, namespace: str | None = None) -> dict:
    ns = [f"--namespace={namespace}"] if namespace else []
    return json.loads(kubectl(context, "get", kind, name, *ns, "-o", "json").stdout)


def pod(name: str, namespace: str, image: str, command: list[str] | None = None,
        env: dict | None = None, labels: dict | None = None, port: int | None = None) -> dict:
    container = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                 "securityContext": RESTRICTED_CONTAINER, "resources": RESOURCES}
    if command:
        container["command"] = command
    if env:
        container["env"] = [{"name": k, "value": v} if isinstance(v, str)
                            else {"name": k, "valueFrom": v} for k, v in env.items()]
    if port:
        container["ports"] = [{"containerPort": port}]
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"securityContext": RESTRICTED_POD, "containers": [container],
                     "terminationGracePeriodSeconds": 1, "activeDeadlineSeconds": 3600,
                     "enableServiceLinks": False}}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "app.kubernetes.io/part-of": "fleetcheck-lab-tests"}}}


def wait_ready(context: str, namespace: str, *pods: str, timeout: float = 90) -> None:
    proc = kubectl(context, "wait", f"--namespace={namespace}", "--for=condition=Ready",
                   f"--timeout={int(timeout)}s", *[f"pod/{p}" for p in pods], check=False,
                   timeout=timeout + 15)
    if proc.returncode != 0:
        described = kubectl(context, "describe", "pods", f"--namespace={namespace}",
                            check=False).stdout
        raise AssertionError(f"pods {pods} not Ready in {context}: {proc.stderr}\n{described}")


def exec_in(context: str, namespace: str, pod_name: str, *argv: str,
            timeout: float = 30) -> subprocess.CompletedProcess:
    return kubectl(context, "exec", f"--namespace={namespace}", pod_name, "--", *argv,
                   check=False, timeout=timeout)


def wait_for(what: str, probe, timeout: float = 60, interval: float = 1.0, why=None):
    """``probe()``'s first true value within ``timeout``; else fail, with ``why()`` (e.g. the
    tail of a log) when given."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}"
                         + (f"\n{why()}" if why is not None else ""))


def lab_healthy(timeout: float = 120, interval: float = 1.0) -> None:
    """Wait until `scripts/lab status` exits 0 (every component, API, node and cluster DNS)."""
    wait_for("lab status healthy", lambda: lab("status").returncode == 0, timeout=timeout,
             interval=interval)


def run_namespaces_left(run_id: str, contexts: list[str]) -> dict[str, list[str]]:
    """The run's namespaces (``fleetcheck-<run id>*``), per context, still present."""
    out = {}
    for ctx in contexts:
        names = kubectl(ctx, "get", "namespaces", "-o", "name").stdout.split()
        mine = [n for n in names if n.startswith(f"namespace/fleetcheck-{run_id}")]
        if mine:
            out[ctx] = mine
    return out
