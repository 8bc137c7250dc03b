"""report.html for auditors: fleet matrix, worst verdicts first, skips grouped by reason with
clean messages, the run's metadata and expectations embedded, no secret.

A run against two unreachable contexts (unknown), a check that fails without a cluster
(non-conformant) and skip markers; then the page as pytest-html's script builds it in
Chromium (when installed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.report import page

PLUGIN = ("-p", "fleetcheck.plugin")
TOKEN = "s3cr3t-token-abcdef0123456789"

CHECKS = '''
import pytest

@pytest.mark.check("demo/api")
def test_api(target):
    pass

@pytest.mark.check("demo/measured")
def test_measured(evidence, check):
    evidence.text("probe output", "HTTP/1.1 500 etcd failed")
    check.require(False, expected="/readyz to answer 'ok'", observed="HTTP 500")

@pytest.mark.check("demo/mesh")
@pytest.mark.skip(reason="no mesh installed")
def test_mesh(target):
    pass

@pytest.mark.check("demo/pairs")
@pytest.mark.requires_clusters(5)
def test_pairs(pair):
    pass
'''


class _Blob(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blob = ""
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "data-jsonblob" in values:
            self.blob = values["data-jsonblob"] or ""
        if values.get("id"):
            self.ids.add(values["id"] or "")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run in a subprocess (module scope: several tests read it); its report dir."""
    root = tmp_path_factory.mktemp("page")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (root / "test_demo.py").write_text(CHECKS)
    (root / "kubeconfig.yaml").write_text(
        yaml.safe_dump(kubeconfig_dict(["ctx-a", "ctx-b"], token=TOKEN)))
    (root / "expectations.yaml").write_text("fleet:\n  min_version: '1.99'\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k != "KUBECONFIG"}
    env["HOME"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *PLUGIN, "-p", "no:cacheprovider",
         "--kubeconfig=kubeconfig.yaml", "--contexts=ctx-*", "--run-id=fc-page",
         "--expectations=expectations.yaml", "--connect-timeout=1"],
        cwd=root, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return root / "reports" / "fc-page"


def _page(report_dir: Path) -> tuple[str, dict, set[str]]:
    text = (report_dir / "report.html").read_text()
    parser = _Blob()
    parser.feed(text)
    return text, json.loads(parser.blob), parser.ids


def test_matrix_links_every_cell_to_its_row(demo_report: Path) -> None:
    text, data, ids = _page(demo_report)
    assert 'id="fleet-matrix"' in text
    matrix = text[text.index('id="fleet-matrix"'):text.index('id="fleet-findings"')]
    assert ">ctx-a</th>" in matrix and ">ctx-b</th>" in matrix
    assert 'class="fc-v-non-conformant"' in matrix and 'class="fc-v-unknown"' in matrix
    rows_html = " ".join(cell for tests in data["tests"].values() for t in tests
                         for cell in t["resultsTableRow"])
    for anchor in re.findall(r'href="#(fc-[0-9a-f]+)"', matrix):
        assert f'id="{anchor}"' in rows_html or anchor in ids, anchor


def test_results_worst_first_and_skips_out_of_the_table(demo_report: Path) -> None:
    _text, data, _ = _page(demo_report)
    assert data["initialSort"] == "fcorder"
    rows = [t for tests in data["tests"].values() for t in tests]
    assert {t["result"] for t in rows} == {"Failed", "Error"}  # no skipped row
    ordered = sorted(rows, key=lambda t: t["fcorder"])
    assert "non-conformant" in ordered[0]["verdict"]
    assert all("unknown" in t["verdict"] for t in ordered[1:])
    # the finding sentence first in the row, the evidence after it, the traceback collapsed
    measured = next(t for t in rows if "demo/measured" in t["check"])
    extras = [x["content"] for x in measured["extras"]]
    assert "fc-finding" in extras[0] and "expected /readyz" in extras[0]
    assert any("fleetcheck-evidence" in x for x in extras[1:])
    assert measured["log"].startswith('<details class="fc-traceback">')


def test_skips_grouped_by_reason_with_counts_and_clean_messages(demo_report: Path) -> None:
    text, _data, _ = _page(demo_report)
    skips = text[text.index('id="fleet-skips"'):text.index('id="fleet-run"')]
    assert "<strong>2</strong> \u00d7 no mesh installed" in skips
    assert "<strong>2</strong> \u00d7 requires 5 clusters" in skips
    assert "Skipped: " not in text and "('/" not in text


def test_metadata_and_expectations_embedded_without_secrets(demo_report: Path) -> None:
    text, _, _ = _page(demo_report)
    run = text[text.index('id="fleet-run"'):]
    for fact in ("run by", "started", "fleetcheck", "image busybox", "context ctx-a"):
        assert f"<th>{fact}" in run, fact
    assert "tag only; no digest pinned" in run
    assert "expectations.yaml (sha256 " in text
    assert "as applied to ctx-a" in text and "min_version: &#x27;1.99&#x27;" in text
    assert TOKEN not in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_in_chromium_failure_first_no_script_error(demo_report: Path) -> None:
    proc = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom",
         (demo_report / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    rows = re.findall(r'<td class="col-verdict verdict-([a-z-]*)">', proc.stdout)
    assert rows and rows[0] == "non-conformant", rows
    assert proc.stdout.index('id="fleet-matrix"') < proc.stdout.index('id="results-table"')


def test_matrix_cell_shows_worst_verdict() -> None:
    records = [
        {"test": "t.py::a[x]", "check_id": "c/a", "context": "x", "verdict": "conformant"},
        {"test": "t.py::b[x]", "check_id": "c/a", "context": "x", "verdict": "unknown",
         "message": "c/a [x]: could not be carried out: <b>"},
        {"test": "t.py::c[x->y]", "check_id": "c/b", "context": "x->y", "verdict": "skipped"},
    ]
    out = page.render_matrix(records, ["x", "y"])
    assert f'<td class="fc-v-unknown"><a href="#{page.anchor_id("t.py::b[x]")}"' in out
    assert "(1/2)" in out and "&lt;b&gt;" in out and "<b>" not in out
    assert ">x-&gt;y</th>" in out


@pytest.mark.parametrize(("longrepr", "wasxfail", "expected"), [
    (("/x/suites/test_backup.py", 215, "Skipped: no backup tool"), None, "no backup tool"),
    ("Skipped: plain", None, "plain"),
    (None, "flaky", "expected failure: flaky"),
])
def test_clean_skip_reason(longrepr: object, wasxfail: str | None, expected: str) -> None:
    assert page.clean_skip_reason(longrepr, wasxfail) == expected
