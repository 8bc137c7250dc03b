"""Configuration and start-up of every lab component: etcd, the control plane, and per node
containerd, kubelet and kube-proxy. Each runs in its node's network namespace and its own
cgroup below ``/fclab/daemons``."""

from __future__ import annotations

import json
from pathlib import Path

import pki
from host import make_cgroup, start_daemon
from images import SANDBOX_IMAGE as PAUSE_IMAGE
from topology import CACHE, CLUSTER_DOMAIN, KUBECONFIG, Cluster, Node

BIN = CACHE / "bin"
CNI_BIN = "/usr/lib/cni"



def _write(path: Path, text: str, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600 if private else 0o644)
    return path


def kubeconfig_doc(cluster: str, server: str, ca: Path, cert: Path, key: Path,
                   user: str, context: str | None = None, embed: bool = False) -> dict:
    context = context or cluster
    if embed:
        import base64

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cl = {"server": server, "certificate-authority-data": b64(ca)}
        us = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    else:
        cl = {"server": server, "certificate-authority": str(ca)}
        us = {"client-certificate": str(cert), "client-key": str(key)}
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cl}],
        "users": [{"name": user, "user": us}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }


def merge_kubeconfigs(docs: list[dict]) -> dict:
    merged: dict = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                    "contexts": [], "preferences": {}}
    for d in docs:
        for k in ("clusters", "users", "contexts"):
            names = {e["name"] for e in merged[k]}
            merged[k] += [e for e in d[k] if e["name"] not in names]
    merged["current-context"] = docs[0]["current-context"] if docs else ""
    return merged


# ---------------------------------------------------------------- certificates

RESTRICTED_USERS = {
    # context prefix: (certificate CN, what the lab grants it, see bootstrap.py)
    "viewer": "fleetcheck-lab:viewer",
    "editor": "fleetcheck-lab:editor",
}
DNS_PEER_USER = "fleetcheck-lab:dns-peer"


def make_pki(cluster: Cluster) -> None:
    d = cluster.dir / "pki"
    ca = pki.CA(d, f"fleetcheck-lab {cluster.name} CA")
    cp = cluster.control_plane
    ca.issue("apiserver", "kube-apiserver", server=True, client=False,
             dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "localhost", cp.name),
             ips=("127.0.0.1", cp.ip, cluster.api_service_ip))
    ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
             orgs=("system:masters",))
    ca.issue("admin", "fleetcheck-lab:admin", orgs=("system:masters",))
    ca.issue("controller-manager", "system:kube-controller-manager")
    ca.issue("scheduler", "system:kube-scheduler")
    ca.issue("kube-proxy", "system:kube-proxy")
    ca.issue("dns-peer", DNS_PEER_USER)
    for prefix, cn in RESTRICTED_USERS.items():
        ca.issue(prefix, cn)
    for node in cluster.nodes:
        ca.issue(f"kubelet-{node.name}", f"system:node:{node.name}", orgs=("system:nodes",))
        ca.issue(f"kubelet-serving-{node.name}", f"system:node:{node.name}", server=True,
                 client=False, dns=(node.name,), ips=(node.ip,))
    pki.service_account_keys(d)
    kc = cluster.dir / "kubeconfigs"
    for comp in ("controller-manager", "scheduler", "kube-proxy", "admin"):
        doc = kubeconfig_doc(cluster.name, cluster.lab_server, d / "ca.crt", d / f"{comp}.crt",
                             d / f"{comp}.key", user=comp)
        _write(kc / f"{comp}.conf", json.dumps(doc, indent=1), private=True)
    for node in cluster.nodes:
        doc = kubeconfig_doc(cluster.name, cluster.lab_server, d / "ca.crt",
                             d / f"kubelet-{node.name}.crt", d / f"kubelet-{node.name}.key",
                             user=f"system:node:{node.name}")
        _write(kc / f"kubelet-{node.name}.conf", json.dumps(doc, indent=1), private=True)


