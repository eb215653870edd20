"""The lab's per-node NetworkPolicy agent (like Calico's felix, kube-router or weave-npc).

On every node whose CNI agent enforces policy (:data:`POLICY_AGENTS`: calico-node runs felix; flannel
enforces nothing, true to life), it programs, in the node's network namespace and from
:meth:`PolicyModel.pod_rules` of each pod on the node:

- ipsets: ``hash:ip`` for the IPs of the pods a rule selects, ``hash:net`` per ipBlock (its ``except``
  entries as ``nomatch``; ``0.0.0.0/0`` as two /1 halves). Set names are content-addressed
  (``mnp-<hash>``): a set never changes after it is made, so a change is new sets plus one atomic
  ``iptables-restore``, then the stale sets are destroyed.
- filter chains: ``MNP-FORWARD`` (jumped first from ``FORWARD``: routed Calico pods, and bridged pods
  through br_netfilter) and ``MNP-INPUT`` (pods to their own node): conntrack ``ESTABLISHED,RELATED``
  accepted first (replies of allowed connections), then per local pod ``-s <ip> -j MNP-E-<hash>`` (its
  egress, on the source node) and ``-d <ip> -j MNP-I-<hash>`` (its ingress, on the destination node,
  after kube-proxy's DNAT in PREROUTING, so egress to a Service is checked on the real endpoint). A pod
  chain RETURNs on a matching rule and ends in ``MNP-REJECT`` (``tcp-reset`` for TCP,
  ``icmp-port-unreachable`` otherwise). Traffic from the node itself to its pods (kubelet probes) leaves
  through OUTPUT and is never filtered.
- SCTP ports are not programmed (the kernel has no SCTP): a rule whose ports are all SCTP allows nothing.

Applied atomically per node (``ipset restore``, then ``iptables-restore --noflush`` of the agent's chains
only), all enforcing nodes in parallel; each node's reconcile time is kept (last and median).
The caller holds the lab's lock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from loguru import logger

from migrator.lab import net, sh
from migrator.lab.state import LabState, NetpolNodeState, NodeState, PodPhase, PodState, StateStore
from migrator.policy.model import (
    CompiledRule,
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    PodRules,
    PolicyModel,
    PolicyPod,
    PortMatch,
    Protocol,
    parse_network_policy,
)

# the CNI agent (DaemonSet app) -> the policy engine it runs on its node; agents not listed enforce nothing
POLICY_AGENTS: dict[str, str] = {"calico-node": "felix", "canal": "felix", "weave-net": "weave-npc"}
TOP_FORWARD = "MNP-FORWARD"
TOP_INPUT = "MNP-INPUT"
REJECT_CHAIN = "MNP-REJECT"
TOP_CHAINS = (TOP_FORWARD, TOP_INPUT, REJECT_CHAIN)
HOOKS = (("FORWARD", TOP_FORWARD), ("INPUT", TOP_INPUT))
SET_PREFIX = "mnp-"
KEEP_TIMES = 100
RESTORE_TIMEOUT = 20.0
SCTP_CAPABILITY = "sctp"
CONNTRACK = "conntrack"
MAX_COMMENT = 250  # iptables' comment match takes at most 255 characters; a policy key can be longer


# ------------------------------------------------------------------------------------------ the model


def policy_pod(p: PodState) -> PolicyPod:
    return PolicyPod(
        namespace=p.namespace,
        name=p.name,
        labels=dict(p.labels),
        ip=p.ip,
        ports=tuple(
            ContainerPort(port=c.port, protocol=Protocol(c.protocol), name=c.name) for c in p.container_ports
        ),
        host_network=p.host_network,
    )


def live_pods(st: LabState) -> list[PodState]:
    """The pods policy applies to (and selects): with an IP, not failed."""
    return [p for p in st.pods.values() if p.ip and p.phase in (PodPhase.RUNNING, PodPhase.TERMINATING)]


def parsed_policies(st: LabState) -> list[NetworkPolicy]:
    return [parse_network_policy(ps.raw, where=f"lab policy {ps.key}") for ps in st.policies.values()]


def model(st: LabState) -> PolicyModel:
    """The policy model of the lab's current policies, namespaces and pods."""
    return PolicyModel(
        parsed_policies(st),
        [Namespace(name=n.name, labels=dict(n.labels)) for n in st.namespaces.values()],
        [policy_pod(p) for p in live_pods(st)],
    )


