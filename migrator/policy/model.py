"""The NetworkPolicy vocabulary and the policy model (the contract).

The vocabulary (frozen dataclasses) lives in :mod:`migrator.policy.objects`, the parsers in
:mod:`migrator.policy.parse`; both are re-exported here. :class:`PolicyModel` answers verdicts.

Semantics (networking.k8s.io/v1):

- a pod is *selected* by a policy when it is in the policy's namespace and matches ``podSelector``;
  host-network pods and pods without an IP are never selected (by a policy nor by a peer's selectors);
- a side (ingress of the destination, egress of the source) is isolated when some policy with that
  ``policyType`` selects the pod; an isolated side allows what the union of its rules allows; a side that
  is not isolated allows everything; traffic is allowed when both sides allow it;
- a peer with only ``podSelector``: those pods of the policy's namespace; only ``namespaceSelector``: every
  pod of those namespaces; both: those pods of those namespaces; ``ipBlock``: every address in ``cidr``
  and in none of ``except`` (pod IPs included, also of host-network pods); a rule without peers: any peer;
- ports: a number (with ``endPort``: the range), a named container port (resolved against the destination
  pod, same protocol: the selected pod on ingress, the peer pod on egress, so an egress ``ipBlock`` peer
  never matches a named port), or no port (every port of the protocol); a rule without ports: every port;
- an address that is no pod's matches only ``ipBlock`` peers (and rules without peers);
- loopback (a pod to itself) is evaluated like any other pair; the e2e suite leaves it out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from migrator.policy.objects import (
    NAMESPACE_NAME_LABEL,
    CompiledRule,
    ContainerPort,
    Decision,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Operator,
    Peer,
    PeerMatch,
    PodRules,
    PolicyError,
    PolicyPod,
    PolicyPort,
    PolicyType,
    PortMatch,
    Protocol,
    Requirement,
    Rule,
    Verdict,
)
from migrator.policy.parse import parse_labels, parse_namespace, parse_network_policy, parse_selector

__all__ = [
    "NAMESPACE_NAME_LABEL",
    "CompiledRule",
    "ContainerPort",
    "Decision",
    "IPBlock",
    "LabelSelector",
    "Namespace",
    "NetworkPolicy",
    "Operator",
    "Peer",
    "PeerMatch",
    "PodRules",
    "PolicyError",
    "PolicyMatrix",
    "PolicyModel",
    "PolicyPod",
    "PolicyPort",
    "PolicyType",
    "PortMatch",
    "Protocol",
    "Requirement",
    "Rule",
    "Verdict",
    "iter_bits",
    "parse_labels",
    "parse_namespace",
    "parse_network_policy",
    "parse_selector",
]

_Net = tuple[int, int, int]  # (IP version, network as int, mask as int)


def iter_bits(bits: int) -> Iterator[int]:
    """The indices of the set bits of ``bits``, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def _net(cidr: str) -> _Net:
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version, int(net.network_address), int(net.netmask)


def _ip(address: str) -> tuple[int, int] | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.version, int(ip)


@dataclass(frozen=True)
class _Block:
    """An ipBlock as integers, for fast membership tests."""

    cidr: _Net
    excepts: tuple[_Net, ...]

    def contains(self, ip: tuple[int, int]) -> bool:
        version, value = ip
        cv, cnet, cmask = self.cidr
        if version != cv or value & cmask != cnet:
            return False
        return not any(value & emask == enet for ev, enet, emask in self.excepts if ev == version)


@dataclass(frozen=True)
class _Rule:
    """One rule resolved against the pods: peer bitsets over pod indices."""

    rule: Rule
    any_peer: bool
    sel_bits: int  # eligible pods matched by the selector peers
    ip_bits: int  # pods (any with an IP) inside an ipBlock peer
    blocks: tuple[_Block, ...]

    def peer_bits(self, all_bits: int) -> int:
        return all_bits if self.any_peer else self.sel_bits | self.ip_bits

    def named_peer_bits(self, eligible: int) -> int:
        """The peers a named port can resolve against (pods only)."""
        return eligible if self.any_peer else self.sel_bits

    def matches_address(self, ip: tuple[int, int] | None) -> bool:
        """A peer that is no pod: only ipBlocks (and "any peer") match it."""
        if self.any_peer:
            return True
        return ip is not None and any(b.contains(ip) for b in self.blocks)


