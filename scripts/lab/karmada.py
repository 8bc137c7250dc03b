"""The lab's Karmada control plane: a real multi-cluster control plane over the lab's clusters.

Every component is a lab process on the host's loopback, in its own cgroup below
``/fclab/daemons/karmada`` (so ``down`` and a ``kill -9`` clean-up treat it like the rest):

- ``karmada.etcd``: its own etcd (127.0.0.1:26479, data on the lab's tmpfs)
- ``karmada.apiserver``: the lab's kube-apiserver as karmada-apiserver (127.0.0.1:26460), with
  the aggregation layer (front-proxy CA) for the Cluster API
- ``karmada.aggregated-apiserver``: serves ``cluster.karmada.io`` (Cluster objects) through an
  APIService whose ExternalName service points at ``localhost:26461``
- ``karmada.webhook``: admission (permanent-id labels, policy validation), 127.0.0.1:26462
- ``karmada.controller-manager``, ``karmada.scheduler``
- ``karmada.kube-controller-manager``: namespace, garbagecollector, serviceaccount-token and
  clusterrole-aggregation controllers only

Leader election is off. Failover is on: ``--feature-gates=Failover=true``, NoExecute taint
eviction enabled, and the ClusterTaintPolicy ``fleetcheck-lab-not-ready`` taints a cluster whose
Ready condition is not True with ``cluster.karmada.io/not-ready:NoExecute``. Lab timings: member
status every 5 s, a cluster is NotReady after 10 s of failed health checks (Ready again after
10 s of success), graceful eviction gives up after 2 min.

The lab's clusters join in push mode, as ``karmadactl join`` does: on every member a
ServiceAccount ``karmada-cluster/karmada-<cluster>`` bound to cluster-admin and its token Secret;
on Karmada a Secret with that token and the member's CA, and a Cluster object whose API endpoint
is the member's host address (``https://127.0.0.1:2644x``, the same as in the lab kubeconfig).
The kubeconfig gains the context ``karmada`` for the Karmada API.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request

import pki
from build import BIN, KARMADA_CRDS
from components import kubeconfig_doc
from host import daemon_alive, run, start_daemon
from topology import RUN, STATE, Cluster

NAME = "karmada"  # the context name and the Cluster objects' prefix-free identity
DIR = STATE / "karmada"
PKI = DIR / "pki"
KUBECONFIG = DIR / "admin.conf"
ETCD_PORT = 26479
API_PORT = 26460
AGGREGATED_PORT = 26461
WEBHOOK_PORT = 26462
SERVER = f"https://127.0.0.1:{API_PORT}"
SYSTEM_NS = "karmada-system"
CLUSTER_NS = "karmada-cluster"
AGGREGATED_SVC = "karmada-aggregated-apiserver"
TAINT_POLICY = "fleetcheck-lab-not-ready"
NOT_READY_TAINT = "cluster.karmada.io/not-ready"
#: what the lab sets, as `status` and fleetcheck's federation/control-plane report it
TIMINGS = {"cluster-status-update-frequency": "5s", "cluster-failure-threshold": "10s",
           "cluster-success-threshold": "10s", "cluster-monitor-period": "2s",
           "cluster-monitor-grace-period": "20s", "graceful-eviction-timeout": "2m"}
DAEMONS = ("etcd", "apiserver", "aggregated-apiserver", "webhook", "kube-controller-manager",
           "controller-manager", "scheduler")


def daemon_names() -> list[str]:
    return [f"karmada.{d}" for d in DAEMONS]


def _daemon(comp: str, argv: list[str], restart: bool = False) -> None:
    start_daemon(f"karmada.{comp}", argv, netns=None, cgroup=f"fclab/daemons/karmada/{comp}",
                 log=DIR / "logs" / f"{comp}.log", restart=restart)


# ---------------------------------------------------------------- certificates and kubeconfig

def make_pki() -> None:
    ca = pki.CA(PKI, "fleetcheck-lab karmada CA")
    ca.issue("apiserver", "karmada-apiserver", server=True, client=False,
             dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
             ips=("127.0.0.1",))
    ca.issue("admin", "fleetcheck-lab:admin", orgs=("system:masters",))
    ca.issue("aggregated-apiserver", AGGREGATED_SVC, server=True, client=False,
             dns=(f"{AGGREGATED_SVC}.{SYSTEM_NS}.svc", "localhost"), ips=("127.0.0.1",))
    ca.issue("webhook", "karmada-webhook", server=True, client=False, dns=("localhost",),
             ips=("127.0.0.1",))
    front = pki.CA(PKI / "front-proxy", "fleetcheck-lab karmada front-proxy CA")
    front.issue("front-proxy-client", "front-proxy-client")
    pki.service_account_keys(PKI)
    certs = DIR / "webhook-certs"
    certs.mkdir(parents=True, exist_ok=True)
    for src, dst in (("webhook.crt", "tls.crt"), ("webhook.key", "tls.key")):
        (certs / dst).write_bytes((PKI / src).read_bytes())
        (certs / dst).chmod(0o600)
    doc = kubeconfig_doc(NAME, SERVER, PKI / "ca.crt", PKI / "admin.crt", PKI / "admin.key",
                         user=f"admin@{NAME}")
    KUBECONFIG.write_text(json.dumps(doc, indent=1))
    KUBECONFIG.chmod(0o600)


def user_kubeconfig_doc() -> dict:
    """The ``karmada`` context of the lab's kubeconfig (credentials embedded)."""
    return kubeconfig_doc(NAME, SERVER, PKI / "ca.crt", PKI / "admin.crt", PKI / "admin.key",
                          user=f"admin@{NAME}", embed=True)


