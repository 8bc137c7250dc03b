"""fleetcheck-janitor's Karmada part without a cluster: the Clusters of a control plane read
through kube.api, a context that is no control plane passed over in silence."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from fleetcheck.cli import janitor
from fleetcheck.federation.failover import OUTAGE_TAINT
from test_failover_cli import FakeClient, cluster

DEAD_RUN = "fc-20250101-120000-ab12"


def clean(answer: tuple[int, Any] | BaseException, dry_run: bool = True
          ) -> tuple[list[str], bool]:
    target = SimpleNamespace(name="k", api_client=FakeClient(answer))
    args = argparse.Namespace(run_id=None, dry_run=dry_run)
    return janitor.clean_cluster_taints(target, args, set(), (1.0, 1.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("answer", [
    (404, {"kind": "Status", "code": 404, "message": "the server could not find it"}),
    (404, "404 page not found"),
    (403, {"kind": "Status", "code": 403, "message": "clusters.cluster.karmada.io is forbidden"}),
    (200, "<html>login</html>"),
    urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")),
])
def test_no_control_plane_to_read_is_no_line(answer: Any) -> None:
    assert clean(answer) == ([], True)


def test_a_failing_control_plane_is_reported() -> None:
    assert clean((500, {"message": "etcdserver: request timed out"})) == (
        ["k: cannot list Clusters: list Clusters: HTTP 500 etcdserver: request timed out"],
        False)


def test_a_dead_runs_taint_is_found() -> None:
    taint = {"key": OUTAGE_TAINT, "value": DEAD_RUN, "effect": "NoExecute"}
    listed = {"kind": "ClusterList", "metadata": {},
              "items": [cluster("m1", taints=[taint]), cluster("m2")]}
    assert clean((200, listed)) == ([
        f"k: would remove taint {OUTAGE_TAINT}={DEAD_RUN}:NoExecute from Cluster m1"], True)
