"""The CNI vocabulary: which CNI (:class:`CniKind`), what detection found (:class:`CniInfo`), and the labels
of a live flannel -> Calico migration. Plain frozen dataclasses: they cross the ``CniOps`` port.

``CniInfo`` is the one answer of every target's detection (the kube target reads DaemonSets, ConfigMaps,
node annotations and Calico IPPools; the lab reads its state): the source CNI and the others present,
the source's DaemonSet and raw config, flannel's ``net-conf.json`` (:class:`FlannelConfig`), per-node
values (:class:`CniNode`), the Calico pools (:class:`CalicoPool`) and the installed agents.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

MIGRATION_LABEL = "projectcalico.org/node-network-during-migration"
"""Node label of a live flannel -> Calico migration: ``flannel`` (flannel's DaemonSet selects the node),
``calico`` (calico-node selects it) or ``switching`` (neither: the node is between the two)."""

CALICO_MODE_LABEL = "lab.migrator.io/calico-mode"
"""Per-node Calico routing mode (``vxlan``/``bgp``): the lab's calico-node honours it; on a real cluster
the user's per-node ``IPPool`` node selectors use it."""


class CniKind(StrEnum):
    """A pod network (CNI): what detection recognises, a migration's source and destination."""

    FLANNEL = "flannel"
    CALICO = "calico"
    CANAL = "canal"
    WEAVE = "weave"
    CILIUM = "cilium"
    UNKNOWN = "unknown"


WIRE_COMPATIBLE_SOURCES = frozenset({CniKind.FLANNEL, CniKind.CANAL})
"""Sources migrated to Calico live by making Calico speak their VXLAN (flannel's, and Canal's, which is
flannel's network with felix for policy): each node keeps its pod CIDR, VTEP IP and MAC."""

DUAL_OVERLAY_SOURCES = frozenset({CniKind.WEAVE})
"""Sources migrated to Calico by the dual-overlay method: Calico beside them on every node with another pod
CIDR and VXLAN port, then node by node the kubelet's CNI config switches (Weave's flat IPAM range cannot be
kept as per-node blocks)."""

VXLAN_OVERHEAD = 50
"""Bytes VXLAN adds (outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14)."""
CALICO_BLOCK_SIZES = range(20, 33)
"""Calico's IPv4 IPPool ``blockSize`` bounds (the CRD's validation: 20 to 32)."""


class CalicoMode(StrEnum):
    VXLAN = "vxlan"
    BGP = "bgp"


@dataclass(frozen=True)
class FlannelConfig:
    """flannel's ``net-conf.json`` (defaults as flannel applies them), with two flags of flanneld:
    ``masquerade`` is ``--ip-masq`` (on in every manifest flannel ships; off when flanneld runs without
    it) and ``kube_subnet_mgr`` is ``--kube-subnet-mgr`` (each node's subnet is its ``spec.podCIDR``, as
    kube-controller-manager allocated it: ``SubnetLen`` is not used then). ``mtu`` is the backend's
    ``MTU``, the link MTU: flannel.1 gets ``mtu - 50`` (:attr:`vxlan_mtu`)."""

    network: str = ""
    subnet_len: int = 24
    backend_type: str = "vxlan"
    vni: int = 1
    port: int = 8472
    direct_routing: bool = False
    mtu: int | None = None
    ipv6_network: str | None = None
    masquerade: bool = True
    kube_subnet_mgr: bool = True

    @property
    def vxlan_mtu(self) -> int | None:
        """The MTU of the VXLAN device (flannel.1, and so Felix's ``vxlanMTU``): the configured link MTU
        less VXLAN's 50 bytes; ``None`` when flannel derives it from the interface (Felix does the
        same)."""
        return None if self.mtu is None else self.mtu - VXLAN_OVERHEAD

    def problems(self) -> list[tuple[str, str]]:
        """(problem, why) for what keeps a live migration to Calico from being wire-compatible."""
        out = []
        if self.backend_type.lower() != "vxlan":
            out.append(
                (f"flannel backend {self.backend_type!r} is not vxlan", "only VXLAN is wire-compatible")
            )
        if self.direct_routing:
            out.append(("flannel DirectRouting is on", "Calico cannot keep those direct routes"))
        if self.mtu is not None and self.mtu <= VXLAN_OVERHEAD:
            out.append((f"flannel's MTU {self.mtu} is not above VXLAN's {VXLAN_OVERHEAD} bytes", "not valid"))
        return out

    def migration_blockers(self) -> list[str]:
        """Why a wire-compatible live migration to Calico is not possible (empty when it is)."""
        return [problem for problem, _ in self.problems()]


@dataclass(frozen=True)
class CniNode:
    """One node as the CNIs see it: its pod CIDR, the network its kubelet uses now (``cni``: ``flannel``,
    ``calico``, ``none``..., when known) and what the source CNI recorded for it (``recorded``: flannel's
    ``flannel.alpha.coreos.com/*`` annotations, or the lab's own record), the values Calico must keep
    while both run."""

    name: str
    pod_cidr: str | None = None
    cni: str | None = None
    recorded: bool = False
    public_ip: str | None = None
    vtep_mac: str | None = None
    backend_type: str | None = None
    vni: int | None = None

    @cached_property
    def pod_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The pod CIDR parsed (``None`` when unset or not a network); parsed once per node, as detection
        and the Calico IPAM plan both read it (at 5,000 nodes, parsing it per use was ~10% of a dry run)."""
        if not self.pod_cidr:
            return None
        try:
            return ipaddress.ip_network(self.pod_cidr, strict=False)
        except ValueError:
            return None

    @cached_property
    def vtep_ip(self) -> str | None:
        """flannel.1's address: the first address (``.0``) of the node's pod CIDR, as flannel's VXLAN
        backend assigns it; Calico must keep it for the nodes still on flannel (``None`` for a node the
        source CNI did not record)."""
        net = self.pod_network if self.recorded else None
        return None if net is None else str(net.network_address)


@dataclass(frozen=True)
class CalicoPool:
    name: str
    cidr: str
    vxlan_mode: str | None = None
    ipip_mode: str | None = None
    block_size: int | None = None
    disabled: bool = False


@dataclass(frozen=True)
class CniInfo:
    """The detected pod network of a target and the settings a wire-compatible migration needs.

    ``kind`` is the migration source when several CNIs are present (``present``), for example flannel
    half-way through a migration to Calico. ``namespace``/``daemonset``/``version`` are the source's
    DaemonSet, ``config`` its raw config (flannel's ``net-conf.json``, Calico's env, ...). ``flannel`` is
    flannel's (or Canal's) ``net-conf.json`` when found; ``nodes`` every node (:class:`CniNode`);
    ``agents`` the installed CNI agents by agent name (``flannel``, ``calico-node``) with their node
    selectors.
    """

    kind: CniKind
    present: tuple[CniKind, ...] = ()
    namespace: str | None = None
    daemonset: str | None = None
    version: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    flannel: FlannelConfig | None = None
    nodes: Mapping[str, CniNode] = field(default_factory=dict)
    calico_pools: tuple[CalicoPool, ...] = ()
    agents: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def supported_source(self) -> bool:
        """Whether migrator can migrate away from it today: flannel and Canal (wire-compatible), Weave Net
        (dual overlay)."""
        return self.kind in WIRE_COMPATIBLE_SOURCES or self.kind in DUAL_OVERLAY_SOURCES

    @property
    def weave_range(self) -> str | None:
        """Weave Net's IPALLOC_RANGE (``None`` when the source is not Weave)."""
        value = self.config.get("IPALLOC_RANGE") if self.kind is CniKind.WEAVE else None
        return None if value is None else str(value)

    @property
    def settings(self) -> FlannelConfig:
        """flannel's settings: its ``net-conf.json``, or flannel's defaults when none was found."""
        return self.flannel or FlannelConfig()

    @property
    def flannel_nodes(self) -> dict[str, CniNode]:
        """The nodes the source CNI recorded (flannel's node annotations)."""
        return {name: node for name, node in self.nodes.items() if node.recorded}

    def pod_cidr_sizes(self) -> dict[int, list[str]]:
        """The prefix lengths of the recorded nodes' pod CIDRs, with the nodes of each."""
        sizes: dict[int, list[str]] = {}
        for name, node in sorted(self.flannel_nodes.items()):
            if node.pod_network is not None:
                sizes.setdefault(node.pod_network.prefixlen, []).append(name)
        return sizes

    @cached_property
    def block_size(self) -> int:
        """The Calico IPAM block size that keeps each node's flannel subnet as one block: with
        ``--kube-subnet-mgr`` (every manifest flannel ships) the size of the nodes' ``spec.podCIDR``
        (kube-controller-manager's ``--node-cidr-mask-size``), when they all have one size; else
        flannel's ``SubnetLen``."""
        sizes = self.pod_cidr_sizes()
        if len(sizes) == 1 and (self.flannel is None or self.flannel.kube_subnet_mgr):
            return next(iter(sizes))
        return self.settings.subnet_len

    def node_problems(self) -> list[str]:
        """What the nodes' flannel records (``spec.podCIDR``, ``backend-data``) say against a live
        migration: pod CIDRs of several sizes or a size Calico cannot take as one block, a node whose
        flannel VNI is not net-conf.json's."""
        out: list[str] = []
        fl = self.settings
        sizes = self.pod_cidr_sizes()
        if len(sizes) > 1:
            listed = "; ".join(f"/{size}: {', '.join(nodes[:3])}" for size, nodes in sorted(sizes.items()))
            out.append(
                f"the nodes' pod CIDRs have {len(sizes)} sizes ({listed}): a Calico IPPool has one"
                " blockSize, so not every node's flannel subnet can be its Calico block"
            )
        for size, nodes in sorted(sizes.items()):
            if size not in CALICO_BLOCK_SIZES:
                out.append(
                    f"the pod CIDR of {len(nodes)} node(s) ({', '.join(nodes[:3])}) is a /{size}: Calico's"
                    f" IPv4 blockSize must be {CALICO_BLOCK_SIZES.start} to {CALICO_BLOCK_SIZES.stop - 1}"
                    " (kube-controller-manager --node-cidr-mask-size)"
                )
        if self.flannel is not None:
            wrong = sorted(
                (name, n.vni)
                for name, n in self.flannel_nodes.items()
                if n.vni is not None and n.vni != fl.vni
            )
            if wrong:
                shown = ", ".join(f"{name} VNI {vni}" for name, vni in wrong[:3])
                out.append(
                    f"{len(wrong)} node(s) run flannel with another VNI than net-conf.json's {fl.vni}"
                    f" (flannel.alpha.coreos.com/backend-data: {shown}): flanneld was not restarted"
                    " since net-conf.json changed, or the ConfigMap read is not the one it uses"
                )
            other = sorted(
                name
                for name, n in self.flannel_nodes.items()
                if n.backend_type is not None and n.backend_type.lower() != fl.backend_type.lower()
            )
            if other:
                out.append(
                    f"{len(other)} node(s) record another flannel backend than net-conf.json's"
                    f" {fl.backend_type!r} ({', '.join(other[:3])})"
                )
        return out

    def migration_blockers(self) -> list[str]:
        """Why a live, wire-compatible flannel (or Canal) -> Calico migration cannot start (empty when it
        can)."""
        if self.kind in DUAL_OVERLAY_SOURCES:
            try:
                ipaddress.IPv4Network(self.weave_range or "", strict=False)
            except ValueError:
                return [f"Weave Net's IPALLOC_RANGE {self.weave_range!r} is not an IPv4 CIDR"]
            return []
        if self.kind not in WIRE_COMPATIBLE_SOURCES:
            if self.kind is CniKind.UNKNOWN:
                return ["no CNI was recognised (flannel, Calico, Canal, Weave Net or Cilium)"]
            if self.kind is CniKind.CALICO:
                return ["the cluster already runs Calico: there is nothing to migrate from"]
            return [
                f"{self.kind} is recognised as the source CNI, but migrating from it is not supported yet "
                "(flannel and Canal with the VXLAN backend, and Weave Net, are)"
            ]
        if self.flannel is None:
            configmap = "canal-config" if self.kind is CniKind.CANAL else "kube-flannel-cfg"
            return [
                f"{self.kind} runs but its net-conf.json (ConfigMap {configmap}) was not found or not valid"
            ]
        problems = [f"{problem} ({why})" for problem, why in self.flannel.problems()]
        problems.extend(self.node_problems())
        problems.extend(self.conflicting_pools())
        return problems

    def conflicting_pools(self) -> list[str]:
        """Enabled Calico IPPools that overlap flannel's network but would not keep it wire-compatible."""
        if self.flannel is None or not self.flannel.network:
            return []
        try:
            network = ipaddress.ip_network(self.flannel.network, strict=False)
        except ValueError:
            return [f"flannel's Network {self.flannel.network!r} is not a valid CIDR"]
        out = []
        for pool in self.calico_pools:
            if pool.disabled:
                continue
            try:
                cidr = ipaddress.ip_network(pool.cidr, strict=False)
            except ValueError:
                out.append(f"Calico IPPool {pool.name} has an invalid cidr {pool.cidr!r}")
                continue
            if cidr.version != network.version or not cidr.overlaps(network):
                continue
            reasons = []
            if cidr != network:
                reasons.append(f"cidr {pool.cidr} is not flannel's {self.flannel.network}")
            if pool.block_size is not None and pool.block_size != self.block_size:
                reasons.append(
                    f"blockSize {pool.block_size} is not the size of flannel's node subnets"
                    f" ({self.block_size})"
                )
            if pool.ipip_mode not in (None, "Never"):
                reasons.append(f"ipipMode {pool.ipip_mode} (flannel's wire format is VXLAN)")
            if pool.vxlan_mode in (None, "Never"):
                reasons.append("vxlanMode is not Always")
            if reasons:
                out.append(f"Calico IPPool {pool.name} conflicts with flannel: " + "; ".join(reasons))
        return out

    def to_json(self) -> dict[str, Any]:
        """The detection as the ``cni.preflight`` step records it in the journal (its shape is kept for
        old run folders: flannel's settings flat, one entry per node)."""
        fl = self.settings
        return {
            "source": self.kind.value,
            "present": [k.value for k in self.present],
            "network": fl.network if self.flannel is not None else None,
            "subnet_len": fl.subnet_len,
            "backend": fl.backend_type,
            "vni": fl.vni,
            "port": fl.port,
            "mtu": fl.mtu,
            "masquerade": fl.masquerade,
            "direct_routing": fl.direct_routing,
            "nodes": {
                name: {
                    "name": name,
                    "pod_cidr": n.pod_cidr,
                    "vtep_ip": n.vtep_ip,
                    "vtep_mac": n.vtep_mac,
                    "public_ip": n.public_ip,
                    "cni": n.cni,
                }
                for name, n in self.nodes.items()
            },
            "calico_pools": [asdict(p) for p in self.calico_pools],
            "agents": {name: dict(selector) for name, selector in self.agents.items()},
        }