# ---------------------------------------------------------------- daemons

def start_etcd() -> None:
    data = RUN / "karmada" / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    _daemon("etcd", [
        "/usr/bin/etcd", "--name=karmada", f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
        f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
        f"--listen-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
        f"--initial-cluster=karmada=http://127.0.0.1:{ETCD_PORT + 1}",
        "--snapshot-count=10000", "--quota-backend-bytes=1073741824",
        "--log-level=warn", "--logger=zap",
    ])


def start_apiserver() -> None:
    p = PKI
    _daemon("apiserver", [
        str(BIN / "kube-apiserver"), "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1", f"--secure-port={API_PORT}",
        f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
        "--service-cluster-ip-range=10.99.0.0/16",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=StorageObjectInUseProtection,ServiceAccount",
        f"--proxy-client-cert-file={p / 'front-proxy' / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy' / 'front-proxy-client.key'}",
        "--requestheader-allowed-names=front-proxy-client",
        f"--requestheader-client-ca-file={p / 'front-proxy' / 'ca.crt'}",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        "--endpoint-reconciler-type=none", "--profiling=false", "--event-ttl=1h",
    ])


def _kc() -> list[str]:
    return [f"--kubeconfig={KUBECONFIG}"]


def start_aggregated_apiserver() -> None:
    _daemon("aggregated-apiserver", [
        str(BIN / "karmada-aggregated-apiserver"), *_kc(),
        f"--authentication-kubeconfig={KUBECONFIG}", f"--authorization-kubeconfig={KUBECONFIG}",
        f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}", "--etcd-prefix=/registry",
        f"--tls-cert-file={PKI / 'aggregated-apiserver.crt'}",
        f"--tls-private-key-file={PKI / 'aggregated-apiserver.key'}",
        "--bind-address=127.0.0.1", f"--secure-port={AGGREGATED_PORT}",
        "--profiling=false",
    ], restart=True)


def start_webhook() -> None:
    _daemon("webhook", [
        str(BIN / "karmada-webhook"), *_kc(), "--bind-address=127.0.0.1",
        f"--secure-port={WEBHOOK_PORT}", f"--cert-dir={DIR / 'webhook-certs'}",
        "--metrics-bind-address=127.0.0.1:26463", "--health-probe-bind-address=127.0.0.1:26464",
        # the lab's ClusterTaintPolicy taints not-Ready clusters NoExecute
        "--allow-no-execute-taint-policy=true",
    ], restart=True)


