"""A tiny pytest plugin for scripts/bench-suites: thread and open-fd counts of the pytest
process at session start and at session finish, appended as JSON lines to the file named by
``FCBENCH_LEAKPROBE_OUT``.

Load it with ``-p fcbench_leakprobe`` and ``scripts/bench`` on ``PYTHONPATH``.  sessionstart
is recorded first (before other plugins' sessionstart hooks open clients), sessionfinish last
(after fleetcheck's own sessionfinish: cleanup and reports), so the difference is what the
session left behind.  Under xdist every process (controller, workers) writes its own records.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading
import time

import pytest

ENV = "FCBENCH_LEAKPROBE_OUT"


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _thread_names() -> dict[str, int]:
    """Threads by name with trailing digits and '-N' suffixes removed (ThreadPoolExecutor-0_3,
    prewarm-lab-a -> prewarm-lab-a)."""
    names: collections.Counter[str] = collections.Counter()
    for thread in threading.enumerate():
        name = thread.name.rstrip("0123456789_").rstrip("-_ ") or thread.name
        names[name] += 1
    return dict(names)


def _record(phase: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    data = {"phase": phase, "pid": os.getpid(), "time": time.time(),
            "threads": threading.active_count(), "fds": _fds(),
            "thread_names": _thread_names(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER")}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(data) + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _record("configure")
    # "unconfigure" is recorded when the interpreter exits: after every plugin's
    # pytest_unconfigure (fleetcheck closes its clients there; hook order among trylast
    # implementations would otherwise decide whether that is seen)
    atexit.register(_record, "unconfigure")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _record("sessionstart")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _record("sessionfinish")


