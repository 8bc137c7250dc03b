"""fleetcheck lab: several real Kubernetes clusters on one machine, no Docker, no registry.

  python3 scripts/lab up        build what is missing, clean up leftovers, start the lab
  python3 scripts/lab status    every component, API, node and CoreDNS; exit 1 if any is down
  python3 scripts/lab down      stop everything and remove every trace
  python3 scripts/lab leftovers list lab processes, mounts, cgroups, namespaces still present
  python3 scripts/lab resources idle RAM and CPU of the running lab
  python3 scripts/lab build     build binaries and images only

`up --stage core` (and `build --stage core`) stop at the clusters themselves (Kubernetes,
CoreDNS); a later `up` adds Karmada and Istio to the running clusters without restarting them.
scripts/test uses it on a cold machine: the clusters' tests run while Karmada and Istio build.

The kubeconfig is written to /var/lib/fleetcheck-lab/kubeconfig (contexts lab-a, lab-b, lab-c;
restricted viewer@<cluster> and editor@<cluster>; karmada, the Karmada control plane over the
clusters, see karmada.py). Every cluster also runs istiod of one multi-primary Istio mesh
(istio.py). Run as root.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstrap
import build
import components as comp
import host
import istio
import karmada
import network
from topology import (
    CACHE,
    CLUSTER_DOMAIN,
    DEFAULT_CLUSTERS,
    KUBECONFIG,
    ROUTER_NS,
    RUN,
    STATE,
    Cluster,
    parse_clusters,
    saved_spec,
)

HERE = Path(__file__).resolve().parent
T0 = time.monotonic()
# Go may be installed without being on a non-login shell's PATH
if not shutil.which("go"):
    for d in ("/usr/local/go/bin", str(Path.home() / "go" / "bin")):
        if (Path(d) / "go").exists():
            os.environ["PATH"] = f"{os.environ.get('PATH', '')}:{d}"
            break


def log(msg: str) -> None:
    print(f"[lab {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def kubectl(cluster: Cluster, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> str:
    return host.run(str(comp.BIN / "kubectl"), f"--kubeconfig={KUBECONFIG}",
                    f"--context={cluster.name}", "--request-timeout=20s", *args, input=input,
                    check=check, timeout=timeout)


def api_get(cluster: Cluster, path: str, timeout: float = 3) -> tuple[int, str]:
    pki = cluster.dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(cluster.host_server + path, context=ctx,
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def wait(what: str, probe, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")


# ---------------------------------------------------------------- build

#: what ``up --stage`` starts: the clusters alone, or the clusters and the components over them
STAGES: dict[str, tuple[str, ...]] = {"core": (), "all": ("karmada", "istio")}
EXTRA_BUILDS = {"karmada": build.build_karmada, "istio": build.build_istio}


#: what ``build --stage`` can build besides: ``extras``, Karmada and Istio alone (scripts/test
#: builds them beside the clusters' tests)
BUILD_STAGES = (*STAGES, "extras")


def do_build(force: bool = False, stage: str = "all") -> dict[str, Path]:
    """Build what ``stage`` needs; return image short name -> OCI archive."""
    import images

    core = stage != "extras"
    extras = STAGES["all" if stage == "extras" else stage]
    downloads = build.prefetch_modules([*(["coredns"] if core else []), *extras], log=log)
    try:
        # the Go builds side by side: one build leaves a core idle while it links or waits
        # on a package everything else needs; two or three fill it (a cold machine)
        # (and the images that need none of them: package downloads, the CoreDNS build)
        with cf.ThreadPoolExecutor(4) as pool:
            builds = [pool.submit(b, force=force, log=log) for b in (
                *([build.build_kube] if core else []), *(EXTRA_BUILDS[x] for x in extras))]
            base = pool.submit(images.build_all, CACHE, HERE / "gosrc", "base") if core else None
        for b in builds:
            b.result()
        archives = base.result() if base else {}
        if "istio" in extras:
            log("images")
            archives |= images.build_all(CACHE, HERE / "gosrc", "istio")
        return archives
    finally:
        for proc in downloads:
            proc.wait()


# ---------------------------------------------------------------- down / leftovers

def leftovers() -> dict[str, list[str]]:
    left = {
        "processes": [str(p) for p in sorted(host.lab_pids())],
        "mounts": host.lab_mounts(),
        "cgroups": [str(h / "fclab") for h in host.hierarchies() if (h / "fclab").exists()],
        "netns": host.lab_netns(),
        "iptables": [line for line in host.run("iptables-save", check=False).splitlines()
                     if "fclab" in line or "KUBE-" in line],
        "state": [str(p) for p in (STATE, RUN) if p.exists()],
    }
    return {k: v for k, v in left.items() if v}


def do_down() -> None:
    killed = host.kill_all()
    host.unmount_all()
    host.remove_cgroups()
    host.remove_netns()
    for d in (RUN, STATE):
        shutil.rmtree(d, ignore_errors=True)
    left = leftovers()
    if left:
        raise RuntimeError(f"lab traces survive down: {json.dumps(left)}")
    log(f"down: killed {killed} processes; no process, mount, cgroup, namespace or state left")


# ---------------------------------------------------------------- up

def start_cluster_daemons(c: Cluster) -> None:
    comp.start_etcd(c)
    comp.start_apiserver(c)


def start_node(c: Cluster, node, archives: dict[str, Path]) -> None:
    import images

    comp.start_containerd(c, node)
    sock = node.containerd_sock
    wait(f"containerd on {node.name}", lambda: sock.exists() and subprocess.run(
        ["ctr", f"--address={sock}", "version"], capture_output=True, check=False).returncode == 0, 30)
    images.import_images(str(sock), archives.values())
    comp.start_kubelet(c, node)
    comp.start_kube_proxy(c, node)


def bootstrap_cluster(c: Cluster, clusters: list[Cluster]) -> None:
    wait(f"{c.name} API /readyz", lambda: api_get(c, "/readyz")[0] == 200, 120)
    # they exit when their RBAC is not bootstrapped yet, which /readyz guarantees
    comp.start_controller_manager(c)
    comp.start_scheduler(c)
    kubectl(c, "apply", "-f", "-", input=bootstrap.manifest(c, clusters))


def nodes_ready(c: Cluster) -> tuple[int, int]:
    code, body = api_get(c, "/api/v1/nodes")
    if code != 200:
        return 0, len(c.nodes)
    items = json.loads(body)["items"]
    ready = sum(1 for n in items for cond in n["status"].get("conditions", [])
                if cond["type"] == "Ready" and cond["status"] == "True")
    return ready, len(c.nodes)


def coredns_ready(c: Cluster) -> bool:
    code, body = api_get(c, "/apis/apps/v1/namespaces/kube-system/deployments/coredns")
    return code == 200 and json.loads(body).get("status", {}).get("readyReplicas", 0) >= 1


def nslookup(node, name: str, server: str) -> str:
    """busybox nslookup of ``name`` at ``server`` from inside ``node``'s network namespace (the
    path a pod's query takes: kube-proxy's rules to a CoreDNS endpoint); its output."""
    try:
        return subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", "--", "busybox",
                               "nslookup", name, server],
                              capture_output=True, text=True, timeout=6, check=False).stdout
    except subprocess.TimeoutExpired:
        return ""


def dns_silent_nodes(c: Cluster) -> list[str]:
    """Nodes of ``c`` from which the cluster DNS service does not resolve kubernetes.default
    to its ClusterIP, which a Ready CoreDNS Deployment alone does not prove."""
    return [n.name for n in c.nodes
            if f"Address: {c.api_service_ip}" not in nslookup(
                n, f"kubernetes.default.svc.{CLUSTER_DOMAIN}", c.dns_ip)]


def wait_dns_current(c: Cluster, timeout: float = 180) -> None:
    """Wait until the cluster DNS serves a Service created now. After its API server or etcd
    restarts, CoreDNS keeps answering from what it had read (a new Service is NXDOMAIN) until
    its watch is re-established, a minute or more after /readyz is ok."""
    name = f"fclab-dns-check-{os.urandom(3).hex()}"
    kubectl(c, "-n", "kube-system", "create", "service", "clusterip", name, "--tcp=53:53")
    try:
        ip = kubectl(c, "-n", "kube-system", "get", "service", name, "-o",
                     "jsonpath={.spec.clusterIP}").strip()
        fqdn = f"{name}.kube-system.svc.{CLUSTER_DOMAIN}"
        wait(f"{c.name} cluster DNS serving a new Service",
             lambda: f"Address: {ip}" in nslookup(c.control_plane, fqdn, c.dns_ip), timeout,
             interval=2)
    finally:
        kubectl(c, "-n", "kube-system", "delete", "service", name, "--wait=false", check=False)


def healthy(clusters: list[Cluster], extras: tuple[str, ...] | None = None) -> list[str]:
    """Problems of a running lab; empty when every component, API, node and DNS is fine
    (``extras``: the components over the clusters to look at; default: those started)."""
    extras = running_extras() if extras is None else extras
    problems = []
    if not host.daemon_alive("apiproxy"):
        problems.append("apiproxy: not running")
    for c in clusters:
        problems += [f"{d}: not running" for d in comp.components(c)
                     if not host.daemon_alive(d)]
        code, body = api_get(c, "/readyz")
        if code != 200:
            problems.append(f"{c.name} API: /readyz {code or body}")
            continue
        ready, total = nodes_ready(c)
        if ready < total:
            problems.append(f"{c.name}: {ready}/{total} nodes Ready")
        if not coredns_ready(c):
            problems.append(f"{c.name}: CoreDNS not ready")
        elif silent := dns_silent_nodes(c):
            problems.append(f"{c.name}: cluster DNS {c.dns_ip} does not answer on "
                            f"{', '.join(silent)}")
    if "karmada" in extras:
        problems += karmada.problems(clusters)
    if "istio" in extras:
        problems += istio.problems(clusters, api_get)
    return problems


def _is_extra(stamp: Path) -> bool:
    return stamp.name.split(".")[0] in STAGES["all"]


def lab_digest(spec: str) -> str:
    """What the running clusters were made from: their spec and the lab's own code and
    binaries (Karmada's and Istio's aside: see ``extra_digest``)."""
    h = hashlib.sha256(spec.encode())
    for p in sorted(HERE.glob("*.py")):
        h.update(p.read_bytes())
    for stamp in sorted((CACHE / "bin").glob("*.stamp.json")):
        if not _is_extra(stamp):
            h.update(stamp.read_bytes())
    return h.hexdigest()


def extra_digest(name: str) -> str:
    """What a running Karmada or Istio was built from (its build stamp)."""
    stamp = CACHE / "bin" / f"{name}.stamp.json"
    return hashlib.sha256(stamp.read_bytes() if stamp.exists() else b"").hexdigest()


def saved_state() -> dict:
    try:
        return json.loads((STATE / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def save_state(spec: str, extras: tuple[str, ...]) -> None:
    (STATE / "lab.json").write_text(json.dumps({
        "clusters": spec, "digest": lab_digest(spec),
        "extras": {x: extra_digest(x) for x in extras}}))


def running_extras() -> tuple[str, ...]:
    """The components over the clusters that the running lab was started with."""
    return tuple(x for x in STAGES["all"] if x in saved_state().get("extras", {}))


def do_up(spec: str, force: bool, stage: str = "all") -> None:
    clusters = parse_clusters(spec)
    want = STAGES[stage]
    saved = saved_state()
    running = saved.get("extras", {})
    archives = None
    same = (not force and saved.get("clusters") == spec and saved.get("digest") == lab_digest(spec)
            and KUBECONFIG.exists())
    if (same and not healthy(clusters, tuple(running))
            and all(running[x] == extra_digest(x) for x in running)):
        missing = tuple(x for x in want if x not in running)
        if not missing:
            log(f"lab already up and healthy ({spec}"
                f"{''.join(f', {x}' for x in running)}); kubeconfig: {KUBECONFIG}")
            return
        archives = do_build(stage=stage)
        if saved_state().get("digest") == lab_digest(spec):  # the build left the clusters'
            t_start = time.monotonic()                       # binaries as they were
            start_extras(clusters, (*running, *missing), missing, archives)
            save_state(spec, (*running, *missing))
            log(f"added {', '.join(missing)} to the running lab in "
                f"{time.monotonic() - t_start:.0f}s; kubeconfig: {KUBECONFIG}")
            return
    archives = archives if archives is not None else do_build(stage=stage)
    t_start = time.monotonic()
    log("removing whatever an earlier lab left behind")
    do_down()
    RUN.mkdir(parents=True, exist_ok=True)
    host.run("mount", "-t", "tmpfs", "-o", "mode=0700,size=4g", "fleetcheck-lab", str(RUN))
    STATE.mkdir(parents=True, exist_ok=True)
    STATE.chmod(0o700)
    save_state(spec, ())
    host.make_cgroup("fclab/daemons")
    log("network namespaces and routes")
    network.setup(clusters)
    log("certificates and kubeconfigs")
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(comp.make_pki, clusters))
    karmada.make_pki()
    istio.make_pki(clusters)
    comp.user_kubeconfig(clusters)
    FAULTS.unlink(missing_ok=True)
    host.start_daemon("apiproxy", [sys.executable, str(HERE / "apiproxy.py"),
                                   "--faults", str(FAULTS), f"/run/netns/{ROUTER_NS}",
                                   *[f"{c.api_port}={c.control_plane.ip}:6443"
                                     for c in clusters]],
                      netns=None, cgroup="fclab/daemons/apiproxy",
                      log=STATE / "logs" / "apiproxy.log")
    log("control planes and nodes")
    for c in clusters:
        start_cluster_daemons(c)
    if "karmada" in want:
        karmada.start(log)
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(start_node, c, n, archives) for c in clusters for n in c.nodes]
        for f in futures:
            f.result()
        log("bootstrap objects (RBAC, CoreDNS)")
        list(pool.map(lambda c: bootstrap_cluster(c, clusters), clusters))
    for c in clusters:
        wait(f"{c.name} nodes Ready", lambda c=c: nodes_ready(c)[0] == len(c.nodes), 120)
        wait(f"{c.name} CoreDNS ready", lambda c=c: coredns_ready(c), 120)
        wait(f"{c.name} cluster DNS answering on every node",
             lambda c=c: not dns_silent_nodes(c), 60)
    if want:
        start_extras(clusters, want, want, archives, started=True)
    save_state(spec, want)
    log(f"lab up in {time.monotonic() - t_start:.0f}s (after build): {spec}"
        f"{''.join(f', {x}' for x in want)}; kubeconfig: {KUBECONFIG}")


def start_extras(clusters: list[Cluster], extras: tuple[str, ...], new: tuple[str, ...],
                 archives: dict[str, Path], started: bool = False) -> None:
    """Start ``new`` (Karmada, Istio) over running clusters; the kubeconfig gets the contexts
    of ``extras`` (``started``: Karmada's API server was started with the clusters)."""
    import images

    if "istio" in new:  # its images, into every node's containerd
        istio_images = [archives[n] for n in ("istio-pilot", "istio-proxyv2")]
        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: images.import_images(str(n.containerd_sock), istio_images),
                          [n for c in clusters for n in c.nodes]))
    if "karmada" in new and not started:
        karmada.start(log)
    comp.user_kubeconfig(clusters, extra=[karmada.user_kubeconfig_doc()]
                         if "karmada" in extras else [])
    log(" and ".join({"karmada": "Karmada (join of every cluster, push mode)",
                      "istio": "Istio (istiod in every cluster, remote secrets for every "
                               "pair)"}[x] for x in new) + (", side by side" if len(new) > 1
                                                            else ""))
    with cf.ThreadPoolExecutor(2) as pool:
        done = []
        if "karmada" in new:
            done.append(pool.submit(karmada.bootstrap, clusters, kubectl, log))
        if "istio" in new:
            done.append(pool.submit(istio.bootstrap, clusters, kubectl, api_get, wait, log))
        for f in done:
            f.result()


