"""Fault commands and blast radius, without a lab (pure functions)."""

from __future__ import annotations

import pytest

from migrator.errors import PlanError, UnsupportedFeature
from migrator.faults.blast import resolve_targets
from migrator.faults.spec import ClusterView, FaultKind, Mechanism, NodeFacts, SshPath, build, render
from migrator.plan.models import (
    FaultBandwidthArgs,
    FaultDelayArgs,
    FaultLossArgs,
    FaultPartitionArgs,
    FaultTargets,
)
from migrator.ports import CONTROL_PLANE_LABEL, Node

NODES = [
    Node("node1", "10.0.0.11", labels={CONTROL_PLANE_LABEL: ""}, pod_cidr="10.244.0.0/24"),
    *[
        Node(
            f"node{i}",
            f"10.0.0.1{i}",
            labels={"zone": "a" if i % 2 else "b"},
            pod_cidr=f"10.244.{i - 1}.0/24",
        )
        for i in range(2, 9)
    ],
]
NO_NETEM = {"qdisc": {"netem": False, "tbf": True}, "iptables": {"statistic": True, "comment": True}}
WITH_NETEM = {"qdisc": {"netem": True, "tbf": True}, "iptables": {"statistic": True, "comment": True}}


def facts(name: str = "node2", features: dict | None = None) -> NodeFacts:
    node = next(n for n in NODES if n.name == name)
    return NodeFacts(
        name=name,
        address=node.address,
        interfaces={"lo": ["127.0.0.1/8"], "eth0": [f"{node.address}/24"], "flannel.1": ["10.244.1.0/32"]},
        ssh=SshPath("10.0.0.1", node.address, 22),
        features=features if features is not None else NO_NETEM,
    )


def test_loss_falls_back_to_iptables_statistic_without_netem() -> None:
    plan = build(
        FaultKind.LOSS, "abc123abc123", FaultLossArgs(percent="30%", duration=10), facts(), ClusterView(NODES)
    )
    assert plan.mechanism == Mechanism.IPTABLES
    text = [render(c) for c in plan.install]
    assert text[0] == "iptables -w 5 -t filter -N MGR-F-abc123abc123"
    # the SSH path is exempt before the drop rule, every rule carries the comment
    assert "--dport 22" in text[1] and text[1].endswith("-j RETURN")
    assert "--probability 0.3000" in text[3] and text[3].endswith("-j DROP")
    assert all("migrator-fault:abc123abc123" in t for t in text[1:])
    assert text[-1].startswith("iptables -w 5 -t filter -I OUTPUT 1 -o eth0")
    assert [render(c) for c in plan.revert][-2:] == [
        "iptables -w 5 -t filter -F MGR-F-abc123abc123",
        "iptables -w 5 -t filter -X MGR-F-abc123abc123",
    ]


def test_loss_uses_netem_where_the_kernel_has_it() -> None:
    args = FaultLossArgs(percent="30%", correlation="25%", duration=10)
    plan = build(FaultKind.LOSS, "abc123abc123", args, facts(features=WITH_NETEM), ClusterView(NODES))
    assert plan.mechanism == Mechanism.NETEM
    assert render(plan.install[0]) == "tc qdisc add dev eth0 root handle abc2: netem loss 30% 25%"
    assert render(plan.revert[0]) == "tc qdisc del dev eth0 root handle abc2:"


def test_delay_without_netem_names_the_node_and_feature() -> None:
    with pytest.raises(UnsupportedFeature, match=r"'netem' is not available on node node2"):
        build(
            FaultKind.DELAY,
            "abc123abc123",
            FaultDelayArgs(delay=0.1, duration=5),
            facts(),
            ClusterView(NODES),
        )
    with pytest.raises(UnsupportedFeature, match="netem"):  # correlation cannot fall back either
        build(
            FaultKind.LOSS,
            "abc123abc123",
            FaultLossArgs(percent="30%", correlation="50%", duration=5),
            facts(),
            ClusterView(NODES),
        )


def test_bandwidth_is_a_tbf_root_qdisc_with_its_own_handle() -> None:
    plan = build(
        FaultKind.BANDWIDTH,
        "0000ff000000",
        FaultBandwidthArgs(rate="1mbit", duration=5),
        facts(),
        ClusterView(NODES),
    )
    assert (
        render(plan.install[0])
        == "tc qdisc add dev eth0 root handle 1: tbf rate 1mbit burst 32kbit latency 400ms"
    )


def test_partition_drops_peer_nodes_and_pod_cidrs_both_ways() -> None:
    peers = [n for n in NODES if n.name == "node3"]
    args = FaultPartitionArgs(peers=FaultTargets(names=["node3"]), duration=5)
    plan = build(FaultKind.PARTITION, "abc123abc123", args, facts(), ClusterView(NODES), peers)
    text = "\n".join(render(c) for c in plan.install)
    for rule in ("-d 10.0.0.13/32", "-s 10.0.0.13/32", "-d 10.244.2.0/24", "-s 10.244.2.0/24"):
        assert rule in text
    assert text.count("-j MGR-F-abc123abc123") == 3  # INPUT, OUTPUT, FORWARD
    # the SSH RETURN rules come first in the chain
    assert text.index("--dport 22") < text.index("-j DROP")


def test_blast_radius_excludes_control_plane_caps_share_and_samples_with_seed() -> None:
    picked = resolve_targets(NODES, FaultTargets(count=2, seed=7))
    assert len(picked) == 2 and all(not n.is_control_plane for n in picked)
    assert picked == resolve_targets(NODES, FaultTargets(count=2, seed=7))  # seeded: stable
    assert {n.name for n in resolve_targets(NODES, FaultTargets(labels="zone=b"))} == {
        "node2",
        "node4",
        "node6",
        "node8",
    }
    with pytest.raises(PlanError, match="blast radius too large"):
        resolve_targets(NODES, FaultTargets(percent="75%"))
    with pytest.raises(PlanError, match="match no node"):
        resolve_targets(NODES, FaultTargets(names=["node1"]))
    assert [
        n.name for n in resolve_targets(NODES, FaultTargets(names=["node1"], allow_control_plane=True))
    ] == ["node1"]
