"""The mesh/* suite against the lab's Istio (multi-primary over lab-a, lab-b, lab-c): all
conformant when healthy, and for each check the fault it exists to catch, injected into the
real mesh, with the exact verdict asserted.

Faults: a remote secret deleted (the link lab-a -> lab-b gone; for failover, lab-a -> lab-c), istiod of lab-c scaled to zero,
a second root CA in lab-c (its ``cacerts`` replaced, istiod restarted), lab-b's sidecar injector
told never to inject the echo (``neverInjectSelector``), the mesh names blocked in lab-a (a
mesh-wide Sidecar whose egress knows only istio-system), and a sidecar image that does not exist
(unknown within ``mesh.ready_timeout_s``, not a hang).  Every fault is undone in a ``finally``
and istiod is waited Available again.  Run under ``flock /tmp/fclab.lock``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from fclab import CLUSTERS, LAB_IMAGES, REPO, results, run
from labkit import KUBECONFIG, get, kubectl, lab_healthy, run_namespaces_left, wait_for

# needs the lab's Karmada and Istio (`scripts/lab up`, not `--stage core`)
pytestmark = pytest.mark.full_lab

SUITE = "suites/test_mesh.py"
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
ISTIO_NS = "istio-system"
CHECKS = ["mesh/control-plane", "mesh/remote-clusters", "mesh/proxies-synced",
          "mesh/global-service"]
PAIRS = [f"{a}->{b}" for a in CLUSTERS for b in CLUSTERS if a != b]


def run_mesh(tmp_path: Path, tag: str, contexts: list[str], *extra: str,
             expectations: dict | None = None, timeout: float = 600
             ) -> tuple[dict[tuple[str, str], dict], str, str]:
    """Run the mesh suite on ``contexts``: records by (check id, context), the output, the
    probe run id."""
    exp_file = EXPECTATIONS
    if expectations is not None:
        exp_file = tmp_path / f"expectations-{tag}.yaml"
        exp_file.write_text(yaml.safe_dump(expectations))
    report = tmp_path / f"report-{tag}"
    proc = run([SUITE, f"--contexts={','.join(contexts)}", f"--kubeconfig={KUBECONFIG}",
                f"--expectations={exp_file}", f"--report-dir={report}",
                f"--run-id=fc-mesh-{tag}-{secrets.token_hex(3)}", *LAB_IMAGES, "-q", *extra],
               cwd=REPO, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-3000:]
    data = results(report)
    records = {(c["check_id"], c["context"]): c for c in data["checks"]}
    return records, output, data["probe_run_id"]


def lab_expectations(**mesh: Any) -> dict:
    data = yaml.safe_load(EXPECTATIONS.read_text())
    data.setdefault("defaults", {}).setdefault("mesh", {}).update(mesh)
    return data


def verdict(records: dict, check_id: str, context: str, want: str, *fragments: str) -> dict:
    record = records[(check_id, context)]
    said = f"{check_id}[{context}] is {record['verdict']}: {record['message']}"
    assert record["verdict"] == want, said
    for fragment in fragments:
        assert fragment in record["message"], f"{fragment!r} not said; {said}"
    return record


def mesh_namespaces_left(run_id: str) -> dict[str, list[str]]:
    return run_namespaces_left(run_id, CLUSTERS)


def istiod_available(context: str) -> bool:
    dep = get(context, "deployment", "istiod", ISTIO_NS)
    status = dep.get("status") or {}
    return (status.get("availableReplicas", 0) >= 1
            and status.get("updatedReplicas", 0) == status.get("replicas", 0)
            and status.get("observedGeneration", 0) >= dep["metadata"]["generation"])


def restart_istiod(context: str) -> None:
    kubectl(context, "-n", ISTIO_NS, "rollout", "restart", "deployment/istiod")
    kubectl(context, "-n", ISTIO_NS, "rollout", "status", "deployment/istiod", "--timeout=120s",
            timeout=150)


def root_in_configmap(context: str) -> str:
    cm = get(context, "configmap", "istio-ca-root-cert", ISTIO_NS)
    return (cm.get("data") or {}).get("root-cert.pem", "")


@contextmanager
def injector_changed(context: str, change) -> Iterator[None]:
    """The sidecar injector's ConfigMap of ``context`` changed by ``change(data)`` (istiod
    reloads it on change); restored afterwards."""
    cm = get(context, "configmap", "istio-sidecar-injector", ISTIO_NS)
    original = copy.deepcopy(cm["data"])
    data = copy.deepcopy(original)
    change(data)
    kubectl(context, "-n", ISTIO_NS, "patch", "configmap", "istio-sidecar-injector",
            "--type=merge", "-p", json.dumps({"data": data}))
    time.sleep(3)  # istiod's file watch on the mounted ConfigMap; the API is read directly
    try:
        yield
    finally:
        kubectl(context, "-n", ISTIO_NS, "patch", "configmap", "istio-sidecar-injector",
                "--type=merge", "-p", json.dumps({"data": original}))
        time.sleep(3)


def self_signed_root() -> dict[str, str]:
    """A second, unrelated root CA (certificate and key, PEM), as a cacerts Secret's data."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetcheck self-test rogue root")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"root-cert.pem": pem, "ca-cert.pem": pem, "ca-key.pem": key_pem,
            "cert-chain.pem": pem}


