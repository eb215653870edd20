"""The exact commands of each fault kind on one node, and of its revert: :class:`FaultPlan`.

Pure functions of the fault's args and the node's facts (:class:`NodeFacts`), so that the dry run prints
exactly what the injection runs. Conventions:

- every iptables rule carries the comment ``migrator-fault:<id>`` and lives in the fault's own chain
  ``MGR-F-<id>`` (jumps from built-in chains carry the comment too); the chain starts with ``RETURN`` rules
  for the SSH path migrator uses (from the node facts), so no fault ever cuts it;
- qdiscs are added (never replaced) as the root qdisc with a handle derived from the id, and deleted by
  that handle only: an undo removes exactly what the fault installed, nothing else;
- the revert commands are idempotent (each may fail harmlessly when its object is already gone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from migrator.errors import PermanentError, PlanError, UnsupportedFeature
from migrator.plan.models import (
    FaultApiserverArgs,
    FaultArgsBase,
    FaultBandwidthArgs,
    FaultBlackholeArgs,
    FaultDelayArgs,
    FaultDirection,
    FaultDnsArgs,
    FaultLinkFlapArgs,
    FaultLossArgs,
    FaultPartitionArgs,
    FaultProtocol,
    LossMechanism,
)
from migrator.ports import Node, Service

IPT = ["iptables", "-w", "5"]
FAULT_DIR = "/run/migrator/faults"


class FaultKind(StrEnum):
    LOSS = "loss"
    DELAY = "delay"
    BANDWIDTH = "bandwidth"
    PARTITION = "partition"
    BLACKHOLE = "blackhole"
    DNS = "dns"
    LINK_FLAP = "link-flap"
    APISERVER = "apiserver"


class Mechanism(StrEnum):
    NETEM = "netem"
    TBF = "tbf"
    IPTABLES = "iptables"
    LINK = "ip-link"


@dataclass(frozen=True)
class SshPath:
    client: str
    server: str
    server_port: int = 22


@dataclass(frozen=True)
class NodeFacts:
    """What a fault needs to know about a node (from ``fault-facts.yml``)."""

    name: str
    address: str
    interfaces: dict[str, list[str]] = field(default_factory=dict)
    ssh: SshPath | None = None
    features: dict[str, Any] = field(default_factory=dict)

    def has(self, path: str) -> bool:
        value: Any = self.features
        for part in path.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        return value is True

    def interface_of(self, address: str) -> str | None:
        for name, addrs in sorted(self.interfaces.items()):
            if any(a.split("/")[0] == address for a in addrs):
                return name
        return None

    @property
    def primary_interface(self) -> str:
        name = self.interface_of(self.address)
        if name is None:
            raise PermanentError(f"node {self.name}: no interface holds its address {self.address}")
        return name

    @property
    def ssh_interface(self) -> str | None:
        return self.interface_of(self.ssh.server) if self.ssh else None


@dataclass(frozen=True)
class FaultPlan:
    """One fault on one node: what to run, how to undo it, how to read its state back."""

    id: str
    kind: FaultKind
    node: str
    mechanism: Mechanism
    install: list[list[str]]
    revert: list[list[str]]
    readback: list[list[str]]
    meta: dict[str, Any]

    def spec(self, ttl: int, *, heartbeat: str | None = None, lease: int = 0) -> dict[str, Any]:
        """The ``spec`` of the module's ``inject`` action (``heartbeat``/``lease``: the fault's lease)."""
        lease_part: dict[str, Any] = {"heartbeat": heartbeat, "lease": lease} if heartbeat and lease else {}
        return {
            **lease_part,
            "id": self.id,
            "kind": self.kind.value,
            "ttl": ttl,
            "install": self.install,
            "revert": self.revert,
            "readback": self.readback,
            "meta": {**self.meta, "mechanism": self.mechanism.value, "kind": self.kind.value},
        }


@dataclass(frozen=True)
class ClusterView:
    """The cluster data some faults need: every node, (for blackhole) the services and (for apiserver) the
    control-plane endpoints the target knows (``Target.apiserver_endpoint``: "ip:port")."""

    nodes: Sequence[Node]
    services: Sequence[Service] = ()
    api_endpoints: Sequence[str] = ()


def fault_id(*parts: str) -> str:
    """A stable 12-hex id: the same step of a run gets the same id (a re-run of ``do`` is idempotent)."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def chain_name(fid: str) -> str:
    return f"MGR-F-{fid}"


