"""Pure logic of scripts/bench-suites: parsing pytest output and results.json, medians and
ratios, the kubeconfig and expectations the 50-context part generates, table formatting.

Nothing here touches a cluster, a process or the network (tests/scripts/test_bench_suites.py).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("conformant", "non-conformant", "unknown", "skipped")
#: the API-only checks of the 50-context and dead-context parts, as a pytest -k expression
API_ONLY_K = ("api_ready or version_skew or nodes_ready or control_plane or identity or "
              "expected_allow or expected_deny")
BENCH_LABEL = {"app.kubernetes.io/managed-by": "fleetcheck-bench"}
SA_NAMESPACE = "fc-bench"
SA_PREFIX = "fc-bench-"
CONTEXT_PREFIX = "bench-"

# "==== 12 passed, 3 skipped in 45.67s (0:00:45) ====" and "12 passed in 1.20s" under -q
_PYTEST_SECONDS = re.compile(r"\bin (\d+(?:\.\d+)?)s\b")
# "350 tests collected in 1.23s" (-q) or "collected 350 items" + "... in 1.23s"
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected(?: \(\d+ deselected\))? in "
                        r"(\d+(?:\.\d+)?)s")


@dataclass
class RunResult:
    """One measured process: a pytest run or a collection."""

    label: str
    rc: int | None = None
    wall_s: float | None = None
    #: pytest's own "in N.NNs" (session time), else from results.json started/finished
    pytest_s: float | None = None
    #: "N tests collected in X s" of --collect-only
    collected: int | None = None
    collect_s: float | None = None
    counts: dict[str, int] | None = None
    #: largest RSS of any single process of the tree (wait4 rusage), KiB
    max_rss_kib: int | None = None
    #: largest sum of RSS over the process tree, sampled every 0.25 s, KiB
    tree_rss_kib: int | None = None
    #: CPU seconds (user + system) of the process and the children it waited for (wait4)
    cpu_s: float | None = None
    #: pods created per cluster in the run's probe namespaces (cluster -> count)
    pods: dict[str, int] | None = None
    pods_ready: dict[str, int] | None = None
    #: slowest preflight per kind of context (name up to the last '-'): kind -> seconds
    preflight_s: dict[str, float] | None = None
    #: seconds spent in checks (set-up, call, teardown) per kind of context
    check_s: dict[str, float] | None = None
    #: non-conformant and unknown checks: "check-id [context]"
    failing: list[str] | None = None
    #: thread and fd counts of the pytest process (fcbench_leakprobe), phase -> values
    leak: dict[str, Any] | None = None
    error: str | None = None
    tail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_pytest_seconds(output: str) -> float | None:
    """Session time from pytest's last summary line ("... in 45.67s ...")."""
    for line in reversed(output.splitlines()):
        if ("passed" in line or "failed" in line or "error" in line or "skipped" in line
                or "no tests ran" in line or "deselected" in line or "collected" in line):
            match = _PYTEST_SECONDS.search(line)
            if match:
                return float(match.group(1))
    return None


def parse_collected(output: str) -> tuple[int | None, float | None]:
    """(tests collected, collection seconds) of ``pytest --collect-only -q``."""
    for line in reversed(output.splitlines()):
        match = _COLLECTED.search(line)
        if match:
            return int(match.group(1)), float(match.group(2))
    return None, None


