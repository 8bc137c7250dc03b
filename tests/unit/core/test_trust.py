"""Trustworthy verdicts without a cluster: credentials from exec plugins, one cluster behind
several contexts, exit codes, key material kept off the disk.

Contexts point at closed ports on 127.0.0.1 (see test_plugin.py); what is asserted here is
decided before or without an API server.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.core import credentials
from fleetcheck.core import kubeconfig as kubeconfig_mod
from fleetcheck.core.targets import assign_clusters, build_api_client, make_target, ordered_pairs
from fleetcheck.plugin import EXIT_CONFORMANT, EXIT_NON_CONFORMANT, EXIT_UNKNOWN

PLUGIN = ("-p", "fleetcheck.plugin")
TWO_CHECKS = '''
import pytest

@pytest.mark.check("connectivity/api-ready")
def test_api_ready(target):
    pass

@pytest.mark.check("demo/second")
def test_second(target):
    pass
'''


@pytest.fixture(autouse=True)
def _isolated_env(isolated_pytester: pytest.Pytester) -> None:
    """Every test here runs pytester in isolation (tests/conftest.py)."""


def plugin_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def exec_user(command: Path) -> dict:
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(command),
                     "interactiveMode": "Never"}}


def write(pytester: pytest.Pytester, data: dict) -> Path:
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def results(pytester: pytest.Pytester) -> dict:
    (report,) = sorted((pytester.path / "reports").iterdir())
    return json.loads((report / "results.json").read_text())


# --- exec credential plugins -------------------------------------------------------------------

def test_failing_exec_plugin_makes_every_check_unknown_with_its_scrubbed_stderr(
        pytester: pytest.Pytester) -> None:
    secret = "s3cr3t-" + "x" * 20
    script = plugin_script(pytester.path / "get-token",
                           f'echo "login expired; refresh_token={secret} rejected" >&2; exit 1')
    data = kubeconfig_dict(["good", "bad"])
    data["users"][1]["user"] = exec_user(script)
    kubeconfig = write(pytester, data)
    pytester.makepyfile(TWO_CHECKS)
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*",
                                "--connect-timeout=1")
    out = result.stdout.str()
    assert secret not in out
    checks = [c for c in results(pytester)["checks"] if c["context"] == "bad"]
    assert len(checks) == 2
    for check in checks:
        assert check["verdict"] == "unknown"
        assert "exec credential plugin" in check["message"]
        assert str(script) in check["message"]
        assert "failed (exit 1)" in check["message"] and "login expired" in check["message"]
        assert "forbidden" not in check["message"] and "anonymous" not in check["message"]
        assert secret not in check["message"]
    assert result.ret == EXIT_UNKNOWN


def test_hung_exec_plugin_is_bounded_and_does_not_stall_the_run(pytester: pytest.Pytester) -> None:
    script = plugin_script(pytester.path / "hang", "sleep 600")
    data = kubeconfig_dict(["a", "hung1", "hung2"])
    data["users"][1]["user"] = exec_user(script)
    data["users"][2]["user"] = exec_user(script)
    kubeconfig = write(pytester, data)
    pytester.makepyfile(TWO_CHECKS)
    start = time.monotonic()
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*",
                                "--connect-timeout=1")
    elapsed = time.monotonic() - start
    # both plugins run in parallel, each killed after the connect timeout
    assert elapsed < 6, f"took {elapsed:.1f}s"
    records = {(c["check_id"], c["context"]): c for c in results(pytester)["checks"]}
    assert len(records) == 6
    for ctx in ("hung1", "hung2"):
        message = records[("connectivity/api-ready", ctx)]["message"]
        assert "did not finish within 1s" in message, message
    assert result.ret == EXIT_UNKNOWN


def test_exec_plugin_runs_once_per_user_and_its_token_is_scrubbed(tmp_path: Path) -> None:
    count = tmp_path / "count"
    token = "exec-issued-" + "t" * 24
    script = plugin_script(tmp_path / "plugin", (
        f'echo x >> {count}\n'
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
        f'"status":{{"token":"{token}"}}}}\''))
    outcome = credentials.run_exec_plugin(exec_user(script)["exec"], cwd=None, timeout=5)
    assert outcome.user == {"token": token} and token in outcome.secrets
    assert count.read_text().count("x") == 1


@pytest.mark.parametrize("body, words", [
    ("echo not-json", "printed no ExecCredential"),
    (('printf \'{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential",'
     '"status":{"token":"t"}}\''), "answered apiVersion"),
    (('printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
     '"status":{}}\''), "neither a token nor a client certificate"),
])
def test_exec_plugin_nonsense_is_an_error(tmp_path: Path, body: str, words: str) -> None:
    script = plugin_script(tmp_path / "plugin", body)
    with pytest.raises(credentials.CredentialError, match=words):
        credentials.run_exec_plugin(exec_user(script)["exec"], cwd=None, timeout=5)


def test_missing_exec_command_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(credentials.CredentialError, match="cannot be started"):
        credentials.run_exec_plugin(exec_user(tmp_path / "absent")["exec"], cwd=None, timeout=5)


def test_client_never_runs_an_exec_plugin_itself(tmp_path: Path) -> None:
    """The kubernetes library would run it unbounded and carry on as anonymous."""
    marker = tmp_path / "ran"
    script = plugin_script(tmp_path / "plugin", f"touch {marker}; exit 1")
    data = kubeconfig_dict(["a"])
    data["users"][0]["user"] = exec_user(script)
    path = tmp_path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    kc = kubeconfig_mod.load([path])
    target = make_target(kc, "a", connect_timeout=1, request_timeout=1)
    assert target.api_client is None and target.unreachable is None
    with pytest.raises(credentials.CredentialError, match="has not been run"):
        build_api_client(kc, "a", connect_timeout=1, request_timeout=1)
    assert not marker.exists()


# --- one cluster, several contexts ---------------------------------------------------------------

def test_contexts_of_one_cluster_make_no_pair(tmp_path: Path) -> None:
    data = kubeconfig_dict(["a", "a-alias", "viewer@a"], server="https://10.0.0.1:6443")
    other = kubeconfig_dict(["b"], server="https://10.0.0.2:6443")
    for key in ("clusters", "users", "contexts"):
        data[key] += other[key]
    # a different spelling of the same URL is the same server
    data["clusters"][1]["cluster"]["server"] = "HTTPS://10.0.0.1:6443/"
    path = tmp_path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    kc = kubeconfig_mod.load([path])
    targets = [make_target(kc, n, connect_timeout=1, request_timeout=1)
               for n in ("a", "a-alias", "viewer@a", "b")]
    clusters = assign_clusters(targets)
    assert clusters == {"a": ["a", "a-alias", "viewer@a"], "b": ["b"]}
    assert [t.cluster_id for t in targets] == ["a", "a", "a", "b"]
    assert [p.id for p in ordered_pairs(targets)] == ["a->b", "b->a"]


def test_same_server_with_another_ca_is_another_cluster() -> None:
    one = {"server": "https://127.0.0.1:6443", "certificate-authority-data": "QUJD"}
    two = {"server": "https://127.0.0.1:6443", "certificate-authority-data": "REVG"}
    assert kubeconfig_mod.ca_fingerprint(one) != kubeconfig_mod.ca_fingerprint(two)
    assert kubeconfig_mod.normalise_server("https://Example.com:443/") == "https://example.com"
    assert kubeconfig_mod.normalise_server("https://h:6443") == "https://h:6443"


def test_alias_contexts_are_one_cluster_for_pairs_and_requires_clusters(
        pytester: pytest.Pytester) -> None:
    data = kubeconfig_dict(["lab-a", "alias"], server="https://127.0.0.1:1")
    kubeconfig = write(pytester, data)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.requires_clusters(2)
        @pytest.mark.check("connectivity/cross-cluster-pod")
        def test_cross(pair):
            pass
    ''')
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*", "-rs")
    # neither context is reachable (no capability): the name decides who represents the cluster
    result.stdout.fnmatch_lines([("*needs at least 2 clusters*1 cluster selected "
                                 "(alias: alias, lab-a)*")])
    assert "lab-a->alias" not in result.stdout.str()
    assert "alias->lab-a" not in result.stdout.str()


# --- exit codes and levels ------------------------------------------------------------------------

LEVEL_CHECKS = '''
import os
import pytest

@pytest.mark.check("demo/required")
def test_required(check):
    if os.environ.get("FAIL_REQUIRED"):
        check.fail(expected="x", observed="y")

@pytest.mark.check("demo/recommended", level="recommended")
def test_recommended(check):
    check.fail(expected="a", observed="b")
'''


@pytest.mark.parametrize("fail_required, code", [("", EXIT_CONFORMANT),
                                                 ("1", EXIT_NON_CONFORMANT)])
def test_exit_codes_and_recommended_never_fails_the_run(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fail_required: str,
        code: int) -> None:
    kubeconfig = write(pytester, kubeconfig_dict(["a"]))
    pytester.makepyfile(LEVEL_CHECKS)
    monkeypatch.setenv("FAIL_REQUIRED", fail_required)
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*")
    assert result.ret == code
    verdicts = {c["check_id"]: c["verdict"] for c in results(pytester)["checks"]}
    assert verdicts["demo/recommended"] == "non-conformant"


def test_unknown_only_run_has_its_own_exit_code(pytester: pytest.Pytester) -> None:
    kubeconfig = write(pytester, kubeconfig_dict(["a"]))
    pytester.makepyfile(TWO_CHECKS)
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*")
    assert result.ret == EXIT_UNKNOWN


# --- key material stays in memory -----------------------------------------------------------------

def test_client_key_data_never_reaches_a_temporary_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    import base64
    key = base64.b64encode(b"not really a key " * 8).decode()
    data = kubeconfig_dict(["a"])
    data["users"][0]["user"] = {"client-certificate-data": key, "client-key-data": key}
    data["clusters"][0]["cluster"]["certificate-authority-data"] = key
    path = tmp_path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    kc = kubeconfig_mod.load([path])
    client = build_api_client(kc, "a", connect_timeout=1, request_timeout=1)
    conf = client.configuration
    for value in (conf.key_file, conf.cert_file, conf.ssl_ca_cert):
        assert value.startswith(f"/proc/{os.getpid()}/fd/"), value
        assert Path(value).read_bytes() == base64.b64decode(key)
    assert not list(scratch.iterdir())


# --- pure logic: leases, scheduling --------------------------------------------------------------

def test_lease_freshness_against_the_servers_clock() -> None:
    import datetime as dt

    from fleetcheck.kube import leases
    from kubernetes import client as k8s

    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)

    def lease(age_s: float | None, holder: str = "n1_abc") -> k8s.V1Lease:
        renewed = None if age_s is None else now - dt.timedelta(seconds=age_s)
        return k8s.V1Lease(spec=k8s.V1LeaseSpec(holder_identity=holder,
                                                lease_duration_seconds=15,
                                                renew_time=renewed))

    assert leases.assess_lease(lease(3), now)[0]
    fresh, cells = leases.assess_lease(lease(60), now)
    assert not fresh and cells[0] == "n1" and "STALE (not renewed for 60s > 15s)" in cells[-1]
    assert not leases.assess_lease(lease(None), now)[0]
    assert not leases.assess_lease(lease(1, holder=""), now)[0]
    assert leases.server_time({"Date": "Thu, 01 Jan 2026 12:00:00 GMT"}) == now


def test_scheduling_problem_of_pods() -> None:
    from fleetcheck.kube.podstatus import pod_readiness, scheduling_problem
    from kubernetes import client as k8s

    unscheduled = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[]),
                            status=k8s.V1PodStatus(phase="Pending"))
    assert scheduling_problem(unscheduled) == "unscheduled"
    assert "no PodScheduled condition" in pod_readiness(unscheduled)[1]
    refused = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[]), status=k8s.V1PodStatus(
        phase="Pending", conditions=[k8s.V1PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable",
            message="0/1 nodes are available: 1 node(s) had untolerated taint")]))
    assert scheduling_problem(refused) == "unschedulable"
    assert "untolerated taint" in pod_readiness(refused)[1]
    placed = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], node_name="n1"),
                       status=k8s.V1PodStatus(phase="Pending"))
    assert scheduling_problem(placed) is None


def test_a_failing_test_that_is_not_a_check_still_fails_the_run(pytester: pytest.Pytester) -> None:
    kubeconfig = write(pytester, kubeconfig_dict(["a"]))
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("demo/ok")
        def test_ok(check):
            pass

        def test_users_own():
            assert False
    ''')
    result = pytester.runpytest(*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=*")
    assert result.ret == EXIT_NON_CONFORMANT


def test_tools_outside_a_run_bound_exec_plugins_too(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The janitor and the backup tool run a failing plugin once, bounded, and say so."""
    from fleetcheck.cli import backup as backup_cli
    from fleetcheck.cli import janitor

    script = plugin_script(tmp_path / "fail", 'echo "no session; password=hunter2hunter2" >&2; '
                                               "exit 3")
    data = kubeconfig_dict(["a"])
    data["users"][0]["user"] = exec_user(script)
    path = tmp_path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    assert janitor.main([f"--kubeconfig={path}", "--contexts=a", "--all-expired"]) != 0
    code = backup_cli.main(["backup", f"--kubeconfig={path}", "--contexts=a",
                            "--output", str(tmp_path / "out.tar.gz")])
    assert code != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("failed (exit 3)") == 2, text
    assert "hunter2hunter2" not in text
