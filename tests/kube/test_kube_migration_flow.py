"""One node of the flannel → Calico flow, end to end through KubeCluster against a seeded fake cluster."""

from __future__ import annotations

from collections.abc import Callable

from migrator.cni import CniKind
from migrator.targets.kube import ApplyAction, KubeCluster, KubeCniOps, RolloutKind
from migrator.testing.kube_server import FakeApiServer, calico_node_daemonset, seed_flannel_cluster

CALICO = [
    calico_node_daemonset(
        image="quay.io/calico/node:v3.28.0",
        node_selector={"migrator.io/cni": "calico"},
        env={"CALICO_NETWORKING_BACKEND": "vxlan", "FELIX_VXLANVNI": "1", "FELIX_VXLANPORT": "8472"},
    ),
    {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": "flannel-compat"},
        "spec": {"cidr": "10.244.0.0/16", "blockSize": 24, "vxlanMode": "Always", "natOutgoing": True},
    },
]


def test_one_node_of_a_flannel_to_calico_migration(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    nodes = seed_flannel_cluster(fake.api, workers=4, control_planes=1, app_pods_per_node=1)
    fake.api.replacement_ready_delay = 0.2
    fake.api.daemonset_ready_delay = 0.3
    cluster = make_cluster(run_id="run-9", page_size=2)
    planned = cluster.list_nodes()
    assert [n.name for n in planned] == sorted(nodes) and sum(n.is_control_plane for n in planned) == 1
    assert {n.cni for n in planned} == {"flannel"}

    source = KubeCniOps(cluster).detect_cni()
    assert source.kind is CniKind.FLANNEL and source.flannel is not None
    assert source.flannel.migration_blockers() == [] and len(source.flannel_nodes) == 5

    with cluster.lock("run-9", duration=30):
        preview = cluster.apply(CALICO, dry_run=True)
        assert [r.action for r in preview] == [ApplyAction.CREATED, ApplyAction.CREATED]
        assert fake.api.get("DaemonSet", "calico-node", "kube-system") is None
        cluster.apply(CALICO)
        assert (
            cluster.wait_rollout(RolloutKind.DAEMONSET, "kube-system", "calico-node", timeout=5).desired == 0
        )

        node = "node-00001"
        cluster.set_schedulable(node, False)
        drained = cluster.drain_node(node, timeout=10)
        assert drained.evicted == ("shop/web-00001-0",)
        assert set(drained.skipped) == {"kube-flannel/kube-flannel-ds-00001"}
        cluster.label_node(node, {"migrator.io/cni": "calico"})
        pod = cluster.wait_daemonset_pod_ready("kube-system", "calico-node", node, timeout=5)
        assert pod.node == node and pod.ready
        cluster.restart_pods(node)
        cluster.set_schedulable(node, True)
        assert cluster.get_node(node).schedulable

    # flannel's pods were left alone by the node label change; the lock is released; Events tell the story
    assert len(fake.api.find("Pod", "kube-flannel")) == 5
    assert fake.api.get("Lease", "migrator-run-lock", "kube-system") is None
    events = sorted(fake.api.find("Event"), key=lambda e: int(e["metadata"]["resourceVersion"]))
    messages = [e["message"] for e in events if e["involvedObject"]["name"] == node]
    assert messages[:2] == ["cordoned by migrator run run-9 for CNI migration"] * 2
    assert "labels migrator.io/cni=calico set by migrator run run-9 for CNI migration" in messages
    assert messages[-1] == "uncordoned by migrator run run-9 for CNI migration"
