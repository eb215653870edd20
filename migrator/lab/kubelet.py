"""The kubelet of the emulated control plane: a pod's sandbox (namespace, CNI ADD/DEL through the node's own
conflist, ``resolv.conf``) and its containers (pod-server or dnsmasq processes), until they are ready.

Every function works on a loaded :class:`LabState` whose lab lock the caller holds; resources are recorded
in the state (and saved) before they are created.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from loguru import logger

from migrator import fsutil
from migrator.errors import MigratorError
from migrator.lab import cni, dns, net, sh, workloads
from migrator.lab.spec import netns_name
from migrator.lab.state import (
    ContainerState,
    LabState,
    PodPhase,
    PodState,
    ResourceKind,
    StateStore,
    Workload,
)

PYTHON = "/usr/bin/python3"
READY_TIMEOUT = 20.0


def podserver_argv(st: LabState, *args: str) -> list[str]:
    """The lab's pod server (its copy in the lab folder) with ``args``."""
    return [PYTHON, "-I", "-S", str(Path(st.dir) / "podserver.py"), *args]


def new_pod(st: LabState, w: Workload, node: str | None, exclude: Iterable[str] = ()) -> PodState:
    """A Pending pod of ``w`` (scheduled on ``node`` or by the scheduler) added to the state."""
    if node is None:
        node = workloads.schedule(w, st.nodes, st.pods.values(), st.workloads, exclude=exclude)
    st.counter += 1
    name = workloads.pod_name(w, st.spec.seed, st.counter)
    labels = dict(w.template.labels)
    labels["pod-template-hash"] = workloads.rs_hash(w, st.spec.seed)
    ports = [w.template.port] + ([w.template.sidecar_port] if w.template.sidecar_port else [])
    if w.template.container_ports:
        ports = sorted({cp.port for cp in w.template.container_ports})
    pod = PodState(
        name=name,
        namespace=w.namespace,
        node=node or "",
        labels=labels,
        owner=f"{w.kind}/{w.name}",
        ports=ports,
        container_ports=[cp.model_copy() for cp in w.template.container_ports],
        netns=netns_name(st.prefix, "p", f"{w.namespace}-{name}") if node else None,
        container_id=hashlib.sha256(f"{st.spec.name}/{name}/{st.counter}".encode()).hexdigest(),
        message="" if node else "0/N nodes are available: no schedulable node",
    )
    st.pods[pod.key] = pod
    return pod


def _containers(st: LabState, pod: PodState) -> list[ContainerState]:
    t = st.workloads[pod.workload_key].template
    assert pod.netns
    logs = Path(st.dir) / "logs"
    if t.kind == "dns":
        argv = net.exec_argv(pod.netns, dns.dnsmasq_argv(Path(st.dir) / "dns" / "hosts", t.port))
        return [ContainerState(name="coredns", argv=argv, port=t.port, log=str(logs / f"{pod.name}.log"))]
    base = podserver_argv(st, "--pod", pod.name, "--namespace", pod.namespace, "--node", pod.node)
    base += ["--app", t.app, "--version", t.version]
    if t.kind == "netpol":  # one process serves every declared port (upstream: one container per port)
        listens = [f"{cp.port}/{cp.protocol.lower()}" for cp in t.container_ports if cp.protocol != "SCTP"]
        argv = [*base, "--container", "serve"]
        for spec in listens:
            argv += ["--listen", spec]
        return [
            ContainerState(
                name="serve",
                argv=net.exec_argv(pod.netns, argv),
                port=t.port,
                listens=listens,
                log=str(logs / f"{pod.namespace}-{pod.name}.log"),
            )
        ]
    main = [*base, "--container", t.app, "--port", str(t.port)]
    for c in t.calls:
        main += ["--call", c]
    out = [
        ContainerState(
            name=t.app,
            argv=net.exec_argv(pod.netns, main),
            port=t.port,
            log=str(logs / f"{pod.name}.log"),
        )
    ]
    if t.sidecar_port:
        side = [*base, "--container", "sidecar", "--port", str(t.sidecar_port), "--bind", "127.0.0.1"]
        out.append(
            ContainerState(
                name="sidecar",
                argv=net.exec_argv(pod.netns, side),
                port=t.sidecar_port,
                log=str(logs / f"{pod.name}-sidecar.log"),
            )
        )
    return out


def launch(store: StateStore, st: LabState, pods: Sequence[PodState]) -> None:
    """Create namespaces, run CNI ADD (the node's own conflist), start containers, wait until ready."""
    pods = [p for p in pods if p.node and p.netns]
    if not pods:
        return
    _create_sandboxes(store, st, pods)
    _cni_add(st, pods)
    store.save(st)
    started = [p for p in pods if p.ip]
    _start_containers(store, st, started)
    _wait_ready(started)
    for p in started:
        for c in p.containers:
            assert c.pid
            c.start_time = sh.start_time(c.pid)
            st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}", c.pid, c.start_time)
    store.save(st)


