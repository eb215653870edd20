"""CNI detection: which CNI runs on the cluster, and the source config a migration needs.

Detection looks at DaemonSets (all namespaces), a few well-known ConfigMaps, Calico IPPools (when the CRD
exists) and node annotations. :func:`detect_from_objects` is pure, so it can be tested on plain objects.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from loguru import logger

from migrator.errors import MigratorError
from migrator.targets.kube.api import KubeNotFound, Obj

if TYPE_CHECKING:
    from migrator.targets.kube.cluster import KubeCluster

FLANNEL_ANNOTATION = "flannel.alpha.coreos.com/"
FLANNEL_CONFIGMAPS = (("kube-flannel", "kube-flannel-cfg"), ("kube-system", "kube-flannel-cfg"))
CANAL_CONFIGMAP = ("kube-system", "canal-config")
CILIUM_CONFIGMAP = ("kube-system", "cilium-config")
CALICO_CONFIGMAPS = (("kube-system", "calico-config"),)


class CniKind(StrEnum):
    FLANNEL = "flannel"
    CALICO = "calico"
    CANAL = "canal"
    WEAVE = "weave"
    CILIUM = "cilium"
    UNKNOWN = "unknown"


# A source of migration first: while flannel → Calico runs, both are present and flannel is the source.
PRECEDENCE = (CniKind.CANAL, CniKind.FLANNEL, CniKind.WEAVE, CniKind.CILIUM, CniKind.CALICO)


@dataclass(frozen=True)
class FlannelConfig:
    """flannel's ``net-conf.json`` (defaults as flannel applies them)."""

    network: str
    subnet_len: int = 24
    backend_type: str = "vxlan"
    vni: int = 1
    port: int = 8472
    direct_routing: bool = False
    mtu: int | None = None
    ipv6_network: str | None = None

    def migration_blockers(self) -> list[str]:
        """Why a wire-compatible live migration to Calico is not possible (empty when it is)."""
        problems = []
        if self.backend_type.lower() != "vxlan":
            problems.append(f"flannel backend {self.backend_type!r} is not vxlan")
        if self.direct_routing:
            problems.append("flannel DirectRouting is on")
        return problems


