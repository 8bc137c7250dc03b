"""Service mesh: the mesh's control plane in every context, its links between clusters, and
traffic through it from one cluster to another.

The mesh is detected by API group (see :mod:`fleetcheck.mesh`); checks are skipped, with the
reason, on a context without a mesh, with a mesh fleetcheck has no adapter for (only Istio has
one), with ``mesh.type: none``, on a federation control plane, and on a second context of an
already selected cluster.  The data plane the checks measure (a namespace, an echo, services
and a curl probe with the mesh's sidecar in every mesh context) is described in
:mod:`fleetcheck.mesh`; what is read from istiod, and how, in :mod:`fleetcheck.mesh.istio`.
"""

from __future__ import annotations

import shlex
import time

import pytest
from fleetcheck import CheckInfo, Evidence, FleetRun, Pair, Target, Unknown
from fleetcheck.kube import traffic as netprobe
from fleetcheck.kube.workloads import ready_endpoint_ips
from fleetcheck.mesh import answers, dataplane, discover, istio, istioparse

pytestmark = [pytest.mark.mesh, pytest.mark.workloads]


def _istio(fleet: FleetRun, target: Target) -> list[str]:
    """Skip unless ``target`` runs a mesh fleetcheck measures; the fleet's Istio contexts."""
    discover.require_measurable(fleet, target.name)
    return discover.mesh_contexts(fleet, "istio")


def _settings(expectations: dict) -> dict:
    return expectations["mesh"]


# --- control plane ------------------------------------------------------------------------------


@pytest.mark.check("mesh/control-plane", level="required")
def test_control_plane(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                       expectations: dict) -> None:
    """istiod's Deployments Available; the sidecar injector's MutatingWebhookConfiguration
    present with a caBundle; the same root of trust (SHA-256 of ``root-cert.pem`` in ConfigMap
    ``istio-ca-root-cert``) and mesh ID as the majority of the fleet's Istio clusters, and an
    Istio cluster name no other cluster uses.  istiod's version, the cluster name, mesh ID,
    trust domain and network are recorded."""
    peers = _istio(fleet, target)
    selector = istio.settings(expectations)["istiod_selector"]
    cp = istio.control_plane(fleet, target.name)
    evidence.table("istiod Deployments", ["Deployment", "ready", "Available", "image"],
                   cp.deployment_rows())
    evidence.table("istiod versions", ["pod", "version"], sorted(cp.versions.items()))
    evidence.table("sidecar injector webhooks",
                   ["configuration", "webhook", "service", "caBundle", "failurePolicy"],
                   [[w["configuration"], w["webhook"], w["service"],
                     "yes" if w["ca_bundle"] else "NO", w["failure_policy"]]
                    for w in cp.webhooks])
    evidence.table(f"{target.name}: Istio facts", ["fact", "value", "from"], cp.facts_rows())
    if cp.root_pem:
        subjects = istioparse.certificate_subjects(cp.root_pem)
        if subjects:
            evidence.text("root certificate(s)", "\n".join(subjects))
    problems = cp.deployment_problems(selector) + cp.webhook_problems()
    if cp.root_problem:
        problems.append(cp.root_problem)

    # the fleet: root of trust, mesh ID and cluster names of every Istio cluster
    planes: dict[str, istio.ControlPlane] = {target.name: cp}
    unread: list[str] = []
    for peer in peers:
        if peer == target.name:
            continue
        try:
            planes[peer] = istio.control_plane(fleet, peer)
        except Unknown as exc:
            unread.append(f"{peer}: {exc.reason}")
    evidence.table("the fleet's Istio clusters",
                   ["context", "cluster name", "mesh ID", "network", "root (SHA-256)",
                    "istiod version(s)"],
                   [[name, p.cluster_name, p.mesh_id or "-", p.network or "-",
                     ", ".join(p.root_fingerprints or ()) or p.root_problem,
                     ", ".join(sorted(set(p.versions.values())))]
                    for name, p in planes.items()])
    if unread:
        evidence.text("Istio clusters not compared", "\n".join(unread))
    problems += _fleet_problems(target.name, planes)
    if cp.webhooks_unread and not problems:
        raise Unknown(f"the sidecar injector was not checked: {cp.webhooks_unread}")
    check.require(
        not problems,
        expected=f"istiod ({selector}) Available in {cp.namespace}; the sidecar injector "
                 "webhook with a caBundle; the fleet's root of trust and mesh ID; a cluster "
                 "name of its own",
        observed="; ".join(problems))