def start_kube_controller_manager() -> None:
    _daemon("kube-controller-manager", [
        str(BIN / "kube-controller-manager"), *_kc(),
        f"--authentication-kubeconfig={KUBECONFIG}", f"--authorization-kubeconfig={KUBECONFIG}",
        "--bind-address=127.0.0.1", "--secure-port=26469", "--leader-elect=false",
        ("--controllers=namespace,garbagecollector,serviceaccount-token,"
         "clusterrole-aggregation"),
        f"--service-account-private-key-file={PKI / 'sa.key'}",
        f"--root-ca-file={PKI / 'ca.crt'}", "--cluster-name=karmada", "--profiling=false",
    ], restart=True)


#: fault injection: extra flags for karmada-controller-manager, one per line (later flags win),
#: read when it starts; self-tests write it, then `scripts/lab stop|start karmada.controller-manager`
EXTRA_ARGS = DIR / "controller-manager.extra-args"


def start_controller_manager() -> None:
    extra = EXTRA_ARGS.read_text().split() if EXTRA_ARGS.exists() else []
    _daemon("controller-manager", [
        str(BIN / "karmada-controller-manager"), *_kc(), "--leader-elect=false",
        "--metrics-bind-address=127.0.0.1:26465", "--health-probe-bind-address=127.0.0.1:26466",
        *[f"--{k}={v}" for k, v in TIMINGS.items()],
        "--feature-gates=Failover=true", "--enable-no-execute-taint-eviction=true",
        "--enable-cluster-resource-modeling=false", *extra,
    ], restart=True)


def start_scheduler() -> None:
    _daemon("scheduler", [
        str(BIN / "karmada-scheduler"), *_kc(), "--leader-elect=false",
        "--metrics-bind-address=127.0.0.1:26467", "--health-probe-bind-address=127.0.0.1:26468",
    ], restart=True)


STARTERS = {
    "etcd": start_etcd, "apiserver": start_apiserver,
    "aggregated-apiserver": start_aggregated_apiserver, "webhook": start_webhook,
    "kube-controller-manager": start_kube_controller_manager,
    "controller-manager": start_controller_manager, "scheduler": start_scheduler,
}


# ---------------------------------------------------------------- API helpers

def api(path: str, timeout: float = 3) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    try:
        with urllib.request.urlopen(SERVER + path, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    return run(str(BIN / "kubectl"), *_kc(), "--request-timeout=20s", *args, input=input,
               check=check, timeout=60)


def _wait(what: str, probe, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as e:  # noqa: BLE001 - reported if it never succeeds
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last})" if last else "")
                       + f"; logs: {DIR / 'logs'}")


def _apply(docs: list[dict]) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
            input="\n".join(json.dumps(d) for d in docs))


# ---------------------------------------------------------------- bootstrap objects

def _ca_bundle() -> str:
    return base64.b64encode((PKI / "ca.crt").read_bytes()).decode()


WEBHOOKS = {
    # kind: [(name, group, resources, operations, path, scope, sideEffects, objectSelector)]
    "MutatingWebhookConfiguration": [
        ("propagationpolicy", "policy.karmada.io", "propagationpolicies", "CU", "Namespaced"),
        ("clusterpropagationpolicy", "policy.karmada.io", "clusterpropagationpolicies", "CU",
         "Cluster"),
        ("overridepolicy", "policy.karmada.io", "overridepolicies", "CU", "Namespaced"),
        ("resourcebinding", "work.karmada.io", "resourcebindings", "C", "Namespaced"),
        ("clusterresourcebinding", "work.karmada.io", "clusterresourcebindings", "C", "Cluster"),
        ("work", "work.karmada.io", "works", "CU", "Namespaced"),
    ],
    "ValidatingWebhookConfiguration": [
        ("propagationpolicy", "policy.karmada.io", "propagationpolicies", "CU", "Namespaced"),
        ("clusterpropagationpolicy", "policy.karmada.io", "clusterpropagationpolicies", "CU",
         "Cluster"),
        ("overridepolicy", "policy.karmada.io", "overridepolicies", "CU", "Namespaced"),
        ("clusteroverridepolicy", "policy.karmada.io", "clusteroverridepolicies", "CU",
         "Cluster"),
        ("resourcebinding", "work.karmada.io", "resourcebindings", "CU", "Namespaced"),
        ("clustertaintpolicy", "policy.karmada.io", "clustertaintpolicies", "CU", "Cluster"),
    ],
}