def _create_sandboxes(store: StateStore, st: LabState, pods: Sequence[PodState]) -> None:
    netns = [p.netns for p in pods if p.netns]
    for ns in netns:
        st.record(ResourceKind.NETNS, ns)
        st.record(ResourceKind.DIR, str(net.NETNS_ETC / ns))
    store.save(st)
    net.create_netns(netns)
    for p in pods:
        assert p.netns
        fsutil.atomic_write_text(net.NETNS_ETC / p.netns / "resolv.conf", dns.resolv_conf(p.namespace))


def _cni_add(st: LabState, pods: Sequence[PodState]) -> None:
    """CNI ADD of every pod through its node's current conflist, the nodes in parallel. A pod that gets no
    network stays Pending (``FailedCreatePodSandBox``); on a node that is not running, it fails."""
    by_node: dict[str, list[PodState]] = {}
    for p in pods:
        by_node.setdefault(p.node, []).append(p)

    def one_node(node: str) -> None:
        n = st.nodes[node]
        if not n.holder_pid or not sh.alive(n.holder_pid):
            for p in by_node[node]:
                p.phase, p.message = PodPhase.FAILED, f"node {node} is not running"
            return
        inv = cni.CniInvoker(n.holder_pid)
        for p in by_node[node]:
            assert p.netns and p.container_id
            try:
                path, conf = cni.find_conflist(Path(n.dir) / "etc-cni-net.d")
                res = inv.add(
                    conf,
                    container_id=p.container_id,
                    netns=net.netns_path(p.netns),
                    pod=p.name,
                    namespace=p.namespace,
                )
            except MigratorError as exc:
                p.phase, p.message = PodPhase.PENDING, f"FailedCreatePodSandBox: {exc}"
                logger.warning("pod {}: {}", p.key, p.message)
                continue
            p.cni_conflist = json.dumps(conf)
            p.cni_result = res
            p.ip = cni.pod_ip(res)
            p.message = f"network from {path.name}"

    sh.parallel(one_node, list(by_node))


def _start_containers(store: StateStore, st: LabState, pods: Sequence[PodState]) -> None:
    for p in pods:
        p.containers = _containers(st, p)
        for c in p.containers:
            st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}")
    store.save(st)
    for p in pods:
        for c in p.containers:
            c.pid = sh.spawn(c.argv, log=Path(c.log))
            st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}", c.pid)
    store.save(st)


def _ready(p: PodState) -> bool:
    """Whether every container of ``p`` listens on its port; a container that exited fails the pod."""
    ok = True
    for c in p.containers:
        assert c.pid and c.port
        listens = c.listens or [f"{c.port}/{'udp' if c.name == 'coredns' else 'tcp'}"]
        if not all(
            net.listening(c.pid, int(port), udp=proto == "udp")
            for port, _, proto in (spec.partition("/") for spec in listens)
        ):
            ok = False
            if not sh.alive(c.pid):
                p.phase, p.message = PodPhase.FAILED, f"container {c.name} exited"
    return ok


def _wait_ready(pods: Sequence[PodState]) -> None:
    """Running once every container listens (bounded by :data:`READY_TIMEOUT`), else Failed."""
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(pods)
    while waiting and time.monotonic() < deadline:
        still: list[PodState] = []
        for p in waiting:
            ok = _ready(p)
            if p.phase == PodPhase.FAILED:
                continue
            if ok:
                p.phase = PodPhase.RUNNING
            else:
                still.append(p)
        waiting = still
        if waiting:
            time.sleep(0.02)
    for p in waiting:
        p.phase, p.message = PodPhase.FAILED, "not ready in time"


def stop(store: StateStore, st: LabState, pods: Sequence[PodState]) -> list[str]:
    """Kill containers, CNI DEL on the node, delete the namespace, forget the pod. Returns errors."""
    errors: list[str] = []
    sh.kill([(c.pid, c.start_time) for p in pods for c in p.containers if c.pid])

    def cni_del(p: PodState) -> None:
        n = st.nodes.get(p.node)
        if not (
            n and p.netns and p.cni_conflist and p.container_id and n.holder_pid and sh.alive(n.holder_pid)
        ):
            return
        try:
            cni.CniInvoker(n.holder_pid).delete(
                json.loads(p.cni_conflist),
                container_id=p.container_id,
                netns=net.netns_path(p.netns),
                pod=p.name,
                namespace=p.namespace,
                prev=p.cni_result,
            )
        except MigratorError as exc:
            errors.append(f"{p.key}: {exc}")

    sh.parallel(cni_del, pods)
    net.delete_netns([p.netns for p in pods if p.netns])
    for p in pods:
        if p.netns:
            shutil.rmtree(net.NETNS_ETC / p.netns, ignore_errors=True)
            st.forget(ResourceKind.NETNS, p.netns)
            st.forget(ResourceKind.DIR, str(net.NETNS_ETC / p.netns))
        for c in p.containers:
            st.forget(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}")
        st.pods.pop(p.key, None)
    store.save(st)
    return errors
