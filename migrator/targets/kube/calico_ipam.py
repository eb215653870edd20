"""Calico IPAM and VXLAN identity for each node, taken over from flannel (part of ``KubeCniOps``).

A live flannel → Calico migration keeps every node's flannel pod CIDR and VTEP, so that pods keep their
network and the nodes still on flannel keep valid FDB/ARP entries for the nodes already on Calico (and
the reverse). Calico's own ``flannel-migration-controller`` (``calico/kube-controllers``,
``pkg/controllers/flannelmigration/ipam_migrator.go``) does this per node with Calico's IPAM library:
``ClaimAffinity(node podCIDR, node)``, ``AssignIP(vtep IP, handle vxlan-tunnel-addr-<node>)`` and the
Calico Node's ``IPv4VXLANTunnelAddr``/``VXLANTunnelMACAddr``/``BGP.IPv4Address``. With the Kubernetes
datastore those are these objects, which migrator writes with server-side apply (field manager
``migrator``, label ``app.kubernetes.io/managed-by=migrator``):

- ``IPAMBlock`` (``crd.projectcalico.org/v1``, cluster scoped) named after the CIDR (``10-244-1-0-24``):
  ``cidr`` = the node's pod CIDR (the IPPool's ``blockSize`` is the size of the nodes' pod CIDRs, so it
  is one block), ``affinity: host:<node>``, ordinal 0 (flannel's VTEP address ``.0``) allocated to the handle
  ``vxlan-tunnel-addr-<node>`` with attributes ``node``/``type: vxlanTunnelAddress``. The ordinals of
  the addresses that pods on the node use now come last in ``unallocated``: Calico allocates in that
  order, so a new pod does not get the address of a flannel pod not restarted yet;
- ``BlockAffinity`` ``<node>-<cidr name>``: ``state: confirmed``, ``node``, ``cidr``, ``deleted: "false"``;
- ``IPAMHandle`` ``vxlan-tunnel-addr-<node>``: ``handleID``, ``block: {cidr: 1}``;
- the node's annotations ``projectcalico.org/IPv4Address`` (flannel's public IP, ``/32``),
  ``projectcalico.org/IPv4VXLANTunnelAddr`` (the VTEP IP) and ``projectcalico.org/VXLANTunnelMACAddr``
  (flannel's VTEP MAC): calico-node keeps a tunnel address that IPAM has assigned to it, and Felix uses
  the MAC from the annotation.

Calico's IPAM updates blocks and affinities itself once calico-node runs, so an existing block, affinity
or handle is never re-applied (that would take Calico's allocations back): it is checked (its affinity
must be this node) and left alone. Removal (``remove_node_ipam``, when Calico is uninstalled by a
rollback) deletes the objects migrator created and takes its annotations back with an empty apply (a
field another manager owns now stays).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from loguru import logger

from migrator.cni import CniInfo
from migrator.errors import StepFailed
from migrator.targets.kube.api import KubeNotFound, Obj

if TYPE_CHECKING:
    from migrator.targets.kube.cluster import KubeCluster

CALICO_V1 = "crd.projectcalico.org/v1"
MANAGED = {"app.kubernetes.io/managed-by": "migrator"}
ANN_IPV4_ADDRESS = "projectcalico.org/IPv4Address"
ANN_VXLAN_ADDR = "projectcalico.org/IPv4VXLANTunnelAddr"
ANN_VXLAN_MAC = "projectcalico.org/VXLANTunnelMACAddr"
ANNOTATIONS = (ANN_IPV4_ADDRESS, ANN_VXLAN_ADDR, ANN_VXLAN_MAC)
ATTR_TYPE_VXLAN = "vxlanTunnelAddress"
IPAM_KINDS = ("IPAMBlock", "BlockAffinity", "IPAMHandle")
MAX_NAME = 253


def cidr_name(cidr: str) -> str:
    """Calico's ``names.CIDRToName``: ``10.244.1.0/24`` → ``10-244-1-0-24``."""
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def affinity_name(node: str, cidr: str) -> str:
    """A BlockAffinity's name as Calico's KDD backend derives it (``<node>-<cidr name>``, hashed if long)."""
    cname = cidr_name(cidr)
    name = f"{node}-{cname}"
    if len(name) >= MAX_NAME:
        digest = sha256(f"{node}+{cname}".encode()).hexdigest()[:11]
        name = f"{node[: MAX_NAME - 1 - len(cname) - 13]}-{cname}-{digest}"
    return name