def webhook_configurations() -> list[dict]:
    ops = {"C": "CREATE", "U": "UPDATE"}
    docs = []
    for kind, hooks in WEBHOOKS.items():
        prefix = "mutate" if kind.startswith("Mutating") else "validate"
        docs.append({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": "mutating-config" if prefix == "mutate" else
                         "validating-config", "labels": {"app": "karmada-webhook"}},
            "webhooks": [{
                "name": f"{name}.karmada.io",
                "rules": [{"operations": [ops[o] for o in op], "apiGroups": [group],
                           "apiVersions": ["*"], "resources": [res], "scope": scope}],
                "clientConfig": {"url": f"https://127.0.0.1:{WEBHOOK_PORT}/{prefix}-{name}",
                                 "caBundle": _ca_bundle()},
                "failurePolicy": "Fail", "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 3,
            } for name, group, res, op, scope in hooks],
        })
    return docs


def crds() -> list[dict]:
    import yaml

    docs = []
    for path in sorted(KARMADA_CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["metadata"]["name"] in ("resourcebindings.work.karmada.io",
                                       "clusterresourcebindings.work.karmada.io"):
            doc["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": f"https://127.0.0.1:{WEBHOOK_PORT}/convert",
                                 "caBundle": _ca_bundle()},
                "conversionReviewVersions": ["v1"]}}
        docs.append(doc)
    return docs


def system_objects() -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NS}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CLUSTER_NS}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": AGGREGATED_SVC, "namespace": SYSTEM_NS},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1alpha1.cluster.karmada.io"},
         "spec": {"group": "cluster.karmada.io", "version": "v1alpha1",
                  "groupPriorityMinimum": 2000, "versionPriority": 10,
                  "caBundle": _ca_bundle(),
                  "service": {"name": AGGREGATED_SVC, "namespace": SYSTEM_NS,
                              "port": AGGREGATED_PORT}}},
    ]


def taint_policy() -> dict:
    return {
        "apiVersion": "policy.karmada.io/v1alpha1", "kind": "ClusterTaintPolicy",
        "metadata": {"name": TAINT_POLICY},
        "spec": {
            "targetClusters": {},
            "addOnConditions": [{"conditionType": "Ready", "operator": "NotIn",
                                 "statusValues": ["True"]}],
            "removeOnConditions": [{"conditionType": "Ready", "operator": "In",
                                    "statusValues": ["True"]}],
            "taints": [{"key": NOT_READY_TAINT, "effect": "NoExecute"}],
        },
    }


# ---------------------------------------------------------------- join (push mode)

def member_objects(cluster: Cluster) -> list[dict]:
    """What `karmadactl join` creates on a member: a ServiceAccount with cluster-admin and a
    token Secret for it."""
    sa = f"karmada-{cluster.name}"
    labels = {"app.kubernetes.io/part-of": "fleetcheck-lab"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": CLUSTER_NS, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": sa, "namespace": CLUSTER_NS, "labels": labels}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": sa, "namespace": CLUSTER_NS, "labels": labels,
                      "annotations": {"kubernetes.io/service-account.name": sa}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"karmada-controller-manager:{sa}", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": CLUSTER_NS}]},
    ]