def read_results(path: Path) -> dict[str, Any] | None:
    """results.json as a dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("summary"), dict) else None


def verdict_counts(results: Mapping[str, Any]) -> dict[str, int]:
    summary = results.get("summary") or {}
    return {v: int(summary.get(v, 0)) for v in VERDICTS}


def slowest_preflight(results: Mapping[str, Any]) -> dict[str, float] | None:
    """Slowest preflight per kind of context (``dead-hang-03`` -> ``dead-hang``) from
    results.json ``contexts[].preflight_s``."""
    out: dict[str, float] = {}
    for ctx in results.get("contexts") or []:
        seconds = ctx.get("preflight_s") if isinstance(ctx, dict) else None
        if seconds is None:
            continue
        kind = _kind(ctx.get("name"))
        out[kind] = max(out.get(kind, 0.0), float(seconds))
    return out or None


def _kind(context: Any) -> str:
    return str(context or "?").rsplit("-", 1)[0]


def check_seconds(results: Mapping[str, Any]) -> dict[str, float] | None:
    """Sum of ``duration_s`` of results.json checks per kind of context (pairs count for
    their source)."""
    out: dict[str, float] = {}
    for rec in results.get("checks") or []:
        contexts = rec.get("contexts") or [rec.get("context")]
        kind = _kind(contexts[0] if contexts else None)
        out[kind] = round(out.get(kind, 0.0) + float(rec.get("duration_s") or 0.0), 3)
    return out or None


def failing_checks(results: Mapping[str, Any]) -> list[str]:
    """"check-id [context]: verdict" of every non-conformant or unknown check."""
    return [f"{r.get('check_id')} [{r.get('context')}]: {r.get('verdict')}"
            for r in results.get("checks") or []
            if r.get("verdict") in ("non-conformant", "unknown")]


def session_seconds(results: Mapping[str, Any]) -> float | None:
    """finished - started of results.json (second resolution), None when absent."""
    import datetime as dt

    try:
        start = dt.datetime.fromisoformat(results["started"])
        end = dt.datetime.fromisoformat(results["finished"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class Series:
    """The rounds of one measured configuration, with medians."""

    label: str
    runs: list[RunResult] = field(default_factory=list)

    def med(self, attr: str) -> float | None:
        return median(getattr(r, attr) for r in self.runs if r.ok)

    @property
    def ok_runs(self) -> list[RunResult]:
        return [r for r in self.runs if r.ok]

    def counts(self) -> dict[str, int] | None:
        """Verdict counts of the last good round (they should not vary between rounds)."""
        good = [r.counts for r in self.runs if r.counts is not None]
        return good[-1] if good else None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "runs": [r.to_dict() for r in self.runs],
                "median": {a: self.med(a) for a in ("wall_s", "pytest_s", "collect_s",
                                                    "max_rss_kib", "tree_rss_kib", "cpu_s")}}


# --- ratios ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    name: str
    value: float | None
    goal: str
    passed: bool | None  # None: not measured
    unit: str = ""
    note: str = ""

    def line(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        state = "n/a " if self.passed is None else ("PASS" if self.passed else "MISS")
        goal = f" (goal {self.goal})" if self.goal else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"{state}  {self.name} = {value}{goal}{note}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def ratio_le(name: str, value: float | None, limit: float | None, goal: str,
             unit: str = "", note: str = "") -> Ratio:
    """A ratio that passes when ``value <= limit`` (no limit: informational)."""
    passed = None if value is None or limit is None else value <= limit
    return Ratio(name, value, goal, passed, unit, note)


def compute_ratios(m: Mapping[str, float | None], connect_timeout: float) -> list[Ratio]:
    """The ratios block from the medians ``m`` (keys below; a missing one gives n/a).

    ``one_serial``, ``three_serial``, ``three_xdist``, ``main_pytest`` (pytest seconds of the
    main job's selection), ``floor3``, ``collect50`` (pytest's collection seconds),
    ``collect50_wall``, ``wall10``, ``wall50``, ``dead20``, ``live3``."""
    g = m.get
    out = [
        ratio_le("three/one serial", _div(g("three_serial"), g("one_serial")), 1.3, "<= 1.3"),
        ratio_le("three/one xdist", _div(g("three_xdist"), g("one_serial")), 1.3, "<= 1.3",
                 note="xdist three-cluster wall / serial one-cluster wall"),
        ratio_le("main job pytest / floor(3 clusters)", _div(g("main_pytest"), g("floor3")),
                 3.0, "<= 3"),
        ratio_le("collection(50)", g("collect50"), 2.0, "<= 2", unit=" s",
                 note="pytest's collection time" + (
                     f"; process wall {g('collect50_wall'):.2f} s"
                     if g("collect50_wall") is not None else "")),
        ratio_le("wall(50)/wall(10)", _div(g("wall50"), g("wall10")), 5.0,
                 "< 5: sub-linear growth"),
    ]
    dead, live = g("dead20"), g("live3")
    diff = None if dead is None or live is None else dead - live
    out.append(ratio_le("dead20 - live3", diff, connect_timeout,
                        f"<= connect timeout {connect_timeout:g} s", unit=" s"))
    return out


def sublinear(wall10: float | None, wall50: float | None) -> bool | None:
    ratio = _div(wall50, wall10)
    return None if ratio is None else ratio < 5.0


# --- thread / fd leak -------------------------------------------------------------------------

def leak_growth(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """From fcbench_leakprobe records of one pytest process: thread and fd counts at session
    start and finish, and the growth.  None without both phases."""
    phases = {r.get("phase"): r for r in records}
    start, finish = phases.get("sessionstart"), phases.get("sessionfinish")
    if not start or not finish:
        return None
    after = phases.get("unconfigure") or {}
    return {
        "threads_start": start["threads"], "threads_finish": finish["threads"],
        "threads_growth": finish["threads"] - start["threads"],
        "fds_start": start["fds"], "fds_finish": finish["fds"],
        "fds_growth": finish["fds"] - start["fds"],
        "thread_names_finish": finish.get("thread_names", {}),
        "threads_unconfigure": after.get("threads"), "fds_unconfigure": after.get("fds"),
    }


def leak_verdict(small: Mapping[str, Any] | None, large: Mapping[str, Any] | None,
                 n_small: int, n_large: int, per_context: float = 0.5) -> str:
    """Whether thread/fd growth scales with the number of contexts: a leak of about one thread
    or fd per context shows as growth(large) - growth(small) ~ n_large - n_small."""
    if not small or not large:
        return "n/a (no leak probe data)"
    parts = []
    for what in ("threads", "fds"):
        extra = large[f"{what}_growth"] - small[f"{what}_growth"]
        per = extra / max(1, n_large - n_small)
        state = "GROWS WITH CONTEXTS" if per >= per_context else "flat"
        parts.append(f"{what}: +{small[f'{what}_growth']} at {n_small}, "
                     f"+{large[f'{what}_growth']} at {n_large} ({per:+.2f}/context: {state})")
    return "; ".join(parts)


# --- generated kubeconfig and expectations ----------------------------------------------------

def context_plan(n: int, clusters: Sequence[str]) -> list[tuple[str, str, str]]:
    """(context, cluster, service account) for ``n`` contexts round-robin over ``clusters``:
    bench-00 -> clusters[0]/fc-bench-0, bench-01 -> clusters[1]/fc-bench-0, ...  Every context
    has its own identity (another ServiceAccount or another cluster)."""
    width = max(2, len(str(n - 1)))
    return [(f"{CONTEXT_PREFIX}{i:0{width}d}", clusters[i % len(clusters)],
             f"{SA_PREFIX}{i // len(clusters)}") for i in range(n)]


def accounts_per_cluster(plan: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, cluster, sa in plan:
        out.setdefault(cluster, [])
        if sa not in out[cluster]:
            out[cluster].append(sa)
    return out


def bench_kubeconfig(
    clusters: Mapping[str, Mapping[str, str]],
    plan: Sequence[tuple[str, str, str]],
    tokens: Mapping[tuple[str, str], str],
    dead: Sequence[tuple[str, str]] = (),
    dead_ca: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig dict: one context, cluster reference and token user per ``plan`` entry
    (``clusters``: name -> {"server", "certificate-authority-data"}; ``tokens``: (cluster,
    service account) -> token), plus ``dead`` contexts (name, server URL) with a token that
    no server issued."""
    cfg: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                           "clusters": [], "users": [], "contexts": []}
    for name, entry in clusters.items():
        cfg["clusters"].append({"name": f"{CONTEXT_PREFIX}{name}", "cluster": {
            "server": entry["server"],
            "certificate-authority-data": entry["certificate-authority-data"]}})
    for context, cluster, sa in plan:
        cfg["users"].append({"name": context, "user": {"token": tokens[(cluster, sa)]}})
        cfg["contexts"].append({"name": context, "context": {
            "cluster": f"{CONTEXT_PREFIX}{cluster}", "user": context}})
    for name, server in dead:
        cluster: dict[str, Any] = {"server": server}
        if dead_ca:
            cluster["certificate-authority-data"] = dead_ca
        cfg["clusters"].append({"name": name, "cluster": cluster})
        cfg["users"].append({"name": name, "user": {"token": "fc-bench-no-such-token"}})
        cfg["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    if plan:
        cfg["current-context"] = plan[0][0]
    return cfg


def dead_plan(refused_ports: Sequence[int], hanging_ports: Sequence[int]) -> list[tuple[str, str]]:
    """(context, server) of dead contexts: ports where nothing listens, then ports of a
    listener that accepts and never answers.  Loopback only."""
    out = [(f"dead-refused-{i:02d}", f"https://127.0.0.1:{p}") for i, p in enumerate(refused_ports)]
    out += [(f"dead-hang-{i:02d}", f"https://127.0.0.1:{p}") for i, p in enumerate(hanging_ports)]
    return out


def split_dead(total: int, hanging: int) -> tuple[int, int]:
    """(refused, hanging) counts for ``total`` dead contexts, ``hanging`` of them hanging."""
    hanging = max(0, min(hanging, total))
    return total - hanging, hanging


def bench_expectations(sa_namespace: str = SA_NAMESPACE) -> dict[str, Any]:
    """Expectations for the generated ServiceAccount identities: everything they are granted
    (ClusterRole view, plus get/list nodes and leases for nodes-ready and control-plane) is
    expected allowed, and what they lack denied, so a conformant lab gives conformant
    verdicts."""
    return {
        "version": 1,
        "fleet": {"min_version": "1.25", "max_minor_skew": 1},
        "defaults": {
            "connectivity": {"require_control_plane_leases": True},
            "rbac": {
                "identity": f"system:serviceaccount:{sa_namespace}:{SA_PREFIX}*",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}",
                           "system:authenticated"],
                "allow": [
                    {"verb": "list", "resource": "pods"},
                    {"verb": "get", "resource": "pods", "namespace": "kube-system"},
                    {"verb": "list", "resource": "nodes"},
                    {"verb": "get", "resource": "leases", "group": "coordination.k8s.io",
                     "namespace": "kube-system"},
                ],
                "deny": [
                    {"verb": "create", "resource": "pods", "namespace": "default"},
                    {"verb": "list", "resource": "secrets"},
                    {"verb": "delete", "resource": "nodes"},
                    {"verb": "create", "resource": "clusterrolebindings"},
                ],
            },
        },
    }


