"""Failover checks (disruptive: they run only with ``--allow-disruptive``, after every other
check of the run, one at a time).

``failover/node-drain`` drains a node of any multi-node cluster; ``failover/cluster-outage``
and ``failover/drain`` run on a federation control plane (Karmada) and move fleetcheck's own
failover workload (see :mod:`fleetcheck.federation.failover`) between its members.  Every check
restores what it changed: nodes uncordoned, outages ended, taints removed, also when it fails
or the run is interrupted."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from fleetcheck import CheckInfo, Evidence, FleetRun, ProbeSet, Target, Unknown
from fleetcheck.failover import drain as nodedrain
from fleetcheck.federation import failover as fedfailover
from fleetcheck.federation import karmada
from fleetcheck.federation import probe as fedprobe
from fleetcheck.kube.traffic import Traffic
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
    with fleet.cluster_lock(target.name, check.id):
        _node_drain(target, probes, fleet, check, evidence, timeout_s, max_pause_s, baseline_s)


def _node_drain(target: Target, probes: ProbeSet, fleet: FleetRun, check: CheckInfo,
                evidence: Evidence, timeout_s: float, max_pause_s: float,
                baseline_s: float) -> None:
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
    loop = nodedrain.request_loop(probes, url, max_s=baseline_s + timeout_s + 60)
    cordon = nodedrain.Cordon(probes, node, fleet, check.id)
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
        raise Unknown(cordon.change.sentence() if cordon.change is not None
                      else f"node {node} is left cordoned: {cordon.error}")

    try:
        traffic: Traffic | None = loop.traffic()
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


def _traffic_evidence(evidence: Evidence, traffic: Traffic, url: str,
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


# --- through a federation control plane ------------------------------------------------------

def _settings(expectations: dict) -> dict:
    fo = expectations.get("failover") or {}
    return {"rto_s": float(fo.get("rto_s", 120)),
            "restore_timeout_s": float(fo.get("restore_timeout_s", 90)),
            "flap_watch_s": float(fo.get("flap_watch_s", 10)),
            "cordon_watch_s": float(fo.get("cordon_watch_s", 8)),
            "outage": dict(fo.get("outage") or {}),
            # setting the workload up is a propagation, not a failover: its own bound
            "deploy_timeout_s": float((expectations.get("federation") or {}).get(
                "propagation_timeout_s", 60))}


def _two_candidates(fed: fedprobe.Federation) -> list[str]:
    allowed = fedfailover.candidates(fed)
    if len(allowed) < 2:
        pytest.skip("needs 2 Ready, untainted member clusters reachable as selected contexts; "
                    f"{fed.target.name} has {allowed or 'none'}")
    return allowed


def _fresh(fleet: FleetRun, target: Target, expectations: dict) -> fedprobe.Federation:
    """The federation with its member Clusters read now (failover checks change them)."""
    fed = fedprobe.federation(fleet, target, expectations)
    try:
        fed.clusters = karmada.clusters(fed.api)
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: cannot list member Clusters", exc) from None
    return fed


def _start(fleet: FleetRun, target: Target, expectations: dict):
    """Set-up of both federation failover checks: the members read now, the settings, the
    failover workload deployed; returns (federation, settings, candidates, timeline,
    namespace, the member it is Available on)."""
    fed = _fresh(fleet, target, expectations)
    cfg = _settings(expectations)
    allowed = _two_candidates(fed)
    tl = fedfailover.Timeline()
    namespace = fedfailover.namespace_of(fleet)["metadata"]["name"]
    where = fedfailover.deploy(fed, fleet, fedfailover.NAME, allowed, True, cfg["deploy_timeout_s"], tl)
    return fed, cfg, allowed, tl, namespace, where


@pytest.mark.federation
@pytest.mark.disruptive
@pytest.mark.check("failover/cluster-outage", level="required")
def test_cluster_outage(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """The member running the failover workload is lost (the outage commands of the
    expectations; skipped without them): the workload leaves it and is
    Available on another member within ``failover.rto_s`` (RTO measured); its graceful-eviction
    tasks are cleared; after the member is restored, no stale copy stays on it and the
    workload does not flap back within ``failover.flap_watch_s``."""
    cfg = _settings(expectations)
    if not (cfg["outage"].get("stop") and cfg["outage"].get("start")):
        pytest.skip("no failover.outage.stop/start commands in the expectations: an outage "
                    "needs a way to make a member unreachable and bring it back (a taint "
                    "alone would not exercise loss detection; failover/drain measures taints)")
    with contextlib.ExitStack() as locks:
        locks.enter_context(fleet.cluster_lock(target.name, check.id))
        _cluster_outage(target, fleet, check, evidence, expectations, locks)


def _cluster_outage(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                    expectations: dict, locks: contextlib.ExitStack) -> None:
    fed, cfg, _, tl, namespace, victim = _start(fleet, target, expectations)
    member = fed.members.get(victim)
    if member in fleet.targets and not fleet.targets[member].unreachable:
        locks.enter_context(fleet.cluster_lock(member, check.id))  # its API server goes down
    name = fedfailover.NAME
    base = Path(fleet.settings.expectations).resolve().parent if fleet.settings.expectations \
        else Path.cwd()
    outage = fedfailover.Outage(fed, victim, cfg["outage"], base, fleet, check.id)
    problems: list[str] = []
    rto = None
    try:
        try:
            outage.begin()
            tl.mark(f"outage of {victim} begins: {outage.how}")
            moved_to, waited = fedfailover.wait_placed_available(
                fed, namespace, name, cfg["rto_s"], avoid=victim)
            if moved_to is None:
                now = fedfailover.placed(fed, namespace, name)
                problems.append(f"the workload did not become Available on another member within "
                                f"{cfg['rto_s']:g}s of {victim}'s outage (placed on "
                                f"{now or 'nothing'})")
            else:
                rto = waited
                tl.mark(f"Available on {moved_to}: RTO {rto:.1f}s")
                def tasks() -> list[dict]:
                    return karmada.eviction_tasks(
                        karmada.binding(fed.api, namespace, "Deployment", name))

                cleared, _ = karmada.wait_for(lambda: not tasks(), cfg["rto_s"])
                if not cleared:
                    problems.append(f"graceful-eviction tasks not cleared within "
                                    f"{cfg['rto_s']:g}s: {tasks()}")
                else:
                    tl.mark("graceful-eviction tasks cleared")
        finally:
            if not outage.end():
                tl.mark(f"outage of {victim} NOT ended: {outage.change.error}")
                raise Unknown(outage.change.sentence())
            tl.mark(f"outage of {victim} ended")
        ready, _ = karmada.wait_for(lambda: fedfailover.cluster_ready(fed.api, victim),
                                    cfg["restore_timeout_s"])
        if not ready:
            problems.append(f"{victim} not Ready again within {cfg['restore_timeout_s']:g}s of "
                            "the restore")
        else:
            tl.mark(f"{victim} Ready again")
        if rto is not None and ready:
            gone, _ = karmada.wait_for(
                lambda: not fedfailover.exists_on(fed, victim, namespace, name),
                cfg["restore_timeout_s"])
            if not gone:
                problems.append(f"a stale copy of the workload stays on {victim} "
                                f"{cfg['restore_timeout_s']:g}s after it was restored")
            else:
                tl.mark(f"no copy left on {victim}")
            end = time.monotonic() + cfg["flap_watch_s"]
            while time.monotonic() < end:
                where = fedfailover.placed(fed, namespace, name)
                if victim in where:
                    problems.append(f"the workload flapped back to {victim} after the restore "
                                    f"(placed on {where})")
                    break
                time.sleep(0.5)
            else:
                tl.mark(f"still off {victim} after {cfg['flap_watch_s']:g}s: no flap-back")
    except Unknown:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: the outage test failed", exc) from None
    finally:
        evidence.table("failover timeline", ["s", "event"], tl.rows)
        if outage.log:
            evidence.text("outage commands", "\n".join(outage.log))
    check.require(
        not problems,
        expected=f"the workload Available on another member within {cfg['rto_s']:g}s of "
                 f"{victim}'s outage, eviction tasks cleared, no stale copy or flap-back",
        observed="; ".join(problems))
    evidence.text("RTO", f"{rto:.1f}s ({victim} -> another member; {outage.how})")


@pytest.mark.federation
@pytest.mark.disruptive
@pytest.mark.check("failover/drain", level="required")
def test_drain(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
               expectations: dict) -> None:
    """Cordon (a NoSchedule taint on the member running the failover workload) keeps it there
    for ``failover.cordon_watch_s`` and keeps a new workload off that member; a NoExecute taint
    then evicts it to another member within ``failover.rto_s``.  Both taints are removed."""
    with fleet.cluster_lock(target.name, check.id):
        _drain(target, fleet, check, evidence, expectations)


def _drain(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
           expectations: dict) -> None:
    fed, cfg, allowed, tl, namespace, where = _start(fleet, target, expectations)
    name = fedfailover.NAME
    problems: list[str] = []
    changes: list = []  # recorded before each taint is set; left there until it is removed

    def untaint() -> list:
        """Remove the taints (newest first, each retried within the restore budget); returns
        those still set."""
        return [c for c in reversed(changes) if not fleet.restore(c)]

    try:
        try:
            changes.append(fedfailover.taint_change(
                fleet, fed, where, fedfailover.CORDON_TAINT, "NoSchedule", check.id))
            tl.mark(f"{where} cordoned ({fedfailover.CORDON_TAINT}:NoSchedule)")
            others = [c for c in allowed if c != where]
            new_where = fedfailover.deploy(fed, fleet, fedfailover.NEW_NAME, [where, *others],
                                           False, cfg["deploy_timeout_s"], tl)
            placed_new = fedfailover.placed(fed, namespace, fedfailover.NEW_NAME)
            if where in placed_new:
                problems.append(f"cordon did not block new placements: a new workload was placed "
                                f"on {where} (placed on {placed_new})")
            else:
                tl.mark(f"the new workload went to {new_where}, not the cordoned {where}")
            end = time.monotonic() + cfg["cordon_watch_s"]
            while time.monotonic() < end:
                now = fedfailover.placed(fed, namespace, name)
                if where not in now:
                    problems.append(f"cordon evicted the workload from {where} (placed on {now})")
                    break
                time.sleep(0.5)
            else:
                tl.mark(f"the workload stayed on the cordoned {where} for "
                        f"{cfg['cordon_watch_s']:g}s")
            changes.append(fedfailover.taint_change(
                fleet, fed, where, fedfailover.DRAIN_TAINT, "NoExecute", check.id))
            tl.mark(f"{where} drained ({fedfailover.DRAIN_TAINT}:NoExecute)")
            moved_to, waited = fedfailover.wait_placed_available(fed, namespace, name,
                                                                 cfg["rto_s"], avoid=where)
            if moved_to is None:
                problems.append(f"the NoExecute taint did not evict the workload from {where} "
                                f"within {cfg['rto_s']:g}s (placed on "
                                f"{fedfailover.placed(fed, namespace, name)})")
            else:
                tl.mark(f"Available on {moved_to} after {waited:.1f}s")
        finally:
            left = untaint()
            if changes and not left:
                tl.mark(f"{where} uncordoned (taints removed)")
            with contextlib.suppress(Exception):  # (the run's namespace goes at its end)
                fed.api.delete(karmada.object_path("apps/v1", "deployments", namespace,
                                                   fedfailover.NEW_NAME))
            if left:
                tl.mark(f"taints NOT removed from {where}: {left[0].error}")
                raise Unknown("; ".join(c.sentence() for c in left))
    except Unknown:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: the drain test failed", exc) from None
    finally:
        evidence.table("drain timeline", ["s", "event"], tl.rows)
    check.require(
        not problems,
        expected=f"cordon keeps the workload on {where} and new workloads off it; NoExecute "
                 f"moves it within {cfg['rto_s']:g}s",
        observed="; ".join(problems))
