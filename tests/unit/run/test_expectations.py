"""The expectations file: schema errors name the bad key's path; per-glob merging; defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleetcheck.run.expectations import DEFAULTS, Expectations, ExpectationsError, load


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
    assert a["dns"] == {"cluster_domain": "cluster.local", "resolve_timeout_s": 2,
                        "propagation_timeout_s": 10.0}
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


# --- consistency ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("section", "path", "why"),
    [
        ({"objects": [{"namespace": "x"}]}, r"defaults\.consistency\.objects\[0\]",
         "'kind' is a required property"),
        ({"objects": [{"kind": "configmap"}]}, r"defaults\.consistency\.objects\[0\]\.kind",
         "does not match"),
        ({"objects": [{"kind": "Widget", "apiVersion": "example.com"}]},
         r"defaults\.consistency\.objects\[0\]\.apiVersion", "does not match"),
        ({"objects": [{"kind": "ConfigMap", "namespace": "Bad_NS"}]},
         r"defaults\.consistency\.objects\[0\]\.namespace", "does not match"),
        ({"objects": [{"kind": "ConfigMap", "names": []}]},
         r"defaults\.consistency\.objects\[0\]\.names", "should be non-empty"),
        ({"facts": {"crd": True}}, r"defaults\.consistency\.facts", "'crd' was unexpected"),
        ({"objetcs": []}, r"defaults\.consistency", "'objetcs' was unexpected"),
        ({"objects": [{"kind": "Widget"}]}, r"defaults\.consistency\.objects\[0\]",
         "kind 'Widget' is not one fleetcheck knows .* give its apiVersion"),
        ({"objects": [{"kind": "Namespace", "namespace": "a"}]},
         r"defaults\.consistency\.objects\[0\]", "Namespace is cluster-scoped"),
        ({"objects": [{"kind": "Secret", "namespace": "a"}]},
         r"defaults\.consistency\.objects\[0\]", "comparing every Secret is refused"),
        ({"objects": [{"kind": "ConfigMap", "selector": "a=b,=c"}]},
         r"defaults\.consistency\.objects\[0\]\.selector", "not a label selector"),
    ],
)
def test_consistency_errors_at_configure_time(section: dict, path: str, why: str) -> None:
    with pytest.raises(ExpectationsError, match=f"invalid at {path}: .*{why}"):
        Expectations({"defaults": {"consistency": section}}, source="expectations file x.yaml")


def test_consistency_error_in_a_contexts_entry_names_it() -> None:
    with pytest.raises(ExpectationsError,
                       match=r"invalid at contexts\[1\]\.consistency\.ignore\[0\]: not a field"):
        Expectations({"contexts": [{"match": "a"}, {"match": "b", "consistency": {
            "ignore": [".data"]}}]})


def test_consistency_merges_per_context() -> None:
    exp = Expectations({
        "defaults": {"consistency": {"facts": {"crds": True},
                                     "objects": [{"kind": "ConfigMap", "namespace": "a"}]}},
        "contexts": [{"match": "prod-*", "consistency": {"facts": {"webhooks": True},
                                                         "reference": "prod-1"}}],
    })
    assert exp.for_context("lab-a")["consistency"]["facts"] == {"crds": True}
    prod = exp.for_context("prod-2")["consistency"]
    assert prod["facts"] == {"crds": True, "webhooks": True}
    assert prod["reference"] == "prod-1" and prod["objects"][0]["kind"] == "ConfigMap"
    assert load(None).for_context("x")["consistency"] == {}


def test_failover_defaults_and_overrides() -> None:
    federation_defaults = {"rto_s": 120.0, "restore_timeout_s": 90.0, "flap_watch_s": 10.0,
                           "cordon_watch_s": 8.0}
    assert load(None).for_context("lab-c")["failover"] == {
        "node_drain_timeout_s": 60.0, "max_pause_s": 5.0, "node_drain_baseline_s": 2.0,
        **federation_defaults}
    exp = Expectations({"defaults": {"failover": {"max_pause_s": 2}},
                        "contexts": [{"match": "lab-c", "failover": {"node_drain_timeout_s": 90}}]})
    assert exp.for_context("lab-c")["failover"] == {
        "node_drain_timeout_s": 90, "max_pause_s": 2, "node_drain_baseline_s": 2.0,
        **federation_defaults}
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
        ({"defaults": {"failover": {"outage": {"stop": ["x"]}}}},
         r"defaults\.failover\.outage", "'start' is a required property"),
        ({"defaults": {"failover": {"outage": {"stop": "lab stop x", "start": ["y"]}}}},
         r"defaults\.failover\.outage\.stop", "is not of type 'array'"),
    ],
)
def test_failover_errors_name_the_key(data: dict, path: str, why: str) -> None:
    with pytest.raises(ExpectationsError, match=f"invalid at {path}: .*{why}"):
        Expectations(data, source="expectations file x.yaml")


def test_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("version: 1\ncontexts:\n  - match: a\ndefaults: {}\ncontexts:\n"
                    "  - match: b\n")
    with pytest.raises(ExpectationsError, match=r"dup.yaml: not valid YAML at line 5, "
                                                r"column 1: duplicate key 'contexts'"):
        load(path)