@contextmanager
def cacerts_replaced(context: str, data: dict[str, str]) -> Iterator[None]:
    secret = get(context, "secret", "cacerts", ISTIO_NS)
    original = secret["data"]
    before = root_in_configmap(context)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    kubectl(context, "-n", ISTIO_NS, "patch", "secret", "cacerts", "--type=merge", "-p",
            json.dumps({"data": encoded}))
    try:
        restart_istiod(context)
        wait_for(f"{context}: istiod publishes the new root", lambda: root_in_configmap(context)
                 == data["root-cert.pem"], timeout=60)
        yield
    finally:
        kubectl(context, "-n", ISTIO_NS, "patch", "secret", "cacerts", "--type=merge", "-p",
                json.dumps({"data": original}))
        restart_istiod(context)
        wait_for(f"{context}: istiod publishes the lab's root again",
                 lambda: root_in_configmap(context) == before, timeout=60)


# ------------------------------------------------------------------------------------ tests


@pytest.fixture(autouse=True, scope="module")
def _lab_healthy_first() -> None:
    """Start from a lab whose every component, node and cluster DNS answers: a test before may
    have restarted an API server, and the data plane takes a while to follow."""
    lab_healthy(timeout=240, interval=3)


def test_healthy_mesh_all_conformant_and_cleaned_up(tmp_path: Path) -> None:
    """Every mesh check, failover included, is conformant on the healthy lab; the evidence
    names the cluster that answered and the peer identity; no mesh namespace is left."""
    records, _, run_id = run_mesh(tmp_path, "ok", CLUSTERS, "--allow-disruptive")
    for check_id in CHECKS + ["mesh/failover"]:
        for ctx in CLUSTERS:
            verdict(records, check_id, ctx, "conformant")
    for pair in PAIRS:
        record = verdict(records, "mesh/cross-cluster", pair, "conformant")
        text = json.dumps(record)
        assert "spiffe://" in text, record  # the mTLS identity is recorded
    wait_for("mesh namespaces removed", lambda: not mesh_namespaces_left(run_id), timeout=90)


def test_remote_secret_deleted_breaks_the_link(tmp_path: Path) -> None:
    """lab-a's istiod loses lab-b: remote-clusters[lab-a] names lab-b, lab-a cannot reach the
    service whose endpoints are only in lab-b; lab-b's own view is untouched."""
    with remote_secret_deleted("lab-a", "lab-b"):
        records, _, _ = run_mesh(tmp_path, "link", ["lab-a", "lab-b"], "-k",
                                 "remote_clusters or cross_cluster",
                                 expectations=lab_expectations(propagation_timeout_s=5))
    verdict(records, "mesh/remote-clusters", "lab-a", "non-conformant", "lab-b",
            "is not a remote cluster")
    verdict(records, "mesh/remote-clusters", "lab-b", "conformant")
    verdict(records, "mesh/cross-cluster", "lab-a->lab-b", "non-conformant")
    verdict(records, "mesh/cross-cluster", "lab-b->lab-a", "conformant")


