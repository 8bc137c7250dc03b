"""Lab lifecycle: `down` leaves no trace, `up` recovers from `kill -9` of every lab process,
`up` is idempotent, and `up --stage core` then `up` adds Karmada and Istio to running clusters.
Named to run after the other lab tests: each test here restarts the lab, and the lab is left up
for whatever runs next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import KUBECONFIG, LAB, kubectl, lab

# the whole lab, Karmada and Istio included, is torn down and brought back
pytestmark = [pytest.mark.lab, pytest.mark.full_lab]


def _lab_processes() -> list[int]:
    sys.path.insert(0, str(LAB))
    import host

    return sorted(host.lab_pids())


CORE_CONTEXTS = sorted(f"{who}{c}" for c in ("lab-a", "lab-b", "lab-c")
                       for who in ("", "viewer@", "editor@"))


def _contexts() -> list[str]:
    """The contexts of the lab's kubeconfig, sorted."""
    return sorted(c["name"] for c in json.loads(Path(KUBECONFIG).read_text())["contexts"])


def _daemon_pids() -> dict[str, str]:
    """The lab's daemons and their pids, from its pid files."""
    return {p.name: p.read_text().strip()
            for p in sorted(Path("/run/fleetcheck-lab/pids").glob("*.pid"))}


def test_up_is_idempotent_when_healthy():
    assert lab("up").returncode == 0
    before = _daemon_pids()
    assert len(before) >= 20
    t = time.monotonic()
    proc = lab("up")
    assert proc.returncode == 0, proc.stderr
    assert "already up and healthy" in proc.stdout
    assert time.monotonic() - t < 30
    assert _daemon_pids() == before, "a second `up` on a healthy lab must not restart it"


def test_status_shows_a_dead_component():
    # the lab's own status must name a component that died, and exit non-zero
    pidfile = "/run/fleetcheck-lab/pids/lab-b-n1.kube-proxy.pid"
    pid = int(Path(pidfile).read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    proc = lab("status")
    assert proc.returncode == 1
    assert "lab-b-n1.kube-proxy" in proc.stdout and "DEAD" in proc.stdout


def test_up_recovers_after_kill_9_of_every_lab_process():
    for pid in _lab_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc = lab("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab("status").returncode == 0
    for c in ("lab-a", "lab-b", "lab-c"):
        out = kubectl(c, "get", "nodes", "--no-headers").stdout
        assert " Ready " in out and "NotReady" not in out, out


def test_down_leaves_nothing_then_up_in_two_stages():
    proc = lab("down")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = lab("leftovers")
    assert left.returncode == 0, f"traces after down: {left.stdout}"
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True, check=True).stdout.split()
                if n.startswith(("fclab-", "cni-"))]
    assert "fleetcheck-lab" not in Path("/proc/mounts").read_text()
    assert not os.path.exists("/sys/fs/cgroup/memory/fclab")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=False).stdout
    assert "KUBE-" not in rules
    # up again in the two stages scripts/test takes on a cold machine: the clusters, then
    # Karmada and Istio added to them without restarting anything (the lab is left up)
    proc = lab("up", "--stage", "core")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = lab("status")
    assert status.returncode == 0, status.stdout
    for name in ("karmada", "istio"):
        assert f"{name:10} not started" in status.stdout, status.stdout
    assert _contexts() == CORE_CONTEXTS
    before = _daemon_pids()
    proc = lab("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "added karmada, istio to the running lab" in proc.stdout, proc.stdout
    after = _daemon_pids()
    assert {k: v for k, v in after.items() if k in before} == before, "clusters restarted"
    added = sorted(set(after) - set(before))
    assert len(added) == 7 and all(n.startswith("karmada.") for n in added), added
    assert _contexts() == sorted([*CORE_CONTEXTS, "karmada"])
    status = lab("status")
    assert status.returncode == 0, status.stdout
    assert "istiod=3/3 Available" in status.stdout and "members=3/3 Ready" in status.stdout
