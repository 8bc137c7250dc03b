"""The rbac/* suite against the real lab, with the faults it must catch injected.

Creates only objects named ``fc-rbac-*`` (a RoleBinding in team-a, ServiceAccounts, a Role
and RoleBinding in kube-system, a ClusterRoleBinding), the ClusterRoleBinding
``system:anything`` (cluster-admin for system:authenticated: run lab tests under
``flock /tmp/fclab.lock``) and client certificates in tmp_path (signed by a lab CA, or by a CA
of our own); every fault is undone in a ``finally``.  Each run's report directory (and output) is
searched for credentials: kubeconfig key/certificate data, PEM blocks, JWTs.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fclab import LAB_IMAGES, REPO, results, run
from labkit import KUBECONFIG, apply, kubectl

pytestmark = pytest.mark.lab

LAB_DIR = Path(KUBECONFIG).parent
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
CHECKS = ["rbac/identity", "rbac/expected-allow", "rbac/expected-deny", "rbac/namespace-access",
          "rbac/risky-bindings", "rbac/serviceaccount-token", "rbac/credential-expiry"]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


# --- helpers -----------------------------------------------------------------------------

def _load_pem(path: Path) -> Any:
    return path.read_bytes()


def sign_client_cert(cn: str, *, cluster: str | None, lifetime: dt.timedelta,
                     orgs: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for ``cn``, signed by ``cluster``'s lab CA (or, with
    ``cluster=None``, by a throw-away CA the API servers do not trust)."""
    now = dt.datetime.now(dt.UTC)
    if cluster is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fc-rbac rogue CA")])
    else:
        pki = LAB_DIR / cluster / "pki"
        ca_key = serialization.load_pem_private_key(_load_pem(pki / "ca.key"), None)
        ca_name = x509.load_pem_x509_certificate(_load_pem(pki / "ca.crt")).subject
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def write_kubeconfig(path: Path, users: dict[str, tuple[str, bytes, bytes]]) -> Path:
    """A kubeconfig with one context per entry ``name -> (cluster, cert PEM, key PEM)``,
    the cluster entries copied from the lab's kubeconfig."""
    lab = yaml.safe_load(Path(KUBECONFIG).read_text())
    clusters = {c["name"]: c for c in lab["clusters"]}
    b64 = lambda data: base64.b64encode(data).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [clusters[c] for c in sorted({c for c, _, _ in users.values()})],
        "users": [{"name": name, "user": {"client-certificate-data": b64(crt),
                                          "client-key-data": b64(key)}}
                  for name, (_, crt, key) in users.items()],
        "contexts": [{"name": name, "context": {"cluster": cluster, "user": name}}
                     for name, (cluster, _, _) in users.items()],
        "current-context": next(iter(users)),
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def run_rbac(tmp_path: Path, contexts: str, *, kubeconfig: Path | str = KUBECONFIG,
             expectations: Path = EXPECTATIONS, select: str | None = None,
             tag: str = "run") -> tuple[Path, dict[tuple[str, str], dict], str]:
    """Run suites/test_rbac.py; returns (report dir, {(check id, context): record}, output)."""
    report = tmp_path / f"report-{tag}"
    args = ["suites/test_rbac.py", f"--contexts={contexts}", f"--kubeconfig={kubeconfig}",
            f"--expectations={expectations}", f"--report-dir={report}", *LAB_IMAGES,
            f"--run-id=fc-rbac-{tag}-{secrets.token_hex(3)}", "-q"]
    if select:
        args += ["-k", select]
    proc = run(args, cwd=REPO, timeout=240)
    output = proc.stdout + proc.stderr
    assert (report / "results.json").is_file(), output[-3000:]
    records = {(c["check_id"], c["context"]): c for c in results(report)["checks"]}
    return report, records, output


def assert_no_credentials(report: Path, output: str, kubeconfigs: list[Path]) -> None:
    """No kubeconfig key or certificate data (base64 or decoded), no PEM block, no JWT in any
    file of the report dir nor in the run's output."""
    needles: set[str] = set()
    for path in kubeconfigs:
        for user in yaml.safe_load(Path(path).read_text())["users"]:
            for key in ("client-certificate-data", "client-key-data", "token"):
                value = user["user"].get(key)
                if not value:
                    continue
                needles.add(value)
                if key != "token":
                    lines = base64.b64decode(value).decode().splitlines()
                    needles.update(line for line in lines if len(line) >= 16
                                   and not line.startswith("-----"))
    texts = {"(output)": output}
    for file in report.rglob("*"):
        if file.is_file():
            texts[str(file)] = file.read_text(errors="replace")
    for name, text in texts.items():
        assert "-----BEGIN" not in text, f"PEM block in {name}"
        assert not JWT.search(text), f"a JWT in {name}"
        leaked = [n[:12] + "..." for n in needles if n in text]
        assert not leaked, f"kubeconfig credential material in {name}: {leaked}"


