"""The lab's per-node NetworkPolicy agent (like Calico's felix, kube-router or weave-npc).

On every node whose CNI agent enforces policy (:data:`POLICY_AGENTS`: calico-node and canal run felix,
weave-net runs weave-npc; flannel enforces nothing, true to life), it programs, in the node's network
namespace and from :meth:`PolicyModel.pod_rules` of each pod on the node, under the names of the node's
engine (:data:`ENGINES`: felix's ``MNP-*`` chains and ``mnp-*`` ipsets, weave-npc's ``WEAVE-NPC*`` chains and
``weave-*`` ipsets, so that what a CNI leaves on a node includes its own policy objects only):

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

One engine per node: a node running two CNI agents (weave-net and calico-node during a Weave Net -> Calico
migration) enforces with the engine of the CNI its kubelet uses (the first file of its ``/etc/cni/net.d``:
``weave`` -> weave-npc, ``calico`` -> felix; :data:`CNI_ENGINES`), else (no config, or the migration's
blocking one) with the engine already programmed there. When a node's engine changes, the old engine's
hooks, chains and sets are removed before the new engine programs its own (:class:`NetpolNodeState`
``engine`` records whose objects are on the node; state files from before it had none are felix's).
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
from pathlib import Path

from loguru import logger

from migrator.lab import cni, net, sh
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
# the kubelet's CNI (migrator.lab.cni.kubelet_cni) -> the engine of a node running several CNI agents
CNI_ENGINES: dict[str, str] = {"calico": "felix", "canal": "felix", "weave": "weave-npc"}


@dataclass(frozen=True)
class Engine:
    """A policy engine's names on a node: its top chains (``forward`` and ``input``, jumped first from
    FORWARD and INPUT), its reject chain, its pod chains' prefix (``<prefix>-I-<hash>``) and its ipsets'
    prefix."""

    name: str
    forward: str
    input: str
    reject: str
    pod_prefix: str
    set_prefix: str

    @property
    def top_chains(self) -> tuple[str, str, str]:
        return (self.forward, self.input, self.reject)

    @property
    def hooks(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return (("FORWARD", self.forward), ("INPUT", self.input))


FELIX = Engine("felix", "MNP-FORWARD", "MNP-INPUT", "MNP-REJECT", "MNP", "mnp-")
WEAVE_NPC = Engine("weave-npc", "WEAVE-NPC", "WEAVE-NPC-EGRESS", "WEAVE-NPC-REJECT", "WEAVE-NPC", "weave-")
ENGINES: dict[str, Engine] = {e.name: e for e in (FELIX, WEAVE_NPC)}
TOP_FORWARD = FELIX.forward
TOP_INPUT = FELIX.input
REJECT_CHAIN = FELIX.reject
TOP_CHAINS = FELIX.top_chains
HOOKS = FELIX.hooks
SET_PREFIX = FELIX.set_prefix
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
    """The policy engine on ``n``: that of its running CNI agent pod (``None``: nothing enforces there); of
    several, the one of the node's kubelet CNI, else the one programmed there, else the first."""
    found: set[str] = set()
    for p in st.pods.values():
        if p.node != n.name or not p.host_network or p.phase != PodPhase.RUNNING:
            continue
        w = st.workloads.get(p.workload_key)
        if w is not None and w.kind == "DaemonSet" and w.template.app in POLICY_AGENTS:
            found.add(POLICY_AGENTS[w.template.app])
    engines = [e for e in dict.fromkeys(POLICY_AGENTS.values()) if e in found]
    if len(engines) <= 1:
        return engines[0] if engines else None
    by_cni = CNI_ENGINES.get(cni.kubelet_cni(Path(n.dir) / "etc-cni-net.d"))
    if by_cni in engines:
        return by_cni
    return n.netpol.engine if n.netpol.engine in engines else engines[0]


def programmed_engine(state: NetpolNodeState) -> Engine:
    """The engine whose hooks, chains and sets are on the node (felix for state files without ``engine``)."""
    return ENGINES.get(state.engine or FELIX.name, FELIX)


# ------------------------------------------------------------------------------------------ rendering


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def pod_chain(direction: str, key: str, engine: Engine = FELIX) -> str:
    """``MNP-I-<hash>`` / ``MNP-E-<hash>`` (felix; ``WEAVE-NPC-I-<hash>``... for weave-npc) for pod ``key``
    (``namespace/name``)."""
    return f"{engine.pod_prefix}-{direction}-{_digest(key, 12).upper()}"


