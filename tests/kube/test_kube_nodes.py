"""Nodes, pods and services through the real client against the fake API server: in-process (``local``),
or over HTTP (``fake``) where the test checks the requests sent (pagination, dry-run queries)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from migrator.ports import Cluster
from migrator.targets.kube import KubeCluster, open_kube_target
from migrator.testing.kube_server import (
    FakeApiServer,
    LocalKube,
    add_nodes,
    make_endpointslice,
    make_node,
    make_pod,
    make_service,
)


def test_kube_cluster_implements_the_port(local_cluster: KubeCluster) -> None:
    assert isinstance(local_cluster, Cluster)


def test_identity_is_server_url_and_kube_system_uid(local: LocalKube, local_cluster: KubeCluster) -> None:
    uid = local.api.get("Namespace", "kube-system")["metadata"]["uid"]  # type: ignore[index]
    assert local_cluster.identity() == f"{local.url}#kube-system={uid}"


def test_list_nodes_paginates_and_maps_roles(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=6, control_planes=1)
    fake.api.add(
        make_node(
            "old-master",
            ip="198.18.0.99",
            labels={"node-role.kubernetes.io/master": ""},
            annotations={"flannel.alpha.coreos.com/backend-type": "vxlan"},
        )
    )
    cluster = make_cluster(page_size=3)
    fake.api.requests.clear()
    nodes = {n.name: n for n in cluster.list_nodes()}
    assert len(nodes) == 8
    list_calls = [q for m, p, q in fake.api.requests if m == "GET" and p == "/api/v1/nodes"]
    assert len(list_calls) == 3
    assert all(q.get("limit") == "3" for q in list_calls)
    assert "continue" not in list_calls[0] and all("continue" in q for q in list_calls[1:])
    assert nodes["cp1"].is_control_plane and nodes["cp1"].roles == frozenset({"control-plane"})
    assert nodes["old-master"].is_control_plane and nodes["old-master"].cni == "flannel"
    assert not nodes["w1"].is_control_plane and nodes["w1"].roles == frozenset({"worker"})
    assert nodes["w1"].address == "198.18.0.20" and nodes["w1"].pod_cidr == "10.244.0.0/24"
    assert nodes["w1"].labels["kubernetes.io/hostname"] == "w1"
    assert cluster.get_node("w2").address == "198.18.0.21"


def test_label_and_unlabel(local: LocalKube, local_cluster: KubeCluster) -> None:
    add_nodes(local.api, workers=1, control_planes=0)
    local_cluster.label_node("w1", {"migrator.io/cni": "calico", "extra": "1"})
    assert local_cluster.get_node("w1").labels["migrator.io/cni"] == "calico"
    local_cluster.label_node("w1", {"migrator.io/cni": "calico"})  # idempotent
    local_cluster.label_node("w1", {"migrator.io/cni": None, "absent": None})
    labels = local_cluster.get_node("w1").labels
    assert "migrator.io/cni" not in labels and labels["extra"] == "1"


def test_cordon_uncordon_and_events(local: LocalKube, make_local_cluster: Callable[..., KubeCluster]) -> None:
    add_nodes(local.api, workers=1, control_planes=0)
    cluster = make_local_cluster(run_id="run-42")
    cluster.set_schedulable("w1", False)
    assert not cluster.get_node("w1").schedulable
    assert local.api.get("Node", "w1")["spec"]["unschedulable"] is True  # type: ignore[index]
    cluster.set_schedulable("w1", False)
    cluster.set_schedulable("w1", True)
    assert cluster.get_node("w1").schedulable
    assert "unschedulable" not in local.api.get("Node", "w1")["spec"]  # type: ignore[index]
    messages = [e["message"] for e in local.api.find("Event", "default")]
    assert "cordoned by migrator run run-42 for CNI migration" in messages
    assert "uncordoned by migrator run run-42 for CNI migration" in messages
    event = local.api.find("Event", "default")[0]
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "w1"}


def test_list_pods_and_services(local: LocalKube, make_local_cluster: Callable[..., KubeCluster]) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    local.api.ensure_namespace("shop")
    local.api.add(
        make_pod(
            "web-1",
            "shop",
            node="w1",
            ip="10.244.0.5",
            labels={"app": "web"},
            owner=("ReplicaSet", "web-abc"),
            ports=(8080,),
        )
    )
    local.api.add(
        make_pod(
            "web-2",
            "shop",
            node="w2",
            ip="10.244.1.5",
            labels={"app": "web"},
            owner=("ReplicaSet", "web-abc"),
            ready=False,
        )
    )
    local.api.add(
        make_pod(
            "agent",
            "kube-system",
            node="w1",
            ip="198.18.0.20",
            host_network=True,
            owner=("DaemonSet", "agent"),
        )
    )
    local.api.add(
        make_service(
            "web",
            "shop",
            cluster_ip="10.96.0.10",
            selector={"app": "web"},
            type_="NodePort",
            ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
        )
    )
    local.api.add(
        make_service(
            "headless",
            "shop",
            cluster_ip="None",
            selector={"app": "x"},
            ports=[{"port": 53, "targetPort": "dns", "protocol": "UDP"}],
        )
    )
    local.api.add(
        make_endpointslice("web", "shop", addresses=[("10.244.0.5", True), ("10.244.1.5", False)], port=8080)
    )
    cluster = make_local_cluster(page_size=2)
    pods = {p.key: p for p in cluster.list_pods()}
    assert set(pods) == {"shop/web-1", "shop/web-2", "kube-system/agent"}
    web1 = pods["shop/web-1"]
    assert (web1.node, web1.ip, web1.owner, web1.ports, web1.ready) == (
        "w1",
        "10.244.0.5",
        "ReplicaSet/web-abc",
        (8080,),
        True,
    )
    assert not pods["shop/web-2"].ready and pods["kube-system/agent"].host_network
    assert {p.key for p in cluster.list_pods(node="w1")} == {"shop/web-1", "kube-system/agent"}
    assert {p.key for p in cluster.list_pods(namespace="shop")} == {"shop/web-1", "shop/web-2"}
    services = {s.name: s for s in cluster.list_services("shop")}
    web = services["web"]
    assert web.cluster_ip == "10.96.0.10" and web.endpoints == ("10.244.0.5",)
    assert (
        web.ports[0].node_port == 30080 and web.ports[0].target_port == 8080 and web.ports[0].name == "http"
    )
    assert services["headless"].cluster_ip is None and services["headless"].ports[0].protocol == "UDP"
    assert {s.name for s in cluster.list_services()} == {"web", "headless"}


def test_restart_pods_deletes_controller_owned_non_host_network_pods(
    local: LocalKube, make_local_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    local.api.ensure_namespace("shop")
    local.api.add(
        make_pod(
            "web-1",
            "shop",
            node="w1",
            ip="10.244.0.5",
            labels={"app": "web"},
            owner=("ReplicaSet", "web-abc"),
        )
    )
    local.api.add(make_pod("naked", "shop", node="w1", ip="10.244.0.6"))
    local.api.add(
        make_pod(
            "hostnet",
            "kube-system",
            node="w1",
            ip="198.18.0.20",
            host_network=True,
            owner=("DaemonSet", "kube-proxy"),
        )
    )
    local.api.add(
        make_pod("dns-agent", "kube-system", node="w1", ip="10.244.0.7", owner=("DaemonSet", "agent"))
    )
    local.api.add(make_pod("static", "kube-system", node="w1", ip="198.18.0.20", mirror=True))
    local.api.add(make_pod("web-2", "shop", node="w2", ip="10.244.1.5", owner=("ReplicaSet", "web-abc")))
    cluster = make_local_cluster(run_id="r1")
    restarted = cluster.restart_pods("w1", wait_timeout=5)
    assert restarted == ["kube-system/dns-agent", "shop/web-1"]
    left = {p["metadata"]["name"] for p in local.api.find("Pod")}
    assert {"naked", "hostnet", "static", "web-2"} <= left
    assert "web-1" not in left and "dns-agent" not in left
    assert any(n.startswith("web-abc-") for n in left)  # the local ReplicaSet recreated it
    assert any("restarted 2 pods by migrator run r1" in e["message"] for e in local.api.find("Event"))


def test_server_side_dry_run_of_node_changes(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=1, control_planes=0)
    cluster = make_cluster(run_id="dry")
    rv = fake.api.last_rv
    cluster.label_node("w1", {"migrator.io/cni": "calico"}, dry_run=True)
    cluster.set_schedulable("w1", False, dry_run=True)
    assert fake.api.last_rv == rv and fake.api.find("Event") == []
    node = cluster.get_node("w1")
    assert node.schedulable and "migrator.io/cni" not in node.labels
    assert [q.get("dryRun") for m, p, q in fake.api.requests if m == "PATCH"] == ["All", "All"]


def test_kube_target(fake: FakeApiServer, kubeconfig: Path) -> None:
    target = open_kube_target(kubeconfig=str(kubeconfig))
    try:
        assert target.name == "kube" and isinstance(target.cluster, KubeCluster)
        assert target.cluster.identity().startswith(fake.url)
    finally:
        target.cluster.close()  # type: ignore[attr-defined]