def _fleet_problems(me: str, planes: dict[str, istio.ControlPlane]) -> list[str]:
    """How ``me`` differs from the majority of the fleet's Istio clusters."""
    problems = []
    mine = planes[me]
    roots = {n: p.root_fingerprints for n, p in planes.items() if p.root_fingerprints}
    if mine.root_fingerprints and len(roots) > 1:
        common, holders = istioparse.majority(roots)
        others = {n: fp for n, fp in roots.items() if fp != mine.root_fingerprints}
        if common is None and others:
            problems.append(
                f"no root of trust is shared by a majority of the Istio clusters: {me} has "
                f"{', '.join(mine.root_fingerprints)}; "
                + "; ".join(f"{n} has {', '.join(fp)}" for n, fp in sorted(others.items())))
        elif common is not None and common != mine.root_fingerprints:
            problems.append(
                f"root of trust differs from the fleet's: {me} has "
                f"{', '.join(mine.root_fingerprints)}, {', '.join(holders)} have "
                f"{', '.join(common)} (mTLS between them fails)")
    ids = {n: p.mesh_id for n, p in planes.items()}
    if len(ids) > 1:
        common_id, holders = istioparse.majority(ids)
        if common_id is not None and common_id != mine.mesh_id:
            problems.append(f"mesh ID {mine.mesh_id or '(not set)'!r} differs from "
                            f"{common_id or '(not set)'!r} of {', '.join(holders)}")
        elif common_id is None:
            problems.append("no mesh ID is shared by a majority of the Istio clusters: "
                            + ", ".join(f"{n} {v or '(not set)'!r}" for n, v in sorted(ids.items())))
    same = sorted(n for n, p in planes.items() if n != me and p.cluster_name == mine.cluster_name)
    if same:
        problems.append(f"Istio cluster name {mine.cluster_name!r} ({mine.cluster_name_source}) "
                        f"is also the name of {', '.join(same)}: every cluster of a multi-"
                        "cluster mesh needs a name of its own")
    return problems