def comment(fid: str) -> str:
    return f"migrator-fault:{fid}"


def qdisc_handle(fid: str) -> str:
    return f"{int(fid[:4], 16) % 0xFFFE + 1:x}:"


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


class _Chain:
    """An iptables chain of one fault: its rules, its jumps from built-in chains, and their revert."""

    def __init__(self, fid: str, table: str, facts: NodeFacts) -> None:
        self.fid, self.table, self.facts = fid, table, facts
        self.name = chain_name(fid)
        self.comment = comment(fid)
        self.rules: list[list[str]] = []
        self.jumps: list[tuple[str, list[str]]] = []
        if not facts.has("iptables/comment"):
            raise UnsupportedFeature("iptables comment match", node=facts.name)
        if facts.ssh is not None:  # never cut the SSH path migrator uses
            ssh = facts.ssh
            port = str(ssh.server_port)
            self.rule(["-p", "tcp", "-s", ssh.client, "-d", ssh.server, "--dport", port], "RETURN")
            self.rule(["-p", "tcp", "-s", ssh.server, "--sport", port, "-d", ssh.client], "RETURN")

    def _tagged(self, match: list[str], target: str) -> list[str]:
        return [*match, "-m", "comment", "--comment", self.comment, "-j", target]

    def rule(self, match: list[str], target: str) -> None:
        self.rules.append(self._tagged(match, target))

    def jump(self, builtin: str, match: list[str] | None = None) -> None:
        self.jumps.append((builtin, list(match or [])))

    def install(self) -> list[list[str]]:
        cmds = [[*IPT, "-t", self.table, "-N", self.name]]
        cmds += [[*IPT, "-t", self.table, "-A", self.name, *r] for r in self.rules]
        cmds += [[*IPT, "-t", self.table, "-I", b, "1", *self._tagged(m, self.name)] for b, m in self.jumps]
        return cmds

    def revert(self) -> list[list[str]]:
        cmds = [[*IPT, "-t", self.table, "-D", b, *self._tagged(m, self.name)] for b, m in self.jumps]
        cmds += [[*IPT, "-t", self.table, "-F", self.name], [*IPT, "-t", self.table, "-X", self.name]]
        return cmds

    def readback(self) -> list[list[str]]:
        return [["iptables-save", "-t", self.table]]

    def meta(self) -> dict[str, Any]:
        return {"table": self.table, "chain": self.name, "comment": self.comment, "rules": len(self.rules)}


def _plan_chain(fid: str, kind: FaultKind, facts: NodeFacts, chain: _Chain, **meta: Any) -> FaultPlan:
    return FaultPlan(
        id=fid,
        kind=kind,
        node=facts.name,
        mechanism=Mechanism.IPTABLES,
        install=chain.install(),
        revert=chain.revert(),
        readback=chain.readback(),
        meta={**chain.meta(), **meta},
    )


def _plan_qdisc(  # noqa: PLR0917
    fid: str, kind: FaultKind, facts: NodeFacts, iface: str, qdisc: list[str], mech: Mechanism, **meta: Any
) -> FaultPlan:
    handle = qdisc_handle(fid)
    return FaultPlan(
        id=fid,
        kind=kind,
        node=facts.name,
        mechanism=mech,
        install=[["tc", "qdisc", "add", "dev", iface, "root", "handle", handle, *qdisc]],
        revert=[["tc", "qdisc", "del", "dev", iface, "root", "handle", handle]],
        readback=[["tc", "qdisc", "show", "dev", iface]],
        meta={"interface": iface, "qdisc_handle": handle, **meta},
    )


def _iface(args: FaultArgsBase, facts: NodeFacts) -> str:
    if args.interface:
        if args.interface not in facts.interfaces:
            raise PlanError(f"node {facts.name} has no interface {args.interface!r}")
        return args.interface
    return facts.primary_interface


def _need_netem(facts: NodeFacts, kind: str) -> None:
    if not facts.has("qdisc/netem"):
        raise UnsupportedFeature(
            "netem",
            node=facts.name,
            hint=f"{kind} needs the netem qdisc (sch_netem), which this node's kernel does not have;"
            " nothing was changed",
        )