def handle_id(node: str) -> str:
    return f"vxlan-tunnel-addr-{node}"


@dataclass(frozen=True)
class NodeIpam:
    """What Calico must take over from flannel on one node."""

    node: str
    cidr: str
    vtep_ip: str
    vtep_mac: str
    public_ip: str
    in_use: tuple[str, ...] = ()  # addresses of the node's pods now (allocated last by Calico)

    def annotations(self) -> dict[str, str]:
        return {
            ANN_IPV4_ADDRESS: f"{self.public_ip}/32",
            ANN_VXLAN_ADDR: self.vtep_ip,
            ANN_VXLAN_MAC: self.vtep_mac,
        }

    def block(self) -> Obj:
        net = ipaddress.ip_network(self.cidr, strict=False)
        size = net.num_addresses
        vtep = int(ipaddress.ip_address(self.vtep_ip)) - int(net.network_address)
        used = {
            int(ipaddress.ip_address(a)) - int(net.network_address)
            for a in self.in_use
            if ipaddress.ip_address(a) in net
        }
        free = [o for o in range(size) if o != vtep]
        allocations: list[int | None] = [None] * size
        allocations[vtep] = 0
        return {
            "apiVersion": CALICO_V1,
            "kind": "IPAMBlock",
            "metadata": {"name": cidr_name(str(net)), "labels": dict(MANAGED)},
            "spec": {
                "cidr": str(net),
                "affinity": f"host:{self.node}",
                "strictAffinity": False,
                "allocations": allocations,
                "unallocated": [o for o in free if o not in used] + [o for o in free if o in used],
                "attributes": [
                    {
                        "handle_id": handle_id(self.node),
                        "secondary": {"node": self.node, "type": ATTR_TYPE_VXLAN},
                    }
                ],
                "deleted": False,
                "sequenceNumber": 0,
                "sequenceNumberForAllocation": {str(vtep): 0},
            },
        }

    def affinity(self) -> Obj:
        cidr = str(ipaddress.ip_network(self.cidr, strict=False))
        return {
            "apiVersion": CALICO_V1,
            "kind": "BlockAffinity",
            "metadata": {"name": affinity_name(self.node, cidr), "labels": dict(MANAGED)},
            "spec": {"state": "confirmed", "node": self.node, "cidr": cidr, "deleted": "false"},
        }

    def handle(self) -> Obj:
        cidr = str(ipaddress.ip_network(self.cidr, strict=False))
        return {
            "apiVersion": CALICO_V1,
            "kind": "IPAMHandle",
            "metadata": {"name": handle_id(self.node), "labels": dict(MANAGED)},
            "spec": {"handleID": handle_id(self.node), "block": {cidr: 1}, "deleted": False},
        }

    def node_patch(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "annotations": self.annotations()},
        }

    def objects(self) -> list[Obj]:
        return [self.block(), self.affinity(), self.handle()]


def plan_node_ipam(
    info: CniInfo, *, in_use: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[NodeIpam], list[str]]:
    """Per node, what to take over from flannel; and why nodes cannot be (missing annotations, a pod CIDR
    whose size is not the IPPool's ``blockSize`` (:attr:`CniInfo.block_size`: the nodes' pod CIDR size
    under ``--kube-subnet-mgr``), so not one Calico block, or outside flannel's network, so outside the
    IPPool). The cluster-wide refusals (pod CIDRs of several sizes, a size Calico cannot take) are the
    preflight's (:meth:`CniInfo.node_problems`), before anything changes."""
    block_size = info.block_size if info.flannel else None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    if info.flannel is not None:
        with contextlib.suppress(ValueError):  # a broken Network is the preflight's refusal
            network = ipaddress.ip_network(info.flannel.network, strict=False)
    planned: list[NodeIpam] = []
    problems: list[str] = []
    recorded = info.flannel_nodes
    for name in sorted(recorded):
        fl = recorded[name]
        missing = [
            what
            for what, value in (
                ("pod CIDR", fl.pod_cidr),
                ("VTEP MAC", fl.vtep_mac),
                ("public IP", fl.public_ip),
            )
            if not value
        ]
        if missing:
            problems.append(f"node {name}: no flannel {', '.join(missing)} (flannel.alpha.coreos.com/*)")
            continue
        assert fl.pod_cidr and fl.vtep_mac and fl.public_ip and fl.vtep_ip
        net = fl.pod_network  # parsed once per node (detection read it too)
        if net is None:
            problems.append(f"node {name}: pod CIDR {fl.pod_cidr!r} is not a network")
            continue
        if net.version != 4:
            problems.append(f"node {name}: pod CIDR {net} is not IPv4")
            continue
        if block_size is not None and net.prefixlen != block_size:
            problems.append(
                f"node {name}: pod CIDR {net} is not a /{block_size} (the IPPool's blockSize, the size of"
                " the other nodes' pod CIDRs)"
            )
            continue
        if network is not None and (net.version != network.version or not _inside(net, network)):
            problems.append(f"node {name}: pod CIDR {net} is outside flannel's network {network}")
            continue
        planned.append(
            NodeIpam(
                name, str(net), fl.vtep_ip, fl.vtep_mac, fl.public_ip, tuple((in_use or {}).get(name, ()))
            )
        )
    return planned, problems