@pytest.mark.check("mesh/remote-clusters", level="required")
def test_remote_clusters(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                         expectations: dict) -> None:
    """Every other Istio cluster of the fleet is a remote cluster of every istiod of this
    context, and synced (istiod's ``debug/clusterz``, what ``istioctl remote-clusters``
    shows); peers are known by their Istio cluster name (``mesh.cluster_names``, else the
    name the peer's own istiod gives its cluster)."""
    peers = [p for p in _istio(fleet, target) if p != target.name]
    if not peers:
        pytest.skip(f"no other Istio cluster selected: {target.name} has no peer to link to")
    names: dict[str, tuple[str, str]] = {}
    for peer in peers:
        try:
            names[peer] = istio.cluster_name(fleet, peer, expectations)
        except Unknown as exc:
            raise Unknown(f"cannot tell the Istio cluster name of {peer} ({exc.reason}); "
                          "declare it in expectations mesh.cluster_names") from None
    own, own_source = istio.cluster_name(fleet, target.name, expectations)
    evidence.table("expected remote clusters", ["context", "Istio cluster name", "from"],
                   [[p, *names[p]] for p in peers])
    istiod = istio.Istiod(fleet.probes(target.name), expectations)
    timeout = float(_settings(expectations)["propagation_timeout_s"])

    def read() -> dict[str, list[istioparse.RemoteCluster]]:
        return {pod: istioparse.parse_clusterz(data)
                for pod, data in istiod.each("debug/clusterz").items()}

    def problems_of(seen: dict[str, list[istioparse.RemoteCluster]]) -> list[str]:
        out = []
        for pod, clusters in sorted(seen.items()):
            by_id = {c.id: c for c in clusters}
            listing = ", ".join(c.describe() for c in clusters) or "nothing"
            config = istioparse.config_cluster(clusters)
            if config is not None and not config.synced:
                out.append(f"istiod {pod}: its own cluster {config.id} is {config.status}")
            for peer in peers:
                name = names[peer][0]
                entry = by_id.get(name)
                if entry is None:
                    out.append(f"istiod {pod}: {peer} (Istio cluster {name}) is not a remote "
                               f"cluster: no remote secret for it (clusterz lists {listing})")
                elif not entry.secret:
                    out.append(f"istiod {pod}: {peer}'s Istio cluster name {name} is this "
                               f"cluster's own ({own}, {own_source})")
                elif not entry.synced:
                    out.append(f"istiod {pod}: {peer} (Istio cluster {name}, secret "
                               f"{entry.secret}) is {entry.status or 'without status'}, not "
                               "synced" + (": istiod cannot reach or list that API server (is "
                                           "the remote secret's server address reachable from "
                                           "pods?)" if entry.status == "timeout" else ""))
        return out

    try:
        seen, waited = istio.wait_until(read, lambda s: not problems_of(s), timeout,
                                            fleet.probes(target.name).pause)
    except (TypeError, ValueError) as exc:
        raise Unknown(f"{target.name}: istiod's debug/clusterz is not what Istio writes: "
                      f"{exc}") from None
    evidence.table("istiod debug/clusterz (istioctl remote-clusters)",
                   ["istiod", "cluster", "secret", "status", "read via"],
                   [[pod, c.id, c.secret or "(config cluster)", c.status,
                     istiod.access.get(pod, "")] for pod, cs in sorted(seen.items()) for c in cs])
    problems = problems_of(seen)
    check.require(
        not problems,
        expected="every istiod of " + target.name + " lists "
                 + ", ".join(f"{p} ({names[p][0]})" for p in peers) + " as synced remote clusters",
        observed="; ".join(problems) + (f" (after {waited:.0f}s)" if waited >= 1 else ""))
    _links_read_the_right_clusters(target, fleet, check, evidence, expectations, istiod,
                                   {p: names[p][0] for p in peers})


def _links_read_the_right_clusters(target: Target, fleet: FleetRun, check: CheckInfo,
                                   evidence: Evidence, expectations: dict,
                                   istiod: istio.Istiod, names: dict[str, str]) -> None:
    """A synced link may still read another cluster (a remote secret holding the wrong API
    address or credentials): the API server endpoints istiod holds for each peer (its
    ``debug/endpointShardz`` for ``kubernetes.default``) must be the ones that peer's own API
    reports."""
    host = f"kubernetes.default.svc.{expectations['dns']['cluster_domain']}"
    truth: dict[str, set[str]] = {}
    for context in [target.name, *names]:
        try:
            truth[context] = set(ready_endpoint_ips(fleet.probes(context), "kubernetes",
                                                    "default"))
        except Exception as exc:  # noqa: BLE001 - that peer is then not compared
            evidence.text(f"{context}: API server endpoints not read", str(exc)[:300])
    try:
        shards = {pod: istioparse.parse_shards(data, host, "default")
                  for pod, data in istiod.each("debug/endpointShardz").items()}
    except (TypeError, ValueError) as exc:
        raise Unknown(f"{target.name}: istiod's debug/endpointShardz is not what Istio "
                      f"writes: {exc}") from None
    rows, wrong = [], []
    for pod, by_cluster in sorted(shards.items()):
        for peer, name in names.items():
            held, real = by_cluster.get(name), truth.get(peer)
            rows.append([pod, f"{peer} ({name})", ", ".join(sorted(held or ())) or "-",
                         ", ".join(sorted(real or ())) or "(not read)"])
            if not held or not real or held == real:
                continue
            owners = [c for c, ips in truth.items() if c != peer and ips & held]
            wrong.append(f"istiod {pod}: remote cluster {name} holds API server endpoints "
                         f"{', '.join(sorted(held))}, but {peer}'s API reports "
                         f"{', '.join(sorted(real))}" + (
                             f" (those are {', '.join(owners)}'s: its remote secret reads "
                             "the wrong cluster)" if owners else ""))
    evidence.table(f"API server endpoints ({host}) istiod holds per remote cluster",
                   ["istiod", "remote cluster", "istiod holds", "the peer's API reports"], rows)
    check.require(not wrong,
                  expected="each remote cluster link reads that peer's own API server",
                  observed="; ".join(wrong))


