"""Calico: its DaemonSet (calico-node), ``calico-config``, its IPPools, its node agent, what it leaves on
a node and its VXLAN device (removed by the BGP stage)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from migrator.cni.base import AgentRef, CniDriver, ConfigMaps, NodeLeftovers, Obj, container_names, env
from migrator.cni.info import CalicoPool, CniKind, FlannelConfig

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
