"""Tests under tests/lab/ run against the local lab (scripts/lab): all are marked ``lab``.

They FAIL, with what to do, when the lab's kubeconfig does not exist; deselect them with
``-m "not lab"``.  The kubeconfig path comes from FLEETCHECK_LAB_KUBECONFIG (default
/var/lib/fleetcheck-lab/kubeconfig).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

# A shell without job control starts a background command with SIGINT ignored, and every
# child inherits an ignored signal: the Ctrl-C the interrupt tests send would never arrive
# (Python installs its KeyboardInterrupt handler only where SIGINT is not ignored).  A handler
# of our own is reset to the default in every child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LAB_KUBECONFIG = Path(
    os.environ.get("FLEETCHECK_LAB_KUBECONFIG", "/var/lib/fleetcheck-lab/kubeconfig")
)
HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def lab_kubeconfig() -> Path:
    """Path of the lab's kubeconfig (contexts lab-a, lab-b, lab-c, viewer@lab-a, ...)."""
    if not LAB_KUBECONFIG.is_file():
        pytest.fail(
            f"lab kubeconfig {LAB_KUBECONFIG} does not exist: start the lab with "
            "`.venv/bin/python scripts/lab up` (or point FLEETCHECK_LAB_KUBECONFIG at it), "
            "or deselect the lab tests with -m 'not lab'.",
            pytrace=False,
        )
    return LAB_KUBECONFIG


def lab_extras(state: Path) -> list[str] | None:
    """The components over the clusters the running lab was started with (Karmada, Istio), as
    ``scripts/lab`` records them next to the kubeconfig; None where no record is there."""
    try:
        return sorted(json.loads(state.read_text()).get("extras", {}))
    except (OSError, ValueError):
        return None


@pytest.fixture(autouse=True)
def _lab_required(request: pytest.FixtureRequest, lab_kubeconfig: Path) -> None:
    """Every lab test needs the lab (function scope: runs after module fixtures that start it),
    and those marked ``full_lab`` need its Karmada and Istio."""
    if request.node.get_closest_marker("full_lab"):
        extras = lab_extras(lab_kubeconfig.parent / "lab.json")
        missing = [x for x in ("karmada", "istio") if extras is not None and x not in extras]
        if missing:
            pytest.fail(f"the lab is up without {' and '.join(missing)} (`scripts/lab up "
                        "--stage core`): add them with `.venv/bin/python scripts/lab up`, or "
                        "deselect these tests with -m 'not full_lab'.", pytrace=False)
