"""RBAC and credentials: who each context is, what it may and may not do, who holds risky
permissions, whether ServiceAccount tokens work, and when client certificates expire.
Expectations: section ``rbac`` (see :mod:`fleetcheck.rbac`).

Cluster-wide facts (the RBAC objects, the namespace list, token issuance) are read through the
context under check; where that identity is forbidden, through another selected context of the
same API server, and the evidence says which.  When no selected context may, the check is
``unknown``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import secrets

import pytest
from fleetcheck import CheckInfo, Evidence, FleetRun, Target, Unknown, forbidden_unknown
from fleetcheck.rbac import access as access_mod
from fleetcheck.rbac import allowlist as allow_mod
from fleetcheck.rbac import api, discovery
from fleetcheck.rbac import certs as certs_mod
from fleetcheck.rbac import risky as risky_mod
from fleetcheck.rbac import tokens as tokens_mod
from fleetcheck.rbac.access import Access


def _who(target: Target) -> str:
    return target.username or f"(kubeconfig user {target.user_name})"


@pytest.mark.check("rbac/identity", level="required")
def test_identity(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                  expectations: dict) -> None:
    """Who the context authenticates as (SelfSubjectReview v1, else v1beta1/v1alpha1; on
    servers with none, the client certificate's CN/O, marked as unconfirmed), recorded for the
    audit.  Non-conformant when ``rbac.identity`` (username glob) or ``rbac.groups`` (each glob
    must match a group) do not match; skipped (the identity still recorded) when the
    expectations give neither."""
    rbac = expectations["rbac"]
    identity = api.self_subject_review(target.api_client, target.timeout)
    if identity is None:
        user = fleet.kubeconfig.users.get(target.user_name, {}) if fleet.kubeconfig else {}
        try:
            cert = (certs_mod.client_certificates(user) or [None])[0]
        except certs_mod.CertError:
            cert = None
        identity = api.Identity(
            cert.subject_cn if cert else None, list(cert.subject_orgs) if cert else [],
            method=("not confirmed by the server (it serves no SelfSubjectReview): CN/O of the "
                    "kubeconfig client certificate" if cert else
                    "unknown: the server serves no SelfSubjectReview and the kubeconfig user "
                    "has no client certificate"))
    evidence.text("identity", (
        f"context: {target.name}\nserver: {target.server}\nkubeconfig user: {target.user_name}\n"
        f"username: {identity.username or '(unknown)'}\n"
        f"groups: {', '.join(identity.groups) or '(none)'}\n"
        f"uid: {identity.uid or '-'}\n"
        + "".join(f"extra {k}: {', '.join(v)}\n" for k, v in (identity.extra or {}).items())
        + f"source: {identity.method}"))
    wanted_user = rbac.get("identity")
    wanted_groups = list(rbac.get("groups") or [])
    if not (wanted_user or wanted_groups):
        pytest.skip(f"the expectations give no rbac.identity or rbac.groups for context "
                    f"{target.name}: nothing to compare the identity with (recorded as "
                    "evidence)")
    if not identity.known:
        raise Unknown(f"cannot tell who {target.name} authenticates as ({identity.method}), "
                      "so rbac.identity/groups cannot be compared")
    problems = []
    if wanted_user and not fnmatch.fnmatchcase(identity.username, wanted_user):
        problems.append(f"username {identity.username!r} does not match {wanted_user!r}")
    missing = [g for g in wanted_groups
               if not any(fnmatch.fnmatchcase(have, g) for have in identity.groups)]
    if missing:
        problems.append(f"no group matches {', '.join(missing)} "
                        f"(groups: {', '.join(identity.groups) or 'none'})")
    expected = " and ".join(
        ([f"username matching {wanted_user!r}"] if wanted_user else [])
        + ([f"groups matching {', '.join(wanted_groups)}"] if wanted_groups else []))
    check.require(not problems, expected=expected,
                  observed=f"{'; '.join(problems)} [{identity.method}]")


def _require_served(target: Target, evidence: Evidence, accesses: list[Access],
                    key: str) -> None:
    """Unknown when a tuple names a resource, subresource or API group the server does not
    serve (API discovery): its review would be denied whatever the RBAC, so a misspelling
    would pass as a deny."""
    try:
        served = discovery.served(target.api_client, target.timeout)
    except discovery.DiscoveryError as exc:
        evidence.text("API discovery", f"not read ({exc}): the tuples' resources were not "
                      "checked against what the server serves")
        return
    problems = discovery.entry_problems(served, accesses, key, target.server)
    if problems:
        raise Unknown(" | ".join(problems))


def _access_check(target: Target, check: CheckInfo, evidence: Evidence, expectations: dict,
                  key: str) -> None:
    allowed = key == "allow"
    entries = expectations["rbac"].get(key) or []
    if not entries:
        pytest.skip(f"the expectations give no rbac.{key} tuples for context {target.name}")
    accesses = [Access.parse(e) for e in entries]
    _require_served(target, evidence, accesses, key)
    decisions = api.access_reviews(target.api_client, accesses, target.timeout)
    evidence.table(
        f"SelfSubjectAccessReview: {key} expectations of {target.name} as {_who(target)}",
        ["#", "verb", "resource", "namespace", "expected", "observed", "result", "reason"],
        access_mod.outcome_rows(decisions, allowed))
    errors = [d for d in decisions if d.answer == "error"]
    if errors:  # no authorizer decided: neither an allow nor a deny was measured
        raise Unknown("the authorizer could not evaluate: " + "; ".join(
            f"{d.access.render()} ({d.error})" for d in errors))
    wrong = [d for d in decisions if d.allowed != allowed]
    if wrong:
        evidence.text("reproduce with kubectl", "\n".join(
            f"{d.access.can_i()} --context={target.name}" for d in wrong))
    word = "allowed" if allowed else "denied"
    check.require(
        not wrong,
        expected=f"{_who(target)} to be {word}: " + "; ".join(a.render() for a in accesses),
        observed=f"{len(wrong)} of {len(decisions)} {'denied' if allowed else 'allowed'}: "
                 + "; ".join(f"{d.access.render()} ({d.answer}"
                             + (f": {d.reason or d.error}" if d.reason or d.error else "") + ")"
                             for d in wrong)
                 + f" [identity {_who(target)}]",
    )


@pytest.mark.check("rbac/expected-allow", level="required")
def test_expected_allow(target: Target, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """Every ``rbac.allow`` tuple (verb, resource[/subresource], namespace or cluster-wide,
    group, name) is allowed, asked with a SelfSubjectAccessReview each; one table per context.
    A tuple naming a resource the server does not serve (API discovery) makes the check
    ``unknown``, naming the entry."""
    _access_check(target, check, evidence, expectations, "allow")


@pytest.mark.check("rbac/expected-deny", level="required")
def test_expected_deny(target: Target, check: CheckInfo, evidence: Evidence,
                       expectations: dict) -> None:
    """Every ``rbac.deny`` tuple is denied (SelfSubjectAccessReview each); one table per
    context.  A tuple naming a resource the server does not serve (API discovery) makes the
    check ``unknown``, naming the entry: a misspelt resource is never "denied"."""
    _access_check(target, check, evidence, expectations, "deny")


def _matches(name: str, globs: list[str]) -> str | None:
    return next((g for g in globs if fnmatch.fnmatchcase(name, g)), None)


@pytest.mark.check("rbac/namespace-access", level="required")
def test_namespace_access(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                          expectations: dict) -> None:
    """For every namespace of the cluster (plus those the expectations name), may the identity
    list pods, create pods, get secrets there; a matrix.  Listing pods must be allowed in
    ``rbac.namespaces`` globs and denied in ``rbac.forbidden_namespaces`` globs (``namespaces``
    wins where both match).  Skipped, with the matrix recorded, when the expectations give
    neither; ``unknown`` when a glob needs the namespace list and no selected context of the
    cluster may list namespaces."""
    rbac = expectations["rbac"]
    allowed_globs = list(rbac.get("namespaces") or [])
    forbidden_globs = list(rbac.get("forbidden_namespaces") or [])
    reader = api.first_capable(fleet, target, api.LIST_NAMESPACES)
    named = [g for g in allowed_globs + forbidden_globs if not any(c in g for c in "*?[")]
    if reader is not None:
        try:
            existing = api.list_namespaces(reader.api_client, reader.timeout)
        except api.Forbidden as exc:  # its access review said yes, the list said no
            raise forbidden_unknown(None, "list", "namespaces", context=reader.name, status=403,
                                    message=exc.server_message) from None
        source = (f"namespaces listed by {reader.name}"
                  + ("" if reader is target else
                     f" (same API server; {target.name} may not list namespaces)"))
    else:
        existing = []
        source = (f"{target.name} may not list namespaces and no other selected context of "
                  f"{target.server} may: only the namespaces the expectations name")
    names = sorted(set(existing) | set(named) | {target.namespace})
    if not names:
        raise Unknown(source)
    columns = [("list", "pods"), ("create", "pods"), ("get", "secrets")]
    rows, problems = [], []
    for ns in names:
        decisions = api.access_reviews(
            target.api_client, [Access(v, r, namespace=ns) for v, r in columns], target.timeout)
        must_allow = _matches(ns, allowed_globs)
        must_deny = None if must_allow else _matches(ns, forbidden_globs)
        can_list = decisions[0].allowed
        expected = "allowed" if must_allow else "denied" if must_deny else "-"
        ok = (must_allow is None or can_list) and (must_deny is None or not can_list)
        rows.append((ns + ("" if ns in existing or reader is None else " (absent)"),
                     *("yes" if d.allowed else "no" for d in decisions), expected,
                     "ok" if ok else "FAIL"))
        if not ok:
            problems.append(f"{'denied' if must_allow else 'allowed'} to list pods in {ns} "
                            f"(matches {must_allow or must_deny!r})")
    evidence.text("namespaces", source)
    evidence.table(f"namespace access matrix of {target.name} as {_who(target)}",
                   ["namespace", "list pods", "create pods", "get secrets", "list pods expected",
                    "result"], rows)
    if not (allowed_globs or forbidden_globs):
        pytest.skip(f"the expectations give no rbac.namespaces or rbac.forbidden_namespaces "
                    f"for context {target.name}: nothing to compare the matrix with (recorded "
                    "as evidence)")
    patterns = [g for g in allowed_globs + forbidden_globs if g not in named]
    if reader is None and patterns and not problems:
        raise Unknown(f"{_who(target)} ({target.name}) may not list namespaces (cluster-wide) "
                      f"and no other selected context of {target.server} may, so the namespaces "
                      f"matching {', '.join(patterns)} are not known and access there was not "
                      f"measured; check with: kubectl --context {target.name} auth can-i list "
                      "namespaces")
    check.require(
        not problems,
        expected=(f"{_who(target)} may list pods in namespaces matching "
                  f"{allowed_globs or '(none given)'} and may not in "
                  f"{forbidden_globs or '(none given)'}"),
        observed="; ".join(problems),
    )


@pytest.mark.check("rbac/risky-bindings", level="required")
def test_risky_bindings(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """No subject is bound (RoleBinding/ClusterRoleBinding) to risky rules -- cluster-admin,
    wildcards, escalate, bind, impersonate, secrets reads, minting ServiceAccount tokens,
    exec/attach/ephemeral containers cluster-wide or in kube-system, nodes/proxy, approving
    CSRs, changing admission webhooks or policies -- unless it is a Kubernetes bootstrap
    binding (exact binding, roleRef and subject; ``rbac.trust_bootstrap``, default on) or
    ``rbac.risky_allowlist`` names its identity.  Anything risky granted to
    system:authenticated, system:unauthenticated or system:serviceaccounts[:<ns>] is a finding
    unless an entry names that group exactly.  Each finding names its rules (see
    :mod:`fleetcheck.rbac.risky`).  Needs list on (cluster)roles and (cluster)rolebindings;
    ``unknown`` when no selected context of the cluster has it."""
    rbac = expectations["rbac"]
    texts = list(rbac.get("risky_allowlist") or [])
    trust_bootstrap = bool(rbac.get("trust_bootstrap", True))
    try:
        entries = allow_mod.parse(texts)
    except allow_mod.AllowlistError as exc:
        raise Unknown(f"expectations {exc}; fix the expectations file") from None
    reader = api.first_capable(fleet, target, api.READ_RBAC)
    if reader is None:
        raise Unknown(f"{_who(target)} ({target.name}) may not list roles, clusterroles, "
                      "rolebindings and clusterrolebindings, and no other selected context of "
                      f"{target.server} may; the bindings cannot be assessed")
    try:
        objects = api.list_rbac(reader.api_client, reader.timeout)
    except api.Forbidden as exc:  # its access reviews said yes, the list said no
        raise forbidden_unknown(None, "list", exc.resource, group=exc.group,
                                context=reader.name, status=403,
                                message=exc.server_message) from None
    findings = risky_mod.analyse(objects.cluster_roles, objects.roles,
                                 objects.cluster_role_bindings, objects.role_bindings, entries,
                                 trust_bootstrap=trust_bootstrap)
    bad = [f for f in findings if f.allowed_by is None]
    accepted = [f for f in findings if f.allowed_by is not None]
    trusted = ("Kubernetes bootstrap bindings (exact binding, roleRef and subject)"
               if trust_bootstrap else "no bootstrap bindings (rbac.trust_bootstrap: false)")
    evidence.text("source", f"RBAC objects read through {reader.name}"
                  + ("" if reader is target else
                     f" (same API server; {target.name} as {_who(target)} may not list them)")
                  + "\n" + ", ".join(f"{n} {k}" for k, n in objects.counts())
                  + f"\ntrusted: {trusted}"
                  + f"\nallowlist: {', '.join(texts) or '(empty)'}"
                  + "".join(f"\n  ({e.text!r}: former default, now covered by the bootstrap "
                            "identities; matches nothing)" for e in entries if e.legacy_default))
    headers = ["subject", "binding", "role", "risky because (rules)", "RBAC rule(s)"]
    evidence.table(f"risky bindings outside the allowlist ({len(bad)})", headers,
                   [f.row() for f in bad])
    evidence.table(f"risky bindings accepted ({len(accepted)})",
                   ["accepted by", *headers[:4]], [(f.allowed_by, *f.row()[:4]) for f in accepted])
    evidence.table("rules named above", ["rule", "what it grants"],
                   risky_mod.rules_legend(findings))
    check.require(
        not bad,
        expected="no subject bound to risky rules outside "
                 + ("the Kubernetes bootstrap bindings and " if trust_bootstrap else "")
                 + f"the allowlist ({', '.join(texts) or 'empty'})",
        observed=f"{len(bad)} finding(s): " + " | ".join(f.render() for f in bad[:10])
                 + (" | ..." if len(bad) > 10 else ""),
    )


#: what a fresh ServiceAccount (granted nothing) must be denied, in its namespace {ns}
TOKEN_DENIED = [("list", "secrets", "{ns}"), ("create", "pods", "{ns}"),
                ("get", "secrets", ""), ("list", "nodes", ""),
                ("create", "clusterrolebindings.rbac.authorization.k8s.io", "")]
TOKEN_NEEDS = [Access("create", "namespaces"), Access("create", "serviceaccounts"),
               Access("create", "serviceaccounts", subresource="token")]


@pytest.mark.check("rbac/serviceaccount-token", level="required")
@pytest.mark.workloads
def test_serviceaccount_token(target: Target, fleet: FleetRun, check: CheckInfo,
                              evidence: Evidence, expectations: dict) -> None:
    """A ServiceAccount created in the probe namespace gets a TokenRequest token with
    ``rbac.token_expiration_s`` (default 600s): the token authenticates as that ServiceAccount
    (SelfSubjectReview made with it), its ``exp - iat`` is the requested lifetime (claims read
    without verifying the signature), and it is denied what the ServiceAccount was not granted
    (SelfSubjectAccessReviews made with it).  The token is never recorded."""
    requested = int(expectations["rbac"]["token_expiration_s"])
    maker = api.first_capable(fleet, target, TOKEN_NEEDS)
    if maker is None:
        raise Unknown(f"{_who(target)} ({target.name}) may not create namespaces, "
                      "ServiceAccounts and their tokens, and no other selected context of "
                      f"{target.server} may")
    namespace = fleet.probes(maker.name).namespace
    name = f"fc-rbac-sa-{secrets.token_hex(3)}"
    evidence.text("set-up", f"ServiceAccount {namespace}/{name} created through {maker.name}"
                  + ("" if maker is target else
                     f" (same API server; {target.name} as {_who(target)} may not create it)")
                  + f"\nTokenRequest: expirationSeconds={requested}, default audiences")
    try:
        token, expiry = api.service_account_token(
            maker.api_client, namespace, name, {"fleetcheck.io/run-id": fleet.run_id},
            requested, maker.timeout)
        fleet.scrubber.add([token])
        _assess_token(target, check, evidence, token, expiry, namespace, name, requested)
    finally:
        api.delete_service_account(maker.api_client, namespace, name, maker.timeout)


def _assess_token(target: Target, check: CheckInfo, evidence: Evidence, token: str,
                  status_expiry: dt.datetime | None, namespace: str, name: str,
                  requested: int) -> None:
    problems: list[str] = []
    username = f"system:serviceaccount:{namespace}:{name}"
    try:
        claims = tokens_mod.claims(token)
    except tokens_mod.TokenError as exc:
        check.fail(expected="a JWT", observed=str(exc))
    evidence.json("token claims (unverified; no header, no signature)", claims)
    problems += [p for p in [tokens_mod.check_lifetime(claims, requested)] if p]
    exp = tokens_mod.expiry(claims)
    if exp and status_expiry and abs((exp - status_expiry).total_seconds()) > 1:
        problems.append(f"exp claim {exp.isoformat()} differs from the TokenRequest's "
                        f"expirationTimestamp {status_expiry.isoformat()}")
    if claims.get("sub") != username:
        problems.append(f"sub claim {claims.get('sub')!r}, expected {username!r}")
    client = api.token_client(target.api_client, token, target.timeout)
    try:
        try:
            who = api.self_subject_review(client, target.timeout)
        except api.CredentialsRejected as exc:  # any other failure: not measured (unknown)
            who = None
            problems.append(f"the token does not authenticate: {exc}")
        if who is not None:
            evidence.text("SelfSubjectReview made with the token",
                          f"username: {who.username}\ngroups: {', '.join(who.groups)}\n"
                          f"source: {who.method}")
            if who.username != username:
                problems.append(f"the token authenticates as {who.username!r}, "
                                f"expected {username!r}")
            denied = [Access.parse({"verb": v, "resource": r, "namespace": n.format(ns=namespace)})
                      for v, r, n in TOKEN_DENIED]
            decisions = api.access_reviews(client, denied, target.timeout)
            evidence.table("SelfSubjectAccessReview made with the token",
                           ["#", "verb", "resource", "namespace", "expected", "observed",
                            "result", "reason"], access_mod.outcome_rows(decisions, False))
            problems += [f"the token is allowed to {d.access.render()} (not granted)"
                         for d in decisions if d.allowed]
    finally:
        client.close()
    check.require(
        not problems,
        expected=f"a token for {username} that authenticates, lives {requested}s "
                 "(exp - iat) and is denied what the ServiceAccount was not granted",
        observed="; ".join(problems),
    )


@pytest.mark.check("rbac/credential-expiry", level="required")
def test_credential_expiry(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                           expectations: dict) -> None:
    """The client certificate of the context's kubeconfig user (inline data or file) is valid
    now and beyond ``rbac.credential_horizon_days`` (default 30).  Contexts that authenticate
    otherwise (token, exec plugin, auth provider) are skipped with the reason.  Only the
    subject, issuer, dates, serial and fingerprint are reported."""
    horizon = int(expectations["rbac"]["credential_horizon_days"])
    kubeconfig = fleet.kubeconfig
    if kubeconfig is None or target.user_name not in kubeconfig.users:
        raise Unknown(f"the kubeconfig user {target.user_name!r} of {target.name} is not loaded")
    user = kubeconfig.users[target.user_name]
    kind = certs_mod.auth_kind(user)
    if kind != "client-certificate":
        pytest.skip(f"kubeconfig user {target.user_name!r} authenticates with {kind}, not a "
                    "client certificate: no certificate expiry to check")
    try:
        chain = certs_mod.client_certificates(user)
    except certs_mod.CertError as exc:
        check.fail(expected="a readable client certificate", observed=str(exc))
    if not chain:
        check.fail(expected="a client certificate", observed="the PEM data holds none")
    now = dt.datetime.now(dt.UTC)
    leaf = chain[0]
    evidence.table(f"client certificate of kubeconfig user {target.user_name}",
                   ["field", "value"], list(leaf.facts(now).items()))
    verdict = certs_mod.assess(leaf, now, horizon)
    deadline = (now + dt.timedelta(days=horizon)).strftime("%Y-%m-%d")
    check.require(
        verdict.ok,
        expected=f"the client certificate of kubeconfig user {target.user_name!r} valid until "
                 f"after {deadline} (horizon {horizon} days)",
        observed=verdict.problem,
    )
