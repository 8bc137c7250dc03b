"""Shared helpers for fleetcheck's self-tests (no cluster needed, except under tests/lab/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest_plugins = ["pytester"]


def _import_kubernetes_models() -> None:
    """Import every kubernetes client model module now.  The client imports them lazily, and
    an in-process pytester run restores ``sys.modules`` afterwards, dropping the ones it
    imported: a later import makes a second class of the same model, which the client's
    pydantic validation then rejects ("Input should be ... an instance of V1ContainerStatus")."""
    import importlib
    import pkgutil

    from kubernetes.client import models

    for info in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{info.name}")


_import_kubernetes_models()


@pytest.fixture
def write_kubeconfig(tmp_path: Path) -> Callable[..., Path]:
    """Write a kubeconfig (dict or raw text) into tmp_path and return its path."""
    counter = {"n": 0}

    def write(data: dict[str, Any] | str, name: str | None = None) -> Path:
        counter["n"] += 1
        path = tmp_path / (name or f"kubeconfig-{counter['n']}.yaml")
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def isolated_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                      ) -> pytest.Pytester:
    """pytester with no KUBECONFIG, a HOME of its own, and a pyproject so that its directory
    is the rootdir (as the checkout is for users)."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    return pytester
