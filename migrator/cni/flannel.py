"""flannel: its DaemonSet, ``net-conf.json`` (ConfigMap ``kube-flannel-cfg``), the node annotations
(``flannel.alpha.coreos.com/*``), its node agent and what it leaves on a node."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from loguru import logger

from migrator.cni.base import (
    AgentRef,
    CniDriver,
    ConfigMaps,
    NodeLeftovers,
    Obj,
    container_names,
    env,
    plain_node,
    pod_cidr_of,
    pod_spec,
)
from migrator.cni.info import CalicoPool, CniKind, CniNode, FlannelConfig

ANNOTATION = "flannel.alpha.coreos.com/"
CONFIGMAPS = (("kube-flannel", "kube-flannel-cfg"), ("kube-system", "kube-flannel-cfg"))
NET_CONF = "net-conf.json"


def go_key(obj: Mapping[str, Any], key: str) -> Any:
    """``obj[key]`` as Go's ``encoding/json`` decodes a struct field: the exact key first, else the first key
    equal to it ignoring case (flannel reads ``net-conf.json`` and its backend-data with Go's decoder, so
    ``"vni"`` and ``"VNI"`` are the same field)."""
    if key in obj:
        return obj[key]
    folded = key.casefold()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.casefold() == folded), None)


def _go_int(obj: Mapping[str, Any], key: str, default: int) -> int:
    value = go_key(obj, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):  # Go refuses "4096" or 1.5 for an int
        raise TypeError(f"{key} must be an integer, not {value!r}")
    return value


def default_subnet_len(network: str) -> int:
    """flannel's SubnetLen when net-conf.json has none (``pkg/subnet/config.go``): a /24 per host in a /22
    or bigger network, else the network's length + 2 (four subnets)."""
    try:
        prefix = ipaddress.ip_network(network, strict=False).prefixlen
    except ValueError:
        return 24
    return 24 if prefix <= 22 else prefix + 2


def parse_net_conf(text: str) -> FlannelConfig:
    """``net-conf.json`` with flannel's defaults, its keys in any case as Go's JSON decoder reads them
    (raises ``ValueError``/``TypeError`` when not valid, as flanneld refuses to start)."""
    conf = json.loads(text)
    if not isinstance(conf, dict):
        raise TypeError("net-conf.json is not a JSON object")
    backend = go_key(conf, "Backend") or {}
    if not isinstance(backend, dict):
        raise TypeError("Backend must be an object")
    network = str(go_key(conf, "Network") or "")
    mtu = _go_int(backend, "MTU", 0)
    ipv6 = go_key(conf, "IPv6Network")
    return FlannelConfig(
        network=network,
        subnet_len=_go_int(conf, "SubnetLen", 0) or default_subnet_len(network),
        backend_type=str(go_key(backend, "Type") or "udp"),
        vni=_go_int(backend, "VNI", 1),
        port=_go_int(backend, "Port", 0) or 8472,  # 0: the kernel's default VXLAN port, 8472
        direct_routing=bool(go_key(backend, "DirectRouting") or False),
        mtu=mtu or None,
        ipv6_network=str(ipv6) if ipv6 else None,
    )


def go_bool_flag(args: Sequence[str], name: str) -> bool | None:
    """A boolean flag of flanneld as Go's ``flag`` package reads it (``-x``, ``--x``, ``--x=false``...);
    ``None`` when not given."""
    found: bool | None = None
    for arg in args:
        flag, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or flag != name:
            continue
        found = value.lower() in ("1", "t", "true") if eq else True
    return found


def flanneld_args(ds: Obj) -> list[str]:
    """The command and args of the container that runs flanneld."""
    for container in pod_spec(ds).get("containers") or []:
        words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
        if container.get("name") == "kube-flannel" or any(w.endswith("flanneld") for w in words):
            return words
    return []


def daemon_flags(ds: Obj) -> dict[str, bool]:
    """``--ip-masq`` and ``--kube-subnet-mgr`` of flanneld (flags, else the ``FLANNELD_*`` env, else
    flanneld's default: off)."""
    args, values = flanneld_args(ds), env(ds)
    out = {}
    for flag in ("ip-masq", "kube-subnet-mgr"):
        given = go_bool_flag(args, flag)
        if given is None:
            raw = values.get("FLANNELD_" + flag.upper().replace("-", "_"))
            given = raw is not None and raw.lower() in ("1", "t", "true")
        out[flag] = given
    return out


def volume_configmaps(ds: Obj) -> tuple[tuple[str, str], ...]:
    """The ConfigMaps the DaemonSet mounts, in its namespace (flanneld reads net-conf.json from there)."""
    namespace = str((ds.get("metadata") or {}).get("namespace") or "")
    names = [
        str((v.get("configMap") or {}).get("name"))
        for v in pod_spec(ds).get("volumes") or []
        if (v.get("configMap") or {}).get("name")
    ]
    return tuple((namespace, name) for name in names if namespace)


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
        vtep_mac=go_key(data, "VtepMAC"),
        vni=_recorded_vni(data),
    )


def _recorded_vni(data: Mapping[str, Any]) -> int | None:
    value = go_key(data, "VNI")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def with_daemon_flags(conf: FlannelConfig | None, ds: Obj) -> FlannelConfig | None:
    """net-conf.json completed with what flanneld's flags say (``--ip-masq``, ``--kube-subnet-mgr``)."""
    if conf is None or not ds:
        return conf
    flags = daemon_flags(ds)
    return dataclasses.replace(conf, masquerade=flags["ip-masq"], kube_subnet_mgr=flags["kube-subnet-mgr"])


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

    def configmaps_of(self, ds: Obj) -> tuple[tuple[str, str], ...]:
        return volume_configmaps(ds)

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        config, flannel, _ = read_net_conf(
            configmaps, (*volume_configmaps(ds), *CONFIGMAPS), (ds.get("metadata") or {}).get("namespace")
        )
        if ds:
            config["flanneld"] = daemon_flags(ds)
        return config, with_daemon_flags(flannel, ds)

    def node(self, obj: Obj, cni: str | None = None) -> CniNode:
        return node_record(obj, cni)


DRIVER = Flannel()
