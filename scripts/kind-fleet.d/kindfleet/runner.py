"""The impure half of scripts/kind-fleet: runs kind, docker and kubectl.

Everything decided here comes from the pure modules (plan, routes, dns, kubeconfig); this
module only observes (node addresses, tokens, the Corefile) and applies.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import dns, kubeconfig, routes
from .plan import ClusterPlan, fleet_members, kind_config


class RunError(RuntimeError):
    """A command failed or the fleet did not become ready in time."""


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"kind-fleet: {message}", file=sys.stderr, flush=True)


def need_tools(*tools: str) -> None:
    """Fail early, saying which tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RunError(f"not on PATH: {', '.join(missing)} (kind-fleet needs kind, docker and "
                       "kubectl)")


def run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run a command, return its stdout; on failure raise with its stderr."""
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RunError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Kubectl:
    """kubectl bound to one kubeconfig and context."""

    def __init__(self, kubeconfig_path: Path, context: str) -> None:
        self.base = ["kubectl", f"--kubeconfig={kubeconfig_path}", f"--context={context}"]

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return run([*self.base, *args], stdin=stdin)

    def json(self, *args: str) -> Any:
        """``kubectl ... -o json``, parsed."""
        return json.loads(self(*args, "-o", "json"))

    def apply(self, objects: Sequence[dict[str, Any]]) -> None:
        """``kubectl apply`` of a list of objects."""
        self("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                   "items": list(objects)}))


def docker_reserved() -> list[str]:
    """IPv4 subnets of the docker network ``kind`` if it exists (the plan must avoid them)."""
    out = run(["docker", "network", "inspect", "kind"], check=False)
    try:
        networks = json.loads(out or "[]")
    except json.JSONDecodeError:
        return []
    return [c["Subnet"] for n in networks for c in (n.get("IPAM") or {}).get("Config") or []
            if "Subnet" in c]


def create_clusters(plans: Sequence[ClusterPlan], state: Path, node_image: str | None,
                    wait: str) -> list[Path]:
    """Create the clusters that do not exist yet; export every cluster's kubeconfig."""
    existing = set(run(["kind", "get", "clusters"]).split())
    paths = []
    for plan in plans:
        config = state / f"{plan.name}.kind.yaml"
        config.write_text(kind_config(plan, node_image))
        path = state / f"{plan.name}.kubeconfig"
        if plan.name in existing:
            log(f"{plan.name}: exists, reusing it")
            run(["kind", "export", "kubeconfig", "--name", plan.name, "--kubeconfig", str(path)])
        else:
            log(f"{plan.name}: creating ({1 + plan.workers} node(s), pods {plan.pod_subnet}, "
                f"services {plan.service_subnet})")
            run(["kind", "create", "cluster", "--config", str(config), "--kubeconfig", str(path),
                 "--wait", wait])
        paths.append(path)
    return paths


def observe_nodes(plans: Sequence[ClusterPlan], kc: Path, timeout_s: float = 120
                  ) -> list[routes.Node]:
    """Node addresses and pod ranges, once every node has a podCIDR."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            nodes = [n for p in plans
                     for n in routes.nodes_from_api(p.name, Kubectl(kc, p.context).json(
                         "get", "nodes"))]
            routes.check_nodes(plans, nodes)
            return nodes
        except ValueError as exc:
            if time.monotonic() > deadline:
                raise RunError(f"nodes not ready for routing: {exc}") from None
            time.sleep(3)


def reader_credentials(kubectl: Kubectl, timeout_s: float = 60) -> tuple[str, str]:
    """(base64 CA, token) of the cluster's DNS reader account, once the token controller
    has filled its Secret."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = kubectl.json("-n", dns.NAMESPACE, "get", "secret", dns.READER).get("data") or {}
        if data.get("token") and data.get("ca.crt"):
            return data["ca.crt"], base64.b64decode(data["token"]).decode()
        if time.monotonic() > deadline:
            raise RunError(f"Secret {dns.NAMESPACE}/{dns.READER} got no token")
        time.sleep(2)


def setup_dns(plans: Sequence[ClusterPlan], nodes: Sequence[routes.Node], kc: Path) -> None:
    """Reader accounts everywhere, then every cluster's CoreDNS serves its peers' zones."""
    creds = {}
    for plan in plans:
        kubectl = Kubectl(kc, plan.context)
        kubectl.apply(dns.reader_objects())
        creds[plan.name] = reader_credentials(kubectl)
    address = {n.name: n.ip for n in nodes}
    for plan in plans:
        peers = [p for p in plans if p.name != plan.name]
        configs = {p.context: dns.peer_kubeconfig(p, f"https://{address[p.control_plane]}:6443",
                                                  *creds[p.name]) for p in peers}
        secret = dns.peers_secret(configs)
        kubectl = Kubectl(kc, plan.context)
        kubectl.apply([secret])
        current = kubectl.json("-n", dns.NAMESPACE, "get", "configmap", "coredns")
        corefile = dns.corefile_with_peers(current["data"]["Corefile"], peers)
        kubectl("-n", dns.NAMESPACE, "patch", "configmap", "coredns", "--type=merge",
                "-p", json.dumps({"data": {"Corefile": corefile}}))
        kubectl("-n", dns.NAMESPACE, "patch", "deployment", "coredns", "--type=strategic",
                "-p", json.dumps(dns.coredns_patch(corefile, secret)))
        kubectl("-n", dns.NAMESPACE, "rollout", "status", "deployment/coredns",
                "--timeout=180s")
        log(f"{plan.name}: CoreDNS serves {', '.join(p.zone for p in peers) or 'no peers'}")


def up(plans: Sequence[ClusterPlan], state: Path, out: Path, node_image: str | None,
       wait: str) -> None:
    """Create (or reuse) the clusters, write the kubeconfig, route, serve peer zones."""
    need_tools("kind", "docker", "kubectl")
    state.mkdir(parents=True, exist_ok=True)
    paths = create_clusters(plans, state, node_image, wait)
    merged = kubeconfig.merge([yaml.safe_load(p.read_text()) for p in paths],
                              current_context=plans[0].context)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(yaml.safe_dump(merged, sort_keys=False))
    log(f"kubeconfig {out}: contexts {', '.join(p.context for p in plans)}")
    nodes = observe_nodes(plans, out)
    plan = routes.route_plan(plans, nodes)
    for route in plan:
        run(route.command())
    log(f"{len(plan)} routes between {len(nodes)} node containers")
    setup_dns(plans, nodes, out)


def down(prefix: str, state: Path, out: Path) -> None:
    """Delete every kind cluster of the fleet and the kubeconfigs kind-fleet wrote."""
    need_tools("kind")
    names = fleet_members(run(["kind", "get", "clusters"]).split(), prefix)
    if not names:
        log(f"no kind cluster of the fleet {prefix}")
    for name in names:
        log(f"{name}: deleting")
        run(["kind", "delete", "cluster", "--name", name, "--kubeconfig",
             str(state / f"{name}.kubeconfig")])
    for path in [out, *state.glob("*.kubeconfig")]:
        path.unlink(missing_ok=True)
