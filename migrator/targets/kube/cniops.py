"""The ``CniOps`` port (:class:`migrator.ports.CniOps`) on a real cluster, for :class:`KubeCluster`.

What each operation does on the API server:

- ``detect_cni``: :func:`migrator.targets.kube.cni.detect_cni` (DaemonSets, ``kube-flannel-cfg``,
  node annotations, Calico IPPools) mapped onto the port's ``CniInfo``, with the installed agents and
  their node selectors.
- ``apply_cni_agent(FLANNEL, node_selector)``: a patch of the flannel DaemonSet's pod ``nodeSelector``.
- ``apply_cni_agent(CALICO, node_selector, config)``: server-side apply of the user's Calico manifest
  (``config["manifest"]``, a file) with calico-node's ``nodeSelector`` set, plus an ``IPPool`` equal to
  flannel's network (``blockSize`` = ``SubnetLen``, ``vxlanMode: Always``) and the default
  ``FelixConfiguration`` with flannel's VNI, port and MTU. Without a manifest, an installed calico-node
  only gets its ``nodeSelector`` patched (and, with a ``config``, i.e. at the install, the IPAM takeover
  below); if none is installed that is an error (a dry run says so).
- ``delete_cni_agent``: delete the agent's DaemonSet (foreground); for calico-node also the IPAM objects
  and node annotations migrator created.
- ``cni_agent_ready``: the agent's pod on the node exists and is Ready.
- ``set_calico_mode``: the node label ``lab.migrator.io/calico-mode`` (per-node IPPool selectors use it).
- ``resync_cni``: nothing (the agents of a real cluster watch the API server).

Per node, Calico's IPAM takes over flannel's pod CIDR and VTEP (:mod:`migrator.targets.kube.calico_ipam`):
an ``IPAMBlock`` with its ``BlockAffinity`` and the VTEP's ``IPAMHandle``, and the
``projectcalico.org/IPv4VXLANTunnelAddr``/``VXLANTunnelMACAddr``/``IPv4Address`` node annotations, for
every node when Calico is installed; deleting calico-node (a rollback of the install) removes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from migrator.errors import StepFailed, UsageError
from migrator.ports import (
    CalicoMode,
    CalicoPoolInfo,
    CniAgent,
    CniInfo,
    CniNodeInfo,
    CniSource,
)
from migrator.targets.kube import calico_ipam
from migrator.targets.kube.api import Obj
from migrator.targets.kube.cni import CniInfo as KubeCniInfo
from migrator.targets.kube.cni import CniKind, classify_daemonset

if TYPE_CHECKING:
    from migrator.targets.kube.cluster import ApplyResult, KubeCluster

CALICO_MODE_LABEL = "lab.migrator.io/calico-mode"
AGENT_KINDS = {CniAgent.FLANNEL: CniKind.FLANNEL, CniAgent.CALICO: CniKind.CALICO}


def find_agent(cluster: KubeCluster, agent: CniAgent) -> Obj | None:
    """The agent's DaemonSet (any namespace), or ``None``."""
    for ds in cluster.list_daemonset_objects():
        if classify_daemonset(ds) is AGENT_KINDS[agent]:
            return ds
    return None


def _ref(ds: Mapping[str, Any]) -> tuple[str, str]:
    meta = ds.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def to_port_info(info: KubeCniInfo, cluster: KubeCluster) -> CniInfo:
    nodes = {n.name: n for n in cluster.list_nodes()}
    node_infos = {}
    for name, node in nodes.items():
        fl = info.flannel_nodes.get(name)
        node_infos[name] = CniNodeInfo(
            name=name,
            pod_cidr=(fl.pod_cidr if fl else None) or node.pod_cidr,
            vtep_ip=fl.vtep_ip if fl else None,
            vtep_mac=fl.vtep_mac if fl else None,
            public_ip=fl.public_ip if fl else None,
            cni=node.cni,
        )
    agents: dict[str, Mapping[str, str]] = {}
    for agent in CniAgent:
        ds = find_agent(cluster, agent)
        if ds is not None:
            spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
            agents[agent.value] = dict(spec.get("nodeSelector") or {})
    fl_conf = info.flannel
    return CniInfo(
        source=CniSource(info.kind.value),
        present=tuple(CniSource(k.value) for k in info.present),
        network=fl_conf.network if fl_conf else None,
        subnet_len=fl_conf.subnet_len if fl_conf else 24,
        backend=fl_conf.backend_type if fl_conf else "vxlan",
        vni=fl_conf.vni if fl_conf else 1,
        port=fl_conf.port if fl_conf else 8472,
        mtu=fl_conf.mtu if fl_conf else None,
        direct_routing=fl_conf.direct_routing if fl_conf else False,
        nodes=node_infos,
        calico_pools=tuple(
            CalicoPoolInfo(p.name, p.cidr, p.vxlan_mode, p.ipip_mode, p.block_size, p.disabled)
            for p in info.calico_pools
        ),
        agents=agents,
    )


def _line(result: ApplyResult) -> str:
    where = f"{result.namespace}/{result.name}" if result.namespace else result.name
    dry = " (server dry run)" if result.dry_run else ""
    checked = "" if result.validated else " (not validated: its CRD or namespace comes first)"
    return f"{result.kind} {where} {result.action}{dry}{checked}"


