"""Calico's dual-overlay mode beside Weave Net: a Weave Net -> Calico migration done by hand on a 3-node
weave lab, node by node (calico-node everywhere with its own pool and VXLAN port, then each node's kubelet
switched to Calico and its pods restarted), down to Weave's leftovers removed by the real playbooks.

At every step: every echo pod reaches every other both ways, the policy engine of each node is the one of
its kubelet CNI (weave-npc, then felix) and still enforces, the Service and NodePort answer. The weave
masquerade is shown on traffic between the two ranges, and gone once MIGRATOR-NONAT-like exceptions exist.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.cni import CniKind as Cni
from migrator.cni import driver
from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec
from migrator.lab.state import PodState
from migrator.ports import PlaybookRequest, RunnerStatus
from migrator.probe.suite import run_verify
from migrator.targets.lab.cluster import LabCluster, open_lab_target
from migrator.targets.lab.cni import LabCniOps
from tests.lab.conftest import host_traces, unique_lab
from tests.lab.netpol_probe import policy_doc, write_docs
from tests.lab.test_lab import http, pods_of
from tests.lab.test_weave import host_ipsets

pytestmark = pytest.mark.lab
NODES = ("node1", "node2", "node3")
POOL = "10.244.0.0/16"
WEAVE_RANGE = "10.32.0.0/12"
DUAL = {
    "pool": POOL,
    "block_size": "24",
    "vxlan_port": "4789",
    "vxlan_vni": "4096",
    "cni_conf_name": "20-calico.conflist",
    "nat_exclude": WEAVE_RANGE,
}
# what the migration adds before switching a node (the lead's MIGRATOR-NONAT): traffic between the two
# ranges keeps its source address (ACCEPT ends the nat POSTROUTING walk before WEAVE and cali-POSTROUTING)
NONAT = "\n".join(
    [
        "*nat",
        ":MIGRATOR-NONAT - [0:0]",
        "-I POSTROUTING 1 -j MIGRATOR-NONAT",
        f"-A MIGRATOR-NONAT -s {WEAVE_RANGE} -d {POOL} -j ACCEPT",
        f"-A MIGRATOR-NONAT -s {POOL} -d {WEAVE_RANGE} -j ACCEPT",
        "COMMIT",
        "",
    ]
)
SERVER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen(1)
s.settimeout(8)
c, addr = s.accept()
print(addr[0], flush=True)
c.close()
"""
ECHO_ONLY = {
    "podSelector": {"matchLabels": {"app": "echo"}},
    "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "echo"}}}]}],
}


@pytest.fixture()
def weave_lab(migrator_home: Path) -> Iterator[Lab]:
    name, underlay = unique_lab("d")
    lab = Lab(name)
    try:
        lab.up(
            LabSpec(
                name=name, nodes=3, cni=CniKind.WEAVE, pods_per_node=2, app=AppKind.NONE, underlay=underlay
            )
        )
        yield lab
    finally:
        res = lab.down()
        assert not res.leftovers, res.leftovers
        assert not host_traces(name, migrator_home / "labs" / name)
        assert not [s for s in host_ipsets() if s.startswith(("weave", "mnp-"))]


def _echo(lab: Lab) -> dict[str, list[PodState]]:
    by_node: dict[str, list[PodState]] = {n: [] for n in NODES}
    for p in pods_of(lab.require(), "echo"):
        by_node[p.node].append(p)
    return by_node


def _all_pairs_ok(lab: Lab) -> None:
    pods = [p for ps in _echo(lab).values() for p in ps]
    bad = []
    for a in pods:
        for b in pods:
            if a.key != b.key:
                status, body = http(lab, a.key, f"http://{b.ip}:9080/local")
                if not (status == 200 and isinstance(body, dict) and body["pod"] == b.name):
                    bad.append(f"{a.key} {a.ip} -> {b.key} {b.ip}: {status}")
    assert not bad, bad


def _services_ok(lab: Lab, *, nodeports: bool = True) -> None:
    """The echo Service from a pod of each node; its NodePort on every node from outside (not while the
    policy allows echo pods only: NodePort traffic reaches the pods from a node address, as kube-proxy
    masquerades it)."""
    st = lab.require()
    ip = st.services["default/echo"].cluster_ip
    for src in (ps[0] for ps in _echo(lab).values()):
        for _ in range(4):  # the Service spreads over both ranges' endpoints
            status, body = http(lab, src.key, f"http://{ip}:9080/local")
            assert status == 200 and isinstance(body, dict) and body["app"] == "echo", (src.key, src.ip, body)
    for n in st.nodes.values() if nodeports else ():
        status, _ = http(lab, "outside", f"http://{n.ip}:30081/local")
        assert status == 200, n.name


