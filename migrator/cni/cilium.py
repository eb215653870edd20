"""Cilium: recognised (its DaemonSet and ``cilium-config``); migrating from it is not supported yet."""

from __future__ import annotations

from typing import Any

from migrator.cni.base import CniDriver, ConfigMaps, Obj
from migrator.cni.info import CniKind, FlannelConfig

CONFIGMAP = ("kube-system", "cilium-config")


class Cilium(CniDriver):
    kind = CniKind.CILIUM
    source_rank = 40
    configmaps = (CONFIGMAP,)

    def matches(self, ds: Obj) -> bool:
        meta = ds.get("metadata") or {}
        return meta.get("name") == "cilium" or (meta.get("labels") or {}).get("k8s-app") == "cilium"

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        return dict((configmaps.get(CONFIGMAP) or {}).get("data") or {}), None


DRIVER = Cilium()
