"""The lab's shape: clusters, nodes, address plan and filesystem locations.

Everything that names or numbers a lab object is derived here, so `up`, `down`, `status`
and the tests agree on it. Addresses are private and never routed past the lab:

- router namespace ``fclab-router``: one veth per node, each carrying ``10.200.0.1/32``
- node ``n`` of cluster ``i``: ``10.200.<i+1>.<n+10>``, in namespace ``fclab-<node>``
- pods of cluster ``i``: ``10.<10+i>.0.0/16``, node ``n`` owns ``10.<10+i>.<n>.0/24``
- services of cluster ``i``: ``10.<100+i>.0.0/16`` (API ``.0.1``, DNS ``.0.10``)
- the API server of cluster ``i`` is reachable from the host on ``127.0.0.1:<26443+i>``
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

STATE = Path(os.environ.get("FLEETCHECK_LAB_STATE", "/var/lib/fleetcheck-lab"))
RUN = Path(os.environ.get("FLEETCHECK_LAB_RUN", "/run/fleetcheck-lab"))
CACHE = Path(os.environ.get("FLEETCHECK_LAB_CACHE", "/var/cache/fleetcheck-lab"))
KUBECONFIG = STATE / "kubeconfig"
CGROUP_PARENT = "fclab"
NETNS_PREFIX = "fclab-"
ROUTER_NS = "fclab-router"
ROUTER_IP = "10.200.0.1"
DEFAULT_CLUSTERS = "lab-a:1,lab-b:1,lab-c:2"
CLUSTER_DOMAIN = "cluster.local"
IMAGE_PREFIX = "lab.fleetcheck.invalid/"
API_PORT_BASE = 26443
SPEC_RE = re.compile(r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?(:[1-9])?$")


@dataclass(frozen=True)
class Node:
    cluster: str
    cluster_index: int
    index: int

    @property
    def name(self) -> str:
        return f"{self.cluster}-n{self.index + 1}"

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def ip(self) -> str:
        return f"10.200.{self.cluster_index + 1}.{self.index + 10}"

    @property
    def pod_cidr(self) -> str:
        return f"10.{10 + self.cluster_index}.{self.index}.0/24"

    @property
    def router_veth(self) -> str:
        return f"fcr{self.cluster_index}x{self.index}"

    @property
    def dir(self) -> Path:
        return STATE / self.cluster / self.name

    @property
    def run_dir(self) -> Path:
        return RUN / self.cluster / self.name

    @property
    def containerd_sock(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        """kubelet's --cgroup-root: pods of this node live below it."""
        return f"/{CGROUP_PARENT}/{self.name}"


@dataclass(frozen=True)
class Cluster:
    name: str
    index: int
    node_count: int = 1
    nodes: tuple[Node, ...] = field(default=(), compare=False)

    @property
    def pod_cidr(self) -> str:
        return f"10.{10 + self.index}.0.0/16"

    @property
    def service_cidr(self) -> str:
        return f"10.{100 + self.index}.0.0/16"

    @property
    def api_service_ip(self) -> str:
        return f"10.{100 + self.index}.0.1"

    @property
    def dns_ip(self) -> str:
        return f"10.{100 + self.index}.0.10"

    @property
    def control_plane(self) -> Node:
        return self.nodes[0]

    @property
    def api_port(self) -> int:
        return API_PORT_BASE + self.index

    @property
    def host_server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def lab_server(self) -> str:
        """The API server address as seen from inside the lab (nodes and pods)."""
        return f"https://{self.control_plane.ip}:6443"

    @property
    def zone(self) -> str:
        """The DNS zone under which every cluster's DNS serves this cluster's services."""
        return f"{self.name}.local"

    @property
    def dir(self) -> Path:
        return STATE / self.name

    @property
    def run_dir(self) -> Path:
        return RUN / self.name


def parse_clusters(spec: str) -> list[Cluster]:
    """Parse ``name[:nodes],...`` (e.g. ``lab-a,lab-b,lab-c:2``) into clusters."""
    clusters: list[Cluster] = []
    seen: set[str] = set()
    for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
        if not SPEC_RE.match(part):
            raise ValueError(
                f"bad cluster spec {part!r}: use NAME[:NODES], NAME a DNS label of at most "
                "20 characters, NODES 1-9"
            )
        name, _, count = part.partition(":")
        if name in seen:
            raise ValueError(f"cluster {name!r} is listed twice")
        seen.add(name)
        n = int(count or 1)
        nodes = tuple(Node(name, i, k) for k in range(n))
        clusters.append(Cluster(name, i, n, nodes))
    if not clusters:
        raise ValueError("no clusters given")
    if len(clusters) > 8:
        raise ValueError("at most 8 clusters fit the address plan")
    return clusters


def saved_spec() -> str | None:
    """The cluster spec of the lab that is (or was last) up, if any."""
    try:
        return json.loads((STATE / "lab.json").read_text())["clusters"]
    except (OSError, ValueError, KeyError):
        return None


def all_nodes(clusters: list[Cluster]) -> list[Node]:
    return [n for c in clusters for n in c.nodes]
