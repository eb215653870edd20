"""The lab as a target: :class:`LabCluster` implements :class:`migrator.ports.Cluster` on the lab state
(the ``CniOps`` port is :class:`~migrator.targets.lab.cni.LabCniOps`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from migrator.errors import UsageError
from migrator.lab.agents import node_cni
from migrator.lab.lab import Lab
from migrator.lab.spec import DNS_SERVICE_IP
from migrator.lab.state import LabState, PodPhase, PodState
from migrator.policy.model import Protocol, parse_network_policy
from migrator.ports import (
    ContainerPort,
    DrainResult,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
    ServicePort,
    Target,
)
from migrator.targets.ansible.executor import AnsibleRunnerExecutor
from migrator.targets.lab.cni import LabCniOps
from migrator.targets.lab.prober import LabProber


def _pod(p: PodState) -> Pod:
    return Pod(
        name=p.name,
        namespace=p.namespace,
        node=p.node,
        ip=p.ip,
        labels=dict(p.labels),
        owner=None if (p.owner or "").startswith("Pod/") else p.owner,  # a bare pod has no owner
        host_network=p.host_network,
        ports=tuple(p.ports),
        ready=p.phase == PodPhase.RUNNING,
        container_ports=tuple(
            ContainerPort(port=c.port, protocol=Protocol(c.protocol), name=c.name) for c in p.container_ports
        ),
    )


class LabCluster:
    """Control-plane view of a lab. Reads the state store; mutations go through :class:`Lab` (locked)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def _state(self) -> LabState:
        return self.lab.require()

    def identity(self) -> str:
        st = self._state()
        return f"lab:{st.spec.name}:{st.spec.underlay}:{int(st.created_at)}"

    def list_nodes(self) -> list[Node]:
        st = self._state()
        return [
            Node(
                name=n.name,
                address=n.ip,
                roles=frozenset(n.roles),
                labels=dict(n.labels),
                schedulable=n.schedulable,
                pod_cidr=n.pod_cidr,
                cni=node_cni(n),
            )
            for n in st.nodes.values()
        ]

    def get_node(self, name: str) -> Node:
        for n in self.list_nodes():
            if n.name == name:
                return n
        raise UsageError(f"lab {self.lab.name!r} has no node {name!r}")

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.lab.label_node(name, labels)

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        self.lab.set_schedulable(name, schedulable)

    def drain_node(self, name: str, *, timeout: float, cancel: threading.Event | None = None) -> DrainResult:
        evicted, skipped = self.lab.drain(name, timeout=timeout, cancel=cancel)
        return DrainResult(node=name, evicted=tuple(evicted), skipped=tuple(skipped))

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        st = self._state()
        return [
            _pod(p)
            for p in sorted(st.pods.values(), key=lambda p: (p.namespace, p.name))
            if (namespace is None or p.namespace == namespace) and (node is None or p.node == node)
        ]

    def list_services(self, namespace: str | None = None) -> list[Service]:
        st = self._state()
        out: list[Service] = []
        for key, s in sorted(st.services.items()):
            if namespace is not None and s.namespace != namespace:
                continue
            out.append(
                Service(
                    name=s.name,
                    namespace=s.namespace,
                    cluster_ip=s.cluster_ip,
                    ports=tuple(
                        ServicePort(
                            port=p.port,
                            target_port=p.target_port,
                            protocol=p.protocol,
                            name=p.name,
                            node_port=p.node_port,
                        )
                        for p in s.ports
                    ),
                    selector=dict(s.selector),
                    endpoints=tuple(self.lab.endpoints(st, key)),
                )
            )
        return out

    def restart_pods(self, node: str) -> list[str]:
        return self.lab.restart_pods(node)

    def list_namespaces(self) -> list[Namespace]:
        st = self._state()
        return [Namespace(name=n.name, labels=dict(n.labels)) for _k, n in sorted(st.namespaces.items())]

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        st = self._state()
        return [
            parse_network_policy(ps.raw, where=f"lab {st.spec.name} policy {key}")
            for key, ps in sorted(st.policies.items())
            if namespace is None or ps.namespace == namespace
        ]


def open_lab_target(name: str = "default") -> Target:
    """A :class:`Target` for lab ``name``; raises :class:`UsageError` if the lab is not up."""
    lab = Lab(name)
    st = lab.load()
    if st is None or st.phase.value != "up":
        raise UsageError(f"lab {name!r} is not up; run: migrator lab up")
    inventory = Path(st.inventory)
    return Target(
        name=f"lab:{name}",
        cluster=LabCluster(lab),
        executor=AnsibleRunnerExecutor(inventory=inventory),
        # every pod key / node name / "outside" -> its netns, read again at each probe run (pods move on
        # drain/restart); the kube-dns ClusterIP for sources without a resolv.conf of their own
        prober=LabProber(lab.netns_map(st), refresh=lab.netns_map, dns_server=DNS_SERVICE_IP),
        cni=LabCniOps(lab),
        inventory=inventory,
        apiserver_endpoint=st.apiserver,  # "ip:port" of the control-plane endpoint
    )
