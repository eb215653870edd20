"""``docs/rbac.yaml`` covers everything migrator does: every request of a flannel → Calico flow through
KubeCluster and KubeProber (recorded by the fake API server) needs only permissions of the table that
the doctor checks and the document is generated from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from migrator.cni import CniKind
from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget
from migrator.targets.kube import KubeCluster, KubeCniOps
from migrator.targets.kube.prober import KubeProber
from migrator.targets.kube.rbac import granted, required_permission
from migrator.testing.kube_server import (
    FakeApiServer,
    calico_crds,
    calico_node_daemonset,
    seed_flannel_cluster,
)

LABEL = "projectcalico.org/node-network-during-migration"
CALICO = [
    *calico_crds(),
    {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "calico-node", "namespace": "kube-system"},
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "calico-node"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "calico-node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "calico-node"},
        "subjects": [{"kind": "ServiceAccount", "name": "calico-node", "namespace": "kube-system"}],
    },
    calico_node_daemonset(image="calico/node"),
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "calico-kube-controllers", "namespace": "kube-system"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "calico-kube-controllers"}},
                "spec": {"containers": [{"name": "c", "image": "calico/kube-controllers"}]},
            },
        },
    },
]


def test_every_request_of_the_flow_is_in_the_rbac_table(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster], tmp_path: Path
) -> None:
    api = fake.api
    api.crd_established_delay = 0.3  # the install waits for its CRDs by watch
    api.daemonset_ready_delay = 0.05
    api.replacement_ready_delay = 0.05
    seed_flannel_cluster(api, workers=2, control_planes=1)
    manifest = tmp_path / "calico.yaml"
    manifest.write_text(yaml.safe_dump_all(CALICO))
    cluster = make_cluster(run_id="rbac-run")
    cni = KubeCniOps(cluster)
    api.requests.clear()

    cluster.identity()
    with cluster.lock("rbac-run", duration=30):
        cni.detect_cni()
        for each in cluster.list_nodes():
            cluster.label_node(each.name, {LABEL: "flannel"})
        cni.apply_cni_agent(CniKind.FLANNEL, node_selector={LABEL: "flannel"})
        sel = {LABEL: "calico"}
        cni.apply_cni_agent(
            CniKind.CALICO, node_selector=sel, config={"manifest": str(manifest)}, dry_run=True
        )
        cni.apply_cni_agent(CniKind.CALICO, node_selector=sel, config={"manifest": str(manifest)})
        node = "node-00001"
        cluster.preview_drain(node)
        cluster.set_schedulable(node, False)
        cluster.drain_node(node, timeout=10)
        cluster.label_node(node, sel)
        cluster.wait_daemonset_pod_ready("kube-system", "calico-node", node, timeout=10)
        cni.cni_agent_ready(CniKind.CALICO, node)
        cluster.restart_pods(node, wait_timeout=10)
        cluster.set_schedulable(node, True)
        cluster.list_services()
        prober = KubeProber(cluster, poll=0.1, round_margin=0.3, deploy_timeout=10)
        targets = [
            ProbeTarget(
                "default/x", "y", ProbeKind.POD_CROSS_NODE, "127.0.0.1", 9, ProbeProtocol.TCP, timeout=0.1
            ),
            ProbeTarget(node, "z", ProbeKind.NODE_TO_POD, "127.0.0.1", 9, ProbeProtocol.TCP, timeout=0.1),
            ProbeTarget("outside", "shop/web@cp-01", ProbeKind.NODEPORT, "198.18.0.2", 30080, timeout=0.1),
        ]
        prober.probe(targets)  # no runner in the fake: the results time out, the requests are made
        api.namespace_termination_seconds = 0.3  # the probe namespace is Terminating for a while
        prober.cleanup()
        cni.delete_cni_agent(CniKind.CALICO, dry_run=True)
        cni.delete_cni_agent(CniKind.CALICO)
        cni.delete_cni_agent(CniKind.FLANNEL)

    needed = {p for m, path, q in api.requests if (p := required_permission(m, path, q)) is not None}
    missing = sorted(p for p in needed if not granted(*p))
    assert missing == [], f"requests outside docs/rbac.yaml: {missing}"
    resources = {r for _, _, r in needed}
    assert ("watch", "apiextensions.k8s.io", "customresourcedefinitions") in needed
    assert ("watch", "", "namespaces") in needed
    for used in (
        "pods/eviction",
        "pods/log",
        "leases",
        "events",
        "ipamblocks",
        "blockaffinities",
        "ipamhandles",
        "customresourcedefinitions",
        "clusterrolebindings",
        "nodes",
        "daemonsets",
        "deployments",
    ):
        assert used in resources, f"the flow did not exercise {used}"


def test_required_permission_mapping() -> None:
    assert required_permission("GET", "/api/v1/nodes", {}) == ("list", "", "nodes")
    assert required_permission("GET", "/api/v1/nodes", {"watch": "true"}) == ("watch", "", "nodes")
    assert required_permission("GET", "/api/v1/namespaces/kube-system", {}) == ("get", "", "namespaces")
    assert required_permission("POST", "/api/v1/namespaces/a/pods/p/eviction", {}) == (
        "create",
        "",
        "pods/eviction",
    )
    assert required_permission("PUT", "/apis/coordination.k8s.io/v1/namespaces/k/leases/l", {}) == (
        "update",
        "coordination.k8s.io",
        "leases",
    )
    assert required_permission("GET", "/apis/apps/v1", {}) is None, "discovery"
    assert required_permission("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {}) is None
