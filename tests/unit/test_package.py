"""The importable package is ours (design.md §6: a PyPI package named ``fixtures`` exists)."""

from __future__ import annotations

from pathlib import Path

import fleetcheck
import fleetcheck.plugin

REPO = Path(__file__).resolve().parents[2]


def test_fleetcheck_is_imported_from_this_checkout() -> None:
    assert Path(fleetcheck.__file__).resolve().parent == REPO / "fixtures" / "fleetcheck"


def test_public_names() -> None:
    for name in ("Unknown", "Finding", "Target", "Pair", "ExecResult", "ProbeSet", "ProbePod",
                 "Evidence", "CheckInfo", "Verdict", "NonConformant", "require"):
        assert hasattr(fleetcheck, name), name


def test_plugin_is_registered_as_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("fleetcheck.plugin") == "fleetcheck.plugin"


def test_every_package_is_listed_for_the_build() -> None:
    """pyproject lists packages explicitly (for the suites/ mapping): none may be missing."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert set(find_packages(str(REPO / "fixtures"))) | {"fleetcheck.suites"} == listed
    assert config["package-dir"]["fleetcheck.suites"] == "suites"
    assert not (REPO / "fixtures" / "fleetcheck" / "suites").exists()  # no copy in git


def test_console_scripts_are_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("fleetcheck-janitor") == "fleetcheck.cli.janitor:main"
    assert scripts.get("fleetcheck-backup") == "fleetcheck.cli.backup:main"
    assert scripts.get("fleetcheck-merge") == "fleetcheck.cli.merge:main"
