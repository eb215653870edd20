"""Weave Net: recognised (its DaemonSet and ``IPALLOC_RANGE``); migrating from it is not supported yet."""

from __future__ import annotations

from typing import Any

from migrator.cni.base import AgentRef, CniDriver, ConfigMaps, Obj, container_names, env
from migrator.cni.info import CniKind, FlannelConfig

DEFAULT_RANGE = "10.32.0.0/12"


class Weave(CniDriver):
    kind = CniKind.WEAVE
    source_rank = 30
    agent = AgentRef("weave-net", "kube-system", "weave-net")

    def matches(self, ds: Obj) -> bool:
        return (ds.get("metadata") or {}).get("name") == "weave-net" or "weave" in container_names(ds)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        values = env(ds)
        return {"env": values, "IPALLOC_RANGE": values.get("IPALLOC_RANGE", DEFAULT_RANGE)}, None


DRIVER = Weave()
