"""Canal (Calico policy on flannel's network): recognised, with flannel's config from ``canal-config``;
migrating from it is not supported yet."""

from __future__ import annotations

from typing import Any

from migrator.cni import flannel
from migrator.cni.base import AgentRef, CniDriver, ConfigMaps, Obj, container_names
from migrator.cni.info import CniKind, CniNode, FlannelConfig

CONFIGMAP = ("kube-system", "canal-config")


class Canal(CniDriver):
    kind = CniKind.CANAL
    source_rank = 10
    configmaps = (CONFIGMAP,)
    agent = AgentRef("canal", "kube-system", "canal")

    def matches(self, ds: Obj) -> bool:
        name = (ds.get("metadata") or {}).get("name")
        return name == "canal" or {"calico-node", "kube-flannel"} <= container_names(ds)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        namespace = (ds.get("metadata") or {}).get("namespace")
        config, conf, cm = flannel.read_net_conf(configmaps, (CONFIGMAP,), namespace)
        if cm is not None:
            config.update({k: v for k, v in (cm.get("data") or {}).items() if k != flannel.NET_CONF})
        return config, conf

    def node(self, obj: Obj, cni: str | None = None) -> CniNode:
        return flannel.node_record(obj, cni)


DRIVER = Canal()
