"""Faults in the restore path of disruptive checks, for the lab tests: a fault proxy in front of
one context's API server (the lab's ``apiproxy.py`` on the host, with a faults file), a
kubeconfig that reaches that context through it, and a fleetcheck run in the background that
can be SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import fclab
import yaml

APIPROXY = fclab.REPO / "scripts" / "lab" / "apiproxy.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultProxy:
    """``context`` of ``kubeconfig`` reached through a proxy that stalls or resets on demand."""

    def __init__(self, kubeconfig: Path, context: str, tmp_path: Path) -> None:
        data = yaml.safe_load(kubeconfig.read_text())
        ctx = next(c["context"] for c in data["contexts"] if c["name"] == context)
        cluster = next(c["cluster"] for c in data["clusters"] if c["name"] == ctx["cluster"])
        upstream = urllib.parse.urlsplit(cluster["server"])
        assert upstream.hostname == "127.0.0.1", cluster["server"]  # loopback only
        self.port = free_port()
        self.faults = tmp_path / f"faults-{self.port}.json"
        cluster["server"] = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = tmp_path / f"kubeconfig-through-proxy-{context}.yaml"
        self.kubeconfig.write_text(yaml.safe_dump(data))
        self.kubeconfig.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, str(APIPROXY), "--faults", str(self.faults), "--no-netns", "-",
             f"{self.port}=127.0.0.1:{upstream.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the fault proxy did not start")

    def fault(self, mode: str | None, seconds: float | None = None) -> None:
        """``stall`` / ``reset`` every connection (for ``seconds``), or heal (None)."""
        faults = {} if mode is None else {str(self.port): {
            "mode": mode, "until": None if seconds is None else time.time() + seconds}}
        tmp = self.faults.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(self.faults)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def background_run(args: list[str], log: Path) -> subprocess.Popen:
    """fleetcheck (pytest) in a process group of its own, output to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    with log.open("w") as out:
        return subprocess.Popen(fclab.pytest_cmd(*args), cwd=fclab.REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def janitor(kubeconfig: Path, contexts: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetcheck.cli.janitor",
                           f"--kubeconfig={kubeconfig}", f"--contexts={contexts}", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=fclab.REPO)

