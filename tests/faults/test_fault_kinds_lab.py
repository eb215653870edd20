"""fault.blackhole, fault.dns, fault.apiserver, fault.link-flap and the SSH path under a full partition, on a
real 4-node lab (flannel, bookinfo, one echo pod per node; the lab's control-plane endpoint on node1:6443).

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

from migrator.adapters.ansible import AnsibleRunnerExecutor
from migrator.cli.faults import clear_faults
from migrator.faults import nodes as fnodes
from migrator.lab.lab import Lab
from migrator.ports import ProbeResult, Target
from tests.faults.lab_helpers import (
    cli,
    dns_query,
    echo_pods,
    healthz,
    node_fault_state,
    node_snapshot,
    records_on,
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


def evidence_text(result: dict[str, Any], key: str, node: str) -> str:
    return "\n".join(line for lines in result[key][node].values() for line in lines)


# --------------------------------------------------------------------------------------------- tests


def test_blackhole_cuts_one_service_port_on_the_node_only(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    pods = echo_pods(lab_target)
    details, ratings = service_ip(lab_target, "details"), service_ip(lab_target, "ratings")
    targets = [
        to_address(pods["node3"].key, "details", details, 9080),
        to_address(pods["node3"].key, "ratings", ratings, 9080),
        to_address(pods["node2"].key, "details", details, 9080),
    ]
    assert all(oks(probe(lab_target, targets)).values()), "service probes failing before the fault"
    before = node_snapshot(fault_lab, "node3")
    plan = write_plan(
        tmp_path / "blackhole.yaml",
        "blackhole",
        [
            {
                "action": "fault.blackhole",
                "timeout": "90s",
                "args": {
                    "targets": {"names": ["node3"]},
                    "service": "default/details",
                    "port": 9080,
                    "duration": "4s",
                },
            }
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert wait_for(lambda: records_on(fault_lab, "node3") != [], 60), "fault never installed"
        assert wait_for(lambda: any("-j DROP" in x for x in node_fault_state(fault_lab, "node3")), 10)
        during = oks(probe(lab_target, targets))
    finally:
        out = finish(proc)
    assert during == {
        f"details<-{pods['node3'].key}": False,  # the service's ClusterIP:port from the faulted node
        f"ratings<-{pods['node3'].key}": True,  # another service from the same node
        f"details<-{pods['node2'].key}": True,  # the same service from another node
    }
    result = step_results(run_folder(out))["fault.blackhole"]
    shown = evidence_text(result, "evidence", "node3")
    assert f"-d {details}/32 -p tcp -m tcp --dport 9080" in shown and "-j DROP" in shown, shown
    assert result["drift"] == {"node3": []}
    assert evidence_text(result, "after", "node3") == ""  # no rule, no chain of the fault after the revert
    no_drift(fault_lab, "node3", before)
    assert all(oks(probe(lab_target, targets)).values())


def test_dns_outage_for_the_pods_of_the_node(lab_target: Target, fault_lab: Lab, tmp_path: Path) -> None:
    pods = echo_pods(lab_target)
    details = service_ip(lab_target, "details")
    name = "details.default.svc.cluster.local"
    targets = [
        dns_query(pods["node3"].key, name, details),
        dns_query(pods["node2"].key, name, details),
        to_address(pods["node3"].key, "details", details, 9080),  # not DNS: still works
    ]
    assert all(oks(probe(lab_target, targets)).values()), "probes failing before the fault"
    before = node_snapshot(fault_lab, "node3")
    plan = write_plan(
        tmp_path / "dns.yaml",
        "dns",
        [
            {
                "action": "fault.dns",
                "timeout": "90s",
                "args": {"targets": {"names": ["node3"]}, "duration": "4s"},
            }
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert wait_for(lambda: records_on(fault_lab, "node3") != [], 60), "fault never installed"
        assert wait_for(lambda: any("-j DROP" in x for x in node_fault_state(fault_lab, "node3")), 10)
        during = oks(probe(lab_target, targets))
    finally:
        out = finish(proc)
    assert during == {
        f"dns:{name}<-{pods['node3'].key}": False,
        f"dns:{name}<-{pods['node2'].key}": True,
        f"details<-{pods['node3'].key}": True,
    }
    result = step_results(run_folder(out))["fault.dns"]
    shown = evidence_text(result, "evidence", "node3")
    cidr = next(n.pod_cidr for n in lab_target.cluster.list_nodes() if n.name == "node3")
    assert f"-s {cidr} -p udp -m udp --dport 53" in shown and f"-s {cidr} -p tcp -m tcp --dport 53" in shown
    assert result["drift"] == {"node3": []} and evidence_text(result, "after", "node3") == ""
    no_drift(fault_lab, "node3", before)
    assert all(oks(probe(lab_target, targets)).values())


def test_apiserver_cut_then_healed_by_the_expiry_timer(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    endpoint = lab_target.extras["apiserver_endpoint"]
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
    finally:
        out = finish(proc)
    assert during_at < float(rec["expires_at"]), "probed after the expiry: the machine is too slow"
    assert during == {f"{endpoint}<-node3": False, f"{endpoint}<-node2": True}
    result = step_results(run_folder(out))["fault.apiserver"]
    host, port = endpoint.rsplit(":", 1)
    shown = evidence_text(result, "evidence", "node3")
    assert f"-d {host}/32 -p tcp -m tcp --dport {port}" in shown and "-j DROP" in shown, shown
    assert "drift" not in result  # wait: false, not reverted by the step: the node's timer does it
    assert rec["ttl"] == 9 and timer_alive(fault_lab, "node3", rec)

    deadline = float(rec["expires_at"]) + 2.0
    assert wait_for(lambda: records_on(fault_lab, "node3") == [], max(0.0, deadline - time.time()))
    healed_at = time.time()
    assert healed_at <= deadline + 0.5, f"healed {healed_at - deadline:.1f}s after TTL + 2 s"
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

    def sample() -> None:  # operstate of cni0 every 0.1 s for 7 s, on the node (bounded loop)
        script = "i=0; while [ $i -lt 70 ]; do i=$((i+1)); cat /sys/class/net/cni0/operstate; sleep 0.1; done"
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
    plan = write_plan(
        tmp_path / "partition.yaml",
        "full-partition",
        [
            {
                "action": "fault.partition",
                "args": {
                    "targets": {"names": ["node3"]},
                    "peers": {"names": others, "allow_control_plane": True},
                    "cidrs": ["0.0.0.0/0"],
                    "direction": "both",
                    "duration": "120s",
                    "wait": False,
                },
            }
        ],
    )
    res = cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
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
