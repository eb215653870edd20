"""flannel: its DaemonSet, ``net-conf.json`` (ConfigMap ``kube-flannel-cfg``), the node annotations
(``flannel.alpha.coreos.com/*``), its node agent and what it leaves on a node."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from loguru import logger

from migrator.cni.base import (
    AgentRef,
    CniDriver,
    ConfigMaps,
    NodeLeftovers,
    Obj,
    container_names,
    plain_node,
    pod_cidr_of,
)
from migrator.cni.info import CalicoPool, CniKind, CniNode, FlannelConfig

ANNOTATION = "flannel.alpha.coreos.com/"
CONFIGMAPS = (("kube-flannel", "kube-flannel-cfg"), ("kube-system", "kube-flannel-cfg"))
NET_CONF = "net-conf.json"


def parse_net_conf(text: str) -> FlannelConfig:
    """``net-conf.json`` with flannel's defaults (raises ``ValueError``/``TypeError`` when not valid)."""
    conf = json.loads(text)
    backend = conf.get("Backend") or {}
    return FlannelConfig(
        network=str(conf.get("Network", "")),
        subnet_len=int(conf.get("SubnetLen", 24)),
        backend_type=str(backend.get("Type", "udp")),
        vni=int(backend.get("VNI", 1)),
        port=int(backend.get("Port", 8472)),
        direct_routing=bool(backend.get("DirectRouting", False)),
        mtu=int(backend["MTU"]) if backend.get("MTU") else None,
        ipv6_network=conf.get("IPv6Network"),
    )


def read_net_conf(
    configmaps: ConfigMaps, wanted: Sequence[tuple[str, str]], namespace: str | None
) -> tuple[dict[str, Any], FlannelConfig | None, Obj | None]:
    """The first of the ``wanted`` ConfigMaps (those in the DaemonSet's ``namespace`` first) holding a
    ``net-conf.json``: (raw config, parsed config or ``None`` when not valid, the ConfigMap)."""
    for key in sorted(wanted, key=lambda key: key[0] != namespace):
        cm = configmaps.get(key)
        if not cm or not (cm.get("data") or {}).get(NET_CONF):
            continue
        text = str(cm["data"][NET_CONF])
        where = f"{key[0]}/{key[1]}"
        try:
            return {NET_CONF: json.loads(text), "configmap": where}, parse_net_conf(text), cm
        except (ValueError, TypeError) as exc:
            logger.warning("cannot parse {} net-conf.json: {}", where, exc)
            return {"net-conf.json.raw": text, "configmap": where}, None, cm
    return {}, None, None


def annotated(obj: Obj) -> bool:
    """Whether flannel recorded the node (any ``flannel.alpha.coreos.com/*`` annotation)."""
    return any(k.startswith(ANNOTATION) for k in ((obj.get("metadata") or {}).get("annotations") or {}))


def node_record(obj: Obj, cni: str | None = None) -> CniNode:
    """The node with what flannel recorded on it (annotations and ``spec.podCIDR``), if anything."""
    meta = obj.get("metadata") or {}
    ann = {
        k[len(ANNOTATION) :]: v
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(ANNOTATION)
    }
    if not ann:
        return plain_node(obj, cni)
    data: dict[str, Any] = {}
    if ann.get("backend-data"):
        try:
            parsed = json.loads(ann["backend-data"])
            data = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            data = {}
    return CniNode(
        name=str(meta.get("name")),
        pod_cidr=pod_cidr_of(obj),
        cni=cni,
        recorded=True,
        public_ip=ann.get("public-ip"),
        backend_type=ann.get("backend-type"),
        vtep_mac=data.get("VtepMAC"),
        vni=int(data["VNI"]) if data.get("VNI") is not None else None,
    )


class Flannel(CniDriver):
    kind = CniKind.FLANNEL
    source_rank = 20
    configmaps = CONFIGMAPS
    agent = AgentRef("flannel", "kube-flannel", "kube-flannel-ds")
    leftovers = NodeLeftovers(
        links=("flannel.1", "cni0"),
        chain_prefixes=("FLANNEL",),
        chain_owner="FLANNEL",
        cni_files=("10-flannel.conflist",),
        extra_files=("/run/flannel/subnet.env",),
        file_facts={"flannel_subnet_env": "/run/flannel/subnet.env"},
    )

    def matches(self, ds: Obj) -> bool:
        meta = ds.get("metadata") or {}
        labels = meta.get("labels") or {}
        return (
            str(meta.get("name", "")).startswith("kube-flannel")
            or labels.get("app") == "flannel"
            or "kube-flannel" in container_names(ds)
        )

    def seen_without_daemonset(
        self, found: Collection[CniKind], nodes: Sequence[Obj], pools: Sequence[CalicoPool]
    ) -> bool:
        return not found and any(annotated(n) for n in nodes)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        config, flannel, _ = read_net_conf(
            configmaps, CONFIGMAPS, (ds.get("metadata") or {}).get("namespace")
        )
        return config, flannel

    def node(self, obj: Obj, cni: str | None = None) -> CniNode:
        return node_record(obj, cni)


DRIVER = Flannel()
