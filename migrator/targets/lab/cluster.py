"""The lab as a target: :class:`LabCluster` implements :class:`migrator.ports.Cluster` on the lab state."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrator.errors import UsageError
from migrator.lab import calico as lab_calico
from migrator.lab.agents import node_cni
from migrator.lab.lab import Lab
from migrator.lab.spec import DNS_SERVICE_IP, FLANNEL_MTU, FLANNEL_PORT, FLANNEL_VNI, POD_NETWORK
from migrator.lab.state import LabState, PodPhase, PodState
from migrator.ports import (
    CalicoMode,
    CalicoPoolInfo,
    CniAgent,
    CniInfo,
    CniNodeInfo,
    CniSource,
    DrainResult,
    Node,
    Pod,
    Service,
    ServicePort,
    Target,
)
from migrator.targets.ansible.executor import AnsibleRunnerExecutor
from migrator.targets.lab.prober import LabProber

AGENT_DAEMONSETS = {
    CniAgent.FLANNEL: "kube-flannel/kube-flannel-ds",
    CniAgent.CALICO: "kube-system/calico-node",
}
FLANNEL_NET_CONF = "flannel-net-conf.json"
"""Optional file in the lab folder standing for flannel's ``kube-flannel-cfg`` ``net-conf.json`` (the lab
does not emulate the ConfigMap): ``{"Network": ..., "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1,
"Port": 8472, "DirectRouting": false}}``. Tests write it to exercise the preflight refusals."""
CALICO_POOLS = "calico-ippools.json"
"""Optional file in the lab folder standing for existing Calico ``IPPool`` objects: a list of
``{"name", "cidr", "vxlanMode", "ipipMode", "blockSize", "disabled"}``."""


def _pod(p: PodState) -> Pod:
    return Pod(
        name=p.name,
        namespace=p.namespace,
        node=p.node,
        ip=p.ip,
        labels=dict(p.labels),
        owner=p.owner,
        host_network=p.host_network,
        ports=tuple(p.ports),
        ready=p.phase == PodPhase.RUNNING,
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

    # CniOps (migrator.ports.CniOps): what a CNI migration needs, on the lab's emulated DaemonSets

    def _read_json(self, name: str) -> Any:
        path = self.lab.store.path.parent / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc

    def detect_cni(self) -> CniInfo:
        """The lab's pod network: flannel (VXLAN, VNI 1, port 8472, MTU 1450) and/or calico-node."""
        st = self._state()
        agents = {
            agent: dict(st.workloads[key].node_selector)
            for agent, key in AGENT_DAEMONSETS.items()
            if key in st.workloads
        }
        present = tuple(
            src
            for src, agent in ((CniSource.FLANNEL, CniAgent.FLANNEL), (CniSource.CALICO, CniAgent.CALICO))
            if agent in agents
        )
        cni_of = {n.name: node_cni(n) for n in st.nodes.values()}
        if not present:  # agents deleted: what the nodes' kubelets use
            present = tuple(sorted({CniSource(c) for c in cni_of.values() if c in ("flannel", "calico")}))
        source = present[0] if present else CniSource.UNKNOWN
        conf = self._read_json(FLANNEL_NET_CONF) or {}
        backend = conf.get("Backend", {}) if isinstance(conf, dict) else {}
        pools = tuple(
            CalicoPoolInfo(
                name=str(p.get("name", "")),
                cidr=str(p.get("cidr", "")),
                vxlan_mode=p.get("vxlanMode"),
                ipip_mode=p.get("ipipMode"),
                block_size=p.get("blockSize"),
                disabled=bool(p.get("disabled", False)),
            )
            for p in (self._read_json(CALICO_POOLS) or [])
        )
        return CniInfo(
            source=source,
            present=present,
            network=str(conf.get("Network", POD_NETWORK)),
            subnet_len=int(conf.get("SubnetLen", 24)),
            backend=str(backend.get("Type", "vxlan")),
            vni=int(backend.get("VNI", FLANNEL_VNI)),
            port=int(backend.get("Port", FLANNEL_PORT)),
            mtu=FLANNEL_MTU,
            masquerade=True,
            direct_routing=bool(backend.get("DirectRouting", False)),
            nodes={
                n.name: CniNodeInfo(
                    name=n.name,
                    pod_cidr=n.pod_cidr,
                    vtep_ip=n.vtep_ip,
                    vtep_mac=n.vtep_mac,
                    public_ip=n.ip,
                    cni=cni_of[n.name],
                )
                for n in st.nodes.values()
            },
            calico_pools=pools,
            agents={str(a): sel for a, sel in agents.items()},
        )

    def apply_cni_agent(
        self,
        agent: CniAgent,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """``apply_daemonset``; ``config=None`` keeps the DaemonSet's current agent config."""
        key = AGENT_DAEMONSETS[agent]
        current = self._state().workloads.get(key)
        if config is None:
            config = dict(current.template.config) if current is not None else {}
        verb = "update" if current is not None else "create"
        line = f"{verb} DaemonSet {key} nodeSelector={dict(node_selector or {})} config={dict(config)}"
        if not dry_run:
            self.lab.apply_daemonset(agent.value, node_selector, config)
        return [line]

    def delete_cni_agent(self, agent: CniAgent, *, dry_run: bool = False) -> list[str]:
        key = AGENT_DAEMONSETS[agent]
        if key not in self._state().workloads:
            return []
        if not dry_run:
            self.lab.delete_daemonset(key)
        return [f"delete DaemonSet {key}"]

    def cni_agent_ready(self, agent: CniAgent, node: str) -> tuple[bool, str]:
        st = self._state()
        name = AGENT_DAEMONSETS[agent].split("/", 1)[1]
        pod = next((p for p in st.pods.values() if p.owner == f"DaemonSet/{name}" and p.node == node), None)
        if pod is None:
            return False, f"no {agent} pod on {node}"
        if pod.phase != PodPhase.RUNNING:
            return False, f"{pod.key} on {node} is {pod.phase}: {pod.message}"
        return True, f"{pod.key} on {node} is running"

    def set_calico_mode(self, node: str, mode: CalicoMode | None) -> None:
        self.lab.label_node(node, {lab_calico.MODE_LABEL: None if mode is None else mode.value})

    def resync_cni(self) -> None:
        self.lab.reconcile()


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
        inventory=inventory,
        apiserver_endpoint=st.apiserver,  # "ip:port" of the control-plane endpoint
    )
