#!/usr/bin/env python3
"""Delete fleetcheck probe namespaces left behind: a checkout wrapper of ``fleetcheck-janitor``
(the logic is :mod:`fleetcheck.cli.janitor`; see ``--help``)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import fleetcheck  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

from fleetcheck.cli.janitor import main

if __name__ == "__main__":
    sys.exit(main())