# ---------------------------------------------------------------- status / resources

def find_component(clusters: list[Cluster], name: str):
    """``<node>.<component>`` -> (cluster, node, component), or a clear error."""
    node_name, _, component = name.partition(".")
    if name in karmada.daemon_names():
        return None, None, component
    for c in clusters:
        for n in c.nodes:
            if n.name == node_name and name in comp.components(c):
                return c, n, component
    known = ", ".join([*(d for c in clusters for d in comp.components(c)),
                       *karmada.daemon_names()])
    raise SystemExit(f"unknown component {name!r}; the lab has: {known}")


STARTERS = {
    "etcd": lambda c, n: comp.start_etcd(c),
    "kube-apiserver": lambda c, n: comp.start_apiserver(c),
    "kube-controller-manager": lambda c, n: comp.start_controller_manager(c),
    "kube-scheduler": lambda c, n: comp.start_scheduler(c),
    "containerd": lambda c, n: comp.start_containerd(c, n),
    "kubelet": lambda c, n: comp.start_kubelet(c, n),
    "kube-proxy": lambda c, n: comp.start_kube_proxy(c, n),
}


#: faults of the API proxy (see apiproxy.py): listening port -> {"mode", "until"}
FAULTS = STATE / "apiproxy-faults.json"


def do_fault(clusters: list[Cluster], cluster: str, mode: str, seconds: float | None) -> None:
    """Make the API proxy stall or reset the connections to one cluster's API server (for
    ``seconds``, or until ``fault CLUSTER off``)."""
    c = next((c for c in clusters if c.name == cluster), None)
    if c is None:
        raise SystemExit(f"lab fault: no cluster {cluster!r} (clusters: "
                         f"{', '.join(c.name for c in clusters)})")
    try:
        faults = json.loads(FAULTS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        faults = {}
    if mode == "off":
        faults.pop(str(c.api_port), None)
    else:
        faults[str(c.api_port)] = {"mode": mode,
                                   "until": None if seconds is None else time.time() + seconds}
    tmp = FAULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults), encoding="utf-8")
    tmp.replace(FAULTS)
    log(f"{cluster}: API proxy " + ("healthy" if mode == "off" else
                                    f"{mode}s every connection"
                                    + (f" for {seconds:g}s" if seconds is not None else "")))


