"""An emulated flanneld (VXLAN backend): what flanneld writes and programs on each node.

- ``/run/flannel/subnet.env`` and ``/etc/cni/net.d/10-flannel.conflist`` (bridge ``cni0`` + host-local on
  the node's /24, then portmap), as flannel's install-cni init container and the flannel CNI plugin's
  delegation produce;
- ``flannel.1``: VXLAN VNI 1, UDP 8472, ``nolearning``, a stable VTEP MAC and the VTEP IP (the node
  subnet's network address) as a /32;
- for every other node: a route ``<subnet> via <vtep> dev flannel.1 onlink``, a permanent neighbour
  ``<vtep> lladdr <mac>`` and an FDB entry ``<mac> dst <node ip>``;
- the ``FLANNEL-POSTRTG`` masquerade and ``FLANNEL-FWD`` forward chains.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migrator.lab.spec import FLANNEL_MTU, FLANNEL_PORT, FLANNEL_VNI, POD_NETWORK

CONFLIST_NAME = "10-flannel.conflist"
NETWORK_NAME = "cbr0"
VXLAN_DEV = "flannel.1"
BRIDGE_DEV = "cni0"


@dataclass(frozen=True)
class Peer:
    """What a node needs to know about another node: its subnet, VTEP and underlay address."""

    name: str
    ip: str
    pod_cidr: str
    vtep_ip: str
    vtep_mac: str


def subnet_env(pod_cidr: str, *, network: str = str(POD_NETWORK), mtu: int = FLANNEL_MTU) -> str:
    first = pod_cidr.split("/", maxsplit=1)[0].rsplit(".", 1)[0] + ".1/" + pod_cidr.split("/")[1]
    return f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n"


def conflist(pod_cidr: str, data_dir: str = "/var/lib/cni/networks") -> dict[str, Any]:
    """The node's CNI config: what the flannel plugin delegates to (bridge + host-local), then portmap."""
    return {
        "name": NETWORK_NAME,
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE_DEV,
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "mtu": FLANNEL_MTU,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": str(POD_NETWORK)}],
                    "dataDir": data_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def conflist_text(pod_cidr: str) -> str:
    return json.dumps(conflist(pod_cidr), indent=2) + "\n"


def vxlan_lines(node_ip: str, vtep_ip: str, vtep_mac: str, peers: Sequence[Peer]) -> list[str]:
    """``ip -batch`` lines (inside the node) for flannel.1 and the routes/neighbours to ``peers``."""
    lines = [
        f"link add {VXLAN_DEV} type vxlan id {FLANNEL_VNI} local {node_ip} dev eth0 dstport {FLANNEL_PORT} "
        "nolearning",
        f"link set {VXLAN_DEV} address {vtep_mac} mtu {FLANNEL_MTU}",
        f"addr add {vtep_ip}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]
    lines += peer_lines(peers)
    return lines


def peer_lines(peers: Sequence[Peer], *, delete: bool = False) -> list[str]:
    lines: list[str] = []
    for p in peers:
        if delete:
            lines += [
                f"route del {p.pod_cidr} via {p.vtep_ip} dev {VXLAN_DEV} onlink",
                f"neigh del {p.vtep_ip} dev {VXLAN_DEV}",
            ]
        else:
            lines += [
                f"route replace {p.pod_cidr} via {p.vtep_ip} dev {VXLAN_DEV} onlink",
                f"neigh replace {p.vtep_ip} lladdr {p.vtep_mac} dev {VXLAN_DEV} nud permanent",
            ]
    return lines


def fdb_lines(peers: Sequence[Peer], *, delete: bool = False) -> list[str]:
    """``bridge -batch`` lines for the FDB entries (one per remote VTEP)."""
    verb = "del" if delete else "replace"
    if delete:
        return [f"fdb {verb} {p.vtep_mac} dev {VXLAN_DEV} dst {p.ip}" for p in peers]
    return [f"fdb {verb} {p.vtep_mac} dev {VXLAN_DEV} dst {p.ip} self permanent" for p in peers]


def masq_rules(pod_cidr: str, network: str = str(POD_NETWORK)) -> str:
    """flanneld's iptables rules (nat FLANNEL-POSTRTG, filter FLANNEL-FWD) for ``iptables-restore``."""
    c = '-m comment --comment "flanneld masq"'
    f = '-m comment --comment "flanneld forward"'
    return "\n".join(
        [
            "*nat",
            ":FLANNEL-POSTRTG - [0:0]",
            f"-A POSTROUTING {c} -j FLANNEL-POSTRTG",
            f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {pod_cidr} -d {network} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {network} -d {pod_cidr} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {network} -d {pod_cidr} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {network} -d {network} {c} -j MASQUERADE --random-fully",
            "COMMIT",
            "*filter",
            ":FLANNEL-FWD - [0:0]",
            f"-A FORWARD {f} -j FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {network} {f} -j ACCEPT",
            f"-A FLANNEL-FWD -d {network} {f} -j ACCEPT",
            "COMMIT",
            "",
        ]
    )
