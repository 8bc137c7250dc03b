"""Pure logic: verdict mapping, findings, scrubbing, images, options helpers, evidence, probes'
manifests and status parsing, report files."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from fleetcheck.core import evidence as ev
from fleetcheck.core.checks import CheckInfo
from fleetcheck.core.images import DEFAULT_IMAGES, ImageError, resolve
from fleetcheck.core.scrub import REDACTED, Scrubber
from fleetcheck.core.verdicts import (
    Finding,
    NonConformant,
    Unknown,
    Verdict,
    combine,
    verdict_for_phase,
)
from fleetcheck.kube.manifests import namespace_manifest, parse_rfc3339, restricted_pod
from fleetcheck.kube.podstatus import pod_readiness
from fleetcheck.kube.probes import ExecResult, _exit_code_from_status, is_transient, with_deadline
from fleetcheck.report.results import (
    ResultsCollector,
    render_metrics,
    strip_group,
    write_sha256sums,
)
from fleetcheck.run.settings import RUN_ID_RE, default_run_id
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


@pytest.mark.parametrize(
    ("when", "outcome", "exc", "verdict"),
    [
        ("call", "passed", None, Verdict.CONFORMANT),
        ("call", "failed", AssertionError("x"), Verdict.NON_CONFORMANT),
        ("call", "failed", Unknown("probe never Ready"), Verdict.UNKNOWN),
        ("call", "failed", RuntimeError("bug or API error"), Verdict.UNKNOWN),
        ("setup", "failed", Unknown("unreachable"), Verdict.UNKNOWN),
        ("setup", "failed", AssertionError("in a fixture"), Verdict.UNKNOWN),
        ("setup", "skipped", None, Verdict.SKIPPED),
        ("call", "skipped", None, Verdict.SKIPPED),
    ],
)
def test_verdict_mapping(when: str, outcome: str, exc: BaseException | None,
                         verdict: Verdict) -> None:
    assert verdict_for_phase(when, outcome, exc) is verdict


def test_combining_phases() -> None:
    c, u, n, s = Verdict.CONFORMANT, Verdict.UNKNOWN, Verdict.NON_CONFORMANT, Verdict.SKIPPED
    assert combine(None, c, "setup") is c
    assert combine(c, n, "call") is n
    assert combine(u, c, "teardown") is u
    assert combine(c, u, "teardown") is c  # a cleanup error is not a verdict
    assert combine(s, c, "teardown") is s


def test_finding_renders_auditable_sentence() -> None:
    f = Finding("dns/in-cluster", "lab-a", "kubernetes.default -> 10.0.0.1",
                "NXDOMAIN after 0.2s")
    assert str(f) == ("dns/in-cluster [lab-a]: expected kubernetes.default -> 10.0.0.1; "
                      "observed NXDOMAIN after 0.2s")
    err = NonConformant(f)
    assert isinstance(err, AssertionError) and err.finding is f and str(err) == str(f)
    info = CheckInfo("x/y", context="a->b", contexts=["a", "b"])
    with pytest.raises(NonConformant, match=r"x/y \[a->b\]: expected 1; observed 2"):
        info.require(False, expected="1", observed="2")
    info.require(True, expected="1", observed="1")


def test_scrubber_removes_known_values_and_patterns() -> None:
    import base64

    token = "abcd.efgh-TOKEN-1234567890"
    # a fake key, its PEM label assembled here so no key-shaped text is committed
    label = "RSA " + "PRIVATE KEY"
    key = f"-----BEGIN {label}-----\nMIIEowIBAAKCAQEAsecretkeymaterial1234\n-----END {label}-----\n"
    key_b64 = base64.b64encode(key.encode()).decode()
    s = Scrubber([token, key_b64])
    text = (f"token={token} data={key_b64} pem={key} Authorization: Bearer other-token-xyz "
            f"password: hunter2hunter2")
    out = s(text)
    for secret in (token, key_b64, "MIIEowIBAAKCAQEAsecretkeymaterial1234", "other-token-xyz",
                   "hunter2hunter2"):
        assert secret not in out
    assert REDACTED in out
    assert s("nothing secret here") == "nothing secret here"


def test_images() -> None:
    assert resolve([]) == DEFAULT_IMAGES
    lab = resolve(["busybox=lab.fleetcheck.invalid/busybox:1.35.0"])
    assert lab["busybox"] == "lab.fleetcheck.invalid/busybox:1.35.0"
    with pytest.raises(ImageError, match="unknown image name 'bosybox'. Valid names: busybox, curl"):
        resolve(["bosybox=docker.io/library/busybox:1.36.1"])
    for bad in ("busybox:1.36", "docker.io/library/busybox", "docker.io/library/busybox:latest",
                "busybox"):
        with pytest.raises(ImageError):
            resolve([f"busybox={bad}"])
    with pytest.raises(ImageError, match="expected NAME=REF"):
        resolve(["busybox"])


def test_run_id_format() -> None:
    rid = default_run_id(dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert rid.startswith("fc-20250102-030405-") and RUN_ID_RE.match(rid)


def test_evidence_items_and_scrubbing() -> None:
    e = ev.Evidence(Scrubber(["s3cr3t-token-value"]))
    e.text("note", "uses s3cr3t-token-value")
    e.table("matrix", ["verb", "allowed"], [["get", True], ["delete", False]])
    e.object("secret", {"kind": "Secret", "metadata": {"name": "x", "managedFields": [{}]},
                        "data": {"k": "dmFsdWU="}})
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", labels={"a": "b"}))
    e.object("pod", pod)
    texts = {i.name: i.content for i in e}
    assert "s3cr3t" not in texts["note"]
    assert texts["matrix"].splitlines()[0].split() == ["verb", "allowed"]
    assert "dmFsdWU=" not in texts["secret"] and "managedFields" not in texts["secret"]
    assert "name: p" in texts["pod"]
    with ev.collecting(e):
        ev.record(ev.text("auto", "recorded"))
    assert e.items[-1].name == "auto"
    assert ev.current() is not e


def test_probe_pod_is_restricted() -> None:
    pod = restricted_pod("probe-busybox", "r.example/busybox:1", ["sleep", "60"], run_id="fc-1",
                         ttl_s=60)
    spec = pod["spec"]
    c = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert spec["activeDeadlineSeconds"] == 60
    assert pod["metadata"]["labels"]["fleetcheck.io/run-id"] == "fc-1"


def test_namespace_manifest() -> None:
    now = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
    ns = namespace_manifest("fc-x", 3600, now)
    meta = ns["metadata"]
    assert meta["name"] == "fleetcheck-fc-x"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "fleetcheck"
    assert meta["labels"]["fleetcheck.io/run-id"] == "fc-x"
    assert meta["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert meta["annotations"]["fleetcheck.io/expires-at"] == "2025-01-01T13:00:00Z"
    assert parse_rfc3339("2025-01-01T13:00:00Z") == now + dt.timedelta(hours=1)
    with pytest.raises(ValueError):
        parse_rfc3339("2025-01-01T13:00:00")


def test_exit_status_parsing() -> None:
    assert _exit_code_from_status('{"metadata":{},"status":"Success"}') == 0
    failure = ('{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
               '[{"reason":"ExitCode","message":"7"}]}}')
    assert _exit_code_from_status(failure) == 7
    assert _exit_code_from_status("") is None
    r = ExecResult(["sh", "-c", "echo hi"], 0, "hi\n", "", 0.1, "ns/p", "lab-a")
    assert r.ok and "$ sh -c 'echo hi'" in r.render()


def test_transient_errors() -> None:
    assert is_transient(ApiException(status=0, reason="[Errno 111] Connection refused"))
    assert is_transient(ApiException(status=0, reason="Handshake status 500 Internal Server Error"))
    assert not is_transient(ApiException(status=0, reason="Handshake status 403 Forbidden"))
    assert not is_transient(ApiException(status=0, reason="Handshake status 404 Not Found"))
    assert is_transient(ApiException(status=503))
    assert not is_transient(ApiException(status=403))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError())


def _pod(phase: str, ready: bool = False, waiting: str | None = None) -> k8s.V1Pod:
    state = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=waiting, message="m")) \
        if waiting else k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    return k8s.V1Pod(status=k8s.V1PodStatus(
        phase=phase,
        conditions=[k8s.V1PodCondition(type="Ready", status="True" if ready else "False")],
        container_statuses=[k8s.V1ContainerStatus(name="main", image="i", image_id="",
                                                   ready=ready, restart_count=0, state=state)],
    ))


def test_pod_readiness() -> None:
    assert pod_readiness(_pod("Running", ready=True))[0] is True
    ready, problem, fatal = pod_readiness(_pod("Pending", waiting="ImagePullBackOff"))
    assert not ready and fatal and "ImagePullBackOff" in problem
    ready, problem, fatal = pod_readiness(_pod("Pending", waiting="ContainerCreating"))
    assert not ready and not fatal
    assert pod_readiness(_pod("Failed"))[2] is True


def test_report_files(tmp_path: Path) -> None:
    collector = ResultsCollector()
    base = {"check_id": "connectivity/api-ready", "level": "required", "context": "lab-a",
            "contexts": ["lab-a"], "phase_outcome": "passed"}
    collector.add("s.py::t[lab-a]@lab-a", "setup", 0.1, {**base, "verdict": "conformant",
                                                          "message": ""})
    collector.add("s.py::t[lab-a]@lab-a", "call", 0.2, {**base, "verdict": "non-conformant",
                                                         "message": "bad \"thing\""})
    collector.add("s.py::t[lab-a]@lab-a", "teardown", 0.0, {**base, "verdict": "non-conformant",
                                                             "message": "bad", "evidence": []})
    assert list(collector.records) == ["s.py::t[lab-a]"]
    assert collector.counts()["non-conformant"] == 1
    assert collector.failed_contexts() == {"lab-a"}
    metrics = render_metrics({"run_id": "r", "contexts": [{"name": "lab-a", "version": "v1"}]},
                             collector)
    assert 'verdict="non-conformant"} 1' in metrics and metrics.endswith("# EOF\n")
    assert strip_group("a.py::t[viewer@lab-a]@viewer@lab-a") == "a.py::t[viewer@lab-a]"
    (tmp_path / "a.txt").write_text("x")
    sums = write_sha256sums(tmp_path).read_text()
    assert sums == f"{hashlib.sha256(b'x').hexdigest()}  a.txt\n"


def test_with_deadline() -> None:
    import time

    assert with_deadline(lambda: 42, 1) == 42
    with pytest.raises(KeyError):
        with_deadline(lambda: {}["x"], 1)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        with_deadline(lambda: time.sleep(5), 0.2)
    assert time.monotonic() - start < 1


def test_lookup_batch_splits_answers_per_name() -> None:
    from fleetcheck.kube.probes import ExecResult
    from fleetcheck.kube.traffic import parse_lookup_batch

    out = (
        "@@fc-lookup 0\nServer:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"
        "Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\n\n"
        "real\t0m 0.01s\nuser\t0m 0.00s\nsys\t0m 0.00s\n@@fc-rc 0\n"
        "@@fc-lookup 1\nServer:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"
        "** server can't find nope.svc.cluster.local: NXDOMAIN\n\n"
        "real\t0m 0.02s\nuser\t0m 0.00s\nsys\t0m 0.00s\n@@fc-rc 1\n"
        "@@fc-lookup 2\nnslookup: read: Connection refused\nCommand terminated by signal 9\n"
        "real\t0m 6.00s\nuser\t0m 0.00s\nsys\t0m 0.00s\n@@fc-rc 9\n"
        "@@fc-lookup 3\n"
    )
    result = ExecResult(["sh", "-c", "..."], 0, out, "", 5.1)
    a, b, c, d = parse_lookup_batch(
        ["kubernetes.default.svc.cluster.local", "nope.svc.cluster.local", "slow.example",
         "cut.example"], result)
    assert (a.status, a.addresses, a.server, a.latency_ms) == (
        "ok", ["10.96.0.1"], "10.96.0.10", 10.0)
    assert (b.status, b.latency_ms) == ("nxdomain", 20.0)
    assert (c.status, c.latency_ms) == ("timeout", None)   # killed: a DNS failure
    assert d.status == "timeout"                           # the exec ended first
    assert a.exec is result and d.exec is result


def test_readyz_summary_names_the_failing_sub_checks():
    from suites.test_connectivity import _readyz_summary
    body = ("[+]ping ok\n[+]log ok\n[+]etcd ok\n[-]etcd-readiness failed: reason withheld\n"
            "[+]informer-sync ok\n[-]poststarthook/rbac/bootstrap-roles failed: not finished\n"
            "readyz check failed\n")
    assert _readyz_summary(body) == ("failing: [-]etcd-readiness failed: reason withheld; "
                                     "[-]poststarthook/rbac/bootstrap-roles failed: not finished")
    assert _readyz_summary("no such thing\n") == "'no such thing'"
