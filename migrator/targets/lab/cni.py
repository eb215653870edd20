"""``LabCniOps``: the :class:`~migrator.cni.CniOps` port on a lab (``Target.cni`` of the lab target), on the
lab's emulated DaemonSets. The agents' DaemonSets are the CNI drivers' (:func:`migrator.cni.agent`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from migrator.cni import CALICO_MODE_LABEL, AgentRef, CalicoMode, CniInfo, CniKind, CniNode
from migrator.cni.calico import pool
from migrator.cni.drivers import SOURCE_ORDER, agents
from migrator.cni.drivers import agent as agent_of
from migrator.cni.flannel import parse_net_conf
from migrator.errors import StepFailed, UsageError
from migrator.lab import weave
from migrator.lab.agents import node_cni
from migrator.lab.control import CLUSTER_CIDR_KEY, KUBE_PROXY
from migrator.lab.lab import Lab
from migrator.lab.spec import FLANNEL_MTU, FLANNEL_PORT, FLANNEL_VNI, POD_NETWORK
from migrator.lab.state import LabState, PodPhase

if TYPE_CHECKING:
    from migrator.cni import CniOps

FLANNEL_NET_CONF = "flannel-net-conf.json"
"""Optional file in the lab folder standing for flannel's ``kube-flannel-cfg`` ``net-conf.json`` (the lab
does not emulate the ConfigMap): ``{"Network": ..., "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1,
"Port": 8472, "DirectRouting": false}}``. Tests write it to exercise the preflight refusals."""
CALICO_POOLS = "calico-ippools.json"
"""Optional file in the lab folder standing for existing Calico ``IPPool`` objects: a list of
``{"name", "cidr", "vxlanMode", "ipipMode", "blockSize", "disabled"}``."""
NET_CONF_DEFAULTS: dict[str, Any] = {
    "Network": str(POD_NETWORK),
    "SubnetLen": 24,
    "Backend": {"Type": "vxlan", "VNI": FLANNEL_VNI, "Port": FLANNEL_PORT},
}
"""The lab's flannel (the file above overrides it key by key), also Canal's."""
CANAL_CONFIG: dict[str, Any] = {"masquerade": "true", "configmap": "kube-system/canal-config"}
"""What the lab's Canal has of ``canal-config`` besides net-conf.json (as ``canal.yaml`` ships it)."""


LAB_CNIS = frozenset({CniKind.FLANNEL, CniKind.CALICO, CniKind.CANAL, CniKind.WEAVE})
"""The CNIs whose agents the lab runs (what detection reports)."""


def _weave_config(st: LabState) -> dict[str, Any]:
    """weave-net's raw config as the Weave driver reads a DaemonSet: its env (the lab's ``ipalloc_range`` is
    ``IPALLOC_RANGE``) and the range in effect."""
    w = st.workloads.get(agent_of(CniKind.WEAVE).key)
    env = (
        {"IPALLOC_RANGE": w.template.config[weave.RANGE_KEY]}
        if w and weave.RANGE_KEY in w.template.config
        else {}
    )
    return {"env": env, "IPALLOC_RANGE": env.get("IPALLOC_RANGE", weave.DEFAULT_RANGE)}


def weave_detection(
    st: LabState,
    present: tuple[CniKind, ...],
    installed: Mapping[CniKind, AgentRef],
    cni_of: Mapping[str, str],
) -> CniInfo:
    """A lab whose source CNI is Weave Net: its DaemonSet and config (``IPALLOC_RANGE``), each node's slice
    of the range as its pod CIDR (weave records nothing on the node objects), no flannel config."""
    ref = agent_of(CniKind.WEAVE)
    return CniInfo(
        kind=CniKind.WEAVE,
        present=present,
        namespace=ref.namespace,
        daemonset=ref.daemonset,
        config=_weave_config(st),
        flannel=None,
        nodes={
            n.name: CniNode(name=n.name, pod_cidr=n.pod_cidr, cni=cni_of[n.name], public_ip=n.ip)
            for n in st.nodes.values()
        },
        agents={r.name: dict(st.workloads[r.key].node_selector) for r in installed.values()},
    )


