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
from fleetcheck.core import kubeconfig as kubeconfig_mod

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
                      f"--expectations={EXPECTATIONS}", *fclab.LAB_IMAGES,
                      f"--report-dir={report}", *selection], cwd=fclab.REPO, timeout=3600)
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-4000:]
    assert "Traceback" not in output, (tag, output[-6000:])
    assert "Traceback" not in (report / "results.json").read_text(), tag
    data = fclab.results(report)
    records = {(c["check_id"], c["context"]): c for c in data["checks"]}
    assert records, (tag, output[-3000:])
    return records, data


@pytest.mark.parametrize(("selection", "order"), [
    # the run: disruptive federation and failover checks, contexts as kubectl lists them
    (["-k", "federation or failover", "--allow-disruptive"], "alphabetical"),
    # every other check (disruptive ones skipped), contexts in both orders
    ([], "alphabetical"),
    ([], "reverse"),
], ids=["federation-or-failover-alphabetical", "default-alphabetical", "default-reverse"])
def test_verdicts_do_not_depend_on_the_order_of_contexts(lab_kubeconfig: Path, tmp_path: Path,
                                                         selection: list[str],
                                                         order: str) -> None:
    names = lab_contexts(lab_kubeconfig)
    assert "editor@lab-a" in names and "karmada" in names, names
    labkit.lab_healthy()
    main, main_data = run_suites(lab_kubeconfig, tmp_path, "main", MAIN_CONTEXTS, selection)
    labkit.lab_healthy()  # the previous run's disruptive checks restored what they changed
    listed = sorted(names, reverse=order == "reverse")
    other, data = run_suites(lab_kubeconfig, tmp_path, order, ",".join(listed), selection)
    if set(data["selected_contexts"]) == set(main_data["selected_contexts"]):
        assert other.keys() == main.keys(), (order, sorted(other.keys() ^ main.keys()))
    both = sorted(main.keys() & other.keys())
    assert both, order
    changed = {f"{check} [{context}]": (main[(check, context)]["verdict"],
                                        other[(check, context)]["verdict"],
                                        other[(check, context)]["message"][:600])
               for check, context in both
               if main[(check, context)]["verdict"] != other[(check, context)]["verdict"]}
    assert not changed, (order, changed)
    # the comparison measured something: not all skips; the examples measured
    assert [k for k, r in other.items() if r["verdict"] == "conformant"], order
    if "--allow-disruptive" in selection:
        for key in (("failover/drain", "karmada"), ("federation/propagation", "karmada")):
            assert other[key]["verdict"] == "conformant", (key, other[key]["message"])
