"""Node agents as DaemonSets: the emulated flanneld, Canal (flanneld + felix), calico-node (VXLAN or BGP with
bird2, or beside another overlay), weave-net (weave-kube: :mod:`migrator.lab.weave`) and kube-proxy.

A DaemonSet runs one host-network agent pod on every node whose labels match its node selector. The lab
"runs" an agent by programming what the real agent would program on that node. Part of the emulated
control plane (:mod:`migrator.lab.control`): the caller holds the lab's lock.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from loguru import logger

from migrator import fsutil
from migrator.errors import MigratorError, StepFailed, UsageError
from migrator.lab import calico, canal, cni, flannel, net, netpol, sh, sshd, weave, workloads
from migrator.lab.spec import POD_NETWORK, vtep_mac
from migrator.lab.state import LabState, NodeState, PodPhase, PodState, ResourceKind, StateStore, Workload

BGP_TIMEOUT = 20.0
AGENT_LABEL = "lab.migrator.io/agent-config"


def node_cni(n: NodeState) -> str:
    """The node's CNI as the kubelet sees it: from the first config file of its ``/etc/cni/net.d``
    (by file name, else by network name: :data:`migrator.lab.cni.KUBELET_CNI_BY_FILE`)."""
    return cni.kubelet_cni(Path(n.dir) / "etc-cni-net.d")


def _peers(st: LabState, exclude: str) -> list[flannel.Peer]:
    return [
        flannel.Peer(n.name, n.ip, n.pod_cidr, n.vtep_ip, n.vtep_mac)
        for n in st.nodes.values()
        if n.name != exclude
    ]


def reconcile_daemonsets(store: StateStore, st: LabState) -> None:
    """DaemonSet controller: one host-network agent pod per node whose labels match the node selector.

    A new (or failed) agent pod runs its agent on the node (flannel or calico-node program the node's
    data plane and CNI config); a pod whose node no longer matches is deleted, and like a real agent it
    leaves its devices, files and rules behind (the migration playbooks remove them).
    """
    todo: list[tuple[Workload, NodeState, PodState]] = []
    for w in st.workloads.values():
        if w.kind != "DaemonSet":
            continue
        for n in st.nodes.values():
            match = all(n.labels.get(k) == v for k, v in w.node_selector.items())
            pod = next(
                (p for p in st.pods.values() if p.owner == f"DaemonSet/{w.name}" and p.node == n.name),
                None,
            )
            want = _agent_signature(w, n)
            if pod is not None and not match:
                st.pods.pop(pod.key, None)
                if w.template.app == "calico-node":  # bird ran inside the calico-node pod
                    _stop_bird(st, n)
            elif match and (
                pod is None or pod.phase != PodPhase.RUNNING or pod.labels.get(AGENT_LABEL) != want
            ):
                if pod is None:
                    st.counter += 1
                    pod = PodState(
                        name=workloads.pod_name(w, st.spec.seed, st.counter),
                        namespace=w.namespace,
                        node=n.name,
                        ip=n.ip,
                        labels=dict(w.template.labels),
                        owner=f"DaemonSet/{w.name}",
                        host_network=True,
                    )
                    st.pods[pod.key] = pod
                todo.append((w, n, pod))

    def run(item: tuple[Workload, NodeState, PodState]) -> None:
        w, n, pod = item
        pod.labels[AGENT_LABEL] = _agent_signature(w, n)
        try:
            _run_agent(store, st, w, n)
        except MigratorError as exc:
            pod.phase, pod.message = PodPhase.FAILED, f"CrashLoopBackOff: {exc}"
            logger.warning("agent {} on {}: {}", w.template.app, n.name, exc)
            return
        pod.phase, pod.message = PodPhase.RUNNING, "emulated agent: the lab programs its data plane"

    sh.parallel(run, todo)
    _program_calico_routes(st)
    _program_weave_mesh(st)
    for n in st.nodes.values():
        n.cni = node_cni(n)
    store.save(st)
    netpol.reconcile(store, st)  # which nodes enforce policy follows their CNI agent


def _calico_mode(w: Workload, n: NodeState) -> str:
    return n.labels.get(calico.MODE_LABEL) or w.template.config.get("mode", calico.MODE_VXLAN)


def _agent_signature(w: Workload, n: NodeState) -> str:
    """What the agent on ``n`` was last run with; a change re-runs it (a DaemonSet rollout)."""
    cfg = w.template.config
    if w.template.app == weave.AGENT:
        return f"{weave.AGENT}/{cfg.get(weave.RANGE_KEY, weave.DEFAULT_RANGE)}"
    if w.template.app != "calico-node":
        return w.template.app
    peering = cfg.get("peering", calico.PEERING_FULL_MESH)
    sig = f"{_calico_mode(w, n)}/{peering}/{cfg.get('reflectors', '')}"
    try:
        extra = calico.settings(cfg).signature
    except UsageError as exc:  # refused at apply; a state edited by hand fails the agent, not the reconcile
        extra = f"invalid: {exc}"
    return f"{sig}/{extra}" if extra else sig


def _run_agent(store: StateStore, st: LabState, w: Workload, n: NodeState) -> None:
    app = w.template.app
    if app == "flannel":
        _agent_flannel(st, n)
    elif app == "canal":
        _agent_canal(st, n)
    elif app == "calico-node":
        _agent_calico(store, st, n, w)
    elif app == weave.AGENT:
        _agent_weave(st, n, w)
    # kube-proxy: its rules are written by control.sync_services on every node


def _has_link(netns: str, dev: str) -> bool:
    return sh.run(["ip", "-n", netns, "link", "show", dev], check=False, timeout=10).ok


def _has_chain(netns: str, table: str, chain: str) -> bool:
    return sh.run(net.exec_argv(netns, ["iptables", "-t", table, "-S", chain]), check=False, timeout=10).ok


def _agent_flannel(st: LabState, n: NodeState) -> None:
    """flanneld (VXLAN backend) starting on ``n``; idempotent."""
    _flanneld(st, n)
    # kube-flannel's install-cni init container
    fsutil.atomic_write_text(
        Path(n.dir) / "etc-cni-net.d" / flannel.CONFLIST_NAME, flannel.conflist_text(n.pod_cidr)
    )


def _agent_canal(st: LabState, n: NodeState) -> None:
    """Canal starting on ``n``: its kube-flannel container (flanneld, VXLAN) and its calico-node container
    (felix: the lab's policy agent enforces on the node, :data:`netpol.POLICY_AGENTS`; no routing), whose
    install-cni writes ``10-canal.conflist``; idempotent."""
    _flanneld(st, n)
    fsutil.atomic_write_text(
        Path(n.dir) / "etc-cni-net.d" / canal.CONFLIST_NAME, canal.conflist_text(n.pod_cidr)
    )


def _flanneld(st: LabState, n: NodeState) -> None:
    """What flanneld programs: subnet.env, flannel.1 with the routes/neighbours/FDB of its peers, the
    masquerade and forward chains."""
    peers = _peers(st, n.name)
    nd = Path(n.dir)
    fsutil.atomic_write_text(nd / "run-flannel" / "subnet.env", flannel.subnet_env(n.pod_cidr))
    if _has_link(n.netns, flannel.VXLAN_DEV):
        lines = flannel.peer_lines(peers)
    else:
        lines = flannel.vxlan_lines(n.ip, n.vtep_ip, n.vtep_mac, peers)
    sh.ip_batch(lines, netns=n.netns)
    if peers:
        sh.run(["bridge", "-n", n.netns, "-batch", "-"], input="\n".join(flannel.fdb_lines(peers)) + "\n")
    if not _has_chain(n.netns, "nat", "FLANNEL-POSTRTG"):
        sh.run(
            net.exec_argv(n.netns, ["iptables-restore", "--noflush"]),
            input=flannel.masq_rules(n.pod_cidr),
        )


def _weave_range(w: Workload, n: NodeState) -> ipaddress.IPv4Network:
    try:
        return weave.ipalloc_range(w.template.config)
    except UsageError as exc:
        raise StepFailed(str(exc), node=n.name) from exc


def _agent_weave(st: LabState, n: NodeState, w: Workload) -> None:
    """weave-kube starting on ``n`` (:mod:`migrator.lab.weave`); idempotent. A bridge already exposing
    another address is refused, as weave does when ``IPALLOC_RANGE`` changed (``weave reset`` first). The
    mesh's FDB entries are programmed by :func:`_program_weave_mesh`."""
    rng = _weave_range(w, n)
    try:
        address = weave.bridge_address(rng, n.index)
        local = weave.node_slice(rng, n.index)
    except UsageError as exc:
        raise StepFailed(str(exc), node=n.name) from exc
    current = net.link_addrs(n.netns, weave.BRIDGE_DEV)
    if current is None:
        sh.ip_batch(weave.bridge_lines(address, weave.peer_mac(st.spec.name, n.name)), netns=n.netns)
    elif address not in current:
        raise StepFailed(
            f"bridge {weave.BRIDGE_DEV} has {', '.join(current) or 'no address'}, not {address}: "
            f"{weave.RANGE_KEY} changed (weave reset first)",
            node=n.name,
        )
    if not _has_link(n.netns, weave.VXLAN_DEV):
        sh.ip_batch(weave.vxlan_lines(n.ip), netns=n.netns)
    sh.run(net.exec_argv(n.netns, ["ipset", "restore"]), input=weave.ipset_text(local))
    if not _has_chain(n.netns, "nat", "WEAVE"):
        sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=weave.iptables_rules(rng))
    # weave-kube's init container
    conf = weave.conflist_text(rng, n.index)
    fsutil.atomic_write_text(Path(n.dir) / "etc-cni-net.d" / weave.CONFLIST_NAME, conf)