def context_arg(names: Sequence[str]) -> str:
    return "--contexts=" + ",".join(names)


# --- output -----------------------------------------------------------------------------------

def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def fmt_counts(counts: Mapping[str, int] | None) -> str:
    if counts is None:
        return "-"
    return "/".join(str(counts.get(v, 0)) for v in VERDICTS)


def fmt_pods(pods: Mapping[str, int] | None) -> str:
    if not pods:
        return "-"
    return " ".join(f"{k}:{v}" for k, v in sorted(pods.items()))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def series_rows(series: Sequence[Series]) -> list[list[str]]:
    rows = []
    for s in series:
        bad = [r for r in s.runs if not r.ok]
        rows.append([
            s.label, f"{len(s.ok_runs)}/{len(s.runs)}", fmt_s(s.med("wall_s")),
            fmt_s(s.med("pytest_s")), fmt_s(s.med("cpu_s")), fmt_s(s.med("collect_s")),
            fmt_counts(s.counts()),
            fmt_mib(s.med("tree_rss_kib")), fmt_mib(s.med("max_rss_kib")),
            fmt_pods(s.runs[0].pods if s.runs else None),
            "; ".join(sorted({r.error or "" for r in bad}))[:60] or "",
        ])
    return rows


SERIES_HEADERS = ["run", "ok", "wall s", "pytest s", "CPU s", "collect s",
                  "conf/non/unk/skip", "tree MiB", "proc MiB", "pods created", "problems"]