class LabCniOps:
    """The ``CniOps`` port on a lab. Reads the state store; mutations go through :class:`Lab` (locked)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def _read_json(self, name: str) -> Any:
        path = self.lab.store.path.parent / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc

    def detect_cni(self) -> CniInfo:
        """The lab's pod network: flannel (VXLAN, VNI 1, port 8472, MTU 1450), calico-node and/or Weave Net
        (:func:`weave_detection`), the migration's source first (:data:`SOURCE_ORDER`)."""
        st = self.lab.require()
        installed = {kind: ref for kind, ref in agents().items() if ref.key in st.workloads}
        present: tuple[CniKind, ...] = tuple(k for k in SOURCE_ORDER if k in LAB_CNIS and k in installed)
        cni_of = {n.name: node_cni(n) for n in st.nodes.values()}
        if not present:  # agents deleted: what the nodes' kubelets use
            used = {CniKind(c) for c in cni_of.values() if c in LAB_CNIS}
            present = tuple(k for k in SOURCE_ORDER if k in used)
        if present and present[0] is CniKind.WEAVE:
            return weave_detection(st, present, installed, cni_of)
        conf = self._read_json(FLANNEL_NET_CONF) or {}
        if not isinstance(conf, dict):
            conf = {}
        backend = {**NET_CONF_DEFAULTS["Backend"], **(conf.get("Backend") or {})}
        flannel = parse_net_conf(json.dumps({**NET_CONF_DEFAULTS, **conf, "Backend": backend}))
        kind = present[0] if present else CniKind.UNKNOWN
        return CniInfo(
            kind=kind,
            present=present,
            daemonset=agent_of(kind).daemonset if kind in installed else None,
            namespace=agent_of(kind).namespace if kind in installed else None,
            config=CANAL_CONFIG if kind is CniKind.CANAL else {},
            flannel=dataclasses.replace(flannel, mtu=FLANNEL_MTU),
            nodes={
                n.name: CniNode(
                    name=n.name,
                    pod_cidr=n.pod_cidr,
                    cni=cni_of[n.name],
                    recorded=True,
                    public_ip=n.ip,
                    vtep_mac=n.vtep_mac,
                )
                for n in st.nodes.values()
            },
            calico_pools=tuple(
                pool(str(p.get("name", "")), p) for p in (self._read_json(CALICO_POOLS) or [])
            ),
            agents={ref.name: dict(st.workloads[ref.key].node_selector) for ref in installed.values()},
        )

    def apply_cni_agent(
        self,
        agent: CniKind,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """``Lab.apply_daemonset``; ``config=None`` keeps the DaemonSet's current agent config."""
        ref = agent_of(agent)
        current = self.lab.require().workloads.get(ref.key)
        if config is None:
            config = dict(current.template.config) if current is not None else {}
        verb = "update" if current is not None else "create"
        line = f"{verb} DaemonSet {ref.key} nodeSelector={dict(node_selector or {})} config={dict(config)}"
        if not dry_run:
            self.lab.apply_daemonset(ref.name, node_selector, config)
        return [line]

    def delete_cni_agent(self, agent: CniKind, *, dry_run: bool = False) -> list[str]:
        ref = agent_of(agent)
        if ref.key not in self.lab.require().workloads:
            return []
        if not dry_run:
            self.lab.delete_daemonset(ref.key)
        return [f"delete DaemonSet {ref.key}"]

    def cni_agent_ready(self, agent: CniKind, node: str) -> tuple[bool, str]:
        ref = agent_of(agent)
        owner = f"DaemonSet/{ref.daemonset}"
        pod = next((p for p in self.lab.require().pods.values() if p.owner == owner and p.node == node), None)
        if pod is None:
            return False, f"no {ref.name} pod on {node}"
        if pod.phase != PodPhase.RUNNING:
            return False, f"{pod.key} on {node} is {pod.phase}: {pod.message}"
        return True, f"{pod.key} on {node} is running"

    def set_calico_mode(self, node: str, mode: CalicoMode | None) -> None:
        self.lab.label_node(node, {CALICO_MODE_LABEL: None if mode is None else mode.value})

    def resync_cni(self) -> None:
        self.lab.reconcile()

    def cluster_cidr(self) -> str | None:
        kp = self.lab.require().workloads.get(KUBE_PROXY)
        return kp.template.config.get(CLUSTER_CIDR_KEY) if kp is not None else None

    def set_cluster_cidr(self, cidr: str | None, *, dry_run: bool = False) -> list[str]:
        """The lab's kube-proxy DaemonSet config ``cluster_cidr`` (unset: the lab's pod network)."""
        kp = self.lab.require().workloads.get(KUBE_PROXY)
        if kp is None:
            raise StepFailed("the lab has no kube-proxy DaemonSet")
        config = {k: v for k, v in kp.template.config.items() if k != CLUSTER_CIDR_KEY}
        if cidr:
            config[CLUSTER_CIDR_KEY] = cidr
        before = kp.template.config.get(CLUSTER_CIDR_KEY)
        line = f"kube-proxy clusterCIDR {before} -> {cidr} (restart kube-proxy)"
        if not dry_run:
            self.lab.apply_daemonset("kube-proxy", dict(kp.node_selector) or None, config)
        return [line]


if TYPE_CHECKING:  # mypy proves that LabCniOps implements the port

    def _implements_port(ops: LabCniOps) -> CniOps:
        return ops
