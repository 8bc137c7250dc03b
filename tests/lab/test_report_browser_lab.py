"""report.html as a person sees it: rendered by headless Chromium from a lab run with a
failure, an unknown and skips.

The run: lab-a and lab-b, plus a context ``dead`` (lab-a's credentials, server
https://127.0.0.1:1 -> unknown), with an expectations file whose ``fleet.min_version`` is 1.99
(connectivity/version-skew non-conformant on the healthy clusters), and the checks api-ready,
version-skew and cross-cluster-pod (pairs; skipped where not applicable).

The screenshot stays under reports/browser-selftest/ as a CI artefact.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fclab import LAB_IMAGES, REPO, results, run

ARTEFACTS = REPO / "reports" / "browser-selftest"
CHROMIUM = shutil.which("chromium")
EXPECTATIONS = "fleet:\n  min_version: '1.99'\n"


def _dead_kubeconfig(lab_kubeconfig: Path, out: Path) -> tuple[Path, list[str]]:
    """The lab kubeconfig plus a context ``dead`` (lab-a's cluster entry and user, server
    https://127.0.0.1:1); returns its path and the credential values it holds."""
    data = yaml.safe_load(lab_kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in data["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in data["clusters"]}
    lab_a = contexts["lab-a"]
    data["clusters"].append({"name": "dead-cluster", "cluster": {
        **clusters[lab_a["cluster"]], "server": "https://127.0.0.1:1"}})
    data["contexts"].append({"name": "dead", "context": {**lab_a, "cluster": "dead-cluster"}})
    out.write_text(yaml.safe_dump(data))
    secrets = [str(v) for u in data["users"] for k, v in u["user"].items()
               if k in ("client-key-data", "token", "password")]
    return out, secrets


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def lab_report(lab_kubeconfig: Path, tmp_path: Path) -> Path:
    """One fleetcheck run against the lab (serial); returns its report directory."""
    tmp = tmp_path
    kubeconfig, _ = _dead_kubeconfig(lab_kubeconfig, tmp / "kubeconfig.yaml")
    expectations = tmp / "expectations.yaml"
    expectations.write_text(EXPECTATIONS)
    out = tmp / "reports"
    proc = run(["suites/test_connectivity.py",
                "-k", "api-ready or version-skew or cross-cluster-pod",
                f"--kubeconfig={kubeconfig}", "--contexts=lab-a,lab-b,dead",
                f"--expectations={expectations}", f"--report-dir={out}",
                "--connect-timeout=2", *LAB_IMAGES], cwd=REPO, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # non-conformant beats unknown
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_in_chromium_shows_matrix_failure_first_and_evidence(
        lab_report: Path, lab_kubeconfig: Path, tmp_path: Path) -> None:
    verdicts = {c["test"].split("::", 1)[1]: c["verdict"] for c in results(lab_report)["checks"]}
    assert verdicts["test_version_skew[lab-a]"] == "non-conformant"
    assert verdicts["test_api_ready[dead]"] == "unknown"
    assert "skipped" in verdicts.values(), verdicts
    page_url = (lab_report / "report.html").as_uri()
    # the CI artefact first: kept even when an assertion below fails
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab_report / "report.html", ARTEFACTS / "report.html")
    shot = ARTEFACTS / "report.png"
    proc = _chromium("--window-size=1400,2600", f"--screenshot={shot}", page_url)
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-3000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-3000:]

    proc = _chromium("--dump-dom", page_url)
    dom = proc.stdout
    assert "<tbody" in dom, proc.stderr[-3000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-3000:]  # no script error in the console

    # the matrix, at the top: before the results table; pytest-html's environment table is
    # shown after the results (its DOM position is the template's; the page's style moves it)
    assert dom.index('id="fleet-matrix"') < dom.index('id="results-table"')
    assert "#environment-header, #environment { order: 1; }" in dom
    matrix = dom[dom.index('id="fleet-matrix"'):dom.index("</table>", dom.index('id="fleet-matrix"'))]
    for column in ("lab-a", "lab-b", "dead", "lab-a-&gt;lab-b"):
        assert f">{column}</th>" in matrix, column
    assert re.search(r'class="fc-v-non-conformant"><a href="#fc-[0-9a-f]+"', matrix)
    assert re.search(r'class="fc-v-unknown"><a href="#fc-[0-9a-f]+"', matrix)
    # every cell's link leads to an element of the page
    for anchor in set(re.findall(r'href="#(fc-[0-9a-f]+)"', matrix)):
        assert f'id="{anchor}"' in dom, anchor

    # the results table: the failure first, then the unknown; skipped checks are not in it
    rows = re.findall(r'<td class="col-verdict verdict-([a-z-]*)">', dom)
    assert rows[0] == "non-conformant", rows
    assert rows.index("unknown") > rows.index("non-conformant")
    assert "skipped" not in rows
    # expanded: the finding sentence and the evidence are shown (not in a hidden row)
    table = dom[dom.index('<table id="results-table"'):]
    first = table[table.index('<tbody class="results-table-row'):]
    first = first[:first.index("</tbody>")]
    assert 'class="extras-row"' in first and 'class="extras-row hidden"' not in first
    assert "expected" in first and "observed" in first
    assert "fleetcheck-evidence" in first
    # skips grouped by reason with counts, clean messages
    assert 'id="fleet-skips"' in dom and "details" in dom
    assert "('/" not in dom and "Skipped: " not in dom
    # metadata and expectations embedded, no secret
    assert re.search(r"min_version: (&#39;|')1\.99", dom)
    assert "as applied to lab-a" in dom and "fleetcheck" in dom
    _, secrets = _dead_kubeconfig(lab_kubeconfig, tmp_path / "again.yaml")
    html_text = (lab_report / "report.html").read_text()
    for secret in secrets:
        assert secret not in html_text
        assert base64.b64decode(secret).decode(errors="replace")[40:100] not in html_text
