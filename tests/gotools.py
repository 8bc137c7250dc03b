"""Go-built tools for the self-tests (actionlint, kind's config loader, kind), built once.

Binaries are built from the Go module proxy at pinned versions and cached under
``$FLEETCHECK_TOOLS_CACHE`` (default ``/var/cache/fleetcheck-lab/tools`` when writable, else
``~/.cache/fleetcheck/tools``), keyed by version or by the hash of their sources, so a warm
run only executes them. A missing Go skips the tests that need it; a failing build fails them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDCONFIG_MODULE = ROOT / "scripts" / "kind-fleet.d" / "kindconfig"
ACTIONLINT_VERSION = "v1.7.12"
GO_CANDIDATES = ("/usr/local/go/bin/go", str(Path.home() / "go" / "bin" / "go"))
BUILD_TIMEOUT_S = 900


def find_go() -> str:
    """Path of the go command, or skip the test saying Go is missing."""
    found = shutil.which("go") or next((c for c in GO_CANDIDATES if os.access(c, os.X_OK)), None)
    if not found:
        pytest.skip("Go is not installed (not on PATH, not in /usr/local/go/bin): actionlint "
                    "and kind's config loader are built with it")
    return found


def cache_dir() -> Path:
    """Where built tools are kept between runs."""
    env = os.environ.get("FLEETCHECK_TOOLS_CACHE")
    if env:
        path = Path(env)
    else:
        system = Path("/var/cache/fleetcheck-lab/tools")
        writable = os.access(system if system.exists() else system.parent, os.W_OK)
        path = system if writable else Path.home() / ".cache" / "fleetcheck" / "tools"
    path.mkdir(parents=True, exist_ok=True)
    return path


def go_env(go: str) -> dict[str, str]:
    """Environment for go: its own bin on PATH, no toolchain download, no VCS stamping."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(go).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GOTOOLCHAIN"] = "local"
    env["GOFLAGS"] = "-buildvcs=false"
    env.setdefault("CGO_ENABLED", "0")
    return env


def sources_hash(*paths: Path) -> str:
    """Short hash of the files that determine a build."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_build(name: str, key: str, build: Sequence[str], cwd: Path | None = None) -> Path:
    """The cached binary ``<cache>/<name>-<key>``; built with ``build`` (``{out}`` replaced by
    the output path; ``GOBIN`` set to a scratch directory) when absent."""
    go = find_go()
    target = cache_dir() / f"{name}-{key}"
    if target.exists():
        return target
    with open(cache_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        scratch = cache_dir() / f".{name}-{key}.build"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        out = scratch / name
        env = go_env(go) | {"GOBIN": str(scratch)}
        args = [go if a == "go" else a.replace("{out}", str(out)) for a in build]
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not out.exists():
            shutil.rmtree(scratch, ignore_errors=True)
            pytest.fail(f"building {name} failed ({' '.join(args)}, exit {proc.returncode}):\n"
                        f"{proc.stderr[-4000:]}", pytrace=False)
        out.rename(target)
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def actionlint() -> Path:
    """actionlint at :data:`ACTIONLINT_VERSION` (``go install`` from the module proxy)."""
    return cached_build("actionlint", ACTIONLINT_VERSION,
                        ["go", "install",
                         f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"])


def _module_files() -> list[Path]:
    return [KINDCONFIG_MODULE / f for f in ("go.mod", "go.sum", "main.go")]


def kindconfig() -> Path:
    """scripts/kind-fleet.d/kindconfig: kind's own loader and validation as a command."""
    return cached_build("kindconfig", sources_hash(*_module_files()),
                        ["go", "build", "-mod=readonly", "-trimpath", "-o", "{out}", "."],
                        cwd=KINDCONFIG_MODULE)


def kind() -> Path:
    """The kind CLI exactly as the nightly workflow builds it (pinned in the module's
    go.mod, verified against its go.sum)."""
    return cached_build("kind", sources_hash(*_module_files()[:2]),
                        ["go", "build", "-mod=readonly", "-trimpath", "-o", "{out}",
                         "sigs.k8s.io/kind"], cwd=KINDCONFIG_MODULE)
