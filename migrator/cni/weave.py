"""Weave Net: its DaemonSet (kube-system/weave-net, a ``kind: List`` manifest upstream), ``IPALLOC_RANGE``,
its node agent and what it leaves on a node (weave-kube's bridge and VXLAN vport, its ``WEAVE*`` chains
with weave-npc's, its FORWARD accepts on the bridge, its ipsets and its CNI config)."""

from __future__ import annotations

from typing import Any

from migrator.cni.base import AgentRef, CniDriver, ConfigMaps, NodeLeftovers, Obj, container_names, env
from migrator.cni.info import CniKind, FlannelConfig

DEFAULT_RANGE = "10.32.0.0/12"
BRIDGE = "weave"
VXLAN_DEVICE = "vxlan-6784"  # fastdp's VXLAN vport (UDP 6784)


class Weave(CniDriver):
    kind = CniKind.WEAVE
    source_rank = 30
    agent = AgentRef("weave-net", "kube-system", "weave-net")
    leftovers = NodeLeftovers(
        links=(BRIDGE, VXLAN_DEVICE),
        chain_prefixes=("WEAVE",),  # WEAVE, WEAVE-EXPOSE, WEAVE-CANARY and weave-npc's WEAVE-NPC*
        chain_owner="WEAVE",
        cni_files=("10-weave.conflist",),
        ipset_prefixes=("weave",),  # weaver-no-masq-local and weave-npc's weave-<hash> sets
        rule_interfaces=(BRIDGE,),  # -A FORWARD -i weave -o weave -j ACCEPT ...
    )

    def matches(self, ds: Obj) -> bool:
        return (ds.get("metadata") or {}).get("name") == "weave-net" or "weave" in container_names(ds)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        values = env(ds)
        return {"env": values, "IPALLOC_RANGE": values.get("IPALLOC_RANGE", DEFAULT_RANGE)}, None


DRIVER = Weave()
