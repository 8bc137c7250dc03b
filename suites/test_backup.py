"""Backup checks: the multi-cluster backup is written, verifies, restores, and Velero (where
installed) has a recent, complete backup.  Expectations: section ``backup`` (see
:mod:`fleetcheck.backup.suite`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fleetcheck import (
    CheckInfo,
    Evidence,
    FleetRun,
    ProbeSet,
    Target,
    Unknown,
    check_applies,
    refused,
    waiting,
)
from fleetcheck.backup import BackupError, ExitCode, verify
from fleetcheck.backup import export as export_mod
from fleetcheck.backup import restore as restore_mod
from fleetcheck.backup import secrets as secrets_mod
from fleetcheck.backup import suite as kit

#: the fixtures backup_workspace and backup_settings
pytest_plugins = ["fleetcheck.backup.suite"]

ROUNDTRIP_KINDS = ["namespaces", "serviceaccounts", "roles", "rolebindings", "configmaps",
                   "secrets", "services", "deployments"]


def _archive(target: Target, probes: ProbeSet, settings: kit.BackupSettings,
             workspace: kit.BackupWorkspace, check: CheckInfo) -> kit.ContextBackup:
    try:
        return workspace.archive_for(target, probes.namespace, settings)
    except BackupError as exc:
        if exc.code == ExitCode.USAGE:  # e.g. an expected namespace does not exist
            check.fail(expected="the backup of the probe namespace and "
                       f"{settings.namespaces or 'no other namespaces'} succeeds",
                       observed=str(exc))
        raise Unknown(f"backup could not be made: {exc}") from None


@pytest.mark.check("backup/archive", level="required")
def test_archive(target: Target, probes: ProbeSet, check: CheckInfo, evidence: Evidence,
                 backup_settings: kit.BackupSettings,
                 backup_workspace: kit.BackupWorkspace) -> None:
    """A backup of the probe namespace plus the expected namespaces is written through the API
    with metadata and a checksum manifest, within the time and size bounds; a Secret value
    planted before the backup appears nowhere in the archive."""
    made = _archive(target, probes, backup_settings, backup_workspace, check)
    result = made.result
    evidence.table("archive contents", ["kind", "objects", "skipped (generated)", "bytes"], [
        (name, info["count"], sum(info["skipped"].values()), info["bytes"])
        for name, info in result.metadata["contexts"][target.name]["kinds"].items()
    ])
    size_mb = result.archive_bytes / 1e6
    evidence.text("size and time", (
        f"archive: {result.path}\nnamespaces: {', '.join(made.namespaces)}\n"
        f"objects: {result.objects}\nsize: {result.archive_bytes} bytes compressed, "
        f"{result.content_bytes} bytes of documents\ntime: {result.seconds:.2f}s "
        f"({result.objects / max(result.seconds, 1e-6):.0f} objects/s)\n"
        f"bounds: {backup_settings.max_duration_s:g}s, {backup_settings.max_size_mb:g} MB"))
    leaked = kit.archive_text_contains(result.path, [made.canary_value])
    report = verify.verify(result.path, trust=backup_workspace.trust)
    evidence.text("signature", f"{report.signature.label()}\nmanifest SHA-256: "
                               f"{report.manifest_sha256}\n(signed with this run's Ed25519 key, "
                               "held in memory only; verified against its public key)")
    problems = [str(p) for p in report.problems]
    if leaked:
        problems.append(f"the planted Secret value of {made.namespaces[0]}/{kit.CANARY_NAME} is "
                        "stored in clear (or base64) in the archive")
    if result.seconds > backup_settings.max_duration_s:
        problems.append(f"backup took {result.seconds:.1f}s > {backup_settings.max_duration_s:g}s")
    if size_mb > backup_settings.max_size_mb:
        problems.append(f"archive is {size_mb:.1f} MB > {backup_settings.max_size_mb:g} MB")
    check.require(
        not problems,
        expected="a verifiable archive with metadata.json and a signed SHA256SUMS, no Secret "
                 "value in clear, within the time and size bounds",
        observed="; ".join(problems),
    )


@pytest.mark.check("backup/integrity", level="required")
def test_integrity(target: Target, probes: ProbeSet, check: CheckInfo, evidence: Evidence,
                   backup_settings: kit.BackupSettings,
                   backup_workspace: kit.BackupWorkspace) -> None:
    """This run's archive verifies (manifest signature by the run's key, manifest complete,
    checksums, documents parse, counts match metadata.json) and its counts equal the
    cluster's at the archived resourceVersions; every ``nightly_archive`` from the
    expectations verifies too, is signed by a trusted key (``public_key`` /
    ``public_key_fingerprint``; unsigned passes only with ``require_signature: false``, and
    the evidence then says UNSIGNED), and is younger than ``rpo_hours``.  Unknown when the
    counts could not be re-read from the cluster: an unmeasured count is never a pass."""
    made = _archive(target, probes, backup_settings, backup_workspace, check)
    problems: list[str] = []
    unmeasured: list[str] = []
    report = verify.verify(made.result.path, trust=backup_workspace.trust,
                                keep_documents=True)
    evidence.text("verify (this run's archive)", report.summary() + "".join(
        f"\n  {p}" for p in report.problems))
    problems += [f"{made.result.path.name}: {p}" for p in report.problems]
    if report.ok:
        rows = kit.recount_at_backup_time(target, report, target.name)
        evidence.table("object counts: archive vs cluster at the archived resourceVersion",
                       ["kind", "archive", "cluster", "note"],
                       [(k, a, "-" if c is None else c, n) for k, a, c, n in rows])
        problems += [f"{k}: archive holds {a} objects, the cluster had {c}" for k, a, c, _ in rows
                     if c is not None and a != c]
        unmeasured += [f"{k}: {n}" for k, _, c, n in rows if c is None]
        if not rows:
            unmeasured.append("the archive describes no kinds: no count to compare")
    rpo = dt.timedelta(hours=backup_settings.rpo_hours)
    trust = backup_settings.nightly_trust()
    unsigned: list[str] = []
    for path in backup_settings.nightly_archives:
        try:
            nightly = verify.verify(path, trust=trust, limits=backup_settings.limits())
        except BackupError as exc:
            problems.append(f"nightly archive: {exc}")
            continue
        age = nightly.age()
        evidence.text(f"verify {path}", nightly.summary() + "".join(
            f"\n  {p}" for p in nightly.problems) + f"\nage: {age}; RPO {rpo}")
        problems += [f"nightly archive {path}: {p}" for p in nightly.problems]
        if nightly.signature.state != "trusted":
            unsigned.append(f"{path}: {nightly.signature.label()}")
        if nightly.ok and (age is None or age > rpo):
            problems.append(f"nightly archive {path}: made {nightly.metadata.get('created')}, "
                            f"older than the RPO of {backup_settings.rpo_hours:g}h")
    if unsigned:
        evidence.text("UNSIGNED nightly archives", "\n".join(unsigned) + (
            "\naccepted: expectations say backup.require_signature: false; nothing proves "
            "these archives were not rewritten" if not backup_settings.require_signature
            else ""))
    check.require(
        not problems,
        expected="every archive verifies (signed by a trusted key, no file missing, added or "
                 "altered, documents parse, counts match) and nightly archives are younger "
                 "than the RPO",
        observed="; ".join(problems),
    )
    if unmeasured:
        raise Unknown("the archive verifies, but its counts could not be compared with the "
                      "cluster at backup time: " + "; ".join(unmeasured))


@contextlib.contextmanager
def _api_failure_is_unknown(what: str) -> Iterator[None]:
    """A request the API server refused or failed (:class:`BackupError`) measured nothing:
    the check is ``unknown``, saying ``what`` could not be done and the server's answer."""
    try:
        yield
    except BackupError as exc:
        raise Unknown(f"{what}: {exc}") from None


