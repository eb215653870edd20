"""fault.apiserver endpoint resolution, the link-flap plan, and which processes ``lab down`` takes as a
lab's fault processes (pure functions, no lab)."""

from __future__ import annotations

from typing import Any

from migrator.faults.spec import ClusterView, FaultKind, Mechanism, NodeFacts, SshPath, build, render
from migrator.lab.teardown import FAULT_PROCESS_RE
from migrator.plan.models import FaultApiserverArgs, FaultLinkFlapArgs
from migrator.ports import CONTROL_PLANE_LABEL, Node

NODES = [
    Node("node1", "10.0.0.11", labels={CONTROL_PLANE_LABEL: ""}, pod_cidr="10.244.0.0/24"),
    Node("node2", "10.0.0.12", pod_cidr="10.244.1.0/24"),
]
FEATURES = {"qdisc": {"netem": False, "tbf": True}, "iptables": {"statistic": True, "comment": True}}
FACTS = NodeFacts(
    name="node2",
    address="10.0.0.12",
    interfaces={"eth0": ["10.0.0.12/24"], "cni0": ["10.244.1.1/24"]},
    ssh=SshPath("10.0.0.1", "10.0.0.12", 22),
    features=FEATURES,
)


def apiserver(args: dict[str, Any], endpoints: list[str]) -> list[str]:
    plan = build(
        FaultKind.APISERVER,
        "abc123abc123",
        FaultApiserverArgs.model_validate({"duration": 5, **args}),
        FACTS,
        ClusterView(NODES, api_endpoints=endpoints),
    )
    assert plan.mechanism == Mechanism.IPTABLES
    return [t for t in (render(c) for c in plan.install) if t.endswith("-j DROP")]


def test_apiserver_endpoint_args_then_target_then_control_plane_nodes() -> None:
    drop = "-p tcp --dport {} -m comment --comment migrator-fault:abc123abc123 -j DROP"
    got = apiserver({"endpoint": "10.9.9.9:443"}, ["10.0.0.11:6443"])
    assert len(got) == 1 and f"-d 10.9.9.9 {drop.format(443)}" in got[0]
    got = apiserver({}, ["10.0.0.100:8443"])  # the target's endpoint (lab: its control-plane listener)
    assert len(got) == 1 and f"-d 10.0.0.100 {drop.format(8443)}" in got[0]
    got = apiserver({}, [])
    assert len(got) == 1 and f"-d 10.0.0.11 {drop.format(6443)}" in got[0]


def test_link_flap_plan_waits_for_the_first_down_and_reads_counters_back() -> None:
    args = FaultLinkFlapArgs.model_validate(
        {"interface": "cni0", "period": "2s", "down": "1s", "duration": "6s"}
    )
    plan = build(FaultKind.LINK_FLAP, "abc123abc123", args, FACTS, ClusterView(NODES))
    (start,) = plan.install
    script = start[-1]
    assert "migrator-fault-flap-abc123abc123" in script and "while [ $i -lt 3 ]" in script
    assert "carrier_down_count" in script and "sleep 0.1" in script  # bounded wait for the first down
    assert plan.meta["cycles"] == 3 and plan.meta["in_effect"] == "flap loop cni0 pid"
    assert plan.meta["present_after"] == ["link cni0 admin=up"]
    assert plan.revert[-1] == ["ip", "link", "set", "dev", "cni0", "up"]
    assert any("carrier_up_count" in c[-1] for c in plan.readback)


def test_fault_process_marks_are_the_exact_last_argument() -> None:
    assert FAULT_PROCESS_RE.fullmatch("migrator-fault-timer-0123456789ab")
    assert FAULT_PROCESS_RE.fullmatch("migrator-fault-flap-0123456789ab")
    # a command that merely mentions a mark (pgrep, a shell running the module) is not a fault process
    assert not FAULT_PROCESS_RE.fullmatch("pgrep -f migrator-fault-timer-0123456789ab")
    assert not FAULT_PROCESS_RE.fullmatch("sleep 610")
