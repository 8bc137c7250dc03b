"""The lab's network: one namespace per node, all joined to one routing namespace.

Pod and service CIDRs of every cluster are routed in the router namespace, so traffic between
clusters is real L3 that never leaves the lab. No namespace has a default route, and nothing is
connected to the host's namespaces: a packet for any address outside the lab is answered with
"network unreachable" by the first lab hop.
"""

from __future__ import annotations

from host import run
from topology import ROUTER_IP, ROUTER_NS, Cluster, all_nodes

NODE_NET = "10.200.0.0/16"


def _ns(ns: str, *argv: str) -> None:
    run("ip", "-n", ns, *argv)


def _sysctls(ns: str) -> None:
    settings = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }
    args = [f"{k}={v}" for k, v in settings.items()]
    run("nsenter", f"--net=/run/netns/{ns}", "--", "sysctl", "-q", "-w", *args)


def setup(clusters: list[Cluster]) -> None:
    run("ip", "netns", "add", ROUTER_NS)
    _ns(ROUTER_NS, "link", "set", "lo", "up")
    _sysctls(ROUTER_NS)
    for node in all_nodes(clusters):
        run("ip", "netns", "add", node.netns)
        _ns(node.netns, "link", "set", "lo", "up")
        _sysctls(node.netns)
        run("ip", "link", "add", "name", node.router_veth, "netns", ROUTER_NS, "type", "veth",
            "peer", "name", "eth0", "netns", node.netns)
        _ns(ROUTER_NS, "addr", "add", f"{ROUTER_IP}/32", "dev", node.router_veth)
        _ns(ROUTER_NS, "link", "set", node.router_veth, "up")
        _ns(ROUTER_NS, "route", "add", f"{node.ip}/32", "dev", node.router_veth)
        _ns(ROUTER_NS, "route", "add", node.pod_cidr, "via", node.ip)
        _ns(node.netns, "addr", "add", f"{node.ip}/32", "dev", "eth0")
        _ns(node.netns, "link", "set", "eth0", "up")
        _ns(node.netns, "route", "add", ROUTER_IP, "dev", "eth0", "scope", "link")
        # only the lab's own prefixes: anything else is unreachable at the node itself
        for prefix in (NODE_NET, *(c.pod_cidr for c in clusters),
                       *(c.service_cidr for c in clusters)):
            _ns(node.netns, "route", "add", prefix, "via", ROUTER_IP, "dev", "eth0", "onlink")
    for cluster in clusters:
        # a service IP of a peer cluster is translated by that cluster's kube-proxy
        _ns(ROUTER_NS, "route", "add", cluster.service_cidr, "via", cluster.control_plane.ip)


def default_routes(namespaces: list[str]) -> dict[str, str]:
    """Namespaces (of those given) that have a default route, with the route: must be none."""
    found = {}
    for ns in namespaces:
        out = run("ip", "-n", ns, "route", "show", "default", check=False).strip()
        if out:
            found[ns] = out
    return found
