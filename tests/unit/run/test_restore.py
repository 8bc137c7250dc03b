"""The restore path of disruptive checks without a cluster: the ledger (record before acting,
retries within a budget, what is left and how to undo it), Lease arithmetic, the cordon that
never touches an operator's, stop hooks isolated from each other and from the cleanup."""

from __future__ import annotations

import datetime as dt
import json
import types

import pytest
import yaml
from fchelpers import kubeconfig_dict
from fleetcheck.core.verdicts import Unknown
from fleetcheck.failover import drain as nodedrain
from fleetcheck.kube import locks, manifests
from fleetcheck.run.restore import Ledger
from kubernetes.client.exceptions import ApiException


class Flaky:
    """An undo that fails ``failures`` times (timeout, then 503), then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            if self.calls % 2:
                raise TimeoutError("read timed out")
            raise ApiException(status=503, reason="Service Unavailable")


def test_a_failed_undo_stays_recorded_and_is_retried_until_it_works() -> None:
    ledger = Ledger(budget_s=60, sleep=lambda _s: None)
    undo = Flaky(3)
    change = ledger.record("NoExecute taint t on Cluster m", "karmada", undo, "undo-cmd")
    assert ledger.pending() == [change]  # recorded before anything was done
    assert ledger.restore(change)
    assert undo.calls == 4 and change.attempts == 4 and change.done
    assert ledger.pending() == []
    assert ledger.restore(change) and undo.calls == 4  # once undone, never again


def test_a_restore_that_outlasts_its_budget_says_what_is_left_and_how_to_undo_it() -> None:
    ledger = Ledger(budget_s=0.3)
    change = ledger.record("cordon of node n1", "lab-c", Flaky(10**6),
                           "kubectl --context lab-c uncordon n1")
    assert not ledger.restore(change)
    assert change.attempts >= 2
    left = ledger.restore_all(0)
    assert left == [change]
    sentence = change.sentence()
    assert "cordon of node n1 (via lab-c) is NOT restored after" in sentence
    assert "HTTP 503 Service Unavailable" in sentence or "TimeoutError" in sentence
    assert sentence.endswith("undo it with: kubectl --context lab-c uncordon n1")
    assert ledger.to_list()[0]["restored"] is False


def test_restore_all_undoes_newest_first_and_keeps_going_past_a_failure() -> None:
    ledger = Ledger(budget_s=0.2)
    order: list[str] = []
    ledger.record("first", "k", lambda: order.append("first"), "c1")
    ledger.record("broken", "k", Flaky(10**6), "c2")
    ledger.record("last", "k", lambda: order.append("last"), "c3")
    left = ledger.restore_all()
    assert order == ["last", "first"]
    assert [c.what for c in left] == ["broken"]


def test_an_interrupt_during_restore_is_not_swallowed_and_the_change_stays() -> None:
    ledger = Ledger(budget_s=5)

    def undo() -> None:
        raise KeyboardInterrupt

    change = ledger.record("x", "k", undo, "c")
    with pytest.raises(KeyboardInterrupt):
        ledger.restore(change)
    assert ledger.pending() == [change]


# --- Leases ----------------------------------------------------------------------------------

def _lease(holder: str, renewed: dt.datetime | None, duration: int = 30) -> types.SimpleNamespace:
    return types.SimpleNamespace(spec=types.SimpleNamespace(
        holder_identity=holder, renew_time=renewed, acquire_time=renewed,
        lease_duration_seconds=duration))


def test_lease_is_held_only_while_renewed_within_its_duration() -> None:
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    assert locks.is_held(_lease("run-a", now - dt.timedelta(seconds=20)), now)
    assert locks.is_held(_lease("run-a", now - dt.timedelta(seconds=34)), now)  # slack
    assert not locks.is_held(_lease("run-a", now - dt.timedelta(seconds=36)), now)
    assert not locks.is_held(_lease("", now), now)
    assert not locks.is_held(_lease("run-a", None), now)
    assert not locks.is_held(None, now)


def test_lease_times_always_carry_microseconds() -> None:
    whole = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)
    assert locks._micro(whole).isoformat() == "2026-12-07T12:00:00.000001+00:00"
    naive = dt.datetime(2026, 12, 7, 12, 0, 0, 5)
    assert locks._micro(naive).tzinfo is not None


def test_server_clock_follows_the_date_header_not_the_local_clock() -> None:
    clock = locks.ServerClock()
    clock.learn({"Date": "Mon, 07 Dec 2026 12:00:00 GMT"})
    assert abs((clock.now() - dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)).total_seconds()) < 5


# --- cordon -------------------------------------------------------------------------------------

class FakeCore:
    """One node, as the API holds it; patches are merge patches guarded by resourceVersion."""

    def __init__(self, unschedulable: bool = False, annotations: dict | None = None,
                 fail_patches: int = 0) -> None:
        self.unschedulable = unschedulable
        self.annotations = dict(annotations or {})
        self.rv = 1
        self.patches: list[dict] = []
        self.fail_patches = fail_patches

    def read_node(self, name: str, **_kw: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            spec=types.SimpleNamespace(unschedulable=self.unschedulable),
            metadata=types.SimpleNamespace(name=name, annotations=dict(self.annotations),
                                           resource_version=str(self.rv)))

    def patch_node(self, name: str, patch: dict, **_kw: object) -> None:
        if self.fail_patches:
            self.fail_patches -= 1
            raise ApiException(status=504, reason="Gateway Timeout")
        assert patch["metadata"]["resourceVersion"] == str(self.rv)
        self.patches.append(patch)
        self.rv += 1
        for key, value in patch["metadata"].get("annotations", {}).items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value
        if "spec" in patch:
            self.unschedulable = patch["spec"]["unschedulable"]


def _cordon(core: FakeCore) -> nodedrain.Cordon:
    probes = types.SimpleNamespace(core=core, run_id="fc-run-1",
                                   target=types.SimpleNamespace(name="lab-c"))
    fleet = types.SimpleNamespace(ledger=Ledger(budget_s=5, sleep=lambda _s: None))
    fleet.restore = fleet.ledger.restore
    return nodedrain.Cordon(probes, "lab-c-n2", fleet, "failover/node-drain")


def test_cordon_is_recorded_marked_and_released() -> None:
    core = FakeCore()
    cordon = _cordon(core)
    cordon.cordon()
    assert core.unschedulable and core.annotations[nodedrain.CORDONED_BY] == "fc-run-1"
    assert cordon.release() and not core.unschedulable
    assert nodedrain.CORDONED_BY not in core.annotations


def test_uncordon_that_fails_is_retried_and_the_cordon_stays_recorded_meanwhile() -> None:
    core = FakeCore()
    cordon = _cordon(core)
    cordon.cordon()
    core.fail_patches = 2
    assert cordon.release()
    assert cordon.change.attempts == 3 and not core.unschedulable


def test_a_node_an_operator_cordoned_is_neither_cordoned_nor_uncordoned() -> None:
    core = FakeCore(unschedulable=True)
    cordon = _cordon(core)
    with pytest.raises(Unknown, match="already cordoned .not by fleetcheck: an operator's."):
        cordon.cordon()
    assert core.patches == []
    assert cordon.release()  # nothing of ours to undo
    assert core.unschedulable and core.patches == []


def test_a_cordon_request_lost_after_the_server_applied_it_is_still_undone() -> None:
    core = FakeCore()
    cordon = _cordon(core)
    original = core.patch_node

    def applied_but_lost(name: str, patch: dict, **kw: object) -> None:
        original(name, patch, **kw)
        raise ApiException(status=504, reason="Gateway Timeout")

    core.patch_node = applied_but_lost  # type: ignore[method-assign]
    with pytest.raises(Unknown, match="cannot cordon"):
        cordon.cordon()
    core.patch_node = original  # type: ignore[method-assign]
    assert core.unschedulable
    assert cordon.release() and not core.unschedulable


# --- stop hooks ---------------------------------------------------------------------------------

HOOKS = '''
import json, pathlib
import pytest

@pytest.mark.check("adhoc/hooks")
def test_hooks(fleet):
    def broken(_timeout):
        raise RuntimeError("stop hook exploded")

    def fine(_timeout):
        pathlib.Path("second-hook-ran").write_text("yes")

    fleet.on_stop(broken)
    fleet.on_stop(fine)
    fleet.record_change("a change that cannot be undone", "lab-a",
                        lambda: (_ for _ in ()).throw(TimeoutError("no answer")),
                        "kubectl --context lab-a do-undo")
'''


def test_a_stop_hook_that_raises_does_not_stop_the_others_nor_the_report(
        pytester: pytest.Pytester, isolated_pytester: pytest.Pytester) -> None:
    kubeconfig = pytester.path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(["lab-a"])))
    pytester.makepyfile(HOOKS)
    result = pytester.runpytest("-p", "fleetcheck.plugin", f"--kubeconfig={kubeconfig}",
                                "--contexts=lab-a", "--connect-timeout=1",
                                "--restore-budget=0.5")
    assert (pytester.path / "second-hook-ran").read_text() == "yes"
    result.stdout.fnmatch_lines([
        "*cleanup: the stop hook *broken failed (RuntimeError: stop hook exploded)*",
        "*changes made to clusters: 1, restored: 0*",
        ("*NOT RESTORED: a change that cannot be undone (via lab-a) is NOT restored after *"
        "TimeoutError: no answer; undo it with: kubectl --context lab-a do-undo*"),
    ])
    assert result.ret == 7
    [run_dir] = list((pytester.path / "reports").iterdir())
    data = json.loads((run_dir / "results.json").read_text())
    assert data["stop_errors"][0]["error"] == "RuntimeError: stop hook exploded"
    assert data["changes"][0]["restored"] is False
    assert data["changes"][0]["command"] == "kubectl --context lab-a do-undo"
    assert (run_dir / "SHA256SUMS").exists()


def test_janitor_mark_recognises_run_ids_and_shards_only() -> None:
    from fleetcheck.cli.janitor import _is_run_mark

    assert _is_run_mark("fc-20261207-120000-ab12")
    assert _is_run_mark("fc-20261207-120000-ab12-s2")
    assert not _is_run_mark("")
    assert not _is_run_mark("Operator Bob")



# --- janitor ------------------------------------------------------------------------------------

def _janitor_target(monkeypatch: pytest.MonkeyPatch, phase: str, beat: bool | None,
                    core: FakeCore) -> tuple:
    import argparse

    from fleetcheck.cli import janitor

    run = "fc-20261207-120000-ab12"
    ns = types.SimpleNamespace(
        metadata=types.SimpleNamespace(
            name=f"fleetcheck-{run}", annotations={manifests.EXPIRES_AT: "2999-01-01T00:00:00Z"},
            labels={manifests.RUN_ID_LABEL: run, manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY}),
        status=types.SimpleNamespace(phase=phase))
    monkeypatch.setattr(janitor, "list_probe_namespaces", lambda *_a: [ns])
    monkeypatch.setattr(janitor, "delete_namespace", lambda *_a: True)
    monkeypatch.setattr(locks, "heartbeat_alive", lambda *_a: beat)
    monkeypatch.setattr(locks, "lock_holder", lambda *_a: (None, False))
    monkeypatch.setattr(janitor, "clean_cluster_taints", lambda *_a: ([], True))
    core.list_node = lambda **_kw: types.SimpleNamespace(items=[core.read_node("n2")])
    import kubernetes.client as k8s

    monkeypatch.setattr(k8s, "CoreV1Api", lambda _client: core)
    target = types.SimpleNamespace(api_client=object(), name="lab-c", server="")
    args = argparse.Namespace(run_id=None, dry_run=False, connect_timeout=1, request_timeout=1)
    return janitor.clean_context(target, args, dt.datetime.now(dt.UTC)), run


def test_janitor_undoes_a_dead_runs_cordon_retrying_a_conflict_and_deletes_its_namespace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    core = FakeCore(unschedulable=True,
                    annotations={nodedrain.CORDONED_BY: "fc-20261207-120000-ab12"})
    original = core.patch_node
    calls = []

    def conflict_once(name: str, patch: dict, **kw: object) -> None:
        calls.append(patch)
        if len(calls) == 1:
            core.rv += 1  # the kubelet updated the node meanwhile
            raise ApiException(status=409, reason="Conflict")
        original(name, patch, **kw)

    core.patch_node = conflict_once  # type: ignore[method-assign]
    (lines, ok), run = _janitor_target(monkeypatch, "Active", False, core)
    assert ok, lines
    assert f"lab-c: deleted fleetcheck-{run} (run {run}, dead: heartbeat stale)" in lines
    assert f"lab-c: uncordoned node n2 (run {run})" in lines
    assert len(calls) == 2 and not core.unschedulable


def test_janitor_says_a_terminating_namespace_is_being_deleted_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    (lines, _), run = _janitor_target(monkeypatch, "Terminating", None, FakeCore())
    assert lines[0] == f"lab-c: fleetcheck-{run} is already being deleted (run {run})", lines
