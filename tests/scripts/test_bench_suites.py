"""Pure logic of scripts/bench-suites (scripts/bench/benchlib.py): parsing, medians, ratios,
leak verdicts, generated kubeconfig and expectations, tables.  No lab needed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_benchlib():
    """scripts/bench/benchlib.py, loaded by path: putting scripts/bench on sys.path for the
    whole session would change what later in-process pytest runs import."""
    spec = importlib.util.spec_from_file_location("fc_benchlib", REPO / "scripts/bench/benchlib.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fc_benchlib"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bl = _load_benchlib()


def test_parse_pytest_seconds_takes_the_summary_line() -> None:
    out = "fleetcheck: [lab-a] verdicts final after 42s\n" \
          "========= 20 passed, 8 skipped in 45.67s (0:00:45) =========\n"
    assert bl.parse_pytest_seconds(out) == 45.67
    assert bl.parse_pytest_seconds("3 failed, 1 passed in 1.20s") == 1.2
    assert bl.parse_pytest_seconds("no summary here") is None


def test_parse_collected() -> None:
    assert bl.parse_collected("a\n350 tests collected in 1.23s\n") == (350, 1.23)
    assert bl.parse_collected("7/30 tests collected (23 deselected) in 0.50s") == (7, 0.5)
    assert bl.parse_collected("1 test collected in 0.10s") == (1, 0.1)
    assert bl.parse_collected("ERROR: usage") == (None, None)


def test_results_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    assert bl.read_results(path) is None
    path.write_text("{not json")
    assert bl.read_results(path) is None
    path.write_text(json.dumps({"summary": {"conformant": 3, "skipped": 1},
                                "started": "2026-01-01T10:00:00+00:00",
                                "finished": "2026-01-01T10:00:42+00:00"}))
    data = bl.read_results(path)
    assert bl.verdict_counts(data) == {"conformant": 3, "non-conformant": 0, "unknown": 0,
                                       "skipped": 1}
    assert bl.session_seconds(data) == 42.0
    assert bl.session_seconds({}) is None


def test_slowest_preflight_per_kind() -> None:
    data = {"contexts": [{"name": "dead-hang-00", "preflight_s": 9.1},
                         {"name": "dead-hang-01", "preflight_s": 3.2},
                         {"name": "dead-refused-00", "preflight_s": 0.01},
                         {"name": "bench-00", "preflight_s": 0.2},
                         {"name": "x", "preflight_s": None}]}
    assert bl.slowest_preflight(data) == {"dead-hang": 9.1, "dead-refused": 0.01, "bench": 0.2}
    assert bl.slowest_preflight({}) is None


def test_check_seconds_and_failing() -> None:
    data = {"checks": [
        {"check_id": "connectivity/api-ready", "context": "dead-hang-00", "verdict": "unknown",
         "duration_s": 1.5, "contexts": ["dead-hang-00"]},
        {"check_id": "rbac/identity", "context": "dead-hang-01", "verdict": "unknown",
         "duration_s": 0.5, "contexts": ["dead-hang-01"]},
        {"check_id": "dns/cross-cluster", "context": "lab-a->lab-b", "verdict": "conformant",
         "duration_s": 2.0, "contexts": ["lab-a", "lab-b"]}]}
    assert bl.check_seconds(data) == {"dead-hang": 2.0, "lab": 2.0}
    assert bl.failing_checks(data) == ["connectivity/api-ready [dead-hang-00]: unknown",
                                       "rbac/identity [dead-hang-01]: unknown"]
    assert bl.check_seconds({}) is None


def test_series_medians_ignore_failed_runs() -> None:
    s = bl.Series("x", [bl.RunResult("a", wall_s=10), bl.RunResult("b", wall_s=30),
                        bl.RunResult("c", wall_s=20), bl.RunResult("d", wall_s=1, error="boom")])
    assert s.med("wall_s") == 20
    assert s.med("pytest_s") is None
    assert len(s.ok_runs) == 3
    assert bl.median([None, 2.0, 4.0]) == 3.0
    assert bl.median([]) is None


def _ratios(**m: float) -> dict[str, bl.Ratio]:
    return {r.name: r for r in bl.compute_ratios(m, connect_timeout=3.0)}


def test_ratios_pass_and_miss() -> None:
    r = _ratios(one_serial=40, three_serial=50, three_xdist=60, main_pytest=90, floor3=20,
                collect50=1.5, wall10=10, wall50=30, dead20=14, live3=10)
    assert r["three/one serial"].value == pytest.approx(1.25) and r["three/one serial"].passed
    assert r["three/one xdist"].value == pytest.approx(1.5) and r["three/one xdist"].passed is False
    assert r["main job pytest / floor(3 clusters)"].value == pytest.approx(4.5)
    assert r["main job pytest / floor(3 clusters)"].passed is False
    assert r["collection(50)"].passed
    assert r["wall(50)/wall(10)"].value == pytest.approx(3.0) and r["wall(50)/wall(10)"].passed
    assert r["dead20 - live3"].value == pytest.approx(4.0)
    assert r["dead20 - live3"].passed is False
    assert r["dead20 - live3"].line().startswith("MISS  dead20 - live3 = 4.00 s")


def test_ratios_not_measured_are_na() -> None:
    r = _ratios(one_serial=40)
    assert r["three/one serial"].value is None and r["three/one serial"].passed is None
    assert r["three/one serial"].line().startswith("n/a   three/one serial = n/a (goal <= 1.3)")
    assert _ratios(three_serial=5, one_serial=0)["three/one serial"].value is None


def test_sublinear() -> None:
    assert bl.sublinear(10, 49) is True
    assert bl.sublinear(10, 50) is False
    assert bl.sublinear(None, 50) is None


def test_leak_growth_and_verdict() -> None:
    def recs(start: int, finish: int, fds: tuple[int, int]) -> list[dict]:
        return [{"phase": "sessionstart", "threads": start, "fds": fds[0]},
                {"phase": "sessionfinish", "threads": finish, "fds": fds[1]}]

    small = bl.leak_growth(recs(1, 3, (10, 12)))
    assert small["threads_growth"] == 2 and small["fds_growth"] == 2
    flat = bl.leak_growth(recs(1, 4, (10, 13)))
    leaky = bl.leak_growth(recs(1, 45, (10, 95)))
    assert "threads: +2 at 10, +3 at 50" in bl.leak_verdict(small, flat, 10, 50)
    assert "GROWS" not in bl.leak_verdict(small, flat, 10, 50)
    verdict = bl.leak_verdict(small, leaky, 10, 50)
    assert verdict.count("GROWS WITH CONTEXTS") == 2
    assert bl.leak_growth([{"phase": "sessionstart", "threads": 1, "fds": 1}]) is None
    assert bl.leak_verdict(None, leaky, 10, 50).startswith("n/a")


def test_context_plan_is_round_robin_with_distinct_identities() -> None:
    plan = bl.context_plan(50, ["lab-a", "lab-b", "lab-c"])
    assert len(plan) == 50
    assert plan[0] == ("bench-00", "lab-a", "fc-bench-0")
    assert plan[1] == ("bench-01", "lab-b", "fc-bench-0")
    assert plan[3] == ("bench-03", "lab-a", "fc-bench-1")
    assert plan[49] == ("bench-49", "lab-b", "fc-bench-16")
    assert len({(c, sa) for _, c, sa in plan}) == 50  # every context its own identity
    per = bl.accounts_per_cluster(plan)
    assert [len(per[c]) for c in ("lab-a", "lab-b", "lab-c")] == [17, 17, 16]
    assert bl.context_plan(150, ["x"])[100][0] == "bench-100"


def test_bench_kubeconfig_loads_with_fleetcheck(tmp_path: Path) -> None:
    from fleetcheck.core import kubeconfig as kc

    clusters = {c: {"server": f"https://127.0.0.1:{26443 + i}",
                    "certificate-authority-data": "Q0E="}
                for i, c in enumerate(["lab-a", "lab-b", "lab-c"])}
    plan = bl.context_plan(10, list(clusters))
    tokens = {(c, sa): f"tok-{c}-{sa}" for _, c, sa in plan}
    dead = bl.dead_plan([40001, 40002], [40003])
    cfg = bl.bench_kubeconfig(clusters, plan, tokens, dead, dead_ca="Q0E=")
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    loaded = kc.load([path])
    assert loaded.select(["bench-*"]) == [f"bench-{i:02d}" for i in range(10)]
    assert loaded.select(["dead-*"]) == ["dead-refused-00", "dead-refused-01", "dead-hang-00"]
    ctx = loaded.contexts["bench-04"]
    assert loaded.clusters[ctx["cluster"]]["server"] == "https://127.0.0.1:26444"
    assert loaded.users[ctx["user"]]["token"] == "tok-lab-b-fc-bench-1"
    # contexts of one API server and CA are one cluster for fleetcheck
    assert loaded.cluster_key("bench-00") == loaded.cluster_key("bench-03")
    assert loaded.cluster_key("bench-00") != loaded.cluster_key("bench-01")
    assert all(s.startswith("https://127.0.0.1:") for _, s in dead)


def test_split_dead() -> None:
    assert bl.split_dead(17, 6) == (11, 6)
    assert bl.split_dead(3, 10) == (0, 3)
    assert bl.split_dead(5, -1) == (5, 0)


def test_bench_expectations_validate() -> None:
    from fleetcheck.run import expectations as ex

    data = bl.bench_expectations()
    ex.validate(data)
    rbac = data["defaults"]["rbac"]
    assert rbac["identity"] == "system:serviceaccount:fc-bench:fc-bench-*"
    assert {"verb": "list", "resource": "secrets"} in rbac["deny"]


def test_format_table_and_rows() -> None:
    table = bl.format_table(["run", "wall s"], [["one", "1.0"], ["three serial", "12.5"]])
    lines = table.splitlines()
    assert lines[0].startswith("run") and lines[0].endswith("wall s")
    assert lines[2] == "one              1.0"
    assert lines[3] == "three serial    12.5"
    s = bl.Series("three", [bl.RunResult("r1", wall_s=12.0, pytest_s=10.0,
                                         counts={"conformant": 5, "skipped": 1},
                                         tree_rss_kib=300 * 1024, pods={"lab-a": 3},
                                         cpu_s=7.5),
                            bl.RunResult("r2", error="no results.json (exit 4)")])
    row = bl.series_rows([s])[0]
    assert row[:5] == ["three", "1/2", "12.0", "10.0", "7.5"]
    assert row[6] == "5/0/0/1" and row[7] == "300" and row[9] == "lab-a:3"
    assert row[10] == "no results.json (exit 4)"
    assert len(row) == len(bl.SERIES_HEADERS)


def test_help_runs_without_the_lab() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench-suites"), "--help"],
                         capture_output=True, text=True, check=True)
    assert "--only" in out.stdout and "kubernetes Python client" in out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "bench-suites"), "--only",
                          "nope"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "parts are" in bad.stderr
