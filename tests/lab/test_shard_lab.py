"""Sharding against the lab: the connectivity and DNS suites over lab-* run once unsharded
and as three concurrent shards of one run id; fleetcheck-merge joins the shards into exactly
the unsharded verdicts, and no probe namespace of either run is left behind (each shard
deleted only its own)."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from fclab import CLUSTERS, LAB_IMAGES, REPO, pytest_cmd, results, run, wait_run_gone
from fleetcheck.cli import merge as merge_cli

SUITES = ["suites/test_connectivity.py", "suites/test_dns.py"]
EXPECTATIONS = REPO / "scripts" / "lab" / "expectations.yaml"
SHARDS = 3


def _args(kubeconfig: Path, run_id: str, report: Path, *extra: str) -> list[str]:
    return [*SUITES, "--contexts=lab-*", f"--kubeconfig={kubeconfig}",
            f"--expectations={EXPECTATIONS}", f"--report-dir={report}", f"--run-id={run_id}",
            *LAB_IMAGES, "-q", *extra]


def _verdicts(report: Path) -> set[tuple[str, tuple[str, ...], str]]:
    return {(c["check_id"], tuple(c["contexts"]), c["verdict"])
            for c in results(report)["checks"]}


def test_three_concurrent_shards_merge_to_the_unsharded_verdicts(
        lab_kubeconfig: Path, tmp_path: Path) -> None:
    run_id = f"fc-shlab-{secrets.token_hex(3)}"
    whole_id = f"{run_id}-u"
    whole = tmp_path / "whole"
    proc = run(_args(lab_kubeconfig, whole_id, whole), cwd=REPO, timeout=600)
    assert (whole / "results.json").is_file(), (proc.stdout + proc.stderr)[-3000:]
    expected = _verdicts(whole)
    assert {check for check, _, _ in expected} >= {"connectivity/api-ready",
                                                    "connectivity/cross-cluster-pod"}

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    dirs = [tmp_path / f"shard-{k}" for k in range(1, SHARDS + 1)]
    procs = [subprocess.Popen(
        pytest_cmd(*_args(lab_kubeconfig, run_id, d, f"--shard={k}/{SHARDS}")), cwd=REPO,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k, d in enumerate(dirs, start=1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for k, (p, out) in enumerate(zip(procs, outputs, strict=True), start=1):
        assert p.returncode in (0, 1, 6), f"shard {k}: {out[-3000:]}"
        data = results(dirs[k - 1])
        assert data["shard"]["index"] == k and data["run_id"] == run_id
        # a shard deletes its own probe namespaces only
        for ctx, cleanup in data["cleanup"].items():
            assert not cleanup["error"], (k, ctx, cleanup)
            for name in cleanup["deleted"]:
                assert name.startswith(f"fleetcheck-{run_id}-s{k}"), (k, ctx, name)

    out = tmp_path / "merged"
    code = merge_cli.main(["--out", str(out), *map(str, dirs)])
    assert code == proc.returncode, proc.stdout[-2000:]
    assert _verdicts(out) == expected
    assert results(out)["summary"] == results(whole)["summary"]

    labels = [whole_id, run_id, *(f"{run_id}-s{k}" for k in range(1, SHARDS + 1))]
    for label in labels:
        left = wait_run_gone(lab_kubeconfig, label, CLUSTERS)
        assert not left, f"run {label} left objects behind: {left}"
