"""Integration tests against a real lab: real namespaces, CNI plugins, VXLAN, iptables, dnsmasq, sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrator.cli.lab import app
from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.lab.state import LabState, PodPhase, PodState, lab_dir
from migrator.ports import Cluster
from migrator.targets.lab.cluster import LabCluster, open_lab_target
from migrator.targets.lab.prober import LabProber
from tests.lab.conftest import host_traces, unique_lab

pytestmark = pytest.mark.lab


def http(lab: Lab, source: str, url: str, timeout: float = 3.0) -> tuple[int, dict[str, object] | str]:
    """GET ``url`` from inside ``source`` (pod, node or outside) with curl; (status, json-or-text)."""
    res = lab.exec(
        source, ["curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", url], timeout=timeout + 5
    )
    body, _, code = res.stdout.rpartition("\n")
    status = int(code) if code.isdigit() else 0
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def pods_of(st: LabState, app: str) -> list[PodState]:
    return [p for p in st.pods.values() if p.labels.get("app") == app and p.phase == PodPhase.RUNNING]


def vxlan_tx(lab: Lab, node: str) -> int:
    res = lab.exec(node, ["cat", "/sys/class/net/flannel.1/statistics/tx_packets"])
    return int(res.stdout.strip())


def test_status_json_shows_flannel_cluster_with_bookinfo(lab: Lab) -> None:
    res = CliRunner().invoke(app, ["status", "--name", lab.name, "-o", "json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["phase"] == "up"
    assert [n["name"] for n in status["nodes"]] == ["node1", "node2", "node3", "node4"]
    assert all(n["cni"] == "flannel" for n in status["nodes"])
    for n in status["nodes"]:
        assert n["devices"] == ["flannel.1", "cni0"] and n["cni_files"] == ["10-flannel.conflist"]
        assert n["chains"] == ["FLANNEL-FWD", "FLANNEL-POSTRTG"]
    assert status["nodes"][0]["roles"] == ["control-plane"]
    svcs = {s["name"]: s for s in status["services"]}
    for name in ("productpage", "details", "reviews", "ratings", "kube-dns"):
        assert len(svcs[name]["endpoints"]) >= 2, name
    caps = {c["name"]: c for c in status["capabilities"]}
    assert caps["vxlan"]["available"] and caps["veth"]["available"] and caps["bridge"]["available"]
    assert {"netem", "ipip", "ipvs", "dummy"} <= set(caps)
    assert Path(status["inventory"]).exists()
    assert all(p["phase"] == "Running" for p in status["pods"])


def test_cross_node_pod_to_pod_goes_through_vxlan(lab: Lab, state: LabState) -> None:
    a = pods_of(state, "ratings")[0]
    b = next(p for p in pods_of(state, "details") if p.node != a.node)
    before = vxlan_tx(lab, a.node)
    status, body = http(lab, a.key, f"http://{b.ip}:9080/")
    assert status == 200
    assert isinstance(body, dict) and body["pod"] == b.name and body["node"] == b.node
    assert vxlan_tx(lab, a.node) > before  # the packets left through flannel.1


def test_pod_to_cluster_ip_and_dns(lab: Lab, state: LabState) -> None:
    src = pods_of(state, "ratings")[0].key
    pp = state.services["default/productpage"]
    status, body = http(lab, src, f"http://{pp.cluster_ip}:9080/")
    assert status == 200 and isinstance(body, dict) and body["app"] == "productpage"
    upstream = body["upstream"]
    assert isinstance(upstream, dict) and all("200" in v for v in upstream.values())
    for url in ("http://details:9080/", "http://details.default.svc.cluster.local:9080/"):
        status, body = http(lab, src, url)
        assert status == 200 and isinstance(body, dict) and body["app"] == "details", url
    res = lab.exec(src, ["cat", "/etc/resolv.conf"])
    assert "nameserver 10.96.0.10" in res.stdout
    res = lab.exec(src, ["getent", "hosts", "reviews.default.svc.cluster.local"])
    assert res.stdout.split()[0] == state.services["default/reviews"].cluster_ip


def test_cluster_ip_spreads_over_endpoints(lab: Lab, state: LabState) -> None:
    src = pods_of(state, "details")[0].key
    echo = state.services["default/echo"]
    seen = set()
    for _ in range(24):  # bounded
        status, body = http(lab, src, f"http://{echo.cluster_ip}:9080/local")
        assert status == 200 and isinstance(body, dict)
        seen.add(body["pod"])
    assert len(seen) >= 2  # statistic --mode random picks different endpoints


def test_node_to_pod(lab: Lab, state: LabState) -> None:
    for node in state.nodes:
        target = next(p for p in pods_of(state, "details") if p.node != node)
        status, body = http(lab, node, f"http://{target.ip}:9080/healthz")
        assert status == 200 and body == "ok\n", node


def test_outside_to_nodeport_on_every_node(lab: Lab, state: LabState) -> None:
    for n in state.nodes.values():
        status, body = http(lab, "outside", f"http://{n.ip}:30080/")
        assert status == 200 and isinstance(body, dict) and body["app"] == "productpage", n.name


def test_container_to_container_over_localhost(lab: Lab, state: LabState) -> None:
    pp = pods_of(state, "productpage")[0]
    assert [c.name for c in pp.containers] == ["productpage", "sidecar"]
    assert pp.containers[0].pid != pp.containers[1].pid
    status, body = http(lab, pp.key, "http://127.0.0.1:15000/")
    assert status == 200 and isinstance(body, dict) and body["container"] == "sidecar"
    # the sidecar listens on localhost only: another pod cannot reach it
    other = pods_of(state, "details")[0]
    status, _ = http(lab, other.key, f"http://{pp.ip}:15000/", timeout=2)
    assert status == 0


def test_node_namespaces_and_ssh(lab: Lab, state: LabState) -> None:
    res = lab.exec("node2", ["sh", "-c", "hostname; ls /etc/cni/net.d; cat /run/flannel/subnet.env"])
    assert res.stdout.splitlines()[0] == "node2"
    assert "10-flannel.conflist" in res.stdout and "FLANNEL_SUBNET=10.244.1.1/24" in res.stdout
    res = lab.exec("node2", ["ip", "-d", "link", "show", "flannel.1"])
    assert (
        "vxlan id 1" in res.stdout
        and "dstport 8472" in res.stdout
        and state.nodes["node2"].vtep_mac in res.stdout
    )
    ssh = subprocess.run(
        [
            "ssh",
            "-i",
            state.ssh_key,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{state.nodes['node3'].ip}",
            "hostname; ls /etc/cni/net.d; ls /var/lib/cni/networks/cbr0",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert ssh.returncode == 0, ssh.stderr
    lines = ssh.stdout.split()
    assert lines[0] == "node3" and "10-flannel.conflist" in lines
    node3_ips = {p.ip for p in state.pods.values() if p.node == "node3" and not p.host_network}
    assert node3_ips <= set(lines)  # host-local IPAM files of node3's pods, seen over SSH


def test_ansible_reaches_nodes_with_inventory(lab: Lab, state: LabState, tmp_path: Path) -> None:
    ansible_runner = pytest.importorskip("ansible_runner")
    inv = Path(state.inventory).read_text()
    for n in state.nodes.values():
        assert f"{n.name} ansible_host={n.ip}" in inv
    assert "ansible_python_interpreter=/usr/bin/python3" in inv
    r = ansible_runner.run(
        private_data_dir=str(tmp_path),
        inventory=state.inventory,
        host_pattern="all",
        module="command",
        module_args="hostname",
        quiet=True,
        timeout=120,
    )
    assert r.status == "successful"
    outs = {
        e["event_data"]["host"]: e["event_data"]["res"]["stdout"]
        for e in r.events
        if e["event"] == "runner_on_ok"
    }
    assert outs == {n: n for n in state.nodes}


def test_adapter_implements_cluster_port(lab: Lab) -> None:
    target = open_lab_target(lab.name)
    cluster = target.cluster
    assert isinstance(cluster, Cluster) and isinstance(cluster, LabCluster)
    nodes = cluster.list_nodes()
    assert [n.name for n in nodes] == ["node1", "node2", "node3", "node4"]
    assert nodes[0].is_control_plane and not nodes[1].is_control_plane
    assert cluster.get_node("node2").pod_cidr == "10.244.1.0/24"
    assert target.inventory is not None and target.inventory.exists()
    prober = target.prober
    assert isinstance(prober, LabProber)
    netns = prober.sources()
    assert Path(netns["outside"]).exists() and Path(netns["node1"]).exists()
    assert prober.options.dns_server == "10.96.0.10"
    assert lab.netns_map() == netns
    pods = cluster.list_pods(namespace="default")
    assert pods and all(Path(netns[p.key]).exists() for p in pods if p.ready)
    svcs = {s.name: s for s in cluster.list_services()}
    assert svcs["productpage"].ports[0].node_port == 30080 and len(svcs["productpage"].endpoints) >= 2
    assert cluster.identity() == open_lab_target(lab.name).cluster.identity()
    cluster.label_node("node2", {"migrator/test": "yes"})
    assert cluster.get_node("node2").labels["migrator/test"] == "yes"
    cluster.label_node("node2", {"migrator/test": None})
    assert "migrator/test" not in cluster.get_node("node2").labels
    with pytest.raises(UsageError, match="is not up"):
        open_lab_target("tnotthere")


def test_up_twice_is_idempotent(lab: Lab, state: LabState) -> None:
    res = lab.up(state.spec)
    assert res.already_up
    assert set(lab.require().pods) == set(state.pods)
    cli = CliRunner().invoke(app, ["up", "--name", lab.name, "--underlay", state.spec.underlay])
    assert cli.exit_code == 0 and "already up" in cli.output
    assert f"Ansible inventory: {state.inventory}" in cli.output.replace("\n", "")


def test_restart_pods_gives_new_ips_on_same_node(lab: Lab, state: LabState) -> None:
    cluster = LabCluster(lab)
    before = {p.key: p.ip for p in cluster.list_pods(node="node4") if not p.host_network}
    new = cluster.restart_pods("node4")
    after = {p.key: p for p in cluster.list_pods(node="node4") if not p.host_network}
    assert len(new) == len(before) and set(new) == set(after)
    assert not set(before) & set(after)
    assert all(p.ready and p.ip and p.ip.startswith("10.244.3.") for p in after.values())
    status, _ = http(lab, "outside", f"http://{state.nodes['node1'].ip}:30080/")
    assert status == 200


def test_reconcile_replaces_a_killed_pod(lab: Lab) -> None:
    st = lab.require()
    victim = pods_of(st, "echo")[0]
    pid = victim.containers[0].pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    started = lab.reconcile()
    assert len(started) == 1
    now = lab.require()
    assert victim.key not in now.pods and started[0] in now.pods
    assert victim.ip not in lab.endpoints(now, "default/echo")
    assert now.pods[started[0]].ip in lab.endpoints(now, "default/echo")


def test_drain_moves_pods_with_new_ips_and_services_keep_working(lab: Lab) -> None:
    cluster = LabCluster(lab)
    st = lab.require()
    victim = next(p.node for p in pods_of(st, "productpage") if p.node != "node1")
    old = {p.key: p for p in cluster.list_pods(node=victim) if not p.host_network}
    assert old
    result = cluster.drain_node(victim, timeout=60)
    assert set(result.evicted) == set(old)
    assert result.skipped and all("kube-proxy" in k or "flannel" in k for k in result.skipped)
    assert not cluster.get_node(victim).schedulable
    now = lab.require()
    moved = [p for p in now.pods.values() if not p.host_network and p.node == victim]
    assert moved == []
    old_ips = {p.ip for p in old.values()}
    for p in now.pods.values():
        if not p.host_network:
            assert p.phase == PodPhase.RUNNING and p.ip not in old_ips
    for svc in cluster.list_services():
        assert not set(svc.endpoints) & old_ips
        assert len(svc.endpoints) >= 2 or svc.name == "reviews"
    for n in now.nodes.values():  # NodePort answers on every node, the drained one included
        status, body = http(lab, "outside", f"http://{n.ip}:30080/")
        assert status == 200 and isinstance(body, dict), n.name
        assert body["node"] != victim
    src = pods_of(now, "ratings")[0].key
    status, _ = http(lab, src, "http://productpage.default.svc.cluster.local:9080/")
    assert status == 200
    assert cluster.drain_node(victim, timeout=30).evicted == ()  # idempotent
    cluster.set_schedulable(victim, True)
    assert cluster.get_node(victim).schedulable


def test_exec_cli_return_code(lab: Lab) -> None:
    res = CliRunner().invoke(app, ["exec", "--name", lab.name, "node1", "--", "true"])
    assert res.exit_code == 0
    res = CliRunner().invoke(app, ["exec", "--name", lab.name, "node1", "--", "false"])
    assert res.exit_code == 1
    with pytest.raises(UsageError):
        lab.exec_argv("no-such-pod", ["true"])


def test_up_refuses_an_underlay_in_use(lab: Lab, state: LabState) -> None:
    name, _ = unique_lab("x")
    with pytest.raises(UsageError, match="overlaps the host route"):
        Lab(name).up(LabSpec(name=name, nodes=1, app="none", underlay=state.spec.underlay))
    assert host_traces(name, lab_dir(name)) == []
    assert lab.require().phase == "up"


def test_second_lab_coexists(lab: Lab) -> None:
    """A second lab with another name and underlay runs next to the session lab without clashing."""
    name, underlay = unique_lab("c")
    other = Lab(name)
    try:
        other.up(LabSpec(name=name, nodes=2, pods_per_node=1, app="none", underlay=underlay))
        st = other.require()
        status, body = http(other, "outside", f"http://{st.nodes['node2'].ip}:30081/")
        assert status == 200 and isinstance(body, dict) and body["app"] == "echo"
        status, _ = http(lab, "outside", f"http://{lab.require().nodes['node1'].ip}:30080/")
        assert status == 200
    finally:
        other.down()
