"""Federation: a multi-cluster control plane (Karmada) and what it does to its member clusters.

These checks run on contexts that serve the Karmada API groups (detected by API discovery) and
are skipped, with the reason, on every other context.  Member clusters are mapped to selected
contexts by API endpoint, or by ``federation.members`` in the expectations; copies on members
are read through those contexts.  The probe workload is described in
:mod:`fleetcheck.federation.probe`.
"""

from __future__ import annotations

import time

import pytest
from fleetcheck import CheckInfo, Evidence, FleetRun, Target, Unknown
from fleetcheck.federation import karmada
from fleetcheck.federation import probe as fedprobe

pytestmark = pytest.mark.federation

PERMANENT_ID = "propagationpolicy.karmada.io/permanent-id"
DRIFTED = "drifted-by-fleetcheck"


@pytest.mark.check("federation/control-plane", level="required")
def test_control_plane(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                       expectations: dict) -> None:
    """The Cluster API is served (APIService ``v1alpha1.cluster.karmada.io`` Available), the
    admission webhook admits and mutates (a dry-run PropagationPolicy comes back with its
    permanent-id label), and failover is in force: a ClusterTaintPolicy taints a not-Ready
    member ``NoExecute`` (without one, an outage evicts nothing); the policies are reported."""
    fed = fedprobe.federation(fleet, target, expectations)
    problems: list[str] = []
    try:
        svc = fed.api.get("/apis/apiregistration.k8s.io/v1/apiservices/"
                          + karmada.CLUSTER_APISERVICE, missing_ok=True)
        policies = karmada.items(fed.api, f"{karmada.POLICY}/clustertaintpolicies",
                                 "list ClusterTaintPolicies")
        probe = {"apiVersion": "policy.karmada.io/v1alpha1", "kind": "PropagationPolicy",
                 "metadata": {"name": "fleetcheck-webhook-probe", "namespace": "default"},
                 "spec": {"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap",
                                                 "name": "fleetcheck-webhook-probe"}],
                          "placement": {}}}
        path = f"{karmada.POLICY}/namespaces/default/propagationpolicies"
        answered = fed.api.try_create(path, probe, dry_run=True)
        status, answer = answered.status, answered.data
        refusal = None if answered.ok else answered.error("a dry-run PropagationPolicy",
                                                          fed.api.context)
        if refusal is not None and (refusal.denied or refusal.kind == "not-kubernetes"):
            # the identity may not create policies (or no Kubernetes API answered): the
            # webhook was not tried (an admission webhook's own 403 is its verdict, below)
            raise refusal
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: the control plane could not be checked",
                                exc) from None
    if svc is None:
        problems.append(f"APIService {karmada.CLUSTER_APISERVICE} does not exist: Cluster "
                        "objects are not served")
    else:
        evidence.object(f"APIService {karmada.CLUSTER_APISERVICE}", svc)
        if not karmada.is_true(svc, "Available"):
            cond = karmada.condition(svc, "Available") or {}
            problems.append(f"APIService {karmada.CLUSTER_APISERVICE} not Available "
                            f"({cond.get('reason', 'no condition')}: {cond.get('message', '')})")
    labels = ((answer or {}).get("metadata") or {}).get("labels") or {} \
        if isinstance(answer, dict) else {}
    evidence.json("dry-run PropagationPolicy: answer", answer)
    if status not in (200, 201):
        message = answer.get("message") if isinstance(answer, dict) else answer
        problems.append(f"a dry-run PropagationPolicy was refused: HTTP {status} {message}")
    elif PERMANENT_ID not in labels:
        problems.append("the mutating webhook did not process a dry-run PropagationPolicy (no "
                        f"{PERMANENT_ID} label): Karmada's controllers cannot track policies")
    evicting = [p["metadata"]["name"] for p in policies if karmada.evicts_not_ready(p)]
    evidence.table("ClusterTaintPolicies", ["name", "taints", "added when", "evicts on not-Ready"],
                   [[p["metadata"]["name"],
                     ", ".join(karmada.taint_text(t) for t in (p.get("spec") or {}).get("taints")
                               or []),
                     "; ".join(f"{c.get('conditionType')} {c.get('operator')} "
                               f"{c.get('statusValues')}"
                               for c in (p.get("spec") or {}).get("addOnConditions") or []),
                     "yes" if p["metadata"]["name"] in evicting else "no"] for p in policies])
    evidence.text("failover settings in force",
                  ("NoExecute on not-Ready members by ClusterTaintPolicy " + ", ".join(evicting))
                  if evicting else "no ClusterTaintPolicy taints a not-Ready member NoExecute")
    if expectations["federation"].get("require_taint_policy", True) and not evicting:
        problems.append("no ClusterTaintPolicy taints a not-Ready member NoExecute: an outage "
                        "evicts nothing (since Karmada 1.14 only such a policy triggers failover)")
    check.require(
        not problems,
        expected=f"APIService {karmada.CLUSTER_APISERVICE} Available; the webhook admits and "
                 "mutates policies; a ClusterTaintPolicy evicts from not-Ready members",
        observed="; ".join(problems))