def test_istiod_stopped_fails_the_control_plane(tmp_path: Path) -> None:
    kubectl("lab-c", "-n", ISTIO_NS, "scale", "deployment/istiod", "--replicas=0")
    try:
        wait_for("lab-c istiod gone", lambda: not get("lab-c", "deployment", "istiod", ISTIO_NS)
                 .get("status", {}).get("availableReplicas"), timeout=60)
        records, _, _ = run_mesh(tmp_path, "istiod", CLUSTERS, "-k", "control_plane")
    finally:
        kubectl("lab-c", "-n", ISTIO_NS, "scale", "deployment/istiod", "--replicas=1")
        wait_for("lab-c istiod Available", lambda: istiod_available("lab-c"), timeout=120)
    verdict(records, "mesh/control-plane", "lab-c", "non-conformant",
            "Deployment istio-system/istiod not Available")
    verdict(records, "mesh/control-plane", "lab-a", "conformant")
    verdict(records, "mesh/control-plane", "lab-b", "conformant")


def test_second_root_ca_breaks_trust(tmp_path: Path) -> None:
    """lab-c's istiod signs with a root of its own: control-plane[lab-c] names both
    fingerprints, and mutual TLS between lab-a and lab-c fails."""
    with cacerts_replaced("lab-c", self_signed_root()):
        records, _, _ = run_mesh(tmp_path, "root", CLUSTERS, "-k",
                                 "control_plane or cross_cluster",
                                 expectations=lab_expectations(propagation_timeout_s=5))
    verdict(records, "mesh/control-plane", "lab-c", "non-conformant",
            "root of trust differs from the fleet's", "lab-c has")
    verdict(records, "mesh/control-plane", "lab-a", "conformant")
    verdict(records, "mesh/cross-cluster", "lab-a->lab-c", "non-conformant")
    verdict(records, "mesh/cross-cluster", "lab-c->lab-b", "non-conformant")
    verdict(records, "mesh/cross-cluster", "lab-a->lab-b", "conformant")


def test_echo_without_sidecar_is_not_mtls(tmp_path: Path) -> None:
    """lab-b's injector never injects the echo: lab-a still gets an answer from lab-b, but in
    plain text; cross-cluster says so, proxies-synced[lab-b] misses the echo's proxy."""
    def never_inject_echo(data: dict) -> None:
        config = yaml.safe_load(data["config"])
        config["neverInjectSelector"] = [{"matchLabels": {"app": "fc-mesh-echo"}}]
        data["config"] = yaml.safe_dump(config)

    with injector_changed("lab-b", never_inject_echo):
        records, _, _ = run_mesh(tmp_path, "nosidecar", ["lab-a", "lab-b"], "-k",
                                 "proxies_synced or cross_cluster",
                                 expectations=lab_expectations(propagation_timeout_s=5))
    verdict(records, "mesh/cross-cluster", "lab-a->lab-b", "non-conformant",
            "no client certificate")
    verdict(records, "mesh/proxies-synced", "lab-b", "non-conformant")
    verdict(records, "mesh/proxies-synced", "lab-a", "conformant")
    verdict(records, "mesh/cross-cluster", "lab-b->lab-a", "conformant")


def test_mesh_names_blocked(tmp_path: Path) -> None:
    """A mesh-wide Sidecar in lab-a lets its proxies know only istio-system: the mesh names of
    the other clusters' services no longer route from lab-a."""
    sidecar = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
               "metadata": {"name": "default", "namespace": ISTIO_NS},
               "spec": {"egress": [{"hosts": [f"{ISTIO_NS}/*"]}],
                        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}
    kubectl("lab-a", "apply", "-f", "-", input=json.dumps(sidecar))
    try:
        records, _, _ = run_mesh(tmp_path, "blocked", ["lab-a", "lab-b"], "-k", "cross_cluster",
                                 expectations=lab_expectations(propagation_timeout_s=5))
    finally:
        kubectl("lab-a", "-n", ISTIO_NS, "delete", "sidecar", "default", "--ignore-not-found")
    verdict(records, "mesh/cross-cluster", "lab-a->lab-b", "non-conformant")
    verdict(records, "mesh/cross-cluster", "lab-b->lab-a", "conformant")