def _inside(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    """``net.subnet_of(network)`` for networks of one version, in integers (no broadcast addresses made)."""
    inside = int(net.network_address) & int(network.netmask) == int(network.network_address)
    return net.prefixlen >= network.prefixlen and inside


def _get(cluster: KubeCluster, obj: Mapping[str, Any]) -> Obj | None:
    meta = obj.get("metadata") or {}
    path = cluster.api.object_path(str(obj["apiVersion"]), str(obj["kind"]), str(meta["name"]), None)
    try:
        return cluster.api.request(f"read {obj['kind']} {meta['name']}", "GET", path)
    except KubeNotFound:
        return None


def _owner_of(existing: Mapping[str, Any]) -> str | None:
    """The node an existing block or affinity belongs to (``None`` for a handle)."""
    spec = existing.get("spec") or {}
    if existing.get("kind") == "IPAMBlock":
        return str(spec.get("affinity") or "").removeprefix("host:") or None
    if existing.get("kind") == "BlockAffinity":
        return str(spec.get("node") or "") or None
    return None


def ensure_one(
    cluster: KubeCluster,
    n: NodeIpam,
    *,
    dry_run: bool,
    crds_in_batch: frozenset[str] = frozenset(),
    known: Mapping[str, Mapping[str, Obj]] | None = None,
) -> list[str]:
    """Create what is missing for one node; check what exists. Returns readable lines. ``known``: the
    objects listed beforehand (kind -> name -> object), instead of one GET per object."""
    lines: list[str] = []
    for obj in n.objects():
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        if dry_run and kind in crds_in_batch:
            lines.append(f"{kind} {name} created (server dry run) (not validated: its CRD comes first)")
            continue
        existing = known[kind].get(name) if known is not None else _get(cluster, obj)
        if existing is not None:
            owner = _owner_of(existing)
            if owner is not None and owner != n.node:
                raise StepFailed(
                    f"Calico {kind} {name} belongs to node {owner}, not {n.node}: the block {n.cidr} is"
                    " taken (a conflicting IPPool or an earlier Calico install?)",
                    node=n.node,
                )
            lines.append(f"{kind} {name} exists (left to Calico's IPAM)")
            continue
        lines += [_line(r) for r in cluster.apply([obj], dry_run=dry_run)]
    lines += [_line(r) for r in cluster.apply([n.node_patch()], dry_run=dry_run)]
    if not dry_run:
        cluster.record_node_event(
            n.node,
            "CalicoIPAM",
            f"Calico IPAM block {n.cidr} and VTEP {n.vtep_ip} {n.vtep_mac} kept from flannel",
        )
    return lines


def _line(result: Any) -> str:
    dry = " (server dry run)" if result.dry_run else ""
    return f"{result.kind} {result.name} {result.action}{dry}"


def ipam_served(cluster: KubeCluster) -> list[str]:
    """The Calico IPAM kinds the cluster does not serve (their CRDs are not installed)."""
    missing = []
    for kind in IPAM_KINDS:
        try:
            cluster.api.resource_for(CALICO_V1, kind)
        except KubeNotFound:
            missing.append(kind)
    return missing


def ensure_node_ipam(
    cluster: KubeCluster,
    info: CniInfo,
    *,
    dry_run: bool,
    crds_in_batch: Iterable[str] = (),
    workers: int = 8,
) -> list[str]:
    """Blocks, affinities, handles and node annotations for every flannel node (see the module doc).

    A dry run sends one node's objects with ``dryRun=All`` (all nodes' objects are alike; at 5,000
    nodes a dry run must stay fast) and says how many nodes follow. ``crds_in_batch``: IPAM kinds whose
    CRDs the same install creates (a dry run cannot validate those)."""
    in_use: dict[str, list[str]] = {}
    if not dry_run:
        for pod in cluster.list_pods():
            if pod.ip and pod.node and not pod.host_network:
                in_use.setdefault(pod.node, []).append(pod.ip)
    planned, problems = plan_node_ipam(info, in_use=in_use)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        message = f"cannot keep flannel's pod CIDRs and VTEPs in Calico ({len(problems)} node(s)): {shown}"
        if dry_run:
            return [f"would fail: {message}"]
        raise StepFailed(message)
    if not planned:
        return ["no flannel node to take over (no flannel.alpha.coreos.com annotations)"]
    unserved = ipam_served(cluster)
    batch = frozenset(crds_in_batch) & frozenset(unserved)  # served already: the server can check them
    missing = [k for k in unserved if k not in batch]
    if missing:
        message = (
            f"the cluster serves no Calico {', '.join(missing)} (crd.projectcalico.org/v1): the Calico"
            " manifest must install Calico's IPAM CRDs (calico.yaml and the operator's CRDs do)"
        )
        # calico-node cannot run without them either: its readiness wait fails next, this says why
        logger.warning("Calico IPAM not prepared: {}", message)
        return [f"{'would be ' if dry_run else ''}skipped: {message}"]
    if dry_run:
        first = planned[0]
        lines = [
            f"{first.node}: {line}" for line in ensure_one(cluster, first, dry_run=True, crds_in_batch=batch)
        ]
        if len(planned) > 1:
            lines.append(
                f"... and the same for {len(planned) - 1} more node(s): IPAMBlock = the node's flannel pod"
                " CIDR, BlockAffinity, IPAMHandle and the VTEP annotations"
            )
        return lines

    known = {kind: {str(o["metadata"]["name"]): o for o in _list(cluster, kind)} for kind in IPAM_KINDS}

    def one(n: NodeIpam) -> list[str]:
        return [f"{n.node}: {line}" for line in ensure_one(cluster, n, dry_run=False, known=known)]

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(planned)))) as pool:
        per_node = list(pool.map(one, planned))
    logger.info("Calico IPAM: {} node(s) keep their flannel pod CIDR and VTEP", len(planned))
    return [line for lines in per_node for line in lines]


