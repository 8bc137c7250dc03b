"""The backup/restore-roundtrip check's namespaces follow the probe-namespace rules (no cluster):
named after the run, labelled with it, annotated with expires-at, also in the restored copy."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from backupkit import SIGNER, TRUST
from fleetcheck.backup import export, restore, secrets, verify
from fleetcheck.backup import suite as kit
from fleetcheck.backup.kinds import Kind
from fleetcheck.kube import manifests, namespaces

RUN_ID = "fc-20250101-120000-ab12"
LONGEST_RUN_ID = "r" * 42  # options.RUN_ID_RE allows 1-42 characters
IMAGE = "registry.example/mirror/busybox:1.36.1"
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("run_id", [RUN_ID, LONGEST_RUN_ID, "x"])
def test_roundtrip_namespaces_are_run_namespace_names(run_id: str) -> None:
    source, copy = kit.roundtrip_namespaces(run_id, "0a1b2c")
    assert source == f"fleetcheck-{run_id}-rt0a1b2c" and copy == f"{source}c"
    for name in (source, copy):
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        assert manifests.is_run_namespace_name(name, run_id)
        assert not manifests.is_run_namespace_name(name, run_id + "x")


def test_roundtrip_namespaces_refuse_a_name_too_long() -> None:
    with pytest.raises(ValueError, match="63"):
        kit.roundtrip_namespaces(LONGEST_RUN_ID, "0a1b2c3")


def _namespace_of(objects: list[dict]) -> dict:
    (ns,) = [o for o in objects if o["kind"] == "Namespace"]
    return ns


def test_sample_namespace_carries_run_labels_and_expiry() -> None:
    source, _ = kit.roundtrip_namespaces(RUN_ID, "0a1b2c")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    objects = kit.sample_objects(source, RUN_ID, 600, "pw", IMAGE)
    meta = _namespace_of(objects)["metadata"]
    assert meta["name"] == source
    assert meta["labels"][manifests.MANAGED_BY_LABEL] == manifests.MANAGED_BY
    assert meta["labels"][manifests.RUN_ID_LABEL] == RUN_ID
    expires = manifests.parse_rfc3339(meta["annotations"][manifests.EXPIRES_AT])
    assert before + dt.timedelta(seconds=599) <= expires <= before + dt.timedelta(seconds=602)
    assert all(o["metadata"].get("namespace") in (None, source) for o in objects)


def test_restored_copy_keeps_run_labels_and_expiry(tmp_path: Path) -> None:
    """Export normalisation keeps the Namespace's labels and annotations, so the Namespace the
    restore creates under the copy's name is one run cleanup and the janitor delete."""
    source, copy = kit.roundtrip_namespaces(RUN_ID, "0a1b2c")
    objects = kit.sample_objects(source, RUN_ID, 600, "pw", IMAGE)
    ns_live = _namespace_of(objects)
    ns_live["metadata"].update(uid="u-1", resourceVersion="7",
                               creationTimestamp="2025-01-01T00:00:00Z")
    ns_live["metadata"]["labels"]["kubernetes.io/metadata.name"] = source
    ns_live["status"] = {"phase": "Active"}
    cm = next(o for o in objects if o["kind"] == "ConfigMap")
    codec = secrets.SecretCodec.new(secrets.generate_key())
    exp = export.ContextExport("lab-a", "https://example.invalid", "v1.34.4")
    for kind, item in ((Kind("namespaces", "", "v1", "namespaces", "Namespace", False), ns_live),
                       (Kind("configmaps", "", "v1", "configmaps", "ConfigMap", True), cm)):
        kexp = export.KindExport(kind, resource_versions=["7"])
        export._add_item(kexp, item, kind, export.Selection(), codec, "lab-a")
        exp.kinds.append(kexp)
    path, _, _ = export.write_archive([exp], tmp_path / "rt.tar.gz", export.Selection(), codec,
                                      signer=SIGNER)
    report = verify.load_verified(path, trust=TRUST)

    for into in (copy, source):  # the copy on the same cluster, the same name on a peer
        steps, _ = restore.plan(report, "lab-a", source, into, codec)
        ns = steps[0].obj["metadata"]
        assert steps[0].kind.kind == "Namespace" and ns["name"] == into
        assert manifests.is_run_namespace_name(ns["name"], RUN_ID)
        assert ns["labels"][manifests.MANAGED_BY_LABEL] == manifests.MANAGED_BY
        assert ns["labels"][manifests.RUN_ID_LABEL] == RUN_ID
        assert "kubernetes.io/metadata.name" not in ns["labels"]
        assert ns["annotations"][manifests.EXPIRES_AT] == \
            ns_live["metadata"]["annotations"][manifests.EXPIRES_AT]
        assert steps[1].obj["metadata"]["namespace"] == into


def test_run_cleanup_and_janitor_take_the_roundtrip_namespaces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What FleetRun.cleanup (``delete_run_namespaces``) and the janitor (``expiry_of``) do with
    the sample, its copy and the old-style name, given the API lists all three as labelled."""
    from kubernetes import client as k8s

    source, copy = kit.roundtrip_namespaces(RUN_ID, "0a1b2c")
    listed = []
    for name in (source, copy, "fc-backup-rt-0a1b2c"):
        meta = _namespace_of(kit.sample_objects(name, RUN_ID, 600, "pw", IMAGE))["metadata"]
        listed.append(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(**meta),
                                      status=k8s.V1NamespaceStatus(phase="Active")))
    deleted: list[str] = []
    monkeypatch.setattr(namespaces, "list_probe_namespaces", lambda *a, **k: listed)
    monkeypatch.setattr(namespaces, "delete_namespace",
                        lambda _c, name, _t=None: deleted.append(name) or True)
    assert namespaces.delete_run_namespaces(object(), RUN_ID) == [source, copy]
    assert deleted == [source, copy]  # never a namespace not named after the run
    now = dt.datetime.now(dt.UTC)
    for ns in listed[:2]:
        expires = namespaces.expiry_of(ns)
        assert expires is not None and now < expires <= now + dt.timedelta(seconds=601)


def test_sample_deployment_runs_the_given_probe_image() -> None:
    """The round trip deploys the run's busybox probe image (``--probe-image``), never a
    hard-coded lab image: real clusters cannot pull ``lab.fleetcheck.invalid/...``."""
    objects = kit.sample_objects("ns", RUN_ID, 600, "pw", IMAGE)
    (deploy,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"


def test_no_lab_image_in_backup_code() -> None:
    """No image reference of the local lab in the backup checks or their helpers."""
    repo = Path(__file__).resolve().parents[3]
    files = [repo / "suites" / "test_backup.py",
             *sorted((repo / "fixtures" / "fleetcheck" / "backup").glob("*.py"))]
    offenders = [f.name for f in files if "lab.fleetcheck.invalid" in f.read_text()]
    assert offenders == []


def test_roundtrip_needs_every_sample_object_in_the_archive() -> None:
    """An archive without the sample objects would restore nothing and compare equal to
    nothing: the check lists what is missing instead of passing."""
    objects = kit.sample_objects("ns1", RUN_ID, 600, "pw", IMAGE)
    index = {(o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"]): o
             for o in objects}
    assert kit.missing_from_archive(objects, index) == []
    assert kit.missing_from_archive(objects, {}) == [
        "Namespace ns1", "ServiceAccount ns1/app", "Role ns1/app-reader",
        "RoleBinding ns1/app-reader", "ConfigMap ns1/app-config", "Secret ns1/app-secret",
        "Service ns1/app", "Deployment ns1/app"]