def node_agent(st: LabState, n: NodeState) -> str | None:
    """The policy engine on ``n``: that of its running CNI agent pod (``None``: nothing enforces there)."""
    for p in st.pods.values():
        if p.node != n.name or not p.host_network or p.phase != PodPhase.RUNNING:
            continue
        w = st.workloads.get(p.workload_key)
        if w is not None and w.kind == "DaemonSet" and w.template.app in POLICY_AGENTS:
            return POLICY_AGENTS[w.template.app]
    return None


# ------------------------------------------------------------------------------------------ rendering


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def pod_chain(direction: str, key: str) -> str:
    """``MNP-I-<hash>`` / ``MNP-E-<hash>`` for pod ``key`` (``namespace/name``)."""
    return f"MNP-{direction}-{_digest(key, 12).upper()}"


@dataclass
class IpSet:
    name: str
    kind: str  # hash:ip | hash:net
    entries: tuple[str, ...]  # "10.0.0.1" / "10.0.0.0/8" / "10.1.0.0/16 nomatch"


def ip_set(ips: Iterable[str]) -> IpSet:
    entries = tuple(sorted(set(ips), key=ipaddress.IPv4Address))
    return IpSet(SET_PREFIX + _digest("ip:" + ",".join(entries), 20), "hash:ip", entries)


def _halves(cidr: str) -> list[str]:
    """``hash:net`` takes prefixes 1..32: ``/0`` becomes its two halves."""
    net_ = ipaddress.IPv4Network(cidr, strict=False)
    if net_.prefixlen == 0:
        return [str(s) for s in net_.subnets(prefixlen_diff=1)]
    return [str(net_)]


def net_set(block: IPBlock) -> IpSet | None:
    """One ``hash:net`` set for one ipBlock (its excepts as ``nomatch``); ``None`` for an IPv6 block."""
    try:
        halves = _halves(block.cidr)
        excepts = [str(ipaddress.IPv4Network(e, strict=False)) for e in block.except_]
    except ValueError:
        return None  # IPv6: the lab is IPv4 only
    entries = tuple(halves + [f"{e} nomatch" for e in sorted(excepts)])
    return IpSet(SET_PREFIX + _digest("net:" + ",".join(entries), 20), "hash:net", entries)


@dataclass
class NodeRules:
    """What the agent programs on one node."""

    sets: dict[str, IpSet] = field(default_factory=dict)
    chains: list[str] = field(default_factory=list)  # per-pod chains
    rules: list[str] = field(default_factory=list)  # "-A ..." lines of every agent chain
    sctp_skipped: int = 0
    pods: dict[str, str] = field(default_factory=dict)  # local pod IP -> digest of its jumps and chains


def _port_matches(rule_ports: Sequence[PortMatch] | None, nr: NodeRules) -> list[str]:
    if rule_ports is None:
        return [""]
    out: list[str] = []
    for pm in rule_ports:
        proto, port, end = pm.protocol, pm.port, pm.end_port
        if proto == Protocol.SCTP:
            nr.sctp_skipped += 1
            continue
        p = str(proto).lower()
        if port is None:
            out.append(f"-p {p}")
        elif end is not None and end != port:
            out.append(f"-p {p} -m {p} --dport {port}:{end}")
        else:
            out.append(f"-p {p} -m {p} --dport {port}")
    return out


def _direction(nr: NodeRules, chain: str, rules: Sequence[CompiledRule], peer_dir: str) -> None:
    """The rules of one pod chain: RETURN on any matching rule, else reject."""
    for r in rules:
        peers = r.peers
        comment = f'-m comment --comment "{r.policy[:MAX_COMMENT]}"'
        peer_frags: list[str]
        if peers is None:
            peer_frags = [""]
        else:
            peer_frags = []
            if peers.pod_ips:
                s = ip_set(peers.pod_ips)
                nr.sets[s.name] = s
                peer_frags.append(f"-m set --match-set {s.name} {peer_dir}")
            for block in peers.ip_blocks:
                ns = net_set(block)
                if ns is not None:
                    nr.sets[ns.name] = ns
                    peer_frags.append(f"-m set --match-set {ns.name} {peer_dir}")
        for pf in peer_frags:
            for portf in _port_matches(r.ports, nr):
                parts = ["-A", chain, pf, portf, comment, "-j RETURN"]
                nr.rules.append(" ".join(x for x in parts if x))
    nr.rules.append(f"-A {chain} -j {REJECT_CHAIN}")