@dataclass(frozen=True)
class FlannelNode:
    """What flannel recorded on a node (``flannel.alpha.coreos.com/*`` annotations and ``spec.podCIDR``)."""

    name: str
    pod_cidr: str | None
    public_ip: str | None
    backend_type: str | None
    vtep_mac: str | None
    vni: int | None

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
        backend assigns it; Calico must keep it for the nodes still on flannel."""
        net = self.pod_network
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
    """The detected CNI: ``kind`` is the migration source when several are present (``present``)."""

    kind: CniKind
    present: tuple[CniKind, ...] = ()
    namespace: str | None = None
    daemonset: str | None = None
    version: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    flannel: FlannelConfig | None = None
    flannel_nodes: Mapping[str, FlannelNode] = field(default_factory=dict)
    calico_pools: tuple[CalicoPool, ...] = ()

    @property
    def supported_source(self) -> bool:
        """Whether migrator can migrate away from it today (only flannel)."""
        return self.kind is CniKind.FLANNEL

    def migration_blockers(self) -> list[str]:
        """Why a live, wire-compatible flannel → Calico migration cannot start (empty when it can)."""
        if self.kind is not CniKind.FLANNEL:
            if self.kind is CniKind.UNKNOWN:
                return ["no CNI was recognised on the cluster (flannel, Calico, Canal, Weave Net or Cilium)"]
            if self.kind is CniKind.CALICO:
                return ["the cluster already runs Calico: there is nothing to migrate from"]
            return [
                f"{self.kind} is recognised as the source CNI, but migrating from it is not supported yet "
                "(only flannel is)"
            ]
        if self.flannel is None:
            return [
                "flannel runs but its net-conf.json (ConfigMap kube-flannel-cfg) was not found or not valid"
            ]
        problems = self.flannel.migration_blockers()
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
            if pool.block_size is not None and pool.block_size != self.flannel.subnet_len:
                reasons.append(
                    f"blockSize {pool.block_size} is not flannel's SubnetLen {self.flannel.subnet_len}"
                )
            if pool.ipip_mode not in (None, "Never"):
                reasons.append(f"ipipMode {pool.ipip_mode} (flannel's wire format is VXLAN)")
            if pool.vxlan_mode in (None, "Never"):
                reasons.append("vxlanMode is not Always")
            if reasons:
                out.append(f"Calico IPPool {pool.name} conflicts with flannel: " + "; ".join(reasons))
        return out


def _image_tag(ds: Mapping[str, Any]) -> str | None:
    for container in ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        image = str(container.get("image") or "")
        if ":" in image.rsplit("/", 1)[-1]:
            return image.rsplit(":", 1)[-1]
    return None


def _env(ds: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for container in ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        for var in container.get("env") or []:
            if "value" in var:
                out[str(var["name"])] = str(var["value"])
    return out


def _container_names(ds: Mapping[str, Any]) -> set[str]:
    spec = ds.get("spec", {}).get("template", {}).get("spec", {})
    return {str(c.get("name")) for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}


def classify_daemonset(ds: Mapping[str, Any]) -> CniKind | None:
    meta = ds.get("metadata") or {}
    name = str(meta.get("name", ""))
    labels = meta.get("labels") or {}
    containers = _container_names(ds)
    if name == "canal" or ({"calico-node", "kube-flannel"} <= containers):
        return CniKind.CANAL
    if name.startswith("kube-flannel") or labels.get("app") == "flannel" or "kube-flannel" in containers:
        return CniKind.FLANNEL
    if name == "calico-node" or "calico-node" in containers:
        return CniKind.CALICO
    if name == "weave-net" or "weave" in containers:
        return CniKind.WEAVE
    if name == "cilium" or labels.get("k8s-app") == "cilium":
        return CniKind.CILIUM
    return None


def parse_net_conf(text: str) -> FlannelConfig:
    conf = json.loads(text)
    backend = conf.get("Backend") or {}
    return FlannelConfig(
        network=str(conf.get("Network", "")),
        subnet_len=int(conf.get("SubnetLen", 24)),
        backend_type=str(backend.get("Type", "udp")),
        vni=int(backend.get("VNI", 1)),
        port=int(backend.get("Port", 8472)),
        direct_routing=bool(backend.get("DirectRouting", False)),
        mtu=int(backend["MTU"]) if backend.get("MTU") else None,
        ipv6_network=conf.get("IPv6Network"),
    )


def flannel_node(node: Mapping[str, Any]) -> FlannelNode | None:
    meta = node.get("metadata") or {}
    ann = {
        k[len(FLANNEL_ANNOTATION) :]: v
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(FLANNEL_ANNOTATION)
    }
    if not ann:
        return None
    data: dict[str, Any] = {}
    if ann.get("backend-data"):
        try:
            parsed = json.loads(ann["backend-data"])
            data = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            data = {}
    return FlannelNode(
        name=str(meta.get("name")),
        pod_cidr=(node.get("spec") or {}).get("podCIDR"),
        public_ip=ann.get("public-ip"),
        backend_type=ann.get("backend-type"),
        vtep_mac=data.get("VtepMAC"),
        vni=int(data["VNI"]) if data.get("VNI") is not None else None,
    )


def detect_from_objects(
    daemonsets: Sequence[Mapping[str, Any]],
    configmaps: Mapping[tuple[str, str], Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    ippools: Sequence[Mapping[str, Any]] = (),
) -> CniInfo:
    """Detect the CNI from plain objects (DaemonSets, ConfigMaps by (namespace, name), nodes, IPPools)."""
    found: dict[CniKind, Mapping[str, Any]] = {}
    for ds in daemonsets:
        kind = classify_daemonset(ds)
        if kind is not None and kind not in found:
            found[kind] = ds
    flannel_nodes = {n.name: n for n in (flannel_node(o) for o in nodes) if n is not None}
    if not found and flannel_nodes:
        found[CniKind.FLANNEL] = {}
    pools = tuple(
        CalicoPool(
            name=str(p["metadata"]["name"]),
            cidr=str(p.get("spec", {}).get("cidr", "")),
            vxlan_mode=p.get("spec", {}).get("vxlanMode"),
            ipip_mode=p.get("spec", {}).get("ipipMode"),
            block_size=p.get("spec", {}).get("blockSize"),
            disabled=bool(p.get("spec", {}).get("disabled", False)),
        )
        for p in ippools
    )
    if pools and CniKind.CALICO not in found and CniKind.CANAL not in found:
        found[CniKind.CALICO] = {}
    present = tuple(k for k in PRECEDENCE if k in found)
    if not present:
        return CniInfo(kind=CniKind.UNKNOWN)
    kind = present[0]
    ds = found[kind]
    meta = ds.get("metadata") or {}
    config: dict[str, Any] = {}
    flannel: FlannelConfig | None = None
    if kind in (CniKind.FLANNEL, CniKind.CANAL):
        wanted = FLANNEL_CONFIGMAPS if kind is CniKind.FLANNEL else (CANAL_CONFIGMAP,)
        ordered = sorted(wanted, key=lambda key: key[0] != meta.get("namespace"))
        for key in ordered:
            cm = configmaps.get(key)
            if cm and (cm.get("data") or {}).get("net-conf.json"):
                net_conf = str(cm["data"]["net-conf.json"])
                try:
                    config = {"net-conf.json": json.loads(net_conf), "configmap": f"{key[0]}/{key[1]}"}
                    flannel = parse_net_conf(net_conf)
                except (ValueError, TypeError) as exc:
                    logger.warning("cannot parse {}/{} net-conf.json: {}", key[0], key[1], exc)
                    config = {"net-conf.json.raw": net_conf, "configmap": f"{key[0]}/{key[1]}"}
                if kind is CniKind.CANAL:
                    config.update({k: v for k, v in (cm.get("data") or {}).items() if k != "net-conf.json"})
                break
    elif kind is CniKind.CALICO:
        config = {"env": _env(ds)}
        cm = configmaps.get(CALICO_CONFIGMAPS[0])
        if cm:
            config.update({k: v for k, v in (cm.get("data") or {}).items() if k != "cni_network_config"})
    elif kind is CniKind.WEAVE:
        env = _env(ds)
        config = {"env": env, "IPALLOC_RANGE": env.get("IPALLOC_RANGE", "10.32.0.0/12")}
    elif kind is CniKind.CILIUM:
        config = dict((configmaps.get(CILIUM_CONFIGMAP) or {}).get("data") or {})
    return CniInfo(
        kind=kind,
        present=present,
        namespace=meta.get("namespace"),
        daemonset=meta.get("name"),
        version=_image_tag(ds) if ds else None,
        config=config,
        flannel=flannel,
        flannel_nodes=flannel_nodes if kind in (CniKind.FLANNEL, CniKind.CANAL) else {},
        calico_pools=pools,
    )


def detect_cni(cluster: KubeCluster) -> CniInfo:
    """Read what detection needs from the cluster, then :func:`detect_from_objects`."""
    api = cluster.api
    daemonsets = cluster.list_daemonset_objects()
    configmaps: dict[tuple[str, str], Obj] = {}
    for ns, name in (*FLANNEL_CONFIGMAPS, CANAL_CONFIGMAP, CILIUM_CONFIGMAP, *CALICO_CONFIGMAPS):
        try:
            configmaps[(ns, name)] = api.read(
                f"read ConfigMap {ns}/{name}", api.core.read_namespaced_config_map, name, ns
            )
        except KubeNotFound:
            continue
    ippools: list[Obj] = []
    try:
        ippools = list(
            api.request("list Calico IPPools", "GET", "/apis/crd.projectcalico.org/v1/ippools").get("items")
            or []
        )
    except KubeNotFound:
        pass
    except MigratorError as err:
        logger.debug("cannot list Calico IPPools: {}", err)
    info = detect_from_objects(daemonsets, configmaps, cluster.list_node_objects(), ippools)
    logger.info("detected CNI {} (present: {})", info.kind, ", ".join(info.present) or "none")
    return info
