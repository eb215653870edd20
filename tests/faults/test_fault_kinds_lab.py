"""fault.blackhole, fault.dns, fault.apiserver, fault.link-flap, fault.bandwidth (its rate measured by a
bounded TCP transfer) and the SSH path under a full partition, on a real 4-node lab (flannel, bookinfo, one
echo pod per node; the lab's control-plane endpoint on node1:6443).

Each test proves with bounded probes from lab namespaces that the fault is in effect, finds the node's
readback (iptables / ip link) in the step result, and reads the node back after the revert (by the step, by
``faults clear`` or by the expiry timer): equal to before, no drift.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migrator.cli.faults import clear_faults
from migrator.faults import nodes as fnodes
from migrator.faults.spec import ClusterView, FaultKind, build
from migrator.lab.lab import Lab
from migrator.plan.models import FaultBandwidthArgs, FaultPartitionArgs
from migrator.ports import ProbeResult, Target
from migrator.targets.ansible.executor import AnsibleRunnerExecutor
from tests.faults.lab_helpers import (
    dns_query,
    echo_pods,
    healthz,
    node_fault_state,
    node_snapshot,
    records_on,
    report_faults,
    run_folder,
    snapshot_diff,
    start_cli,
    step_results,
    tcp,
    timer_alive,
    to_address,
    wait_for,
    write_plan,
)

pytestmark = pytest.mark.lab


def probe(target: Target, targets: list[Any]) -> dict[str, ProbeResult]:
    assert target.prober is not None
    return {r.dest + "<-" + r.source: r for r in target.prober.probe(targets)}


def oks(results: dict[str, ProbeResult]) -> dict[str, bool]:
    return {k: r.ok for k, r in results.items()}


def service_ip(target: Target, name: str) -> str:
    svc = next(s for s in target.cluster.list_services(namespace="default") if s.name == name)
    assert svc.cluster_ip
    return svc.cluster_ip


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def no_drift(lab: Lab, node: str, before: list[str], timeout: float = 8.0) -> None:
    """The node reads back as before (a flapped bridge takes a moment to get its carrier back)."""
    seen: list[str] = []

    def same() -> bool:
        seen[:] = snapshot_diff(before, node_snapshot(lab, node))
        return not seen

    assert wait_for(same, timeout, interval=0.5), f"{node} drifted: {seen}"


def assert_in_report(out: str, results: list[dict[str, Any]], reverted: bool = True) -> None:
    """The report shows the same readback as the step results: before, after the install, after the revert."""
    faults = {f["id"]: f for f in report_faults(run_folder(out))}
    assert sorted(faults) == sorted(r["id"] for r in results)
    for result in results:
        fault = faults[result["id"]]
        assert fault["evidence"] == result["evidence"] and fault["before"] == result["before"]
        if reverted:
            after = {n: v for n, v in result["after"].items() if any(v.values())}
            assert fault["after_revert"] in (after, result["after"])
            assert fault["drift"] == result["drift"]


def evidence_text(result: dict[str, Any], key: str, node: str) -> str:
    return "\n".join(line for lines in result[key][node].values() for line in lines)


# --------------------------------------------------------------------------------------------- tests


def installed(lab: Lab, node: str, kind: str) -> bool:
    """The node has a record of a ``kind`` fault and its DROP rule."""
    if not any(r.get("kind") == kind for r in records_on(lab, node)):
        return False
    return any("-j DROP" in x for x in node_fault_state(lab, node))


def test_blackhole_then_dns_outage_on_one_node(lab_target: Target, fault_lab: Lab, tmp_path: Path) -> None:
    """One run, two steps on node3, each held 6 s then reverted by the step: a blackhole of one service's
    ClusterIP:port, then a DNS outage for the node's pods."""
    pods = echo_pods(lab_target)
    p3, p2 = pods["node3"].key, pods["node2"].key
    details, ratings = service_ip(lab_target, "details"), service_ip(lab_target, "ratings")
    name = "details.default.svc.cluster.local"
    blackhole_probes = [
        to_address(p3, "details", details, 9080),
        to_address(p3, "ratings", ratings, 9080),
        to_address(p2, "details", details, 9080),
    ]
    dns_probes = [dns_query(p3, name, details), dns_query(p2, name, details)]
    dns_probes.append(to_address(p3, "details", details, 9080))  # not DNS: still works
    assert all(oks(probe(lab_target, blackhole_probes + dns_probes)).values()), "failing before the faults"
    before = node_snapshot(fault_lab, "node3")
    timeout, held = "90s", "6s"
    plan = write_plan(
        tmp_path / "blackhole-dns.yaml",
        "blackhole-dns",
        [
            {
                "action": "fault.blackhole",
                "timeout": timeout,
                "args": {
                    "targets": {"names": ["node3"]},
                    "service": "default/details",
                    "port": 9080,
                    "duration": held,
                },
            },
            {
                "action": "fault.dns",
                "timeout": timeout,
                "args": {"targets": {"names": ["node3"]}, "duration": held},
            },
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert wait_for(lambda: installed(fault_lab, "node3", "blackhole"), 90), "blackhole never installed"
        during_blackhole = oks(probe(lab_target, blackhole_probes))
        assert wait_for(lambda: installed(fault_lab, "node3", "dns"), 90), "dns fault never installed"
        assert [r["kind"] for r in records_on(fault_lab, "node3")] == ["dns"]  # the blackhole is reverted
        during_dns = oks(probe(lab_target, dns_probes))
    finally:
        out = finish(proc)
    assert during_blackhole == {
        f"details<-{p3}": False,  # the service's ClusterIP:port from the faulted node
        f"ratings<-{p3}": True,  # another service from the same node
        f"details<-{p2}": True,  # the same service from another node
    }
    assert during_dns == {f"dns:{name}<-{p3}": False, f"dns:{name}<-{p2}": True, f"details<-{p3}": True}

    results = step_results(run_folder(out))
    blackhole, dns = results["fault.blackhole"], results["fault.dns"]
    shown = evidence_text(blackhole, "evidence", "node3")
    assert f"-d {details}/32 -p tcp -m tcp --dport 9080" in shown and "-j DROP" in shown, shown
    cidr = next(n.pod_cidr for n in lab_target.cluster.list_nodes() if n.name == "node3")
    shown = evidence_text(dns, "evidence", "node3")
    assert f"-s {cidr} -p udp -m udp --dport 53" in shown and f"-s {cidr} -p tcp -m tcp --dport 53" in shown
    for result in (blackhole, dns):
        assert result["drift"] == {"node3": []}
        assert evidence_text(result, "after", "node3") == ""  # no rule, no chain of the fault after revert
        assert evidence_text(result, "before", "node3") == ""
    assert_in_report(out, [blackhole, dns])
    no_drift(fault_lab, "node3", before)
    assert all(oks(probe(lab_target, blackhole_probes + dns_probes)).values())


def test_apiserver_cut_then_healed_by_the_expiry_timer(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    endpoint = lab_target.apiserver_endpoint
    st = fault_lab.require()
    assert endpoint == st.apiserver == f"{st.nodes['node1'].ip}:6443"
    inventory = Path(st.inventory).read_text()
    assert f"migrator_apiserver_endpoint={endpoint}" in inventory
    targets = [healthz("node3", endpoint), healthz("node2", endpoint)]
    assert all(oks(probe(lab_target, targets)).values()), "control-plane endpoint unreachable before"
    before = node_snapshot(fault_lab, "node3")
    plan = write_plan(
        tmp_path / "apiserver.yaml",
        "apiserver",
        [
            {
                "action": "fault.apiserver",
                "args": {"targets": {"names": ["node3"]}, "duration": "8s", "grace": "1s", "wait": False},
            }
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert wait_for(lambda: records_on(fault_lab, "node3") != [], 60), "fault never installed"
        assert wait_for(lambda: any("-j DROP" in x for x in node_fault_state(fault_lab, "node3")), 10)
        (rec,) = records_on(fault_lab, "node3")
        during = oks(probe(lab_target, targets))
        during_at = time.time()
        assert rec["ttl"] == 9 and timer_alive(fault_lab, "node3", rec)
        # not reverted by anyone but the node's timer: gone within TTL + 2 s (polled from here, not after
        # the CLI's exit, which may come later on a loaded machine)
        deadline = float(rec["expires_at"]) + 2.0
        healed = wait_for(lambda: records_on(fault_lab, "node3") == [], max(0.0, deadline - time.time()), 0.2)
        healed_at = time.time()
    finally:
        out = finish(proc)
    assert during_at < float(rec["expires_at"]), "probed after the expiry: the machine is too slow"
    assert during == {f"{endpoint}<-node3": False, f"{endpoint}<-node2": True}
    assert healed and healed_at <= deadline + 1.0, f"healed {healed_at - deadline:.1f}s after TTL + 2 s"
    result = step_results(run_folder(out))["fault.apiserver"]
    assert_in_report(out, [result], reverted=False)
    host, port = endpoint.rsplit(":", 1)
    shown = evidence_text(result, "evidence", "node3")
    assert f"-d {host}/32 -p tcp -m tcp --dport {port}" in shown and "-j DROP" in shown, shown
    assert "drift" not in result  # wait: false, not reverted by the step: the node's timer did it
    no_drift(fault_lab, "node3", before, timeout=2.0)
    assert not timer_alive(fault_lab, "node3", rec)
    assert all(oks(probe(lab_target, targets)).values())


def test_link_flap_takes_the_link_down_and_up_and_leaves_it_up(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    pods = echo_pods(lab_target)
    targets = [tcp(pods["node1"], pods["node4"], timeout=0.5)]
    assert all(oks(probe(lab_target, targets)).values())
    before = node_snapshot(fault_lab, "node4")
    plan = write_plan(
        tmp_path / "flap.yaml",
        "flap",
        [
            {
                "action": "fault.link-flap",
                "timeout": "90s",
                "args": {
                    "targets": {"names": ["node4"]},
                    "interface": "cni0",
                    "period": "2s",
                    "down": "1s",
                    "duration": "6s",
                },
            }
        ],
    )
    samples: list[str] = []

    def sample() -> None:  # cni0's admin state (IFF_UP) every 0.1 s for 7 s, on the node (bounded loop)
        script = (
            "i=0; while [ $i -lt 70 ]; do i=$((i+1)); f=$(cat /sys/class/net/cni0/flags);"
            " [ $((f & 1)) -eq 1 ] && echo up || echo down; sleep 0.1; done"
        )
        samples.extend(fault_lab.exec("node4", ["sh", "-c", script], timeout=30).stdout.split())

    assert lab_target.prober is not None
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert wait_for(lambda: records_on(fault_lab, "node4") != [], 60), "fault never installed"
        sampler = threading.Thread(target=sample)
        sampler.start()
        run = lab_target.prober.start_continuous(targets, rate_hz=5, max_duration=6)
        sampler.join(40)
        probes = run.stop()
    finally:
        out = finish(proc)
    # the link went down and came back up while sampled, at least twice
    flips = [(a, b) for a, b in itertools.pairwise(samples) if a != b]
    assert ("up", "down") in flips and ("down", "up") in flips, samples
    assert sum(1 for a, b in flips if (a, b) == ("up", "down")) >= 2, samples
    assert any(not r.ok for r in probes) and any(r.ok for r in probes), [r.ok for r in probes]

    result = step_results(run_folder(out))["fault.link-flap"]
    assert_in_report(out, [result])

    def counts(key: str) -> tuple[int, str]:
        text = evidence_text(result, key, "node4")
        line = next(x for x in text.splitlines() if x.startswith("link cni0 "))
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        return int(fields["carrier_down_count"]), fields["admin"]

    (down_before, admin_before), (_down_on, admin_on), (down_after, admin_after) = (
        counts("before"),
        counts("evidence"),
        counts("after"),
    )
    assert admin_before == "up" and admin_on == "down" and admin_after == "up"  # down at inject, up after
    assert down_after - down_before == 3, (down_before, down_after)  # 6 s / 2 s: three flaps
    assert "flap loop cni0 pid" in evidence_text(result, "evidence", "node4")
    assert "flap loop cni0 stopped" in evidence_text(result, "after", "node4")
    assert result["drift"] == {"node4": []}
    no_drift(fault_lab, "node4", before)
    state = fault_lab.exec("node4", ["cat", "/sys/class/net/cni0/operstate"], timeout=10).stdout.strip()
    assert state == "up"
    assert all(oks(probe(lab_target, targets)).values())


def test_full_partition_never_cuts_the_ssh_path(lab_target: Target, fault_lab: Lab, tmp_path: Path) -> None:
    pods = echo_pods(lab_target)
    others = [n for n in sorted(pods) if n != "node3"]
    targets = [tcp(pods["node3"], pods[n], timeout=0.5) for n in others]
    targets += [tcp(pods[n], pods["node3"], timeout=0.5) for n in others]
    assert all(oks(probe(lab_target, targets)).values())
    before = node_snapshot(fault_lab, "node3")
    # the commands of the step (FaultPartition with peers = every other node, cidrs 0.0.0.0/0), installed
    # with their dead man's switch by the same playbook, without a run around them
    nodes = lab_target.cluster.list_nodes()
    node3 = [n for n in nodes if n.name == "node3"]
    facts = fnodes.gather_facts(lab_target.executor, node3, data_dir=tmp_path / "facts")
    args = FaultPartitionArgs.model_validate(
        {"peers": {"names": others}, "cidrs": ["0.0.0.0/0"], "direction": "both", "duration": "120s"}
    )
    peers = [n for n in nodes if n.name in others]
    plan = build(FaultKind.PARTITION, "f0f0f0f0f0f0", args, facts["node3"], ClusterView(nodes), peers)
    try:
        got = fnodes.inject(lab_target.executor, [plan], 130, data_dir=tmp_path / "inject")
        shown = "\n".join(got["node3"].evidence.values())
        # everything dropped (0.0.0.0/0 prints as no address), after the RETURN rules of the SSH path
        drop_all = '-A MGR-F-f0f0f0f0f0f0 -m comment --comment "migrator-fault:f0f0f0f0f0f0" -j DROP'
        lines = [x for x in shown.splitlines() if x.startswith("-A MGR-F-f0f0f0f0f0f0 ")]
        assert drop_all in lines and "--dport 22" in shown, shown
        assert max(i for i, x in enumerate(lines) if "-j RETURN" in x) < lines.index(drop_all)
        assert [r.ok for r in probe(lab_target, targets).values()] == [False] * len(targets)
        # Ansible on a new SSH connection (its own control path: no master to share) still reaches the node
        st = fault_lab.require()
        with tempfile.TemporaryDirectory(prefix="fc-cp-") as cp, tempfile.TemporaryDirectory() as data:
            fresh = AnsibleRunnerExecutor(Path(st.inventory), control_path_dir=Path(cp), control_persist=1)
            listed = fnodes.list_faults(fresh, ["node3"], data_dir=Path(data))
        assert [r["kind"] for r in listed["node3"]] == ["partition"]
        # ... and so does a plain SSH connection without any connection sharing
        ssh = subprocess.run(
            [
                "ssh",
                "-i",
                st.ssh_key,
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
                f"root@{st.nodes['node3'].ip}",
                "hostname",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ssh.returncode == 0 and ssh.stdout.strip() == "node3", ssh.stderr
    finally:
        cleared = clear_faults(lab_target, ["node3"])  # what `migrator faults clear --node node3` runs
    assert cleared["node3"].drift == [] and len(cleared["node3"].reverted) == 1
    no_drift(fault_lab, "node3", before)
    assert all(oks(probe(lab_target, targets)).values())


# a bounded TCP transfer between two nodes' own namespaces: the receiver times first byte to last
RECEIVER = """
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(20)
print("listening", flush=True)
conn, _ = srv.accept(); conn.settimeout(20)
got, first = 0, None
while got < int(sys.argv[3]):
    data = conn.recv(65536)
    if not data:
        break
    first = first or time.monotonic()
    got += len(data)
print(got, time.monotonic() - first, flush=True)
"""
SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(b"x" * int(sys.argv[3])); s.close()
"""
TRANSFER_PORT = 45999


def transfer_mbit(lab: Lab, src: str, dst: str, size: int) -> float:
    """Goodput in Mbit/s of ``size`` bytes sent from node ``src`` to node ``dst`` (both bounded to 20 s)."""
    ip = lab.require().nodes[dst].ip
    args = [ip, str(TRANSFER_PORT), str(size)]
    receiver = subprocess.Popen(
        lab.exec_argv(dst, ["python3", "-c", RECEIVER, *args]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
        sent = lab.exec(src, ["python3", "-c", SENDER, *args], timeout=30)
        assert sent.ok, sent.stderr
        out, _ = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate(timeout=10)
    got, seconds = out.split()
    assert int(got) == size
    return size * 8 / float(seconds) / 1e6


def test_bandwidth_throttles_egress_to_the_rate_then_restores_it(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    size = 384 * 1024  # 3.1 Mbit: about 3 s at 1 Mbit/s
    free = transfer_mbit(fault_lab, "node3", "node1", size)
    assert free > 10, f"{free:.1f} Mbit/s before the fault: the lab is too slow to tell"
    before = node_snapshot(fault_lab, "node3")
    nodes = lab_target.cluster.list_nodes()
    node3 = [n for n in nodes if n.name == "node3"]
    facts = fnodes.gather_facts(lab_target.executor, node3, data_dir=tmp_path / "facts")
    args = FaultBandwidthArgs.model_validate({"rate": "1mbit", "duration": "120s"})
    plan = build(FaultKind.BANDWIDTH, "b0b0b0b0b0b0", args, facts["node3"], ClusterView(nodes))
    try:
        got = fnodes.inject(lab_target.executor, [plan], 130, data_dir=tmp_path / "inject")
        assert "tbf" in "\n".join(got["node3"].evidence.values())
        throttled = transfer_mbit(fault_lab, "node3", "node1", size)
        # the shaped rate counts headers too: the goodput is a little under 1 Mbit/s, never above it
        assert 0.7 <= throttled <= 1.05, f"{throttled:.2f} Mbit/s under a 1mbit tbf"
        # egress only: the other way is not shaped
        assert transfer_mbit(fault_lab, "node1", "node3", size) > 10 * throttled
    finally:
        cleared = clear_faults(lab_target, ["node3"])
    assert cleared["node3"].drift == [] and len(cleared["node3"].reverted) == 1
    no_drift(fault_lab, "node3", before)
    assert transfer_mbit(fault_lab, "node3", "node1", size) > 10
