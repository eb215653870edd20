"""An emulated weave-kube (Weave Net 2.8, fastdp): what its ``weave`` container programs on each node, from
real kernel objects. This kernel has no Open vSwitch: a Linux bridge and an L2 VXLAN device stand for the
ODP datapath and its ``vxlan-6784`` vport.

- the ``weave`` bridge, MTU 1376 (Weave's default), holding the node's address on the weave network with the
  range's prefix, as ``weave expose`` does (``10.32.0.1/12`` on node1 with the default ``IPALLOC_RANGE``
  ``10.32.0.0/12``): the host is on the flat pod network, its connected route covers every pod;
- ``vxlan-6784``: L2 VXLAN on UDP 6784, enslaved to the bridge, learning on, with one head-end replication FDB
  entry ``00:00:00:00:00:00 dst <peer>`` per peer (every other node running weave-net): ARP and broadcasts
  reach every node, unicast follows the MACs learnt from them. All pods of all nodes are one L2 segment;
- IPAM: node i owns the (i-1)-th /24 of the range (:func:`node_slice`). Its pods get ``<ip>/<range prefix>``
  and a default route via the node's bridge address;
- ``/etc/cni/net.d/10-weave.conflist`` (network ``weave``): the real ``bridge`` plugin on ``weave`` with
  host-local IPAM on the node's slice of the range (Weave's own ``weave-net`` plugin does the same against
  its IPAM), then portmap;
- iptables: nat ``WEAVE`` jumped from POSTROUTING with Weave's masquerade (RETURN to the node's own pods, the
  ipset ``weaver-no-masq-local`` holding its slice, ``NO_MASQ_LOCAL`` being on by default since 2.7; RETURN
  for multicast; MASQUERADE into the range from outside it and out of the range from inside it, so traffic
  between a weave pod and a pod of another range, Calico's during a migration, IS masqueraded unless rules
  before ``WEAVE`` exempt it); filter: weave-kube's FORWARD accepts (``-i weave -o weave``,
  ``-o weave -j WEAVE-EXPOSE``, ``-i weave ! -o weave``, replies ``-o weave``), ``WEAVE-EXPOSE`` accepting
  the range; ``WEAVE-CANARY`` (weaver's iptables monitor) in nat and filter.

NetworkPolicy (weave-npc) is the lab's policy agent (:mod:`migrator.lab.netpol`, engine ``weave-npc``:
``WEAVE-NPC*`` chains and ``weave-*`` ipsets, hooked first in FORWARD/INPUT). weave-kube's NPC-mode FORWARD
layout (``-o weave -j WEAVE-NPC`` then ``-o weave -j DROP``) is not reproduced: its accepts are appended as
without NPC, and the policy chains decide before them.

Not emulated: the weave router (peer gossip over TCP 6783, the sleeve fallback, encryption), the IPAM ring
(a CRDT handing out ranges at run time; the lab's slices are static), fastdp's flows (the bridge's MAC
learning stands for them), weaveDNS and the status port.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from migrator.errors import UsageError
from migrator.lab.spec import vtep_mac

AGENT = "weave-net"  # the DaemonSet app (kube-system/weave-net)
BRIDGE_DEV = "weave"
VXLAN_DEV = "vxlan-6784"
VXLAN_PORT = 6784
VXLAN_VNI = 1  # fastdp carries peer ids in the VNI; the lab's single segment uses one fixed VNI
MTU = 1376
CONFLIST_NAME = "10-weave.conflist"
NETWORK_NAME = "weave"
DEFAULT_RANGE = "10.32.0.0/12"
RANGE_KEY = "ipalloc_range"  # DaemonSet config key: the weave container's IPALLOC_RANGE env
NO_MASQ_SET = "weaver-no-masq-local"
SLICE_PREFIX = 24
ALL_ZERO_MAC = "00:00:00:00:00:00"
CHAIN_PREFIX = "WEAVE"
SET_PREFIX = "weave"  # weaver-no-masq-local and weave-npc's weave-<hash> sets


def ipalloc_range(config: Mapping[str, str]) -> ipaddress.IPv4Network:
    """The weave-net DaemonSet's ``ipalloc_range`` (``IPALLOC_RANGE``), default ``10.32.0.0/12``."""
    raw = config.get(RANGE_KEY, DEFAULT_RANGE)
    try:
        net = ipaddress.IPv4Network(raw, strict=True)
    except ValueError as exc:
        raise UsageError(f"weave-net config {RANGE_KEY}: {raw!r} is not an IPv4 network ({exc})") from None
    if net.prefixlen > SLICE_PREFIX:
        raise UsageError(f"weave-net config {RANGE_KEY}: {raw} is smaller than a /{SLICE_PREFIX} node slice")
    return net