def calico_objects(
    info: CniInfo, manifest: str, node_selector: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """The user's manifest with calico-node's nodeSelector set, plus flannel-compatible pool and Felix."""
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise UsageError(f"Calico manifest {manifest} not found (plan parameter calico_manifest)")
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    for doc in docs:
        if doc.get("kind") == "DaemonSet" and classify_daemonset(doc) is CniKind.CALICO:
            pod_spec = doc.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
            if node_selector:
                pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **node_selector}
    if info.network:
        docs.append(
            {
                "apiVersion": "crd.projectcalico.org/v1",
                "kind": "IPPool",
                "metadata": {"name": "migrator-flannel-compatible"},
                "spec": {
                    "cidr": info.network,
                    "blockSize": info.subnet_len,
                    "vxlanMode": "Always",
                    "ipipMode": "Never",
                    "natOutgoing": info.masquerade,
                },
            }
        )
    felix: dict[str, Any] = {"vxlanVNI": info.vni, "vxlanPort": info.port}
    if info.mtu:
        felix["vxlanMTU"] = info.mtu
    docs.append(
        {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": felix,
        }
    )
    return docs


def apply_cni_agent(
    cluster: KubeCluster,
    agent: CniAgent,
    *,
    node_selector: Mapping[str, str] | None,
    config: Mapping[str, str] | None,
    dry_run: bool,
) -> list[str]:
    ds = find_agent(cluster, agent)
    manifest = (config or {}).get("manifest")
    if agent is CniAgent.CALICO and manifest:
        objects = calico_objects(cluster.detect_cni(), manifest, node_selector)
        lines = [_line(r) for r in cluster.apply(objects, dry_run=dry_run, default_namespace="kube-system")]
        crds = {
            str(((o.get("spec") or {}).get("names") or {}).get("kind"))
            for o in objects
            if o.get("kind") == "CustomResourceDefinition"
            and (o.get("spec") or {}).get("group") == "crd.projectcalico.org"
        }
        info = cluster.detect_cni_details()
        return lines + calico_ipam.ensure_node_ipam(cluster, info, dry_run=dry_run, crds_in_batch=crds)
    if ds is None:
        if dry_run and config is None:
            return [f"{agent.value} is not installed now (an earlier step installs it): selector to be set"]
        message = f"{agent.value} is not installed"
        if agent is CniAgent.CALICO:
            message += " and no Calico manifest was given (plan parameter calico_manifest)"
        if dry_run:
            return [f"would fail: {message}"]
        raise StepFailed(message)
    ns, name = _ref(ds)
    current = dict(
        (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    )
    wanted: dict[str, str | None] = {key: None for key in current}  # exactly node_selector; empty: every node
    wanted.update(node_selector or {})
    cluster.patch_daemonset_scheduling(ns, name, node_selector=wanted, dry_run=dry_run)
    dry = " (server dry run)" if dry_run else ""
    lines = [f"DaemonSet {ns}/{name} nodeSelector {current} -> {node_selector or {}}{dry}"]
    if agent is CniAgent.CALICO and config is not None:  # an install onto a calico-node already there
        lines += calico_ipam.ensure_node_ipam(cluster, cluster.detect_cni_details(), dry_run=dry_run)
    return lines


def delete_cni_agent(cluster: KubeCluster, agent: CniAgent, *, dry_run: bool) -> list[str]:
    from migrator.targets.kube.cluster import Propagation  # noqa: PLC0415 - import cycle

    ds = find_agent(cluster, agent)
    if ds is None:
        lines = [f"{agent.value} DaemonSet already absent"]
        if agent is CniAgent.CALICO:
            lines += calico_ipam.remove_node_ipam(cluster, dry_run=dry_run)
        return lines
    ns, name = _ref(ds)
    cluster.delete("apps/v1", "DaemonSet", name, ns, propagation=Propagation.FOREGROUND, dry_run=dry_run)
    lines = [f"DaemonSet {ns}/{name} deleted{' (server dry run)' if dry_run else ''}"]
    if agent is CniAgent.CALICO:  # what migrator set up for Calico's IPAM goes with it
        lines += calico_ipam.remove_node_ipam(cluster, dry_run=dry_run)
    return lines


def cni_agent_ready(cluster: KubeCluster, agent: CniAgent, node: str) -> tuple[bool, str]:
    ds = find_agent(cluster, agent)
    if ds is None:
        return False, f"{agent.value} is not installed"
    ns, name = _ref(ds)
    pods = [p for p in cluster.list_pods(namespace=ns, node=node) if p.owner == f"DaemonSet/{name}"]
    if not pods:
        return False, f"no {name} pod on {node} (check the nodeSelector and the node's labels)"
    if not any(p.ready for p in pods):
        return False, f"{pods[0].key} on {node} is not Ready"
    return True, f"{pods[0].key} Ready on {node}"


def set_calico_mode(cluster: KubeCluster, node: str, mode: CalicoMode | None) -> None:
    cluster.label_node(node, {CALICO_MODE_LABEL: mode.value if mode is not None else None})
