"""The fleet plan: cluster names, distinct pod and service subnets, kind cluster configs.

Pure functions only (no Docker, no kind): :func:`fleet_plan` gives one :class:`ClusterPlan`
per cluster, :func:`kind_config` the kind ``Cluster`` config (YAML) that creates it.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml

#: pod subnets are carved from here, one /16 per cluster (kind's default 10.244.0.0/16 inside)
POD_POOL = "10.240.0.0/12"
#: service subnets are carved from here, one /16 per cluster (kind's default 10.96.0.0/16 first)
SERVICE_POOL = "10.96.0.0/12"
PREFIX_LEN = 16
#: kind's context names are ``kind-<cluster name>``
KIND_CONTEXT_PREFIX = "kind-"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")  # kind accepts ^[a-z0-9.-]+$


class PlanError(ValueError):
    """The requested fleet cannot be planned (bad name, too many clusters, overlap)."""


@dataclass(frozen=True)
class ClusterPlan:
    """One kind cluster of the fleet."""

    name: str  # kind cluster name, e.g. fc-a
    workers: int
    pod_subnet: str
    service_subnet: str

    @property
    def context(self) -> str:
        """The kubeconfig context kind gives the cluster (``kind-<name>``)."""
        return KIND_CONTEXT_PREFIX + self.name

    @property
    def zone(self) -> str:
        """The DNS zone under which peers serve this cluster's services: ``<context>.local``,
        i.e. ``{service}.{namespace}.svc.{cluster}.local`` with the context as ``cluster``."""
        return f"{self.context}.local"

    @property
    def control_plane(self) -> str:
        """Name of the control-plane node container."""
        return f"{self.name}-control-plane"

    @property
    def node_names(self) -> list[str]:
        """Node container names as kind makes them: control-plane, worker, worker2, ..."""
        workers = [f"{self.name}-worker{i + 1 if i else ''}" for i in range(self.workers)]
        return [self.control_plane, *workers]


def cluster_names(count: int, prefix: str) -> list[str]:
    """kind cluster names for ``count`` clusters whose contexts start with ``prefix``
    (``kind-fc`` -> ``fc-a``, ``fc-b``, ...; contexts ``kind-fc-a``, ...)."""
    if not prefix.startswith(KIND_CONTEXT_PREFIX):
        raise PlanError(f"name prefix {prefix!r} must start with {KIND_CONTEXT_PREFIX!r} "
                        "(kind names contexts kind-<cluster>)")
    base = prefix[len(KIND_CONTEXT_PREFIX):]
    if not _NAME_RE.match(base):
        raise PlanError(f"name prefix {prefix!r}: after 'kind-' use lower-case letters, digits, "
                        "'.' or '-'")
    if not 1 <= count <= len(string.ascii_lowercase):
        raise PlanError(f"--clusters {count}: between 1 and 26 clusters")
    return [f"{base}-{letter}" for letter in string.ascii_lowercase[:count]]


def carve(pool: str, count: int, prefix_len: int = PREFIX_LEN,
          first: str | None = None) -> list[str]:
    """``count`` distinct subnets of ``pool`` of size ``/prefix_len``, starting at ``first``
    (default: the start of the pool) and wrapping around."""
    net = ipaddress.ip_network(pool)
    subnets = list(net.subnets(new_prefix=prefix_len))
    if count > len(subnets):
        raise PlanError(f"{count} clusters need {count} /{prefix_len} subnets; {pool} has "
                        f"{len(subnets)}")
    start = subnets.index(ipaddress.ip_network(first)) if first else 0
    return [str(subnets[(start + i) % len(subnets)]) for i in range(count)]


def overlaps(subnets: Iterable[str], reserved: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs (planned, other) that overlap, among the planned subnets and with ``reserved``
    (networks already in use: the docker network, the host's routes)."""
    planned = [ipaddress.ip_network(s) for s in subnets]
    others = [ipaddress.ip_network(r, strict=False) for r in reserved]
    found = []
    for i, a in enumerate(planned):
        for b in planned[i + 1:]:
            if a.overlaps(b):
                found.append((str(a), str(b)))
        for b in others:
            if a.version == b.version and a.overlaps(b) and b.prefixlen > 0:
                found.append((str(a), str(b)))
    return found


def fleet_plan(count: int = 3, prefix: str = "kind-fc", multi_node: Sequence[int] | None = None,
               reserved: Iterable[str] = ()) -> list[ClusterPlan]:
    """The fleet: ``count`` clusters, those at the ``multi_node`` indexes (default: the last)
    with one worker node, each with its own pod and service /16."""
    names = cluster_names(count, prefix)
    multi = {count - 1} if multi_node is None else set(multi_node)
    if any(not 0 <= i < count for i in multi):
        raise PlanError(f"multi-node cluster index out of range 0..{count - 1}: {sorted(multi)}")
    pods = carve(POD_POOL, count, first="10.244.0.0/16")
    services = carve(SERVICE_POOL, count)
    clash = overlaps(pods + services, reserved)
    if clash:
        raise PlanError("subnet plan overlaps networks in use: "
                        + ", ".join(f"{a} with {b}" for a, b in clash))
    return [ClusterPlan(name=n, workers=1 if i in multi else 0, pod_subnet=p, service_subnet=s)
            for i, (n, p, s) in enumerate(zip(names, pods, services, strict=True))]


def kind_config(cluster: ClusterPlan, node_image: str | None = None) -> str:
    """The kind ``Cluster`` config (v1alpha4) that creates ``cluster``. Without
    ``node_image`` kind uses the node image pinned by its own release."""
    nodes: list[dict[str, str]] = [{"role": "control-plane"}]
    nodes += [{"role": "worker"} for _ in range(cluster.workers)]
    if node_image:
        for node in nodes:
            node["image"] = node_image
    doc = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": cluster.name,
        "networking": {"podSubnet": cluster.pod_subnet,
                       "serviceSubnet": cluster.service_subnet},
        "nodes": nodes,
    }
    header = (f"# kind cluster {cluster.name} (context {cluster.context}), written by "
              "scripts/kind-fleet\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def fleet_members(existing: Iterable[str], prefix: str) -> list[str]:
    """The kind clusters among ``existing`` that belong to the fleet ``prefix`` (what
    ``down`` deletes, however many clusters ``up`` made)."""
    base = prefix.removeprefix(KIND_CONTEXT_PREFIX)
    member = re.compile(rf"^{re.escape(base)}-[a-z]$")
    return sorted(name for name in existing if member.match(name))
