"""The expectations file: schema errors name the bad key's path; per-glob merging; defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleetcheck.expectations import DEFAULTS, Expectations, ExpectationsError, load


def test_no_file_gives_defaults() -> None:
    exp = load(None)
    lab = exp.for_context("lab-a")
    assert lab["dns"]["cluster_domain"] == "cluster.local"
    assert lab["rbac"]["allow"] == []
    assert exp.fleet["max_minor_skew"] == DEFAULTS["fleet"]["max_minor_skew"]


def test_globs_merge_in_file_order() -> None:
    exp = Expectations({
        "version": 1,
        "defaults": {"dns": {"resolve_timeout_s": 2}},
        "contexts": [
            {"match": "lab-*", "rbac": {"allow": [{"verb": "get", "resource": "pods"}]}},
            {"match": ["lab-b", "prod-*"], "dns": {"cluster_domain": "b.local"},
             "rbac": {"deny": [{"verb": "delete", "resource": "nodes"}]}},
        ],
    })
    a, b = exp.for_context("lab-a"), exp.for_context("lab-b")
    assert a["dns"] == {"cluster_domain": "cluster.local", "resolve_timeout_s": 2}
    assert b["dns"]["cluster_domain"] == "b.local"
    assert b["rbac"]["allow"] == [{"verb": "get", "resource": "pods"}]
    assert b["rbac"]["deny"] == [{"verb": "delete", "resource": "nodes"}]
    assert a["rbac"]["deny"] == []
    assert exp.entries_for("prod-eu") == [1]
    assert exp.for_context("other")["rbac"]["allow"] == []


@pytest.mark.parametrize(
    ("data", "path", "why"),
    [
        ({"contexts": [{"match": "a", "rbac": {"allow": [{"verb": "fetch", "resource": "pods"}]}}]},
         r"contexts\[0\]\.rbac\.allow\[0\]\.verb", "'fetch' is not one of"),
        ({"contexts": [{"rbac": {}}]}, r"contexts\[0\]", "'match' is a required property"),
        ({"defaults": {"dns": {"clusterdomain": "x"}}}, r"defaults\.dns",
         "'clusterdomain' was unexpected"),
        ({"fleet": {"max_minor_skew": -1}}, r"fleet\.max_minor_skew", "less than the minimum"),
        ({"colour": "blue"}, r"\(top level\)", "'colour' was unexpected"),
        ({"contexts": [{"match": [], "dns": {}}]}, r"contexts\[0\]\.match", "should be non-empty"),
    ],
)
def test_schema_errors_give_path_and_reason(data: dict, path: str, why: str) -> None:
    with pytest.raises(ExpectationsError, match=f"invalid at {path}: .*{why}"):
        Expectations(data, source="expectations file x.yaml")


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("contexts: [\n")
    with pytest.raises(ExpectationsError, match=r"bad.yaml: not valid YAML at line"):
        load(bad)
    with pytest.raises(ExpectationsError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\ncontexts:\n- match: 'lab-*'\n  connectivity: {tcp_timeout_s: 2}\n")
    assert load(good).for_context("lab-c")["connectivity"]["tcp_timeout_s"] == 2


def test_failover_defaults_and_overrides() -> None:
    assert load(None).for_context("lab-c")["failover"] == {
        "node_drain_timeout_s": 60.0, "max_pause_s": 5.0, "node_drain_baseline_s": 2.0}
    exp = Expectations({"defaults": {"failover": {"max_pause_s": 2}},
                        "contexts": [{"match": "lab-c", "failover": {"node_drain_timeout_s": 90}}]})
    assert exp.for_context("lab-c")["failover"] == {
        "node_drain_timeout_s": 90, "max_pause_s": 2, "node_drain_baseline_s": 2.0}
    assert exp.for_context("lab-a")["failover"]["node_drain_timeout_s"] == 60.0


@pytest.mark.parametrize(
    ("data", "path", "why"),
    [
        ({"defaults": {"failover": {"node_drain_timeout_s": 0}}},
         r"defaults\.failover\.node_drain_timeout_s", "less than or equal to the minimum of 0"),
        ({"defaults": {"failover": {"max_pause_s": -1}}}, r"defaults\.failover\.max_pause_s",
         "less than the minimum of 0"),
        ({"contexts": [{"match": "x", "failover": {"max_pause_s": "5s"}}]},
         r"contexts\[0\]\.failover\.max_pause_s", "'5s' is not of type 'number'"),
        ({"defaults": {"failover": {"node_drain_timout_s": 60}}}, r"defaults\.failover",
         "'node_drain_timout_s' was unexpected"),
        ({"defaults": {"failover": {"node_drain_baseline_s": 3600}}},
         r"defaults\.failover\.node_drain_baseline_s", "greater than the maximum of 300"),
    ],
)
def test_failover_errors_name_the_key(data: dict, path: str, why: str) -> None:
    with pytest.raises(ExpectationsError, match=f"invalid at {path}: .*{why}"):
        Expectations(data, source="expectations file x.yaml")
