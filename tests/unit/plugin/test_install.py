"""The installed plugin among other projects (pytester, no cluster): inert unless asked,
option spellings that never collide, and the installed check catalogue.

The plugin is loaded here as users get it, through its ``pytest11`` entry point (no ``-p``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.plugin.collection import suites_dir

OWN_TARGET_PROJECT = '''
import pytest

@pytest.fixture
def target():
    return "mine"

@pytest.fixture(params=["x", "y"])
def pair(request):
    return request.param

def test_uses_own_target(target):
    assert target == "mine"

def test_uses_own_pair(pair):
    assert pair in ("x", "y")
'''


@pytest.fixture(autouse=True)
def _isolated_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))


@pytest.fixture
def kubeconfig(pytester: pytest.Pytester) -> Path:
    """Three dead contexts (closed ports on 127.0.0.1)."""
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig_dict(["lab-a", "lab-b", "lab-c"])))
    return path


# --- inert for projects that don't ask for it --------------------------------------------------

def test_project_with_own_target_fixture_runs_unaffected(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile(OWN_TARGET_PROJECT)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_uses_own_target PASSED*", "*test_uses_own_pair?x? PASSED*"])
    out = result.stdout.str()
    # pytest's own "plugins: ..., fleetcheck-0.1.0" line is all that mentions it
    assert [line for line in result.stdout.lines if "fleetcheck" in line and
            not line.startswith(("plugins:", "metadata:"))] == []
    assert "no-contexts" not in out and "verdicts" not in out and "warning" not in out
    assert not (pytester.path / "reports").exists()


def test_own_target_fixture_left_alone_even_with_contexts(pytester: pytest.Pytester,
                                                          kubeconfig: Path) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile(OWN_TARGET_PROJECT)
    result = pytester.runpytest(f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "-v")
    result.assert_outcomes(passed=3)
    assert "[lab-a]" not in result.stdout.str()


def test_fleetcheck_checks_without_contexts_say_why(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("demo/one")
        def test_one(target):
            pass
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["fleetcheck: 1 check collected, none run against a cluster: no --contexts given*"])


# --- option spellings ---------------------------------------------------------------------------

def test_fleetcheck_spellings_are_accepted(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("demo/one")
        def test_one(check):
            pass
    ''')
    result = pytester.runpytest(f"--fleetcheck-kubeconfig={kubeconfig}",
                                "--fleetcheck-contexts=lab-b", "--fleetcheck-run-id=fc-long",
                                "--fleetcheck-report-dir=out")
    result.stdout.fnmatch_lines(["fleetcheck run fc-long by *, contexts: lab-b"])
    assert (pytester.path / "out" / "results.json").is_file()


def test_alias_taken_by_another_plugin_does_not_crash(pytester: pytest.Pytester,
                                                      kubeconfig: Path) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile(otherplug='''
        def pytest_addoption(parser):
            parser.addoption("--contexts", dest="other_contexts", help="another plugin's")
            parser.addoption("--run-id", dest="other_run_id")

        def test_other(pytestconfig):
            assert pytestconfig.getoption("other_contexts") == "theirs"
    ''')
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "otherplug", "--contexts=theirs",
                                f"--fleetcheck-kubeconfig={kubeconfig}",
                                "--fleetcheck-contexts=lab-c", "--fleetcheck-run-id=fc-x",
                                "otherplug.py")
    result.stdout.fnmatch_lines(["fleetcheck run fc-x by *, contexts: lab-c"])
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest("-p", "otherplug", "--help").stdout.str()
    assert "--fleetcheck-contexts" in help_text and "--fleetcheck-run-id" in help_text


# --- the installed catalogue ----------------------------------------------------------------------

def _collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if "::" in line]


def test_catalogue_is_found() -> None:
    catalogue = suites_dir()
    assert catalogue is not None
    assert {p.name for p in catalogue.glob("test_*.py")} >= {"test_connectivity.py", "test_dns.py"}


def test_unconfigured_directory_collects_the_catalogue(pytester: pytest.Pytester,
                                                       kubeconfig: Path) -> None:
    args = ["--collect-only", "-q", f"--kubeconfig={kubeconfig}", "--contexts=lab-a,lab-b"]
    result = pytester.runpytest(*args)
    items = _collected(result)
    assert "test_dns.py::test_coredns[lab-a]" in items
    assert "test_connectivity.py::test_cross_cluster_pod[lab-a->lab-b]" in items
    assert not (pytester.path / "reports").exists()

    selected = _collected(pytester.runpytest(*args, "-k", "coredns", "-m", "check"))
    assert selected == ["test_dns.py::test_coredns[lab-a]", "test_dns.py::test_coredns[lab-b]"]

    assert pytester.runpytest(*args, "--fleetcheck-suites=never").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_catalogue_not_added_without_contexts_or_in_configured_project(
        pytester: pytest.Pytester, kubeconfig: Path) -> None:
    assert pytester.runpytest("--collect-only", "-q").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    result = pytester.runpytest("--collect-only", "-q", f"--kubeconfig={kubeconfig}",
                                "--contexts=lab-a")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    always = pytester.runpytest("--collect-only", "-q", f"--kubeconfig={kubeconfig}",
                                "--contexts=lab-a", "--fleetcheck-suites=always")
    assert "test_dns.py::test_coredns[lab-a]" in _collected(always)


def test_naming_the_catalogue_collects_it_once(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    catalogue = suites_dir()
    assert catalogue is not None
    base = ["--collect-only", "-q", f"--kubeconfig={kubeconfig}", "--contexts=lab-a,lab-b"]
    implicit = _collected(pytester.runpytest(*base))
    named = pytester.runpytest(*base, str(catalogue), "--fleetcheck-suites=always")
    assert named.ret == pytest.ExitCode.OK
    assert len(_collected(named)) == len(implicit) > 0
