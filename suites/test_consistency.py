"""Consistency across the fleet: the same configuration on every cluster.
Expectations: section ``consistency`` (see :mod:`fleetcheck.drift.spec`).

``consistency/drift`` runs once per context, and judges that context's cluster against the
fleet: the value expected for each object and field is the one of ``consistency.reference``
(a context name) when it is among the clusters compared, else the value held by more than
half of them.  So the row that fails is the cluster that drifted, with its values and the
others' side by side; where no value has a majority (two clusters that disagree, three
different values) every cluster taking part fails, and the message says there is no majority.
"""

from __future__ import annotations

import fnmatch

import pytest
from fleetcheck import CheckInfo, Evidence, FleetRun, Target, Unknown
from fleetcheck.drift import read as drift_read
from fleetcheck.drift import spec as drift

MAX_LISTED = 8


def _compared_clusters(fleet: FleetRun, config: drift.Config) -> list[str]:
    """Cluster ids whose cluster (id or any selected context of it) matches
    ``consistency.clusters`` (all selected clusters when it is not given)."""
    if not config.clusters:
        return list(fleet.clusters)
    return [c for c, members in fleet.clusters.items()
            if any(fnmatch.fnmatchcase(n, g) for n in [c, *members] for g in config.clusters)]


@pytest.mark.check("consistency/drift", level="required")
@pytest.mark.requires_clusters(2)
def test_drift(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
               expectations: dict) -> None:
    """The objects ``consistency.objects`` selects (kind, namespace, label selector, names)
    are the same on this context's cluster as on the fleet's reference (or majority) after
    normalisation -- status, server-set metadata, ownerReferences, kubectl/Helm/Karmada
    bookkeeping labels and annotations, allocated Service IPs dropped; Secrets compared by keys
    and value digests only -- and so are the fleet facts ``consistency.facts`` names (CRDs
    and their served versions, admission webhook configurations with their rules, PodSecurity
    labels of namespaces).  An object missing on the cluster, or present only there, is drift.
    Every difference is listed by JSON path with each cluster's value side by side.  Skipped
    when the expectations select nothing, or when fewer than two clusters are compared;
    ``unknown`` when this cluster cannot be read (forbidden for every selected context of
    it), or when fewer than two clusters could be."""
    config = drift.parse(expectations["consistency"])  # validated at configure time
    if not config:
        pytest.skip(f"the expectations select nothing to compare for context {target.name} "
                    "(consistency.objects and consistency.facts are empty)")
    mine = target.cluster_id
    clusters = _compared_clusters(fleet, config)
    if mine not in clusters:
        pytest.skip(f"cluster {mine} is not among consistency.clusters "
                    f"({', '.join(config.clusters)})")
    if len(clusters) < 2:
        pytest.skip(f"fewer than 2 clusters to compare: {', '.join(clusters)} "
                    f"(consistency.clusters: {', '.join(config.clusters)})")
    who = mine if mine == target.name else f"{mine} (context {target.name})"
    snaps = {c: drift_read.snapshot(fleet, c, config, target if c == mine else None)
             for c in clusters}
    read = {c: s for c, s in snaps.items() if s.error is None}
    counts = {c: dict(s.counts) for c, s in snaps.items()}
    whats = list(dict.fromkeys(w for s in snaps.values() for w, _ in s.counts))
    rows = [["read through", *(s.via or "-" for s in snaps.values())]]
    rows += [[w, *(counts[c].get(w, "-") for c in snaps)] for w in whats]
    if any(s.error for s in snaps.values()):
        rows.append(["NOT READ", *(s.error or "" for s in snaps.values())])
    evidence.table("clusters compared (objects read)", ["what", *snaps], rows)
    if snaps[mine].error:
        raise Unknown(f"cluster {who} could not be read: {snaps[mine].error}")
    if len(read) < 2:
        raise Unknown(f"only {who} could be read; "
                      + "; ".join(f"{c}: {s.error}" for c, s in snaps.items() if s.error))
    nowhere = [d for d in snaps[mine].unserved if all(d in s.unserved for s in read.values())]
    if nowhere:
        raise Unknown(f"no compared cluster serves {'; '.join(nowhere)}: check kind and "
                      "apiVersion of consistency.objects")

    reference = None
    basis = f"the majority of {', '.join(read)}"
    if config.reference:
        ref = fleet.targets.get(config.reference)
        if ref is not None and ref.cluster_id in read:
            reference = ref.cluster_id
            basis = f"reference {config.reference}" + (
                f" (cluster {reference})" if reference != config.reference else "")
        else:
            basis += (f" (consistency.reference {config.reference} is not a selected, "
                      "readable context of the compared clusters)")
    ignore_for: dict[str, tuple[str, ...]] = {}
    for snap in read.values():
        ignore_for.update(snap.ignore)
    differences = drift.compare({c: s.items for c, s in read.items()}, reference, ignore_for)
    own = drift.deviations(differences, mine)

    notes = [f"expected values: {basis}", f"normalised: {drift.NORMALISED}",
             f"ignored paths: {', '.join(config.ignore) or '(none)'}",
             *(f"{c} does not serve: {', '.join(s.unserved)}" for c, s in read.items()
               if s.unserved),
             *(f"not compared: {c}: {s.error}" for c, s in snaps.items() if s.error)]
    evidence.text("comparison", "\n".join(notes))
    names = list(read)
    evidence.table(f"differences across the fleet ({len(differences)})",
                   ["object", "path", *names, "odd one(s) out"],
                   drift.table_rows(differences, names))
    if own:
        evidence.table(f"differences on {who} ({len(own)})",
                       ["object", "path", mine, "expected", "others"],
                       [[d.key, d.path or "(object)", drift.render(d.values.get(mine), 300),
                         drift.render(d.expected, 300) if d.expected is not None
                         else "no majority",
                         "; ".join(f"{c} {drift.render(v, 120)}" for c, v in d.values.items()
                                   if c != mine)] for d in own])
    selected = "; ".join([s.describe() for s in config.objects] + config.facts.describe())
    listed = "; ".join(d.describe(mine) for d in own[:MAX_LISTED])
    more = f"; ... {len(own) - MAX_LISTED} more (see the evidence)" if len(own) > MAX_LISTED else ""
    check.require(
        not own,
        expected=f"{selected} on {who} as on {basis}, after normalisation",
        observed=f"{len(own)} difference(s) on {who}: {listed}{more}",
    )
