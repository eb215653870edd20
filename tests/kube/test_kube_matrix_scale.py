"""Probe sampling keeps the reachability matrix linear in nodes (1,000+ node clusters).

The cluster is an in-test implementation of our own ``Cluster`` port (nodes, one app pod per node, a
few services with NodePorts): only the matrix builder is under test.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from migrator.policy.objects import Namespace, NetworkPolicy
from migrator.ports import DrainResult, Node, Pod, ProbeKind, Service, ServicePort
from migrator.probe.matrix import MatrixOptions, build_matrix

PER_SOURCE = 3
SERVICES = 20


class BigCluster:
    def __init__(self, nodes: int) -> None:
        self.nodes = [
            Node(f"n{i:05d}", f"10.{i // 250}.{i % 250}.1", frozenset({"worker"})) for i in range(nodes)
        ]
        self.pods = [
            Pod(
                f"app-{i}",
                "shop",
                n.name,
                f"172.16.{i // 250}.{i % 250}",
                {"app": "web"},
                "ReplicaSet/web",
                ports=(8080,),
            )
            for i, n in enumerate(self.nodes)
        ]
        self.services = [
            Service(f"svc-{i}", "shop", f"10.96.0.{i + 10}", (ServicePort(80, 8080, node_port=30000 + i),))
            for i in range(SERVICES)
        ] + [Service("kube-dns", "kube-system", "10.96.0.10", (ServicePort(53, 53),))]

    def identity(self) -> str:
        return "big"

    def list_namespaces(self) -> list[Namespace]:
        return [Namespace(name="shop"), Namespace(name="kube-system")]

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        return []

    def list_nodes(self) -> list[Node]:
        return list(self.nodes)

    def get_node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        raise AssertionError("read only")

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        raise AssertionError("read only")

    def drain_node(self, name: str, *, timeout: float, cancel: threading.Event | None = None) -> DrainResult:
        raise AssertionError("read only")

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        return [p for p in self.pods if (node is None or p.node == node)]

    def list_services(self, namespace: str | None = None) -> list[Service]:
        return list(self.services)

    def restart_pods(self, node: str) -> list[str]:
        raise AssertionError("read only")


def test_sampled_matrix_is_linear_in_nodes() -> None:
    options = MatrixOptions(per_source=PER_SOURCE, seed=7)
    small = build_matrix(BigCluster(500), options)
    big = build_matrix(BigCluster(1000), options)
    # every source (pod or node) has at most PER_SOURCE destinations per group:
    # pods -> pods, pods -> services (IP and DNS), DNS names, node -> local pods, NodePorts per node
    groups_per_node = 1 + 2 + 1 + 1 + 1
    assert len(big) <= groups_per_node * PER_SOURCE * 1000
    assert 1.8 <= len(big) / len(small) <= 2.2, (len(small), len(big))
    by_source: dict[str, int] = {}
    for t in big:
        if t.kind in (ProbeKind.POD_CROSS_NODE, ProbeKind.POD_SAME_NODE):
            by_source[t.source] = by_source.get(t.source, 0) + 1
    assert max(by_source.values()) == PER_SOURCE
    assert len(by_source) == 1000, "every pod is a source"
    unsampled = build_matrix(BigCluster(200), MatrixOptions(scope=MatrixOptions().scope))
    assert len(unsampled) > 200 * 199, "without sampling the pod pairs alone are quadratic"
    again = build_matrix(BigCluster(1000), options)
    assert again == big, "sampling is stable between runs (seeded)"