def build_loss(fid: str, args: FaultLossArgs, facts: NodeFacts) -> FaultPlan:
    iface = _iface(args, facts)
    mech = args.mechanism
    if mech == LossMechanism.AUTO:
        mech = LossMechanism.NETEM if facts.has("qdisc/netem") else LossMechanism.IPTABLES
    if mech == LossMechanism.NETEM:
        _need_netem(facts, "fault.loss with mechanism netem")
        qdisc = ["netem", "loss", _pct(args.percent)]
        if args.correlation is not None:
            qdisc.append(_pct(args.correlation))
        return _plan_qdisc(fid, FaultKind.LOSS, facts, iface, qdisc, Mechanism.NETEM, percent=args.percent)
    if args.correlation is not None:
        _need_netem(facts, "fault.loss with correlation")
    if not facts.has("iptables/statistic"):
        raise UnsupportedFeature(
            "iptables statistic match", node=facts.name, hint="and no netem for fault.loss"
        )
    chain = _Chain(fid, "filter", facts)
    chain.rule(["-m", "statistic", "--mode", "random", "--probability", f"{args.percent:.4f}"], "DROP")
    chain.jump("OUTPUT", ["-o", iface])
    return _plan_chain(fid, FaultKind.LOSS, facts, chain, interface=iface, percent=args.percent)


def build_delay(fid: str, args: FaultDelayArgs, facts: NodeFacts) -> FaultPlan:
    _need_netem(facts, "fault.delay (delay/jitter/duplicate/corrupt)")
    iface = _iface(args, facts)
    qdisc = ["netem", "delay", _ms(args.delay)]
    if args.jitter is not None:
        qdisc.append(_ms(args.jitter))
        if args.correlation is not None:
            qdisc.append(_pct(args.correlation))
    if args.duplicate is not None:
        qdisc += ["duplicate", _pct(args.duplicate)]
    if args.corrupt is not None:
        qdisc += ["corrupt", _pct(args.corrupt)]
    return _plan_qdisc(fid, FaultKind.DELAY, facts, iface, qdisc, Mechanism.NETEM)


def build_bandwidth(fid: str, args: FaultBandwidthArgs, facts: NodeFacts) -> FaultPlan:
    if not facts.has("qdisc/tbf"):
        raise UnsupportedFeature("tbf", node=facts.name, hint="fault.bandwidth needs the tbf qdisc")
    iface = _iface(args, facts)
    qdisc = ["tbf", "rate", args.rate, "burst", args.burst, "latency", _ms(args.latency)]
    return _plan_qdisc(fid, FaultKind.BANDWIDTH, facts, iface, qdisc, Mechanism.TBF, rate=args.rate)


def _l4(protocol: FaultProtocol, ports: Sequence[int], flag: str) -> list[list[str]]:
    if protocol == FaultProtocol.ALL:
        return [[]]
    if not ports:
        return [["-p", protocol.value]]
    return [["-p", protocol.value, flag, str(p)] for p in ports]


def build_partition(fid: str, args: FaultPartitionArgs, facts: NodeFacts, peers: Sequence[Node]) -> FaultPlan:
    cidrs: list[str] = []
    for peer in peers:
        cidrs.append(f"{peer.address}/32")
        if peer.pod_cidr:
            cidrs.append(str(peer.pod_cidr))
    cidrs += [str(c) for c in args.cidrs]
    chain = _Chain(fid, "filter", facts)
    out = args.direction in (FaultDirection.OUT, FaultDirection.BOTH)
    inn = args.direction in (FaultDirection.IN, FaultDirection.BOTH)
    peer_cidrs = {f"{p.address}/32" for p in peers} | {str(p.pod_cidr) for p in peers if p.pod_cidr}
    for cidr in dict.fromkeys(cidrs):
        # node peers: every protocol and port; extra CIDRs: the given protocol/ports
        l4_out = [[]] if cidr in peer_cidrs else _l4(args.protocol, args.ports, "--dport")
        l4_in = [[]] if cidr in peer_cidrs else _l4(args.protocol, args.ports, "--sport")
        if out:
            for l4 in l4_out:
                chain.rule(["-d", cidr, *l4], "DROP")
        if inn:
            for l4 in l4_in:
                chain.rule(["-s", cidr, *l4], "DROP")
    for builtin in ("INPUT", "OUTPUT", "FORWARD"):
        chain.jump(builtin)
    return _plan_chain(
        fid,
        FaultKind.PARTITION,
        facts,
        chain,
        peers=[p.name for p in peers],
        cidrs=list(dict.fromkeys(cidrs)),
        direction=args.direction.value,
    )


