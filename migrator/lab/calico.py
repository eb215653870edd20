"""An emulated calico-node (VXLAN mode, wire-compatible with flannel, or beside another overlay), for
``--cni calico`` and migrations.

What it programs on a node, as calico-node and its install-cni init container would:

- ``/etc/cni/net.d/10-calico.conflist``: the real ``ptp`` plugin (a veth per pod with a /32 host route,
  like Calico's ``cali*`` interfaces) with host-local IPAM on the node's block (the node's flannel /24, so
  a node keeps its pod CIDR across a migration), then portmap;
- ``vxlan.calico``: VXLAN with flannel's VNI (1), UDP port (8472) and MTU, the node's VTEP MAC and VTEP IP,
  so nodes still on flannel keep valid FDB/ARP entries for it (and the reverse);
- routes ``<block> via <vtep> dev vxlan.calico onlink``, permanent neighbours and FDB entries to every other
  node;
- ``cali-POSTROUTING`` (nat-outgoing for the pool) and ``cali-FORWARD`` chains.

Dual-overlay mode (the DaemonSet config keys of :class:`Settings`; without them nothing changes): Calico on
every node beside another CNI (Weave Net) with its own pool, VXLAN port and VNI, so that both overlays run
side by side and the routing table separates them. Node i's block is the (i-1)-th ``block_size`` block of
``pool`` (Calico's IPAM hands blocks out at run time; the lab's are static), its VTEP IP the block's network
address with a VTEP MAC of its own; routes go to the blocks of the other calico-node nodes with the same
pool, over ``vxlan.calico``, never touching the other CNI's devices and routes. ``cni_conf_name`` is
install-cni's ``CNI_CONF_NAME`` (``20-calico.conflist`` keeps the other CNI's ``10-*`` file the kubelet's
choice until it is removed); ``nat_exclude`` are destinations ``cali-nat-outgoing`` does not masquerade
(as Calico skips every IPPool, disabled ones included).

Not emulated: Felix policy here (the lab's policy agent, :mod:`migrator.lab.netpol`), IPIP (the kernel has
no ipip), Typha, the datastore.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrator.cni import CALICO_MODE_LABEL, CalicoMode
from migrator.cni.info import CALICO_BLOCK_SIZES
from migrator.errors import UsageError
from migrator.lab.flannel import Peer
from migrator.lab.spec import FLANNEL_MTU, FLANNEL_PORT, FLANNEL_VNI, POD_NETWORK

CONFLIST_NAME = "10-calico.conflist"
NETWORK_NAME = "k8s-pod-network"
VXLAN_DEV = "vxlan.calico"
POSTROUTING_HOOK = '-m comment --comment "cali:O3lYWMrLQYEMJtB5"'
FORWARD_HOOK = '-m comment --comment "cali:wUHhoiAYhphO9Mso"'
_CONF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(conflist|conf|json)$")


@dataclass(frozen=True)
class Settings:
    """calico-node's optional DaemonSet config keys (all strings, as env values are): ``pool`` (default: each
    node's own pod CIDR is its block), ``block_size`` (default 24), ``vxlan_port`` / ``vxlan_vni`` (default
    flannel's 8472 / 1), ``cni_conf_name`` (default ``10-calico.conflist``), ``nat_exclude`` (comma-separated
    CIDRs)."""

    pool: ipaddress.IPv4Network | None = None
    block_size: int = 24
    vxlan_port: int = FLANNEL_PORT
    vxlan_vni: int = FLANNEL_VNI
    conf_name: str = CONFLIST_NAME
    nat_exclude: tuple[str, ...] = ()

    def block(self, index: int) -> ipaddress.IPv4Network:
        """Node ``index`` (1-based)'s block: the (index-1)-th ``block_size`` block of the pool."""
        assert self.pool is not None
        blocks = 1 << (self.block_size - self.pool.prefixlen)
        if not 1 <= index <= blocks:
            raise UsageError(
                f"calico-node config pool: {self.pool} holds {blocks} /{self.block_size} block(s): none for "
                f"node {index}"
            )
        step = 1 << (32 - self.block_size)
        return ipaddress.IPv4Network((int(self.pool.network_address) + (index - 1) * step, self.block_size))

    @property
    def signature(self) -> str:
        """What changes the agent's programming (empty with the defaults: today's agents stay as they are)."""
        if self == Settings():
            return ""
        excl = ",".join(self.nat_exclude)
        return f"{self.pool}/{self.block_size}/{self.vxlan_port}/{self.vxlan_vni}/{self.conf_name}/{excl}"


