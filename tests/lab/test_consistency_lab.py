"""consistency/drift against the real lab, with the drift it must catch injected.

Creates only a scratch namespace ``fc-drift-<hex>`` (with ConfigMaps) on lab-a, lab-b and
lab-c, and a CustomResourceDefinition ``widgets<hex>.drift.fleetcheck.test`` on lab-c; all
are deleted in a ``finally`` (run lab tests under ``flock /tmp/fclab.lock``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fclab import CLUSTERS, LAB_IMAGES, REPO, results, run
from labkit import KUBECONFIG, apply, kubectl

pytestmark = pytest.mark.lab

EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
CHECK = "consistency/drift"


def run_drift(tmp_path: Path, *, contexts: str = "lab-*", expectations: Path = EXPECTATIONS,
              tag: str = "run") -> tuple[dict[str, dict], str]:
    """Run suites/test_consistency.py; returns ({context: record}, output)."""
    report = tmp_path / f"report-{tag}"
    proc = run(["suites/test_consistency.py", f"--contexts={contexts}",
                f"--kubeconfig={KUBECONFIG}", f"--expectations={expectations}",
                f"--report-dir={report}", *LAB_IMAGES,
                f"--run-id=fc-drift-{tag}-{secrets.token_hex(3)}", "-q"], cwd=REPO, timeout=180)
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-3000:]
    records = {c["context"]: c for c in results(report)["checks"] if c["check_id"] == CHECK}
    return records, output


def with_objects(tmp_path: Path, *objects: dict) -> Path:
    """The lab's expectations plus ``objects`` entries in defaults.consistency."""
    data = yaml.safe_load(EXPECTATIONS.read_text())
    data["defaults"]["consistency"]["objects"] += list(objects)
    path = tmp_path / "expectations.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def configmap(name: str, namespace: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"fleetcheck.io/drift-test": "yes"}},
            "data": data}


@pytest.fixture
def scratch() -> Iterator[str]:
    """A namespace of the same name on lab-a, lab-b and lab-c, deleted afterwards."""
    name = f"fc-drift-{secrets.token_hex(3)}"
    try:
        for cluster in CLUSTERS:
            apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": name, "labels": {"app.kubernetes.io/part-of": "fleetcheck-lab-tests"}}})
        yield name
    finally:
        for cluster in CLUSTERS:
            kubectl(cluster, "delete", "namespace", name, "--ignore-not-found", "--wait=false",
                    check=False)


def test_healthy_lab_is_conformant_and_restricted_contexts_skipped(tmp_path: Path) -> None:
    records, output = run_drift(tmp_path, contexts="lab-*,viewer@*,editor@*", tag="green")
    for cluster in CLUSTERS:
        assert records[cluster]["verdict"] == "conformant", (cluster, records[cluster], output[-3000:])
    for context in ("viewer@lab-a", "editor@lab-b"):
        assert records[context]["verdict"] == "skipped", records[context]
        assert "checks.only/skip" in records[context]["message"]


def test_changed_key_on_lab_b_is_named_with_both_values(tmp_path: Path, scratch: str) -> None:
    for cluster in CLUSTERS:
        apply(cluster, configmap("fc-drift-probe", scratch,
                                 {"color": "blue" if cluster == "lab-b" else "red", "size": "1"}))
    expectations = with_objects(tmp_path, {"kind": "ConfigMap", "namespace": scratch,
                                           "selector": "fleetcheck.io/drift-test=yes"})
    records, output = run_drift(tmp_path, expectations=expectations, tag="changed")
    assert records["lab-a"]["verdict"] == "conformant", records["lab-a"]
    assert records["lab-c"]["verdict"] == "conformant", records["lab-c"]
    lab_b = records["lab-b"]
    assert lab_b["verdict"] == "non-conformant", (lab_b, output[-3000:])
    assert (f'ConfigMap {scratch}/fc-drift-probe data.color: lab-b "blue" vs lab-a, lab-c "red"'
            in lab_b["message"]), lab_b["message"]
    assert "1 difference(s) on lab-b" in lab_b["message"]


def test_object_missing_on_one_cluster_is_named(tmp_path: Path, scratch: str) -> None:
    for cluster in CLUSTERS:
        apply(cluster, configmap("fc-drift-probe", scratch, {"color": "red"}))
        if cluster != "lab-c":
            apply(cluster, configmap("fc-drift-second", scratch, {"a": "1"}))
    expectations = with_objects(tmp_path, {"kind": "ConfigMap", "namespace": scratch,
                                           "selector": "fleetcheck.io/drift-test=yes"})
    records, output = run_drift(tmp_path, expectations=expectations, tag="missing")
    assert records["lab-a"]["verdict"] == "conformant", records["lab-a"]
    assert records["lab-b"]["verdict"] == "conformant", records["lab-b"]
    lab_c = records["lab-c"]
    assert lab_c["verdict"] == "non-conformant", (lab_c, output[-3000:])
    assert (f"ConfigMap {scratch}/fc-drift-second: missing on lab-c (present on lab-a, lab-b)"
            in lab_c["message"]), lab_c["message"]


def test_crd_only_on_lab_c_shows_in_the_fleet_facts(tmp_path: Path) -> None:
    suffix = secrets.token_hex(3)
    plural, group = f"widgets{suffix}", "drift.fleetcheck.test"
    name = f"{plural}.{group}"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": name},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": plural, "singular": f"widget{suffix}",
                              "kind": f"Widget{suffix}", "listKind": f"Widget{suffix}List"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    try:
        apply("lab-c", crd)
        records, output = run_drift(tmp_path, tag="crd")
    finally:
        kubectl("lab-c", "delete", "customresourcedefinition", name, "--ignore-not-found",
                check=False)
    assert records["lab-a"]["verdict"] == "conformant", records["lab-a"]
    assert records["lab-b"]["verdict"] == "conformant", records["lab-b"]
    lab_c = records["lab-c"]
    assert lab_c["verdict"] == "non-conformant", (lab_c, output[-3000:])
    assert f"CRD {name}: present on lab-c but missing on lab-a, lab-b" in lab_c["message"], \
        lab_c["message"]