def build_blackhole(
    fid: str, args: FaultBlackholeArgs, facts: NodeFacts, services: Sequence[Service]
) -> FaultPlan:
    ns, name = args.service.split("/", 1)
    svc = next((s for s in services if s.namespace == ns and s.name == name), None)
    if svc is None or not svc.cluster_ip:
        raise PlanError(f"service {args.service} not found or has no ClusterIP")
    ports = [p for p in svc.ports if args.port is None or p.port == args.port]
    if not ports:
        raise PlanError(f"service {args.service} has no port {args.port}")
    chain = _Chain(fid, "raw", facts)  # raw: before kube-proxy's DNAT rewrites the ClusterIP
    for p in ports:
        chain.rule(["-d", svc.cluster_ip, "-p", p.protocol.lower(), "--dport", str(p.port)], "DROP")
    chain.jump("PREROUTING")
    chain.jump("OUTPUT")
    return _plan_chain(
        fid,
        FaultKind.BLACKHOLE,
        facts,
        chain,
        service=args.service,
        cluster_ip=svc.cluster_ip,
        ports=[p.port for p in ports],
    )


def build_dns(fid: str, args: FaultDnsArgs, facts: NodeFacts, node: Node) -> FaultPlan:
    if not node.pod_cidr:
        raise PlanError(f"node {node.name} has no pod CIDR: cannot tell its pods' DNS queries")
    chain = _Chain(fid, "raw", facts)
    for proto in ("udp", "tcp"):
        chain.rule(["-s", str(node.pod_cidr), "-p", proto, "--dport", "53"], "DROP")
    chain.jump("PREROUTING")
    return _plan_chain(fid, FaultKind.DNS, facts, chain, pod_cidr=str(node.pod_cidr))


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def build_apiserver(fid: str, args: FaultApiserverArgs, facts: NodeFacts, view: ClusterView) -> FaultPlan:
    """Cut the node from the control-plane endpoint: ``args.endpoint``, else the target's own endpoint(s),
    else every control-plane node on port 6443."""
    if args.endpoint:
        endpoints, source = [_host_port(args.endpoint)], "args.endpoint"
    elif view.api_endpoints:
        endpoints, source = [_host_port(e) for e in view.api_endpoints], "target"
    else:
        endpoints = [(n.address, 6443) for n in view.nodes if n.is_control_plane]
        source = "control-plane nodes"
    if not endpoints:
        raise PlanError("fault.apiserver: no control-plane node and no endpoint given")
    chain = _Chain(fid, "filter", facts)
    for host, port_no in endpoints:
        chain.rule(["-d", host, "-p", "tcp", "--dport", str(port_no)], "DROP")
    chain.jump("OUTPUT")
    return _plan_chain(
        fid,
        FaultKind.APISERVER,
        facts,
        chain,
        endpoints=[f"{h}:{p}" for h, p in endpoints],
        endpoint_source=source,
    )


def link_state_argv(iface: str, fid: str) -> list[str]:
    """One line per fact of the flapped link: admin state and carrier counters, and the flap loop's pid."""
    sysfs = f"/sys/class/net/{iface}"
    pid_file = f"{FAULT_DIR}/{fid}.flap.pid"
    script = (
        f"f=$(cat {sysfs}/flags); a=down; [ $((f & 1)) -eq 1 ] && a=up;"
        f' echo "link {iface} admin=$a operstate=$(cat {sysfs}/operstate)'
        f" carrier_up_count=$(cat {sysfs}/carrier_up_count)"
        f' carrier_down_count=$(cat {sysfs}/carrier_down_count)";'
        f' if [ -f {pid_file} ]; then echo "flap loop {iface} pid $(cat {pid_file})";'
        f' else echo "flap loop {iface} stopped"; fi'
    )
    return ["sh", "-c", script]