def _running_agents(st: LabState, app: str) -> dict[str, Workload]:
    """Node name -> the DaemonSet of its running ``app`` agent pod."""
    out: dict[str, Workload] = {}
    for p in st.pods.values():
        w = st.workloads.get(p.workload_key)
        if p.host_network and p.phase == PodPhase.RUNNING and w is not None and w.template.app == app:
            out[p.node] = w
    return out


def _program_weave_mesh(st: LabState) -> None:
    """What the weave routers' peer connections give: on every node running weave-net, one head-end
    replication entry on ``vxlan-6784`` per other node running it, and none to nodes that left."""
    mesh = _running_agents(st, weave.AGENT)
    if not mesh:
        return

    def program(name: str) -> None:
        n = st.nodes[name]
        res = sh.run(
            ["bridge", "-n", n.netns, "-j", "fdb", "show", "dev", weave.VXLAN_DEV], check=False, timeout=10
        )
        if not res.ok:
            return  # no vxlan-6784 (removed behind the lab's back): the agent's next start recreates it
        have = set(weave.mesh_peers(json.loads(res.stdout or "[]")))
        want = {st.nodes[m].ip for m in mesh if m != name}
        lines = weave.fdb_lines(sorted(want - have), sorted(have - want))
        if lines:
            sh.run(["bridge", "-n", n.netns, "-batch", "-"], input="\n".join(lines) + "\n")

    sh.parallel(program, sorted(mesh))


