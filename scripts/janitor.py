#!/usr/bin/env python3
"""Delete fleetcheck probe namespaces left behind (a run killed with SIGKILL, a lost CI job).

Only namespaces that fleetcheck created are ever touched: labelled
app.kubernetes.io/managed-by=fleetcheck, named fleetcheck-<run-id>[-<suffix>] after their
fleetcheck.io/run-id label, and either past their fleetcheck.io/expires-at (--all-expired) or
of the given run (--run-id).  Only on the contexts selected with --contexts.

Examples:
  scripts/janitor.py --contexts 'prod-*' --all-expired --dry-run
  scripts/janitor.py --kubeconfig=lab.yaml --contexts lab-a --run-id fc-20250101-120000-ab12
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import fleetcheck  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

from fleetcheck import kubeconfig as kubeconfig_mod
from fleetcheck.options import RUN_ID_RE
from fleetcheck.preflight import describe_error
from fleetcheck.probes import (
    EXPIRES_AT,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUN_ID_LABEL,
    delete_namespace,
    expiry_of,
    is_run_namespace_name,
    list_probe_namespaces,
)
from fleetcheck.scrub import Scrubber
from fleetcheck.targets import Target, make_target, prepare_credentials


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="janitor.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", action="append", metavar="PATH",
                        help="kubeconfig file (repeatable); default: KUBECONFIG, ~/.kube/config")
    parser.add_argument("--contexts", action="append", required=True, metavar="GLOB[,GLOB...]",
                        help="contexts to clean up, as globs (repeatable, comma-separated)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all-expired", action="store_true",
                      help="delete every probe namespace whose expires-at has passed")
    mode.add_argument("--run-id", metavar="ID",
                      help="delete the probe namespaces of this run, expired or not")
    parser.add_argument("--dry-run", action="store_true",
                        help="only say what would be deleted")
    parser.add_argument("--connect-timeout", type=float, default=3.0, metavar="SECONDS")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if args.run_id is not None and not RUN_ID_RE.match(args.run_id):
        parser.error(f"--run-id {args.run_id!r} is not a fleetcheck run id")
    return args


def clean_context(target: Target, args: argparse.Namespace, now: dt.datetime) -> tuple[list[str], bool]:
    """Returns (report lines, ok)."""
    lines: list[str] = []
    if target.api_client is None:
        return [f"{target.name}: cannot build a client: {target.unreachable}"], False
    timeout = (args.connect_timeout, args.request_timeout)
    try:
        namespaces = list_probe_namespaces(target.api_client, args.run_id, timeout)
    except Exception as exc:  # noqa: BLE001 - report and go on with the other contexts
        status = getattr(exc, "status", None)
        reason = f"HTTP {status} {getattr(exc, 'reason', '')}" if status else describe_error(
            exc, target.server)
        return [f"{target.name}: cannot list namespaces: {reason}"], False
    ok = True
    for ns in namespaces:
        name = ns.metadata.name
        labels = ns.metadata.labels or {}
        run_id = labels.get(RUN_ID_LABEL, "")
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not run_id or \
                not is_run_namespace_name(name, run_id):
            lines.append(f"{target.name}: skipping {name}: not a fleetcheck probe namespace")
            continue
        expires = expiry_of(ns)
        if args.run_id is None:
            if expires is None:
                lines.append(f"{target.name}: skipping {name}: no valid {EXPIRES_AT} annotation")
                continue
            if expires > now:
                lines.append(f"{target.name}: keeping {name} (run {run_id}, expires "
                             f"{expires.isoformat()})")
                continue
        why = f"run {run_id}" + (f", expired {expires.isoformat()}" if expires and expires <= now
                                 else "")
        if ns.status is not None and ns.status.phase == "Terminating":
            lines.append(f"{target.name}: {name} is already being deleted ({why})")
            continue
        if args.dry_run:
            lines.append(f"{target.name}: would delete {name} ({why})")
            continue
        try:
            delete_namespace(target.api_client, name, timeout)
            lines.append(f"{target.name}: deleted {name} ({why})")
        except Exception as exc:  # noqa: BLE001
            ok = False
            lines.append(f"{target.name}: failed to delete {name}: "
                         f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', exc)}")
    if not namespaces:
        lines.append(f"{target.name}: no fleetcheck probe namespaces"
                     + (f" of run {args.run_id}" if args.run_id else ""))
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        kc = kubeconfig_mod.load_default(args.kubeconfig)
        names = kc.select(args.contexts)
        for name in names:
            kc.validate_context(name)
    except kubeconfig_mod.KubeconfigError as exc:
        print(f"janitor: {exc}", file=sys.stderr)
        return 2
    scrub = Scrubber(kc.secret_values())
    problems = prepare_credentials(kc, names, args.connect_timeout)
    for override in kc.user_overrides.values():
        scrub.add(str(v) for v in override.values())
    targets = [make_target(kc, n, connect_timeout=args.connect_timeout,
                           request_timeout=args.request_timeout) for n in names]
    for target in targets:
        if target.name in problems:
            target.unreachable = problems[target.name]
    now = dt.datetime.now(dt.UTC)
    all_ok = True
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        for lines, ok in pool.map(lambda t: clean_context(t, args, now), targets):
            all_ok &= ok
            for line in lines:
                print(scrub(line))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