def _roundtrip_peer(fleet: FleetRun, target: Target) -> Target | None:
    """The next workload cluster after ``target``'s (by name, cyclic), through the context
    that represents it: reachable, not a federation control plane, and one the round trip
    applies to (expectations ``checks``).  Never chosen by the order of ``--contexts``."""
    names = sorted({t.cluster_id for t in fleet.targets.values()
                    if t.federation is None} | {target.cluster_id})
    start = names.index(target.cluster_id)
    for step in range(1, len(names)):
        peer = fleet.targets[names[(start + step) % len(names)]]
        if (not peer.unreachable
                and check_applies(fleet.expectations_for(peer.name), "backup/restore-roundtrip")):
            return peer
    return None


@pytest.mark.check("backup/restore-roundtrip", level="required")
@pytest.mark.workloads
def test_restore_roundtrip(target: Target, fleet: FleetRun, check: CheckInfo,
                           evidence: Evidence, backup_workspace: kit.BackupWorkspace) -> None:
    """A namespace with a Deployment, Service, ConfigMap, Secret, ServiceAccount, Role and
    RoleBinding is backed up (Secret values encrypted), restored into a scratch namespace of
    the same cluster and, when several clusters are selected, into the next workload cluster
    (by name), and
    compared object by object after normalisation (Secrets by value hash).  The Deployment
    names the run's busybox probe image (``--probe-image busybox=...``) and has 0 replicas:
    objects are compared, no pod is started.  Every sample object
    must be in the archive: an empty archive restores into an empty namespace, which would
    compare equal to nothing and prove nothing."""
    suffix = secrets.token_hex(3)
    image = fleet.settings.images["busybox"]
    # named, labelled and annotated like probe namespaces (the copies inherit the labels and
    # the expires-at annotation from the archived Namespace), so end-of-run cleanup and the
    # janitor delete them even when the finally below never runs
    source_ns, copy_ns = kit.roundtrip_namespaces(fleet.probe_run_id, suffix)
    timeout = (target.connect_timeout, max(target.request_timeout, 30.0))
    peer = _roundtrip_peer(fleet, target)
    created: list[tuple[Target, str]] = []
    try:
        objects = kit.sample_objects(source_ns, fleet.probe_run_id, fleet.settings.probe_ttl,
                                     "pw-" + secrets.token_hex(12), image)
        evidence.text("sample", f"namespace {source_ns}; Deployment image {image} (the run's "
                                "busybox probe image), 0 replicas")
        try:
            created.append((target, source_ns))
            kit.create_objects(target.api_client, objects, timeout)
        except BackupError as exc:
            raise Unknown(f"cannot create the sample namespace {source_ns}: {exc}") from None
        codec = secrets_mod.SecretCodec.new(backup_workspace.hash_key,
                                            backup_workspace.encryption_key, store_values=True)
        selection = export_mod.Selection(kinds=ROUNDTRIP_KINDS, namespaces=[source_ns])
        path = backup_workspace.path(f"{kit._safe(target.name)}-roundtrip-{suffix}.tar.gz")
        start = time.monotonic()
        with _api_failure_is_unknown(f"cannot back up the sample namespace {source_ns} of "
                                     f"{target.name}"):
            export_mod.backup([kit.source_of(target)], path, selection, codec,
                              signer=backup_workspace.signer)
        report = verify.load_verified(path, trust=backup_workspace.trust)
        archived = kit.archived_namespace_objects(report, target.name, source_ns)
        rows = []
        problems: list[str] = []
        missing = kit.missing_from_archive(objects, archived)
        if missing:
            problems.append(f"not in the archive: {', '.join(missing)}")
        with _api_failure_is_unknown(f"cannot read the sample namespace {source_ns} of "
                                     f"{target.name} back"):
            diffs = kit.compare_namespace(target.api_client, target.name, source_ns, archived,
                                          source_ns, codec, ROUNDTRIP_KINDS, timeout)
        rows.append((f"{target.name}:{source_ns}", "(original vs archive)", len(diffs)))
        problems += [f"original {d}" for d in diffs]
        destinations = [(target, copy_ns)] + ([(peer, source_ns)] if peer else [])
        created += destinations

        def restore_into(dest: Target, dest_ns: str) -> tuple[str, tuple, list[str]]:
            with waiting(dest.name, f"restore round trip {target.name}:{source_ns} -> {dest_ns}"):
                result = restore_mod.restore(dest.api_client, dest.name, report,
                                             namespace=source_ns, into=dest_ns,
                                             source_context=target.name, codec=codec,
                                             apply=True, timeout=timeout)
            if result.error and refused(result.status, result.error):
                raise Unknown(f"restore into {dest.name}:{dest_ns} was refused: {result.error}")
            if result.error or result.skipped_secrets:
                failure = (f"restore into {dest.name}:{dest_ns} failed: "
                           f"{result.error or 'secrets skipped'}")
                return result.render(), (f"{dest.name}:{dest_ns}", "restore failed", "-"), [
                    failure]
            diffs = kit.compare_namespace(dest.api_client, dest.name, dest_ns, archived,
                                          source_ns, codec, ROUNDTRIP_KINDS, timeout)
            return result.render(), (f"{dest.name}:{dest_ns}",
                                     f"{len(result.steps)} objects restored", len(diffs)), [
                f"{dest.name}:{dest_ns}: {d}" for d in diffs]

        # both copies at once (they are independent); reported in order
        with ThreadPoolExecutor(max_workers=len(destinations)) as pool, \
                _api_failure_is_unknown("cannot restore the sample namespace"):
            futures = [pool.submit(restore_into, d, n) for d, n in destinations]
            outcomes = [f.result() for f in futures]
        for (dest, dest_ns), (rendered, row, dest_problems) in zip(destinations, outcomes,
                                                                   strict=True):
            evidence.text(f"restore into {dest.name}:{dest_ns}", rendered)
            rows.append(row)
            problems += dest_problems
        evidence.table("round trip", ["namespace", "restore", "differences"], rows)
        if not peer:
            evidence.text("other cluster", "only one reachable context selected: restore into "
                                           "another cluster not exercised")
        evidence.text("duration", f"{time.monotonic() - start:.2f}s")
        if problems:
            evidence.text("differences", "\n".join(problems))
        check.require(
            not problems,
            expected=f"{source_ns} restored into {', '.join(f'{d.name}:{n}' for d, n in destinations)} "
                     "equals the original, server-set fields aside",
            observed=f"{len(problems)} difference(s): " + "; ".join(problems[:5]),
        )
    finally:
        for dest, name in created:
            kit.delete_namespace(dest.api_client, name, timeout)