def user_kubeconfig(clusters: list[Cluster], extra: list[dict] = ()) -> Path:
    """The lab's kubeconfig: admin contexts named like the clusters, restricted ones
    ``viewer@<cluster>`` and ``editor@<cluster>`` (which a ``lab-*`` glob does not match)."""
    docs = []
    for c in clusters:
        d = c.dir / "pki"
        docs.append(kubeconfig_doc(c.name, c.host_server, d / "ca.crt", d / "admin.crt",
                                   d / "admin.key", user=f"admin@{c.name}", embed=True))
        for prefix in RESTRICTED_USERS:
            docs.append(kubeconfig_doc(c.name, c.host_server, d / "ca.crt",
                                       d / f"{prefix}.crt", d / f"{prefix}.key",
                                       user=f"{prefix}@{c.name}", context=f"{prefix}@{c.name}",
                                       embed=True))
    merged = merge_kubeconfigs([*docs, *extra])
    _write(KUBECONFIG, json.dumps(merged, indent=1), private=True)
    return KUBECONFIG


def peer_kubeconfig(peer: Cluster) -> str:
    """A kubeconfig with which one cluster's CoreDNS reads a peer cluster's services."""
    d = peer.dir / "pki"
    doc = kubeconfig_doc(peer.name, peer.lab_server, d / "ca.crt", d / "dns-peer.crt",
                         d / "dns-peer.key", user=DNS_PEER_USER, embed=True)
    return json.dumps(doc, indent=1)


# ---------------------------------------------------------------- control plane

def _daemon(cluster: Cluster, node: Node, comp: str, argv: list[str],
            restart: bool = False) -> None:
    start_daemon(f"{node.name}.{comp}", argv, netns=node.netns,
                 cgroup=f"fclab/daemons/{node.name}/{comp}",
                 log=cluster.dir / "logs" / f"{node.name}.{comp}.log", restart=restart)


def start_etcd(cluster: Cluster) -> None:
    data = cluster.run_dir / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    _daemon(cluster, cluster.control_plane, "etcd", [
        "/usr/bin/etcd", f"--name={cluster.name}", f"--data-dir={data}",
        "--listen-client-urls=http://127.0.0.1:2379",
        "--advertise-client-urls=http://127.0.0.1:2379",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        f"--initial-cluster={cluster.name}=http://127.0.0.1:2380",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        "--snapshot-count=10000", "--quota-backend-bytes=1073741824",
        "--log-level=warn", "--logger=zap",
    ])


def start_apiserver(cluster: Cluster) -> None:
    d = cluster.dir / "pki"
    _daemon(cluster, cluster.control_plane, "kube-apiserver", [
        str(BIN / "kube-apiserver"),
        f"--advertise-address={cluster.control_plane.ip}", "--bind-address=0.0.0.0",
        "--secure-port=6443", "--etcd-servers=http://127.0.0.1:2379",
        f"--service-cluster-ip-range={cluster.service_cidr}",
        f"--client-ca-file={d / 'ca.crt'}",
        f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
        f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
        f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        f"--service-account-key-file={d / 'sa.pub'}",
        f"--service-account-signing-key-file={d / 'sa.key'}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true", "--profiling=false", "--event-ttl=1h",
        "--endpoint-reconciler-type=lease",
        # never resolve node names: lab daemons see the host's resolv.conf
        "--kubelet-preferred-address-types=InternalIP",
    ])


#: leader election as real clusters run it (the Leases in kube-system are how a client sees that
#: the scheduler and controller-manager are alive), with short lab timings: a restarted
#: component takes over within ~6 s of its predecessor's last renewal
LEADER_ELECTION = ["--leader-elect=true", "--leader-elect-lease-duration=6s",
                   "--leader-elect-renew-deadline=4s", "--leader-elect-retry-period=1s"]


def start_controller_manager(cluster: Cluster) -> None:
    d, kc = cluster.dir / "pki", cluster.dir / "kubeconfigs" / "controller-manager.conf"
    _daemon(cluster, cluster.control_plane, "kube-controller-manager", [
        str(BIN / "kube-controller-manager"), f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", *LEADER_ELECTION, f"--cluster-name={cluster.name}",
        f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
        f"--cluster-signing-cert-file={d / 'ca.crt'}",
        f"--cluster-signing-key-file={d / 'ca.key'}",
        "--use-service-account-credentials=true", "--allocate-node-cidrs=false",
        f"--service-cluster-ip-range={cluster.service_cidr}",
        "--node-monitor-period=2s", "--node-monitor-grace-period=20s",
        "--profiling=false",
    ], restart=True)


def start_scheduler(cluster: Cluster) -> None:
    kc = cluster.dir / "kubeconfigs" / "scheduler.conf"
    _daemon(cluster, cluster.control_plane, "kube-scheduler", [
        str(BIN / "kube-scheduler"), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1", *LEADER_ELECTION,
        "--profiling=false",
    ], restart=True)


