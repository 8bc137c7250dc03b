"""Sharding (``--shard K/N``) and ``fleetcheck-merge``, without a cluster: contexts point at
closed ports (each its own cluster, except aliases sharing a server), so checks that need the
API server are ``unknown`` and the others exercise verdicts, skips and exit codes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.cli import merge as merge_cli
from fleetcheck.core import shard
from fleetcheck.report import merge
from fleetcheck.report import results as report

PLUGIN = ("-p", "fleetcheck.plugin")

CHECKS = '''
import pytest

@pytest.mark.check("connectivity/api-ready")
def test_api_ready(target):
    pass

@pytest.mark.check("x/skipped")
@pytest.mark.skip(reason="nothing to measure here")
def test_skipped(target):
    pass

@pytest.mark.check("x/pair")
@pytest.mark.requires_clusters(2)
def test_pair(pair):
    pass

@pytest.mark.check("x/fleet")
def test_fleet(fleet, evidence):
    evidence.text("probe identity", fleet.probe_run_id)

@pytest.mark.check("x/bad")
def test_bad(fleet, evidence):
    evidence.text("cluster said", "<script>alert('x')</script> & more")
    assert False, "expected <b>1</b>; observed 2"

def test_not_a_check():
    pass
'''


def fleet_kubeconfig(names: list[str], aliases: dict[str, str] | None = None) -> dict:
    """Contexts on closed ports, one cluster each; ``aliases`` maps a context to the context
    whose server (cluster) it shares."""
    aliases = aliases or {}
    data = kubeconfig_dict([n for n in names if n not in aliases])
    servers = {c["name"].removesuffix("-cluster"): c["cluster"]["server"]
               for c in data["clusters"]}
    for alias, of in aliases.items():
        data["clusters"].append({"name": f"{alias}-cluster", "cluster": {"server": servers[of]}})
        data["users"].append({"name": f"{alias}-user", "user": {"token": "fake-token-alias-1"}})
        data["contexts"].append({"name": alias, "context": {"cluster": f"{alias}-cluster",
                                                            "user": f"{alias}-user"}})
    order = {n: i for i, n in enumerate(names)}
    data["contexts"].sort(key=lambda c: order[c["name"]])
    return data


@pytest.fixture(autouse=True)
def _isolated_env(isolated_pytester: pytest.Pytester) -> None:
    """Every test here runs pytester in isolation (tests/conftest.py)."""


@pytest.fixture
def fleet(pytester: pytest.Pytester) -> Path:
    """Clusters a (with alias a2), b, c, d; the checks above."""
    pytester.makepyfile(test_checks=CHECKS)
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(fleet_kubeconfig(["a", "a2", "b", "c", "d"], {"a2": "a"})))
    return path


def run(pytester: pytest.Pytester, kubeconfig: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*",
                              "--connect-timeout=1", *args)


def results(directory: Path) -> dict:
    return json.loads((directory / "results.json").read_text())


def verdicts(directory: Path) -> dict[str, str]:
    return {c["test"]: c["verdict"] for c in results(directory)["checks"]}


def run_shards(pytester: pytest.Pytester, kubeconfig: Path, total: int, run_id: str,
               *args: str) -> list[Path]:
    dirs = []
    for index in range(1, total + 1):
        result = run(pytester, kubeconfig, f"--shard={index}/{total}", f"--run-id={run_id}",
                     *args)
        assert result.ret in (0, 1, 6), result.stdout.str()
        dirs.append(pytester.path / "reports" / run_id / f"shard-{index}-of-{total}")
        assert (dirs[-1] / "results.json").is_file(), result.stdout.str()
    return dirs


# --- the split ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0/3", "4/3", "x", "3", "1/0", "-1/2", "1/1000"])
def test_bad_shard_values_are_usage_errors(pytester: pytest.Pytester, fleet: Path,
                                           value: str) -> None:
    result = run(pytester, fleet, f"--shard={value}", "--run-id=r")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--shard '{value}': write K/N with 1 <= K <= N, e.g. *"])


def test_shard_needs_a_shared_run_id_short_enough(pytester: pytest.Pytester,
                                                  fleet: Path) -> None:
    result = run(pytester, fleet, "--shard=1/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard 1/2: give every shard of the run the same --run-id*"])
    result = run(pytester, fleet, "--fleetcheck-shard=10/12", "--run-id=" + "r" * 40)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*too long for --shard 10/12*use at most 38 characters*"])


def test_shard_option_spellings_and_ini(pytester: pytest.Pytester, fleet: Path) -> None:
    out = pytester.runpytest(*PLUGIN, "--help").stdout.str()
    assert "--shard=K/N" in out and "--fleetcheck-shard=K/N" in out and "fleetcheck_shard" in out
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nfleetcheck_shard = "2/2"\n')
    result = run(pytester, fleet, "--run-id=ini")
    assert results(pytester.path / "reports/ini/shard-2-of-2")["shard"]["index"] == 2, \
        result.stdout.str()


def test_assignment_is_deterministic_balanced_and_order_free() -> None:
    sizes = {f"https://10.0.0.{i}:6443#ca{i}": 1 + (i % 3 == 0) for i in range(10)}
    first = shard.assign(sizes, 3)
    for seed in range(5):
        keys = list(sizes)
        random.Random(seed).shuffle(keys)
        assert shard.assign({k: sizes[k] for k in keys}, 3) == first
    load = {k: sum(sizes[c] for c, s in first.items() if s == k) for k in (1, 2, 3)}
    assert max(load.values()) - min(load.values()) <= 1, load
    # one context per cluster: round-robin over the sorted keys
    assert shard.assign({"k3": 1, "k1": 1, "k2": 1, "k4": 1}, 3) == {
        "k1": 1, "k2": 2, "k3": 3, "k4": 1}
    assert shard.assign({"k1": 1}, 3) == {"k1": 1}


def test_probe_identity_and_janitor_matching() -> None:
    assert shard.probe_run_id("r1", None) == "r1"
    assert shard.probe_run_id("r1", shard.Shard(2, 3)) == "r1-s2"
    assert shard.is_shard_probe_id("r1", "r1") and shard.is_shard_probe_id("r1-s12", "r1")
    assert not shard.is_shard_probe_id("r1-s0", "r1")
    assert not shard.is_shard_probe_id("r10-s1", "r1")
    assert not shard.is_shard_probe_id("r1-x", "r1")


def test_shards_split_the_run_exactly_and_merge_to_the_unsharded_verdicts(
        pytester: pytest.Pytester, fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = run(pytester, fleet, "--run-id=whole")
    assert whole.ret == 1  # x/bad is non-conformant
    unsharded = verdicts(pytester.path / "reports/whole")
    dirs = run_shards(pytester, fleet, 3, "r1")

    seen: dict[str, int] = {}
    for index, directory in enumerate(dirs, start=1):
        data = results(directory)
        assert data["run_id"] == "r1" and data["shard"]["index"] == index
        assert data["shard"]["total"] == 3 and data["probe_run_id"] == f"r1-s{index}"
        assert data["selected_contexts"] == ["a", "a2", "b", "c", "d"]
        assert data["expectations_sha256"] is None
        assert len(data["contexts"]) == 5  # every shard preflights every context
        assignment = data["shard"]["assignment"]
        assert assignment["a"] == assignment["a2"]  # one cluster, one shard
        for check in data["checks"]:
            assert check["test"] not in seen, check["test"]
            seen[check["test"]] = index
            owner = check["contexts"][0] if check["contexts"] else None
            assert index == (assignment[owner] if owner else 1), check["test"]
    assert {t: unsharded[t] for t in seen} == unsharded and set(seen) == set(unsharded)
    pairs = [t for t in seen if "test_pair[" in t]
    assert len(pairs) == 4 * 3  # ordered pairs of 4 clusters, each once
    assert seen["test_checks.py::test_bad"] == 1 and seen["test_checks.py::test_fleet"] == 1
    fleet_evidence = next(c for c in results(dirs[0])["checks"] if c["check_id"] == "x/fleet")
    assert fleet_evidence["evidence"][0]["content"] == "r1-s1"

    out = pytester.path / "merged"
    code = merge_cli.main(["--out", str(out), *map(str, reversed(dirs))])
    printed = capsys.readouterr().out
    assert code == whole.ret == 1, printed
    merged = results(out)
    assert {c["test"]: c["verdict"] for c in merged["checks"]} == unsharded
    assert merged["summary"] == results(pytester.path / "reports/whole")["summary"]
    assert merged["run_id"] == "r1" and merged["shard"] is None
    assert [s["index"] for s in merged["merged_from"]] == [1, 2, 3]
    assert "NON-CONFORMANT: x/bad: expected <b>1</b>; observed 2" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "junit.xml", "metrics.txt", "report.html", "results.json"]
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "expected &lt;b&gt;1&lt;/b&gt;" in page and "nothing to measure here" in page
    assert 'id="fleet-matrix"' in page and "shard 3/3" in page
    junit = (out / "junit.xml").read_text()
    assert 'name="verdict" value="non-conformant"' in junit and junit.count("<testcase") == len(
        unsharded)
    metrics = (out / "metrics.txt").read_text()
    assert metrics.endswith("# EOF\n") and 'fleetcheck_checks{run_id="r1",verdict="unknown"}' \
        in metrics
    # --no-exit-code
    assert merge_cli.main(["--out", str(pytester.path / "again"), "--no-exit-code", "-q",
                       *map(str, dirs)]) == 0


def test_split_is_stable_under_reordering(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checks=CHECKS)
    names = ["a", "a2", "b", "c", "d"]
    data = fleet_kubeconfig(names, {"a2": "a"})
    forward = pytester.path / "forward.yaml"
    forward.write_text(yaml.safe_dump(data))
    data["contexts"].reverse()
    data["clusters"].reverse()
    backward = pytester.path / "backward.yaml"
    backward.write_text(yaml.safe_dump(data))
    run(pytester, forward, "--shard=2/3", "--run-id=fwd")
    pytester.runpytest(*PLUGIN, f"--kubeconfig={backward}", "--contexts=d,c,b,a*",
                       "--connect-timeout=1", "--shard=2/3", "--run-id=bwd")
    fwd = results(pytester.path / "reports/fwd/shard-2-of-3")
    bwd = results(pytester.path / "reports/bwd/shard-2-of-3")
    assert fwd["shard"]["assignment"] == bwd["shard"]["assignment"]

    def owned(data: dict) -> set[tuple[str, tuple[str, ...]]]:
        # a pair is named after the first selected context of each cluster: a or its alias a2
        return {(c["check_id"], tuple(x.replace("a2", "a") for x in c["contexts"]))
                for c in data["checks"]}

    assert owned(fwd) == owned(bwd) and owned(fwd)


def test_more_shards_than_clusters_gives_empty_shards_that_merge(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makepyfile(test_checks=CHECKS)
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(fleet_kubeconfig(["only"])))
    whole = run(pytester, path, "--run-id=whole")
    empty = run(pytester, path, "--shard=3/4", "--run-id=r4")
    assert empty.ret == 0, empty.stdout.str()
    empty.stdout.fnmatch_lines(["*fleetcheck shard 3/4 of run r4: checks of no context*"])
    dirs = [pytester.path / "reports/r4/shard-3-of-4"]
    assert results(dirs[0])["checks"] == []
    dirs = run_shards(pytester, path, 4, "r4")
    first = verdicts(dirs[0])
    assert "test_checks.py::test_pair[no-pairs]" in first  # placeholder in shard 1 only
    assert all(not results(d)["checks"] for d in dirs[1:])
    out = pytester.path / "merged"
    assert merge_cli.main(["--out", str(out), *map(str, dirs)]) == whole.ret
    assert verdicts(out) == verdicts(pytester.path / "reports/whole")
    capsys.readouterr()


def test_explicit_report_dir_wins(pytester: pytest.Pytester, fleet: Path) -> None:
    run(pytester, fleet, "--shard=1/2", "--run-id=r5", "--report-dir=out/{run_id}-{shard}")
    assert (pytester.path / "out/r5-shard-1-of-2/results.json").is_file()
    assert not (pytester.path / "reports").exists()


# --- merge refusals -------------------------------------------------------------------------

@pytest.fixture
def two_shards(pytester: pytest.Pytester, fleet: Path) -> list[Path]:
    return run_shards(pytester, fleet, 2, "rm")


def refused(capsys: pytest.CaptureFixture[str], out: Path, *dirs: Path | str) -> str:
    code = merge_cli.main(["--out", str(out), *map(str, dirs)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not out.exists(), "a refused merge wrote something"
    assert "nothing written" in err
    return err


def _edit(directory: Path, **changes: object) -> None:
    """Change a shard's results.json as a different run of it would have written it (its
    SHA256SUMS written again)."""
    path = directory / "results.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    report.write_sha256sums(directory)


def test_merge_refuses_a_missing_or_duplicate_shard(
        pytester: pytest.Pytester, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = pytester.path / "merged"
    assert "shard 2/2 is missing" in refused(capsys, out, two_shards[0])
    copy = pytester.path / "copy"
    shutil.copytree(two_shards[0], copy)
    err = refused(capsys, out, two_shards[0], two_shards[1], copy)
    assert f"shard 1/2 is given twice: {two_shards[0]} and {copy}" in err


def test_merge_refuses_other_runs_expectations_and_n(
        pytester: pytest.Pytester, fleet: Path, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = pytester.path / "merged"
    other = run_shards(pytester, fleet, 2, "other")
    err = refused(capsys, out, two_shards[0], other[1])
    assert "the shards are of different runs (run ids): 'rm'" in err and "'other'" in err
    exp = pytester.path / "exp.yaml"
    exp.write_text("version: 1\n")
    run(pytester, fleet, "--shard=2/2", "--run-id=rm", f"--expectations={exp}",
        "--report-dir=exp-shard")
    err = refused(capsys, out, two_shards[0], pytester.path / "exp-shard")
    assert "the shards ran with different expectations (sha256 of the file)" in err
    three = run_shards(pytester, fleet, 3, "rm")
    err = refused(capsys, out, two_shards[0], three[1])
    assert "the shards split the run differently (N): N=2" in err and "N=3" in err


def test_merge_refuses_unsharded_and_non_report_directories(
        pytester: pytest.Pytester, fleet: Path, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = pytester.path / "merged"
    run(pytester, fleet, "--run-id=rm", "--report-dir=whole")
    err = refused(capsys, out, *two_shards, pytester.path / "whole")
    assert "the report of an unsharded run (no shard in results.json) cannot be merged " \
        "with shards" in err
    empty = pytester.path / "empty"
    empty.mkdir()
    err = refused(capsys, out, *two_shards, empty)
    assert f"{empty}: no results.json (not a fleetcheck report directory" in err


def test_merge_refuses_tampered_unfinished_and_overlapping_shards(
        pytester: pytest.Pytester, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = pytester.path / "merged"
    (two_shards[1] / "results.json").write_text(
        (two_shards[1] / "results.json").read_text().replace("unknown", "conformant"))
    err = refused(capsys, out, *two_shards)
    assert "results.json does not match SHA256SUMS" in err
    _edit(two_shards[1], pytest_exit_status=2)
    err = refused(capsys, out, *two_shards)
    assert "did not finish: pytest exit status 2 (interrupted); run it again" in err
    _edit(two_shards[1], pytest_exit_status=1,
          checks=results(two_shards[0])["checks"])
    err = refused(capsys, out, *two_shards)
    assert "were run by more than one shard" in err
    out.mkdir()
    (out / "keep").write_text("x")
    assert merge_cli.main(["--out", str(out), *map(str, two_shards)]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err


def test_merge_help_and_module_entry(pytester: pytest.Pytester) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fleetcheck.cli.merge", "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "--out DIR" in proc.stdout
    script = Path(sys.executable).with_name("fleetcheck-merge")
    if script.exists():
        assert subprocess.run([str(script), "--help"], capture_output=True,
                              check=False).returncode == 0


# --- merge verification: a verdict never depends on which shards happened to report --------

#: checks that pass without a cluster: test_fleet conformant, test_skipped skipped per context
PASSING = ("-k", "fleet or skipped")


def merged(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], *dirs: Path,
           flags: tuple[str, ...] = ()) -> tuple[int, dict, str]:
    out = pytester.path / f"merged-{len(list(pytester.path.glob('merged-*')))}"
    code = merge_cli.main(["--out", str(out), *flags, *map(str, dirs)])
    printed = capsys.readouterr()
    assert (out / "results.json").is_file(), printed.err
    return code, results(out), printed.out


def test_shards_record_their_selection_version_and_checks(
        pytester: pytest.Pytester, fleet: Path) -> None:
    from fleetcheck import __version__

    dirs = run_shards(pytester, fleet, 2, "rs", str(pytester.path / "test_checks.py"),
                      "-k", "not bad", "-m", "not slow")
    data = results(dirs[0])
    assert data["fleetcheck_version"] == __version__
    assert data["selection"]["args"] == ["test_checks.py"]  # relative to the rootdir
    assert data["selection"]["keyword"] == "not bad"
    assert data["selection"]["markexpr"] == "not slow"
    assert data["checks_collected"] == results(dirs[1])["checks_collected"] == 5 + 5 + 12 + 1 + 1
    assert sorted(e["test"] for e in data["checks_selected"]) == sorted(verdicts(dirs[0]))
    assert merge.selection_text(data["selection"]) == (
        "test_checks.py -k 'not bad' -m 'not slow' --fleetcheck-suites=auto")


def test_a_cluster_whose_shard_ran_nothing_is_unknown_not_conformant(
        pytester: pytest.Pytester, fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = run(pytester, fleet, "--run-id=whole", *PASSING)
    assert whole.ret == 0, whole.stdout.str()
    dirs = run_shards(pytester, fleet, 3, "r0", *PASSING)
    assert merged(pytester, capsys, *dirs)[0] == 0
    # shard 3 owns one cluster; it ran nothing there (pytest's exit status 5), the others ran
    [name] = results(dirs[2])["shard"]["contexts"]
    _edit(dirs[2], checks=[], checks_selected=[], pytest_exit_status=5)
    code, data, printed = merged(pytester, capsys, *dirs)
    assert code == 6, printed
    record = next(c for c in data["checks"] if c["check_id"] == merge.SHARD_REPORTED)
    assert record["verdict"] == "unknown" and record["contexts"] == [name]
    assert record["test"] == f"fleetcheck-merge::shard-reported[{name}]"
    assert (f"merge/shard-reported [{name}]: could not be carried out: shard 3/3 ({dirs[2]}) "
            f"reported no check of {name} or its cluster: pytest exit status 5 (no tests "
            f"collected); {name} was not measured") in record["message"]
    assert f"UNKNOWN: merge/shard-reported [{name}]" in printed
    assert data["summary"]["unknown"] == 1 and data["summary"]["non-conformant"] == 0
    # the other contexts are not touched: a and its alias a2 (one cluster) reported
    assert [c["context"] for c in data["checks"] if c["verdict"] == "unknown"] == [name]


def test_a_shard_that_stopped_early_leaves_its_checks_unknown(
        pytester: pytest.Pytester, fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = run_shards(pytester, fleet, 2, "rx")
    dropped = results(dirs[0])["checks"]
    bad = next(c for c in dropped if c["check_id"] == "x/bad")
    assert bad["verdict"] == "non-conformant"
    # as if -x had stopped shard 1 before test_bad: selected, never reported
    _edit(dirs[0], checks=[c for c in dropped if c["test"] != bad["test"]])
    code, data, printed = merged(pytester, capsys, *dirs)
    record = next(c for c in data["checks"] if c["test"] == bad["test"])
    assert record["verdict"] == "unknown" and record["check_id"] == "x/bad"
    assert f"shard 1/2 ({dirs[0]}) selected this check but reported no verdict" \
        in record["message"]
    assert code == 6, printed  # the one non-conformant check was never measured


def test_merge_refuses_shards_with_a_different_selection(
        pytester: pytest.Pytester, fleet: Path, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = pytester.path / "merged"
    run(pytester, fleet, "--shard=2/2", "--run-id=rm", "-k", "not bad", "--report-dir=k")
    err = refused(capsys, out, two_shards[0], pytester.path / "k")
    assert ("the shards selected checks differently (give every shard the same test paths, "
            f"-k, -m and options): . --fleetcheck-suites=auto ({two_shards[0]}); "
            f". -k 'not bad' --fleetcheck-suites=auto ({pytester.path / 'k'})") in err
    run(pytester, fleet, "--shard=2/2", "--run-id=rm", "--deselect",
        "test_checks.py::test_api_ready[b]", "--report-dir=deselect")
    err = refused(capsys, out, two_shards[0], pytester.path / "deselect")
    assert "--deselect 'test_checks.py::test_api_ready[b]'" in err
    _edit(two_shards[1], checks_collected=99)
    err = refused(capsys, out, *two_shards)
    assert "the shards collected different checks from their test paths" in err
    assert "99 checks" in err


def test_merge_refuses_other_versions_identities_and_old_shards(
        pytester: pytest.Pytester, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    from fleetcheck import __version__

    out = pytester.path / "merged"
    _edit(two_shards[1], fleetcheck_version="0.0.9")
    err = refused(capsys, out, *two_shards)
    assert (f"the shards ran different fleetcheck versions: fleetcheck {__version__} "
            f"({two_shards[0]}); fleetcheck 0.0.9 ({two_shards[1]})") in err
    _edit(two_shards[1], fleetcheck_version=__version__)
    # a user one shard learnt and the other did not (unreachable there) is no difference
    contexts = results(two_shards[1])["contexts"]
    contexts[0]["identity"] = {"username": "alice", "groups": [], "uid": "1"}
    _edit(two_shards[1], contexts=contexts)
    assert merged(pytester, capsys, *two_shards)[0] == 1  # x/bad
    first = results(two_shards[0])["contexts"]
    first[0]["identity"] = {"username": "mallory", "groups": []}
    _edit(two_shards[0], contexts=first)
    _edit(two_shards[1], contexts=contexts)
    err = refused(capsys, out, *two_shards)
    assert (f"the shards saw context {contexts[0]['name']} as different users (different "
            f"kubeconfigs or credentials?): 'mallory' ({two_shards[0]}); 'alice' "
            f"({two_shards[1]})") in err
    data = results(two_shards[1])
    del data["selection"]
    (two_shards[1] / "results.json").write_text(json.dumps(data))
    report.write_sha256sums(two_shards[1])
    err = refused(capsys, out, *two_shards)
    assert f"{two_shards[1]}: results.json does not record selection (written by an older " \
        "fleetcheck)" in err
    _edit(two_shards[1], selection={"last_failed": True})
    assert "ran with --lf or --sw" in refused(capsys, out, *two_shards)


def test_merge_requires_sha256sums_unless_told(
        pytester: pytest.Pytester, two_shards: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    expected = merged(pytester, capsys, *two_shards)[0]
    (two_shards[1] / "SHA256SUMS").unlink()
    err = refused(capsys, pytester.path / "merged", *two_shards)
    assert (f"{two_shards[1]}: no SHA256SUMS (every run writes it last: was it left out when "
            "the report was copied?); give the whole report directory, or merge without it "
            "with --allow-missing-sha256sums") in err
    code = merged(pytester, capsys, *two_shards, flags=("--allow-missing-sha256sums",))[0]
    assert code == expected
    (two_shards[1] / "SHA256SUMS").write_text("0" * 64 + "  junit.xml\n")
    err = refused(capsys, pytester.path / "merged", *two_shards)
    assert f"{two_shards[1]}: SHA256SUMS does not list results.json" in err


def test_missing_shards_are_refused_or_merged_as_unknown(
        pytester: pytest.Pytester, fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = run_shards(pytester, fleet, 3, "rmiss", *PASSING)
    err = refused(capsys, pytester.path / "merged", dirs[0], dirs[1])
    assert "shard 3/3 is missing (merge what there is, its contexts unknown, with " \
        "--allow-missing-shards)" in err
    code, data, printed = merged(pytester, capsys, dirs[0], dirs[1],
                                 flags=("--allow-missing-shards",))
    assert code == 6, printed
    unknown = {c["test"]: c["message"] for c in data["checks"] if c["verdict"] == "unknown"}
    [name] = results(dirs[2])["shard"]["contexts"]
    assert list(unknown) == [f"fleetcheck-merge::shard-reported[{name}]"]
    assert f"merge/shard-reported [{name}]: could not be carried out: shard 3/3 is missing " \
        "(not given to fleetcheck-merge" in unknown[f"fleetcheck-merge::shard-reported[{name}]"]
    assert data["merged_from"][2] == {"index": 3, "total": 3, "missing": True,
                                      "directory": None, "contexts": [name]}
    code, data, _ = merged(pytester, capsys, dirs[1], dirs[2], flags=("--allow-missing-shards",))
    assert code == 6
    assert {c["test"] for c in data["checks"] if c["verdict"] == "unknown"} == {
        "fleetcheck-merge::shard-reported[a]", "fleetcheck-merge::shard-reported[a2]",
        "fleetcheck-merge::shard-reported[no-context]"}
    page = (pytester.path / "merged-0" / "report.html").read_text()
    assert f"missing: checks of {name} not run (--allow-missing-shards)" in page


def test_merge_help_names_what_it_verifies() -> None:
    text = merge.__doc__ or ""
    assert "--allow-missing-sha256sums" in text and "merge/shard-reported" in text