@dataclass(frozen=True)
class _Policy:
    policy: NetworkPolicy
    selected: int  # bitset of the selected pods
    ingress: tuple[_Rule, ...]
    egress: tuple[_Rule, ...]


@dataclass(frozen=True)
class PolicyMatrix:
    """The expected verdicts of every ordered pod pair for one (port, protocol).

    ``rows[i]`` has bit ``j`` set when pod ``i`` may reach pod ``j``; ``egress_rows``/``ingress_rows``
    are the same for each side alone. Pods are in the model's order (:attr:`PolicyModel.pods`).
    """

    model: PolicyModel
    port: int
    protocol: Protocol
    rows: tuple[int, ...]
    egress_rows: tuple[int, ...]
    ingress_rows: tuple[int, ...]

    def allowed(self, src: PolicyPod | str, dst: PolicyPod | str) -> bool:
        """The verdict of one cell (pods or ``ns/name`` keys)."""
        i, j = self.model.index(src), self.model.index(dst)
        return bool(self.rows[i] >> j & 1)

    def verdict(self, src: PolicyPod | str, dst: PolicyPod | str) -> Verdict:
        return Verdict.ALLOW if self.allowed(src, dst) else Verdict.DENY

    def decision(self, src: PolicyPod | str, dst: PolicyPod | str) -> Decision:
        """The cell with its deciding policies (computed by :meth:`PolicyModel.decide`)."""
        return self.model.decide(self.model.pod(src), self.model.pod(dst), self.port, self.protocol)

    def cells(self) -> Iterator[tuple[PolicyPod, PolicyPod, Verdict]]:
        """Every ordered pair, loopback included, row by row."""
        pods = self.model.pods
        for i, row in enumerate(self.rows):
            for j, dst in enumerate(pods):
                yield pods[i], dst, Verdict.ALLOW if row >> j & 1 else Verdict.DENY


@dataclass
class _Side:
    """One side's evaluation for :meth:`PolicyModel.decide`."""

    isolating: list[str] = field(default_factory=list)
    allowing: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return Verdict.ALLOW if not self.isolating or self.allowing else Verdict.DENY


