"""Install and run anywhere: the built wheel, installed into a fresh virtualenv (dependencies
from PyPI), run from an empty directory against the lab, gives the same verdicts as the same
command run from the checkout; its console scripts work; ``import fleetcheck`` is ours."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fclab import LAB_IMAGES, REPO, results, run

SELECT = ["-k", "connectivity or dns"]


@dataclass(frozen=True)
class Installed:
    """A fresh virtualenv with only the built wheel (and its dependencies) installed."""

    venv: Path
    wheel: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHONPATH"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    # build from a copy of the tracked files: the build leaves build/ behind, never in the
    # checkout
    source = base / "source"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(source)], check=True, timeout=600, env=_env())
    (wheel,) = wheels.glob("fleetcheck-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                   timeout=900, env=_env())
    yield Installed(venv, wheel)
    shutil.rmtree(base, ignore_errors=True)


def _verdicts(report_dir: Path) -> dict[tuple[str, str], str]:
    return {(c["check_id"], c["context"]): c["verdict"] for c in results(report_dir)["checks"]}


def _lab_args(kubeconfig: Path, expectations: Path, run_id: str) -> list[str]:
    return [f"--kubeconfig={kubeconfig}", "--contexts=lab-*", f"--expectations={expectations}",
            *LAB_IMAGES, *SELECT, f"--run-id={run_id}"]


def test_import_is_ours(installed: Installed, tmp_path: Path) -> None:
    """From an empty directory the venv imports fleetcheck from its site-packages, with the
    catalogue inside it, and there is no top-level ``fixtures`` (a PyPI name) of ours."""
    code = ("import importlib.util, fleetcheck, fleetcheck.plugin.collection as c; "
            "print(fleetcheck.__file__); print(c.suites_dir()); "
            "print(importlib.util.find_spec('fixtures'))")
    out = subprocess.run([str(installed.bin("python")), "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, check=True, env=_env()).stdout.split()
    site = installed.venv.resolve()
    assert site in Path(out[0]).resolve().parents, out
    assert Path(out[1]) == Path(out[0]).parent / "suites", out
    assert out[2] == "None", out


def test_console_scripts_help(installed: Installed, tmp_path: Path) -> None:
    for name, words in (("fleetcheck-janitor", "--all-expired"), ("fleetcheck-backup", "restore"),
                        ("fleetcheck-merge", "--out DIR")):
        proc = subprocess.run([str(installed.bin(name)), "--help"], cwd=tmp_path, check=False,
                              capture_output=True, text=True, timeout=60, env=_env())
        assert proc.returncode == 0, proc.stderr
        assert f"usage: {name}" in proc.stdout or "usage: backup" in proc.stdout, proc.stdout
        assert words in proc.stdout


def test_installed_run_from_empty_directory_matches_checkout(
        installed: Installed, lab_kubeconfig: Path, tmp_path: Path) -> None:
    expectations = tmp_path / "expectations.yaml"
    shutil.copy(REPO / "scripts" / "lab" / "expectations.yaml", expectations)
    empty = tmp_path / "empty"
    empty.mkdir()

    run_id = f"fc-inst-{secrets.token_hex(3)}"
    proc = subprocess.run([str(installed.bin("pytest")),
                           *_lab_args(lab_kubeconfig, expectations, run_id)],
                          cwd=empty, capture_output=True, text=True, timeout=900, env=_env(),
                          check=False)
    out = proc.stdout + proc.stderr
    report = empty / "reports" / run_id
    assert (report / "results.json").is_file(), out[-3000:]
    installed_verdicts = _verdicts(report)
    assert proc.returncode == 0, out[-3000:]

    checkout_id = f"fc-ckout-{secrets.token_hex(3)}"
    checkout_report = tmp_path / "checkout-report"
    ckout = run([*_lab_args(lab_kubeconfig, expectations, checkout_id),
                 f"--report-dir={checkout_report}", "-q"], cwd=REPO, timeout=900)
    assert (checkout_report / "results.json").is_file(), (ckout.stdout + ckout.stderr)[-3000:]
    checkout_verdicts = _verdicts(checkout_report)

    assert installed_verdicts == checkout_verdicts
    assert len(installed_verdicts) > 20
    assert set(installed_verdicts.values()) == {"conformant"}, installed_verdicts