@pytest.mark.check("federation/clusters-ready", level="required")
def test_clusters_ready(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """Every member Cluster is Ready and carries no taint outside ``federation.allowed_taints``;
    their Kubernetes versions and the contexts they map to are recorded."""
    import fnmatch

    fed = fedprobe.federation(fleet, target, expectations)
    fexp = expectations["federation"]
    evidence.table("member clusters", fedprobe.ROW_HEADERS, fed.rows())
    allowed = list(fexp.get("allowed_taints") or [])
    problems = []
    names = []
    for cluster in fed.clusters:
        row = karmada.cluster_row(cluster)
        names.append(row["name"])
        if row["ready"] != "True":
            problems.append(f"{row['name']}: Ready={row['ready']} ({row['reason'] or 'no reason'})")
        for taint in row["taints"]:
            if not any(fnmatch.fnmatchcase(taint, glob) for glob in allowed):
                problems.append(f"{row['name']}: unexpected taint {taint}")
    declared = fexp.get("members") or {}
    problems += [f"declared member {name} is not a Cluster of {target.name}"
                 for name in declared if name not in names]
    minimum = int(fexp.get("min_members", 1))
    if len(names) < minimum:
        problems.append(f"{len(names)} member cluster(s), expected at least {minimum}")
    check.require(
        not problems,
        expected=f"at least {minimum} member cluster(s), every one Ready, no taint outside "
                 f"{allowed or 'none allowed'}",
        observed="; ".join(problems))


def _placed_state(fed: fedprobe.Federation, prop: fedprobe.Propagation) -> list[str]:
    """Problems with where the probe workload is: bindings, Works, copies on members."""
    problems = []
    want = sorted(prop.placement)
    for kind, rb in prop.bindings.items():
        placed = karmada.placed_clusters(rb)
        if placed != want:
            problems.append(f"ResourceBinding of the {kind} places it on {placed or 'nothing'}, "
                            f"the policy on {want}")
        for cluster in want:
            works = karmada.works_for(fed.api, cluster, prop.namespace, fedprobe.NAME, kind)
            if not works:
                problems.append(f"no Work carries the {kind} to {cluster}")
            elif not all(karmada.is_true(w, "Applied") for w in works):
                cond = karmada.condition(works[0], "Applied") or {}
                problems.append(f"the Work of the {kind} is not Applied on {cluster} "
                                f"({cond.get('reason', 'no condition')}: {cond.get('message', '')})")
    for cluster, context in sorted(fed.members.items()):
        if context is None:
            continue
        copy = fedprobe.member_copy(fed, cluster, prop.namespace)
        if cluster in want and copy is None:
            problems.append(f"the ConfigMap {prop.namespace}/{fedprobe.NAME} is missing on "
                            f"{cluster} (context {context})")
        if cluster not in want and copy is not None:
            problems.append(f"the ConfigMap {prop.namespace}/{fedprobe.NAME} exists on {cluster} "
                            f"(context {context}), where the policy does not place it")
    return problems


@pytest.mark.check("federation/propagation", level="required")
def test_propagation(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                     expectations: dict) -> None:
    """A probe ConfigMap and Deployment propagated by a PropagationPolicy: both bindings
    Scheduled and FullyApplied, their Works Applied, the copies on exactly the placed members
    (the Deployment available there), within ``federation.max_propagation_s`` (the runbook's
    ResourceSyncDelay, measured)."""
    fed = fedprobe.federation(fleet, target, expectations)
    prop = fedprobe.propagation(fleet, fed, expectations)
    evidence.table("propagation timeline", ["s", "event"], prop.timeline)
    bound = float(expectations["federation"].get("max_propagation_s", 30))
    problems = list(prop.problems)
    if not problems:
        try:
            problems += _placed_state(fed, prop)
        except Exception as exc:  # noqa: BLE001
            raise fedprobe._unknown(f"{target.name}: reading the placement failed", exc) from None
        if prop.applied_s is not None and prop.applied_s > bound:
            problems.append(f"propagation took {prop.applied_s:.1f}s")
    evidence.json("propagation", {"namespace": prop.namespace, "placement": prop.placement,
                                  "applied_s": prop.applied_s, "available_s": prop.available_s})
    check.require(
        not problems,
        expected=f"the probe workload Scheduled, FullyApplied and present on exactly "
                 f"{', '.join(prop.placement)} within {bound:g}s",
        observed="; ".join(problems) or "ok")
    evidence.text("latency", f"applied on every placed member after {prop.applied_s:.2f}s; "
                  + (f"Deployment available after {prop.available_s:.2f}s"
                     if prop.available_s is not None else "availability not measured"))


def _mapped_placement(fed: fedprobe.Federation, prop: fedprobe.Propagation, n: int) -> None:
    mapped = [c for c in prop.placement if fed.member_api(c) is not None]
    if len(mapped) < n:
        pytest.skip(f"needs {n} placed member cluster(s) reachable as selected contexts; "
                    f"placed on {prop.placement}, mapped: {mapped or 'none'}")


@pytest.mark.check("federation/override-scoped", level="required")
def test_override_scoped(target: Target, fleet: FleetRun, check: CheckInfo,
                         evidence: Evidence, expectations: dict) -> None:
    """The probe's OverridePolicy labels the ConfigMap on its target cluster only: the label
    shows there and on no other member."""
    fed = fedprobe.federation(fleet, target, expectations)
    prop = fedprobe.propagation(fleet, fed, expectations)
    if prop.problems:
        raise Unknown(f"the probe workload did not propagate: {'; '.join(prop.problems)}")
    _mapped_placement(fed, prop, 2)
    label, scope = fedprobe.OVERRIDE_LABEL, prop.override_cluster
    timeout = float(expectations["federation"].get("propagation_timeout_s", 60))

    def labels_now() -> dict[str, str | None]:
        out = {}
        for cluster in sorted(c for c, ctx in fed.members.items() if ctx):
            copy = fedprobe.member_copy(fed, cluster, prop.namespace)
            out[cluster] = None if copy is None else \
                ((copy.get("metadata") or {}).get("labels") or {}).get(label, "")
        return out

    def scoped() -> dict[str, str | None] | None:
        now = labels_now()
        return now if now.get(scope) == scope else None

    try:
        seen, waited = karmada.wait_for(scoped, timeout)
        seen = seen or labels_now()
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: reading the members' copies failed", exc) from None
    evidence.table("override label on the members' ConfigMap", ["cluster", label],
                   [[c, "(no copy)" if v is None else (v or "(absent)")] for c, v in seen.items()])
    problems = []
    if seen.get(scope) != scope:
        problems.append(f"{scope}: the ConfigMap does not carry {label}={scope} after "
                        f"{waited:.0f}s (observed {seen.get(scope)!r})")
    problems += [f"{cluster}: the ConfigMap carries {label}={value}, an override that targets "
                 f"{scope} only" for cluster, value in seen.items()
                 if cluster != scope and value]
    check.require(not problems,
                  expected=f"{label}={scope} on {scope}'s copy only",
                  observed="; ".join(problems))


@pytest.mark.check("federation/drift-revert", level="required")
def test_drift_revert(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                      expectations: dict) -> None:
    """An edit made directly on a member's copy (the probe ConfigMap's data) is reverted to
    the control plane's version within ``federation.drift_revert_timeout_s``; the time is
    measured."""
    fed = fedprobe.federation(fleet, target, expectations)
    prop = fedprobe.propagation(fleet, fed, expectations)
    if prop.problems:
        raise Unknown(f"the probe workload did not propagate: {'; '.join(prop.problems)}")
    _mapped_placement(fed, prop, 1)
    cluster = next(c for c in prop.placement if fed.member_api(c) is not None)
    api = fed.member_api(cluster)
    path = karmada.object_path("v1", "configmaps", prop.namespace, fedprobe.NAME)
    bound = float(expectations["federation"].get("drift_revert_timeout_s", 30))
    try:
        before = fedprobe.member_copy(fed, cluster, prop.namespace) or {}
        desired = (before.get("data") or {}).get("probe")
        if desired is None:
            raise Unknown(f"the ConfigMap {prop.namespace}/{fedprobe.NAME} on {cluster} has no "
                          "data.probe to edit")
        api.merge_patch(path, {"data": {"probe": DRIFTED}}, f"edit the copy on {cluster}")
        start = time.monotonic()

        def value() -> str | None:
            copy = fedprobe.member_copy(fed, cluster, prop.namespace) or {}
            return (copy.get("data") or {}).get("probe")
        reverted, waited = karmada.wait_for(lambda: value() == desired, bound, 0.2)
        observed = value()
    except Unknown:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fedprobe._unknown(f"{target.name}: the drift test on {cluster} failed", exc) from None
    waited = time.monotonic() - start
    evidence.text("drift", f"{cluster} (context {fed.members[cluster]}): data.probe set to "
                  f"{DRIFTED!r}; {'reverted to ' + repr(desired) if reverted else 'still '}"
                  f"{'' if reverted else repr(observed)} after {waited:.2f}s")
    check.require(
        bool(reverted),
        expected=f"the edit on {cluster} reverted to data.probe={desired!r} within {bound:g}s",
        observed=f"ConfigMap {prop.namespace}/{fedprobe.NAME} on {cluster} still has "
                 f"data.probe={observed!r} {waited:.0f}s after a direct edit: the control plane "
                 "did not revert the drift")
