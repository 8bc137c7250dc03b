"""Helpers for the plugin's lab tests: run fleetcheck in a subprocess, look at the clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetcheck.core import kubeconfig as kubeconfig_mod
from fleetcheck.core.targets import build_api_client
from kubernetes import client as k8s

REPO = Path(__file__).resolve().parents[2]
LAB_IMAGES = [
    "--probe-image=busybox=lab.fleetcheck.invalid/busybox:1.35.0",
    "--probe-image=curl=lab.fleetcheck.invalid/curl:7.88.1",
]
CLUSTERS = ["lab-a", "lab-b", "lab-c"]


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def run(args: list[str], cwd: Path, timeout: float = 300,
        env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(env_extra or {})
    return subprocess.run(pytest_cmd(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def results(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "results.json").read_text())


def verdicts(report_dir: Path) -> dict[str, str]:
    return {c["test"].split("::", 1)[1]: c["verdict"] for c in results(report_dir)["checks"]}


def core(kubeconfig: Path, context: str) -> k8s.CoreV1Api:
    kc = kubeconfig_mod.load([kubeconfig])
    return k8s.CoreV1Api(build_api_client(kc, context, connect_timeout=3, request_timeout=15))


def run_objects(kubeconfig: Path, run_id: str, contexts: list[str]) -> dict[str, list[str]]:
    """Namespaces and pods carrying the run's label, per context."""
    out: dict[str, list[str]] = {}
    selector = f"fleetcheck.io/run-id={run_id}"
    for ctx in contexts:
        api = core(kubeconfig, ctx)
        names = [f"namespace/{n.metadata.name}"
                 for n in api.list_namespace(label_selector=selector).items]
        names += [f"pod/{p.metadata.namespace}/{p.metadata.name}"
                  for p in api.list_pod_for_all_namespaces(label_selector=selector).items]
        if names:
            out[ctx] = names
    return out


def wait_run_gone(kubeconfig: Path, run_id: str, contexts: list[str],
                  timeout: float = 120,
                  expect: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Wait until nothing with the run's label is left (namespace termination takes a while),
    or only ``expect``; returns what is left at the end."""
    expect = expect or {}
    deadline = time.monotonic() + timeout
    left = run_objects(kubeconfig, run_id, contexts)
    while left != expect and time.monotonic() < deadline:
        time.sleep(2)
        left = run_objects(kubeconfig, run_id, contexts)
    return left


def probe_project(tmp_path: Path, checks: str) -> Path:
    """A directory with a pyproject (so it is the rootdir) and ``checks`` as test_checks.py."""
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "test_checks.py").write_text(checks)
    return tmp_path