@dataclass
class IpSet:
    name: str
    kind: str  # hash:ip | hash:net
    entries: tuple[str, ...]  # "10.0.0.1" / "10.0.0.0/8" / "10.1.0.0/16 nomatch"


def ip_set(ips: Iterable[str], prefix: str = SET_PREFIX) -> IpSet:
    entries = tuple(sorted(set(ips), key=ipaddress.IPv4Address))
    return IpSet(prefix + _digest("ip:" + ",".join(entries), 20), "hash:ip", entries)


def _halves(cidr: str) -> list[str]:
    """``hash:net`` takes prefixes 1..32: ``/0`` becomes its two halves."""
    net_ = ipaddress.IPv4Network(cidr, strict=False)
    if net_.prefixlen == 0:
        return [str(s) for s in net_.subnets(prefixlen_diff=1)]
    return [str(net_)]


def net_set(block: IPBlock, prefix: str = SET_PREFIX) -> IpSet | None:
    """One ``hash:net`` set for one ipBlock (its excepts as ``nomatch``); ``None`` for an IPv6 block."""
    try:
        halves = _halves(block.cidr)
        excepts = [str(ipaddress.IPv4Network(e, strict=False)) for e in block.except_]
    except ValueError:
        return None  # IPv6: the lab is IPv4 only
    entries = tuple(halves + [f"{e} nomatch" for e in sorted(excepts)])
    return IpSet(prefix + _digest("net:" + ",".join(entries), 20), "hash:net", entries)


@dataclass
class NodeRules:
    """What the agent programs on one node."""

    engine: Engine = FELIX
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
                s = ip_set(peers.pod_ips, nr.engine.set_prefix)
                nr.sets[s.name] = s
                peer_frags.append(f"-m set --match-set {s.name} {peer_dir}")
            for block in peers.ip_blocks:
                ns = net_set(block, nr.engine.set_prefix)
                if ns is not None:
                    nr.sets[ns.name] = ns
                    peer_frags.append(f"-m set --match-set {ns.name} {peer_dir}")
        for pf in peer_frags:
            for portf in _port_matches(r.ports, nr):
                parts = ["-A", chain, pf, portf, comment, "-j RETURN"]
                nr.rules.append(" ".join(x for x in parts if x))
    nr.rules.append(f"-A {chain} -j {nr.engine.reject}")


def render_node(pod_rules: Sequence[PodRules], engine: Engine = FELIX) -> NodeRules:
    """The sets, chains and rules for the pods of one node (their :class:`PodRules`), named for ``engine``."""
    nr = NodeRules(engine=engine)
    fwd, inp = engine.forward, engine.input
    est = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    nr.rules += [f"-A {fwd} {est}", f"-A {inp} {est}"]
    jumps: list[str] = []
    for pr in sorted(pod_rules, key=lambda r: r.pod.key):
        ip = pr.pod.ip
        if not ip or pr.pod.host_network:
            continue
        first_jump, first_rule = len(jumps), len(nr.rules)
        if pr.egress_isolated:
            chain = pod_chain("E", pr.pod.key, engine)
            nr.chains.append(chain)
            jumps.append(f"-A {fwd} -s {ip}/32 -j {chain}")
            jumps.append(f"-A {inp} -s {ip}/32 -j {chain}")
            _direction(nr, chain, pr.egress, "dst")
        if pr.ingress_isolated:
            chain = pod_chain("I", pr.pod.key, engine)
            nr.chains.append(chain)
            jumps.append(f"-A {fwd} -d {ip}/32 -j {chain}")
            _direction(nr, chain, pr.ingress, "src")
        nr.pods[ip] = _digest("\n".join(jumps[first_jump:] + nr.rules[first_rule:]), 16)
    nr.rules = nr.rules[:2] + jumps + nr.rules[2:]
    nr.rules += [
        f"-A {engine.reject} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {engine.reject} -j REJECT --reject-with icmp-port-unreachable",
    ]
    return nr


def ipset_text(sets: Iterable[IpSet]) -> str:
    lines: list[str] = []
    for s in sets:
        lines.append(f"create {s.name} {s.kind} family inet -exist")
        lines += [f"add {s.name} {e} -exist" for e in s.entries]
    return "\n".join(lines) + "\n"


