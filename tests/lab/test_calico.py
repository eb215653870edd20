"""Calico in the lab: `--cni calico`, and a wire-compatible flannel -> Calico node swap and back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from migrator.lab.calico import MODE_LABEL
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.lab.state import PodPhase
from migrator.targets.lab.cluster import LabCluster
from tests.lab.conftest import unique_lab
from tests.lab.test_lab import http

pytestmark = pytest.mark.lab
MIGRATION_LABEL = "projectcalico.org/node-network-during-migration"

REMOVE_FLANNEL = """
set -e
ip link del flannel.1
ip link del cni0 2>/dev/null || true
rm -f /etc/cni/net.d/10-flannel.conflist /run/flannel/subnet.env
iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
iptables -t nat -F FLANNEL-POSTRTG && iptables -t nat -X FLANNEL-POSTRTG
iptables -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
iptables -F FLANNEL-FWD && iptables -X FLANNEL-FWD
"""

REMOVE_CALICO = """
set -e
ip link del vxlan.calico
rm -f /etc/cni/net.d/10-calico.conflist
iptables -t nat -D POSTROUTING -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING
iptables -t nat -F cali-POSTROUTING && iptables -t nat -F cali-nat-outgoing
iptables -t nat -X cali-POSTROUTING && iptables -t nat -X cali-nat-outgoing
iptables -D FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
iptables -F cali-FORWARD && iptables -X cali-FORWARD
"""


@pytest.fixture()
def small_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    cni = request.param
    name, underlay = unique_lab("m")
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=3, pods_per_node=2, app="none", cni=cni, underlay=underlay))
        yield lab
    finally:
        assert not lab.down().leftovers


def _echo(lab: Lab, node: str | None = None) -> list[str]:
    st = lab.require()
    return [
        p.key
        for p in st.pods.values()
        if p.labels.get("app") == "echo" and p.phase == PodPhase.RUNNING and (node is None or p.node == node)
    ]


def _all_pairs_ok(lab: Lab) -> None:
    st = lab.require()
    pods = [st.pods[k] for k in _echo(lab)]
    for a in pods:
        for b in pods:
            if a.node != b.node:
                status, body = http(lab, a.key, f"http://{b.ip}:9080/local")
                assert status == 200 and isinstance(body, dict) and body["pod"] == b.name, (a.key, b.key)


@pytest.mark.parametrize("small_lab", ["calico"], indirect=True)
def test_calico_lab_uses_ptp_and_vxlan_calico(small_lab: Lab) -> None:
    lab = small_lab
    st = lab.require()
    assert {n.name: lab.status()["nodes"][i]["cni"] for i, n in enumerate(st.nodes.values())} == {
        "node1": "calico",
        "node2": "calico",
        "node3": "calico",
    }
    res = lab.exec("node2", ["sh", "-c", "ls /etc/cni/net.d; ip -d link show vxlan.calico; ip route"])
    assert "10-calico.conflist" in res.stdout and "vxlan id 1" in res.stdout and "dstport 8472" in res.stdout
    assert "cni0" not in res.stdout and "flannel.1" not in res.stdout
    pod = st.pods[_echo(lab, "node2")[0]]
    assert f"{pod.ip} dev veth" in res.stdout  # ptp: a /32 host route per pod
    _all_pairs_ok(lab)
    status, _ = http(lab, "outside", f"http://{st.nodes['node3'].ip}:30081/")
    assert status == 200
    assert any(p.owner == "DaemonSet/calico-node" and p.phase == PodPhase.RUNNING for p in st.pods.values())


@pytest.mark.parametrize("small_lab", ["flannel"], indirect=True)
def test_flannel_to_calico_node_swap_and_back(small_lab: Lab) -> None:
    lab = small_lab
    cluster = LabCluster(lab)
    for n in ("node1", "node2", "node3"):
        cluster.label_node(n, {MIGRATION_LABEL: "flannel"})
    lab.apply_daemonset("flannel", {MIGRATION_LABEL: "flannel"})
    lab.apply_daemonset("calico-node", {MIGRATION_LABEL: "calico"})
    assert not [p for p in cluster.list_pods(namespace="kube-system") if p.name.startswith("calico-node")]

    # migrate node3: drain, remove flannel, label for calico, agent programs vxlan.calico, pods come back
    cluster.drain_node("node3", timeout=60)
    res = lab.exec("node3", ["sh", "-c", REMOVE_FLANNEL])
    assert res.rc == 0, res.stderr
    assert cluster.get_node("node3").cni == "none"  # no CNI config: the kubelet would block pod creation
    cluster.label_node("node3", {MIGRATION_LABEL: "calico"})
    calico_pods = [p for p in cluster.list_pods(node="node3") if p.name.startswith("calico-node")]
    assert len(calico_pods) == 1 and calico_pods[0].ready
    assert not [p for p in cluster.list_pods(node="node3") if p.name.startswith("kube-flannel")]
    assert cluster.get_node("node3").cni == "calico"
    cluster.set_schedulable("node3", True)
    cluster.drain_node("node2", timeout=60)  # node2's pods land on node3 (fewest pods), on Calico networking
    assert _echo(lab, "node3")
    res = lab.exec("node3", ["ip", "-br", "link"])
    assert "vxlan.calico" in res.stdout and "flannel.1" not in res.stdout and "cni0" not in res.stdout
    res = lab.exec("node1", ["ip", "-br", "link"])
    assert "flannel.1" in res.stdout  # node1 untouched, still on flannel
    node3 = next(n for n in lab.status()["nodes"] if n["name"] == "node3")
    assert node3["devices"] == ["vxlan.calico"] and node3["cni_files"] == ["10-calico.conflist"]
    assert node3["chains"] == ["cali-FORWARD", "cali-POSTROUTING", "cali-nat-outgoing"]
    _all_pairs_ok(lab)  # flannel node1 <-> calico node3, both ways, over the same VNI/port/MAC
    status, _ = http(lab, "outside", f"http://{lab.require().nodes['node1'].ip}:30081/")
    assert status == 200
    cluster.set_schedulable("node2", True)

    # roll node3 back to flannel
    cluster.drain_node("node3", timeout=60)
    res = lab.exec("node3", ["sh", "-c", REMOVE_CALICO])
    assert res.rc == 0, res.stderr
    cluster.label_node("node3", {MIGRATION_LABEL: "flannel"})
    assert cluster.get_node("node3").cni == "flannel"
    cluster.set_schedulable("node3", True)
    cluster.drain_node("node1", timeout=60)
    assert _echo(lab, "node3")
    res = lab.exec("node3", ["ip", "-br", "link"])
    assert "flannel.1" in res.stdout and "vxlan.calico" not in res.stdout
    _all_pairs_ok(lab)


def _routes(lab: Lab, node: str, *args: str) -> list[str]:
    res = lab.exec(node, ["ip", "route", "show", *args])
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("small_lab", ["calico"], indirect=True)
def test_calico_vxlan_to_bgp_node_by_node_and_back(small_lab: Lab) -> None:
    lab = small_lab
    cluster = LabCluster(lab)
    nodes = ["node1", "node2", "node3"]
    blocks = {n: lab.require().nodes[n].pod_cidr for n in nodes}
    for i, node in enumerate(nodes):
        cluster.label_node(node, {MODE_LABEL: "bgp"})
        _all_pairs_ok(lab)  # every step keeps every pair reachable
        bgp = nodes[: i + 1]
        for a in bgp:
            learned = set(_routes(lab, a, "proto", "bird"))
            assert {blocks[b] for b in bgp if b != a} <= learned, (a, learned)
            vx = set(_routes(lab, a, "dev", "vxlan.calico"))
            assert vx == {blocks[b] for b in nodes if b not in bgp}, (a, vx)  # VXLAN only to non-BGP nodes
    res = lab.exec(
        "node1", ["sh", "-c", f"birdc -s {lab.require().nodes['node1'].dir}/bird.ctl show protocols"]
    )
    assert res.stdout.count("Established") == 2
    for node in nodes:  # the plan's playbook removes vxlan.calico once every node runs BGP
        assert lab.exec(node, ["ip", "link", "del", "vxlan.calico"]).rc == 0
    lab.reconcile()
    _all_pairs_ok(lab)
    status, _ = http(lab, "outside", f"http://{lab.require().nodes['node2'].ip}:30081/")
    assert status == 200
    # and back to VXLAN, node by node
    for node in nodes:
        cluster.label_node(node, {MODE_LABEL: "vxlan"})
        _all_pairs_ok(lab)
    st = lab.require()
    assert all(n.bird_pid is None for n in st.nodes.values())
    for node in nodes:
        assert _routes(lab, node, "proto", "bird") == []
        assert set(_routes(lab, node, "dev", "vxlan.calico")) == {blocks[b] for b in nodes if b != node}
    _all_pairs_ok(lab)