def do_stop(clusters: list[Cluster], name: str) -> None:
    """Stop one component (a fault to inject); `start` brings it back."""
    find_component(clusters, name)
    if host.stop_daemon(name):
        log(f"stopped {name}")
    else:
        log(f"{name} was not running")


def do_start(clusters: list[Cluster], name: str) -> None:
    c, n, component = find_component(clusters, name)
    if host.daemon_alive(name):
        log(f"{name} is already running")
        return
    if c is None:
        karmada.STARTERS[component]()
    else:
        STARTERS[component](c, n)
    log(f"started {name}")
    if component in ("kube-apiserver", "etcd"):  # return once the cluster DNS follows it again
        wait(f"{c.name} API /readyz", lambda: api_get(c, "/readyz")[0] == 200, 120)
        t = time.monotonic()
        # CoreDNS would go on answering from what it had read for ~2 min (measured 109 s)
        kubectl(c, "-n", "kube-system", "rollout", "restart", "deployment/coredns")
        kubectl(c, "-n", "kube-system", "rollout", "status", "deployment/coredns",
                "--timeout=120s", timeout=150)
        wait_dns_current(c)
        log(f"{c.name}: cluster DNS serves new objects again ({time.monotonic() - t:.0f}s)")


def do_status(clusters: list[Cluster]) -> int:
    rows = [("apiproxy", host.daemon_alive("apiproxy"))]
    for c in clusters:
        rows += [(d, host.daemon_alive(d)) for d in comp.components(c)]
    extras = running_extras()
    if "karmada" in extras:
        rows += [(d, host.daemon_alive(d)) for d in karmada.daemon_names()]
    for name, alive in rows:
        print(f"{name:45} {'running' if alive else 'DEAD'}")
    for c in clusters:
        code, _ = api_get(c, "/readyz")
        ready, total = nodes_ready(c) if code == 200 else (0, len(c.nodes))
        dns = coredns_ready(c) if code == 200 else False
        print(f"{c.name:10} api={c.host_server} readyz={code or 'unreachable'} "
              f"nodes={ready}/{total} coredns={'ready' if dns else 'NOT READY'}")
    for name, line in (("karmada", lambda: karmada.status_line(clusters)),
                       ("istio", lambda: istio.status_line(clusters, api_get))):
        print(line() if name in extras else
              f"{name:10} not started (the lab is up with --stage core; `up` adds it)")
    problems = healthy(clusters)
    for p in problems:
        print(f"problem: {p}")
    return 1 if problems else 0