def test_sidecar_never_ready_is_unknown_in_time(tmp_path: Path) -> None:
    """lab-c's injector names a sidecar image that does not exist: the data-plane checks of
    lab-c are unknown (with the pod's state) within mesh.ready_timeout_s, not a hang."""
    def missing_image(data: dict) -> None:
        values = json.loads(data["values"])
        values["global"]["tag"] = "does-not-exist"
        data["values"] = json.dumps(values)

    with injector_changed("lab-c", missing_image):
        start = time.monotonic()
        records, _, _ = run_mesh(tmp_path, "never", ["lab-c"], "-k", "proxies_synced",
                                 expectations=lab_expectations(ready_timeout_s=20))
        seconds = time.monotonic() - start
    record = verdict(records, "mesh/proxies-synced", "lab-c", "unknown",
                     "the mesh data plane of lab-c is not ready")
    assert "does-not-exist" in json.dumps(record), record
    assert seconds < 20 + 60, seconds


def remote_secret(context: str, peer: str) -> dict:
    """``context``'s remote secret for ``peer``, as an object to apply again (no server-set
    fields)."""
    secret = get(context, "secret", f"istio-remote-secret-{peer}", ISTIO_NS)
    kept = {k: secret[k] for k in ("apiVersion", "kind", "type", "data")}
    kept["metadata"] = {k: secret["metadata"][k] for k in ("name", "namespace", "labels",
                                                            "annotations")}
    return kept


@contextmanager
def remote_secret_deleted(context: str, peer: str) -> Iterator[None]:
    """``context``'s istiod loses its link to ``peer`` (the remote secret deleted, restored
    after)."""
    name = f"istio-remote-secret-{peer}"
    kept = remote_secret(context, peer)
    kubectl(context, "-n", ISTIO_NS, "delete", "secret", name)
    try:
        yield
    finally:
        kubectl(context, "apply", "-f", "-", input=json.dumps(kept))


def test_failover_with_nowhere_to_go_fails(tmp_path: Path) -> None:
    """lab-a's failover target is lab-c once lab-b's echo is gone; without its link to lab-c,
    lab-a's requests fail from the scale-down on: failover[lab-a] is non-conformant, the
    other sources (whose links are whole) conformant, and every echo is scaled back."""
    with remote_secret_deleted("lab-a", "lab-c"):
        records, _, run_id = run_mesh(tmp_path, "failover", CLUSTERS, "--allow-disruptive",
                                      "-k", "failover")
    verdict(records, "mesh/failover", "lab-a", "non-conformant", "lab-b")
    verdict(records, "mesh/failover", "lab-b", "conformant")
    verdict(records, "mesh/failover", "lab-c", "conformant")
    wait_for("mesh namespaces removed", lambda: not mesh_namespaces_left(run_id), timeout=90)


def test_remote_secret_reading_the_wrong_cluster(tmp_path: Path) -> None:
    """lab-a's link named lab-b holds lab-c's address and credentials: istiod calls it synced
    (clusterz), but the API server endpoints it holds for lab-b are lab-c's; remote-clusters
    names that, and lab-b's own view stays conformant."""
    kept = remote_secret("lab-a", "lab-b")
    wrong = copy.deepcopy(kept)
    # the data key is the Istio cluster id; the kubeconfig under it, lab-c's
    wrong["data"] = {"lab-b": remote_secret("lab-a", "lab-c")["data"]["lab-c"]}
    kubectl("lab-a", "apply", "-f", "-", input=json.dumps(wrong))
    try:
        time.sleep(5)  # istiod's secret controller swaps the link
        records, _, _ = run_mesh(tmp_path, "wronglink", ["lab-a", "lab-b", "lab-c"], "-k",
                                 "remote_clusters",
                                 expectations=lab_expectations(propagation_timeout_s=10))
    finally:
        kubectl("lab-a", "apply", "-f", "-", input=json.dumps(kept))
        time.sleep(5)
    verdict(records, "mesh/remote-clusters", "lab-a", "non-conformant",
            "remote cluster lab-b holds API server endpoints 10.200.3.10",
            "lab-b's API reports 10.200.2.10", "those are lab-c's")
    verdict(records, "mesh/remote-clusters", "lab-b", "conformant")
    verdict(records, "mesh/remote-clusters", "lab-c", "conformant")
