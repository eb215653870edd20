"""Weave Net and Calico's dual-overlay mode in the lab, the pure parts (no lab): slices, configs, the policy
engines' names and choice, Weave's leftovers and what the node playbooks match."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from migrator.cni import CniKind as Cni
from migrator.cni import driver, leftovers
from migrator.cni.calico import manifest_documents
from migrator.errors import UsageError
from migrator.lab import build, calico, cni, netpol, weave, workloads
from migrator.lab.spec import CniKind, LabSpec
from migrator.lab.state import LabState, NetpolNodeState, PodPhase, PodState
from migrator.policy.objects import CompiledRule, PeerMatch, PodRules, PolicyPod
from tests.upstream import upstream_dir

REPO = Path(__file__).resolve().parents[2]
WEAVE_MANIFEST = upstream_dir() / "weave" / "weave-daemonset-k8s-1.11.yaml"


def _library(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "playbooks" / "library" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ weave


def test_node_slices_and_addresses() -> None:
    rng = weave.ipalloc_range({})
    assert str(rng) == "10.32.0.0/12"
    assert [str(weave.node_slice(rng, i)) for i in (1, 2, 17)] == [
        "10.32.0.0/24",
        "10.32.1.0/24",
        "10.32.16.0/24",
    ]
    assert weave.bridge_address(rng, 3) == "10.32.2.1/12"
    small = weave.ipalloc_range({"ipalloc_range": "10.40.0.0/23"})
    assert str(weave.node_slice(small, 2)) == "10.40.1.0/24"
    with pytest.raises(
        UsageError, match=r"ipalloc_range: 10.40.0.0/23 has 2 /24 node slice\(s\): none for node 3"
    ):
        weave.node_slice(small, 3)
    for bad in ("10.32.0.1/12", "10.32.0.0/25", "nope"):
        with pytest.raises(UsageError, match="weave-net config ipalloc_range"):
            weave.ipalloc_range({"ipalloc_range": bad})


def test_conflist_is_the_bridge_plugin_on_the_nodes_slice() -> None:
    conf = weave.conflist(ipaddress.IPv4Network("10.32.0.0/12"), 2)
    assert conf["name"] == "weave"
    bridge, portmap = conf["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["mtu"], portmap["type"]) == (
        "bridge",
        "weave",
        1376,
        "portmap",
    )
    assert bridge["ipam"]["ranges"] == [
        [
            {
                "subnet": "10.32.0.0/12",
                "rangeStart": "10.32.1.2",
                "rangeEnd": "10.32.1.254",
                "gateway": "10.32.1.1",
            }
        ]
    ]


def test_weave_lab_nodes_get_slices_of_the_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIGRATOR_HOME", str(tmp_path))
    st = build.new_state(LabSpec(name="wu", nodes=3, cni=CniKind.WEAVE))
    assert [(n.pod_cidr, n.vtep_ip) for n in st.nodes.values()] == [
        ("10.32.0.0/24", "10.32.0.1"),
        ("10.32.1.0/24", "10.32.1.1"),
        ("10.32.2.0/24", "10.32.2.1"),
    ]
    assert st.nodes["node1"].vtep_mac == weave.peer_mac("wu", "node1")
    flannel = build.new_state(LabSpec(name="wu", nodes=1))
    assert flannel.nodes["node1"].pod_cidr == "10.244.0.0/24"
    assert flannel.nodes["node1"].vtep_mac != weave.peer_mac("wu", "node1")


def test_weave_rules_keep_weaves_masquerade() -> None:
    text = weave.iptables_rules(ipaddress.IPv4Network("10.32.0.0/12"))
    nat = text.split("*filter")[0]
    assert nat.index("weaver-no-masq-local dst") < nat.index(
        "! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE"
    )
    assert "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE" in nat
    assert (
        "-A FORWARD" in text.split("*filter")[1] and "-I FORWARD" not in text
    )  # appended: policy decides first
    assert weave.mesh_peers(
        [{"mac": "00:00:00:00:00:00", "dst": "198.18.0.12"}, {"mac": "0a:1", "dst": "x"}]
    ) == ["198.18.0.12"]


@pytest.mark.skipif(not WEAVE_MANIFEST.is_file(), reason=f"no {WEAVE_MANIFEST}")
def test_the_upstream_manifest_is_recognised_as_the_labs_daemonset() -> None:
    docs = manifest_documents(yaml.safe_load_all(WEAVE_MANIFEST.read_text()))  # a kind: List
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    w = workloads.agent_daemonset("weave-net")
    assert (ds["metadata"]["namespace"], ds["metadata"]["name"]) == (w.namespace, w.name)
    assert ds["spec"]["template"]["metadata"]["labels"] == w.template.labels
    ref = driver(Cni.WEAVE).agent
    assert driver(Cni.WEAVE).matches(ds) and ref is not None and ref.key == w.key
    readiness = ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert readiness["port"] == weave.VXLAN_PORT  # the weave router's port, the fastdp VXLAN port


# ------------------------------------------------------------------------------------ calico dual overlay


def test_calico_settings_default_to_todays_agent() -> None:
    s = calico.settings({"mode": "vxlan"})
    assert s == calico.Settings() and s.signature == ""
    assert (s.vxlan_port, s.vxlan_vni, s.conf_name) == (8472, 1, "10-calico.conflist")


def test_calico_dual_overlay_settings_and_blocks() -> None:
    s = calico.settings(
        {
            "pool": "10.244.0.0/16",
            "vxlan_port": "4789",
            "vxlan_vni": "4096",
            "cni_conf_name": "20-calico.conflist",
        }
    )
    assert [str(s.block(i)) for i in (1, 2, 256)] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.255.0/24"]
    with pytest.raises(UsageError, match=r"pool: 10\.244\.0\.0/16 holds 256 /24 block"):
        s.block(257)
    s26 = calico.settings({"pool": "10.244.0.0/16", "block_size": "26"})
    assert str(s26.block(5)) == "10.244.1.0/26"
    assert s.signature and s.signature != s26.signature
    for key, bad, why in (
        ("pool", "10.244.0.1/16", "not an IPv4 network"),
        ("block_size", "19", "not in 20..32"),
        ("block_size", "x", "not an integer"),
        ("vxlan_port", "0", "not in 1..65535"),
        ("vxlan_vni", "16777216", "not in"),
        ("cni_conf_name", "../10-x.conflist", "not a CNI config file name"),
        ("nat_exclude", "10.32.0.0/12,bad", "not an IPv4 network"),
    ):
        with pytest.raises(UsageError, match=f"calico-node config {key}: .*{why}"):
            calico.settings({key: bad})
    with pytest.raises(UsageError, match="block_size: /20 is bigger than the pool"):
        calico.settings({"pool": "10.244.0.0/24", "block_size": "20"})


def test_nat_exclude_returns_before_the_masquerade() -> None:
    text = calico.iptables_rules("10.244.0.0/16", nat_exclude=("10.32.0.0/12",), hooks=False)
    lines = text.splitlines()
    ret = next(i for i, line in enumerate(lines) if "-s 10.244.0.0/16 -d 10.32.0.0/12" in line)
    assert lines[ret].startswith("-A cali-nat-outgoing ") and lines[ret].endswith("-j RETURN")
    masq = next(i for i, line in enumerate(lines) if "MASQUERADE" in line)
    assert ret < masq and "-A POSTROUTING" not in text and "-A FORWARD" not in text
    assert calico.iptables_rules() == calico.iptables_rules("10.244.0.0/16", hooks=True)


# --------------------------------------------------------------------------------------- kubelet's CNI


def test_kubelet_cni_by_file_then_by_network(tmp_path: Path) -> None:
    assert cni.kubelet_cni(tmp_path / "none") == "none"
    (tmp_path / "20-calico.conflist").write_text(json.dumps({"name": "k8s-pod-network", "plugins": [{}]}))
    assert cni.kubelet_cni(tmp_path) == "calico"
    (tmp_path / "10-weave.conflist").write_text(json.dumps({"name": "anything", "plugins": [{}]}))
    assert cni.kubelet_cni(tmp_path) == "weave"  # by file name first
    (tmp_path / "05-x.conflist").write_text(json.dumps({"name": "mynet", "plugins": [{}]}))
    assert cni.kubelet_cni(tmp_path) == "mynet"


# -------------------------------------------------------------------------------------- policy engines


def _rules(ip: str = "10.32.0.5") -> PodRules:
    pod = PolicyPod(namespace="y", name="a", labels={}, ip=ip)
    rule = CompiledRule("y/p", PeerMatch(pod_ips=frozenset({"10.32.1.7"})), None)
    return PodRules(pod=pod, ingress_isolated=True, egress_isolated=True, ingress=(rule,), egress=())


def test_each_engine_has_its_own_names() -> None:
    felix = netpol.render_node([_rules()])
    npc = netpol.render_node([_rules()], netpol.WEAVE_NPC)
    assert felix.chains == [netpol.pod_chain("E", "y/a"), netpol.pod_chain("I", "y/a")]
    assert all(c.startswith("MNP-") for c in felix.chains) and all(s.startswith("mnp-") for s in felix.sets)
    assert all(c.startswith("WEAVE-NPC-") and len(c) <= 28 for c in npc.chains)
    assert all(s.startswith("weave-") and len(s) <= 31 for s in npc.sets)
    assert not [r for r in npc.rules if "MNP" in r or "mnp-" in r]
    text = netpol.iptables_text(npc, NetpolNodeState())
    assert "-I FORWARD 1 -j WEAVE-NPC" in text and "-I INPUT 1 -j WEAVE-NPC-EGRESS" in text
    gone = netpol.iptables_text(None, NetpolNodeState(engine="weave-npc", hooked=True, chains=npc.chains))
    assert "-D FORWARD -j WEAVE-NPC" in gone and "-X WEAVE-NPC-REJECT" in gone and "MNP" not in gone


def test_state_files_from_before_engines_are_felixs() -> None:
    old = NetpolNodeState.model_validate(
        {"agent": "felix", "hooked": True, "chains": ["MNP-I-X"], "sets": []}
    )
    assert old.engine is None and netpol.programmed_engine(old) is netpol.FELIX
    assert netpol.programmed_engine(NetpolNodeState(engine="weave-npc")) is netpol.WEAVE_NPC


def _state_with_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apps: tuple[str, ...]) -> LabState:
    monkeypatch.setenv("MIGRATOR_HOME", str(tmp_path))
    st = build.new_state(LabSpec(name="wu", nodes=1, cni=CniKind.WEAVE))
    n = st.nodes["node1"]
    (Path(n.dir) / "etc-cni-net.d").mkdir(parents=True)
    for app in apps:
        w = workloads.agent_daemonset(app)
        st.workloads[w.key] = w
        p = PodState(name=f"{w.name}-x", namespace=w.namespace, node="node1", owner=f"DaemonSet/{w.name}")
        p.host_network, p.phase = True, PodPhase.RUNNING
        st.pods[p.key] = p
    return st


def test_a_node_with_two_agents_enforces_with_its_kubelets_cni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _state_with_agents(tmp_path, monkeypatch, ("weave-net", "calico-node"))
    n = st.nodes["node1"]
    conf = Path(n.dir) / "etc-cni-net.d"
    assert netpol.node_agent(st, n) == "felix"  # no config: the first engine (nothing programmed yet)
    n.netpol.engine = "weave-npc"
    assert netpol.node_agent(st, n) == "weave-npc"  # no config: the one programmed there
    (conf / "20-calico.conflist").write_text(json.dumps({"name": "k8s-pod-network", "plugins": [{}]}))
    (conf / "10-weave.conflist").write_text(json.dumps({"name": "weave", "plugins": [{}]}))
    assert netpol.node_agent(st, n) == "weave-npc"
    (conf / "10-weave.conflist").unlink()
    assert netpol.node_agent(st, n) == "felix"
    only = _state_with_agents(tmp_path / "2", monkeypatch, ("weave-net",))
    assert netpol.node_agent(only, only.nodes["node1"]) == "weave-npc"


# --------------------------------------------------------------------------------------------- leftovers


def test_weaves_leftovers_and_teardown_vars() -> None:
    left = leftovers("weave")
    assert left is not None
    assert driver(Cni.WEAVE).teardown_vars("node2") == {
        "links": ["weave", "vxlan-6784"],
        "chain_prefixes": ["WEAVE"],
        "cni_files": ["10-weave.conflist"],
        "extra_files": [],
        "ipset_prefixes": ["weave"],
        "rule_interfaces": ["weave"],
        "fail_at_node": "node2",
    }
    facts = {
        "interfaces": [{"name": "weave"}, {"name": "vxlan.calico"}],
        "cni": {"files": [{"name": "20-calico.conflist"}]},
        "iptables": {
            "chains": {"WEAVE": {"filter": ["WEAVE-NPC"]}, "cali": {"nat": ["cali-POSTROUTING"]}},
            "interface_rules": {"weave": 4, "eth0": 1},
        },
        "ipsets": {"names": ["mnp-1", "weave-2", "weaver-no-masq-local"]},
    }
    assert left.found(facts) == [
        "device weave",
        "chain filter/WEAVE-NPC",
        "ipset weave-2",
        "ipset weaver-no-masq-local",
        "4 iptables rule(s) on weave",
    ]
    calico_left = leftovers("calico")
    assert calico_left is not None
    assert "ipset_prefixes" not in driver(Cni.CALICO).teardown_vars()  # unchanged for today's CNIs
    assert not [f for f in calico_left.found(facts) if "weave" in f or "mnp-" in f]


def test_node_facts_and_chain_removal_match_interface_rules() -> None:
    facts = _library("migrator_node_facts")
    chains = _library("migrator_iptables_chains")
    rule = ["-A", "FORWARD", "-i", "weave", "!", "-o", "weave", "-j", "ACCEPT"]
    assert facts.rule_interfaces(rule) == ["weave", "weave"]
    assert facts.owner_of("WEAVE-NPC-I-ABC") == "WEAVE" and facts.owner_of("weave") == "other"
    assert chains.names_interface(rule, ["weave"]) and not chains.names_interface(rule, ["cni0"])
    assert not chains.names_interface(["-A", "FORWARD", "-j", "weave"], ["weave"])