def node_slice(rng: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Network:
    """Node ``index`` (1-based)'s part of the range: its (index-1)-th /24."""
    slices = 1 << (SLICE_PREFIX - rng.prefixlen)
    if not 1 <= index <= slices:
        raise UsageError(
            f"weave-net config {RANGE_KEY}: {rng} has {slices} /{SLICE_PREFIX} node slice(s): "
            f"none for node {index}"
        )
    first = int(rng.network_address) + ((index - 1) << (32 - SLICE_PREFIX))
    return ipaddress.IPv4Network((first, SLICE_PREFIX))


def bridge_ip(rng: ipaddress.IPv4Network, index: int) -> str:
    """The node's address on the weave network (its slice's first host address)."""
    return str(node_slice(rng, index).network_address + 1)


def bridge_address(rng: ipaddress.IPv4Network, index: int) -> str:
    """``weave expose``'s address of the node: its bridge IP with the range's prefix."""
    return f"{bridge_ip(rng, index)}/{rng.prefixlen}"


def peer_mac(lab: str, node: str) -> str:
    """The bridge's MAC (weave names a peer by its MAC), distinct from the node's flannel/Calico VTEPs."""
    return vtep_mac(lab, f"{node}/weave")


def conflist(
    rng: ipaddress.IPv4Network, index: int, data_dir: str = "/var/lib/cni/networks"
) -> dict[str, Any]:
    """The node's ``10-weave.conflist``: ``bridge`` on ``weave`` + host-local on its slice, then portmap."""
    sl = node_slice(rng, index)
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
                "mtu": MTU,
                "ipam": {
                    "type": "host-local",
                    "ranges": [
                        [
                            {
                                "subnet": str(rng),
                                "rangeStart": str(sl.network_address + 2),
                                "rangeEnd": str(sl.broadcast_address - 1),
                                "gateway": bridge_ip(rng, index),
                            }
                        ]
                    ],
                    "dataDir": data_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def conflist_text(rng: ipaddress.IPv4Network, index: int) -> str:
    return json.dumps(conflist(rng, index), indent=2) + "\n"


def bridge_lines(address: str, mac: str) -> list[str]:
    """``ip -batch`` lines (inside the node) for the ``weave`` bridge with the node's exposed address."""
    return [
        f"link add {BRIDGE_DEV} type bridge",
        f"link set {BRIDGE_DEV} address {mac} mtu {MTU}",
        f"addr add {address} dev {BRIDGE_DEV}",
        f"link set {BRIDGE_DEV} up",
    ]


def vxlan_lines(node_ip: str) -> list[str]:
    """``vxlan-6784``: L2 VXLAN from the node's underlay address, learning on, enslaved to the bridge."""
    return [
        f"link add {VXLAN_DEV} type vxlan id {VXLAN_VNI} local {node_ip} dev eth0 dstport {VXLAN_PORT} "
        "learning",
        f"link set {VXLAN_DEV} mtu {MTU} master {BRIDGE_DEV}",
        f"link set {VXLAN_DEV} up",
    ]


def fdb_lines(add: Iterable[str], delete: Iterable[str] = ()) -> list[str]:
    """``bridge -batch`` lines: head-end replication entries to the peers ``add``, none to ``delete``."""
    lines = [f"fdb append {ALL_ZERO_MAC} dev {VXLAN_DEV} dst {ip} self permanent" for ip in add]
    return lines + [f"fdb del {ALL_ZERO_MAC} dev {VXLAN_DEV} dst {ip} self" for ip in delete]


def mesh_peers(fdb: Iterable[Mapping[str, Any]]) -> list[str]:
    """The peers of ``vxlan-6784`` from its ``bridge -j fdb show`` entries: the head-end replication ones."""
    return sorted({str(e["dst"]) for e in fdb if e.get("mac") == ALL_ZERO_MAC and e.get("dst")})


def ipset_text(local: ipaddress.IPv4Network) -> str:
    """``ipset restore`` input: ``weaver-no-masq-local`` holding exactly the node's slice."""
    return "\n".join(
        [
            f"create {NO_MASQ_SET} hash:net family inet -exist",
            f"flush {NO_MASQ_SET}",
            f"add {NO_MASQ_SET} {local}",
            "",
        ]
    )


def iptables_rules(rng: ipaddress.IPv4Network) -> str:
    """weave-kube's chains and rules, for ``iptables-restore --noflush`` (the nat ones as in 2.8)."""
    r = str(rng)
    no_masq = '-m comment --comment "Prevent SNAT to locally running containers"'
    return "\n".join(
        [
            "*nat",
            ":WEAVE - [0:0]",
            ":WEAVE-CANARY - [0:0]",
            "-A POSTROUTING -j WEAVE",
            f"-A WEAVE -m set --match-set {NO_MASQ_SET} dst {no_masq} -j RETURN",
            f"-A WEAVE -s {r} -d 224.0.0.0/4 -j RETURN",
            f"-A WEAVE ! -s {r} -d {r} -j MASQUERADE",
            f"-A WEAVE -s {r} ! -d {r} -j MASQUERADE",
            "COMMIT",
            "*filter",
            ":WEAVE-EXPOSE - [0:0]",
            ":WEAVE-CANARY - [0:0]",
            f"-A FORWARD -i {BRIDGE_DEV} -o {BRIDGE_DEV} -j ACCEPT",
            f"-A FORWARD -o {BRIDGE_DEV} -j WEAVE-EXPOSE",
            f"-A FORWARD -i {BRIDGE_DEV} ! -o {BRIDGE_DEV} -j ACCEPT",
            f"-A FORWARD -o {BRIDGE_DEV} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A WEAVE-EXPOSE -d {r} -j ACCEPT",
            "COMMIT",
            "",
        ]
    )
