"""Kubeconfig discovery, merging (first file wins per entry), globbing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.core.kubeconfig import KubeconfigError, discover_files, load, split_globs
from fleetcheck.core.targets import build_api_client, make_target, ordered_pairs


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_first_file_wins_per_named_entry(tmp_path: Path) -> None:
    a = kubeconfig_dict(["lab-a", "shared"], server="https://a.example:6443", current="lab-a")
    b = kubeconfig_dict(["lab-b", "shared"], server="https://b.example:6443", current="lab-b")
    kc = load([write(tmp_path / "a", a), write(tmp_path / "b", b)])
    assert kc.context_names == ["lab-a", "shared", "lab-b"]
    assert kc.clusters["shared-cluster"]["server"] == "https://a.example:6443"
    assert kc.clusters["lab-b-cluster"]["server"] == "https://b.example:6443"
    assert kc.current_context == "lab-a"
    assert kc.origin[("context", "shared")] == tmp_path / "a"


def test_relative_paths_resolve_against_their_file(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    data = kubeconfig_dict(["x"])
    data["clusters"][0]["cluster"]["certificate-authority"] = "ca.crt"
    data["users"][0]["user"] = {"client-certificate": "certs/me.crt", "client-key": "/abs/me.key"}
    kc = load([write(sub / "config", data)])
    assert kc.clusters["x-cluster"]["certificate-authority"] == str(sub / "ca.crt")
    assert kc.users["x-user"]["client-certificate"] == str(sub / "certs" / "me.crt")
    assert kc.users["x-user"]["client-key"] == "/abs/me.key"


def test_discovery_order(tmp_path: Path) -> None:
    one = write(tmp_path / "one", kubeconfig_dict(["one"]))
    two = write(tmp_path / "two", kubeconfig_dict(["two"]))
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    default = write(home / ".kube" / "config", kubeconfig_dict(["home"]))
    env = {"KUBECONFIG": f"{one}:{tmp_path / 'missing'}:{two}", "HOME": str(home)}
    assert discover_files([str(two)], env) == [two]
    assert discover_files(None, env) == [one, two]
    assert discover_files(None, {"HOME": str(home)}) == [default]


def test_no_kubeconfig_found(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no kubeconfig found.*--kubeconfig"):
        discover_files(None, {"HOME": str(tmp_path)})
    with pytest.raises(KubeconfigError, match="none of the files in KUBECONFIG exist"):
        discover_files(None, {"KUBECONFIG": str(tmp_path / "nope"), "HOME": str(tmp_path)})
    with pytest.raises(KubeconfigError, match="file not found: .*nope"):
        discover_files([str(tmp_path / "nope")], {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [\n  - name: x\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("contexts: {}\n", "'contexts' must be a list"),
        ("contexts:\n- context: {cluster: c}\n", r"contexts\[0\] needs a 'name'"),
        ("users:\n- name: u\n  user: [1]\n", "'user' must be a mapping"),
    ],
)
def test_malformed_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "broken.yaml", text)
    with pytest.raises(KubeconfigError, match=message) as info:
        load([path])
    assert str(path) in str(info.value)


def test_select_globs_and_commas(tmp_path: Path) -> None:
    kc = load([write(tmp_path / "c", kubeconfig_dict(["lab-a", "lab-b", "viewer@lab-a", "prod"]))])
    assert kc.select(["lab-*"]) == ["lab-a", "lab-b"]
    assert kc.select(["prod,lab-b", "lab-?"]) == ["prod", "lab-b", "lab-a"]
    assert kc.select(["*@lab-a"]) == ["viewer@lab-a"]
    assert split_globs(["a, b", "b,,c"]) == ["a", "b", "c"]


def test_glob_matching_nothing_lists_contexts(tmp_path: Path) -> None:
    kc = load([write(tmp_path / "c", kubeconfig_dict(["lab-a", "lab-b"]))])
    with pytest.raises(KubeconfigError) as info:
        kc.select(["lab-*", "prod-*"])
    assert "'prod-*' matched no context" in str(info.value)
    assert "Existing contexts: lab-a, lab-b" in str(info.value)


def test_missing_user_or_cluster_entry(tmp_path: Path) -> None:
    data = kubeconfig_dict(["ok"])
    data["contexts"] += [
        {"name": "no-user", "context": {"cluster": "ok-cluster", "user": "ghost"}},
        {"name": "no-cluster", "context": {"cluster": "nowhere", "user": "ok-user"}},
        {"name": "bare", "context": {"cluster": "ok-cluster"}},
    ]
    kc = load([write(tmp_path / "c", data)])
    kc.validate_context("ok")
    with pytest.raises(KubeconfigError, match="refers to user 'ghost'"):
        kc.validate_context("no-user")
    with pytest.raises(KubeconfigError, match="refers to cluster 'nowhere'"):
        kc.validate_context("no-cluster")
    with pytest.raises(KubeconfigError, match="names no user"):
        kc.validate_context("bare")


def test_context_dict_holds_only_that_context(tmp_path: Path) -> None:
    kc = load([write(tmp_path / "c", kubeconfig_dict(["a", "b"], token="tok-abcdef-123"))])
    single = kc.context_dict("b")
    assert [c["name"] for c in single["contexts"]] == ["b"]
    assert [u["name"] for u in single["users"]] == ["b-user"]
    assert single["current-context"] == "b"
    assert "tok-abcdef-123" in kc.secret_values()


def test_targets_get_their_own_clients(tmp_path: Path) -> None:
    data = kubeconfig_dict(["a", "b"])
    data["clusters"][1]["cluster"]["server"] = "https://b.example:6443"
    data["users"][1]["user"]["token"] = "token-of-b-0000"
    kc = load([write(tmp_path / "c", data)])
    a = make_target(kc, "a", connect_timeout=1, request_timeout=2)
    b = make_target(kc, "b", connect_timeout=1, request_timeout=2)
    assert a.api_client is not b.api_client
    assert b.api_client.configuration.host == "https://b.example:6443"
    assert b.api_client.configuration.api_key["BearerToken"].endswith("token-of-b-0000")
    assert a.api_client.default_timeout == (1, 2)
    assert [p.id for p in ordered_pairs([a, b])] == ["a->b", "b->a"]


def test_client_ignores_proxy_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    kc = load([write(tmp_path / "c", kubeconfig_dict(["a"]))])
    client = build_api_client(kc, "a", connect_timeout=1, request_timeout=1)
    assert client.configuration.proxy is None
