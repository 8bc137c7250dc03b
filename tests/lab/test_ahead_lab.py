"""Checks run ahead (fleetcheck.plugin.ahead) against the real lab: the checks of every context
overlap, each runs exactly once, and pytest reports the same verdicts, messages and evidence
as when they run one at a time; checks that must not overlap do not."""

from __future__ import annotations

from pathlib import Path

from fclab import REPO, probe_project, results, run
from fleetcheck.plugin.ahead import PREWARM_FIRST_S

CHECKS = '''
import os, threading, time
import pytest
from fleetcheck import Unknown

LOG = os.environ["FC_AHEAD_LOG"]

def log(what):
    with open(LOG, "a") as f:
        f.write(f"{what} {threading.current_thread().name} {time.monotonic():.3f}\\n")

@pytest.mark.check("demo/wait", level="required")
def test_wait(target, check, evidence):
    log(f"wait-start {target.name}")
    time.sleep(float(os.environ["FC_AHEAD_WAIT"]))
    evidence.text("server", target.server)
    log(f"wait-end {target.name}")

@pytest.mark.check("demo/outcomes", level="required")
def test_outcomes(target, check, evidence):
    log(f"outcomes {target.name}")
    evidence.text("seen", f"version of {target.name}: {target.version}")
    if target.name == "lab-a":
        check.require(False, expected="x", observed=f"y on {target.name}")
    if target.name == "lab-b":
        raise Unknown(f"cannot tell on {target.name}")
    pytest.skip(f"nothing to see on {target.name}")

@pytest.mark.check("demo/bug", level="required")
def test_bug(target, probes):
    log(f"bug {target.name}")
    raise RuntimeError(f"a bug on {target.name}")

@pytest.mark.check("demo/tmp", level="required")
def test_tmp(target, tmp_path):
    log(f"tmp {target.name}")

@pytest.mark.check("demo/disruptive", level="required")
@pytest.mark.disruptive
def test_disruptive(target):
    log(f"disruptive-start {target.name}")
    time.sleep(0.3)
    log(f"disruptive-end {target.name}")
'''


def _run(project: Path, kubeconfig: Path, out: Path, log: Path, *extra: str,
         wait: float = 1.5):
    log.unlink(missing_ok=True)
    proc = run([str(project), f"--kubeconfig={kubeconfig}", "--contexts=lab-*",
                f"--report-dir={out}", "--allow-disruptive", *extra],
               cwd=project, env_extra={"FC_AHEAD_LOG": str(log), "FC_AHEAD_WAIT": str(wait)})
    events = [line.split() for line in log.read_text().splitlines()]
    return proc, events


def _essence(report_dir: Path) -> dict[str, tuple]:
    out = {}
    for record in results(report_dir)["checks"]:
        evidence = tuple((e["name"], e["content"]) for e in record.get("evidence") or []
                         if e["name"] != "server")
        out[record["test"].split("::")[-1]] = (record["verdict"], record.get("message"), evidence)
    return out


def test_checks_overlap_and_report_as_if_run_in_order(lab_kubeconfig: Path,
                                                      tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    project = probe_project(tmp_path / "p", CHECKS)
    log = tmp_path / "events.log"
    # pytest runs the first wait itself while the probes are submitted; the pool starts within
    # PREWARM_FIRST_S: a wait longer than that leaves the other contexts' waits to the pool,
    # however slowly a loaded machine submits the probes
    ahead, events = _run(project, lab_kubeconfig, tmp_path / "ahead", log, "--concurrency=8",
                         wait=PREWARM_FIRST_S + 2)
    assert ahead.returncode == 1, ahead.stdout + ahead.stderr

    # every check function ran exactly once per context
    names = [e[0] + " " + e[1] for e in events]
    for kind in ("wait-start", "outcomes", "bug", "tmp", "disruptive-start"):
        assert sorted(n for n in names if n.startswith(kind + " ")) == [
            f"{kind} lab-{c}" for c in "abc"], names
    # the waits of the contexts overlapped, in pool threads (pytest itself runs the check it
    # reaches before the pool starts, which waits until the probe pods are submitted)
    start_of = {e[1]: (float(e[3]), e[2]) for e in events if e[0] == "wait-start"}
    end_of = {e[1]: float(e[3]) for e in events if e[0] == "wait-end"}
    pooled = [c for c, (_, thread) in start_of.items() if thread.startswith("fleetcheck-ahead")]
    assert len(pooled) >= 2, events
    assert max(start_of[c][0] for c in pooled) < min(end_of[c] for c in pooled), events
    ends = list(end_of.values())
    # a check with a fixture fleetcheck cannot build (tmp_path) runs in pytest's thread
    assert all(e[2] == "MainThread" for e in events if e[0] == "tmp"), events
    # a disruptive check overlaps nothing: every check that ran ahead had ended before it
    first_disruptive = min(float(e[3]) for e in events if e[0] == "disruptive-start")
    assert max(ends) < first_disruptive
    assert all(e[2] == "MainThread" for e in events if e[0].startswith("disruptive"))

    serial, events = _run(project, lab_kubeconfig, tmp_path / "serial", log, "--concurrency=1")
    assert serial.returncode == 1, serial.stdout + serial.stderr
    assert all(e[2] == "MainThread" for e in events), events
    starts = [float(e[3]) for e in events if e[0] == "wait-start"]
    assert max(starts) - min(starts) >= 3.0  # one after another: proves the test can tell

    ahead_verdicts, serial_verdicts = _essence(tmp_path / "ahead"), _essence(tmp_path / "serial")
    assert ahead_verdicts == serial_verdicts
    assert ahead_verdicts["test_outcomes[lab-a]"][0] == "non-conformant"
    assert "observed y on lab-a" in ahead_verdicts["test_outcomes[lab-a]"][1]
    assert ahead_verdicts["test_outcomes[lab-a]"][2] == (
        ("seen", ahead_verdicts["test_outcomes[lab-a]"][2][0][1]),)
    assert ahead_verdicts["test_outcomes[lab-b]"][:2] == (
        "unknown", "demo/outcomes [lab-b]: could not be carried out: cannot tell on lab-b")
    assert ahead_verdicts["test_outcomes[lab-c]"][:2] == ("skipped", "nothing to see on lab-c")
    assert ahead_verdicts["test_bug[lab-c]"][0] == "unknown"
    assert "RuntimeError: a bug on lab-c" in ahead_verdicts["test_bug[lab-c]"][1]
    # a bug's traceback still points at the check's own line
    assert "raise RuntimeError" in ahead.stdout, ahead.stdout[-3000:]


def test_bad_concurrency_is_a_usage_error(lab_kubeconfig: Path, tmp_path: Path) -> None:
    proc = run(["suites/test_connectivity.py", f"--kubeconfig={lab_kubeconfig}",
                "--contexts=lab-a", "--concurrency=0", f"--report-dir={tmp_path}"], cwd=REPO)
    assert proc.returncode == 4
    assert "--concurrency '0': give a whole number from 1" in proc.stderr
