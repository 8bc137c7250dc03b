"""The route plan: flat L3 between the kind clusters' node containers.

All node containers sit on the one docker network ``kind``. Within a cluster kindnet routes
each node's pod range; across clusters nothing does. :func:`route_plan` adds, on every node,
a route to each peer node's pod range via that peer node, and to each peer cluster's service
range via the peer's control-plane node (whose kube-proxy answers for ClusterIPs).
Pure functions: the observed nodes come in as :class:`Node` values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import ClusterPlan, PlanError


@dataclass(frozen=True)
class Node:
    """A node container as the cluster's API reports it."""

    cluster: str  # kind cluster name
    name: str
    ip: str  # InternalIP: the address on the docker network
    pod_cidr: str  # spec.podCIDR


@dataclass(frozen=True)
class Route:
    """``ip route replace <destination> via <via>`` inside node container ``node``."""

    node: str
    destination: str
    via: str

    def command(self) -> list[str]:
        """The docker command that installs the route (idempotent: ``replace``)."""
        return ["docker", "exec", self.node, "ip", "route", "replace", self.destination,
                "via", self.via]


def nodes_from_api(cluster: str, node_list: Mapping[str, Any]) -> list[Node]:
    """:class:`Node` values from ``kubectl get nodes -o json`` of one cluster."""
    out = []
    for item in node_list.get("items", []):
        addresses = (item.get("status") or {}).get("addresses") or []
        ips = [a["address"] for a in addresses
               if a.get("type") == "InternalIP" and ipaddress.ip_address(a["address"]).version == 4]
        pod_cidr = (item.get("spec") or {}).get("podCIDR")
        name = item["metadata"]["name"]
        if not ips or not pod_cidr:
            raise PlanError(f"node {name} of {cluster} has no IPv4 InternalIP or podCIDR yet")
        out.append(Node(cluster=cluster, name=name, ip=ips[0], pod_cidr=pod_cidr))
    return out


def check_nodes(clusters: Sequence[ClusterPlan], nodes: Sequence[Node]) -> None:
    """Every planned node is there, inside its cluster's pod subnet, with a unique address."""
    by_cluster = {c.name: c for c in clusters}
    seen: dict[str, str] = {}
    for node in nodes:
        plan = by_cluster.get(node.cluster)
        if plan is None:
            raise PlanError(f"node {node.name} belongs to no planned cluster ({node.cluster})")
        if not ipaddress.ip_network(node.pod_cidr).subnet_of(
                ipaddress.ip_network(plan.pod_subnet)):
            raise PlanError(f"node {node.name}: podCIDR {node.pod_cidr} outside "
                            f"{plan.pod_subnet}")
        if node.ip in seen:
            raise PlanError(f"nodes {seen[node.ip]} and {node.name} share the address {node.ip}")
        seen[node.ip] = node.name
    for plan in clusters:
        have = {n.name for n in nodes if n.cluster == plan.name}
        missing = [n for n in plan.node_names if n not in have]
        if missing:
            raise PlanError(f"cluster {plan.name}: nodes {', '.join(missing)} not found")


def route_plan(clusters: Sequence[ClusterPlan], nodes: Sequence[Node]) -> list[Route]:
    """Routes that make pods of every cluster reach pods and ClusterIPs of every other."""
    check_nodes(clusters, nodes)
    routes = []
    for plan in clusters:
        own = [n for n in nodes if n.cluster == plan.name]
        for peer in clusters:
            if peer.name == plan.name:
                continue
            peer_nodes = [n for n in nodes if n.cluster == peer.name]
            gateway = next(n for n in peer_nodes if n.name == peer.control_plane)
            for node in own:
                routes += [Route(node.name, p.pod_cidr, p.ip) for p in peer_nodes]
                routes.append(Route(node.name, peer.service_subnet, gateway.ip))
    return routes
