"""Loads the fleetcheck plugin for runs from this checkout.

Where fleetcheck is installed (``pip install -e .``), its ``pytest11`` entry point loads the
plugin and this file defines nothing, so it is harmless when the checkout's ``suites/`` is
collected from another rootdir (a non-top-level conftest may not set ``pytest_plugins``).
Without the entry point (not installed, or PYTEST_DISABLE_PLUGIN_AUTOLOAD) it loads it here.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") or not any(
        ep.value == "fleetcheck.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["fleetcheck.plugin"]
