"""Normalisation (server-set fields stripped), generated objects, selection, kinds, diff and
restore planning, on plain data."""

from __future__ import annotations

from pathlib import Path

import pytest
from backupkit import CM, DEPLOY, NS, PLANTED, SIGNER, TRUST, make_archive, make_exports
from fleetcheck.backup import BackupError, export, restore, secrets, verify
from fleetcheck.backup import diff as diff_mod
from fleetcheck.backup.kinds import Kind, parse_kinds, restore_rank

SVC = Kind("services", "", "v1", "services", "Service", True)
SA = Kind("serviceaccounts", "", "v1", "serviceaccounts", "ServiceAccount", True)
PVC = Kind("persistentvolumeclaims", "", "v1", "persistentvolumeclaims",
           "PersistentVolumeClaim", True)


def test_normalize_strips_server_fields() -> None:
    obj = {"metadata": {"name": "web", "namespace": "a", "uid": "u", "resourceVersion": "1",
                        "creationTimestamp": "t", "generation": 4, "managedFields": [{}],
                        "selfLink": "/x", "ownerReferences": [{"kind": "X", "uid": "u"}],
                        "annotations": {"deployment.kubernetes.io/revision": "2", "keep": "me"}},
           "spec": {"template": {"metadata": {"creationTimestamp": None}}},
           "status": {"replicas": 1}}
    out = export.normalize(obj, DEPLOY)
    assert out == {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "a", "annotations": {"keep": "me"}},
                   "spec": {"template": {"metadata": {}}}}
    assert obj["metadata"]["uid"] == "u"  # the input is not changed


