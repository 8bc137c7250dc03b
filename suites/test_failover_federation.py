"""Failover through a federation control plane (Karmada): disruptive, opt-in.

Both checks run on a federation control plane context, only with ``--allow-disruptive``, after
every other check and one at a time.  They move fleetcheck's own failover workload (see
:mod:`fleetcheck.fedfailover`) and always restore what they changed: the outage is ended and
every taint they set is removed, also when the check fails or the run is interrupted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fleetcheck import fedfailover, fedprobe, karmada
from fleetcheck.checks import CheckInfo
from fleetcheck.evidence import Evidence
from fleetcheck.fleet import FleetRun
from fleetcheck.targets import Target
from fleetcheck.verdicts import Unknown

pytestmark = [pytest.mark.federation, pytest.mark.disruptive]


def _settings(expectations: dict) -> dict:
    fo = expectations.get("failover") or {}
    return {"rto_s": float(fo.get("rto_s", 120)),
            "restore_timeout_s": float(fo.get("restore_timeout_s", 90)),
            "flap_watch_s": float(fo.get("flap_watch_s", 10)),
            "cordon_watch_s": float(fo.get("cordon_watch_s", 8)),
            "outage": dict(fo.get("outage") or {})}


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
        fed.clusters = fed.api.items(karmada.CLUSTERS, "list member Clusters")
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: cannot list member Clusters", exc) from None
    return fed


@pytest.mark.check("failover/cluster-outage", level="required")
def test_cluster_outage(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """The member running the failover workload is lost (the outage commands of the
    expectations, else a NoExecute taint on its Cluster): the workload leaves it and is
    Available on another member within ``failover.rto_s`` (RTO measured); its graceful-eviction
    tasks are cleared; after the member is restored, no stale copy stays on it and the
    workload does not flap back within ``failover.flap_watch_s``."""
    fed = _fresh(fleet, target, expectations)
    cfg = _settings(expectations)
    allowed = _two_candidates(fed)
    tl = fedfailover.Timeline()
    namespace = fedfailover.namespace_of(fleet)["metadata"]["name"]
    name = fedfailover.NAME
    victim = fedfailover.deploy(fed, fleet, name, allowed, True, cfg["rto_s"], tl)
    base = Path(fleet.settings.expectations).resolve().parent if fleet.settings.expectations \
        else Path.cwd()
    outage = fedfailover.Outage(fed, victim, cfg["outage"], base)
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
            outage.end()
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


@pytest.mark.check("failover/drain", level="required")
def test_drain(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
               expectations: dict) -> None:
    """Cordon (a NoSchedule taint on the member running the failover workload) keeps it there
    for ``failover.cordon_watch_s`` and keeps a new workload off that member; a NoExecute taint
    then evicts it to another member within ``failover.rto_s``.  Both taints are removed."""
    fed = _fresh(fleet, target, expectations)
    cfg = _settings(expectations)
    allowed = _two_candidates(fed)
    tl = fedfailover.Timeline()
    namespace = fedfailover.namespace_of(fleet)["metadata"]["name"]
    name = fedfailover.NAME
    where = fedfailover.deploy(fed, fleet, name, allowed, True, cfg["rto_s"], tl)
    problems: list[str] = []
    set_taints: list[tuple[str, str]] = []
    try:
        try:
            karmada.set_taint(fed.api, where, fedfailover.CORDON_TAINT, "NoSchedule", True)
            set_taints.append((fedfailover.CORDON_TAINT, "NoSchedule"))
            tl.mark(f"{where} cordoned ({fedfailover.CORDON_TAINT}:NoSchedule)")
            others = [c for c in allowed if c != where]
            new_where = fedfailover.deploy(fed, fleet, fedfailover.NEW_NAME, [where, *others],
                                           False, cfg["rto_s"], tl)
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
            karmada.set_taint(fed.api, where, fedfailover.DRAIN_TAINT, "NoExecute", True)
            set_taints.append((fedfailover.DRAIN_TAINT, "NoExecute"))
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
            for key, effect in reversed(set_taints):
                karmada.set_taint(fed.api, where, key, effect, False)
            if set_taints:
                tl.mark(f"{where} uncordoned (taints removed)")
            fed.api.delete(karmada.object_path("apps/v1", "deployments", namespace,
                                               fedfailover.NEW_NAME))
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