def _calico_settings(w: Workload, n: NodeState) -> calico.Settings:
    try:
        return calico.settings(w.template.config)
    except UsageError as exc:
        raise StepFailed(str(exc), node=n.name) from exc


def _calico_peer(st: LabState, n: NodeState, s: calico.Settings) -> flannel.Peer:
    """``n`` as a Calico VXLAN peer: its own pod CIDR and VTEP (wire-compatible with flannel), or with a
    ``pool`` its block of the pool, the block's network address as VTEP IP and a VTEP MAC of its own."""
    if s.pool is None:
        return flannel.Peer(n.name, n.ip, n.pod_cidr, n.vtep_ip, n.vtep_mac)
    try:
        block = s.block(n.index)
    except UsageError as exc:
        raise StepFailed(str(exc), node=n.name) from exc
    mac = vtep_mac(st.spec.name, f"{n.name}/calico")
    return flannel.Peer(n.name, n.ip, str(block), str(block.network_address), mac)


def _agent_calico(store: StateStore, st: LabState, n: NodeState, w: Workload) -> None:
    """calico-node starting on ``n``; idempotent.

    VXLAN mode: ``vxlan.calico`` (wire-compatible with flannel, or with a ``pool`` beside another overlay:
    :class:`migrator.lab.calico.Settings`); its routes are programmed by :func:`_program_calico_routes`.
    BGP mode: bird2 exports the node's block; ``vxlan.calico`` is left as it is (remove it with a playbook
    once every node runs BGP).
    """
    s = _calico_settings(w, n)
    me = _calico_peer(st, n, s)
    nd = Path(n.dir)
    mode = _calico_mode(w, n)
    if mode == calico.MODE_BGP and s.pool is not None:
        raise StepFailed("calico-node with a pool (dual-overlay) runs VXLAN only, not bgp", node=n.name)
    if mode == calico.MODE_VXLAN and not _has_link(n.netns, calico.VXLAN_DEV):
        lines = calico.vxlan_lines(n.ip, me.vtep_ip, me.vtep_mac, vni=s.vxlan_vni, port=s.vxlan_port)
        sh.ip_batch(lines, netns=n.netns)
        peers = _peers(st, n.name) if s.pool is None else []  # a pool's peers: _program_calico_routes
        if peers:
            sh.run(["bridge", "-n", n.netns, "-batch", "-"], input="\n".join(calico.fdb_lines(peers)) + "\n")
            neigh = calico.peer_lines(peers)[1::2]  # the neighbour lines only
            sh.ip_batch(neigh, netns=n.netns)
    elif mode == calico.MODE_BGP:
        _start_bird(store, st, n, w)
    elif mode != calico.MODE_VXLAN:
        raise StepFailed(f"unknown calico mode {mode!r} (vxlan or bgp)", node=n.name)
    hooks = not _has_chain(n.netns, "nat", "cali-POSTROUTING")
    rules = calico.iptables_rules(str(s.pool or POD_NETWORK), nat_exclude=s.nat_exclude, hooks=hooks)
    sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=rules)
    # calico's install-cni init container (CNI_CONF_NAME)
    fsutil.atomic_write_text(nd / "etc-cni-net.d" / s.conf_name, calico.conflist_text(me.pod_cidr))


