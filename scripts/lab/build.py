"""Build the lab's Kubernetes binary from the Go module proxy, once per pinned version.

`gosrc/` is a Go module that requires k8s.io/kubernetes at the pinned tag (with every staging
module replaced by its matching v0 version) and holds `cmd/kube`, one multi-call binary for
kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl.
The output and a stamp of its inputs live in the cache directory; an unchanged stamp means no
rebuild. Go's module and build caches (GOMODCACHE, GOCACHE) are kept between runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

from topology import CACHE

GOSRC = Path(__file__).resolve().parent / "gosrc"
BIN = CACHE / "bin"
GO_MINOR = "1.26"  # the toolchain this lab is pinned to: the machine's own Go 1.26.x
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
              "kube-proxy", "kubectl")


def kubernetes_version() -> str:
    gomod = (GOSRC / "go.mod").read_text()
    m = re.search(r"^(?:require )?\s*k8s\.io/kubernetes (v[0-9.]+)$", gomod, re.MULTILINE)
    if not m:
        raise RuntimeError(f"{GOSRC / 'go.mod'} does not pin k8s.io/kubernetes")
    return m.group(1)


def go_env() -> dict[str, str]:
    return dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0")


def check_go() -> str:
    out = subprocess.run(["go", "version"], capture_output=True, text=True, env=go_env(),
                         check=True).stdout
    m = re.search(r"go(\d+\.\d+)(\.\d+)?", out)
    if not m or m.group(1) != GO_MINOR:
        raise RuntimeError(f"the lab is pinned to Go {GO_MINOR}.x, found: {out.strip()}")
    return out.split()[2]


def _inputs_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(GOSRC.rglob("*")):
        if p.is_file() and p.suffix in (".go", ".mod", ".sum"):
            h.update(str(p.relative_to(GOSRC)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
                  f"-X {pkg}.buildDate={date}"]
    return " ".join(flags)


def build_kube(force: bool = False, log=print) -> Path:
    """Build (or reuse) the multi-call binary and its per-component symlinks."""
    version = kubernetes_version()
    go = check_go()
    stamp = {"kubernetes": version, "go": go, "inputs": _inputs_digest()}
    stamp_file = BIN / "kube.stamp.json"
    out = BIN / "kube"
    BIN.mkdir(parents=True, exist_ok=True)
    current = None
    if stamp_file.exists():
        try:
            current = json.loads(stamp_file.read_text())
        except ValueError:
            current = None
    if force or current != stamp or not out.exists():
        log(f"building Kubernetes {version} with {go} (cold: ~20-30 min on 2 cores)")
        tmp = BIN / "kube.tmp"
        subprocess.run(["go", "build", "-tags", "providerless", "-trimpath", "-ldflags",
                        ldflags(version), "-o", str(tmp), "./cmd/kube"], cwd=GOSRC,
                       env=go_env(), check=True)
        tmp.replace(out)
        stamp_file.write_text(json.dumps(stamp))
    for name in COMPONENTS:
        link = BIN / name
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to("kube")
    return out
