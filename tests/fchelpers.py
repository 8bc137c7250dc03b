"""Helpers shared by the self-tests (importable as ``fchelpers``; tests/ is on sys.path)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubeconfig_dict(
    contexts: Sequence[str],
    *,
    server: str | None = None,
    token: str = "fake-token-0123456789",
    current: str | None = None,
    extra_user: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster and one user per context, all pointing at ``server``
    (one cluster behind several contexts), or by default each at a closed port of its own on
    127.0.0.1 (distinct clusters)."""
    servers = {c: server or f"https://127.0.0.1:{closed_port()}" for c in contexts}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"{c}-cluster", "cluster": {"server": servers[c]}}
                     for c in contexts],
        "users": [
            {"name": f"{c}-user", "user": {"token": token, **(extra_user or {})}} for c in contexts
        ],
        "contexts": [
            {"name": c, "context": {"cluster": f"{c}-cluster", "user": f"{c}-user"}}
            for c in contexts
        ],
        "current-context": current or (contexts[0] if contexts else ""),
    }