def cluster_objects(cluster: Cluster, token: str) -> list[dict]:
    ca = (cluster.dir / "pki" / "ca.crt").read_bytes()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": cluster.name, "namespace": CLUSTER_NS},
              "data": {"token": base64.b64encode(token.encode()).decode(),
                       "caBundle": base64.b64encode(ca).decode()}}
    impersonator = dict(secret, metadata={"name": f"{cluster.name}-impersonator",
                                          "namespace": CLUSTER_NS},
                        data={"token": secret["data"]["token"]})
    return [secret, impersonator, {
        "apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": cluster.name,
                     "labels": {"fleetcheck.io/lab-cluster": cluster.name}},
        "spec": {"apiEndpoint": cluster.host_server, "syncMode": "Push",
                 "secretRef": {"namespace": CLUSTER_NS, "name": cluster.name},
                 "impersonatorSecretRef": {"namespace": CLUSTER_NS,
                                           "name": f"{cluster.name}-impersonator"}},
    }]


def member_token(cluster: Cluster, member_kubectl) -> str:
    out = member_kubectl(cluster, "-n", CLUSTER_NS, "get", "secret", f"karmada-{cluster.name}",
                         "-o", "jsonpath={.data.token}")
    return base64.b64decode(out).decode() if out.strip() else ""


# ---------------------------------------------------------------- up / health

def start(log) -> None:
    """Certificates and the API server side (before the clusters are up)."""
    DIR.mkdir(parents=True, exist_ok=True)
    start_etcd()
    start_apiserver()


def bootstrap(clusters: list[Cluster], member_kubectl, log) -> None:
    """Once the member clusters are up: Karmada's objects, controllers, and the join."""
    _wait("karmada-apiserver /readyz", lambda: api("/readyz")[0] == 200, 120, log)
    start_webhook()
    start_aggregated_apiserver()
    start_kube_controller_manager()
    _apply(crds())
    _apply(system_objects() + webhook_configurations())
    _wait("Cluster API (APIService v1alpha1.cluster.karmada.io)",
          lambda: api("/apis/cluster.karmada.io/v1alpha1/clusters")[0] == 200, 60, log)
    _wait("karmada-webhook", lambda: api("/readyz")[0] == 200 and _webhook_up(), 60, log)
    _apply([taint_policy()])
    start_controller_manager()
    start_scheduler()
    for c in clusters:
        member_kubectl(c, "apply", "-f", "-",
                       input="\n".join(json.dumps(d) for d in member_objects(c)))
    for c in clusters:
        token = ""

        def have_token(c: Cluster = c) -> bool:
            nonlocal token
            token = member_token(c, member_kubectl)
            return bool(token)
        _wait(f"{c.name}: token of karmada-{c.name}", have_token, 60, log)
        _apply(cluster_objects(c, token))
    _wait("every member Cluster Ready", lambda: not clusters_not_ready(clusters), 90, log)


def _webhook_up() -> bool:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{WEBHOOK_PORT}/readyz", context=ctx,
                                    timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers TLS with our certificate
    except OSError:
        return False


def clusters_not_ready(clusters: list[Cluster]) -> list[str]:
    code, body = api("/apis/cluster.karmada.io/v1alpha1/clusters")
    if code != 200:
        return [f"karmada Cluster API: {code or body}"]
    ready = {item["metadata"]["name"] for item in json.loads(body)["items"]
             for cond in item.get("status", {}).get("conditions", [])
             if cond["type"] == "Ready" and cond["status"] == "True"}
    return [f"karmada: member {c.name} not Ready" for c in clusters if c.name not in ready]


def problems(clusters: list[Cluster]) -> list[str]:
    out = [f"{d}: not running" for d in daemon_names() if not daemon_alive(d)]
    code, body = api("/readyz")
    if code != 200:
        return out + [f"karmada API: /readyz {code or body}"]
    return out + clusters_not_ready(clusters)


def status_line(clusters: list[Cluster]) -> str:
    code, _ = api("/readyz")
    missing = clusters_not_ready(clusters) if code == 200 else ["?"]
    return (f"{NAME:10} api={SERVER} readyz={code or 'unreachable'} "
            f"members={len(clusters) - len(missing)}/{len(clusters)} Ready")
