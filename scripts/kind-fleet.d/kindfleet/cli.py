"""Command line of scripts/kind-fleet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import runner
from .kubeconfig import MergeError
from .plan import PlanError, fleet_plan, kind_config

DEFAULT_STATE = Path("build/kind-fleet")

DESCRIPTION = """\
A fleet of kind clusters for fleetcheck (nightly CI).

  up      create N clusters (the last with a worker node) with distinct pod and service
          subnets, route pods and ClusterIPs between them, write a kubeconfig with contexts
          kind-<cluster>, and make every cluster's CoreDNS serve each peer's services as
          <service>.<namespace>.svc.<peer context>.local; reuses clusters that exist
  down    delete every kind cluster of the fleet (--name-prefix) and the kubeconfigs
  configs write the kind cluster configs only (no Docker needed)

Then: python -m pytest suites --kubeconfig=build/kind-fleet/kubeconfig --contexts='kind-*'
      --expectations=scripts/kind-fleet.expectations.yaml
Exit codes: 0 ok, 1 a command failed, 2 bad arguments or a missing tool.
"""


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="kind-fleet", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "configs"])
    p.add_argument("--clusters", type=int, default=3, help="number of clusters (default 3)")
    p.add_argument("--name-prefix", default="kind-fc",
                   help="context prefix; clusters are <prefix without kind->-a, -b, ... "
                        "(default kind-fc: clusters fc-a.., contexts kind-fc-a..)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE,
                   help=f"kind configs and per-cluster kubeconfigs (default {DEFAULT_STATE})")
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="the fleet's kubeconfig to write (default <state-dir>/kubeconfig)")
    p.add_argument("--node-image", default=None,
                   help="kindest/node image (default: the one pinned by the kind release)")
    p.add_argument("--wait", default="180s", help="kind create --wait (default 180s)")
    p.add_argument("--out", type=Path, default=None,
                   help="configs: directory for the kind configs (default <state-dir>)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parser().parse_args(argv)
    out = args.kubeconfig or args.state_dir / "kubeconfig"
    try:
        if args.command == "down":
            runner.down(args.name_prefix, args.state_dir, out)
            return 0
        reserved: list[str] = []
        if args.command == "up":
            runner.need_tools("kind", "docker", "kubectl")
            reserved = runner.docker_reserved()
        plans = fleet_plan(args.clusters, args.name_prefix, reserved=reserved)
        if args.command == "configs":
            target = args.out or args.state_dir
            target.mkdir(parents=True, exist_ok=True)
            for plan in plans:
                path = target / f"{plan.name}.kind.yaml"
                path.write_text(kind_config(plan, args.node_image))
                print(path)
            return 0
        runner.up(plans, args.state_dir, out, args.node_image, args.wait)
        print(out)
        return 0
    except PlanError as exc:
        print(f"kind-fleet: {exc}", file=sys.stderr)
        return 2
    except (runner.RunError, MergeError) as exc:
        print(f"kind-fleet: {exc}", file=sys.stderr)
        return 2 if "not on PATH" in str(exc) else 1
