"""``KubeCniOps``: the :class:`~migrator.cni.CniOps` port on a real cluster (``Target.cni`` of the kube
target). It uses a :class:`KubeCluster` (reads, server-side apply, patches, deletes) and the CNI drivers
(:mod:`migrator.cni.drivers`: what each CNI's objects look like); it is not part of the cluster.

What each operation does on the API server:

- ``detect_cni``: DaemonSets (all namespaces), the ConfigMaps the drivers name (``kube-flannel-cfg``,
  ``canal-config``, ``calico-config``, ``cilium-config``), Calico IPPools (when the CRD exists) and the
  node objects, through :func:`migrator.cni.detect_from_objects`; once per read snapshot (a dry run).
- ``apply_cni_agent(FLANNEL, node_selector)``: a patch of the flannel DaemonSet's pod ``nodeSelector``.
- ``apply_cni_agent(CALICO, node_selector, config)``: server-side apply of the user's Calico manifest
  (``config["manifest"]``, a file; ``kind: List`` unpacked; Canal's and the operator's refused) with
  calico-node's ``nodeSelector`` set (and its ``FELIX_VXLANMTU`` env when flannel's MTU is set), plus an
  ``IPPool`` equal to flannel's network (``blockSize`` = the nodes' pod CIDR size, ``vxlanMode: Always``,
  ``natOutgoing`` = ``--ip-masq``) and the default ``FelixConfiguration`` with flannel's VNI, port and
  VXLAN MTU (flannel's MTU - 50). Without a manifest, an installed calico-node
  only gets its ``nodeSelector`` patched (and, with a ``config``, i.e. at the install, the IPAM takeover
  below); if none is installed that is an error (a dry run says so).
- ``apply_cni_agent(CALICO, config)`` with a ``pool`` (the dual-overlay install beside Weave Net,
  :mod:`migrator.targets.kube.calico_dual`): the manifest with calico-node on every node (its CNI config
  named ``cni_conf_name``, no default pool of its own), an ``IPPool`` for ``pool``, a disabled one for the
  source's range (no masquerade to it) and the FelixConfiguration's VXLAN port and VNI; no IPAM takeover.
  Without a manifest, an installed calico-node must already fit (else refused) and only the pools and
  Felix's config are written.
- ``delete_cni_agent``: delete the agent's DaemonSet (foreground); for calico-node also the IPAM objects,
  node annotations and IPPools migrator created, and its FelixConfiguration fields.
- ``set_cluster_cidr``: ``clusterCIDR`` of kubeadm's ``kube-system/kube-proxy`` ConfigMap, then a
  rollout restart of the kube-proxy DaemonSet (nothing when it already has that CIDR; refused, before any
  change, when either is missing).
- ``cni_agent_ready``: the agent's pod on the node exists and is Ready.
- ``set_calico_mode``: the node label ``CALICO_MODE_LABEL`` (per-node IPPool selectors use it).
- ``resync_cni``: nothing (the agents of a real cluster watch the API server).

Per node, Calico's IPAM takes over flannel's pod CIDR and VTEP (:mod:`migrator.targets.kube.calico_ipam`):
an ``IPAMBlock`` with its ``BlockAffinity`` and the VTEP's ``IPAMHandle``, and the
``projectcalico.org/IPv4VXLANTunnelAddr``/``VXLANTunnelMACAddr``/``IPv4Address`` node annotations, for
every node when Calico is installed; deleting calico-node (a rollback of the install) removes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger

from migrator.cni import (
    CALICO_MODE_LABEL,
    DUAL_OVERLAY_SOURCES,
    AgentRef,
    CalicoMode,
    CniInfo,
    CniKind,
    agent,
    calico,
    classify_daemonset,
    detect_from_objects,
)
from migrator.cni.base import pod_spec
from migrator.cni.drivers import detection_configmaps
from migrator.errors import MigratorError, StepFailed, UsageError
from migrator.targets.kube import calico_dual, calico_ipam, kube_proxy, types
from migrator.targets.kube.api import KubeNotFound, Obj
from migrator.targets.kube.cluster import ApplyResult, KubeCluster, Propagation

if TYPE_CHECKING:
    from migrator.cni import CniOps

IPPOOLS = "/apis/crd.projectcalico.org/v1/ippools"


def _ref(ds: Mapping[str, Any]) -> tuple[str, str]:
    meta = ds.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _line(result: ApplyResult) -> str:
    where = f"{result.namespace}/{result.name}" if result.namespace else result.name
    dry = " (server dry run)" if result.dry_run else ""
    checked = "" if result.validated else " (not validated: its CRD or namespace comes first)"
    return f"{result.kind} {where} {result.action}{dry}{checked}"


def calico_objects(
    info: CniInfo, manifest: str, node_selector: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """The user's manifest (its ``kind: List`` documents unpacked) with calico-node's nodeSelector set
    and, when flannel's MTU is configured, calico-node's ``FELIX_VXLANMTU`` (which Felix ranks above its
    FelixConfiguration) = flannel.1's MTU; plus an IPPool equal to flannel's network (``blockSize`` = the
    size of the nodes' flannel subnets) and the default FelixConfiguration with flannel's VNI, port and
    VXLAN MTU. A manifest migrator cannot install for a live migration (Canal's, the operator's custom
    resources, none with calico-node) is refused (:func:`migrator.cni.calico.manifest_problems`)."""
    docs = calico.load_manifest(manifest)
    fl = info.settings
    problems = calico.manifest_problems(docs, fl.network if info.flannel else None, manifest)
    if problems:
        raise UsageError("; ".join(problems))
    for doc in docs:
        if doc.get("kind") == "DaemonSet" and calico.is_calico_node(doc):
            spec = doc.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
            if node_selector:
                spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **node_selector}
    if fl.vxlan_mtu is not None:
        for line in calico.set_vxlan_mtu_env(docs, fl.vxlan_mtu):
            logger.info("{} (flannel's MTU {} less VXLAN's 50 bytes)", line, fl.mtu)
    if fl.network:
        docs.append(
            {
                "apiVersion": "crd.projectcalico.org/v1",
                "kind": "IPPool",
                "metadata": {"name": "migrator-flannel-compatible"},
                "spec": {
                    "cidr": fl.network,
                    "blockSize": info.block_size,
                    "vxlanMode": "Always",
                    "ipipMode": "Never",
                    "natOutgoing": fl.masquerade,
                },
            }
        )
    felix: dict[str, Any] = {"vxlanVNI": fl.vni, "vxlanPort": fl.port}
    if fl.vxlan_mtu is not None:
        felix["vxlanMTU"] = fl.vxlan_mtu
    docs.append(
        {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": felix,
        }
    )
    return docs


def _calico_crds(objects: list[dict[str, Any]]) -> set[str]:
    """The Calico kinds whose CRDs the objects create."""
    return {
        str(((o.get("spec") or {}).get("names") or {}).get("kind"))
        for o in objects
        if o.get("kind") == "CustomResourceDefinition"
        and (o.get("spec") or {}).get("group") == "crd.projectcalico.org"
    }


def _felix_mtu_problem(ds: Obj, info: CniInfo) -> str | None:
    """Why an installed calico-node would not run VXLAN at flannel.1's MTU: its ``FELIX_VXLANMTU`` env
    (which Felix ranks above any FelixConfiguration) is not flannel's MTU - 50 (``None``: it would)."""
    wanted = info.settings.vxlan_mtu if info.flannel is not None else None
    if wanted is None:
        return None
    for container in calico.calico_node_containers([dict(ds)]):
        for var in container.get("env") or []:
            if var.get("name") == calico.FELIX_VXLAN_MTU_ENV and var.get("value") != str(wanted):
                now = var.get("value", var.get("valueFrom"))
                return (
                    f"calico-node's {calico.FELIX_VXLAN_MTU_ENV} is {now!r}, which Felix ranks above its"
                    f" FelixConfiguration: set it to {wanted} (flannel's MTU {info.settings.mtu} less VXLAN's"
                    " 50 bytes), or give the Calico manifest (plan parameter calico_manifest) and migrator"
                    " sets it"
                )
    return None


class KubeCniOps:
    """The ``CniOps`` port on a :class:`KubeCluster`."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster

    # ---------------------------------------------------------------------------------- detection

    def detect_cni(self) -> CniInfo:
        """The cluster's CNI (flannel, Calico, Canal, Weave Net, Cilium), its source config, every node and
        the installed agents (served once per read snapshot)."""
        return self.cluster.snapshot_memo("cni", self._detect)

    def _detect(self) -> CniInfo:
        api = self.cluster.api
        daemonsets = self.cluster.list_daemonset_objects()
        configmaps: dict[tuple[str, str], Obj] = {}
        for ns, name in detection_configmaps(daemonsets):
            try:
                configmaps[(ns, name)] = api.read(
                    f"read ConfigMap {ns}/{name}", api.core.read_namespaced_config_map, name, ns
                )
            except KubeNotFound:
                continue
        ippools: list[Obj] = []
        try:
            ippools = list(api.request("list Calico IPPools", "GET", IPPOOLS).get("items") or [])
        except KubeNotFound:
            pass
        except MigratorError as err:
            logger.debug("cannot list Calico IPPools: {}", err)
        info = detect_from_objects(
            daemonsets,
            configmaps,
            self.cluster.list_node_objects(),
            ippools,
            kubelet_cni=lambda node: types.node_cni((node.get("metadata") or {}).get("annotations") or {}),
        )
        logger.info("detected CNI {} (present: {})", info.kind, ", ".join(info.present) or "none")
        return info

    def _find(self, kind: CniKind) -> tuple[AgentRef, Obj | None]:
        """The agent of ``kind`` and its DaemonSet (any namespace), or ``None`` when not installed."""
        ref = agent(kind)
        ds = next((d for d in self.cluster.list_daemonset_objects() if classify_daemonset(d) is kind), None)
        return ref, ds

    # ---------------------------------------------------------------------------------- the agents

    def apply_cni_agent(
        self,
        agent: CniKind,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        ref, ds = self._find(agent)
        manifest = (config or {}).get("manifest")
        if agent is CniKind.CALICO and config is not None and calico_dual.is_dual_overlay(config):
            return self._install_dual(config, ds, dry_run=dry_run)
        if agent is CniKind.CALICO and manifest:
            return self._install_calico(manifest, node_selector, dry_run=dry_run)
        if ds is None:
            if dry_run and config is None:
                return [f"{ref.name} is not installed now (an earlier step installs it): selector to be set"]
            message = f"{ref.name} is not installed"
            if agent is CniKind.CALICO:
                message += " and no Calico manifest was given (plan parameter calico_manifest)"
            if dry_run:
                return [f"would fail: {message}"]
            raise StepFailed(message)
        ns, name = _ref(ds)
        if agent is CniKind.CALICO and config is not None:  # an install onto a calico-node already there
            problem = _felix_mtu_problem(ds, self.detect_cni())
            if problem and dry_run:
                return [f"would fail: {problem}"]
            if problem:
                raise StepFailed(problem)
        current = dict(pod_spec(ds).get("nodeSelector") or {})
        # exactly node_selector; empty: every node
        wanted: dict[str, str | None] = {key: None for key in current}
        wanted.update(node_selector or {})
        self.cluster.patch_daemonset_scheduling(ns, name, node_selector=wanted, dry_run=dry_run)
        dry = " (server dry run)" if dry_run else ""
        lines = [f"DaemonSet {ns}/{name} nodeSelector {current} -> {node_selector or {}}{dry}"]
        if agent is CniKind.CALICO and config is not None:  # an install onto a calico-node already there
            lines += calico_ipam.ensure_node_ipam(self.cluster, self.detect_cni(), dry_run=dry_run)
        return lines

    def _install_calico(
        self, manifest: str, node_selector: Mapping[str, str] | None, *, dry_run: bool
    ) -> list[str]:
        objects = calico_objects(self.detect_cni(), manifest, node_selector)
        results = self.cluster.apply(objects, dry_run=dry_run, default_namespace="kube-system")
        lines = [_line(r) for r in results]
        info = self.detect_cni()  # after the apply: what the cluster has now
        return lines + calico_ipam.ensure_node_ipam(
            self.cluster, info, dry_run=dry_run, crds_in_batch=_calico_crds(objects)
        )

    def _install_dual(self, config: Mapping[str, str], ds: Obj | None, *, dry_run: bool) -> list[str]:
        """Calico beside the source on every node (:mod:`migrator.targets.kube.calico_dual`)."""
        info = self.detect_cni()
        if info.kind not in DUAL_OVERLAY_SOURCES:
            return calico_dual.refuse(
                [
                    "Calico beside the source with its own pool (the dual-overlay method) is for"
                    f" {', '.join(sorted(DUAL_OVERLAY_SOURCES))}, not {info.kind}"
                ],
                dry_run=dry_run,
            )
        cfg = calico_dual.DualConfig.parse(config)
        problems = calico_dual.conflicting_pools(info.calico_pools, cfg, info.kind)
        objects: list[Obj] = [*calico_dual.pools(cfg, info.kind), calico_dual.felix_configuration(cfg)]
        changed: list[str] = []
        if cfg.manifest:
            objects, changed = calico_dual.dual_overlay_objects(cfg, info.kind)
        elif ds is None:
            problems.append(
                "calico-node is not installed and no Calico manifest was given"
                " (plan parameter calico_manifest)"
            )
        else:
            problems += calico_dual.installed_problems(ds, cfg) + calico_dual.missing_crds(self.cluster)
        if problems:
            return calico_dual.refuse(problems, dry_run=dry_run)
        results = self.cluster.apply(objects, dry_run=dry_run, default_namespace="kube-system")
        dry = " (server dry run)" if dry_run else ""
        return [_line(r) for r in results] + [f"DaemonSet kube-system/calico-node: {c}{dry}" for c in changed]

    def delete_cni_agent(self, agent: CniKind, *, dry_run: bool = False) -> list[str]:
        ref, ds = self._find(agent)
        if ds is None:
            lines = [f"{ref.name} DaemonSet already absent"]
        else:
            ns, name = _ref(ds)
            self.cluster.delete(
                "apps/v1", "DaemonSet", name, ns, propagation=Propagation.FOREGROUND, dry_run=dry_run
            )
            lines = [f"DaemonSet {ns}/{name} deleted{' (server dry run)' if dry_run else ''}"]
        if agent is CniKind.CALICO:  # what migrator set up for Calico's IPAM and pools goes with it
            lines += calico_ipam.remove_node_ipam(self.cluster, dry_run=dry_run)
            lines += calico_dual.remove(self.cluster, dry_run=dry_run)
        return lines

    def cni_agent_ready(self, agent: CniKind, node: str) -> tuple[bool, str]:
        ref, ds = self._find(agent)
        if ds is None:
            return False, f"{ref.name} is not installed"
        ns, name = _ref(ds)
        pods = [p for p in self.cluster.list_pods(namespace=ns, node=node) if p.owner == f"DaemonSet/{name}"]
        if not pods:
            return False, f"no {name} pod on {node} (check the nodeSelector and the node's labels)"
        if not any(p.ready for p in pods):
            return False, f"{pods[0].key} on {node} is not Ready"
        return True, f"{pods[0].key} Ready on {node}"

    def set_calico_mode(self, node: str, mode: CalicoMode | None) -> None:
        self.cluster.label_node(node, {CALICO_MODE_LABEL: mode.value if mode is not None else None})

    def resync_cni(self) -> None:
        """Nothing to do: the CNI agents of a real cluster watch the API server."""

    # ---------------------------------------------------------------------------------- kube-proxy

    def cluster_cidr(self) -> str | None:
        return kube_proxy.cluster_cidr(self.cluster)

    def set_cluster_cidr(self, cidr: str | None, *, dry_run: bool = False) -> list[str]:
        """kube-proxy's cluster CIDR (:mod:`migrator.targets.kube.kube_proxy`)."""
        return kube_proxy.set_cluster_cidr(self.cluster, cidr, dry_run=dry_run)


if TYPE_CHECKING:  # mypy proves that KubeCniOps implements the port

    def _implements_port(ops: KubeCniOps) -> CniOps:
        return ops
