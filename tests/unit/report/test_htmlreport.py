"""report.html keeps cluster- and kubeconfig-supplied text as text.

pytest-html 4 builds the page in the browser: the environment table, the results table cells,
the log and HTML extras come from a JSON blob and are inserted with ``innerHTML``.  A context
named ``x<img src=x>`` (its server unreachable, so no cluster is needed) must show up as those
characters, never as an element, while junit.xml and results.json carry the plain name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from fchelpers import kubeconfig_dict

PLUGIN = ("-p", "fleetcheck.plugin")
EVIL = "x<img src=x>"
EVIL_ERROR = "<img src=y onerror=alert(1)>"

CHECKS = f'''
import pytest
from fleetcheck.core.verdicts import Unknown

@pytest.mark.check("demo/api")
def test_api(target):
    pass

@pytest.mark.check("demo/evidence")
def test_evidence(evidence, check):
    evidence.text("{EVIL_ERROR}", "observed {EVIL_ERROR}")
    check.require(False, expected="no {EVIL_ERROR}", observed="{EVIL_ERROR}")

@pytest.mark.check("demo/unknown")
def test_unknown(evidence):
    raise Unknown("server said {EVIL_ERROR}")
'''


class _Elements(HTMLParser):
    """Collects the elements an HTML fragment creates (as a browser's parser would)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.injected: list[str] = []
        self.blob: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        # pytest-html's own media viewer template has an <img src="">; ours would have src
        # x or y, or an onerror handler
        if (tag == "img" and values.get("src")) or "onerror" in values:
            self.injected.append(self.get_starttag_text() or tag)
        if "data-jsonblob" in values:
            self.blob = values["data-jsonblob"]


def _parse(fragment: str) -> _Elements:
    parser = _Elements()
    parser.feed(fragment)
    parser.close()
    return parser


def _inner_html_fragments(data: dict[str, Any]) -> list[str]:
    """Every string pytest-html's app.js inserts with innerHTML, built as app.js builds it."""
    fragments = []
    for value in data.get("environment", {}).values():
        if isinstance(value, dict):
            fragments.append("<ul>" + "".join(f"<li>{k}: {v}</li>" for k, v in value.items())
                             + "<ul>")
        else:
            fragments.append(f"<div>{value}</div>")
    for tests in data.get("tests", {}).values():
        for test in tests:
            fragments += test.get("resultsTableRow", [])
            fragments.append(test.get("log") or "")
            fragments += test.get("tableHtml") or []
            fragments += [f"<div>{e['content']}</div>" for e in test.get("extras", [])
                          if e.get("format_type") == "html"]
    return fragments


@pytest.fixture(params=["serial", "xdist"])
def evil_run(request: pytest.FixtureRequest, pytester: pytest.Pytester,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run against one unreachable context named ``x<img src=x>`` (serial, and under
    pytest-xdist, where the controller writes the report); returns its report dir."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    kubeconfig = pytester.path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict([EVIL], server="https://127.0.0.1:1")))
    pytester.makepyfile(CHECKS)
    args = (*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=x*", "--run-id=fc-html",
            "--connect-timeout=1")
    if request.param == "xdist":
        result = pytester.runpytest_subprocess(*args, "-n", "2")
    else:
        result = pytester.runpytest(*args)
    result.assert_outcomes(failed=2, errors=1)
    out = pytester.path / "reports" / "fc-html"
    assert (out / "report.html").is_file()
    return out


def test_report_html_renders_untrusted_text_as_text(evil_run: Path) -> None:
    page = (evil_run / "report.html").read_text()
    parser = _parse(page)
    assert parser.injected == []  # the static page (summary lines, table header, title)
    assert parser.blob is not None
    data = json.loads(parser.blob)
    fragments = _inner_html_fragments(data)
    assert any(EVIL.replace("<", "&lt;").replace(">", "&gt;") in f for f in fragments)
    for fragment in fragments:
        assert _parse(fragment).injected == [], fragment
    # the environment table names the context (keys are set as text, values as HTML)
    assert f"Context {EVIL}" in data["environment"]


def test_junit_and_results_json_keep_the_plain_text(evil_run: Path) -> None:
    results = json.loads((evil_run / "results.json").read_text())
    assert results["contexts"][0]["name"] == EVIL
    by_id = {c["check_id"]: c for c in results["checks"]}
    assert by_id["demo/api"]["context"] == EVIL
    assert EVIL_ERROR in by_id["demo/unknown"]["message"]
    root = ET.parse(evil_run / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["Contexts"] == EVIL
    assert f"Context {EVIL}" in props
    assert EVIL in {p.get("value") for p in root.iter("property") if p.get("name") == "context"}
    names = [c.get("name") for c in root.iter("testcase")]
    assert f"test_api[{EVIL}]" in names


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_html_in_a_browser_has_no_injected_element(evil_run: Path) -> None:
    """The DOM as Chromium builds it, after pytest-html's script ran: no injected img element,
    and the context name is there as text."""
    dom = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
         "--virtual-time-budget=5000", "--dump-dom", (evil_run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    parser = _parse(dom)
    assert "tbody" in parser.tags and "td" in parser.tags  # the results table was rendered
    assert parser.injected == []
    assert "x&lt;img src=x&gt;" in dom  # shown as text
