"""Peer DNS zones: every cluster's CoreDNS serves each peer's services under ``<peer>.local``.

A peer zone is a CoreDNS server block using the ``kubernetes`` plugin with a kubeconfig for
the peer's API server, reached at the peer control-plane's address on the docker network, as
a read-only ServiceAccount of the peer (:func:`reader_objects`). Pure functions: manifests,
kubeconfigs and the Corefile are built here; scripts/kind-fleet applies them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .plan import ClusterPlan

NAMESPACE = "kube-system"
READER = "fleetcheck-dns-peer"  # ServiceAccount, ClusterRole, ClusterRoleBinding and Secret
PEERS_SECRET = "fleetcheck-dns-peers"  # kubeconfigs of the peers, mounted into CoreDNS
MOUNT = "/etc/coredns-peers"
BEGIN = "# BEGIN fleetcheck peer zones (scripts/kind-fleet)"
END = "# END fleetcheck peer zones"
LABELS = {"app.kubernetes.io/managed-by": "fleetcheck-kind-fleet"}
READ_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["list", "watch"]},
]


def reader_objects() -> list[dict[str, Any]]:
    """What a cluster needs so that its peers' CoreDNS can read its services: a
    ServiceAccount, list/watch on what the kubernetes plugin reads, and a token Secret."""
    meta = {"name": READER, "labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**meta, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": meta, "rules": READ_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": READER},
         "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {**meta, "namespace": NAMESPACE,
                      "annotations": {"kubernetes.io/service-account.name": READER}}},
    ]


def peer_kubeconfig(peer: ClusterPlan, server: str, ca_data: str, token: str) -> dict[str, Any]:
    """A kubeconfig (context named like the peer) with which CoreDNS reads ``peer``'s API at
    ``server`` (``https://<peer control-plane IP>:6443``) as the peer's reader account.
    ``ca_data`` is base64 PEM, as in kubeconfigs and token Secrets."""
    user = f"{READER}@{peer.name}"
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": peer.name,
                      "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": peer.context, "context": {"cluster": peer.name, "user": user}}],
        "current-context": peer.context,
    }


def peers_secret(kubeconfigs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The Secret mounted into CoreDNS: one ``<peer context>.kubeconfig`` key per peer."""
    data = {f"{context}.kubeconfig": base64.b64encode(
        json.dumps(kc, sort_keys=True).encode()).decode() for context, kc in
        sorted(kubeconfigs.items())}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": PEERS_SECRET, "namespace": NAMESPACE, "labels": LABELS},
            "data": data}


def peer_block(peer: ClusterPlan, port: int = 53) -> str:
    """The CoreDNS server block serving ``peer``'s services under its zone."""
    return f"""{peer.zone}:{port} {{
    errors
    kubernetes {peer.zone} {{
        kubeconfig {MOUNT}/{peer.context}.kubeconfig {peer.context}
        ttl 5
    }}
    cache 5
}}
"""


def strip_peer_blocks(corefile: str) -> str:
    """The Corefile without blocks an earlier run added (between :data:`BEGIN` and
    :data:`END`)."""
    out, skipping = [], False
    for line in corefile.splitlines(keepends=True):
        if line.strip() == BEGIN:
            skipping = True
        elif line.strip() == END:
            skipping = False
        elif not skipping:
            out.append(line)
    return "".join(out).rstrip("\n") + "\n"


def corefile_with_peers(corefile: str, peers: Sequence[ClusterPlan]) -> str:
    """kind's (kubeadm's) Corefile plus one block per peer; applying it twice changes
    nothing."""
    base = strip_peer_blocks(corefile)
    if not peers:
        return base
    blocks = "\n".join(peer_block(p) for p in peers)
    return f"{base}{BEGIN}\n{blocks}{END}\n"


def coredns_patch(corefile: str, secret: Mapping[str, Any]) -> dict[str, Any]:
    """Strategic merge patch for the ``coredns`` Deployment: mount the peers' kubeconfigs,
    and roll the pods when the Corefile or the kubeconfigs change."""
    digest = hashlib.sha256(
        (corefile + json.dumps(secret.get("data", {}), sort_keys=True)).encode()).hexdigest()
    return {"spec": {"template": {
        "metadata": {"annotations": {"fleetcheck.dev/dns-peers-sha256": digest[:16]}},
        "spec": {
            "volumes": [{"name": "fleetcheck-dns-peers",
                         "secret": {"secretName": PEERS_SECRET, "defaultMode": 0o444}}],
            "containers": [{"name": "coredns", "volumeMounts": [
                {"name": "fleetcheck-dns-peers", "mountPath": MOUNT, "readOnly": True}]}],
        },
    }}}
