"""The emulated control plane: node labels and cordons, drain, pod restarts, the controllers' reconcile, and
kube-proxy (services, endpoints, the KUBE-* chains on every node).

Pods are created and removed by the kubelet (:mod:`migrator.lab.kubelet`), node agents by the DaemonSet
controller (:mod:`migrator.lab.agents`). Every function works on a loaded :class:`LabState` whose lab lock
the caller (:class:`migrator.lab.lab.Lab`) holds.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from loguru import logger

from migrator.errors import StepFailed, StepTimeout, UsageError
from migrator.lab import agents, kubelet, net, netpol, services, sh, weave
from migrator.lab.spec import CONTROL_PLANE_LABEL, POD_NETWORK, CniKind
from migrator.lab.state import LabState, NodeState, PodPhase, PodState, StateStore

# ----------------------------------------------------------------------------------------- kube-proxy


def endpoints(st: LabState, key: str) -> list[str]:
    """The IPs of the running pods that service ``key`` selects, in address order."""
    svc = st.services[key]
    out: list[str] = []
    for p in st.pods.values():
        if (
            p.namespace == svc.namespace
            and p.phase == PodPhase.RUNNING
            and p.ip
            and all(p.labels.get(k) == v for k, v in svc.selector.items())
        ):
            out.append(p.ip)
    return sorted(out, key=ipaddress.IPv4Address)


def _rules(st: LabState) -> list[services.ServicePortRules]:
    out: list[services.ServicePortRules] = []
    for key, svc in st.services.items():
        ips = endpoints(st, key)
        for sp in svc.ports:
            out.append(
                services.ServicePortRules(
                    namespace=svc.namespace,
                    name=svc.name,
                    port_name=sp.name,
                    protocol=sp.protocol,
                    cluster_ip=svc.cluster_ip,
                    port=sp.port,
                    node_port=sp.node_port,
                    endpoints=tuple(services.Endpoint(ip, sp.target_port) for ip in ips),
                )
            )
    return out


KUBE_PROXY = "kube-system/kube-proxy"
CLUSTER_CIDR_KEY = "cluster_cidr"  # kube-proxy DaemonSet config: its --cluster-cidr


def cluster_cidr(st: LabState) -> str:
    """kube-proxy's ``--cluster-cidr`` (traffic to a ClusterIP from outside it is masqueraded): the kube-proxy
    DaemonSet's config key ``cluster_cidr``, else the lab's pod network (Weave Net's default
    ``IPALLOC_RANGE`` for ``--cni weave``, 10.244.0.0/16 otherwise)."""
    kp = st.workloads.get(KUBE_PROXY)
    if kp is not None and kp.template.config.get(CLUSTER_CIDR_KEY):
        return kp.template.config[CLUSTER_CIDR_KEY]
    if st.spec.cni == CniKind.WEAVE:
        return weave.DEFAULT_RANGE
    return str(POD_NETWORK)


def sync_services(store: StateStore, st: LabState) -> None:
    """kube-proxy's sync loop, once: rewrite the KUBE-* chains on every node; then the policy agents
    follow the pods (every pod change ends here)."""
    rules = _rules(st)
    cidr = cluster_cidr(st)

    def one(n: NodeState) -> None:
        res = services.render(rules, cidr, stale=n.kube_chains)
        sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=res.text)
        n.kube_chains = list(res.chains)

    sh.parallel(one, st.nodes.values())
    store.save(st)
    netpol.reconcile(store, st)


# ------------------------------------------------------------------------------------------ workloads


def start_workloads(store: StateStore, st: LabState) -> None:
    """The controllers' first pass over a new lab: the DaemonSets' agents, then the Deployments' pods, then
    the services. Raises :class:`StepFailed` if an agent or a pod did not start."""
    agents.reconcile_daemonsets(store, st)
    failed = [
        f"{p.key}: {p.message}" for p in st.pods.values() if p.host_network and p.phase != PodPhase.RUNNING
    ]
    if failed:
        raise StepFailed(f"node agents failed: {'; '.join(failed)}")
    new_pods = [
        kubelet.new_pod(st, w, None)
        for w in st.workloads.values()
        if w.kind != "DaemonSet"
        for _ in range(w.replicas)
    ]
    kubelet.launch(store, st, new_pods)
    sync_services(store, st)
    bad = [p.key for p in new_pods if p.phase != PodPhase.RUNNING]
    if bad:
        raise StepFailed(f"pods did not start: {', '.join(bad)}")


def _replace(
    store: StateStore, st: LabState, old: Sequence[PodState], node: str | None, exclude: Iterable[str] = ()
) -> tuple[list[PodState], list[str]]:
    """Delete ``old`` and start one new pod of each one's workload (on ``node``, else where the scheduler
    puts it, never on ``exclude``); the services follow. Returns (new pods, CNI DEL errors)."""
    owners = [st.workloads[p.workload_key] for p in old]
    errors = kubelet.stop(store, st, old)
    new = [kubelet.new_pod(st, w, node, exclude=exclude) for w in owners]
    kubelet.launch(store, st, new)
    sync_services(store, st)
    return new, errors


def _terminate(store: StateStore, st: LabState, pods: Sequence[PodState]) -> None:
    """Eviction's first half: the pods leave the services' endpoints before they stop."""
    for p in pods:
        p.phase = PodPhase.TERMINATING
    sync_services(store, st)


# -------------------------------------------------------------------------------------------- nodes


def node(st: LabState, name: str) -> NodeState:
    if name not in st.nodes:
        raise UsageError(f"lab {st.spec.name!r} has no node {name!r} (nodes: {', '.join(st.nodes)})")
    return st.nodes[name]


def label_node(store: StateStore, st: LabState, name: str, labels: Mapping[str, str | None]) -> None:
    n = node(st, name)
    for k, v in labels.items():
        if v is None:
            n.labels.pop(k, None)
        else:
            n.labels[k] = v
    if CONTROL_PLANE_LABEL in n.labels and "control-plane" not in n.roles:
        n.roles.append("control-plane")
    if CONTROL_PLANE_LABEL not in n.labels and "control-plane" in n.roles:
        n.roles.remove("control-plane")
    store.save(st)
    agents.reconcile_daemonsets(store, st)


def set_schedulable(store: StateStore, st: LabState, name: str, schedulable: bool) -> None:
    node(st, name).schedulable = schedulable
    store.save(st)


def drain(
    store: StateStore,
    st: LabState,
    name: str,
    *,
    timeout: float,
    started: float,
    cancel: threading.Event | None = None,
) -> tuple[list[str], list[str]]:
    """Cordon, evict the node's pods (DaemonSet pods are skipped) and reschedule them elsewhere, within
    ``timeout`` seconds from ``started`` (``time.monotonic()``, before the lab's lock was taken).

    Returns (evicted pod keys, skipped pod keys). Replacements get new names and new IPs.
    """
    n = node(st, name)
    n.schedulable = False
    on_node = [p for p in st.pods.values() if p.node == name]
    skipped = [p.key for p in on_node if p.host_network or (p.owner or "").startswith("DaemonSet/")]
    victims = [p for p in on_node if p.key not in skipped]
    if not victims:
        store.save(st)
        return [], skipped
    _terminate(store, st, victims)
    if cancel is not None and cancel.is_set():
        raise StepFailed("drain canceled", node=name)
    replacements, errors = _replace(store, st, victims, None, exclude=[name])
    if errors:
        logger.warning("drain {}: CNI DEL errors: {}", name, "; ".join(errors))
    if time.monotonic() > started + timeout:
        raise StepTimeout(f"drain of {name} took longer than {timeout}s", node=name)
    bad = [f"{p.key}: {p.message}" for p in replacements if p.phase != PodPhase.RUNNING]
    if bad:
        logger.warning("drain {}: replacements not running: {}", name, "; ".join(bad))
    return [p.key for p in victims], skipped


def restart_pods(store: StateStore, st: LabState, name: str) -> list[str]:
    """Recreate the node's non-hostNetwork pods on the same node through the node's current CNI config.

    Returns the keys of the new pods. Raises :class:`StepFailed` if some could not get a network.
    """
    node(st, name)
    old = [p for p in st.pods.values() if p.node == name and not p.host_network]
    _terminate(store, st, old)
    new, _errors = _replace(store, st, old, name)
    bad = [f"{p.key}: {p.message}" for p in new if p.phase != PodPhase.RUNNING]
    if bad:
        raise StepFailed(f"pods on {name} did not come back: {'; '.join(bad)}", node=name)
    return [p.key for p in new]


def apply_daemonset(
    store: StateStore,
    st: LabState,
    agent: str,
    node_selector: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
) -> str:
    """:func:`migrator.lab.agents.apply_daemonset`; kube-proxy's (config ``cluster_cidr``) re-syncs the
    services at once, as kube-proxy restarting with a new ``--cluster-cidr`` would."""
    key = agents.apply_daemonset(store, st, agent, node_selector, config)
    if key == KUBE_PROXY:
        sync_services(store, st)
    return key


def reconcile(store: StateStore, st: LabState) -> list[str]:
    """Re-run the controllers once: DaemonSet agents, and pods that are Pending, Failed or whose
    processes died are replaced (after an uncordon, a CNI fix, a killed pod). Returns the started keys."""
    agents.reconcile_daemonsets(store, st)
    for p in st.pods.values():
        dead = not all(sh.alive(c.pid, c.start_time) for c in p.containers)
        if p.phase == PodPhase.RUNNING and dead:
            p.phase, p.message = PodPhase.FAILED, "a container exited"
    stuck = [
        p for p in st.pods.values() if p.phase in (PodPhase.PENDING, PodPhase.FAILED) and not p.host_network
    ]
    if not stuck:
        return []
    new, _errors = _replace(store, st, stuck, None)
    return [p.key for p in new if p.phase == PodPhase.RUNNING]