class PolicyModel:
    """The expected verdicts for a set of policies, namespaces and pods.

    Built once (selectors evaluated once per distinct selector, every policy's selected pods and every
    rule's peers as int bitsets over pod indices); :meth:`decide` is then cheap, :meth:`matrix` is the
    fast whole-matrix form. Pods are matched by key; an IP that is no pod's (``dst``/``src`` given as an
    address string) is matched against ``ipBlock`` peers only. Pods of a namespace missing from
    ``namespaces`` get a namespace with only the ``kubernetes.io/metadata.name`` label.
    """

    def __init__(
        self,
        policies: Iterable[NetworkPolicy],
        namespaces: Iterable[Namespace],
        pods: Iterable[PolicyPod],
    ) -> None:
        self.pods: tuple[PolicyPod, ...] = tuple(pods)
        self.policies: tuple[NetworkPolicy, ...] = tuple(policies)
        self._index = {pod.key: i for i, pod in enumerate(self.pods)}
        if len(self._index) != len(self.pods):
            raise PolicyError("pods: a pod key (ns/name) is listed twice")
        if len({p.key for p in self.policies}) != len(self.policies):
            raise PolicyError("policies: a NetworkPolicy key (ns/name) is listed twice")
        self.all_bits = (1 << len(self.pods)) - 1
        self._ips: list[tuple[int, int] | None] = [_ip(p.ip) if p.ip else None for p in self.pods]
        self._eligible_list = [
            not p.host_network and self._ips[i] is not None for i, p in enumerate(self.pods)
        ]
        self.eligible = sum(1 << i for i, ok in enumerate(self._eligible_list) if ok)
        self._by_ip: dict[tuple[int, int], int] = {}
        for i, ip in enumerate(self._ips):
            if ip is not None and self._eligible_list[i]:
                self._by_ip.setdefault(ip, i)
        self._namespaces = self._namespace_labels(namespaces)
        self._ns_bits: dict[str, int] = {}
        for i, pod in enumerate(self.pods):
            if self._eligible_list[i]:
                self._ns_bits[pod.namespace] = self._ns_bits.get(pod.namespace, 0) | 1 << i
        self._pod_sel_cache: dict[object, int] = {}
        self._ns_sel_cache: dict[object, int] = {}
        self._block_cache: dict[IPBlock, tuple[_Block, int]] = {}
        self._named = self._named_ports()
        self._compiled = tuple(self._compile(p) for p in self.policies)
        self._ingress_of: dict[int, list[_Policy]] = {}
        self._egress_of: dict[int, list[_Policy]] = {}
        for compiled in self._compiled:
            for i in iter_bits(compiled.selected):
                if PolicyType.INGRESS in compiled.policy.policy_types:
                    self._ingress_of.setdefault(i, []).append(compiled)
                if PolicyType.EGRESS in compiled.policy.policy_types:
                    self._egress_of.setdefault(i, []).append(compiled)

    # ------------------------------------------------------------------------------------------ building

    def _named_ports(self) -> dict[tuple[str, Protocol], dict[int, int]]:
        """(name, protocol) -> number -> the eligible pods declaring that named container port."""
        named: dict[tuple[str, Protocol], dict[int, int]] = {}
        for i, pod in enumerate(self.pods):
            if not self._eligible_list[i]:
                continue
            for cp in pod.ports:
                if cp.name:
                    by_num = named.setdefault((cp.name, cp.protocol), {})
                    by_num[cp.port] = by_num.get(cp.port, 0) | 1 << i
        return named

    def _namespace_labels(self, namespaces: Iterable[Namespace]) -> dict[str, Mapping[str, str]]:
        result: dict[str, Mapping[str, str]] = {}
        for ns in namespaces:
            labels = dict(ns.labels)
            labels[NAMESPACE_NAME_LABEL] = ns.name
            result[ns.name] = labels
        for pod in self.pods:
            result.setdefault(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace})
        return result

    def _pods_matching(self, selector: LabelSelector) -> int:
        key = selector.cache_key
        bits = self._pod_sel_cache.get(key)
        if bits is None:
            bits = 0
            for i, pod in enumerate(self.pods):
                if self._eligible_list[i] and selector.matches(pod.labels):
                    bits |= 1 << i
            self._pod_sel_cache[key] = bits
        return bits

    def _pods_in_namespaces(self, selector: LabelSelector) -> int:
        key = selector.cache_key
        bits = self._ns_sel_cache.get(key)
        if bits is None:
            bits = 0
            for name, labels in self._namespaces.items():
                if selector.matches(labels):
                    bits |= self._ns_bits.get(name, 0)
            self._ns_sel_cache[key] = bits
        return bits

    def _block(self, block: IPBlock) -> tuple[_Block, int]:
        cached = self._block_cache.get(block)
        if cached is None:
            compiled = _Block(_net(block.cidr), tuple(_net(e) for e in block.except_))
            bits = 0
            for i, ip in enumerate(self._ips):
                if ip is not None and compiled.contains(ip):
                    bits |= 1 << i
            cached = (compiled, bits)
            self._block_cache[block] = cached
        return cached

    def _peer_bits(self, peer: Peer, namespace: str) -> int:
        if peer.namespace_selector is not None:
            bits = self._pods_in_namespaces(peer.namespace_selector)
        else:
            bits = self._ns_bits.get(namespace, 0)
        if peer.pod_selector is not None:
            bits &= self._pods_matching(peer.pod_selector)
        return bits

    def _rule(self, rule: Rule, namespace: str) -> _Rule:
        sel_bits = ip_bits = 0
        blocks: list[_Block] = []
        for peer in rule.peers:
            if peer.ip_block is not None:
                block, bits = self._block(peer.ip_block)
                blocks.append(block)
                ip_bits |= bits
            else:
                sel_bits |= self._peer_bits(peer, namespace)
        return _Rule(rule, not rule.peers, sel_bits, ip_bits, tuple(blocks))

    def _compile(self, policy: NetworkPolicy) -> _Policy:
        selected = self._ns_bits.get(policy.namespace, 0) & self._pods_matching(policy.pod_selector)
        ingress = tuple(self._rule(r, policy.namespace) for r in policy.ingress)
        egress = tuple(self._rule(r, policy.namespace) for r in policy.egress)
        return _Policy(policy, selected, ingress, egress)

    # ------------------------------------------------------------------------------------------- lookups

    def index(self, pod: PolicyPod | str) -> int:
        """The index of a pod (or of its ``ns/name`` key) in :attr:`pods`."""
        key = pod if isinstance(pod, str) else pod.key
        try:
            return self._index[key]
        except KeyError:
            raise PolicyError(f"pod {key}: not in the model") from None

    def pod(self, pod: PolicyPod | str) -> PolicyPod:
        return self.pods[self.index(pod)]

    def pod_at(self, address: str) -> PolicyPod | None:
        """The pod with this IP address (``None``: none, or not an address)."""
        ip = _ip(address)
        i = self._by_ip.get(ip) if ip is not None else None
        return None if i is None else self.pods[i]

    def _resolve(self, end: PolicyPod | str) -> tuple[int | None, tuple[int, int] | None]:
        """(pod index or None, IP) of a pod or an address string (an address of a pod is that pod)."""
        if isinstance(end, PolicyPod):
            i = self.index(end)
            return i, self._ips[i]
        ip = _ip(end)
        if ip is None:
            raise PolicyError(f"{end!r}: neither a pod nor an IP address")
        return self._by_ip.get(ip), ip

    def ingress_policies(self, pod: PolicyPod) -> tuple[NetworkPolicy, ...]:
        """The policies that select ``pod`` for ingress (it is ingress-isolated iff this is non-empty)."""
        return tuple(cp.policy for cp in self._ingress_of.get(self.index(pod), ()))

    def egress_policies(self, pod: PolicyPod) -> tuple[NetworkPolicy, ...]:
        return tuple(cp.policy for cp in self._egress_of.get(self.index(pod), ()))

    # ------------------------------------------------------------------------------------------ verdicts

    def _named_port(self, name: str, protocol: Protocol, j: int) -> int | None:
        """The number of ``j``'s container port ``name`` with ``protocol`` (None: it declares none)."""
        for number, bits in self._named.get((name, protocol), {}).items():
            if bits >> j & 1:
                return number
        return None

    @staticmethod
    def _numeric_match(pp: PolicyPort, port: int, protocol: Protocol) -> bool:
        """A numeric or omitted port of a policy port (not a named one) matches (port, protocol)."""
        if pp.protocol != protocol:
            return False
        if pp.port is None:
            return True
        if isinstance(pp.port, str):
            return False  # a named port is resolved against a pod, never here
        return pp.port <= port <= (pp.end_port if pp.end_port is not None else pp.port)

    def _port_matches_at(self, pp: PolicyPort, port: int, protocol: Protocol, j: int | None) -> bool:
        """``pp`` matches (port, protocol) at destination ``j`` (None: an address, no named ports)."""
        if isinstance(pp.port, str):
            return (
                pp.protocol == protocol and j is not None and self._named_port(pp.port, protocol, j) == port
            )
        return self._numeric_match(pp, port, protocol)

    def _ingress_rule_allows(
        self, r: _Rule, src: tuple[int | None, tuple[int, int] | None], j: int, port: int, protocol: Protocol
    ) -> bool:
        if r.rule.ports and not any(self._port_matches_at(pp, port, protocol, j) for pp in r.rule.ports):
            return False
        i, src_ip = src
        if i is not None:
            return bool(r.peer_bits(self.all_bits) >> i & 1)
        return r.matches_address(src_ip)

    def _egress_rule_allows(
        self, r: _Rule, j: int | None, dst_ip: tuple[int, int] | None, port: int, protocol: Protocol
    ) -> bool:
        peer_ok = bool(r.peer_bits(self.all_bits) >> j & 1) if j is not None else r.matches_address(dst_ip)
        if not r.rule.ports:
            return peer_ok
        for pp in r.rule.ports:
            if isinstance(pp.port, str):
                if (
                    j is not None
                    and pp.protocol == protocol
                    and r.named_peer_bits(self.eligible) >> j & 1
                    and self._named_port(pp.port, protocol, j) == port
                ):
                    return True
            elif peer_ok and self._numeric_match(pp, port, protocol):
                return True
        return False

    def decide(self, src: PolicyPod | str, dst: PolicyPod | str, port: int, protocol: Protocol) -> Decision:
        source = self._resolve(src)
        i = source[0]
        j, dst_ip = self._resolve(dst)
        ingress = _Side()
        if j is not None:
            for cp in self._ingress_of.get(j, ()):
                ingress.isolating.append(cp.policy.key)
                if any(self._ingress_rule_allows(r, source, j, port, protocol) for r in cp.ingress):
                    ingress.allowing.append(cp.policy.key)
        egress = _Side()
        if i is not None:
            for cp in self._egress_of.get(i, ()):
                egress.isolating.append(cp.policy.key)
                if any(self._egress_rule_allows(r, j, dst_ip, port, protocol) for r in cp.egress):
                    egress.allowing.append(cp.policy.key)
        verdict = (
            Verdict.ALLOW
            if ingress.verdict is Verdict.ALLOW and egress.verdict is Verdict.ALLOW
            else Verdict.DENY
        )
        if verdict is Verdict.ALLOW:
            keys = {*ingress.allowing, *egress.allowing}
        else:
            keys = {k for side in (ingress, egress) if side.verdict is Verdict.DENY for k in side.isolating}
        return Decision(verdict, ingress.verdict, egress.verdict, tuple(sorted(keys)))

    # ---------------------------------------------------------------------------------------- the matrix

    def _dst_ports_bits(self, r: _Rule, port: int, protocol: Protocol) -> int:
        """Ingress: the destination pods at which ``r``'s ports match (port, protocol)."""
        if not r.rule.ports:
            return self.all_bits
        bits = 0
        for pp in r.rule.ports:
            if isinstance(pp.port, str):
                if pp.protocol == protocol:
                    bits |= self._named.get((pp.port, protocol), {}).get(port, 0)
            elif self._numeric_match(pp, port, protocol):
                return self.all_bits
        return bits

    def _egress_dst_bits(self, r: _Rule, port: int, protocol: Protocol) -> int:
        """Egress: the destination pods ``r`` allows on (port, protocol)."""
        peers = r.peer_bits(self.all_bits)
        if not r.rule.ports:
            return peers
        bits = 0
        for pp in r.rule.ports:
            if isinstance(pp.port, str):
                if pp.protocol == protocol:
                    named = self._named.get((pp.port, protocol), {}).get(port, 0)
                    bits |= named & r.named_peer_bits(self.eligible)
            elif self._numeric_match(pp, port, protocol):
                bits |= peers
        return bits

    def _egress_rows(self, port: int, protocol: Protocol) -> list[int]:
        """Per source, the destinations its egress side allows on (port, protocol)."""
        isolated = 0
        by_selected: dict[int, int] = {}  # policies selecting the same pods share one pass
        for cp in self._compiled:
            if PolicyType.EGRESS not in cp.policy.policy_types or not cp.selected:
                continue
            isolated |= cp.selected
            allowed = 0
            for r in cp.egress:
                allowed |= self._egress_dst_bits(r, port, protocol)
            if allowed:
                by_selected[cp.selected] = by_selected.get(cp.selected, 0) | allowed
        rows = [0 if isolated >> i & 1 else self.all_bits for i in range(len(self.pods))]
        for selected, allowed in by_selected.items():
            for i in iter_bits(selected):
                rows[i] |= allowed
        return rows

    def _ingress_rows(self, port: int, protocol: Protocol) -> list[int]:
        """Per source, the destinations whose ingress side allows it on (port, protocol)."""
        isolated = 0
        by_sources: dict[int, int] = {}  # rules with the same peers share one pass
        for cp in self._compiled:
            if PolicyType.INGRESS not in cp.policy.policy_types or not cp.selected:
                continue
            isolated |= cp.selected
            for r in cp.ingress:
                targets = cp.selected & self._dst_ports_bits(r, port, protocol)
                sources = r.peer_bits(self.all_bits)
                if targets and sources:
                    by_sources[sources] = by_sources.get(sources, 0) | targets
        from_anyone = self.all_bits & ~isolated
        from_anyone |= by_sources.pop(self.all_bits, 0)
        rows = [from_anyone] * len(self.pods)
        for sources, targets in by_sources.items():
            for i in iter_bits(sources):
                rows[i] |= targets
        return rows

    def matrix(self, port: int, protocol: Protocol) -> PolicyMatrix:
        """Every ordered pod pair on (port, protocol) at once, with bitsets (see :class:`PolicyMatrix`)."""
        egress_rows = self._egress_rows(port, protocol)
        ingress_rows = self._ingress_rows(port, protocol)
        rows = tuple(e & g for e, g in zip(egress_rows, ingress_rows, strict=True))
        return PolicyMatrix(self, port, protocol, rows, tuple(egress_rows), tuple(ingress_rows))

    # ------------------------------------------------------------------------------------ enforcer rules

    def _pod_ips(self, bits: int) -> frozenset[str]:
        return frozenset(ip for i in iter_bits(bits) if (ip := self.pods[i].ip))

    def _peer_match(self, r: _Rule) -> PeerMatch | None:
        if r.any_peer:
            return None
        blocks = tuple(p.ip_block for p in r.rule.peers if p.ip_block is not None)
        return PeerMatch(pod_ips=self._pod_ips(r.sel_bits), ip_blocks=blocks)

    def _ingress_compiled(self, key: str, r: _Rule, pod: PolicyPod) -> CompiledRule | None:
        if not r.rule.ports:
            return CompiledRule(key, self._peer_match(r), None)
        ports: list[PortMatch] = []
        for pp in r.rule.ports:
            if isinstance(pp.port, str):
                number = next(
                    (c.port for c in pod.ports if c.name == pp.port and c.protocol == pp.protocol), None
                )
                if number is not None:
                    ports.append(PortMatch(pp.protocol, number))
            else:
                ports.append(PortMatch(pp.protocol, pp.port, pp.end_port))
        if not ports:
            return None  # no port of the rule exists on this pod: it matches nothing
        return CompiledRule(key, self._peer_match(r), tuple(dict.fromkeys(ports)))

    def _egress_compiled(self, key: str, r: _Rule) -> list[CompiledRule]:
        if not r.rule.ports:
            return [CompiledRule(key, self._peer_match(r), None)]
        out: list[CompiledRule] = []
        numeric = [
            PortMatch(pp.protocol, pp.port, pp.end_port)
            for pp in r.rule.ports
            if not isinstance(pp.port, str)
        ]
        if numeric:
            out.append(CompiledRule(key, self._peer_match(r), tuple(dict.fromkeys(numeric))))
        expanded: dict[tuple[Protocol, int], int] = {}
        for pp in r.rule.ports:
            if not isinstance(pp.port, str):
                continue
            for number, bits in self._named.get((pp.port, pp.protocol), {}).items():
                narrowed = bits & r.named_peer_bits(self.eligible)
                if narrowed:
                    expanded[(pp.protocol, number)] = expanded.get((pp.protocol, number), 0) | narrowed
        for (protocol, number), bits in sorted(expanded.items()):
            out.append(
                CompiledRule(key, PeerMatch(pod_ips=self._pod_ips(bits)), (PortMatch(protocol, number),))
            )
        return out

    def pod_rules(self, pod: PolicyPod) -> PodRules:
        """The compiled rules of ``pod`` (what the lab's policy agent turns into chains and ipsets).

        A compiled ingress rule whose ports (all named) the pod does not declare is left out (it matches
        nothing); the pod stays isolated all the same.
        """
        i = self.index(pod)
        pod = self.pods[i]
        ingress: list[CompiledRule] = []
        for cp in self._ingress_of.get(i, ()):
            for r in cp.ingress:
                compiled = self._ingress_compiled(cp.policy.key, r, pod)
                if compiled is not None:
                    ingress.append(compiled)
        egress: list[CompiledRule] = []
        for cp in self._egress_of.get(i, ()):
            for r in cp.egress:
                egress.extend(self._egress_compiled(cp.policy.key, r))
        return PodRules(
            pod=pod,
            ingress_isolated=i in self._ingress_of,
            egress_isolated=i in self._egress_of,
            ingress=tuple(ingress),
            egress=tuple(egress),
        )
