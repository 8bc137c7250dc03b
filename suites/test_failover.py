"""Failover checks (disruptive: they run only with ``--allow-disruptive``, after every other
check of the run, one at a time)."""

from __future__ import annotations

import contextlib
import time

import pytest
from fleetcheck import CheckInfo, Evidence, ProbeSet, Target, Unknown, nodedrain
from fleetcheck.fleet import FleetRun
from kubernetes.client.exceptions import ApiException


@pytest.mark.disruptive
@pytest.mark.check("failover/node-drain", level="required")
def test_node_drain(target: Target, probes: ProbeSet, fleet: FleetRun, check: CheckInfo,
                    evidence: Evidence, expectations: dict) -> None:
    """Cordon one node and evict the check's own workload from it, as ``kubectl drain``
    does (Eviction API, disruption budget respected), while the probe pod keeps requesting
    the workload's Service: the evicted replicas are Ready elsewhere within
    ``failover.node_drain_timeout_s`` and the service never goes longer than
    ``failover.max_pause_s`` without answering.  Only the pods of the check's Deployment in
    the probe namespace are evicted; other pods on the node keep running (the cordon keeps new
    pods of every workload off it meanwhile).  The node is always uncordoned."""
    bounds = expectations["failover"]
    timeout_s = float(bounds["node_drain_timeout_s"])
    max_pause_s = float(bounds["max_pause_s"])
    baseline_s = float(bounds["node_drain_baseline_s"])
    if target.cluster_id != target.name:
        pytest.skip(f"{target.name} is the same cluster as {target.cluster_id} (same API server "
                    f"and CA): a node of it is drained once, under {target.cluster_id}")
    try:
        nodes = nodedrain.node_states(target.core())
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip("the API server serves no nodes (a control plane of its own, such as "
                        "Karmada's): nothing to drain")
        raise Unknown(f"cannot list nodes: HTTP {exc.status} {exc.reason}") from None
    evidence.table("nodes before", *nodedrain.nodes_table(nodes))
    if not nodes:
        pytest.skip("the cluster has no nodes (an API server without nodes, such as a Karmada "
                    "control plane): nothing to drain")
    schedulable = [n.name for n in nodes if n.schedulable]
    if len(schedulable) < 2:
        others = "; ".join(f"{n.name}: {n.why_not}" for n in nodes if not n.schedulable)
        pytest.skip(f"needs at least 2 schedulable nodes to drain one; {len(nodes)} node(s), "
                    f"{len(schedulable)} schedulable"
                    + (f" ({', '.join(schedulable)})" if schedulable else "")
                    + (f"; not schedulable: {others}" if others else ""))

    before, service_ip = nodedrain.deploy(probes, timeout_s)
    evidence.table("workload placement before", *nodedrain.placements_table(before))
    probe_node = nodedrain.probe_node(probes)
    candidates = sorted({p.node for p in nodedrain.serving(before)} - {probe_node})
    if not candidates:
        raise Unknown(f"every replica of {nodedrain.DRAIN} runs on {probe_node}, the probe "
                      "pod's node: no node to drain without draining the probe")
    node = candidates[0]
    evidence.text("node chosen", f"{node}: runs a replica of {probes.namespace}/"
                  f"{nodedrain.DRAIN}, not the probe pod (on {probe_node})")

    url = f"http://{service_ip}:{nodedrain.SERVICE_PORT}/"
    loop = nodedrain.RequestLoop(probes, url, max_s=baseline_s + timeout_s + 60)
    cordon = nodedrain.Cordon(probes, node)
    fleet.on_stop(cordon.on_stop)
    evictions: list[list[str]] = []
    timings: list[list[str]] = []
    try:
        loop.start()
        time.sleep(baseline_s)  # requests before anything changes
        cordon_at = loop.now()
        started = time.monotonic()
        cordon.cordon()
        timings.append(["cordoned", f"{time.monotonic() - started:.2f}s"])
        deadline = time.monotonic() + timeout_s
        for pod in [p for p in nodedrain.placements(probes) if p.node == node]:
            attempts, outcome = nodedrain.evict(probes, pod.pod, deadline)
            evictions.append([pod.pod, node, str(attempts), outcome,
                              f"{time.monotonic() - started:.2f}s"])
        evidence.table("evictions", ["pod", "node", "attempts", "outcome", "at"], evictions)
        evicted_at = time.monotonic() - started
        done, events, after = nodedrain.wait_rescheduled(probes, node, timeout_s)
        waited = time.monotonic() - started - evicted_at
        timings += [[event, f"{evicted_at + at:.2f}s"] for event, at in events.items()]
        if not done:
            timings.append(["gave up waiting", f"{evicted_at + waited:.2f}s"])
        settled_at = loop.now()
        time.sleep(1.0)  # a tail of requests once the drain is over
    finally:
        try:
            cordon.release()  # first: nothing must keep the node cordoned
        finally:
            loop.stop()
    evidence.table("workload placement after", *nodedrain.placements_table(after))
    evidence.table("timings (from the cordon)", ["event", "after"], timings)
    if not cordon.released:
        raise Unknown(f"node {node} is left cordoned: uncordon failed ({cordon.error}); "
                      f"run: kubectl uncordon {node}")

    try:
        traffic: nodedrain.Traffic | None = loop.traffic()
    except Unknown as exc:
        traffic, no_traffic = None, str(exc)
    if traffic is not None:
        _traffic_evidence(evidence, traffic, url, cordon_at, settled_at)
    blocked = ""
    if not done:
        with contextlib.suppress(ApiException):
            now = nodedrain.node_states(target.core())
            evidence.table("nodes after", *nodedrain.nodes_table(now))
            blocked = "; ".join(f"{n.name}: {n.why_not}" for n in now
                                if n.name != node and not n.schedulable)
            blocked = f"; other nodes not schedulable: {blocked}" if blocked else ""
    check.require(
        done,
        expected=f"the replica(s) evicted from node {node} rescheduled and Ready on another "
                 f"node within {timeout_s:g}s",
        observed=f"{waited:.0f}s after evicting {len(evictions)} pod(s) from node {node}, "
                 f"not Ready elsewhere: {nodedrain.pending_description(after, node)}"
                 + "".join(f"; eviction of {e[0]}: {e[3]} after {e[2]} attempt(s)"
                           for e in evictions if e[3] not in ("evicted", "already gone"))
                 + blocked,
    )
    if traffic is None:
        raise Unknown(no_traffic)
    if not any(r.ok for r in traffic.window(None, cordon_at)):
        raise Unknown(f"the service {url} did not answer the probe before the cordon: nothing "
                      "to compare the drain with")
    pause, _, _ = traffic.longest_pause()
    failed = len(traffic.failed)
    check.require(
        pause <= max_pause_s and any(r.ok for r in traffic.window(settled_at, None)),
        expected=f"{url} answering throughout the drain of node {node}, no pause longer than "
                 f"{max_pause_s:g}s",
        observed=f"longest pause {pause:.2f}s; {traffic.ok}/{len(traffic.requests)} requests "
                 f"answered, {failed} failed"
                 + ("" if any(r.ok for r in traffic.window(settled_at, None))
                    else "; no answer after the drain"),
    )


def _traffic_evidence(evidence: Evidence, traffic: nodedrain.Traffic, url: str,
                      cordon_at: float | None, settled_at: float | None) -> None:
    pause, pause_from, pause_to = traffic.longest_pause()
    rows = []
    for name, lo, hi in [("before the cordon", None, cordon_at),
                         ("during the drain", cordon_at, settled_at), ("after", settled_at, None)]:
        window = traffic.window(lo, hi)
        answered = traffic.answered_by(window)
        rows.append([name, len(window), sum(r.ok for r in window), sum(not r.ok for r in window),
                     ", ".join(f"{p}: {n}" for p, n in sorted(answered.items())) or "-"])
    evidence.table(f"requests to {url} from the probe pod (curl every 0.1s)",
                   ["phase", "requests", "ok", "failed", "answered by"], rows)
    evidence.text("longest pause",
                  f"{pause:.2f}s without a successful answer (probe pod clock {pause_from:.2f} "
                  f"-> {pause_to:.2f}; cordon at {cordon_at}, drain settled at {settled_at})")
    if traffic.failed:
        evidence.table("failed requests (probe pod clock)", ["start", "end"],
                       [[f"{r.start:.2f}", f"{r.end:.2f}"] for r in traffic.failed[:50]])
