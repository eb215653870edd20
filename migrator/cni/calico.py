"""Calico: its DaemonSet (calico-node), ``calico-config``, its IPPools, its node agent, what it leaves on
a node and its VXLAN device (removed by the BGP stage)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from migrator.cni import canal
from migrator.cni.base import (
    AgentRef,
    CniDriver,
    ConfigMaps,
    NodeLeftovers,
    Obj,
    container_names,
    env,
    pod_spec,
)
from migrator.cni.info import CalicoPool, CniKind, FlannelConfig
from migrator.errors import UsageError

CONFIGMAP = ("kube-system", "calico-config")
VXLAN_DEVICE = "vxlan.calico"


def pool(name: str, spec: Mapping[str, Any]) -> CalicoPool:
    """An IPPool from its name and ``spec`` (``cidr``, ``vxlanMode``, ``ipipMode``, ``blockSize``, ...)."""
    return CalicoPool(
        name=name,
        cidr=str(spec.get("cidr", "")),
        vxlan_mode=spec.get("vxlanMode"),
        ipip_mode=spec.get("ipipMode"),
        block_size=spec.get("blockSize"),
        disabled=bool(spec.get("disabled", False)),
    )


def pools(ippools: Sequence[Obj]) -> tuple[CalicoPool, ...]:
    """``crd.projectcalico.org/v1`` IPPool objects as :class:`CalicoPool` s."""
    return tuple(pool(str(p["metadata"]["name"]), p.get("spec") or {}) for p in ippools)


def remove_vxlan_vars() -> dict[str, Any]:
    """The vars of ``link-absent.yml`` once every node routes over BGP."""
    return {"links": [VXLAN_DEVICE]}


class Calico(CniDriver):
    kind = CniKind.CALICO
    source_rank = 100  # the destination of today's migration: the source only when it runs alone
    configmaps = (CONFIGMAP,)
    agent = AgentRef("calico-node", "kube-system", "calico-node")
    leftovers = NodeLeftovers(
        links=(VXLAN_DEVICE,),
        chain_prefixes=("cali-",),
        chain_owner="cali",
        cni_files=("10-calico.conflist",),
    )

    def matches(self, ds: Obj) -> bool:
        return (ds.get("metadata") or {}).get("name") == "calico-node" or "calico-node" in container_names(ds)

    def seen_without_daemonset(
        self, found: Collection[CniKind], nodes: Sequence[Obj], pools: Sequence[CalicoPool]
    ) -> bool:
        return bool(pools) and CniKind.CANAL not in found

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        config: dict[str, Any] = {"env": env(ds)}
        cm = configmaps.get(CONFIGMAP)
        if cm:
            config.update({k: v for k, v in (cm.get("data") or {}).items() if k != "cni_network_config"})
        return config, None


DRIVER = Calico()


# ------------------------------------------------------------------------------------------- the manifest

OPERATOR_GROUP = "operator.tigera.io"
FELIX_VXLAN_MTU_ENV = "FELIX_VXLANMTU"


def manifest_documents(docs: Iterable[Any]) -> list[dict[str, Any]]:
    """The objects of a manifest, ``kind: List`` documents (``kubectl get -o yaml``, Weave's manifest)
    unpacked as ``kubectl apply`` does; empty documents dropped."""
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            out.extend(manifest_documents(doc["items"]))
        else:
            out.append(doc)
    return out


def load_manifest(path: str) -> list[dict[str, Any]]:
    """The user's Calico manifest (plan parameter ``calico_manifest``), its Lists unpacked."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"Calico manifest {path} not found (plan parameter calico_manifest)")
    try:
        return manifest_documents(yaml.safe_load_all(file.read_text()))
    except yaml.YAMLError as exc:
        raise UsageError(f"Calico manifest {path} is not valid YAML: {exc}") from exc


def is_calico_node(ds: Obj) -> bool:
    """Whether a DaemonSet is calico-node's (as the registry classifies it: Canal's is not)."""
    return DRIVER.matches(ds) and not canal.DRIVER.matches(ds)


def _ref(doc: Obj) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {ns}{meta.get('name')}"


def manifest_problems(docs: Sequence[Obj], flannel_network: str | None, path: str = "") -> list[str]:
    """Why migrator cannot install Calico for a live migration from these objects (empty when it can):
    Canal's manifest (flannel itself, with Calico policy), the Tigera operator's custom resources
    (calico-node is the operator's then: migrator cannot set its migration nodeSelector, and their IP
    pool is not flannel's network), or no calico-node DaemonSet at all."""
    name = f"Calico manifest {path}" if path else "the Calico manifest"
    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    canals = [d for d in daemonsets if canal.DRIVER.matches(d)]
    if canals:
        return [
            f"{name} is Canal's ({_ref(canals[0])} runs flannel and calico-node's policy together): it"
            " would replace flannel on every node at once with no migration nodeSelector; use calico.yaml"
            " or calico-vxlan.yaml of the same Calico release"
        ]
    operator = [d for d in docs if str(d.get("apiVersion", "")).split("/")[0] == OPERATOR_GROUP]
    if operator:
        pools = [
            f"{p.get('cidr')} (blockSize {p.get('blockSize', 26)}, {p.get('encapsulation', 'IPIP')})"
            for d in operator
            if d.get("kind") == "Installation"
            for p in (((d.get("spec") or {}).get("calicoNetwork") or {}).get("ipPools") or [])
            if isinstance(p, dict)
        ]
        pool_text = f"; its IP pool {', '.join(pools)} is not flannel's network" if pools else ""
        if flannel_network and pools:
            pool_text += f" {flannel_network}"
        return [
            f"{name} holds the Tigera operator's custom resources ({', '.join(_ref(d) for d in operator)}):"
            " they need the operator and its CRDs (tigera-operator.yaml), and the operator, not migrator,"
            " then owns calico-node (no migration nodeSelector can be set)"
            f"{pool_text}; give the manifest install (calico.yaml or calico-vxlan.yaml) instead"
        ]
    if not any(is_calico_node(d) for d in daemonsets):
        return [f"{name} has no calico-node DaemonSet (calico.yaml or calico-vxlan.yaml has one)"]
    return []


def calico_node_containers(docs: Sequence[Obj]) -> list[dict[str, Any]]:
    """The calico-node containers of the manifest's calico-node DaemonSets."""
    out = []
    for doc in docs:
        if doc.get("kind") == "DaemonSet" and is_calico_node(doc):
            for container in pod_spec(doc).get("containers") or []:
                if container.get("name") == "calico-node":
                    out.append(container)
    return out


def set_vxlan_mtu_env(docs: Sequence[Obj], vxlan_mtu: int) -> list[str]:
    """Make calico-node's ``FELIX_VXLANMTU`` (which Felix ranks above every FelixConfiguration; the
    manifests set it from ``calico-config``'s ``veth_mtu``, ``0``: auto-detect) this value; returns what
    changed. Changes the objects in place."""
    changed = []
    for container in calico_node_containers(docs):
        env_list = [dict(v) for v in container.get("env") or []]
        old = next((v for v in env_list if v.get("name") == FELIX_VXLAN_MTU_ENV), None)
        new = {"name": FELIX_VXLAN_MTU_ENV, "value": str(vxlan_mtu)}
        if old is None:
            env_list.append(new)
        elif old != new:
            env_list[env_list.index(old)] = new
        else:
            continue
        container["env"] = env_list
        before = old.get("value", old.get("valueFrom")) if old else None
        changed.append(f"calico-node env {FELIX_VXLAN_MTU_ENV}: {before!r} -> {vxlan_mtu}")
    return changed
