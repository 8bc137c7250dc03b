"""Disruptive checks (no cluster): allowed ones run after every other item, in their own order,
never under pytest-xdist; and the pure parts of the failover/node-drain plumbing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.failover import drain as nodedrain
from fleetcheck.failover.drain import NodeState, Placement
from fleetcheck.kube.traffic import Request, Traffic, parse_requests

PLUGIN = ("-p", "fleetcheck.plugin")

CHECKS = '''
import pytest

@pytest.mark.check("demo/first")
def test_first(target):
    pass

@pytest.mark.disruptive
@pytest.mark.check("failover/one")
def test_drain_one(target):
    pass

def test_plain():
    pass

@pytest.mark.check("demo/second")
def test_second():
    pass

@pytest.mark.disruptive
@pytest.mark.check("failover/two")
def test_drain_two():
    pass

@pytest.mark.check("demo/third")
def test_third(target):
    pass
'''


@pytest.fixture
def project(isolated_pytester: pytest.Pytester) -> pytest.Pytester:
    path = isolated_pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig_dict(["lab-a", "lab-b"])))
    isolated_pytester.makepyfile(test_checks=CHECKS)
    return isolated_pytester


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess(*PLUGIN, f"--kubeconfig={pytester.path / 'kubeconfig.yaml'}",
                                "--contexts=lab-*", "--collect-only", "-q", *args)
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


DISRUPTIVE = ["test_drain_one[lab-a]", "test_drain_one[lab-b]", "test_drain_two"]


def test_allowed_disruptive_checks_go_last_in_their_order(project: pytest.Pytester) -> None:
    plain = _collected(project)
    assert [n for n in plain if n not in DISRUPTIVE] != plain  # they were in the middle
    assert _collected(project, "--allow-disruptive") == [
        n for n in plain if n not in DISRUPTIVE] + DISRUPTIVE


def test_selection_keeps_the_order(project: pytest.Pytester) -> None:
    selected = _collected(project, "--allow-disruptive", "-k", "two or second or first")
    assert selected[-1] == "test_drain_two"
    assert sorted(selected[:-1]) == ["test_first[lab-a]", "test_first[lab-b]", "test_second"]


def test_disruptive_checks_run_last(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*PLUGIN, f"--kubeconfig={project.path / 'kubeconfig.yaml'}",
                               "--contexts=lab-*", "--allow-disruptive", "-v", "-p",
                               "no:randomly")
    ran = [line.split("::", 1)[1].split()[0] for line in result.outlines
           if line.startswith("test_checks.py::")]
    assert len(ran) == 9, result.outlines
    assert ran[-3:] == DISRUPTIVE


def test_disruptive_checks_are_skipped_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = project.runpytest_subprocess(*PLUGIN, f"--kubeconfig={project.path / 'kubeconfig.yaml'}",
                               "--contexts=lab-*", "--allow-disruptive", "-n", "2", "-rs")
    result.stdout.fnmatch_lines(["*disruptive check: not run under pytest-xdist (-n)*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 3, result.outlines


# --- failover/node-drain plumbing --------------------------------------------------------------

def test_requests_and_longest_pause() -> None:
    lines = ["R 100.00 100.02 0 fc-drain-a", "R 100.12 100.14 0 fc-drain-b", "garbage line",
             "R 100.24 101.30 1 -", "R 101.40 101.41 0 -",  # no pod: not an answer
             "R 101.51 101.52 0 fc-drain-c", "R 101.62 101.63 0 fc-drain-c"]
    out = "\n".join(lines)
    requests = parse_requests(out)
    assert [r.ok for r in requests] == [True, True, False, False, True, True]
    traffic = Traffic(requests)
    assert traffic.ok == 4 and len(traffic.failed) == 2
    pause, start, end = traffic.longest_pause()
    assert (round(pause, 2), start, end) == (1.38, 100.14, 101.52)
    assert traffic.answered_by(traffic.window(101.0, None)) == {"fc-drain-c": 2}
    assert traffic.window(None, 100.12) == [requests[0]]


def test_no_answer_at_all_is_one_long_pause() -> None:
    traffic = Traffic([Request(5.0, 7.0, False, ""), Request(7.1, 9.0, False, "")])
    assert traffic.longest_pause() == (4.0, 5.0, 9.0)


def test_node_states_say_why_not_schedulable() -> None:
    node = NodeState("n2", ready=True, cordoned=True, taints=("lab=fault:NoSchedule",))
    assert not node.schedulable
    assert node.why_not == "cordoned, tainted lab=fault:NoSchedule"
    assert NodeState("n1", True, False, ()).schedulable


def test_pending_description_names_the_node_and_the_pods() -> None:
    rows = [Placement("fc-drain-x", "", "Pending", False, False,
                      "not scheduled: Unschedulable: 0/2 nodes are available"),
            Placement("fc-drain-y", "n1", "Running", True, False, ""),
            Placement("fc-drain-z", "n2", "Running", True, True, "")]
    assert nodedrain.pending_description(rows, "n2") == (
        "fc-drain-x Pending on no node: not scheduled: Unschedulable: 0/2 nodes are available; "
        "fc-drain-z still on n2 (Running, terminating)")


def test_drain_workload_is_restricted_and_spread() -> None:
    probes = SimpleNamespace(images={"busybox": "registry.example/busybox:1.36.1"},
                             run_id="fc-test", ttl_s=600,
                             target=SimpleNamespace(cluster_id="lab-c"))
    deployment, service, budget = nodedrain.drain_manifests(probes)  # type: ignore[arg-type]
    spec = deployment["spec"]["template"]["spec"]
    assert "activeDeadlineSeconds" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]
    assert spec["topologySpreadConstraints"][0]["nodeTaintsPolicy"] == "Honor"
    assert deployment["spec"]["replicas"] == 2
    assert service["spec"]["selector"] == budget["spec"]["selector"]["matchLabels"]