# ---------------------------------------------------------------- nodes

def containerd_config(node: Node) -> Path:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{node.dir / 'containerd'}"
state = "{node.run_dir / 'containerd'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{node.containerd_sock}"

[ttrpc]
  address = "{node.run_dir / 'containerd.ttrpc.sock'}"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{node.dir / 'containerd-opt'}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  enable_selinux = false
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{node.run_dir / 'runc'}"

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{node.dir / 'cni' / 'net.d'}"
"""
    return _write(node.dir / "containerd.toml", text)


def cni_config(node: Node) -> None:
    conf = {
        "cniVersion": "1.0.0", "name": "fclab",
        "plugins": [{
            "type": "ptp", "ipMasq": False, "mtu": 1500,
            "ipam": {
                "type": "host-local", "dataDir": str(node.dir / "cni" / "ipam"),
                "ranges": [[{"subnet": node.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    }
    _write(node.dir / "cni" / "net.d" / "10-fclab.conflist", json.dumps(conf, indent=1))


def start_containerd(cluster: Cluster, node: Node) -> None:
    cfg = containerd_config(node)
    cni_config(node)
    node.run_dir.mkdir(parents=True, exist_ok=True)
    _daemon(cluster, node, "containerd", ["/usr/bin/containerd", f"--config={cfg}"])


def kubelet_config(cluster: Cluster, node: Node) -> Path:
    d = cluster.dir / "pki"
    empty_resolv = _write(cluster.dir.parent / "resolv.conf.empty", "")
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.ip, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(d / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(d / f"kubelet-serving-{node.name}.crt"),
        "tlsPrivateKeyFile": str(d / f"kubelet-serving-{node.name}.key"),
        "cgroupDriver": "cgroupfs", "cgroupRoot": node.cgroup_root, "cgroupsPerQOS": True,
        "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{node.containerd_sock}",
        "podLogsDir": str(node.dir / "pod-logs"),
        "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [cluster.dns_ip],
        # pods never inherit the host's resolvers: no DNS path leads out of the lab
        "resolvConf": str(empty_resolv),
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False, "maxPods": 60,
        "nodeStatusUpdateFrequency": "5s", "nodeStatusReportFrequency": "30s",
        "syncFrequency": "20s", "fileCheckFrequency": "20s",
        "protectKernelDefaults": False,
        "enforceNodeAllocatable": ["pods"], "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s", "rotateCertificates": False, "serverTLSBootstrap": False,
    }
    return _write(node.dir / "kubelet.json", json.dumps(cfg, indent=1))


def start_kubelet(cluster: Cluster, node: Node) -> None:
    make_cgroup(node.cgroup_root)
    cfg = kubelet_config(cluster, node)
    kc = cluster.dir / "kubeconfigs" / f"kubelet-{node.name}.conf"
    _daemon(cluster, node, "kubelet", [
        str(BIN / "kubelet"), f"--config={cfg}", f"--kubeconfig={kc}",
        f"--root-dir={node.dir / 'kubelet'}", f"--hostname-override={node.name}",
        f"--node-ip={node.ip}",
        (f"--node-labels=fleetcheck.io/lab-cluster={cluster.name},"
         f"fleetcheck.io/lab-role={'control-plane' if node.index == 0 else 'worker'}"),
    ])


def start_kube_proxy(cluster: Cluster, node: Node) -> None:
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {
            "kubeconfig": str(cluster.dir / "kubeconfigs" / "kube-proxy.conf")},
        "mode": "iptables", "clusterCIDR": cluster.pod_cidr, "hostnameOverride": node.name,
        "bindAddress": "0.0.0.0", "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # nf_conntrack_max is not writable inside a network namespace
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"minSyncPeriod": "1s", "syncPeriod": "30s"},
    }
    path = _write(node.dir / "kube-proxy.json", json.dumps(cfg, indent=1))
    _daemon(cluster, node, "kube-proxy", [str(BIN / "kube-proxy"), f"--config={path}"])


def components(cluster: Cluster) -> list[str]:
    """Daemon names of a cluster, as `status` lists them."""
    cp = cluster.control_plane.name
    names = [f"{cp}.{c}" for c in ("etcd", "kube-apiserver", "kube-controller-manager",
                                    "kube-scheduler")]
    for n in cluster.nodes:
        names += [f"{n.name}.{c}" for c in ("containerd", "kubelet", "kube-proxy")]
    return names