def test_normalize_service_pvc_namespace_sa() -> None:
    svc = export.normalize({"metadata": {"name": "s"}, "spec": {
        "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "type": "NodePort",
        "healthCheckNodePort": 3, "ports": [{"port": 80, "nodePort": 30001}]}}, SVC)
    assert svc["spec"] == {"type": "NodePort", "ports": [{"port": 80}]}
    headless = export.normalize({"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
                                                                    "clusterIPs": ["None"]}}, SVC)
    assert headless["spec"]["clusterIP"] == "None"
    pvc = export.normalize({"metadata": {"name": "p", "finalizers": ["kubernetes.io/pvc-protection"],
                                         "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                            "spec": {"volumeName": "pv-1", "resources": {}}}, PVC)
    assert pvc["metadata"] == {"name": "p"} and "volumeName" not in pvc["spec"]
    ns = export.normalize({"metadata": {"name": "n", "labels": {"kubernetes.io/metadata.name": "n"}},
                           "spec": {"finalizers": ["kubernetes"]}}, NS)
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}
    sa = export.normalize({"metadata": {"name": "app"}, "secrets": [{"name": "app-token-x1"},
                                                                     {"name": "pull"}]}, SA)
    assert sa["secrets"] == [{"name": "pull"}]


def test_generated_objects_are_skipped() -> None:
    assert export.generated_reason({"metadata": {"name": "kube-root-ca.crt"}}, CM)
    assert export.generated_reason({"metadata": {"name": "default"}}, SA)
    assert not export.generated_reason({"metadata": {"name": "default"},
                                        "imagePullSecrets": [{"name": "r"}]}, SA)
    assert export.generated_reason({"metadata": {"name": "kubernetes", "namespace": "default"}},
                                   SVC)
    assert export.generated_reason({"metadata": {"name": "x", "ownerReferences": [
        {"kind": "ReplicaSet", "controller": True}]}}, CM)
    assert not export.generated_reason({"metadata": {"name": "x"}}, CM)
    # what istiod publishes in every namespace; the same name without istiod's label is data
    istio = {"name": "istio-ca-root-cert", "labels": {"istio.io/config": "true"}}
    assert "istiod" in export.generated_reason({"metadata": istio}, CM)
    assert not export.generated_reason({"metadata": {"name": "istio-ca-root-cert"}}, CM)


def test_selection() -> None:
    sel = export.Selection(namespaces=["team-*", "shop"], exclude_namespaces=["team-x"])
    assert sel.wants("shop") and sel.wants("team-a") and not sel.wants("team-x")
    assert not sel.wants("other") and sel.wants(None)
    assert sel.literal_namespaces is None
    assert export.Selection(namespaces=["a", "b"]).literal_namespaces == ["a", "b"]
    assert export.Selection().wants("anything")


def test_kinds() -> None:
    assert parse_kinds(["deployments,ConfigMaps", "backups.velero.io", "configmaps"]) == [
        "deployments.apps", "configmaps", "backups.velero.io"]
    order = sorted(["deployments.apps", "secrets", "namespaces", "backups.velero.io",
                    "rolebindings.rbac.authorization.k8s.io", "services", "serviceaccounts"],
                   key=restore_rank)
    assert order == ["namespaces", "serviceaccounts", "rolebindings.rbac.authorization.k8s.io",
                     "secrets", "services", "deployments.apps", "backups.velero.io"]
    assert DEPLOY.list_path("a") == "/apis/apps/v1/namespaces/a/deployments"
    assert NS.item_path("x") == "/api/v1/namespaces/x"


def test_field_diff_and_compare() -> None:
    a = {"spec": {"replicas": 1, "ports": [{"port": 80}]}, "x": 1}
    b = {"spec": {"replicas": 2, "ports": [{"port": 80}]}, "y": 1}
    assert diff_mod.field_diff(a, b) == ["spec.replicas: 1 -> 2", "x: 1 -> (absent)",
                                         "y: (absent) -> 1"]
    k1, k2 = ("configmaps", "a", "one"), ("configmaps", "a", "two")
    diffs = diff_mod.compare({k1: {"data": 1}}, {k1: {"data": 2}, k2: {}})
    assert [str(d) for d in diffs] == ["configmaps a/one: changed (data: 1 -> 2)",
                                       "configmaps a/two: extra"]


def test_rename_namespace() -> None:
    rb = {"kind": "RoleBinding", "metadata": {"name": "r", "namespace": "a"},
          "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "a"},
                       {"kind": "ServiceAccount", "name": "y", "namespace": "other"}]}
    out = diff_mod.rename_namespace(rb, "a", "b")
    assert out["metadata"]["namespace"] == "b"
    assert [s["namespace"] for s in out["subjects"]] == ["b", "other"]
    assert diff_mod.rename_namespace({"kind": "Namespace", "metadata": {"name": "a"}}, "a",
                                     "b")["metadata"]["name"] == "b"


def _report(tmp_path: Path, codec: secrets.SecretCodec) -> verify.VerifyReport:
    make_archive(tmp_path / "a.tar.gz", codec=codec)
    return verify.load_verified(tmp_path / "a.tar.gz", trust=TRUST)


def test_restore_plan_order_rename_and_skipped_secrets(tmp_path: Path) -> None:
    codec = secrets.SecretCodec.new(secrets.generate_key())
    report = _report(tmp_path, codec)
    steps, skipped = restore.plan(report, "lab-a", "shop", "shop-copy", None)
    assert [s.label for s in steps] == [
        "Namespace shop-copy", "ConfigMap shop-copy/cm-0", "ConfigMap shop-copy/cm-1",
        "ConfigMap shop-copy/cm-2", "Deployment shop-copy/web"]
    assert steps[0].obj["metadata"]["labels"] == {"team": "a"}
    assert skipped == ["shop/db (keys: password, user)"]
    with pytest.raises(BackupError, match="nothing of namespace 'nope'"):
        restore.plan(report, "lab-a", "nope", "nope", None)


def test_restore_plan_decrypts_stored_values(tmp_path: Path) -> None:
    key = secrets.generate_key()
    codec = secrets.SecretCodec.new(secrets.generate_key(), key, store_values=True)
    report = _report(tmp_path, codec)
    reader = secrets.SecretCodec.for_archive(report.metadata, None, key)
    steps, skipped = restore.plan(report, "lab-a", "shop", "shop", reader)
    secret = next(s for s in steps if s.kind.kind == "Secret")
    assert not skipped and secrets.FIELD not in secret.obj
    import base64

    assert base64.b64decode(secret.obj["data"]["password"]).decode() == PLANTED
    with pytest.raises(BackupError, match="--encryption-key"):
        restore.plan(report, "lab-a", "shop", "shop", None)


def test_choose_source_context(tmp_path: Path) -> None:
    codec = secrets.SecretCodec.new(secrets.generate_key())
    export.write_archive(make_exports(codec, ("lab-a", "lab-b")), tmp_path / "two.tar.gz",
                         export.Selection(), codec, signer=SIGNER)
    report = verify.load_verified(tmp_path / "two.tar.gz", trust=TRUST)
    assert restore.choose_source_context(report, None, "lab-b") == "lab-b"
    assert restore.choose_source_context(report, "lab-a", "lab-c") == "lab-a"
    with pytest.raises(BackupError, match="--source-context"):
        restore.choose_source_context(report, None, "lab-c")
    with pytest.raises(BackupError, match="holds no context 'x'"):
        restore.choose_source_context(report, "x", "lab-c")
