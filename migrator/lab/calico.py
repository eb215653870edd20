"""An emulated calico-node (VXLAN mode, wire-compatible with flannel), for ``--cni calico`` and migrations.

What it programs on a node, as calico-node and its install-cni init container would:

- ``/etc/cni/net.d/10-calico.conflist``: the real ``ptp`` plugin (a veth per pod with a /32 host route,
  like Calico's ``cali*`` interfaces) with host-local IPAM on the node's block (the node's flannel /24, so
  a node keeps its pod CIDR across a migration), then portmap;
- ``vxlan.calico``: VXLAN with flannel's VNI (1), UDP port (8472) and MTU, the node's VTEP MAC and VTEP IP,
  so nodes still on flannel keep valid FDB/ARP entries for it (and the reverse);
- routes ``<block> via <vtep> dev vxlan.calico onlink``, permanent neighbours and FDB entries to every other
  node;
- ``cali-POSTROUTING`` (nat-outgoing for the pool) and ``cali-FORWARD`` chains.

Not emulated: Felix policy, BGP (bird2) mode, IPIP (the kernel has no ipip), Typha, the datastore.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from migrator.cni import CALICO_MODE_LABEL, CalicoMode
from migrator.lab.flannel import Peer
from migrator.lab.spec import FLANNEL_MTU, FLANNEL_PORT, FLANNEL_VNI, POD_NETWORK

CONFLIST_NAME = "10-calico.conflist"
NETWORK_NAME = "k8s-pod-network"
VXLAN_DEV = "vxlan.calico"


def conflist(block: str, data_dir: str = "/var/lib/cni/networks") -> dict[str, Any]:
    return {
        "name": NETWORK_NAME,
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "ptp",
                "mtu": FLANNEL_MTU,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": block}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def conflist_text(block: str) -> str:
    return json.dumps(conflist(block), indent=2) + "\n"


def vxlan_lines(node_ip: str, vtep_ip: str, vtep_mac: str) -> list[str]:
    return [
        f"link add {VXLAN_DEV} type vxlan id {FLANNEL_VNI} local {node_ip} dev eth0 dstport {FLANNEL_PORT} "
        "nolearning",
        f"link set {VXLAN_DEV} address {vtep_mac} mtu {FLANNEL_MTU}",
        f"addr add {vtep_ip}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]


def peer_lines(peers: Sequence[Peer]) -> list[str]:
    lines: list[str] = []
    for p in peers:
        lines += [
            f"route replace {p.pod_cidr} via {p.vtep_ip} dev {VXLAN_DEV} onlink",
            f"neigh replace {p.vtep_ip} lladdr {p.vtep_mac} dev {VXLAN_DEV} nud permanent",
        ]
    return lines


def fdb_lines(peers: Sequence[Peer]) -> list[str]:
    return [f"fdb replace {p.vtep_mac} dev {VXLAN_DEV} dst {p.ip} self permanent" for p in peers]


def iptables_rules(pool: str = str(POD_NETWORK)) -> str:
    c = '-m comment --comment "cali:nat-outgoing"'
    f = '-m comment --comment "cali:forward"'
    return "\n".join(
        [
            "*nat",
            ":cali-POSTROUTING - [0:0]",
            ":cali-nat-outgoing - [0:0]",
            '-A POSTROUTING -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING',
            "-A cali-POSTROUTING -j cali-nat-outgoing",
            f"-A cali-nat-outgoing -s {pool} ! -d {pool} {c} -j MASQUERADE --random-fully",
            "COMMIT",
            "*filter",
            ":cali-FORWARD - [0:0]",
            '-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD',
            f"-A cali-FORWARD -s {pool} {f} -j ACCEPT",
            f"-A cali-FORWARD -d {pool} {f} -j ACCEPT",
            "COMMIT",
            "",
        ]
    )


# ------------------------------------------------------------------------------------------- BGP mode

MODE_LABEL = CALICO_MODE_LABEL  # per-node override of the calico-node DaemonSet's mode
MODE_VXLAN = CalicoMode.VXLAN.value
MODE_BGP = CalicoMode.BGP.value
PEERING_FULL_MESH = "full-mesh"
PEERING_RR = "route-reflector"
AS_NUMBER = 64512


def bird_config(
    *, router_id: str, block: str, peers: Sequence[tuple[str, str]], rr_clients: bool = False
) -> str:
    """bird2 config: export the node's block (with a real next hop) over iBGP; install learned routes.

    ``peers`` are (name, ip). With ``rr_clients`` this node is a route reflector for all of them.
    """
    lines = [
        f"router id {router_id};",
        "protocol device { scan time 5; }",
        "protocol kernel {",
        "  ipv4 { import none; export where source = RTS_BGP; };",
        "  merge paths on;",
        "}",
        f'protocol static pod_block {{ ipv4; route {block} via "eth0"; }}',
    ]
    for name, ip in peers:
        proto = "bgp_" + "".join(ch if ch.isalnum() else "_" for ch in name)
        lines += [
            f"protocol bgp {proto} {{",
            f"  local {router_id} as {AS_NUMBER};",
            f"  neighbor {ip} as {AS_NUMBER};",
            "  direct;",
            "  connect delay time 1; connect retry time 1; error wait time 1, 5;",
        ]
        if rr_clients:
            lines.append("  rr client;")
        export = "source ~ [RTS_STATIC, RTS_BGP]" if rr_clients else "source = RTS_STATIC"
        lines += [f"  ipv4 {{ import all; export where {export}; }};", "}"]
    return "\n".join(lines) + "\n"