def build_link_flap(fid: str, args: FaultLinkFlapArgs, facts: NodeFacts) -> FaultPlan:
    """``interface`` down for ``down`` every ``period``, for ``duration``: a detached loop (its own session,
    ``$0`` = ``migrator-fault-flap-<id>``) that ends with the link up; the revert stops it and sets the link
    up. The install waits (bounded) until the loop runs and has taken the link down once."""
    iface = _iface(args, facts)
    if iface == facts.ssh_interface or (args.interface is None):
        raise PlanError(
            f"fault.link-flap on node {facts.name}: interface {iface} carries the SSH path migrator uses;"
            " give another interface (for example flannel.1 or cni0)"
        )
    pid_file = f"{FAULT_DIR}/{fid}.flap.pid"
    cycles = max(1, int(args.duration // args.period))
    up = args.period - args.down
    loop = (
        f"echo $$ > {pid_file}; i=0; while [ $i -lt {cycles} ]; do i=$((i+1));"
        f" ip link set dev {iface} down; sleep {args.down:g}; ip link set dev {iface} up; sleep {up:g}; done;"
        f" ip link set dev {iface} up; rm -f {pid_file}"
    )
    down_count = f"/sys/class/net/{iface}/carrier_down_count"
    start = (
        f"n=$(cat {down_count}); setsid sh -c '{loop}' migrator-fault-flap-{fid} </dev/null >/dev/null 2>&1 &"
        # bounded wait: the loop has written its pid and taken the link down once (or already ended)
        f" i=0; while [ $i -lt 50 ]; do i=$((i+1));"
        f" [ -f {pid_file} ] && [ $(cat {down_count}) != $n ] && exit 0;"
        " sleep 0.1; done; exit 0"
    )
    stop = f"[ -f {pid_file} ] && kill -TERM -- -$(cat {pid_file}); rm -f {pid_file}; true"
    return FaultPlan(
        id=fid,
        kind=FaultKind.LINK_FLAP,
        node=facts.name,
        mechanism=Mechanism.LINK,
        install=[["sh", "-c", start]],
        revert=[["sh", "-c", stop], ["ip", "link", "set", "dev", iface, "up"]],
        readback=[["ip", "-br", "link", "show", "dev", iface], link_state_argv(iface, fid)],
        meta={
            "interface": iface,
            "cycles": cycles,
            "period": args.period,
            "down": args.down,
            # drift after a revert: the loop still there, or the link left administratively down
            "absent_after": [f"flap loop {iface} pid"],
            "present_after": [f"link {iface} admin=up"],
            "in_effect": f"flap loop {iface} pid",
        },
    )


def build(  # noqa: PLR0917
    kind: FaultKind,
    fid: str,
    args: FaultArgsBase,
    facts: NodeFacts,
    view: ClusterView,
    peers: Sequence[Node] = (),
) -> FaultPlan:
    """The :class:`FaultPlan` of ``kind`` on the node of ``facts``; raises UnsupportedFeature/PlanError."""
    node = next((n for n in view.nodes if n.name == facts.name), None)
    if isinstance(args, FaultLossArgs):
        return build_loss(fid, args, facts)
    if isinstance(args, FaultDelayArgs):
        return build_delay(fid, args, facts)
    if isinstance(args, FaultBandwidthArgs):
        return build_bandwidth(fid, args, facts)
    if isinstance(args, FaultPartitionArgs):
        return build_partition(fid, args, facts, peers)
    if isinstance(args, FaultBlackholeArgs):
        return build_blackhole(fid, args, facts, view.services)
    if isinstance(args, FaultDnsArgs):
        if node is None:
            raise PlanError(f"node {facts.name} is not in the cluster")
        return build_dns(fid, args, facts, node)
    if isinstance(args, FaultApiserverArgs):
        return build_apiserver(fid, args, facts, view)
    if isinstance(args, FaultLinkFlapArgs):
        return build_link_flap(fid, args, facts)
    raise PlanError(f"unknown fault kind {kind}")


def render(argv: Sequence[str]) -> str:
    import shlex  # noqa: PLC0415

    return shlex.join(argv)
