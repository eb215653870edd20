"""CniInfo.migration_blockers: what the cni.preflight step refuses (pure, no lab)."""

from __future__ import annotations

from migrator.cni import CalicoPool, CniInfo, CniKind, FlannelConfig, driver, leftovers
from migrator.lab.spec import CniKind as LabCni


def flannel(**kw: object) -> CniInfo:
    conf: dict[str, object] = {"network": "10.244.0.0/16"}
    pools = kw.pop("calico_pools", ())
    conf.update(kw)
    return CniInfo(kind=CniKind.FLANNEL, flannel=FlannelConfig(**conf), calico_pools=pools)  # type: ignore[arg-type]


def test_vxlan_flannel_is_migratable() -> None:
    assert flannel().migration_blockers() == []


def test_non_vxlan_backend_and_direct_routing_are_refused() -> None:
    problems = flannel(backend_type="host-gw", direct_routing=True).migration_blockers()
    assert any("host-gw" in p for p in problems)
    assert any("DirectRouting" in p for p in problems)


def test_conflicting_calico_pool_is_refused_but_a_matching_one_is_not() -> None:
    bad = CalicoPool(name="default-ipv4-ippool", cidr="10.244.0.0/16", ipip_mode="Always", block_size=26)
    assert any("default-ipv4-ippool" in p for p in flannel(calico_pools=(bad,)).migration_blockers())
    good = CalicoPool(name="flannel-compat", cidr="10.244.0.0/16", vxlan_mode="Always", block_size=24)
    assert flannel(calico_pools=(good,)).migration_blockers() == []
    elsewhere = CalicoPool(name="other", cidr="192.168.0.0/16", ipip_mode="Always")
    assert flannel(calico_pools=(elsewhere,)).migration_blockers() == []


def test_canal_and_weave_are_sources_and_cilium_is_refused() -> None:
    # Canal: flannel's network, so its net-conf.json is required (canal-config); Weave: its range
    assert CniInfo(kind=CniKind.CANAL).migration_blockers() == [
        "canal runs but its net-conf.json (ConfigMap canal-config) was not found or not valid"
    ]
    assert CniInfo(kind=CniKind.WEAVE, config={"IPALLOC_RANGE": "10.32.0.0/12"}).migration_blockers() == []
    assert (
        "is not an IPv4 CIDR"
        in CniInfo(kind=CniKind.WEAVE, config={"IPALLOC_RANGE": "x"}).migration_blockers()[0]
    )
    assert CniInfo(kind=CniKind.CANAL).supported_source and CniInfo(kind=CniKind.WEAVE).supported_source
    (cilium,) = CniInfo(kind=CniKind.CILIUM).migration_blockers()
    assert "cilium" in cilium and "not supported yet" in cilium
    assert "already runs Calico" in CniInfo(kind=CniKind.CALICO).migration_blockers()[0]


def test_the_labs_cni_choice_is_part_of_the_one_vocabulary() -> None:
    # the lab keeps its own build choice (what `lab up --cni` can build), named as the vocabulary names it
    assert {c.value for c in LabCni} <= {k.value for k in CniKind}


def test_the_drivers_teardown_vars_and_leftovers_are_the_switch_playbooks() -> None:
    assert driver(CniKind.FLANNEL).teardown_vars("node4") == {
        "links": ["flannel.1", "cni0"],
        "chain_prefixes": ["FLANNEL"],
        "cni_files": ["10-flannel.conflist"],
        "extra_files": ["/run/flannel/subnet.env"],
        "fail_at_node": "node4",
    }
    assert driver(CniKind.CALICO).teardown_vars()["links"] == ["vxlan.calico"]
    assert leftovers("cilium") is None and leftovers("nope") is None
    flannel_left = leftovers("flannel")
    assert flannel_left is not None
    facts = {
        "n1": {
            "interfaces": [{"name": "flannel.1"}, {"name": "eth0"}],
            "cni": {"files": [{"name": "00-migrator-blocking.conflist"}, {"name": "10-calico.conflist"}]},
            "iptables": {"chains": {"FLANNEL": {"filter": ["FLANNEL-FWD"]}}},
            "flannel_subnet_env": True,
        },
        "n2": {"interfaces": [{"name": "vxlan.calico"}]},
    }
    assert flannel_left.on_hosts(facts, ["n1", "n2", "n3"]) == {
        "n1": [
            "device flannel.1",
            "file 00-migrator-blocking.conflist",
            "chain filter/FLANNEL-FWD",
            "file /run/flannel/subnet.env",
        ],
        "n3": ["no node facts"],
    }


def test_the_journal_keeps_the_preflight_record_shape() -> None:
    info = flannel()
    assert list(info.to_json()) == [
        "source",
        "present",
        "network",
        "subnet_len",
        "backend",
        "vni",
        "port",
        "mtu",
        "masquerade",
        "direct_routing",
        "nodes",
        "calico_pools",
        "agents",
    ]
    assert CniInfo(kind=CniKind.UNKNOWN).to_json()["network"] is None
