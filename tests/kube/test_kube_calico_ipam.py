"""Calico takes over each node's flannel pod CIDR and VTEP (IPAMBlock, BlockAffinity, IPAMHandle, node
annotations) through ``apply_cni_agent(CALICO)`` on the fake API server, with the real client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from migrator.cni import CniInfo, CniKind, CniNode, FlannelConfig
from migrator.errors import StepFailed
from migrator.targets.kube import KubeCluster, KubeCniOps
from migrator.targets.kube.calico_ipam import (
    ANN_IPV4_ADDRESS,
    ANN_VXLAN_ADDR,
    ANN_VXLAN_MAC,
    affinity_name,
    cidr_name,
    plan_node_ipam,
)
from migrator.testing.kube_server import (
    CALICO_CRD_KINDS,
    FakeApiServer,
    calico_crds,
    calico_node_daemonset,
    seed_flannel_cluster,
)

DAEMONSET = calico_node_daemonset(image="calico/node:v3.28.0")
LABEL = {"projectcalico.org/node-network-during-migration": "calico"}


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "calico.yaml"
    path.write_text(yaml.safe_dump_all([*calico_crds(), DAEMONSET]))
    return str(path)


@pytest.fixture
def seeded(fake: FakeApiServer) -> list[str]:
    fake.api.crd_established_delay = 0.05
    return seed_flannel_cluster(fake.api, workers=2, control_planes=1)


def _node(fake: FakeApiServer, name: str) -> dict[str, object]:
    node = fake.api.get("Node", name)
    assert node is not None
    return node


def test_install_keeps_each_nodes_pod_cidr_and_vtep(
    fake: FakeApiServer, seeded: list[str], manifest: str, make_cluster: Callable[..., KubeCluster]
) -> None:
    cluster = make_cluster(run_id="ipam-run", page_size=2)
    lines = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": manifest}
    )
    for name in seeded:
        node = _node(fake, name)
        cidr = node["spec"]["podCIDR"]  # type: ignore[index]
        ann = node["metadata"]["annotations"]  # type: ignore[index]
        mac = json.loads(ann["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
        vtep = cidr.split("/")[0]
        block = fake.api.get("IPAMBlock", cidr_name(cidr))
        assert block is not None, name
        spec = block["spec"]
        assert spec["cidr"] == cidr and spec["affinity"] == f"host:{name}"
        assert spec["allocations"][0] == 0 and spec["allocations"][1:] == [None] * 255
        assert spec["attributes"] == [
            {
                "handle_id": f"vxlan-tunnel-addr-{name}",
                "secondary": {"node": name, "type": "vxlanTunnelAddress"},
            }
        ]
        assert sorted(spec["unallocated"]) == list(range(1, 256))
        affinity = fake.api.get("BlockAffinity", affinity_name(name, cidr))
        assert affinity is not None
        assert affinity["spec"] == {"state": "confirmed", "node": name, "cidr": cidr, "deleted": "false"}
        handle = fake.api.get("IPAMHandle", f"vxlan-tunnel-addr-{name}")
        assert handle is not None and handle["spec"]["block"] == {cidr: 1}
        assert ann[ANN_VXLAN_ADDR] == vtep and ann[ANN_VXLAN_MAC] == mac
        assert ann[ANN_IPV4_ADDRESS] == ann["flannel.alpha.coreos.com/public-ip"] + "/32"
        managers = {e["manager"] for e in block["metadata"]["managedFields"]}
        assert managers == {"migrator"}, "server-side apply, field manager migrator"
    # a worker's app pod (10.244.1.2 on node-00001) keeps its address: Calico allocates it last
    block = fake.api.get("IPAMBlock", cidr_name("10.244.1.0/24"))
    assert block is not None and block["spec"]["unallocated"][-1] == 2
    assert block["spec"]["unallocated"][0] == 1
    assert any(line.startswith("node-00001: IPAMBlock 10-244-1-0-24 created") for line in lines), lines
    events = [e["message"] for e in fake.api.find("Event") if e["involvedObject"]["name"] == "node-00001"]
    assert (
        "Calico IPAM block 10.244.1.0/24 and VTEP 10.244.1.0 02:42:00:00:01:01 kept from flannel"
        " by migrator run ipam-run for CNI migration" in events
    ), events

    # Calico's IPAM owns the block from now on: a second install re-checks and leaves it alone
    fake.api.update("IPAMBlock", "10-244-1-0-24", "", lambda b: b["spec"]["allocations"].__setitem__(7, 1))
    fake.api.requests.clear()
    again = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": manifest}
    )
    block_reads = [(p, q) for m, p, q in fake.api.requests if m == "GET" and "/v1/ipamblocks" in p]
    assert all(p.endswith("/ipamblocks") for p, _ in block_reads), "listed, not one GET per node"
    assert any(q.get("continue") for _, q in block_reads), "paginated (limit/continue)"
    assert "node-00001: IPAMBlock 10-244-1-0-24 exists (left to Calico's IPAM)" in again
    block = fake.api.get("IPAMBlock", "10-244-1-0-24")
    assert block is not None and block["spec"]["allocations"][7] == 1

    # uninstalling Calico (the install's rollback) removes what migrator created
    rv = fake.api.last_rv
    preview = KubeCniOps(cluster).delete_cni_agent(CniKind.CALICO, dry_run=True)
    assert fake.api.last_rv == rv and "IPAMBlock 10-244-1-0-24 deleted (server dry run)" in preview
    fake.api.update(  # calico-node took one annotation over: it stays
        "Node",
        "cp-01",
        "",
        lambda n: n["metadata"]["managedFields"].append(
            {
                "manager": "calico-node",
                "operation": "Update",
                "fieldsV1": {"f:paths": [f"metadata\x1fannotations\x1f{ANN_IPV4_ADDRESS}"]},
            }
        ),
    )
    KubeCniOps(cluster).delete_cni_agent(CniKind.CALICO)
    for kind in ("IPAMBlock", "BlockAffinity", "IPAMHandle"):
        assert fake.api.find(kind) == [], kind
    for name in seeded:
        ann = _node(fake, name)["metadata"]["annotations"]  # type: ignore[index]
        assert ANN_VXLAN_ADDR not in ann and ANN_VXLAN_MAC not in ann
        assert (ANN_IPV4_ADDRESS in ann) == (name == "cp-01")
        assert "flannel.alpha.coreos.com/public-ip" in ann, "flannel's own annotations stay"


def test_a_block_taken_by_another_node_stops_the_install(
    fake: FakeApiServer, seeded: list[str], manifest: str, cluster: KubeCluster
) -> None:
    for crd in calico_crds():
        cluster.apply([crd])
    cluster.apply(
        [
            {
                "apiVersion": "crd.projectcalico.org/v1",
                "kind": "IPAMBlock",
                "metadata": {"name": "10-244-2-0-24"},
                "spec": {"cidr": "10.244.2.0/24", "affinity": "host:elsewhere"},
            }
        ]
    )
    with pytest.raises(StepFailed, match="belongs to node elsewhere, not node-00002"):
        KubeCniOps(cluster).apply_cni_agent(
            CniKind.CALICO, node_selector=LABEL, config={"manifest": manifest}
        )


def test_dry_run_sends_one_node_and_validates_when_crds_exist(
    fake: FakeApiServer, seeded: list[str], manifest: str, make_cluster: Callable[..., KubeCluster]
) -> None:
    cluster = make_cluster()
    rv = fake.api.last_rv
    fresh = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": manifest}, dry_run=True
    )
    assert fake.api.last_rv == rv, "a dry run stores nothing"
    text = "\n".join(fresh)
    assert "cp-01: IPAMBlock 10-244-0-0-24 created (server dry run) (not validated" in text
    assert "cp-01: Node cp-01 created (server dry run)" not in text
    assert "... and the same for 2 more node(s)" in text
    for crd in calico_crds():
        cluster.apply([crd])
    fake.api.requests.clear()
    rv = fake.api.last_rv
    checked = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": manifest}, dry_run=True
    )
    assert fake.api.last_rv == rv
    assert "cp-01: IPAMBlock 10-244-0-0-24 created (server dry run)" in checked
    assert "cp-01: Node cp-01 configured (server dry run)" in checked
    ipam_writes = [p for m, p, q in fake.api.requests if m == "PATCH" and "crd.projectcalico.org/v1/" in p]
    assert all("dryRun" in q for m, p, q in fake.api.requests if m == "PATCH")
    assert len([p for p in ipam_writes if "/v1/ipamblocks/" in p]) == 1, "one node is enough for a preview"


def test_missing_ipam_crds_are_reported(
    fake: FakeApiServer, seeded: list[str], tmp_path: Path, cluster: KubeCluster
) -> None:
    path = tmp_path / "calico.yaml"
    path.write_text(yaml.safe_dump_all([*calico_crds(CALICO_CRD_KINDS[:1]), DAEMONSET]))  # Felix's only
    lines = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": str(path)}
    )
    assert any(
        "skipped: the cluster serves no Calico IPAMBlock, BlockAffinity, IPAMHandle" in x for x in lines
    )


def test_install_onto_a_calico_node_already_there_takes_over_too(
    fake: FakeApiServer, seeded: list[str], cluster: KubeCluster
) -> None:
    cluster.apply([*calico_crds(), DAEMONSET])  # the user installed Calico before the run
    lines = KubeCniOps(cluster).apply_cni_agent(CniKind.CALICO, node_selector=LABEL, config={"mode": "vxlan"})
    assert lines[0].startswith("DaemonSet kube-system/calico-node nodeSelector {} ->"), lines
    assert len(fake.api.find("IPAMBlock")) == len(seeded) == len(fake.api.find("BlockAffinity"))
    KubeCniOps(cluster).apply_cni_agent(CniKind.CALICO, node_selector=None)  # finalize: the selector only
    assert len(fake.api.find("IPAMHandle")) == len(seeded)


def test_plan_refuses_nodes_calico_cannot_take_over() -> None:
    def node(name: str, cidr: str | None, mac: str | None = "02:00:00:00:00:01") -> CniNode:
        return CniNode(
            name, cidr, recorded=True, public_ip="198.18.0.9", backend_type="vxlan", vtep_mac=mac, vni=1
        )

    info = CniInfo(
        CniKind.FLANNEL,
        flannel=FlannelConfig(network="10.244.0.0/16", subnet_len=24),
        nodes={
            "ok": node("ok", "10.244.7.0/24"),
            "big": node("big", "10.244.8.0/23"),
            "away": node("away", "10.9.0.0/24"),
            "nomac": node("nomac", "10.244.9.0/24", mac=None),
            "nocidr": node("nocidr", None),
        },
    )
    planned, problems = plan_node_ipam(info, in_use={"ok": ["10.244.7.2", "10.1.1.1"]})
    assert [(p.node, p.cidr, p.vtep_ip) for p in planned] == [("ok", "10.244.7.0/24", "10.244.7.0")]
    assert planned[0].block()["spec"]["unallocated"][-1] == 2, "in-use addresses last, others ignored"
    text = "\n".join(problems)
    assert "node big: pod CIDR 10.244.8.0/23 is not a /24" in text
    assert "node away: pod CIDR 10.9.0.0/24 is outside flannel's network 10.244.0.0/16" in text
    assert "node nomac: no flannel VTEP MAC" in text and "node nocidr: no flannel pod CIDR" in text
    long_name = affinity_name("n" * 250, "10.244.7.0/24")  # hashed as Calico does past 253 characters
    assert len(long_name) == 252 and long_name.rsplit("-", 1)[0].endswith("n-10-244-7-0-24")