@pytest.mark.check("backup/velero", level="recommended")
def test_velero(target: Target, check: CheckInfo, evidence: Evidence,
                backup_settings: kit.BackupSettings) -> None:
    """Where Velero is installed: the newest Backup is Completed (not PartiallyFailed) and
    younger than ``rpo_hours``, and its BackupStorageLocation (or the default one) is
    Available.  Skipped where Velero's CRDs are absent."""
    try:
        state = kit.velero_state(target.api_client, backup_settings.velero_namespace,
                                 target.timeout, context=target.name)
    except BackupError as exc:  # (a refusal is Unknown already, naming the permission)
        raise Unknown(f"Velero on {target.name} could not be inspected: {exc}") from None
    if not state.installed:
        pytest.skip(state.reason)
    problems: list[str] = []
    if state.reason:
        problems.append(state.reason)
    rpo = dt.timedelta(hours=backup_settings.rpo_hours)
    now = dt.datetime.now(dt.UTC)
    dated = sorted(((kit.backup_time(b), b) for b in state.backups),
                   key=lambda p: p[0] or dt.datetime.min.replace(tzinfo=dt.UTC))
    evidence.table("Velero backups", ["backup", "phase", "time", "location"], [
        (f"{b['metadata'].get('namespace')}/{b['metadata']['name']}",
         (b.get("status") or {}).get("phase", "-"), t or "-",
         (b.get("spec") or {}).get("storageLocation", "-")) for t, b in dated])
    evidence.table("BackupStorageLocations", ["location", "default", "phase"], [
        (f"{loc['metadata'].get('namespace')}/{loc['metadata']['name']}",
         (loc.get("spec") or {}).get("default", False),
         (loc.get("status") or {}).get("phase", "-")) for loc in state.locations])
    wanted: set[str] = {loc["metadata"]["name"] for loc in state.locations
                        if (loc.get("spec") or {}).get("default")}
    if not dated:
        problems.append("no Velero Backup exists")
    else:
        when, newest = dated[-1]
        name = newest["metadata"]["name"]
        phase = (newest.get("status") or {}).get("phase", "(none)")
        if phase != "Completed":
            problems.append(f"newest Backup {name} is {phase}, not Completed")
        if when is None or now - when > rpo:
            problems.append(f"newest Backup {name} is from {when}, older than the RPO of "
                            f"{backup_settings.rpo_hours:g}h")
        if (newest.get("spec") or {}).get("storageLocation"):
            wanted.add(newest["spec"]["storageLocation"])
    if not state.locations:
        problems.append("no BackupStorageLocation exists")
    for loc in state.locations:
        if loc["metadata"]["name"] in wanted or len(state.locations) == 1:
            phase = (loc.get("status") or {}).get("phase", "(none)")
            if phase != "Available":
                problems.append(f"BackupStorageLocation {loc['metadata']['name']} is {phase}, "
                                "not Available")
    check.require(
        not problems,
        expected=f"newest Velero Backup Completed and younger than "
                 f"{backup_settings.rpo_hours:g}h; its BackupStorageLocation Available",
        observed="; ".join(problems),
    )