def iptables_text(nr: NodeRules | None, prev: NetpolNodeState) -> str:
    """``iptables-restore --noflush`` input: the agent's chains rewritten (``None``: all removed, those of
    the engine ``prev`` records), the FORWARD/INPUT hooks added once (or deleted), stale pod chains
    deleted. ``prev`` is of ``nr``'s engine (:func:`_apply` clears another engine's first)."""
    lines = ["*filter"]
    if nr is not None:
        engine = nr.engine
        stale = sorted(set(prev.chains) - set(nr.chains))
        lines += [f":{c} - [0:0]" for c in dict.fromkeys([*engine.top_chains, *nr.chains, *stale])]
        if not prev.hooked:
            lines += [f"-I {hook} 1 -j {top}" for hook, top in engine.hooks]
        lines += nr.rules
        lines += [f"-X {c}" for c in stale]
    else:
        engine = programmed_engine(prev)
        gone = list(dict.fromkeys([*engine.top_chains, *prev.chains]))
        lines += [f":{c} - [0:0]" for c in gone]
        if prev.hooked:
            lines += [f"-D {hook} -j {top}" for hook, top in engine.hooks]
        lines += [f"-X {c}" for c in gone]
    lines += ["COMMIT", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ applying


def _programmed(state: NetpolNodeState) -> bool:
    return bool(state.hooked or state.chains or state.sets)


def _clear(n: NodeState) -> None:
    """Remove what the agent programmed on ``n``: the hooks, chains and sets of the engine it recorded,
    tolerating parts already gone (a playbook's teardown of the CNI's leftovers)."""
    prev = n.netpol
    engine = programmed_engine(prev)
    for hook, top in engine.hooks:
        argv = net.exec_argv(n.netns, ["iptables", "-D", hook, "-j", top])
        sh.run(argv, check=False, timeout=RESTORE_TIMEOUT)
    prev.hooked = False
    text = iptables_text(None, prev)  # declares (creates or flushes) every chain, then deletes it
    sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=text, timeout=RESTORE_TIMEOUT)
    for name in prev.sets:
        sh.run(net.exec_argv(n.netns, ["ipset", "destroy", name]), check=False, timeout=RESTORE_TIMEOUT)
    prev.chains, prev.sets, prev.engine = [], [], None


def _hook_once(n: NodeState, engine: Engine) -> None:
    """Before the first programming: hooks left by an interrupted run count; no ICMP rate limit."""
    fwd = sh.run(net.exec_argv(n.netns, ["iptables", "-S", "FORWARD"]), check=False, timeout=RESTORE_TIMEOUT)
    n.netpol.hooked = f"-A FORWARD -j {engine.forward}" in fwd.stdout.splitlines()
    # REJECT answers with ICMP; the kernel's default rate limit (1 per second per peer after a short
    # burst) turns most UDP denies of a probe matrix into timeouts, 5x slower to observe. Per netns.
    sh.run(net.exec_argv(n.netns, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]), check=False)


def _apply(n: NodeState, nr: NodeRules | None) -> float:
    """Program ``nr`` on ``n`` (``None``: remove everything the agent made); another engine's objects are
    removed first. Returns milliseconds."""
    t0 = time.monotonic()
    prev = n.netpol
    before = dict(prev.pods)
    if _programmed(prev) and (nr is None or programmed_engine(prev).name != nr.engine.name):
        _clear(n)
    if nr is None:
        _forget_udp_flows(n, before, {})
        prev.pods = {}
        return (time.monotonic() - t0) * 1000.0
    if not prev.hooked:
        _hook_once(n, nr.engine)
    sets = list(nr.sets.values())
    if sets:
        sh.run(net.exec_argv(n.netns, ["ipset", "restore"]), input=ipset_text(sets), timeout=RESTORE_TIMEOUT)
    text = iptables_text(nr, prev)
    sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=text, timeout=RESTORE_TIMEOUT)
    _forget_udp_flows(n, before, nr.pods)
    stale = sorted(set(prev.sets) - {s.name for s in sets})
    if stale:
        sh.run(
            net.exec_argv(n.netns, ["ipset", "restore"]),
            input="\n".join(f"destroy {s}" for s in stale) + "\n",
            timeout=RESTORE_TIMEOUT,
        )
    prev.hooked = True
    prev.engine = nr.engine.name
    prev.chains = list(nr.chains)
    prev.sets = sorted(s.name for s in sets)
    prev.pods = dict(nr.pods)
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
            engine = ENGINES.get(n.netpol.agent, FELIX)
            nr = render_node([m.pod_rules(policy_pod(p)) for p in local], engine)
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
