"""Fast tests of the lab's pure logic: names, addresses, rules, state store, scheduling."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.errors import TemporaryError, UsageError
from migrator.lab import calico, dns, flannel, hostdirs, services, workloads
from migrator.lab.spec import (
    AppKind,
    LabSpec,
    host_veth,
    lab_prefix,
    netns_name,
    node_pod_cidr,
    node_underlay_ip,
    validate_spec,
    vtep_ip,
    vtep_mac,
)
from migrator.lab.state import LabState, NodeState, PodState, ResourceKind, StateStore


def test_prefix_and_names_fit_interface_limits() -> None:
    assert lab_prefix("default") == lab_prefix("default")
    assert lab_prefix("t1") == "mt1"
    long = lab_prefix("a-very-long-lab-name")
    assert long.startswith("m") and len(long) == 7
    assert lab_prefix("lab-a") != lab_prefix("lab-b")
    for name in ("t1", "default", "a-very-long-lab-name", "abcdef"):
        assert len(host_veth(lab_prefix(name))) <= 15
    assert netns_name("mt1", "node3") == "mt1-node3"
    assert netns_name("mt1", "p", "default-x") == "mt1-p-default-x"


def test_spec_validation() -> None:
    spec = validate_spec(name="t1", underlay="198.18.10.0/24")
    assert spec.nodes == 4 and spec.cni == "flannel" and spec.app == (AppKind.BOOKINFO,)
    with pytest.raises(UsageError):
        validate_spec(name="t1", underlay="10.0.0.0/24")  # outside 198.18.0.0/15
    with pytest.raises(UsageError):
        validate_spec(name="t1", underlay="198.18.0.0/16")  # not a /24
    with pytest.raises(UsageError):
        validate_spec(name="Bad_Name")
    with pytest.raises(UsageError):
        validate_spec(name="t1", nodes=0)


def test_addresses() -> None:
    net = ipaddress.IPv4Network("198.18.10.0/24")
    assert node_underlay_ip(net, 1) == "198.18.10.11"
    assert str(node_pod_cidr(1)) == "10.244.0.0/24"
    assert str(node_pod_cidr(4)) == "10.244.3.0/24"
    assert vtep_ip(node_pod_cidr(3)) == "10.244.2.0"
    mac = vtep_mac("t1", "node1")
    assert mac == vtep_mac("t1", "node1")  # stable
    assert mac != vtep_mac("t1", "node2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast


def test_flannel_files() -> None:
    env = flannel.subnet_env("10.244.2.0/24")
    assert "FLANNEL_NETWORK=10.244.0.0/16" in env and "FLANNEL_SUBNET=10.244.2.1/24" in env
    assert "FLANNEL_MTU=1450" in env
    conf = json.loads(flannel.conflist_text("10.244.2.0/24"))
    assert conf["name"] == "cbr0" and [p["type"] for p in conf["plugins"]] == ["bridge", "portmap"]
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "cni0" and bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]


def test_flannel_vxlan_and_fdb_lines() -> None:
    peer = flannel.Peer("node2", "198.18.0.12", "10.244.1.0/24", "10.244.1.0", "0a:00:00:00:00:02")
    lines = flannel.vxlan_lines("198.18.0.11", "10.244.0.0", "0a:00:00:00:00:01", [peer])
    assert lines[0].startswith("link add flannel.1 type vxlan id 1 local 198.18.0.11 dev eth0 dstport 8472")
    assert "route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in lines
    assert "neigh replace 10.244.1.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent" in lines
    assert flannel.fdb_lines([peer]) == [
        "fdb replace 0a:00:00:00:00:02 dev flannel.1 dst 198.18.0.12 self permanent"
    ]
    rules = flannel.masq_rules("10.244.0.0/24")
    assert "-A POSTROUTING" in rules and "MASQUERADE --random-fully" in rules and "FLANNEL-FWD" in rules


def _sp(n: int, node_port: int | None = None, proto: str = "TCP") -> services.ServicePortRules:
    return services.ServicePortRules(
        namespace="default",
        name="web",
        port_name="http",
        protocol=proto,
        cluster_ip="10.96.1.1",
        port=80,
        node_port=node_port,
        endpoints=tuple(services.Endpoint(f"10.244.{i}.2", 9080) for i in range(n)),
    )


def test_kube_proxy_rules_statistic_chain() -> None:
    res = services.render([_sp(3, node_port=30080)], "10.244.0.0/16")
    text = res.text
    svc = services.svc_chain(_sp(3))
    assert "-A KUBE-SERVICES -d 10.96.1.1/32 -p tcp -m tcp --dport 80" in text
    assert "--probability 0.33333333333" in text and "--probability 0.50000000000" in text
    assert text.count(f"-A {svc} -m comment") == 3  # three endpoint jumps
    assert text.count("-j DNAT --to-destination") == 3
    assert "-A KUBE-NODEPORTS -p tcp -m tcp --dport 30080" in text
    assert "! -s 10.244.0.0/16 -d 10.96.1.1/32" in text  # masquerade off-cluster sources
    assert text.splitlines()[0] == "*nat" and text.strip().endswith("COMMIT")
    # the nodeports jump is the last rule of KUBE-SERVICES
    nat_part = text.split("*filter")[0]
    kube_services = [line for line in nat_part.splitlines() if line.startswith("-A KUBE-SERVICES")]
    assert kube_services[-1].endswith("-j KUBE-NODEPORTS")
    assert len(res.chains) == 1 + 1 + 3  # SVC, EXT, 3 SEPs


def test_kube_proxy_rules_no_endpoints_and_stale() -> None:
    old = services.render([_sp(2)], "10.244.0.0/16")
    new = services.render([_sp(0)], "10.244.0.0/16", stale=old.chains)
    assert "REJECT" in new.text and "has no endpoints" in new.text
    for chain in old.chains:
        assert f"-X {chain}" in new.text
    assert new.chains == ()


@given(st.integers(min_value=1, max_value=40))
def test_probabilities_give_uniform_selection(n: int) -> None:
    remaining = 1.0
    shares = []
    for i in range(n):
        p = float(services.probability(i, n))
        shares.append(remaining * p)
        remaining *= 1 - p
    assert abs(sum(shares) - 1.0) < 1e-6
    assert all(abs(s - 1 / n) < 1e-6 for s in shares)


def test_chain_names_are_stable_and_short() -> None:
    a, b = _sp(1), _sp(1, proto="UDP")
    assert services.svc_chain(a) == services.svc_chain(_sp(1))
    assert services.svc_chain(a) != services.svc_chain(b)
    assert len(services.sep_chain(a, a.endpoints[0])) <= 28  # iptables chain name limit


def test_dns_files() -> None:
    spec = LabSpec(name="t1")
    _, svcs = workloads.default_objects(spec)
    hosts = dns.hosts_file(svcs)
    assert "10.96.0.10 kube-dns.kube-system.svc.cluster.local" in hosts
    assert any(line.endswith(" productpage.default.svc.cluster.local") for line in hosts.splitlines())
    resolv = dns.resolv_conf("default")
    assert "nameserver 10.96.0.10" in resolv and "search default.svc.cluster.local" in resolv


def test_bookinfo_objects() -> None:
    wls, svcs = workloads.default_objects(LabSpec(name="t1", pods_per_node=2, nodes=3))
    names = {w.name: w for w in wls}
    assert names["productpage-v1"].template.sidecar_port  # the two-container pod
    assert "ratings" in names["reviews-v2"].template.calls[0]
    assert names["echo"].replicas == 6
    per_app: dict[str, int] = {}
    for w in wls:
        if w.kind == "Deployment":
            app = w.template.labels.get("app") or w.name
            per_app[app] = per_app.get(app, 0) + w.replicas
    assert all(v >= 2 for v in per_app.values())  # every service has >= 2 replicas
    ips = [s.cluster_ip for s in svcs]
    assert len(set(ips)) == len(ips)
    assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.96.0.0/12") for ip in ips)
    _, again = workloads.default_objects(LabSpec(name="t1", pods_per_node=2, nodes=3))
    assert [s.cluster_ip for s in again] == ips  # deterministic


def _node(i: int, schedulable: bool = True) -> NodeState:
    return NodeState(
        name=f"node{i}",
        index=i,
        ip=f"198.18.0.{10 + i}",
        netns=f"x-node{i}",
        pod_cidr=str(node_pod_cidr(i)),
        vtep_ip="",
        vtep_mac="",
        dir="/tmp",
        schedulable=schedulable,
    )


def test_scheduler_spreads_and_respects_cordon() -> None:
    wls, _ = workloads.default_objects(LabSpec(name="t1", nodes=3))
    wmap = {w.key: w for w in wls}
    details = wmap["default/details-v1"]
    nodes = {n.name: n for n in (_node(1), _node(2), _node(3, schedulable=False))}
    pods: list[PodState] = []
    for i in range(4):
        where = workloads.schedule(details, nodes, pods, wmap)
        assert where in ("node1", "node2")
        pods.append(
            PodState(name=f"d{i}", namespace="default", node=where or "", owner="Deployment/details-v1")
        )
    assert sorted(p.node for p in pods) == ["node1", "node1", "node2", "node2"]
    assert workloads.schedule(details, nodes, pods, wmap, exclude=["node1", "node2"]) is None


def test_pod_names_look_like_kubernetes() -> None:
    wls, _ = workloads.default_objects(LabSpec(name="t1"))
    w = next(w for w in wls if w.name == "details-v1")
    a, b = workloads.pod_name(w, 0, 1), workloads.pod_name(w, 0, 2)
    assert a.startswith("details-v1-") and a != b and len(a.split("-")[-1]) == 5
    assert workloads.pod_name(w, 0, 1) == a


def test_state_store_roundtrip_and_lock(migrator_home: Path) -> None:
    store = StateStore("tunit")
    spec = LabSpec(name="tunit", underlay="198.18.50.0/24")
    state = LabState(
        spec=spec,
        prefix="mtunit",
        dir=str(store.dir),
        host_veth="mtunit-h",
        host_ip="198.18.50.1",
        fabric_netns="mtunit-fabric",
        outside_netns="mtunit-outside",
        outside_ip="198.18.50.200",
        inventory="/x",
        ssh_key="/y",
    )
    state.record(ResourceKind.NETNS, "mtunit-node1")
    state.record(ResourceKind.PROCESS, "sshd:node1", pid=123, start=456)
    state.record(ResourceKind.PROCESS, "sshd:node1", pid=124, start=457)  # update, no duplicate
    store.save(state)
    loaded = store.load()
    assert loaded is not None and loaded.spec == spec
    assert [(r.kind, r.name, r.pid) for r in loaded.resources] == [
        (ResourceKind.NETNS, "mtunit-node1", None),
        (ResourceKind.PROCESS, "sshd:node1", 124),
    ]
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    # the lock excludes a second holder
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock():
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    with pytest.raises(TemporaryError), store.lock(timeout=0.3):
        pass
    assert time.monotonic() - t0 >= 0.3
    release.set()
    t.join(5)
    with store.lock(timeout=1):
        pass
    store.path.unlink()
    assert store.load() is None


def test_bird_config_full_mesh_and_route_reflector() -> None:
    mesh = calico.bird_config(
        router_id="198.18.0.11",
        block="10.244.0.0/24",
        peers=[("node2", "198.18.0.12"), ("node3", "198.18.0.13")],
    )
    assert mesh.count("protocol bgp ") == 2 and "rr client" not in mesh
    assert 'route 10.244.0.0/24 via "eth0"' in mesh  # a real next hop, not a blackhole
    assert "export where source = RTS_STATIC" in mesh and "direct;" in mesh
    rr = calico.bird_config(
        router_id="198.18.0.11", block="10.244.0.0/24", peers=[("node2", "198.18.0.12")], rr_clients=True
    )
    assert "rr client;" in rr and "RTS_BGP" in rr


def test_host_dirs_list_removes_empty_unmounted_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATOR_HOME", str(tmp_path / "home"))  # a list of its own, not the session's
    a, b = tmp_path / "x" / "y", tmp_path / "kept"
    a.mkdir(parents=True)
    b.mkdir()
    (b / "file").write_text("not empty")
    hostdirs.remember([str(a.parent), str(a), str(b)])
    removed = hostdirs.remove(set())
    assert removed == [str(a), str(a.parent)]  # deepest first
    assert b.exists()  # not empty: kept, and still listed for a later down
    assert hostdirs.host_dirs_list(lambda known: known) == [str(b)]
    (b / "file").unlink()
    assert hostdirs.remove(set()) == [str(b)]
    assert hostdirs.host_dirs_list(lambda known: known) == []