def _seen_source(lab: Lab, server: PodState, client: PodState) -> str:
    """The source address ``server`` sees on a TCP connection from ``client`` (one bounded accept)."""
    argv = lab.exec_argv(server.key, ["python3", "-I", "-S", "-c", SERVER])
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as srv:
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                res = lab.exec(client.key, ["python3", "-c", _CONNECT.format(ip=server.ip)], timeout=10)
                if res.rc == 0:
                    break
                time.sleep(0.1)
            out, _ = srv.communicate(timeout=10)
        finally:
            srv.kill()
    return out.strip()


_CONNECT = "import socket; socket.create_connection(('{ip}', 7777), timeout=2).close()"


def _engines(lab: Lab) -> dict[str, tuple[str | None, list[str]]]:
    """Per node: the policy engine, and the policy chain families programmed there."""
    out = {}
    for n in lab.require().nodes.values():
        chains = lab.exec(n.name, ["iptables", "-S"]).stdout
        fams = [f for f in ("MNP-", "WEAVE-NPC") if f"-N {f}" in chains]
        out[n.name] = (n.netpol.agent, fams)
    return out


def _denied_from_dns(lab: Lab) -> None:
    """A pod the policy does not allow (coredns) cannot reach any echo pod, on either engine."""
    dns = next(p for p in lab.require().pods.values() if p.labels.get("k8s-app") == "kube-dns")
    for ps in _echo(lab).values():
        status, _ = http(lab, dns.key, f"http://{ps[0].ip}:9080/local", timeout=1.5)
        assert status == 0, ps[0].key


def _switch(lab: Lab, node: str) -> None:
    """The node's kubelet moves to Calico: Weave's config goes, the pods restart on 20-calico.conflist."""
    assert lab.exec(node, ["rm", "-f", "/etc/cni/net.d/10-weave.conflist"]).rc == 0
    lab.restart_pods(node)