# --- data plane ----------------------------------------------------------------------------------


def _sites(fleet: FleetRun, contexts: list[str], peers: list[str]) -> dict[str, dataplane.Site]:
    """The data plane of ``contexts`` (deployed once per run, concurrently)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(contexts))) as pool:
        futures = {c: pool.submit(dataplane.site, fleet, c, peers) for c in contexts}
        out, failed = {}, []
        for context, future in futures.items():
            try:
                out[context] = future.result()
            except Unknown as exc:
                failed.append((context, exc))
    if failed:
        context, exc = failed[0]
        raise Unknown(f"the mesh data plane of {context} is not ready: {exc.reason}",
                      exc.evidence)
    return out


@pytest.mark.check("mesh/proxies-synced", level="required")
def test_proxies_synced(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """The check's own curl probe's sidecar and the echo's sidecar are connected to an istiod
    of this context and SYNCED for every xDS type they use (istiod's ``debug/syncz``, as
    ``istioctl proxy-status`` shows it: CDS, LDS, EDS and RDS SYNCED; no type STALE or
    ERROR)."""
    peers = _istio(fleet, target)
    here = _sites(fleet, [target.name], peers)[target.name]
    probes = fleet.probes(target.name)
    echoes = [p for p in dataplane.echo_pods(probes, here.namespace)
              if p.metadata.deletion_timestamp is None]
    without = dataplane.unmeshed(echoes, here.sidecar)
    wanted = [here.probe_pod] + [p.metadata.name for p in echoes
                                 if p.metadata.name not in without]
    ids = [f"{pod}.{here.namespace}" for pod in wanted]
    istiod = istio.Istiod(probes, expectations)
    timeout = float(_settings(expectations)["propagation_timeout_s"])

    def read() -> dict[str, istioparse.ProxySync]:
        merged: dict[str, istioparse.ProxySync] = {}
        for pod, data in istiod.each(f"debug/syncz?namespace={here.namespace}").items():
            merged.update(istioparse.parse_syncz(data, pod))
        return merged

    def problems_of(seen: dict[str, istioparse.ProxySync]) -> list[str]:
        out = [f"echo pod {pod}.{here.namespace}: {why}" for pod, why in sorted(without.items())]
        for proxy in ids:
            sync = seen.get(proxy)
            if sync is None:
                out.append(f"{proxy} is connected to no istiod of {target.name}")
            elif sync.problems():
                out.append(f"{proxy} (istiod {sync.istiod}): " + ", ".join(sync.problems()))
        return out

    try:
        seen, waited = istio.wait_until(read, lambda s: not problems_of(s) or (
            len(problems_of(s)) == len(without)), timeout, probes.pause)
    except (TypeError, ValueError) as exc:
        raise Unknown(f"{target.name}: istiod's debug/syncz is not what Istio writes: "
                      f"{exc}") from None
    evidence.table("istiod debug/syncz (istioctl proxy-status)",
                   ["proxy", "cluster", "istiod", "version", "xDS"],
                   [s.row() for s in sorted(seen.values(), key=lambda s: s.proxy)])
    problems = problems_of(seen)
    check.require(
        not problems,
        expected=f"{', '.join(ids)} connected and SYNCED (CDS, LDS, EDS, RDS; nothing STALE "
                 "or ERROR)",
        observed="; ".join(problems) + (f" (after {waited:.0f}s)" if waited >= 1 else ""))


def _url(expectations: dict, kind: str | None, service: str, namespace: str) -> str:
    name = discover.mesh_name(expectations, kind, service, namespace)
    return f"http://{name}{discover.ECHO_PATH}"


def _pair_sides(fleet: FleetRun, pair: Pair) -> list[str]:
    """Skip unless both ends run a mesh fleetcheck measures, the same one."""
    src = discover.require_measurable(fleet, pair.source.name)
    dst = discover.detection(fleet, pair.target.name)
    reason = dst.skip_reason()
    if reason:
        pytest.skip(f"{pair.target.name}: {reason}")
    if dst.key != src.key:
        assert src.kind is not None and dst.kind is not None
        pytest.skip(f"{pair.source.name} runs {src.kind.label}, {pair.target.name} "
                    f"{dst.kind.label}: not one mesh")
    return discover.mesh_contexts(fleet, src.key or "")


@pytest.mark.check("mesh/cross-cluster", level="required")
@pytest.mark.requires_clusters(2)
def test_cross_cluster(pair: Pair, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                       expectations: dict) -> None:
    """The curl probe in the source (with its sidecar) calls the mesh name of ``fc-mesh-<dst>``,
    a service whose only endpoints are the target cluster's echo: the answer comes from the
    target cluster, over mutual TLS (the echo returns the ``X-Forwarded-Client-Cert`` its
    sidecar set: the probe's identity, recorded).  New endpoints may take
    ``mesh.propagation_timeout_s`` to reach the source's proxy; the latency is measured."""
    peers = _pair_sides(fleet, pair)
    src, dst = pair.source, pair.target
    sites = _sites(fleet, [src.name, dst.name], peers)
    cfg = _settings(expectations)
    kind = discover.detection(fleet, src.name).key
    url = _url(expectations, kind, discover.only_service(dst.name), sites[src.name].namespace)
    timeout = float(cfg["request_timeout_s"])
    settle = float(cfg["propagation_timeout_s"])
    start = time.monotonic()
    attempts = []
    while True:
        result = netprobe.http_get(sites[src.name].probe, url, timeout)
        answer = answers.parse_answer(result.body) if result.status is not None else None
        attempts.append([f"{time.monotonic() - start:.1f}s", result.describe(),
                         answer.cluster if answer else "-"])
        good = result.ok and answer is not None and answer.cluster == dst.cluster_id
        if good or time.monotonic() - start >= settle:
            break
        fleet.probes(src.name).pause(0.5)
    evidence.table(f"GET {url} from {src.name}", ["at", "result", "answered by"], attempts)
    if answer is not None:
        evidence.json("the echo's answer", {"cluster": answer.cluster, "pod": answer.pod,
                                            "podIP": answer.pod_ip, "xfcc": answer.xfcc})
    body = " ".join(result.body.split())[:300]
    tries = f" ({len(attempts)} attempt(s) over {time.monotonic() - start:.0f}s)"
    if result.status is None:
        observed = f"no answer: {result.error}" + tries
    elif not result.ok:
        observed = f"HTTP {result.status} {body!r}" + tries
    elif answer is None:
        observed = f"HTTP {result.status} from something that is not the echo: {body!r}"
    else:
        observed = (f"answered by cluster {answer.cluster!r} (pod {answer.pod}), not "
                    f"{dst.cluster_id!r}, the only cluster with endpoints of the service")
    check.require(good, expected=f"GET {url} from {src.name} answered by the echo of "
                  f"{dst.cluster_id}", observed=observed)
    assert answer is not None
    identity, server = answer.client_identity, answer.server_identity
    namespace = sites[src.name].namespace
    evidence.text("mTLS", f"client identity the server side saw: {identity or '(none)'}\n"
                  f"server identity: {server or '(none)'}\n"
                  f"latency: connect {netprobe.fmt_ms(result.connect_ms)}, total "
                  f"{netprobe.fmt_ms(result.total_ms)}")
    if cfg.get("require_mtls", True):
        check.require(
            bool(identity) and f"/ns/{namespace}/" in (identity or ""),
            expected=f"the echo on {dst.name} saw the probe's client certificate "
                     f"(X-Forwarded-Client-Cert URI=spiffe://.../ns/{namespace}/sa/...)",
            observed=(f"client identity {identity!r} is not the probe's" if identity else
                      "no client certificate (no X-Forwarded-Client-Cert reached the echo): "
                      "the request did not arrive over mutual TLS"))
    limit = cfg.get("max_latency_ms")
    if limit is not None and result.total_ms is not None:
        check.require(result.total_ms <= float(limit),
                      expected=f"an answer within {limit:g} ms",
                      observed=f"{result.total_ms:.0f} ms")


@pytest.mark.check("mesh/global-service", level="required")
def test_global_service(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                        expectations: dict) -> None:
    """``mesh.requests`` requests (default 20) from this context's probe to the global service
    ``fc-mesh-echo`` (endpoints in every Istio cluster) all succeed and are served by more than
    one cluster; the spread is shown."""
    peers = _istio(fleet, target)
    if len(peers) < 2:
        pytest.skip(f"needs 2 Istio clusters; Istio runs on {', '.join(peers) or 'none'} of the "
                    "selected clusters")
    sites = _sites(fleet, peers, peers)
    cfg = _settings(expectations)
    n = int(cfg["requests"])
    timeout = float(cfg["request_timeout_s"])
    url = _url(expectations, "istio", discover.ECHO, sites[target.name].namespace)
    start = time.monotonic()
    while True:
        replies, _ = answers.request_batch(sites[target.name].probe, url, n, timeout)
        counts = answers.spread(r.answer.cluster if r.ok and r.answer else None for r in replies)
        served = [c for c in counts if c != "(no answer)"]
        if len(served) > 1 or time.monotonic() - start >= float(cfg["propagation_timeout_s"]):
            break
        fleet.probes(target.name).pause(1.0)
    evidence.table(f"{n} requests to {url} from {target.name}", ["answered by", "requests"],
                   list(counts.items()))
    failed = [r for r in replies if not r.ok]
    check.require(
        not failed,
        expected=f"{n} answers from the echo service {url}",
        observed=f"{len(failed)} of {n} failed, e.g. {failed[0].describe() if failed else ''}")
    check.require(
        len(served) > 1,
        expected=f"answers from more than one of {', '.join(peers)} (spread over the "
                 "service's endpoints in every cluster)",
        observed=f"all {n} from {served[0] if served else 'nowhere'}: {answers.spread_text(counts)}")
    evidence.text("spread", answers.spread_text(counts))


# --- failover (disruptive) -------------------------------------------------------------------------


@pytest.mark.disruptive
@pytest.mark.check("mesh/failover", level="required")
def test_failover(target: Target, fleet: FleetRun, check: CheckInfo, evidence: Evidence,
                  expectations: dict) -> None:
    """While this context's probe requests a service every 0.1 s, the echo of another Istio
    cluster (the next one after this in the fleet) is scaled to zero: requests keep being
    answered by another cluster.  The service is ``fc-mesh-away-<this>`` (endpoints in every
    other cluster) where the fleet has 3 or more Istio clusters, else the global service (this
    cluster's own echo takes over).  Non-conformant when requests still fail at the end, or
    recover later than ``mesh.failover_rto_s`` after the scale-down; the RTO (end of the last
    failed request) and the failed requests are reported.  The echo is scaled back and Ready
    again afterwards, also when the check fails or the run is interrupted."""
    peers = _istio(fleet, target)
    if len(peers) < 2:
        pytest.skip(f"needs 2 Istio clusters; Istio runs on {', '.join(peers) or 'none'} of the "
                    "selected clusters")
    cfg = _settings(expectations)
    here = peers.index(target.name)
    others = peers[here + 1:] + peers[:here]  # the next cluster in the fleet's order first
    victim = others[0]
    sites = _sites(fleet, peers, peers)
    if len(others) >= 2:
        service = discover.away_service(target.name)
        why = f"endpoints in {', '.join(others)} (every Istio cluster but {target.name})"
    else:
        service = discover.ECHO
        why = (f"endpoints in {target.name} and {victim}: with two Istio clusters the source's "
               "own echo takes over")
    url = _url(expectations, "istio", service, sites[target.name].namespace)
    evidence.text("plan", f"requests from {target.name} to {url} ({why}); the echo of {victim} "
                  "is scaled to zero")
    rto_bound = float(cfg["failover_rto_s"])
    watch = float(cfg["failover_watch_s"])
    ready_timeout = float(cfg["ready_timeout_s"])
    victim_probes = fleet.probes(victim)
    adapter = discover.adapter(discover.detection(fleet, victim).key)
    assert adapter is not None  # (a context of the same, measurable mesh)
    namespace = sites[victim].namespace
    loop = answers.request_loop(sites[target.name].probe, url,
                                max_s=2 + ready_timeout + watch + rto_bound + 30,
                                timeout_s=float(cfg["request_timeout_s"]))
    restored: dict[str, object] = {"done": False, "error": None}
    scaled = None

    def restore() -> None:
        if scaled is not None and not fleet.restore(scaled):
            restored["error"] = scaled.error
            return
        try:
            dataplane.wait_echo(victim_probes, namespace, adapter, ready_timeout)
            restored["done"], restored["error"] = True, None
        except Exception as exc:  # noqa: BLE001 - reported below
            restored["error"] = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"

    lock = fleet.cluster_lock(victim, check.id)
    lock.acquire()
    timeline: list[list[str]] = []
    started = time.monotonic()
    scaled_at = gone_at = None
    try:
        loop.start()
        time.sleep(3.0)  # a baseline: requests before anything changes
        scaled_at = loop.now()
        scaled = fleet.record_change(
            f"echo {namespace}/{discover.ECHO} scaled to 0", victim,
            lambda: dataplane.scale_echo(victim_probes, namespace, 1),
            f"kubectl --context {shlex.quote(victim)} -n {namespace} scale deployment "
            f"{discover.ECHO} --replicas=1", check.id)
        dataplane.scale_echo(victim_probes, namespace, 0)
        timeline.append([f"{time.monotonic() - started:.2f}s", f"{victim}: echo scaled to 0"])
        deadline = time.monotonic() + ready_timeout
        while dataplane.echo_pods(victim_probes, namespace) and time.monotonic() < deadline:
            victim_probes.pause(0.2)
        gone_at = loop.now()
        timeline.append([f"{time.monotonic() - started:.2f}s",
                         f"{victim}: no echo pod left" if not dataplane.echo_pods(
                             victim_probes, namespace) else f"{victim}: echo pods still there"])
        time.sleep(watch)
    finally:
        try:
            loop.stop()
        finally:
            try:
                restore()
            finally:
                lock.release()
            timeline.append([f"{time.monotonic() - started:.2f}s",
                             f"{victim}: echo scaled back to 1 and "
                             + ("Ready" if restored["done"] else f"NOT Ready ({restored['error']})")])
    evidence.table("timeline", ["at", "event"], timeline)
    traffic = loop.traffic()
    if scaled_at is None:
        raise Unknown("the probe pod's clock could not be read at the scale-down")
    before = traffic.window(None, scaled_at)
    after = traffic.window(scaled_at, None)
    rows = []
    for phase, window in (("before the scale-down", before),
                          ("scale-down until the pods were gone", traffic.window(scaled_at, gone_at)),
                          ("after", traffic.window(gone_at, None))):
        rows.append([phase, len(window), sum(r.ok for r in window),
                     sum(not r.ok for r in window),
                     answers.spread_text(traffic.answered_by(window)) or "-"])
    evidence.table(f"requests to {url} from {target.name} (every 0.1s)",
                   ["phase", "requests", "ok", "failed", "answered by"], rows)
    if not restored["done"]:
        raise Unknown(f"the echo of {victim} was not restored: {restored['error']}; the run's "
                      f"namespace {namespace} is deleted at the end of the run")
    if not any(r.ok and r.pod == fleet.targets[victim].cluster_id for r in before):
        raise Unknown(f"{victim} answered none of the {len(before)} requests before the "
                      f"scale-down ({answers.spread_text(traffic.answered_by(before)) or 'none'}): "
                      "there was nothing to fail over")
    rto, failed = answers.recovery(traffic.requests, scaled_at)
    evidence.text("recovery", f"RTO {'not recovered' if rto is None else f'{rto:.2f}s'}; "
                  f"{failed} failed request(s) after the scale-down")
    answered_after = {c for c, n in traffic.answered_by(after).items() if c != victim}
    check.require(
        rto is not None and rto <= rto_bound and bool(answered_after),
        expected=f"requests to {url} answered by another cluster than {victim} within "
                 f"{rto_bound:g}s of its echo being scaled to zero",
        observed=(f"no request succeeded after the last of {failed} failures" if rto is None
                  else f"RTO {rto:.2f}s, {failed} failed request(s)"
                  + ("" if answered_after else "; no other cluster answered")))
