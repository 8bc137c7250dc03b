"""The nightly CI, proven without Docker: actionlint passes on the workflows, kind's own
config loader accepts every config scripts/kind-fleet writes (and rejects broken ones), and
kind builds the way the workflow builds it. Tools come from tests/gotools.py (Go needed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gotools
import pytest

ROOT = gotools.ROOT
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
KIND_FLEET = ROOT / "scripts" / "kind-fleet"

sys.path.insert(0, str(ROOT / "scripts" / "kind-fleet.d"))

from kindfleet import plan


def run(args: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          check=False, **kwargs)


def kind_check(paths: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    """(exit code, one result per file) of kind's loader on ``paths``."""
    proc = run([gotools.kindconfig(), *paths])
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def write_configs(tmp_path: Path, *args: str) -> list[Path]:
    """Run ``scripts/kind-fleet configs`` (the real entry point) and return the files."""
    proc = run([sys.executable, KIND_FLEET, "configs", "--out", tmp_path, *args])
    assert proc.returncode == 0, proc.stderr
    return [Path(line) for line in proc.stdout.splitlines()]


def test_actionlint_passes_on_every_workflow():
    assert ROOT / ".github" / "workflows" / "nightly.yml" in WORKFLOWS
    proc = run([gotools.actionlint(), "-color=false", *WORKFLOWS], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_is_not_vacuous(tmp_path: Path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    text = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    bad.write_text(text.replace("if: always()", "if: ${{ always( }}", 1)
                   .replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"))
    proc = run([gotools.actionlint(), "-color=false", bad], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "runs_on" in proc.stdout and "always(" in proc.stdout


@pytest.mark.parametrize("args", [[], ["--clusters", "5", "--name-prefix", "kind-nightly"]],
                         ids=["default", "five"])
def test_kind_loader_accepts_every_generated_config(tmp_path: Path, args: list[str]):
    paths = write_configs(tmp_path, *args)
    code, results = kind_check(paths)
    assert code == 0, results
    plans = {p.name: p for p in plan.fleet_plan(
        int(args[1]) if args else 3, args[3] if args else "kind-fc")}
    assert len(results) == len(plans) == len(paths)
    for res in results:
        want = plans[res["name"]]
        assert res["valid"], res
        # what kind understood is what was planned
        assert res["networking"]["podSubnet"] == want.pod_subnet
        assert res["networking"]["serviceSubnet"] == want.service_subnet
        assert res["networking"]["ipFamily"] == "ipv4"
        assert [n["role"] for n in res["nodes"]] == ["control-plane"] + ["worker"] * want.workers
        # the node image is the one pinned by the kind release (digest included)
        assert all(re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", n["image"])
                   for n in res["nodes"]), res["nodes"]
        assert res["images"], "kind did not reach provisioning"


BROKEN = {
    "unknown field": (("podSubnet:", "podSubnets:"), "field podSubnets not found"),
    "bad cidr": (("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0"), "invalid pod subnet"),
    "bad role": (("role: control-plane", "role: master"), "not a valid node role"),
    "bad name": (("name: fc-a", "name: FC_A"), "not a valid cluster name"),
    "wrong apiVersion": (("v1alpha4", "v1alpha3"), "unknown apiVersion"),
}


def test_kind_loader_rejects_broken_configs(tmp_path: Path):
    good = write_configs(tmp_path / "good", "--clusters", "1")[0].read_text()
    paths = []
    for label, ((old, new), _) in BROKEN.items():
        assert old in good, label
        path = tmp_path / f"{label.replace(' ', '-')}.yaml"
        path.write_text(good.replace(old, new, 1))
        paths.append(path)
    code, results = kind_check(paths)
    assert code == 1
    for (label, (_, message)), res in zip(BROKEN.items(), results, strict=True):
        assert not res["valid"], label
        assert message in res["error"], (label, res["error"])


def test_kind_builds_as_the_workflow_builds_it():
    gomod = (gotools.KINDCONFIG_MODULE / "go.mod").read_text()
    pinned = re.search(r"^\s*sigs\.k8s\.io/kind (v\S+)", gomod, re.MULTILINE)
    assert pinned and "tool sigs.k8s.io/kind" in gomod
    workflow = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert "go build -mod=readonly -trimpath -o \"$RUNNER_TEMP/bin/kind\" sigs.k8s.io/kind" \
        in workflow
    proc = run([gotools.kind(), "version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"kind {pinned.group(1)} "), proc.stdout