def test_dual_overlay_migration_node_by_node(weave_lab: Lab, tmp_path: Path) -> None:
    lab = weave_lab
    ops = LabCniOps(lab)
    with pytest.raises(UsageError, match="pool"):
        ops.apply_cni_agent(Cni.CALICO, config={**DUAL, "pool": "10.244.0.0/23"})  # 2 blocks, 3 nodes
    with pytest.raises(UsageError, match="vxlan_port"):
        ops.apply_cni_agent(Cni.CALICO, config={**DUAL, "vxlan_port": "70000"})
    weave_before = {n: lab.exec(n, ["ip", "route", "show", "dev", "weave"]).stdout for n in NODES}

    # 1. calico-node on every node, beside Weave: its own VXLAN device, blocks and routes; Weave untouched
    ops.apply_cni_agent(Cni.CALICO, config=DUAL)
    for i, name in enumerate(NODES):
        out = lab.exec(
            name, ["sh", "-c", "ip -d link show vxlan.calico; ip -4 addr show vxlan.calico; ip route"]
        )
        assert "vxlan id 4096" in out.stdout and "dstport 4789" in out.stdout
        assert f"inet 10.244.{i}.0/32" in out.stdout
        for j in range(3):
            if j != i:
                assert f"10.244.{j}.0/24 via 10.244.{j}.0 dev vxlan.calico onlink" in out.stdout
        assert lab.exec(name, ["ip", "route", "show", "dev", "weave"]).stdout == weave_before[name]
        files = lab.exec(name, ["ls", "/etc/cni/net.d"]).stdout.split()
        assert files == ["10-weave.conflist", "20-calico.conflist"]
        assert LabCluster(lab).get_node(name).cni == "weave"
    info = ops.detect_cni()
    assert info.kind is Cni.WEAVE and info.present == (Cni.WEAVE, Cni.CALICO)
    assert set(info.agents) == {"weave-net", "calico-node"}
    _all_pairs_ok(lab)

    # 2. node3 first: its pods get Calico addresses; both ranges reach each other both ways
    _switch(lab, "node3")
    echo = _echo(lab)
    assert all(p.ip and p.ip.startswith("10.244.2.") for p in echo["node3"])
    assert all(p.ip and p.ip.startswith("10.32.") for p in echo["node1"] + echo["node2"])
    assert LabCluster(lab).get_node("node3").cni == "calico"
    _all_pairs_ok(lab)
    _services_ok(lab)

    # weave's masquerade between the ranges (nat_exclude keeps Calico's own nat-outgoing out of it)...
    weave_pod, calico_pod = echo["node1"][0], echo["node3"][0]
    st = lab.require()
    assert _seen_source(lab, weave_pod, calico_pod) == st.nodes["node3"].vtep_ip  # node3's weave address
    assert _seen_source(lab, calico_pod, weave_pod) == "10.244.0.0"  # node1's vxlan.calico VTEP
    # ... and none once the migration's exceptions come first in POSTROUTING
    for name in NODES:
        res = subprocess.run(
            lab.exec_argv(name, ["iptables-restore", "--noflush"]),
            input=NONAT,
            check=False,
            text=True,
            capture_output=True,
        )
        assert res.returncode == 0, res.stderr
    assert _seen_source(lab, weave_pod, calico_pod) == calico_pod.ip
    assert _seen_source(lab, calico_pod, weave_pod) == weave_pod.ip

    # kube-proxy masquerades ClusterIP traffic from outside its --cluster-cidr (Weave's range): Calico pods'
    # calls to a Service would reach the endpoints from a node address, which a policy denies; one CIDR
    # covering both ranges while both run
    lab.apply_daemonset("kube-proxy", None, {"cluster_cidr": "10.0.0.0/8"})
    # a policy, enforced by each node's engine: felix on node3 (kubelet on Calico), weave-npc elsewhere
    lab.apply([write_docs(tmp_path, [policy_doc("default", "echo-only", ECHO_ONLY)])])
    engines = _engines(lab)
    assert engines == {
        "node1": ("weave-npc", ["WEAVE-NPC"]),
        "node2": ("weave-npc", ["WEAVE-NPC"]),
        "node3": ("felix", ["MNP-"]),
    }
    _all_pairs_ok(lab)  # allowed across engines and ranges: the sources are the pods'
    _denied_from_dns(lab)

    # 3. the other nodes, one at a time: the engine switches with the kubelet's CNI, weave-npc's go
    for name in ("node1", "node2"):
        _switch(lab, name)
        assert _engines(lab)[name] == ("felix", ["MNP-"])
        sets = lab.exec(name, ["ipset", "list", "-n"]).stdout.split()
        assert not [s for s in sets if s.startswith("weave-")], sets
        assert any(s.startswith("mnp-") for s in sets), sets
        _all_pairs_ok(lab)
        _services_ok(lab, nodeports=False)
        _denied_from_dns(lab)
    assert all(p.ip and p.ip.startswith("10.244.") for ps in _echo(lab).values() for p in ps)
    assert _engines(lab) == {n: ("felix", ["MNP-"]) for n in NODES}

    # 4. Weave goes: its DaemonSet, then its node leftovers through the real playbooks
    ops.delete_cni_agent(Cni.WEAVE)
    target = open_lab_target(lab.name)
    assert target.executor is not None
    left = driver(Cni.WEAVE).leftovers
    assert left is not None
    facts = target.executor.node_facts(NODES, data_dir=tmp_path / "facts-before")
    before = left.on_hosts(facts, NODES)
    for name in NODES:
        found = before[name]
        for thing in (
            "device weave",
            "device vxlan-6784",
            "ipset weaver-no-masq-local",
        ):
            assert thing in found, (name, found)
        assert "chain nat/WEAVE" in found and "chain filter/WEAVE-EXPOSE" in found
        assert "4 iptables rule(s) on weave" in found, found
    assert not [f for fs in before.values() for f in fs if "WEAVE-NPC" in f]  # went with the engine switch
    vars_ = driver(Cni.WEAVE).teardown_vars()
    assert vars_["ipset_prefixes"] == ["weave"] and vars_["rule_interfaces"] == ["weave"]
    for playbook, extra in (
        ("cni-switch-teardown.yml", vars_),
        ("cni-config.yml", {"cni_file": "00-migrator-blocking.conflist", "cni_state": "absent"}),
    ):
        res = target.executor.run_playbook(
            PlaybookRequest(playbook=Path(playbook), hosts=NODES, extra_vars=extra),
            data_dir=tmp_path / playbook,
        )
        assert res.status is RunnerStatus.SUCCESSFUL, res
    facts = target.executor.node_facts(NODES, data_dir=tmp_path / "facts-after")
    assert left.on_hosts(facts, NODES) == {}
    calico_left = driver(Cni.CALICO).leftovers
    assert calico_left is not None and all(
        calico_left.on_hosts(facts, NODES)[n] for n in NODES
    )  # Calico stays
    lab.reconcile()

    # 5. after Weave: Calico only, kube-proxy's cluster CIDR moved to the pool, everything answers
    lab.apply_daemonset("kube-proxy", None, {"cluster_cidr": POOL})
    assert f"! -s {POOL} -d " in lab.exec("node2", ["iptables-save", "-t", "nat"]).stdout
    assert ops.detect_cni().kind is Cni.CALICO
    _all_pairs_ok(lab)
    _denied_from_dns(lab)
    lab.delete([write_docs(tmp_path, [policy_doc("default", "echo-only", {"podSelector": {}})], "del.yaml")])
    report = run_verify(target)
    assert report.summary.passed and report.summary.ok == report.summary.total, report.summary.failures[:5]
