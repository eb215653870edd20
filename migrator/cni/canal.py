"""Canal (flannel's VXLAN network with Calico's felix for policy): its DaemonSet ``canal``, flannel's
config from ``canal-config``, its node agent and what it leaves on a node. Migrated to Calico the way
flannel is (wire-compatible): Canal's pods are already wired by the ``calico`` CNI plugin, and felix keeps
enforcing NetworkPolicy, first in Canal's calico-node container, then in Calico's calico-node."""

from __future__ import annotations

import dataclasses
from typing import Any

from migrator.cni import flannel
from migrator.cni.base import AgentRef, CniDriver, ConfigMaps, NodeLeftovers, Obj, container_names
from migrator.cni.info import CniKind, CniNode, FlannelConfig

CONFIGMAP = ("kube-system", "canal-config")
CONFLIST = "10-canal.conflist"  # canal.yaml's CNI_CONF_NAME


class Canal(CniDriver):
    kind = CniKind.CANAL
    source_rank = 10
    configmaps = (CONFIGMAP,)
    agent = AgentRef("canal", "kube-system", "canal")
    # flanneld's part. Felix's chains (cali-*) and calico-kubeconfig stay: Calico's calico-node takes them
    # over on the node (the same felix, the same install-cni file).
    leftovers = NodeLeftovers(
        links=("flannel.1",),
        chain_prefixes=("FLANNEL",),
        chain_owner="FLANNEL",
        cni_files=(CONFLIST,),
        extra_files=("/run/flannel/subnet.env",),
        file_facts={"flannel_subnet_env": "/run/flannel/subnet.env"},
    )

    seen_as = ("flannel",)

    def matches(self, ds: Obj) -> bool:
        name = (ds.get("metadata") or {}).get("name")
        return name == "canal" or {"calico-node", "kube-flannel"} <= container_names(ds)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        """canal-config's net-conf.json and its other keys; masquerade as flanneld runs it: its
        ``--ip-masq`` flag, else canal-config's ``masquerade`` (canal.yaml feeds it to FLANNELD_IP_MASQ)."""
        namespace = (ds.get("metadata") or {}).get("namespace")
        config, conf, cm = flannel.read_net_conf(configmaps, (CONFIGMAP,), namespace)
        data = (cm.get("data") or {}) if cm is not None else {}
        config.update({k: v for k, v in data.items() if k != flannel.NET_CONF})
        conf = flannel.with_daemon_flags(conf, ds)
        if conf is not None and not conf.masquerade and str(data.get("masquerade", "")).lower() == "true":
            conf = dataclasses.replace(conf, masquerade=True)
        return config, conf

    def node(self, obj: Obj, cni: str | None = None) -> CniNode:
        return flannel.node_record(obj, cni)


DRIVER = Canal()
