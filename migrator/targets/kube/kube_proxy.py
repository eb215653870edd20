"""kube-proxy's cluster CIDR on a real cluster (``KubeCniOps.cluster_cidr`` / ``set_cluster_cidr``).

kube-proxy masquerades traffic to a ClusterIP that comes from outside its cluster CIDR. While two overlays
run (the dual-overlay migration) the CIDR must hold both pod ranges, else a pod of the new range reaching a
Service is seen by the endpoint as its node.

- kubeadm's kube-proxy (ConfigMap ``kube-system/kube-proxy``, key ``config.conf``, a
  KubeProxyConfiguration, and DaemonSet ``kube-system/kube-proxy``): migrator sets ``clusterCIDR`` in the
  ConfigMap, then restarts the DaemonSet (its pod template annotated ``kubectl.kubernetes.io/restartedAt``,
  as ``kubectl rollout restart`` does). Nothing happens when the CIDR is already that one; without the
  DaemonSet nothing is changed (a config no restart loads would be a half-done change). Unsetting keeps
  kubeadm's empty ``clusterCIDR`` key.
- kube-proxy configured by flags (no such ConfigMap; a DaemonSet ``kube-system/kube-proxy`` whose container
  has ``--cluster-cidr``): migrator does not edit command lines. The user sets ``--cluster-cidr`` by hand
  to a CIDR holding both ranges; a wanted CIDR inside the flag's is accepted as it is (a wider cluster CIDR
  only masquerades less), anything else is refused saying what to set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from migrator.errors import StepFailed
from migrator.targets.kube.api import FIELD_MANAGER, KubeNotFound, Obj

if TYPE_CHECKING:
    from migrator.targets.kube.cluster import KubeCluster

NAMESPACE = "kube-system"
NAME = "kube-proxy"
CONFIGMAP = f"{NAMESPACE}/{NAME}"
CONFIG_KEY = "config.conf"  # kubeadm's KubeProxyConfiguration
FLAG = "--cluster-cidr"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _config(cluster: KubeCluster) -> dict[str, Any] | None:
    """The parsed ``config.conf`` of kubeadm's ConfigMap (``None``: no such ConfigMap)."""
    api = cluster.api
    try:
        cm = api.read(f"read ConfigMap {CONFIGMAP}", api.core.read_namespaced_config_map, NAME, NAMESPACE)
    except KubeNotFound:
        return None
    text = str((cm.get("data") or {}).get(CONFIG_KEY) or "")
    try:
        conf = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise StepFailed(f"ConfigMap {CONFIGMAP} {CONFIG_KEY} is not YAML: {exc}") from exc
    if not isinstance(conf, dict):
        raise StepFailed(f"ConfigMap {CONFIGMAP} {CONFIG_KEY} is not a KubeProxyConfiguration")
    return conf


def _daemonset(cluster: KubeCluster) -> Obj | None:
    api = cluster.api
    try:
        return api.read(f"read DaemonSet {CONFIGMAP}", api.apps.read_namespaced_daemon_set, NAME, NAMESPACE)
    except KubeNotFound:
        return None


def flag_cidr(ds: Mapping[str, Any]) -> str | None:
    """``--cluster-cidr`` of the DaemonSet's containers (``--cluster-cidr=X`` or ``--cluster-cidr X``)."""
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
        for i, word in enumerate(words):
            if word.startswith(f"{FLAG}="):
                return word.split("=", 1)[1] or None
            if word == FLAG and i + 1 < len(words):
                return words[i + 1] or None
    return None


def cluster_cidr(cluster: KubeCluster) -> str | None:
    """kubeadm's ``clusterCIDR``, else the DaemonSet's ``--cluster-cidr`` (``None``: unset or unknown)."""
    conf = _config(cluster)
    if conf is not None:
        return str(conf.get("clusterCIDR") or "") or None
    ds = _daemonset(cluster)
    return flag_cidr(ds) if ds is not None else None


def _holds(outer: str, inner: str) -> bool:
    """Whether IPv4 network ``inner`` lies inside ``outer``."""
    try:
        return ipaddress.IPv4Network(inner, strict=False).subnet_of(
            ipaddress.IPv4Network(outer, strict=False)
        )
    except ValueError:
        return False


def _by_hand(cluster: KubeCluster, cidr: str | None) -> list[str]:
    """No kubeadm ConfigMap: accept the ``--cluster-cidr`` the user set by hand if it holds ``cidr``."""
    ds = _daemonset(cluster)
    flag = flag_cidr(ds) if ds is not None else None
    if (flag or None) == (cidr or None):
        return [f"kube-proxy {FLAG} already {cidr or 'unset'} (set by hand): nothing to do"]
    if flag and cidr and _holds(flag, cidr):
        return [
            f"kube-proxy {FLAG} {flag} (set by hand) holds {cidr}: nothing to do (narrow it to {cidr} by"
            " hand once only one overlay runs)"
        ]
    where = (
        f"DaemonSet {CONFIGMAP} has {FLAG} {flag or 'unset'}" if ds is not None else "no kube-proxy DaemonSet"
    )
    raise StepFailed(
        f"no ConfigMap {CONFIGMAP} (kubeadm's) and {where}: set kube-proxy's {FLAG} to {cidr} by hand (both"
        " pod ranges while two overlays run) and restart it, or give kube-proxy a kubeadm-style ConfigMap"
    )


def set_cluster_cidr(cluster: KubeCluster, cidr: str | None, *, dry_run: bool) -> list[str]:
    """``clusterCIDR`` of kubeadm's ConfigMap, then a rollout restart of kube-proxy (see the module doc)."""
    conf = _config(cluster)
    if conf is None:
        return _by_hand(cluster, cidr)
    before = conf.get("clusterCIDR")
    if (before or None) == (cidr or None):
        return [f"kube-proxy clusterCIDR already {cidr or 'unset'}: no restart"]
    if _daemonset(cluster) is None:
        raise StepFailed(
            f"no DaemonSet {CONFIGMAP} to restart after its ConfigMap changes: set kube-proxy's cluster CIDR"
            f" to {cidr} and restart it by hand"
        )
    if cidr:
        conf["clusterCIDR"] = cidr
    elif "clusterCIDR" in conf:  # kubeadm writes it empty when no pod subnet was given: keep its shape
        conf["clusterCIDR"] = ""
    api = cluster.api
    dry = "All" if dry_run else None
    api.call(
        f"patch ConfigMap {CONFIGMAP}",
        api.core.patch_namespaced_config_map,
        NAME,
        NAMESPACE,
        {"data": {CONFIG_KEY: yaml.safe_dump(conf, sort_keys=False)}},
        field_manager=FIELD_MANAGER,
        dry_run=dry,
    )
    api.call(
        f"restart DaemonSet {CONFIGMAP}",
        api.apps.patch_namespaced_daemon_set,
        NAME,
        NAMESPACE,
        {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: datetime.now(UTC).isoformat()}}}}},
        field_manager=FIELD_MANAGER,
        dry_run=dry,
        _content_type="application/strategic-merge-patch+json",
    )
    suffix = " (server dry run)" if dry_run else ""
    return [
        f"kube-proxy clusterCIDR {before or 'unset'} -> {cidr or 'unset'}, DaemonSet {CONFIGMAP}"
        f" restarted{suffix}"
    ]