def render_node(pod_rules: Sequence[PodRules]) -> NodeRules:
    """The sets, chains and rules for the pods of one node (their :class:`PodRules`)."""
    nr = NodeRules()
    est = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    nr.rules += [f"-A {TOP_FORWARD} {est}", f"-A {TOP_INPUT} {est}"]
    jumps: list[str] = []
    for pr in sorted(pod_rules, key=lambda r: r.pod.key):
        ip = pr.pod.ip
        if not ip or pr.pod.host_network:
            continue
        first_jump, first_rule = len(jumps), len(nr.rules)
        if pr.egress_isolated:
            chain = pod_chain("E", pr.pod.key)
            nr.chains.append(chain)
            jumps.append(f"-A {TOP_FORWARD} -s {ip}/32 -j {chain}")
            jumps.append(f"-A {TOP_INPUT} -s {ip}/32 -j {chain}")
            _direction(nr, chain, pr.egress, "dst")
        if pr.ingress_isolated:
            chain = pod_chain("I", pr.pod.key)
            nr.chains.append(chain)
            jumps.append(f"-A {TOP_FORWARD} -d {ip}/32 -j {chain}")
            _direction(nr, chain, pr.ingress, "src")
        nr.pods[ip] = _digest("\n".join(jumps[first_jump:] + nr.rules[first_rule:]), 16)
    nr.rules = nr.rules[:2] + jumps + nr.rules[2:]
    nr.rules += [
        f"-A {REJECT_CHAIN} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {REJECT_CHAIN} -j REJECT --reject-with icmp-port-unreachable",
    ]
    return nr


def ipset_text(sets: Iterable[IpSet]) -> str:
    lines: list[str] = []
    for s in sets:
        lines.append(f"create {s.name} {s.kind} family inet -exist")
        lines += [f"add {s.name} {e} -exist" for e in s.entries]
    return "\n".join(lines) + "\n"


def iptables_text(nr: NodeRules | None, prev: NetpolNodeState) -> str:
    """``iptables-restore --noflush`` input: the agent's chains rewritten (``None``: all removed), the
    FORWARD/INPUT hooks added once (or deleted), stale pod chains deleted."""
    lines = ["*filter"]
    if nr is not None:
        stale = sorted(set(prev.chains) - set(nr.chains))
        lines += [f":{c} - [0:0]" for c in dict.fromkeys([*TOP_CHAINS, *nr.chains, *stale])]
        if not prev.hooked:
            lines += [f"-I {hook} 1 -j {top}" for hook, top in HOOKS]
        lines += nr.rules
        lines += [f"-X {c}" for c in stale]
    else:
        gone = list(dict.fromkeys([*TOP_CHAINS, *prev.chains]))
        lines += [f":{c} - [0:0]" for c in gone]
        if prev.hooked:
            lines += [f"-D {hook} -j {top}" for hook, top in HOOKS]
        lines += [f"-X {c}" for c in gone]
    lines += ["COMMIT", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ applying


def _apply(n: NodeState, nr: NodeRules | None) -> float:
    """Program ``nr`` on ``n`` (``None``: remove everything the agent made). Returns milliseconds."""
    t0 = time.monotonic()
    prev = n.netpol
    if nr is not None and not prev.hooked:  # first programming: hooks left by an interrupted run count
        fwd = sh.run(
            net.exec_argv(n.netns, ["iptables", "-S", "FORWARD"]), check=False, timeout=RESTORE_TIMEOUT
        )
        prev.hooked = f"-j {TOP_FORWARD}" in fwd.stdout
        # REJECT answers with ICMP; the kernel's default rate limit (1 per second per peer after a short
        # burst) turns most UDP denies of a probe matrix into timeouts, 5x slower to observe. Per netns.
        sh.run(net.exec_argv(n.netns, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]), check=False)
    sets = list(nr.sets.values()) if nr else []
    if sets:
        sh.run(net.exec_argv(n.netns, ["ipset", "restore"]), input=ipset_text(sets), timeout=RESTORE_TIMEOUT)
    if nr is not None or prev.hooked or prev.chains:
        text = iptables_text(nr, prev)
        sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=text, timeout=RESTORE_TIMEOUT)
    _forget_udp_flows(n, prev.pods, nr.pods if nr else {})
    stale = sorted(set(prev.sets) - {s.name for s in sets})
    if stale:
        sh.run(
            net.exec_argv(n.netns, ["ipset", "restore"]),
            input="\n".join(f"destroy {s}" for s in stale) + "\n",
            timeout=RESTORE_TIMEOUT,
        )
    prev.hooked = nr is not None
    prev.chains = list(nr.chains) if nr else []
    prev.sets = sorted(s.name for s in sets)
    prev.pods = dict(nr.pods) if nr else {}
    return (time.monotonic() - t0) * 1000.0