def _list(cluster: KubeCluster, kind: str, label_selector: str | None = None) -> list[Obj]:
    """Every object of a Calico kind, paginated (``limit``/``continue``)."""
    path = cluster.api.object_path(CALICO_V1, kind, None, None)
    items: list[Obj] = []
    token: str | None = None
    for _ in range(10_000):
        page = cluster.api.request(
            f"list {kind}",
            "GET",
            path,
            query={"labelSelector": label_selector, "limit": cluster.api.page_size, "continue": token},
        )
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
    return items


def remove_node_ipam(cluster: KubeCluster, *, dry_run: bool, workers: int = 8) -> list[str]:
    """Delete the IPAM objects migrator created and take its node annotations back (idempotent; up to
    ``workers`` requests at a time)."""
    dry = " (server dry run)" if dry_run else ""
    missing = ipam_served(cluster)
    objects = [
        (kind, str(obj["metadata"]["name"]))
        for kind in IPAM_KINDS
        if kind not in missing
        for obj in _list(cluster, kind, "app.kubernetes.io/managed-by=migrator")
    ]
    nodes = [
        str((n.get("metadata") or {}).get("name"))
        for n in cluster.list_node_objects()
        if set(ANNOTATIONS) & set((n.get("metadata") or {}).get("annotations") or {})
    ]

    def delete(item: tuple[str, str]) -> str | None:
        kind, name = item
        return (
            f"{kind} {name} deleted{dry}" if cluster.delete(CALICO_V1, kind, name, dry_run=dry_run) else None
        )

    def take_back(node: str) -> str:
        # an empty apply: the annotations migrator alone owns go, those another manager took stay
        cluster.apply([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}], dry_run=dry_run)
        if not dry_run:
            cluster.record_node_event(node, "CalicoIPAM", "Calico VTEP annotations removed")
        return f"Node {node}: Calico VTEP annotations taken back{dry}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        deleted = [line for line in pool.map(delete, objects) if line is not None]
        taken = list(pool.map(take_back, nodes))
    return deleted + taken
