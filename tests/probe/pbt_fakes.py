"""A minimal in-memory :class:`migrator.ports.Cluster` for probe tests (read-mostly)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

from migrator.policy.objects import Namespace, NetworkPolicy
from migrator.ports import DrainResult, Node, Pod, Service


class FakeCluster:
    def __init__(
        self, nodes: list[Node], pods: list[Pod], services: list[Service], name: str = "fake"
    ) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._pods = list(pods)
        self._services = list(services)
        self._name = name

    def identity(self) -> str:
        return f"fake:{self._name}"

    def list_nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def get_node(self, name: str) -> Node:
        return self._nodes[name]

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        node = self._nodes[name]
        new = dict(node.labels)
        for k, v in labels.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        self._nodes[name] = dataclasses.replace(node, labels=new)

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        self._nodes[name] = dataclasses.replace(self._nodes[name], schedulable=schedulable)

    def drain_node(self, name: str, *, timeout: float, cancel: threading.Event | None = None) -> DrainResult:
        return DrainResult(node=name)

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        return [
            p
            for p in self._pods
            if (namespace is None or p.namespace == namespace) and (node is None or p.node == node)
        ]

    def list_services(self, namespace: str | None = None) -> list[Service]:
        return [s for s in self._services if namespace is None or s.namespace == namespace]

    def restart_pods(self, node: str) -> list[str]:
        return [p.key for p in self._pods if p.node == node]

    def list_namespaces(self) -> list[Namespace]:
        return [Namespace(name=ns) for ns in sorted({p.namespace for p in self._pods})]

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        return []  # no policy: every probe of the matrix is wanted