def _forget_udp_flows(n: NodeState, before: Mapping[str, str], after: Mapping[str, str]) -> None:
    """Delete the node's UDP conntrack entries of every local pod whose rules changed.

    The chains accept ``ESTABLISHED`` first, so a UDP flow seen before a policy change (the same
    addresses and ports within the 30-120 s UDP timeouts) would otherwise outlive a policy that now
    denies it: a new datagram that happens to reuse a source port rides the old entry. TCP needs no
    such care (a new connection starts with a SYN, which conntrack tracks as new). As kube-proxy does for
    UDP endpoints, the entries are deleted by the pod's address as source, destination and reply source
    (traffic that reached it through a Service ClusterIP).
    """
    changed = sorted(ip for ip in set(before) | set(after) if before.get(ip) != after.get(ip))
    if not changed or shutil.which(CONNTRACK) is None:
        if changed:
            logger.warning("netpol: no {}; UDP flows of changed pods on {} are kept", CONNTRACK, n.name)
        return
    for ip in changed:
        for match in ("--orig-src", "--orig-dst", "--reply-src"):
            # exit 1 with "0 flow entries have been deleted" when there is nothing to delete
            sh.run(
                net.exec_argv(n.netns, [CONNTRACK, "-D", "-p", "udp", match, ip]),
                check=False,
                timeout=RESTORE_TIMEOUT,
            )


def reconcile(store: StateStore, st: LabState) -> dict[str, float]:
    """Program every node from the current policies, pods and labels (enforcing nodes in parallel; the
    others are cleared of what the agent programmed there before). Returns milliseconds per node
    programmed. A lab without policies and without programmed nodes costs nothing."""
    for n in st.nodes.values():
        n.netpol.agent = node_agent(st, n)
    todo = [
        n for n in st.nodes.values() if (n.netpol.agent and st.policies) or n.netpol.hooked or n.netpol.sets
    ]
    if not todo:
        return {}
    t0 = time.monotonic()
    m = model(st) if st.policies else None
    pods = live_pods(st)

    def one(n: NodeState) -> float:
        nr: NodeRules | None = None
        if m is not None and n.netpol.agent:
            local = [p for p in pods if p.node == n.name and not p.host_network]
            nr = render_node([m.pod_rules(policy_pod(p)) for p in local])
        return _apply(n, nr)

    times = sh.parallel(one, todo)
    out: dict[str, float] = {}
    for n, ms in zip(todo, times, strict=True):
        n.netpol.times_ms = [*n.netpol.times_ms, round(ms, 2)][-KEEP_TIMES:]
        n.netpol.generation += 1
        out[n.name] = ms
    store.save(st)
    logger.debug(
        "netpol reconcile: {} nodes in {:.0f} ms ({})",
        len(todo),
        (time.monotonic() - t0) * 1000,
        ", ".join(f"{k} {v:.0f} ms" for k, v in out.items()),
    )
    return out


def node_summary(n: NodeState) -> dict[str, object]:
    """``lab status``: the policy agent of a node and its reconcile times."""
    t = n.netpol.times_ms
    return {
        "agent": n.netpol.agent,
        "enforcing": n.netpol.agent is not None,
        "chains": len(n.netpol.chains),
        "ipsets": len(n.netpol.sets),
        "reconciles": n.netpol.generation,
        "last_ms": t[-1] if t else None,
        "median_ms": round(statistics.median(t), 2) if t else None,
    }