def _bird_peers(st: LabState, n: NodeState, w: Workload) -> tuple[list[tuple[str, str]], bool]:
    cfg = w.template.config
    others = [(m.name, m.ip) for m in st.nodes.values() if m.name != n.name]
    if cfg.get("peering", calico.PEERING_FULL_MESH) != calico.PEERING_RR:
        return others, False
    reflectors = [r for r in cfg.get("reflectors", "node1").split(",") if r]
    if n.name in reflectors:
        return others, True
    return [(m, ip) for m, ip in others if m in reflectors], False


def _start_bird(store: StateStore, st: LabState, n: NodeState, w: Workload) -> None:
    peers, rr = _bird_peers(st, n, w)
    nd = Path(n.dir)
    conf = nd / "bird.conf"
    conf.write_text(calico.bird_config(router_id=n.ip, block=n.pod_cidr, peers=peers, rr_clients=rr))
    sock = nd / "bird.ctl"
    if n.bird_pid and sh.alive(n.bird_pid, n.bird_start):
        sh.run(["birdc", "-s", str(sock), "configure"], timeout=10)
    else:
        assert n.holder_pid
        st.record(ResourceKind.PROCESS, f"bird:{n.name}")
        store.save(st)
        bird = ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(nd / "bird.pid")]
        n.bird_pid = sh.spawn(
            sshd.node_exec_argv(n.holder_pid, bird), log=Path(st.dir) / "logs" / f"{n.name}-bird.log"
        )
        n.bird_start = sh.start_time(n.bird_pid)
        st.record(ResourceKind.PROCESS, f"bird:{n.name}", n.bird_pid, n.bird_start)
    # wait (bounded) until this node and the nodes already running BGP have learned each other's blocks
    bgp_peers = [m for m in st.nodes.values() if m.name != n.name and m.bird_pid and sh.alive(m.bird_pid)]

    def missing() -> list[str]:
        out = [f"{n.name} lacks {m.pod_cidr}" for m in bgp_peers if m.pod_cidr not in _bird_routes(n)]
        return out + [f"{m.name} lacks {n.pod_cidr}" for m in bgp_peers if n.pod_cidr not in _bird_routes(m)]

    deadline = time.monotonic() + BGP_TIMEOUT
    time.sleep(0.05)
    if not sh.alive(n.bird_pid):
        log = (Path(st.dir) / "logs" / f"{n.name}-bird.log").read_text()[-400:]
        n.bird_pid = None
        raise StepFailed(f"bird exited on {n.name}: {log.strip()}", node=n.name)
    gaps = missing()
    while gaps and time.monotonic() < deadline:
        time.sleep(0.2)
        gaps = missing()
    if gaps:
        logger.warning("node {}: BGP routes still missing after {}s: {}", n.name, BGP_TIMEOUT, gaps)