def verdict(records: dict, check_id: str, context: str) -> tuple[str, str]:
    record = records[(check_id, context)]
    return record["verdict"], record["message"]


# --- the lab as it is: conformant --------------------------------------------------------

def test_lab_is_conformant_for_admin_viewer_and_editor(tmp_path: Path) -> None:
    report, records, output = run_rbac(tmp_path, "lab-*,viewer@*,editor@*", tag="green")
    contexts = [f"{p}{c}" for p in ("", "viewer@", "editor@") for c in ("lab-a", "lab-b", "lab-c")]
    for context in contexts:
        for check_id in CHECKS:
            got, message = verdict(records, check_id, context)
            if check_id == "rbac/expected-deny" and "@" not in context:
                # admins (system:masters) are denied nothing: no deny tuples, skipped
                assert got == "skipped", (context, message)
                assert "no rbac.deny tuples" in message
            else:
                assert got == "conformant", (check_id, context, message)
    # one table per context, naming tuple, answer and the RBAC reason
    [table] = [e for e in records[("rbac/expected-allow", "editor@lab-b")]["evidence"]
               if e["kind"] == "table"]
    assert "create  deployments.apps  team-a" in table["content"]
    assert 'RoleBinding "fleetcheck-lab:editor/team-a" of ClusterRole "edit"' in table["content"]
    # cluster-wide facts read through the admin context of the same cluster, and said so
    ev = {e["name"]: e["content"] for e in records[("rbac/risky-bindings", "viewer@lab-c")]
          ["evidence"]}
    assert ev["source"].startswith("RBAC objects read through lab-c (same API server; "
                                   "viewer@lab-c as fleetcheck-lab:viewer may not list them)")
    ev = {e["name"]: e["content"] for e in records[("rbac/identity", "lab-a")]["evidence"]}
    assert "username: fleetcheck-lab:admin" in ev["identity"]
    assert "groups: system:masters, system:authenticated" in ev["identity"]
    ev = {e["name"]: e["content"] for e in
          records[("rbac/serviceaccount-token", "lab-a")]["evidence"]}
    claims = json.loads(ev["token claims (unverified; no header, no signature)"])
    assert claims["exp"] - claims["iat"] == 600
    assert claims["sub"].startswith("system:serviceaccount:fleetcheck-fc-rbac-green-")
    matrix = next(c for n, c in {e["name"]: e["content"] for e in records[
        ("rbac/namespace-access", "editor@lab-a")]["evidence"]}.items() if "matrix" in n)
    assert re.search(r"^kube-system\s+no\s+no\s+no\s+denied\s+ok$", matrix, re.MULTILINE)
    assert re.search(r"^team-a\s+yes\s+yes\s+yes\s+allowed\s+ok$", matrix, re.MULTILINE)
    assert_no_credentials(report, output, [Path(KUBECONFIG)])


# --- faults ------------------------------------------------------------------------------

