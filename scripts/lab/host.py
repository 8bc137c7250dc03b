"""Host plumbing for the lab: processes, cgroups, mounts and network namespaces.

Every lab process (daemons and, through kubelet's --cgroup-root, every pod) lives below the
cgroup ``/fclab`` in every cgroup v1 hierarchy. That makes "kill everything the lab started",
"how much memory and CPU does the lab use" and "did anything survive" exact questions,
whatever an earlier session left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from topology import CGROUP_PARENT, NETNS_PREFIX, RUN, STATE

CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")


def run(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    """Run a command, returning stdout; raise with its stderr when it fails."""
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


def hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, named ones and the v2 'unified')."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mnt, fstype = line.split()[:3]
        if fstype in ("cgroup", "cgroup2") and mnt.startswith(str(CGROUP_FS)):
            out.append(Path(mnt))
    return out


def make_cgroup(rel: str) -> None:
    """Create cgroup ``/fclab/...`` in every hierarchy (cpuset needs cpus/mems copied down)."""
    for h in hierarchies():
        path = h
        for part in rel.strip("/").split("/"):
            parent, path = path, path / part
            if not path.exists():
                path.mkdir()
                if (h / "cpuset.cpus").exists():
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        (path / f).write_text((parent / f).read_text().strip() or "\n")


def lab_pids() -> set[int]:
    """Every process in the lab's cgroup tree, plus strays that name the lab's directories."""
    pids: set[int] = set()
    for h in hierarchies():
        root = h / CGROUP_PARENT
        if root.exists():
            for procs in root.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    # strays (their cgroup was removed under them): lab binaries started on lab paths
    markers = (str(STATE).encode(), str(RUN).encode())
    binaries = {"kube", "etcd", "containerd", "containerd-shim-runc-v2", "coredns", "runc",
                "nsenter", "echo", "pause"}
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me:
            try:
                cmd = (d / "cmdline").read_bytes()
                exe = os.path.basename(os.readlink(d / "exe"))
            except OSError:
                continue
            if exe in binaries and any(m in cmd for m in markers):
                pids.add(int(d.name))
    pids.discard(me)
    return pids


def kill_all(timeout: float = 15) -> int:
    """SIGKILL every lab process until none is left; returns how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = lab_pids() - {os.getpid(), os.getppid()}
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise RuntimeError(f"lab processes survive SIGKILL: {sorted(pids)}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def lab_mounts() -> list[str]:
    """Mount points the lab owns, deepest first."""
    prefixes = (str(STATE) + "/", str(RUN) + "/", str(NETNS_DIR / NETNS_PREFIX),
                str(NETNS_DIR / "cni-"))
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mnt = line.split()[1].replace("\\040", " ")
        if mnt == str(RUN) or mnt.startswith(prefixes):
            points.append(mnt)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all() -> None:
    for _ in range(5):
        points = lab_mounts()
        if not points:
            return
        for p in points:
            subprocess.run(["umount", "-l", p], capture_output=True, check=False)
    left = lab_mounts()
    if left:
        raise RuntimeError(f"lab mounts survive umount: {left[:5]}")


def remove_cgroups() -> None:
    for h in hierarchies():
        root = h / CGROUP_PARENT
        if not root.exists():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True)
        for d in [*dirs, root]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"cannot remove cgroup {d}: still in use")


def lab_netns() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir()
                  if p.name.startswith(NETNS_PREFIX) or p.name.startswith("cni-"))


def remove_netns() -> None:
    for name in lab_netns():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        (NETNS_DIR / name).unlink(missing_ok=True)


def cgroup_stat(rel: str = CGROUP_PARENT) -> dict[str, float]:
    """Memory (bytes) and CPU time (seconds) used by a lab cgroup subtree."""
    mem = CGROUP_FS / "memory" / rel
    cpu = CGROUP_FS / "cpuacct" / rel
    out: dict[str, float] = {}
    if (mem / "memory.stat").exists():
        stat = dict(line.split() for line in (mem / "memory.stat").read_text().splitlines())
        # resident memory without page cache: what the processes actually hold
        out["rss_bytes"] = float(stat.get("total_rss", 0)) + float(stat.get("total_shmem", 0))
        out["usage_bytes"] = float((mem / "memory.usage_in_bytes").read_text())
    if (cpu / "cpuacct.usage").exists():
        out["cpu_seconds"] = int((cpu / "cpuacct.usage").read_text()) / 1e9
    return out


#: keeps a component running as kubelet keeps a static pod: restarted a second after it exits
#: (a scheduler or controller-manager exits when it loses its leader-election Lease, e.g.
#: while etcd is down); SIGTERM/SIGINT stop the component and the loop
_RESTART_LOOP = ('trap \'kill -TERM "$c" 2>/dev/null; wait "$c"; exit 0\' TERM INT; '
                 'while :; do "$@" & c=$!; wait "$c"; sleep 1; done')


def start_daemon(name: str, argv: list[str], *, netns: str | None, cgroup: str, log: Path,
                 env: dict[str, str] | None = None, restart: bool = False) -> int:
    """Start a long-running lab process detached, in its cgroup and network namespace
    (``restart``: restarted whenever it exits, until stopped)."""
    make_cgroup(cgroup)
    log.parent.mkdir(parents=True, exist_ok=True)
    if netns:
        argv = ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8"}
    full_env.update(env or {})
    # the process joins its cgroup before exec (a shell, not preexec_fn: we start from threads)
    procs = [str(h / cgroup.strip("/") / "cgroup.procs") for h in hierarchies()]
    full_env["FCLAB_CGROUP_PROCS"] = " ".join(procs)
    join = 'for p in $FCLAB_CGROUP_PROCS; do echo $$ > "$p"; done; '
    argv = ["/bin/sh", "-c", join + (_RESTART_LOOP if restart else 'exec "$@"'), "sh", *argv]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=full_env,
        )
    pidfile = RUN / "pids" / f"{name}.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def daemon_alive(name: str) -> bool:
    try:
        pid = int((RUN / "pids" / f"{name}.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def stop_daemon(name: str, timeout: float = 10) -> bool:
    """Stop one lab daemon (SIGTERM, then SIGKILL); False if it was not running."""
    if not daemon_alive(name):
        return False
    pid = int((RUN / "pids" / f"{name}.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemon_alive(name):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return True
