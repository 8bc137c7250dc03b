"""Lab lifecycle: `down` leaves no trace, `up` recovers from `kill -9` of every lab process,
and `up` is idempotent. Named to run after the other lab tests: each test here restarts the lab,
and the lab is left up for whatever runs next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import LAB, kubectl, lab

pytestmark = pytest.mark.lab


def _lab_processes() -> list[int]:
    sys.path.insert(0, str(LAB))
    import host

    return sorted(host.lab_pids())


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


def test_down_leaves_nothing_then_up_again():
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
    # leave the lab up for whatever runs next
    proc = lab("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
