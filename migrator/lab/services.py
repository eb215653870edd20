"""kube-proxy, iptables mode: the rules each node gets for the lab's Services (pure generation here).

Chains and rules follow kube-proxy's layout: ``KUBE-SERVICES`` (from PREROUTING and OUTPUT) jumps per
service port to ``KUBE-SVC-<hash>``, which picks an endpoint chain ``KUBE-SEP-<hash>`` with
``-m statistic --mode random --probability 1/(n-i)``; each SEP DNATs to ``podIP:targetPort``. NodePorts go
through ``KUBE-NODEPORTS`` and ``KUBE-EXT-<hash>`` (masquerade, then the SVC chain). ``KUBE-POSTROUTING``
masquerades packets marked ``0x4000``. Services without endpoints are REJECTed in the filter table.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

MASQ_MARK = "0x4000"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePortRules:
    """One service port with its endpoints, the unit kube-proxy programs."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP | UDP
    cluster_ip: str
    port: int
    node_port: int | None
    endpoints: tuple[Endpoint, ...]

    @property
    def svc_port_name(self) -> str:
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: ServicePortRules) -> str:
    return "KUBE-SVC-" + _hash(sp.svc_port_name + sp.protocol.lower())


def ext_chain(sp: ServicePortRules) -> str:
    return "KUBE-EXT-" + _hash(sp.svc_port_name + sp.protocol.lower())


def sep_chain(sp: ServicePortRules, ep: Endpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.svc_port_name + sp.protocol.lower() + f"{ep.ip}:{ep.port}")


def probability(i: int, n: int) -> str:
    """kube-proxy's probability for endpoint ``i`` of ``n`` (the last one is unconditional)."""
    return f"{1.0 / (n - i):.11f}"


_NEW = "-m conntrack --ctstate NEW"
_PORTALS = '-m comment --comment "kubernetes service portals"'
_EXT_PORTALS = '-m comment --comment "kubernetes externally-visible service portals"'
_REJECT = "-j REJECT --reject-with icmp-port-unreachable"

BOOTSTRAP = "\n".join(
    [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "COMMIT",
        "*filter",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-FORWARD - [0:0]",
        f"-A INPUT {_NEW} {_EXT_PORTALS} -j KUBE-EXTERNAL-SERVICES",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f"-A FORWARD {_NEW} {_PORTALS} -j KUBE-SERVICES",
        f"-A FORWARD {_NEW} {_EXT_PORTALS} -j KUBE-EXTERNAL-SERVICES",
        f"-A OUTPUT {_NEW} {_PORTALS} -j KUBE-SERVICES",
        "COMMIT",
        "",
    ]
)


@dataclass(frozen=True)
class SyncResult:
    text: str  # for iptables-restore --noflush
    chains: tuple[str, ...]  # the per-service chains now in use (KUBE-SVC/EXT/SEP)


def render(ports: Sequence[ServicePortRules], cluster_cidr: str, stale: Sequence[str] = ()) -> SyncResult:
    """The full kube-proxy sync for one node: rewrites every KUBE-* chain, deletes ``stale`` ones."""
    nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    nat_rules: list[str] = [
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    filter_rules: list[str] = [
        f"-A KUBE-FORWARD -m mark --mark {MASQ_MARK}/{MASQ_MARK} "
        '-m comment --comment "kubernetes forwarding rules" -j ACCEPT',
        "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED "
        '-m comment --comment "kubernetes forwarding conntrack rule" -j ACCEPT',
    ]
    svc_chains: list[str] = []
    nodeport_rules: list[str] = []
    for sp in sorted(ports, key=lambda s: (s.svc_port_name, s.protocol)):
        proto = sp.protocol.lower()
        name = sp.svc_port_name
        match = f"-p {proto} -m {proto}"
        if not sp.endpoints:
            filter_rules.append(
                f"-A KUBE-SERVICES -d {sp.cluster_ip}/32 {match} --dport {sp.port} "
                f'-m comment --comment "{name} has no endpoints" {_REJECT}'
            )
            if sp.node_port:
                filter_rules.append(
                    f"-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL {match} --dport {sp.node_port} "
                    f'-m comment --comment "{name} has no endpoints" {_REJECT}'
                )
            continue
        svc = svc_chain(sp)
        svc_chains.append(svc)
        nat_rules.append(
            f"-A KUBE-SERVICES -d {sp.cluster_ip}/32 {match} --dport {sp.port} "
            f'-m comment --comment "{name} cluster IP" -j {svc}'
        )
        nat_rules.append(
            f"-A {svc} ! -s {cluster_cidr} -d {sp.cluster_ip}/32 {match} --dport {sp.port} "
            f'-m comment --comment "{name} cluster IP" -j KUBE-MARK-MASQ'
        )
        if sp.node_port:
            ext = ext_chain(sp)
            svc_chains.append(ext)
            nodeport_rules.append(
                f'-A KUBE-NODEPORTS {match} --dport {sp.node_port} -m comment --comment "{name}" -j {ext}'
            )
            nat_rules.append(
                f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                "-j KUBE-MARK-MASQ"
            )
            nat_rules.append(f"-A {ext} -j {svc}")
        eps = sorted(sp.endpoints, key=lambda e: (e.ip, e.port))
        n = len(eps)
        for i, ep in enumerate(eps):
            sep = sep_chain(sp, ep)
            svc_chains.append(sep)
            target = f'-m comment --comment "{name} -> {ep.ip}:{ep.port}"'
            if i < n - 1:
                nat_rules.append(
                    f"-A {svc} {target} -m statistic --mode random --probability {probability(i, n)} -j {sep}"
                )
            else:
                nat_rules.append(f"-A {svc} {target} -j {sep}")
            nat_rules.append(f'-A {sep} -s {ep.ip}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            nat_rules.append(
                f'-A {sep} {match} -m comment --comment "{name}" -j DNAT --to-destination {ep.ip}:{ep.port}'
            )
    nat_rules += nodeport_rules
    nat_rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
        'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    current = set(svc_chains)
    gone = sorted(set(stale) - current)
    lines = ["*nat"]
    lines += [f":{c} - [0:0]" for c in nat_chains + svc_chains + gone]
    lines += nat_rules
    lines += [f"-X {c}" for c in gone]
    lines += ["COMMIT", "*filter"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD")]
    lines += filter_rules
    lines += ["COMMIT", ""]
    return SyncResult("\n".join(lines), tuple(svc_chains))