def _int(config: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = config.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"calico-node config {key}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise UsageError(f"calico-node config {key}: {value} is not in {low}..{high}")
    return value


def _network(key: str, raw: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(raw.strip(), strict=True)
    except ValueError as exc:
        raise UsageError(f"calico-node config {key}: {raw!r} is not an IPv4 network ({exc})") from None


def settings(config: Mapping[str, str]) -> Settings:
    """The dual-overlay keys of a calico-node DaemonSet config, checked (a bad one is named)."""
    pool = _network("pool", config["pool"]) if config.get("pool") else None
    size = _int(config, "block_size", 24, CALICO_BLOCK_SIZES.start, CALICO_BLOCK_SIZES.stop - 1)
    if pool is not None and size < pool.prefixlen:
        raise UsageError(f"calico-node config block_size: /{size} is bigger than the pool {pool}")
    name = config.get("cni_conf_name", CONFLIST_NAME)
    if not _CONF_NAME_RE.match(name):
        raise UsageError(f"calico-node config cni_conf_name: {name!r} is not a CNI config file name")
    excl = [c for c in config.get("nat_exclude", "").split(",") if c.strip()]
    return Settings(
        pool=pool,
        block_size=size,
        vxlan_port=_int(config, "vxlan_port", FLANNEL_PORT, 1, 65535),
        vxlan_vni=_int(config, "vxlan_vni", FLANNEL_VNI, 1, (1 << 24) - 1),
        conf_name=name,
        nat_exclude=tuple(str(_network("nat_exclude", c)) for c in excl),
    )


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


def vxlan_lines(
    node_ip: str, vtep_ip: str, vtep_mac: str, *, vni: int = FLANNEL_VNI, port: int = FLANNEL_PORT
) -> list[str]:
    return [
        f"link add {VXLAN_DEV} type vxlan id {vni} local {node_ip} dev eth0 dstport {port} nolearning",
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


def iptables_rules(
    pool: str = str(POD_NETWORK), *, nat_exclude: Sequence[str] = (), hooks: bool = True
) -> str:
    """``cali-POSTROUTING``/``cali-nat-outgoing`` (nat) and ``cali-FORWARD`` (filter), rewritten; with
    ``hooks`` also the jumps from POSTROUTING and FORWARD (once: they are not in the agent's chains)."""
    c = '-m comment --comment "cali:nat-outgoing"'
    f = '-m comment --comment "cali:forward"'
    nat = [f"-A cali-nat-outgoing -s {pool} -d {x} {c} -j RETURN" for x in nat_exclude]
    return "\n".join(
        [
            "*nat",
            ":cali-POSTROUTING - [0:0]",
            ":cali-nat-outgoing - [0:0]",
            *([f"-A POSTROUTING {POSTROUTING_HOOK} -j cali-POSTROUTING"] if hooks else []),
            "-A cali-POSTROUTING -j cali-nat-outgoing",
            *nat,
            f"-A cali-nat-outgoing -s {pool} ! -d {pool} {c} -j MASQUERADE --random-fully",
            "COMMIT",
            "*filter",
            ":cali-FORWARD - [0:0]",
            *([f"-A FORWARD {FORWARD_HOOK} -j cali-FORWARD"] if hooks else []),
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