def _stop_bird(st: LabState, n: NodeState) -> None:
    """SIGTERM: bird withdraws its routes from the kernel and from its peers before exiting."""
    if n.bird_pid and sh.alive(n.bird_pid, n.bird_start):
        os.kill(n.bird_pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while sh.alive(n.bird_pid) and time.monotonic() < deadline:
            sh.reap(n.bird_pid)
            time.sleep(0.02)
        sh.kill([(n.bird_pid, None)])
    st.forget(ResourceKind.PROCESS, f"bird:{n.name}")
    n.bird_pid = n.bird_start = None


def _bird_routes(n: NodeState) -> set[str]:
    res = sh.run(["ip", "-n", n.netns, "-j", "route", "show", "proto", "bird"], check=False, timeout=10)
    return {str(r["dst"]) for r in json.loads(res.stdout or "[]")} if res.ok else set()


def _program_calico_routes(st: LabState) -> None:
    """What Felix does for VXLAN routes: on every Calico node with ``vxlan.calico``, a VXLAN route to each
    peer that has a VTEP (``flannel.1`` or ``vxlan.calico``), unless both ends are in BGP mode and have
    learned each other's block (then bird's route carries the traffic). A node in VXLAN mode stops bird
    once every peer has a VTEP. Each switch is make-before-break: no window without a route."""
    agents = _running_agents(st, "calico-node")
    if not agents:
        return

    def links(n: NodeState) -> set[str]:
        res = sh.run(["ip", "-n", n.netns, "-j", "link", "show"], check=False, timeout=10)
        return {str(e["ifname"]) for e in json.loads(res.stdout or "[]")} if res.ok else set()

    nodes = list(st.nodes.values())
    devs = dict(zip([n.name for n in nodes], sh.parallel(links, nodes), strict=True))
    bird = dict(zip([n.name for n in nodes], sh.parallel(_bird_routes, nodes), strict=True))
    has_vtep = {k: bool({flannel.VXLAN_DEV, calico.VXLAN_DEV} & v) for k, v in devs.items()}

    mode = {name: _calico_mode(w, st.nodes[name]) for name, w in agents.items()}

    def over_bgp(a: NodeState, b: flannel.Peer) -> bool:
        both = mode.get(a.name) == calico.MODE_BGP and mode.get(b.name) == calico.MODE_BGP
        return both and b.pod_cidr in bird[a.name] and a.pod_cidr in bird[b.name]

    pools = {name: _pool_of(w) for name, w in agents.items()}

    def wanted(n: NodeState) -> list[flannel.Peer]:
        pool = pools[n.name]
        if pool is None:  # wire-compatible with flannel: every peer with a VTEP
            return [p for p in _peers(st, n.name) if has_vtep[p.name] and not over_bgp(n, p)]
        # dual-overlay: the other calico-node nodes with the same pool
        return [
            _calico_peer(st, st.nodes[m], calico.settings(agents[m].template.config))
            for m in sorted(agents)
            if m != n.name and pools[m] == pool and calico.VXLAN_DEV in devs[m]
        ]

    def program(n: NodeState) -> None:
        if n.name not in agents or calico.VXLAN_DEV not in devs[n.name]:
            return
        want = wanted(n)
        res = sh.run(
            ["ip", "-n", n.netns, "-j", "route", "show", "dev", calico.VXLAN_DEV], check=False, timeout=10
        )
        current = {str(r["dst"]) for r in json.loads(res.stdout or "[]")} if res.ok else set()
        lines = calico.peer_lines(want)
        lines += [
            f"route del {c} dev {calico.VXLAN_DEV}" for c in sorted(current - {p.pod_cidr for p in want})
        ]
        if want:
            sh.run(["bridge", "-n", n.netns, "-batch", "-"], input="\n".join(calico.fdb_lines(want)) + "\n")
        sh.ip_batch(lines, netns=n.netns)

    sh.parallel(program, nodes)
    # a node back in VXLAN mode stops bird once every peer is reachable over VXLAN
    for name in agents:
        n = st.nodes[name]
        peers_ok = all(has_vtep[m] for m in st.nodes if m != name)
        if mode[name] == calico.MODE_VXLAN and n.bird_pid and peers_ok and calico.VXLAN_DEV in devs[name]:
            _stop_bird(st, n)


def _pool_of(w: Workload) -> str | None:
    """The dual-overlay pool of a calico-node DaemonSet (``None``: wire-compatible with flannel, or a config
    the agent refused)."""
    try:
        pool = calico.settings(w.template.config).pool
    except UsageError:
        return None
    return None if pool is None else str(pool)


def check_agent_config(st: LabState, agent: str, config: Mapping[str, str]) -> None:
    """Refuse an agent config that cannot work on this lab's nodes (raises :class:`UsageError`)."""
    last = max((n.index for n in st.nodes.values()), default=1)
    if agent == "calico-node":
        s = calico.settings(config)
        if s.pool is not None:
            s.block(last)
    elif agent == weave.AGENT:
        weave.node_slice(weave.ipalloc_range(config), last)
    elif agent == "kube-proxy" and config.get("cluster_cidr"):
        try:
            ipaddress.IPv4Network(config["cluster_cidr"], strict=True)
        except ValueError as exc:
            raise UsageError(f"kube-proxy config cluster_cidr: {exc}") from None


def apply_daemonset(
    store: StateStore,
    st: LabState,
    agent: str,
    node_selector: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
) -> str:
    """Create or update the DaemonSet of ``agent`` (``flannel``, ``calico-node``, ``weave-net``) with a node
    selector and agent config, then reconcile, as ``kubectl apply`` of a manifest would. Returns the
    DaemonSet key.

    calico-node: ``mode`` vxlan|bgp, ``peering`` full-mesh|route-reflector, ``reflectors`` (comma-separated
    node names), and the dual-overlay keys of :class:`migrator.lab.calico.Settings` (``pool``,
    ``block_size``, ``vxlan_port``, ``vxlan_vni``, ``cni_conf_name``, ``nat_exclude``). weave-net:
    ``ipalloc_range``. kube-proxy: ``cluster_cidr`` (its ``--cluster-cidr``, see
    :func:`migrator.lab.control.cluster_cidr`). A config that cannot work (a bad value, a pool or range too
    small for the nodes) is refused with :class:`UsageError` naming the key, before anything changes."""
    check_agent_config(st, agent, config or {})
    w = workloads.agent_daemonset(agent, node_selector, config)
    st.workloads[w.key] = w
    reconcile_daemonsets(store, st)
    return w.key


def delete_daemonset(store: StateStore, st: LabState, key: str) -> list[str]:
    """Delete a DaemonSet (``namespace/name``) and its pods; the agents' leftovers stay on the nodes."""
    w = st.workloads.pop(key, None)
    if w is None:
        return []
    gone = [k for k, p in st.pods.items() if p.namespace == w.namespace and p.owner == f"DaemonSet/{w.name}"]
    for k in gone:
        st.pods.pop(k, None)
    store.save(st)
    return gone
