"""Issue 20, a verdict must not depend on order or luck: every lab context listed alphabetically
(as ``kubectl config get-contexts -o name`` prints them) and in reverse gives, for every check
both select, the verdicts of the main job's order (``scripts/run-lab-suite``: ``lab-*,karmada,
viewer@*,editor@*``), and no traceback anywhere in the output.  Before, ``editor@lab-a`` listed
first represented cluster lab-a: the federation and failover checks read members as the editor
and came out unknown, two of them with a ``KarmadaError ... forbidden`` traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import fclab
import labkit
import pytest
from fleetcheck import kubeconfig as kubeconfig_mod

# the federation and failover checks need the lab's Karmada (`scripts/lab up`, not --stage core)
pytestmark = pytest.mark.full_lab

MAIN_CONTEXTS = "lab-*,karmada,viewer@*,editor@*"
EXPECTATIONS = fclab.REPO / "scripts" / "lab" / "expectations.yaml"


def lab_contexts(kubeconfig: Path) -> list[str]:
    """Every context of the lab's kubeconfig, as kubectl lists them (alphabetically)."""
    proc = subprocess.run([labkit.KUBECTL, f"--kubeconfig={kubeconfig}", "config",
                           "get-contexts", "-o", "name"],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 0 and proc.stdout.split():
        return proc.stdout.split()
    return sorted(kubeconfig_mod.load([kubeconfig]).contexts)


def run_suites(kubeconfig: Path, tmp_path: Path, tag: str, contexts: str,
               selection: list[str]) -> tuple[dict[tuple[str, str], dict], dict[str, Any]]:
    """The main job's run (scripts/run-lab-suite) with ``contexts`` in that order: the records
    per (check id, context) and the whole results.json.  Asserts no traceback in the output."""
    report = tmp_path / f"report-{tag}"
    proc = fclab.run(["suites", f"--kubeconfig={kubeconfig}", f"--contexts={contexts}",
                      f"--expectations={EXPECTATIONS}", "--allow-disruptive", *fclab.LAB_IMAGES,
                      f"--report-dir={report}", *selection], cwd=fclab.REPO, timeout=3600)
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-4000:]
    assert "Traceback" not in output, (tag, output[-6000:])
    assert "Traceback" not in (report / "results.json").read_text(), tag
    data = fclab.results(report)
    records = {(c["check_id"], c["context"]): c for c in data["checks"]}
    assert records, (tag, output[-3000:])
    return records, data


@pytest.mark.parametrize("selection", [["-k", "federation or failover"], []],
                         ids=["federation-or-failover", "default"])
def test_verdicts_do_not_depend_on_the_order_of_contexts(lab_kubeconfig: Path, tmp_path: Path,
                                                         selection: list[str]) -> None:
    names = lab_contexts(lab_kubeconfig)
    assert "editor@lab-a" in names and "karmada" in names, names
    labkit.lab_healthy()
    main, main_data = run_suites(lab_kubeconfig, tmp_path, "main", MAIN_CONTEXTS, selection)
    for tag, order in (("alphabetical", sorted(names)),
                       ("reverse", sorted(names, reverse=True))):
        labkit.lab_healthy()  # the previous run's disruptive checks restored what they changed
        other, data = run_suites(lab_kubeconfig, tmp_path, tag, ",".join(order), selection)
        if set(data["selected_contexts"]) == set(main_data["selected_contexts"]):
            assert other.keys() == main.keys(), (tag, sorted(other.keys() ^ main.keys()))
        both = sorted(main.keys() & other.keys())
        assert both, tag
        changed = {f"{check} [{context}]": (main[(check, context)]["verdict"],
                                            other[(check, context)]["verdict"],
                                            other[(check, context)]["message"][:600])
                   for check, context in both
                   if main[(check, context)]["verdict"] != other[(check, context)]["verdict"]}
        assert not changed, (tag, changed)
