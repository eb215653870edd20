"""Weave Net in the lab (``--cni weave``): the data plane from real kernel objects, the mesh, detection, and
``migrator verify`` on a 3-node weave lab with bookinfo."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrator.cli.lab import app
from migrator.cni import CniKind as Cni
from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.spec import CniKind, LabSpec
from migrator.lab.state import PodPhase
from migrator.ports import ProbeKind
from migrator.probe.suite import run_verify
from migrator.targets.lab.cluster import open_lab_target
from migrator.targets.lab.cni import LabCniOps
from tests.lab.conftest import host_traces, unique_lab
from tests.lab.test_lab import http, pods_of

pytestmark = pytest.mark.lab
NODES = ("node1", "node2", "node3")


def host_ipsets() -> list[str]:
    out = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.split()


@pytest.fixture(scope="module")
def weave_lab(migrator_home: Path) -> Iterator[Lab]:
    """3 weave nodes with bookinfo and one echo pod per node, torn down (to nothing) at the end."""
    name, underlay = unique_lab("w")
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=3, cni=CniKind.WEAVE, pods_per_node=1, underlay=underlay))
        yield lab
    finally:
        res = lab.down()
        assert not res.leftovers, res.leftovers
        assert not host_traces(name, migrator_home / "labs" / name)
        assert not [s for s in host_ipsets() if s.startswith("weave")]  # they lived in the nodes only


def test_status_shows_the_weave_network(weave_lab: Lab) -> None:
    res = CliRunner().invoke(app, ["status", "--name", weave_lab.name, "-o", "json"])
    assert res.exit_code == 0, res.output
    nodes = {n["name"]: n for n in json.loads(res.output)["nodes"]}
    ips = {name: n["ip"] for name, n in nodes.items()}
    for i, name in enumerate(NODES):
        n = nodes[name]
        assert n["cni"] == "weave" and n["pod_cidr"] == f"10.32.{i}.0/24"
        assert n["devices"] == ["weave", "vxlan-6784"] and n["cni_files"] == ["10-weave.conflist"]
        assert n["chains"] == ["WEAVE", "WEAVE-CANARY", "WEAVE-EXPOSE"]
        assert n["weave"] == {
            "addresses": [f"10.32.{i}.1/12"],
            "peers": sorted(ip for other, ip in ips.items() if other != name),
        }
        assert n["policy"]["agent"] == "weave-npc"
    text = CliRunner().invoke(app, ["status", "--name", weave_lab.name])
    assert "weave 10.32.1.1/12, 2 peer(s)" in text.output


def test_the_kernel_objects_are_weaves(weave_lab: Lab) -> None:
    res = weave_lab.exec(
        "node2",
        [
            "sh",
            "-c",
            "ip -d link show weave; ip -d link show vxlan-6784; ip route; ipset list weaver-no-masq-local",
        ],
    )
    out = res.stdout
    assert res.rc == 0, res.stderr
    assert "mtu 1376" in out and "bridge" in out
    assert "vxlan id 1 local " in out and "dstport 6784" in out and "master weave" in out
    assert "nolearning" not in out  # learns the remote MACs from the flooded frames
    assert "10.32.0.0/12 dev weave proto kernel scope link src 10.32.1.1" in out  # the host is on the network
    assert "10.32.1.0/24" in out.split("Members:")[1]  # its own slice is not masqueraded
    save = weave_lab.exec("node2", ["iptables-save"]).stdout
    for rule in (
        "-A POSTROUTING -j WEAVE",
        '-A WEAVE -m set --match-set weaver-no-masq-local dst -m comment --comment "Prevent SNAT to locally '
        'running containers" -j RETURN',
        "-A WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN",
        "-A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE",
        "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE",
        "-A FORWARD -i weave -o weave -j ACCEPT",
        "-A FORWARD -o weave -j WEAVE-EXPOSE",
        "-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT",
    ):
        assert rule in save, rule
    # kube-proxy's --cluster-cidr is the weave range: pod -> ClusterIP is not masqueraded
    assert "! -s 10.32.0.0/12 -d " in save and "! -s 10.244.0.0/16" not in save


def test_pods_are_one_flat_l2_segment(weave_lab: Lab) -> None:
    st = weave_lab.require()
    a = pods_of(st, "ratings")[0]
    b = next(p for p in pods_of(st, "details") if p.node != a.node)
    res = weave_lab.exec(
        a.key, ["sh", "-c", f"ip -4 addr show eth0; ip route; ping -c1 -W2 {b.ip}; ip neigh"]
    )
    assert res.rc == 0, res.stdout + res.stderr
    node = st.nodes[a.node]
    assert f"inet {a.ip}/12" in res.stdout
    assert f"default via {node.vtep_ip} dev eth0" in res.stdout  # the node's address on the weave network
    assert "ttl=64" in res.stdout  # bridged end to end: no router on the way
    assert f"{b.ip} dev eth0 lladdr" in res.stdout  # ARP answered across the overlay
    status, body = http(weave_lab, a.key, f"http://{b.ip}:9080/")
    assert status == 200 and isinstance(body, dict) and body["pod"] == b.name


def test_verify_passes_every_kind(weave_lab: Lab) -> None:
    report = run_verify(open_lab_target(weave_lab.name))
    s = report.summary
    assert s.passed and s.ok == s.total, [str(f) for f in s.failures[:5]]
    for kind in (
        ProbeKind.POD_SAME_NODE,
        ProbeKind.POD_CROSS_NODE,
        ProbeKind.SERVICE_IP,
        ProbeKind.SERVICE_DNS,
        ProbeKind.NODEPORT,
        ProbeKind.NODE_TO_POD,
        ProbeKind.DNS,
    ):
        summary = s.kind(kind)
        assert summary is not None and summary.total > 0 and summary.ok == summary.total, kind


def test_detect_cni_sees_weave(weave_lab: Lab) -> None:
    info = LabCniOps(weave_lab).detect_cni()
    assert info.kind is Cni.WEAVE and info.present == (Cni.WEAVE,)
    assert (info.namespace, info.daemonset) == ("kube-system", "weave-net")
    assert info.config == {"env": {}, "IPALLOC_RANGE": "10.32.0.0/12"}
    assert info.agents == {"weave-net": {}} and info.flannel is None
    assert {n.name: (n.pod_cidr, n.cni) for n in info.nodes.values()} == {
        f"node{i + 1}": (f"10.32.{i}.0/24", "weave") for i in range(3)
    }


def test_the_mesh_follows_the_nodes_running_weave(weave_lab: Lab) -> None:
    lab = weave_lab
    for node in ("node1", "node2"):
        lab.label_node(node, {"weave": "on"})
    try:
        lab.apply_daemonset("weave-net", {"weave": "on"})
        nodes = {n["name"]: n for n in lab.status()["nodes"]}
        ips = {name: n["ip"] for name, n in nodes.items()}
        assert nodes["node1"]["weave"]["peers"] == [ips["node2"]]  # node3 left the mesh
        assert nodes["node2"]["weave"]["peers"] == [ips["node1"]]
        assert nodes["node3"]["devices"] == ["weave", "vxlan-6784"]  # like a real agent: leftovers stay
        assert not [
            p for p in lab.require().pods.values() if p.owner == "DaemonSet/weave-net" and p.node == "node3"
        ]
    finally:
        lab.apply_daemonset("weave-net")
        for node in ("node1", "node2"):
            lab.label_node(node, {"weave": None})
    nodes = {n["name"]: n for n in lab.status()["nodes"]}
    assert all(len(n["weave"]["peers"]) == 2 for n in nodes.values())
    st = lab.require()
    echo = pods_of(st, "echo")
    for a in echo:
        for b in echo:
            if a.node != b.node:
                status, _ = http(lab, a.key, f"http://{b.ip}:9080/local")
                assert status == 200, (a.key, b.key)


def test_a_changed_range_is_refused_like_weave_does(weave_lab: Lab) -> None:
    lab = weave_lab
    with pytest.raises(UsageError, match="ipalloc_range"):
        lab.apply_daemonset("weave-net", None, {"ipalloc_range": "10.32.0.0/23"})  # 2 slices, 3 nodes
    with pytest.raises(UsageError, match="ipalloc_range"):
        lab.apply_daemonset("weave-net", None, {"ipalloc_range": "not-a-cidr"})
    try:
        lab.apply_daemonset("weave-net", None, {"ipalloc_range": "10.40.0.0/16"})
        agents = [p for p in lab.require().pods.values() if p.owner == "DaemonSet/weave-net"]
        assert len(agents) == 3 and all(p.phase is PodPhase.FAILED for p in agents)
        assert all("weave reset first" in p.message for p in agents), [p.message for p in agents]
    finally:
        lab.apply_daemonset("weave-net")
    agents = [p for p in lab.require().pods.values() if p.owner == "DaemonSet/weave-net"]
    assert len(agents) == 3 and all(p.phase is PodPhase.RUNNING for p in agents)
