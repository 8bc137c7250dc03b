"""The plugin, driven through pytester with kubeconfigs in temporary directories (no cluster).

Contexts point at closed ports on 127.0.0.1, so every check that needs the API server is
``unknown``; checks that do not (``check`` marker only) exercise the verdict mapping.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fchelpers import kubeconfig_dict

PLUGIN = ("-p", "fleetcheck.plugin")

API_READY_CHECK = '''
import pytest

@pytest.mark.check("connectivity/api-ready")
def test_api_ready(target):
    pass
'''


@pytest.fixture
def kubeconfig(pytester: pytest.Pytester) -> Path:
    """Three dead contexts (closed port on 127.0.0.1): lab-a, lab-b, lab-c."""
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig_dict(["lab-a", "lab-b", "lab-c"])))
    return path


@pytest.fixture(autouse=True)
def _isolated_env(isolated_pytester: pytest.Pytester) -> None:
    """Every test here runs pytester in isolation (tests/conftest.py)."""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, *args)


def report_dir(pytester: pytest.Pytester) -> Path:
    dirs = sorted((pytester.path / "reports").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def results(pytester: pytest.Pytester) -> dict:
    return json.loads((report_dir(pytester) / "results.json").read_text())


# --- options ---------------------------------------------------------------------------------

def test_help_lists_every_option_with_its_ini(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    out = result.stdout.str()
    assert "fleetcheck: conformance checks across kubeconfig contexts" in out
    for flag in ("--contexts", "--kubeconfig", "--expectations", "--probe-image",
                 "--list-images", "--allow-disruptive", "--keep-on-failure", "--run-id",
                 "--request-timeout", "--connect-timeout", "--report-dir"):
        assert flag in out, flag
        ini = "fleetcheck_" + flag[2:].replace("-", "_")
        assert ini in out, ini


def test_without_contexts_checks_are_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(API_READY_CHECK)
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no --contexts given*"])
    assert not (pytester.path / "reports").exists()


def test_ini_fallbacks(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    (pytester.path / "pyproject.toml").unlink()
    pytester.makeini(f"""
        [pytest]
        fleetcheck_contexts = lab-a lab-b
        fleetcheck_kubeconfig = {kubeconfig.name}
        fleetcheck_connect_timeout = 1.5
        fleetcheck_run_id = fc-from-ini
        fleetcheck_report_dir = out/{{run_id}}
    """)
    pytester.makepyfile(API_READY_CHECK)
    result = run(pytester)
    result.stdout.fnmatch_lines(["fleetcheck run fc-from-ini by *, contexts: lab-a, lab-b"])
    result.assert_outcomes(errors=2)
    assert (pytester.path / "out" / "fc-from-ini" / "results.json").is_file()


def test_command_line_beats_ini(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    (pytester.path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nfleetcheck_contexts = ["lab-a"]\nfleetcheck_run_id = "fc-ini"\n'
    )
    pytester.makepyfile(API_READY_CHECK)
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-c", "--run-id=fc-cli")
    result.stdout.fnmatch_lines(["fleetcheck run fc-cli by *, contexts: lab-c"])


def test_contexts_globs_parametrize_with_readable_ids(pytester: pytest.Pytester,
                                                      kubeconfig: Path) -> None:
    pytester.makepyfile('''
        import pytest

        def test_one(target):
            pass

        @pytest.mark.requires_clusters(2)
        def test_two(pair):
            pass
    ''')
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a,lab-c",
                 "--contexts=lab-b", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "*test_one[[]lab-a[]]", "*test_one[[]lab-c[]]", "*test_one[[]lab-b[]]",
        "*test_two[[]lab-a->lab-c[]]", "*test_two[[]lab-a->lab-b[]]",
        "*test_two[[]lab-c->lab-a[]]", "*test_two[[]lab-c->lab-b[]]",
        "*test_two[[]lab-b->lab-a[]]", "*test_two[[]lab-b->lab-c[]]",
    ])


def test_requires_clusters_skips_with_reason(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.requires_clusters(2)
        @pytest.mark.check("connectivity/cross-cluster-pod")
        def test_cross(pair):
            pass

        @pytest.mark.requires_clusters(3)
        @pytest.mark.check("demo/three")
        def test_three():
            pass
    ''')
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "*needs at least 2 clusters for ordered pairs; 1 cluster selected (lab-a)*",
        "*requires 3 clusters; 1 cluster selected (lab-a)*",
    ])
    records = {r["check_id"]: r for r in results(pytester)["checks"]}
    assert records["demo/three"]["verdict"] == "skipped"
    assert "requires 3 clusters" in records["demo/three"]["message"]


def test_disruptive_needs_allow_disruptive(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.disruptive
        @pytest.mark.check("failover/demo")
        def test_drain():
            pass
    ''')
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*disruptive check: pass --allow-disruptive to run it*"])
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a",
                 "--allow-disruptive")
    result.assert_outcomes(passed=1)


def test_check_marker_selects_and_validates(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("demo/a", level="recommended")
        def test_a():
            pass

        def test_plain():
            pass
    ''')
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "-m", "check")
    result.assert_outcomes(passed=1, deselected=1)
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "-k", "demo/a")
    result.assert_outcomes(passed=1, deselected=1)
    pytester.makepyfile(test_bad='''
        import pytest

        @pytest.mark.check("NoSlash")
        def test_a():
            pass
    ''')
    result = run(pytester, "test_bad.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs an id like 'suite/name'*'NoSlash'*"])


def test_duplicate_check_ids_are_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("demo/same")
        def test_a():
            pass

        @pytest.mark.check("demo/same")
        def test_b():
            pass
    ''')
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*check id 'demo/same' is declared twice*"])


# --- bad input: usage errors at configure time -----------------------------------------------

def usage_error(result: pytest.RunResult, *patterns: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([f"ERROR: *{p}*" if i == 0 else f"*{p}*"
                                 for i, p in enumerate(patterns)])


def test_no_kubeconfig_found(pytester: pytest.Pytester) -> None:
    usage_error(run(pytester, "--contexts=lab-*"),
                "no kubeconfig found*Pass --kubeconfig PATH (repeatable) or set KUBECONFIG")


def test_missing_kubeconfig_file(pytester: pytest.Pytester) -> None:
    usage_error(run(pytester, "--contexts=lab-*", "--kubeconfig=nope.yaml"),
                "--kubeconfig: file not found: nope.yaml")


def test_malformed_kubeconfig_names_the_file(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    broken = pytester.path / "broken.yaml"
    broken.write_text("clusters:\n  - name: [unterminated\n")
    usage_error(
        run(pytester, "--contexts=lab-*", f"--kubeconfig={kubeconfig}", f"--kubeconfig={broken}"),
        f"kubeconfig {broken} is malformed: not valid YAML (line *",
    )


def test_kubeconfig_env_path_list_is_merged(pytester: pytest.Pytester, kubeconfig: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    other = pytester.path / "other.yaml"
    other.write_text(yaml.safe_dump(kubeconfig_dict(["prod-eu", "lab-a"])))
    monkeypatch.setenv("KUBECONFIG", f"{other}:{kubeconfig}")
    pytester.makepyfile(API_READY_CHECK)
    result = run(pytester, "--contexts=prod-*,lab-b", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_api_ready[[]prod-eu[]]", "*test_api_ready[[]lab-b[]]"])


def test_glob_matching_nothing_lists_contexts(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    usage_error(run(pytester, "--contexts=prod-*", f"--kubeconfig={kubeconfig}"),
                "--contexts: 'prod-*' matched no context in *Existing contexts: lab-a, lab-b, lab-c")


def test_context_with_missing_user(pytester: pytest.Pytester) -> None:
    data = kubeconfig_dict(["lab-a"])
    data["contexts"][0]["context"]["user"] = "ghost"
    path = pytester.path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    usage_error(run(pytester, "--contexts=lab-a", f"--kubeconfig={path}"),
                "context 'lab-a' (in *kc.yaml) refers to user 'ghost', which no kubeconfig file "
                "defines")


def test_context_with_missing_cluster(pytester: pytest.Pytester) -> None:
    data = kubeconfig_dict(["lab-a"])
    data["clusters"] = []
    path = pytester.path / "kc.yaml"
    path.write_text(yaml.safe_dump(data))
    usage_error(run(pytester, "--contexts=lab-a", f"--kubeconfig={path}"),
                "context 'lab-a' (in *kc.yaml) refers to cluster 'lab-a-cluster'")


def test_invalid_expectations_file(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    exp = pytester.path / "exp.yaml"
    exp.write_text("contexts:\n- match: 'lab-*'\n  rbac:\n    allow:\n    - {verb: fetch, "
                   "resource: pods}\n")
    usage_error(run(pytester, f"--expectations={exp}"),
                f"expectations file {exp}: invalid at contexts[[]0[]].rbac.allow[[]0[]].verb: "
                "'fetch' is not one of*")


def test_unknown_probe_image_name(pytester: pytest.Pytester) -> None:
    usage_error(run(pytester, "--probe-image=bosybox=docker.io/library/busybox:1.36.1"),
                "unknown image name 'bosybox'. Valid names: busybox, curl.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--run-id=Not_Valid",), "--run-id 'Not_Valid': use 1-42 lowercase letters"),
        (("--connect-timeout=soon",), "--connect-timeout 'soon': expected a number of seconds"),
        (("--request-timeout=0",), "--request-timeout '0': must be greater than 0"),
        (("--probe-image=busybox=busybox:latest",), "use a fully qualified reference"),
    ],
)
def test_bad_option_values(pytester: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    usage_error(run(pytester, *args), message)


def test_space_separated_path_option_outside_checkout(pytester: pytest.Pytester,
                                                      kubeconfig: Path) -> None:
    elsewhere = pytester.mkdir("elsewhere")
    (pytester.path / "pyproject.toml").unlink()
    target = elsewhere / "kc.yaml"
    target.write_text(kubeconfig.read_text())
    result = pytester.runpytest_subprocess(*PLUGIN, "--contexts=lab-a", "--kubeconfig", str(target))
    usage_error(result, "took the value of --kubeconfig for a test path. Write --kubeconfig=")


def test_list_images(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--list-images")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["busybox=docker.io/library/busybox:1.36.1",
                                 "curl=docker.io/curlimages/curl:8.10.1"])
    # every stdout line is NAME=REF; what the mesh's injector adds is said on stderr
    assert all("=" in line for line in result.stdout.str().splitlines() if line.strip())
    result.stderr.fnmatch_lines(["*mesh*sidecars*injector*"])
    result = run(pytester, "--list-images", "--probe-image=busybox=lab.fleetcheck.invalid/busybox:1.35.0")
    result.stdout.fnmatch_lines(["busybox=lab.fleetcheck.invalid/busybox:1.35.0"])
    assert "collected" not in result.stdout.str()


# --- unreachable contexts -----------------------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung API server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for c in conns:
        c.close()
    sock.close()


def test_dead_and_hung_contexts_are_unknown_quickly(pytester: pytest.Pytester, kubeconfig: Path,
                                                    silent_server: int) -> None:
    data = yaml.safe_load(kubeconfig.read_text())
    data["clusters"][1]["cluster"]["server"] = f"https://127.0.0.1:{silent_server}"
    kubeconfig.write_text(yaml.safe_dump(data))
    pytester.makepyfile('''
        import pytest

        @pytest.mark.check("connectivity/api-ready")
        def test_api_ready(target):
            pass

        @pytest.mark.check("demo/second")
        def test_second(target, evidence):
            pass
    ''')
    start = time.monotonic()
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-*",
                 "--connect-timeout=1")
    elapsed = time.monotonic() - start
    assert elapsed <= 5, f"took {elapsed:.1f}s"
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines([
        "*lab-a: server https://127.0.0.1:*UNREACHABLE: API server *connection refused*",
        "*lab-b: server https://127.0.0.1:*UNREACHABLE: API server *(read timeout)*",
        "*0 conformant, 0 non-conformant, 6 unknown, 0 skipped*",
    ])
    data = results(pytester)
    assert {c["verdict"] for c in data["checks"]} == {"unknown"}
    assert all("could not be carried out" in c["message"] for c in data["checks"])
    junit = (report_dir(pytester) / "junit.xml").read_text()
    assert junit.count('name="verdict" value="unknown"') == 6


# --- verdicts, evidence, reports ----------------------------------------------------------------

VERDICT_CHECKS = '''
import logging
import pytest
from fleetcheck import Unknown

@pytest.fixture
def broken_probe():
    from fleetcheck.core.evidence import text
    raise Unknown("probe pod never became Ready: ImagePullBackOff",
                  evidence=[text("events of pod probe-busybox", "Failed: ErrImagePull")])

@pytest.mark.check("demo/pass")
def test_pass(evidence):
    evidence.text("measurement", "all good")

@pytest.mark.check("demo/fail", level="recommended")
def test_fail(check, evidence):
    evidence.table("matrix", ["verb", "allowed"], [["get", "yes"], ["delete", "yes"]])
    check.require(False, expected="delete denied", observed="delete allowed")

@pytest.mark.check("demo/plain-assert")
def test_plain_assert():
    assert 1 == 2, "numbers differ"

@pytest.mark.check("demo/unknown")
def test_unknown():
    raise Unknown("forbidden to create pods")

@pytest.mark.check("demo/unknown-fixture")
def test_unknown_fixture(broken_probe):
    pass

@pytest.mark.check("demo/error")
def test_error():
    raise RuntimeError("API said 500")

@pytest.mark.check("demo/skip")
def test_skip():
    pytest.skip("no mesh installed")
'''


def test_verdicts_and_report_content(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    pytester.makepyfile(VERDICT_CHECKS)
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "--run-id=fc-v")
    result.assert_outcomes(passed=1, failed=4, errors=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*1 conformant, 2 non-conformant, 3 unknown, 1 skipped  (run fc-v)",
        "NON-CONFORMANT: demo/fail: expected delete denied; observed delete allowed",
    ])
    out = pytester.path / "reports" / "fc-v"
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "junit.xml", "metrics.txt", "report.html", "results.json"]
    data = json.loads((out / "results.json").read_text())
    by_id = {c["check_id"]: c for c in data["checks"]}
    assert {k: v["verdict"] for k, v in by_id.items()} == {
        "demo/pass": "conformant",
        "demo/fail": "non-conformant",
        "demo/plain-assert": "non-conformant",
        "demo/unknown": "unknown",
        "demo/unknown-fixture": "unknown",
        "demo/error": "unknown",
        "demo/skip": "skipped",
    }
    assert by_id["demo/fail"]["level"] == "recommended"
    assert "numbers differ" in by_id["demo/plain-assert"]["message"]
    assert "forbidden to create pods" in by_id["demo/unknown"]["message"]
    assert "ImagePullBackOff" in by_id["demo/unknown-fixture"]["message"]
    assert "RuntimeError: API said 500" in by_id["demo/error"]["message"]
    assert by_id["demo/skip"]["message"] == "no mesh installed"
    assert by_id["demo/pass"]["evidence"] == [
        {"name": "measurement", "kind": "text", "content": "all good"}]
    assert by_id["demo/unknown-fixture"]["evidence"] == [
        {"name": "events of pod probe-busybox", "kind": "text", "content": "Failed: ErrImagePull"}]
    assert data["run_id"] == "fc-v" and data["contexts"][0]["name"] == "lab-a"
    assert data["summary"] == {"conformant": 1, "non-conformant": 2, "unknown": 3, "skipped": 1}

    junit = (out / "junit.xml").read_text()
    assert '<property name="check_id" value="demo/fail" />' in junit
    assert '<property name="verdict" value="non-conformant" />' in junit
    assert 'name="evidence:matrix"' in junit
    assert '<property name="fleetcheck run id" value="fc-v" />' in junit

    page = (out / "report.html").read_text()
    assert "fleetcheck fc-v" in page  # title
    assert "Verdict" in page and "col-verdict" in page
    assert "evidence (table): matrix" in page
    assert "Context lab-a" in page  # environment table

    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split()[1] for line in sums) == [
        "junit.xml", "metrics.txt", "report.html", "results.json"]
    metrics = (out / "metrics.txt").read_text()
    assert 'fleetcheck_checks{run_id="fc-v",verdict="unknown"} 3' in metrics


def test_keep_on_failure_is_reported(pytester: pytest.Pytester, kubeconfig: Path) -> None:
    """Dead contexts have no probes to keep; the option must not break the run."""
    pytester.makepyfile(API_READY_CHECK)
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "--keep-on-failure")
    result.assert_outcomes(errors=1)
    assert results(pytester)["cleanup"] == {}


# --- no secrets in any output ----------------------------------------------------------------

def _key_and_cert() -> tuple[str, str]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetcheck-test-admin")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


LEAKY_CHECK = '''
import logging, os
import pytest
from fleetcheck import Unknown

SECRETS = {secrets!r}

@pytest.mark.check("demo/leaky-evidence")
def test_leaky_evidence(target, evidence):
    pass

@pytest.mark.check("demo/leaky")
def test_leaky(evidence, check):
    for name, value in SECRETS.items():
        evidence.text(f"dump of {{name}}", f"{{name}}: {{value}}")
        print("stdout", value)
        logging.getLogger("x").warning("log %s", value)
    check.require(False, expected="no secret", observed=SECRETS["token"])

@pytest.mark.check("demo/leaky-unknown")
def test_leaky_unknown():
    raise Unknown("Authorization: Bearer " + SECRETS["token"] + " rejected")

@pytest.mark.check("demo/leaky-error")
def test_leaky_error():
    raise RuntimeError(SECRETS["key_b64"])
'''


def test_no_secret_in_any_output(pytester: pytest.Pytester) -> None:
    import base64
    import re

    key_pem, cert_pem = _key_and_cert()
    token = "fc-planted-token-6b1f0e5c9d2a4471"
    password = "planted-password-77aa21"
    key_b64 = base64.b64encode(key_pem.encode()).decode()
    cert_b64 = base64.b64encode(cert_pem.encode()).decode()
    data = kubeconfig_dict(["lab-a", "lab-b"], token=token)
    data["users"][1]["user"] = {"client-key-data": key_b64, "client-certificate-data": cert_b64}
    data["users"].append({"name": "basic", "user": {"username": "admin", "password": password}})
    data["contexts"].append({"name": "lab-basic", "context": {"cluster": "lab-a-cluster",
                                                              "user": "basic"}})
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(data))
    secrets = {"token": token, "password": password, "key_b64": key_b64, "cert_b64": cert_b64,
               "key_pem": key_pem}
    pytester.makepyfile(LEAKY_CHECK.format(secrets=secrets))
    result = run(pytester, f"--kubeconfig={path}", "--contexts=lab-*", "-rA")
    result.assert_outcomes(failed=3, errors=3)

    # every secret, in every form it could take
    key_body = [line for line in key_pem.splitlines() if line and "-----" not in line]
    cert_body = [line for line in cert_pem.splitlines() if line and "-----" not in line]
    needles = [token, password, key_b64, cert_b64, *key_body, *cert_body]

    def texts_of(p: Path) -> list[str]:
        text = p.read_text(errors="replace")
        out = [text]
        # self-contained HTML embeds assets as base64 data URIs: look inside them too
        for blob in re.findall(r"base64,([A-Za-z0-9+/=]+)", text):
            try:
                out.append(base64.b64decode(blob).decode("utf-8", "replace"))
            except ValueError:
                pass
        return out

    files = [p for p in (pytester.path / "reports").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"report.html", "junit.xml", "results.json", "metrics.txt",
                                       "SHA256SUMS"}
    terminal = result.stdout.str() + result.stderr.str()
    for needle in needles:
        assert needle not in terminal, f"secret on the terminal: {needle[:12]}..."
        for p in files:
            for text in texts_of(p):
                assert needle not in text, f"secret in {p.name}: {needle[:12]}..."
    assert "***REDACTED***" in (report_dir(pytester) / "results.json").read_text()


# --- pytest-xdist ------------------------------------------------------------------------------

def test_xdist_groups_per_context_and_only_controller_writes(pytester: pytest.Pytester,
                                                             kubeconfig: Path) -> None:
    import re

    pytester.makepyfile("""
        import pytest

        @pytest.mark.check("demo/one")
        def test_one(target):
            pass

        @pytest.mark.check("demo/two")
        def test_two(target):
            pass

        @pytest.mark.check("demo/three")
        @pytest.mark.parametrize("verb", ["get", "list"])
        def test_three(target, verb):
            pass

        @pytest.mark.requires_clusters(2)
        @pytest.mark.check("demo/pairs")
        def test_pairs(pair):
            pass
    """)
    result = pytester.runpytest_subprocess(*PLUGIN, f"--kubeconfig={kubeconfig}",
                                           "--contexts=lab-*", "-n", "2", "--run-id=fc-x", "-v")
    result.assert_outcomes(errors=18)
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        m = re.match(r"\[(gw\d)\] .* ERROR \S+\[(?:\w+-)?(lab-\w)(?:->lab-\w)?(?:-\w+)?\]", line)
        if m:
            workers.setdefault(m.group(2), set()).add(m.group(1))
    assert set(workers) == {"lab-a", "lab-b", "lab-c"}, result.stdout.str()
    assert all(len(w) == 1 for w in workers.values()), workers
    out = pytester.path / "reports" / "fc-x"
    data = json.loads((out / "results.json").read_text())
    assert len(data["checks"]) == 18
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "junit.xml", "metrics.txt", "report.html", "results.json"]


def test_context_group_of_node_ids() -> None:
    from fleetcheck.plugin.scheduling import context_group

    names = ["lab-a", "lab-a-b", "lab-b", "lab-a->lab-b"]
    assert context_group("s.py::t[lab-a]", names) == "lab-a"
    assert context_group("s.py::t[lab-a-b]", names) == "lab-a-b"
    assert context_group("s.py::t[lab-a->lab-b]", names) == "lab-a"
    assert context_group("s.py::t[lab-b-get]", names) == "lab-b"
    assert context_group("s.py::t[get-lab-b]", names) == "lab-b"
    assert context_group("s.py::t[lab-b]@lab-b", names) == "lab-b"
    assert context_group("s.py::t", names) is None
    assert context_group("s.py::t[other]", names) is None


# --- a run that collects no check -------------------------------------------------------------

NO_CHECK_SENTENCE = "no fleetcheck check was collected: *"


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_contexts_run_collecting_no_check_fails(pytester: pytest.Pytester, kubeconfig: Path,
                                                xdist: bool) -> None:
    """A directory with its own pytest configuration and only an ordinary test: ``--contexts``
    selects clusters but no check runs, which must not read as a pass."""
    (pytester.path / "pyproject.toml").unlink()
    pytester.makeini("[pytest]\n")
    pytester.makeconftest("")
    pytester.makepyfile("def test_ordinary():\n    assert True\n")
    args = (*PLUGIN, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "--connect-timeout=1")
    result = (pytester.runpytest_subprocess(*args, "-n", "2") if xdist
              else pytester.runpytest(*args))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([NO_CHECK_SENTENCE])
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_contexts_run_collecting_no_check_keeps_a_failure_of_its_own(
        pytester: pytest.Pytester, kubeconfig: Path) -> None:
    """The user's own failing test still exits 1 (pytest's meaning), with the sentence."""
    pytester.makepyfile("def test_ordinary():\n    assert False\n")
    result = run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a",
                 "--connect-timeout=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([NO_CHECK_SENTENCE])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# --- nothing a cluster says reaches the terminal raw ------------------------------------------

#: clear the screen, set the window title, ring the bell, then rewrite the line from its start
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\rall checks passed"

HOSTILE_CHECKS = '''
import pytest
from fleetcheck import Unknown

MESSAGE = {message!r}

@pytest.mark.check("demo/hostile-unknown")
def test_hostile_unknown():
    print("pod log:", MESSAGE)
    raise Unknown("event message: " + MESSAGE)

@pytest.mark.check("demo/hostile-finding")
def test_hostile_finding(check):
    check.require(False, expected="Ready", observed="condition message: " + MESSAGE)

@pytest.mark.check("demo/hostile-error")
def test_hostile_error():
    raise RuntimeError("API said: " + MESSAGE)

@pytest.mark.check("demo/hostile-skip")
def test_hostile_skip():
    pytest.skip("not applicable: " + MESSAGE)

@pytest.mark.check("demo/hostile-api")
def test_hostile_api(target):
    pass
'''


def test_no_control_character_from_a_cluster_reaches_the_terminal(
        pytester: pytest.Pytester) -> None:
    """Messages, captured output, skip reasons and context names are printed with their
    control characters shown as escapes (``\\x1b``); results.json keeps the text as it was."""
    hostile_context = "lab-\x1b]0;ctx\x07"
    path = pytester.path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig_dict(["lab-a", hostile_context])))
    pytester.makepyfile(HOSTILE_CHECKS.format(message=HOSTILE))
    result = run(pytester, f"--kubeconfig={path}", "--contexts=lab-*", "--connect-timeout=1",
                 "--color=no", "-rA", "--run-id=fc-esc")
    terminal = result.stdout.str() + result.stderr.str()
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in terminal, f"{raw!r} on the terminal"
    shown = "\\x1b[2J\\x1b]0;pwned\\x07\\x0dall checks passed"
    result.stdout.fnmatch_lines([
        "NON-CONFORMANT: demo/hostile-finding: *condition message: " + shown.replace("[", "[[]"),
        "UNKNOWN: demo/hostile-unknown: could not be carried out: event message: "
        + shown.replace("[", "[[]"),
    ])
    assert terminal.count(shown) >= 6  # summary, longreprs, captured output, skip reason
    assert "lab-\\x1b]0;ctx\\x07" in terminal  # the header and the summary name the context
    data = results(pytester)
    messages = {c["check_id"]: c["message"] for c in data["checks"]}
    assert HOSTILE in messages["demo/hostile-unknown"]  # faithful; JSON escapes it


LOST_CONNECTION = '''
import pytest
import urllib3

@pytest.mark.check("adhoc/lost-connection")
def test_lost(fleet):
    pool = urllib3.HTTPSConnectionPool("127.0.0.1", 1)
    raise urllib3.exceptions.MaxRetryError(pool, "/api/v1/nodes", urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))

@pytest.mark.check("adhoc/a-bug")
def test_bug(fleet):
    raise KeyError("fleetcheck's own bug")

@pytest.mark.check("adhoc/api-layer-no-answer")
def test_api_layer(fleet):
    from kubernetes import client
    from fleetcheck.kube.api import Api
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = 0
    Api(client.ApiClient(cfg), (1, 1), "lab-a").get("/api/v1/nodes")

@pytest.mark.check("adhoc/api-layer-refusal")
def test_api_layer_refusal(fleet):
    from fleetcheck.kube.api import ApiError
    raise ApiError("list nodes", "forbidden", 403, "nodes is forbidden")
'''


def test_a_connection_lost_during_a_check_is_unknown_without_a_traceback(
        pytester: pytest.Pytester, kubeconfig: Path) -> None:
    """An API server restarting or a proxy resetting mid-check measured nothing: unknown with
    a sentence; a bug of fleetcheck's (any other exception) keeps its traceback."""
    pytester.makepyfile(LOST_CONNECTION)
    run(pytester, f"--kubeconfig={kubeconfig}", "--contexts=lab-a", "--connect-timeout=1")
    records = {r["check_id"]: r for r in results(pytester)["checks"]}
    lost = records["adhoc/lost-connection"]
    assert lost["verdict"] == "unknown"
    assert "could not be carried out: lost contact with an API server during the check: API " \
        "server: connection broken: ('Connection aborted.'" in lost["message"], lost["message"]
    assert "(call error)" not in lost["message"]
    assert "(call error): KeyError" in records["adhoc/a-bug"]["message"]
    # the API layer's "no answer" is a lost contact too; a refusal it classified is not
    no_answer = records["adhoc/api-layer-no-answer"]
    assert no_answer["verdict"] == "unknown", no_answer
    assert "lost contact with an API server during the check: API server unreachable: " \
        "connection refused" in no_answer["message"], no_answer
    assert "(call error)" not in no_answer["message"]
    assert "(call error): ApiError" in records["adhoc/api-layer-refusal"]["message"]