def do_resources(clusters: list[Cluster], seconds: float) -> None:
    def sample() -> dict[str, dict[str, float]]:
        out = {"lab": host.cgroup_stat("fclab")}
        for c in clusters:
            mem = cpu = 0.0
            for n in c.nodes:
                for rel in (f"fclab/daemons/{n.name}", f"fclab/{n.name}"):
                    s = host.cgroup_stat(rel)
                    mem += s.get("rss_bytes", 0)
                    cpu += s.get("cpu_seconds", 0)
            out[c.name] = {"rss_bytes": mem, "cpu_seconds": cpu}
        if "karmada" in running_extras():
            out["karmada"] = host.cgroup_stat("fclab/daemons/karmada")
        return out

    a = sample()
    time.sleep(seconds)
    b = sample()
    for k in b:
        rss = b[k]["rss_bytes"] / 2**20
        cpu = (b[k]["cpu_seconds"] - a[k]["cpu_seconds"]) / seconds * 100
        print(f"{k:10} rss={rss:7.0f} MiB  cpu={cpu:5.1f}% of one core (over {seconds:.0f}s)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", default=os.environ.get("FLEETCHECK_LAB_CLUSTERS"),
                        help=f"NAME[:NODES],... (env FLEETCHECK_LAB_CLUSTERS; `up` defaults to "
                             f"{DEFAULT_CLUSTERS}, other commands to the running lab's)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the lab (idempotent; cleans leftovers first)")
    up.add_argument("--force", action="store_true", help="restart even if healthy")
    stage_help = ("core: the clusters only (Kubernetes, CoreDNS); all: with Karmada and Istio "
                  "(default; env FLEETCHECK_LAB_STAGE)")
    up.add_argument("--stage", choices=STAGES, help=stage_help,
                    default=os.environ.get("FLEETCHECK_LAB_STAGE") or "all")
    sub.add_parser("down", help="stop the lab and remove every trace")
    sub.add_parser("status", help="show every component; exit 1 if something is down")
    sub.add_parser("leftovers", help="list lab traces on this machine; exit 1 if any")
    res = sub.add_parser("resources", help="idle RAM and CPU of the running lab")
    res.add_argument("--seconds", type=float, default=30)
    b = sub.add_parser("build", help="build binaries and images only")
    b.add_argument("--force", action="store_true")
    b.add_argument("--stage", choices=BUILD_STAGES,
                   help=f"{stage_help}; extras: Karmada and Istio alone",
                   default=os.environ.get("FLEETCHECK_LAB_STAGE") or "all")
    sub.add_parser("kubeconfig", help="print the kubeconfig path")
    for verb in ("stop", "start"):
        p = sub.add_parser(verb, help=f"{verb} one component, e.g. lab-c-n2.kubelet "
                                      "(to inject a fault, and to undo it)")
        p.add_argument("component")
    f = sub.add_parser("fault", help="make the API proxy stall or reset the connections to a "
                                     "cluster's API server; 'off' heals it")
    f.add_argument("cluster")
    f.add_argument("mode", choices=("stall", "reset", "off"))
    f.add_argument("--seconds", type=float, help="end the fault by itself after this long")
    args = parser.parse_args()
    if os.geteuid() != 0 and args.cmd not in ("kubeconfig",):
        parser.error("the lab needs root (network namespaces, cgroups, mounts)")
    # `up` makes the lab it is asked for (default: the standard one); the other commands act
    # on the lab that is up
    spec = args.clusters or (DEFAULT_CLUSTERS if args.cmd == "up" else
                             saved_spec() or DEFAULT_CLUSTERS)
    try:
        clusters = parse_clusters(spec)
    except ValueError as e:
        parser.error(str(e))
    if args.cmd == "up":
        do_up(spec, args.force, args.stage)
    elif args.cmd == "down":
        do_down()
    elif args.cmd == "status":
        return do_status(clusters)
    elif args.cmd == "leftovers":
        left = leftovers()
        print(json.dumps(left, indent=1) if left else "no lab traces")
        return 1 if left else 0
    elif args.cmd == "resources":
        do_resources(clusters, args.seconds)
    elif args.cmd == "build":
        do_build(args.force, args.stage)
    elif args.cmd == "stop":
        do_stop(clusters, args.component)
    elif args.cmd == "start":
        do_start(clusters, args.component)
    elif args.cmd == "fault":
        do_fault(clusters, args.cluster, args.mode, args.seconds)
    elif args.cmd == "kubeconfig":
        print(KUBECONFIG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
