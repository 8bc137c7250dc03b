"""Objects every lab cluster gets once its API is up: RBAC for the lab's restricted identities
and for peer DNS, and CoreDNS serving the cluster domain plus one zone per peer cluster."""

from __future__ import annotations

import json

from components import DNS_PEER_USER, RESTRICTED_USERS, peer_kubeconfig
from images import IMAGES
from topology import CLUSTER_DOMAIN, Cluster

COREDNS_IMAGE = IMAGES["coredns"]
EDITOR_NAMESPACE = "team-a"
DNS_PORT = 1053  # unprivileged inside the pod; the kube-dns Service maps 53 to it
DNS_READ_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["list", "watch"]},
]


def corefile(cluster: Cluster, peers: list[Cluster]) -> str:
    """The cluster's Corefile. No `forward`: a name outside the lab's zones gets no answer
    from anywhere but this server."""
    blocks = [f""".:{DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} {cluster.zone} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
    reload 5s
}}
"""]
    for peer in peers:
        blocks.append(f"""{peer.zone}:{DNS_PORT} {{
    errors
    kubernetes {peer.zone} {{
        kubeconfig /etc/coredns-peers/{peer.name}.kubeconfig {peer.name}
        ttl 5
    }}
    cache 5
}}
""")
    return "\n".join(blocks)


def _labels(extra: dict | None = None) -> dict:
    return {"app.kubernetes.io/part-of": "fleetcheck-lab", **(extra or {})}


def objects(cluster: Cluster, clusters: list[Cluster]) -> list[dict]:
    peers = [c for c in clusters if c.name != cluster.name]
    restricted = {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container_sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True}
    dns_labels = {"k8s-app": "kube-dns"}
    return [
        # --- restricted identities for RBAC checks
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "fleetcheck-lab:viewer", "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "view"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": RESTRICTED_USERS["viewer"]}]},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": EDITOR_NAMESPACE, "labels": _labels()}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "fleetcheck-lab:editor", "namespace": EDITOR_NAMESPACE,
                      "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "edit"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": RESTRICTED_USERS["editor"]}]},
        # --- peers' CoreDNS read this cluster's services
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "fleetcheck-lab:dns-reader", "labels": _labels()},
         "rules": DNS_READ_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "fleetcheck-lab:dns-peer", "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "fleetcheck-lab:dns-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": DNS_PEER_USER},
                      {"kind": "ServiceAccount", "name": "coredns",
                       "namespace": "kube-system"}]},
        # --- CoreDNS
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": _labels()}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": _labels()},
         "data": {"Corefile": corefile(cluster, peers)}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "coredns-peers", "namespace": "kube-system",
                      "labels": _labels()},
         "type": "Opaque",
         "stringData": {f"{p.name}.kubeconfig": peer_kubeconfig(p) for p in peers}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system",
                      "labels": _labels(dns_labels)},
         "spec": {
             "replicas": 1, "selector": {"matchLabels": dns_labels},
             "strategy": {"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
             "template": {
                 "metadata": {"labels": dns_labels},
                 "spec": {
                     "serviceAccountName": "coredns", "dnsPolicy": "Default",
                     # on the control-plane node, so stopping a worker's kubelet (a fault the
                     # self-tests inject) leaves cluster DNS alone
                     "nodeSelector": {"fleetcheck.io/lab-role": "control-plane"},
                     "priorityClassName": "system-cluster-critical",
                     "securityContext": restricted,
                     "containers": [{
                         "name": "coredns", "image": COREDNS_IMAGE,
                         "imagePullPolicy": "IfNotPresent",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "ports": [{"name": "dns", "containerPort": DNS_PORT,
                                    "protocol": "UDP"},
                                   {"name": "dns-tcp", "containerPort": DNS_PORT,
                                    "protocol": "TCP"}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                            "periodSeconds": 2},
                         "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                           "periodSeconds": 10, "failureThreshold": 5},
                         "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                       "limits": {"cpu": "500m", "memory": "170Mi"}},
                         "securityContext": container_sc,
                         "volumeMounts": [
                             {"name": "config", "mountPath": "/etc/coredns",
                              "readOnly": True},
                             {"name": "peers", "mountPath": "/etc/coredns-peers",
                              "readOnly": True}],
                     }],
                     "volumes": [
                         {"name": "config", "configMap": {
                             "name": "coredns",
                             "items": [{"key": "Corefile", "path": "Corefile"}]}},
                         {"name": "peers", "secret": {"secretName": "coredns-peers"}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": _labels({**dns_labels,
                                         "kubernetes.io/name": "CoreDNS"})},
         "spec": {"clusterIP": cluster.dns_ip, "selector": dns_labels,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP",
                             "targetPort": DNS_PORT},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP",
                             "targetPort": DNS_PORT}]}},
    ]


def manifest(cluster: Cluster, clusters: list[Cluster]) -> str:
    """All bootstrap objects as one JSON List, for `kubectl apply -f -`."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects(cluster, clusters)})