@pytest.fixture
def tester(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Identity ``fc-rbac:tester`` on lab-b, bound to ClusterRole edit in team-a by our own
    RoleBinding ``fc-rbac-tester``: (kubeconfig, context).  The binding is removed at the end."""
    cert, key = sign_client_cert("fc-rbac:tester", cluster="lab-b",
                                 lifetime=dt.timedelta(days=365))
    kubeconfig = write_kubeconfig(tmp_path / "tester.kubeconfig",
                                  {"fc-rbac-tester@lab-b": ("lab-b", cert, key)})
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "fc-rbac-tester", "namespace": "team-a"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "edit"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": "fc-rbac:tester"}]}
    try:
        apply("lab-b", binding)
        yield kubeconfig, "fc-rbac-tester@lab-b"
    finally:
        kubectl("lab-b", "delete", "rolebinding", "fc-rbac-tester", "-n", "team-a",
                "--ignore-not-found", check=False)


def test_deleted_rolebinding_fails_expected_allow_naming_the_tuple(
        tmp_path: Path, tester: tuple[Path, str]) -> None:
    kubeconfig, context = tester
    expectations = tmp_path / "expectations.yaml"
    expectations.write_text(yaml.safe_dump({"version": 1, "contexts": [{
        "match": "fc-rbac-tester@*",
        "rbac": {"identity": "fc-rbac:tester",
                 "allow": [{"verb": "create", "resource": "deployments", "namespace": "team-a"},
                           {"verb": "list", "resource": "pods", "namespace": "team-a"}],
                 "deny": [{"verb": "list", "resource": "pods", "namespace": "default"}]}}]}))
    _, records, _ = run_rbac(tmp_path, context, kubeconfig=kubeconfig, expectations=expectations,
                             select="expected_allow or expected_deny", tag="bound")
    assert verdict(records, "rbac/expected-allow", context)[0] == "conformant"
    assert verdict(records, "rbac/expected-deny", context)[0] == "conformant"

    kubectl("lab-b", "delete", "rolebinding", "fc-rbac-tester", "-n", "team-a")
    report, records, output = run_rbac(tmp_path, context, kubeconfig=kubeconfig,
                                       expectations=expectations,
                                       select="expected_allow or expected_deny", tag="unbound")
    got, message = verdict(records, "rbac/expected-allow", context)
    assert got == "non-conformant"
    assert message.startswith(f"rbac/expected-allow [{context}]: expected fc-rbac:tester to be "
                              "allowed: create deployments.apps in namespace team-a; ")
    assert "observed 2 of 2 denied: create deployments.apps in namespace team-a (denied); " \
           "list pods in namespace team-a (denied) [identity fc-rbac:tester]" in message
    assert verdict(records, "rbac/expected-deny", context)[0] == "conformant"
    assert_no_credentials(report, output, [kubeconfig])


@pytest.fixture
def cluster_admin_sa() -> Iterator[tuple[str, str]]:
    """ServiceAccount default/fc-rbac-intruder-* bound to cluster-admin on lab-c by
    ClusterRoleBinding fc-rbac-intruder-*: (binding, subject).  Both removed at the end."""
    name = f"fc-rbac-intruder-{secrets.token_hex(3)}"
    try:
        apply("lab-c",
              {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": "default"}},
              {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "cluster-admin"},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]})
        yield name, f"ServiceAccount:default/{name}"
    finally:
        kubectl("lab-c", "delete", "clusterrolebinding", name, "--ignore-not-found", check=False)
        kubectl("lab-c", "delete", "serviceaccount", name, "-n", "default", "--ignore-not-found",
                check=False)


def test_cluster_admin_serviceaccount_fails_risky_bindings(
        tmp_path: Path, cluster_admin_sa: tuple[str, str]) -> None:
    binding, subject = cluster_admin_sa
    report, records, output = run_rbac(tmp_path, "lab-b,lab-c,viewer@lab-c",
                                       select="risky_bindings", tag="risky")
    assert verdict(records, "rbac/risky-bindings", "lab-b")[0] == "conformant"
    for context in ("lab-c", "viewer@lab-c"):
        got, message = verdict(records, "rbac/risky-bindings", context)
        assert got == "non-conformant", message
        assert (f"observed 1 finding(s): {subject} via ClusterRoleBinding {binding} -> "
                "ClusterRole cluster-admin: cluster-admin, wildcard-verbs") in message
        assert "verbs=[*] apiGroups=[*] resources=[*]" in message
    table = next(e["content"] for e in records[("rbac/risky-bindings", "lab-c")]["evidence"]
                 if e["name"].startswith("risky bindings outside the allowlist (1)"))
    assert subject in table and binding in table
    assert_no_credentials(report, output, [Path(KUBECONFIG)])


def test_risky_bindings_unknown_when_no_context_may_read_rbac(tmp_path: Path) -> None:
    _, records, _ = run_rbac(tmp_path, "viewer@lab-a", select="risky_bindings", tag="forbidden")
    got, message = verdict(records, "rbac/risky-bindings", "viewer@lab-a")
    assert got == "unknown"
    assert "fleetcheck-lab:viewer (viewer@lab-a) may not list roles, clusterroles, " \
           "rolebindings and clusterrolebindings" in message


def test_certificate_expiring_tomorrow_fails_credential_expiry(tmp_path: Path) -> None:
    cert, key = sign_client_cert("fc-rbac:expiring", cluster="lab-a",
                                 lifetime=dt.timedelta(days=1))
    kubeconfig = write_kubeconfig(tmp_path / "expiring.kubeconfig",
                                  {"fc-rbac-expiring@lab-a": ("lab-a", cert, key)})
    expires = x509.load_pem_x509_certificate(cert).not_valid_after_utc
    report, records, output = run_rbac(tmp_path, "fc-rbac-expiring@lab-a", kubeconfig=kubeconfig,
                                       select="credential_expiry or identity", tag="expiring")
    context = "fc-rbac-expiring@lab-a"
    got, message = verdict(records, "rbac/credential-expiry", context)
    assert got == "non-conformant", message
    assert (f"observed certificate CN=fc-rbac:expiring expires on "
            f"{expires.strftime('%Y-%m-%d %H:%M:%S')} UTC") in message
    assert "within the horizon of 30 days" in message
    # it authenticates (the server accepts it today): recorded, and with no rbac.identity or
    # rbac.groups expected the identity check is skipped, not a vacuous pass
    got, message = verdict(records, "rbac/identity", context)
    assert got == "skipped", message
    assert "the expectations give no rbac.identity or rbac.groups" in message
    ev = {e["name"]: e["content"] for e in records[("rbac/identity", context)]["evidence"]}
    assert "username: fc-rbac:expiring" in ev["identity"]
    assert_no_credentials(report, output, [kubeconfig])


def test_rejected_credentials_make_every_rbac_check_unknown(tmp_path: Path) -> None:
    rogue = sign_client_cert("fc-rbac:rogue", cluster=None, lifetime=dt.timedelta(days=365),
                             orgs=("system:masters",))
    good = sign_client_cert("fc-rbac:expiring", cluster="lab-a", lifetime=dt.timedelta(days=90))
    kubeconfig = write_kubeconfig(tmp_path / "rogue.kubeconfig", {
        "fc-rbac-rogue@lab-a": ("lab-a", *rogue), "fc-rbac-ok@lab-a": ("lab-a", *good)})
    report, records, output = run_rbac(tmp_path, "fc-rbac-*", kubeconfig=kubeconfig,
                                       tag="rogue")
    for check_id in CHECKS:
        got, message = verdict(records, check_id, "fc-rbac-rogue@lab-a")
        assert got == "unknown", (check_id, message)
        assert "rejected the credentials" in message, message
        # the other context of the same run (same cluster, trusted CA) is measured normally
        got, message = verdict(records, check_id, "fc-rbac-ok@lab-a")
        assert "rejected" not in message, message
    assert verdict(records, "rbac/credential-expiry", "fc-rbac-ok@lab-a")[0] == "conformant"
    # nothing expected (default expectations): skipped with the reason, evidence recorded
    for check_id, keys in (("rbac/identity", "rbac.identity or rbac.groups"),
                           ("rbac/namespace-access",
                            "rbac.namespaces or rbac.forbidden_namespaces")):
        got, message = verdict(records, check_id, "fc-rbac-ok@lab-a")
        assert got == "skipped", (check_id, message)
        assert f"the expectations give no {keys} for context fc-rbac-ok@lab-a" in message
        assert records[(check_id, "fc-rbac-ok@lab-a")]["evidence"], check_id
    assert_no_credentials(report, output, [kubeconfig])


# --- risky bindings by identity and rule; expectations naming what is not served ---------

def _risky_table(records: dict, context: str) -> str:
    return next(e["content"] for e in records[("rbac/risky-bindings", context)]["evidence"]
                if e["name"].startswith("risky bindings outside the allowlist"))


def test_binding_named_system_anything_for_all_authenticated_fails_risky_bindings(
        tmp_path: Path) -> None:
    """A binding's name is chosen by whoever creates it: ``system:anything`` granting
    cluster-admin to every authenticated user is a finding naming its rules."""
    binding = "system:anything"
    try:
        apply("lab-a", {"apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding", "metadata": {"name": binding},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                    "kind": "ClusterRole", "name": "cluster-admin"},
                        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                      "name": "system:authenticated"}]})
        report, records, output = run_rbac(tmp_path, "lab-a,lab-b", select="risky_bindings",
                                           tag="anything")
    finally:
        kubectl("lab-a", "delete", "clusterrolebinding", binding, "--ignore-not-found",
                check=False)
    assert verdict(records, "rbac/risky-bindings", "lab-b")[0] == "conformant"
    got, message = verdict(records, "rbac/risky-bindings", "lab-a")
    assert got == "non-conformant", message
    assert ("observed 1 finding(s): Group:system:authenticated via ClusterRoleBinding "
            "system:anything -> ClusterRole cluster-admin: broad-group, cluster-admin, "
            "wildcard-verbs") in message
    assert "Group:system:authenticated" in _risky_table(records, "lab-a")
    legend = next(e["content"] for e in records[("rbac/risky-bindings", "lab-a")]["evidence"]
                  if e["name"] == "rules named above")
    assert "broad-group" in legend and "system:authenticated" in legend
    # the genuine bootstrap binding is accepted by identity, and said so
    accepted = next(e["content"] for e in records[("rbac/risky-bindings", "lab-a")]["evidence"]
                    if e["name"].startswith("risky bindings accepted"))
    assert "Kubernetes bootstrap binding (ClusterRoleBinding cluster-admin -> cluster-admin)" \
        in accepted
    assert_no_credentials(report, output, [Path(KUBECONFIG)])


def test_serviceaccount_minting_tokens_in_kube_system_fails_risky_bindings(
        tmp_path: Path) -> None:
    """A ServiceAccount whose Role lets it create serviceaccounts/token in kube-system can
    become any ServiceAccount there: a finding named mint-serviceaccount-tokens."""
    name = f"fc-rbac-minter-{secrets.token_hex(3)}"
    rbac_v1 = "rbac.authorization.k8s.io/v1"
    try:
        apply("lab-b",
              {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": "kube-system"}},
              {"apiVersion": rbac_v1, "kind": "Role",
               "metadata": {"name": name, "namespace": "kube-system"},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                          "verbs": ["create"]}]},
              {"apiVersion": rbac_v1, "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": "kube-system"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name,
                             "namespace": "kube-system"}]})
        report, records, output = run_rbac(tmp_path, "lab-b,viewer@lab-b",
                                           select="risky_bindings", tag="minter")
    finally:
        for kind in ("rolebinding", "role", "serviceaccount"):
            kubectl("lab-b", "delete", kind, name, "-n", "kube-system", "--ignore-not-found",
                    check=False)
    finding = (f"ServiceAccount:kube-system/{name} via RoleBinding kube-system/{name} -> "
               f"Role kube-system/{name}: mint-serviceaccount-tokens "
               '[verbs=[create] apiGroups=[""] resources=[serviceaccounts/token]]')
    for context in ("lab-b", "viewer@lab-b"):
        got, message = verdict(records, "rbac/risky-bindings", context)
        assert got == "non-conformant", message
        assert f"observed 1 finding(s): {finding}" in message
    table = _risky_table(records, "lab-b")
    assert "mint-serviceaccount-tokens" in table and name in table
    assert_no_credentials(report, output, [Path(KUBECONFIG)])


def test_misspelled_resource_in_expectations_is_unknown_naming_the_entry(
        tmp_path: Path) -> None:
    """``podz`` is not "denied": the server does not serve it, so the deny tuple measures
    nothing; the check is unknown and names the expectations entry."""
    expectations = tmp_path / "expectations.yaml"
    expectations.write_text(yaml.safe_dump({"version": 1, "contexts": [{
        "match": "viewer@lab-a",
        "rbac": {"allow": [{"verb": "list", "resource": "pods"},
                           {"verb": "get", "resource": "pods/logz", "namespace": "team-a"}],
                 "deny": [{"verb": "create", "resource": "pods", "namespace": "default"},
                          {"verb": "get", "resource": "podz", "namespace": "default"}]}}]}))
    server = next(c["cluster"]["server"] for c in yaml.safe_load(
        Path(KUBECONFIG).read_text())["clusters"] if c["name"] == "lab-a")
    _, records, _ = run_rbac(tmp_path, "viewer@lab-a", expectations=expectations,
                             select="expected_allow or expected_deny", tag="typo")
    got, message = verdict(records, "rbac/expected-deny", "viewer@lab-a")
    assert got == "unknown", message
    assert (f"expectations rbac.deny[1]: resource 'podz' is not served by {server} "
            "(API discovery); fix the expectations file") in message
    assert "rbac.deny[0]" not in message
    got, message = verdict(records, "rbac/expected-allow", "viewer@lab-a")
    assert got == "unknown", message
    assert (f"expectations rbac.allow[1]: subresource 'logz' of 'pods' is not served by "
            f"{server} (API discovery)") in message
