"""Progress lines: waits longer than a few seconds, per-context "verdicts final", quiet under -q."""

from __future__ import annotations

import time

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.core import progress as progress_mod
from fleetcheck.core.progress import Progress, contexts_of


def test_a_long_wait_is_reported_with_elapsed_time_and_a_short_one_is_not() -> None:
    lines: list[str] = []
    progress = Progress(lines.append, threshold_s=5, repeat_s=15)
    with progress.waiting("lab-a", "pod probe-busybox to start (Ready)"):
        start = time.monotonic()
        progress.tick(start + 1)
        assert lines == []
        progress.tick(start + 7)
        progress.tick(start + 8)  # not again before repeat_s
        progress.tick(start + 23)
    assert lines == ["[lab-a] waiting for pod probe-busybox to start (Ready): 7s",
                     "[lab-a] waiting for pod probe-busybox to start (Ready): 23s"]
    with progress.waiting("lab-b", "echo server rollout"):
        pass
    assert len(lines) == 2  # a short wait stays quiet
    progress.close()


def test_verdicts_final_per_context_when_its_last_check_finished() -> None:
    lines: list[str] = []
    progress = Progress(lines.append)
    ids = ["s.py::test_a[lab-a]", "s.py::test_a[lab-b]", "s.py::test_p[lab-a->lab-b]@g",
           "s.py::test_other"]
    progress.expect(ids, ["lab-a", "lab-b"])
    progress.finished("s.py::test_a[lab-a]", "conformant")
    assert lines == []
    progress.finished("s.py::test_p[lab-a->lab-b]", "unknown")
    assert len(lines) == 1 and lines[0].startswith("[lab-a] verdicts final after ")
    assert lines[0].endswith("1 conformant, 1 unknown")
    progress.finished("s.py::test_a[lab-b]", "non-conformant")
    assert lines[1].startswith("[lab-b] verdicts final") and "1 non-conformant" in lines[1]


@pytest.mark.parametrize(("nodeid", "expected"), [
    ("s.py::t[lab-a]", ["lab-a"]), ("s.py::t[lab-a->lab-b]@grp", ["lab-a", "lab-b"]),
    ("s.py::t[no-contexts]", []), ("s.py::t", []),
])
def test_contexts_of(nodeid: str, expected: list[str]) -> None:
    assert contexts_of(nodeid, {"lab-a", "lab-b"}) == expected


def test_waiting_without_a_reporter_is_a_no_op() -> None:
    assert progress_mod._current is None
    with progress_mod.waiting("lab-a", "anything"):
        pass


@pytest.mark.parametrize("quiet", [False, True])
def test_verdicts_final_lines_on_the_terminal_and_quiet_under_q(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, quiet: bool) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(pytester.path))
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    (pytester.path / "kc.yaml").write_text(yaml.safe_dump(kubeconfig_dict(["ctx-a", "ctx-b"])))
    pytester.makepyfile('''
import pytest

@pytest.mark.check("demo/api")
def test_api(target):
    pass
''')
    result = pytester.runpytest("-p", "fleetcheck.plugin", "--kubeconfig=kc.yaml",
                                "--contexts=ctx-*", "--connect-timeout=1",
                                *(["-q"] if quiet else []))
    result.assert_outcomes(errors=2)
    if quiet:
        assert "verdicts final" not in result.stdout.str()
    else:
        result.stdout.fnmatch_lines(["fleetcheck: [[]ctx-a[]] verdicts final after *s: 1 unknown",
                                     "fleetcheck: [[]ctx-b[]] verdicts final after *s: 1 unknown"])


def test_lines_are_printable_whatever_the_names() -> None:
    lines: list[str] = []
    progress = Progress(lines.append, threshold_s=0)
    with progress.waiting("lab-a", "pod \x1b]0;pwned\x07probe\r to start"):
        progress.tick(time.monotonic() + 1)
    progress.close()
    assert lines[0].startswith("[lab-a] waiting for pod \\x1b]0;pwned\\x07probe\\x0d to start: ")
    assert not any(c in line for line in lines for c in "\x1b\x07\r")
