"""What a lab is made of: the user's request (:class:`LabSpec`) and the names derived from it."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from migrator.errors import UsageError

POD_NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_NETWORK = ipaddress.IPv4Network("10.96.0.0/12")
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
UNDERLAY_SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")
FLANNEL_VNI = 1
FLANNEL_PORT = 8472
FLANNEL_MTU = 1450
NODE_HOST_OFFSET = 10  # node i (1-based) gets .10+i on the underlay
OUTSIDE_HOST_OFFSET = 200
MAX_NODES = 64
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"  # node1's; the inventory's [control_plane]

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class CniKind(StrEnum):
    FLANNEL = "flannel"
    CALICO = "calico"
    CANAL = "canal"  # flannel VXLAN + felix policy (DaemonSet kube-system/canal)
    WEAVE = "weave"  # Weave Net: a flat L2 overlay on UDP 6784 + weave-npc (DaemonSet kube-system/weave-net)


class AppKind(StrEnum):
    BOOKINFO = "bookinfo"
    NETPOL = "netpol"  # the model of the Kubernetes e2e netpol suite: namespaces x, y, z; pods a, b, c
    NONE = "none"


class LabSpec(BaseModel):
    """A lab request. Frozen; everything else (names, addresses) is derived from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    nodes: int = Field(default=4, ge=1, le=MAX_NODES)
    cni: CniKind = CniKind.FLANNEL
    pods_per_node: int = Field(default=1, ge=0, le=32)
    app: tuple[AppKind, ...] = (AppKind.BOOKINFO,)
    seed: int = 0
    underlay: str = "198.18.0.0/24"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("lab name must match [a-z][a-z0-9-]{0,30}")
        return value

    @field_validator("app", mode="before")
    @classmethod
    def _check_app(cls, value: object) -> object:
        """One app, a comma-separated list or a sequence; ``none`` alone means no app. Sorted, no repeats."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        kinds = sorted({AppKind(v) for v in value}, key=list(AppKind).index)
        if AppKind.NONE in kinds and len(kinds) > 1:
            raise ValueError("app 'none' cannot be combined with another app")
        return tuple(kinds) or (AppKind.NONE,)

    def has_app(self, kind: AppKind) -> bool:
        return kind in self.app

    @field_validator("underlay")
    @classmethod
    def _check_underlay(cls, value: str) -> str:
        net = ipaddress.IPv4Network(value, strict=True)
        if net.prefixlen != 24 or not net.subnet_of(UNDERLAY_SUPERNET):
            raise ValueError("underlay must be a /24 inside 198.18.0.0/15")
        return str(net)

    @property
    def underlay_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.underlay)

    @property
    def prefix(self) -> str:
        return lab_prefix(self.name)


def lab_prefix(name: str) -> str:
    """A short prefix for every kernel object of lab ``name`` (keeps interface names ≤ 15 chars).

    ``m`` + the name when it is short and simple, else ``m`` + a 6-char hash of the name.
    """
    if re.fullmatch(r"[a-z0-9]{1,6}", name):
        return f"m{name}"
    return "m" + hashlib.sha256(name.encode()).hexdigest()[:6]


def validate_spec(**kwargs: object) -> LabSpec:
    """Build a :class:`LabSpec`, turning validation errors into :class:`UsageError`."""
    try:
        return LabSpec.model_validate(kwargs)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise UsageError(f"invalid lab settings: {exc}") from exc


# ------------------------------------------------------------------------------------------------ names


def node_name(index: int) -> str:
    """Node names are ``node1``, ``node2``, ...; node1 is the control plane."""
    return f"node{index}"


def node_underlay_ip(net: ipaddress.IPv4Network, index: int) -> str:
    return str(net.network_address + NODE_HOST_OFFSET + index)


def host_underlay_ip(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address + 1)


def outside_underlay_ip(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address + OUTSIDE_HOST_OFFSET)


def node_pod_cidr(index: int) -> ipaddress.IPv4Network:
    """Node i (1-based) gets 10.244.(i-1).0/24, like flannel's first leases."""
    return ipaddress.IPv4Network((int(POD_NETWORK.network_address) + ((index - 1) << 8), 24))


def vtep_ip(pod_cidr: ipaddress.IPv4Network) -> str:
    """flannel puts the network address of the node's subnet on flannel.1 (as a /32)."""
    return str(pod_cidr.network_address)


def vtep_mac(lab: str, node: str) -> str:
    """A stable, locally administered unicast MAC for a node's VTEP."""
    digest = hashlib.sha256(f"{lab}/{node}/vtep".encode()).digest()
    octets = [0x0A, *digest[:5]]
    return ":".join(f"{o:02x}" for o in octets)


def netns_name(prefix: str, kind: str, name: str = "") -> str:
    """Namespace names: ``<prefix>-fabric``, ``<prefix>-outside``, ``<prefix>-node1``, ``<prefix>-p-...``."""
    return f"{prefix}-{kind}" if not name else f"{prefix}-{kind}-{name}"


def host_veth(prefix: str) -> str:
    name = f"{prefix}-h"
    assert len(name) <= 15
    return name
