"""Ports: the only way the engine, actions and checks talk to a target.

A target is a cluster (control-plane objects), a node executor (node-level work through Ansible) and a
prober (reachability). The lab, a real Kubernetes cluster and the in-memory fakes used in tests all
implement these ``Protocol``s. Data crossing a port is plain frozen dataclasses, never a third-party
object.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from migrator.errors import PermanentError

CONTROL_PLANE_ROLE = "control-plane"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


# --------------------------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    roles: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    pod_cidr: str | None = None
    cni: str | None = None

    @property
    def is_control_plane(self) -> bool:
        return CONTROL_PLANE_ROLE in self.roles or CONTROL_PLANE_LABEL in self.labels


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str
    ip: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    owner: str | None = None
    host_network: bool = False
    ports: tuple[int, ...] = ()
    ready: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int
    protocol: str = "TCP"
    name: str = ""
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str | None
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[str, ...] = ()

    @property
    def dns_name(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class DrainResult:
    node: str
    evicted: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@runtime_checkable
class Cluster(Protocol):
    """Control-plane view of a target: nodes, pods, services and the operations on them."""

    def identity(self) -> str:
        """A stable identity of the cluster (a run refuses to resume against another one)."""
        ...

    def list_nodes(self) -> list[Node]: ...

    def get_node(self, name: str) -> Node: ...

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        """Set labels; a value of ``None`` removes the label. Idempotent."""
        ...

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        """Cordon (``False``) or uncordon (``True``). Idempotent."""
        ...

    def drain_node(self, name: str, *, timeout: float, cancel: threading.Event | None = None) -> DrainResult:
        """Evict the node's evictable pods; they are rescheduled elsewhere. Idempotent."""
        ...

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]: ...

    def list_services(self, namespace: str | None = None) -> list[Service]: ...

    def restart_pods(self, node: str) -> list[str]:
        """Recreate the node's non-hostNetwork pods so that they get the node's current CNI."""
        ...


# ----------------------------------------------------------------------------------------- node executor


class RunnerStatus(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


@dataclass(frozen=True)
class PlaybookRequest:
    playbook: Path
    hosts: tuple[str, ...]
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    secret_vars: frozenset[str] = frozenset()
    check: bool = False
    diff: bool = False
    become: bool = False
    timeout: float = 600.0
    forks: int = 10


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    failed_task: str | None = None
    message: str | None = None
    diffs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class PlaybookResult:
    status: RunnerStatus
    hosts: Mapping[str, HostResult]
    artifacts_dir: Path | None = None

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


class NodeExecutor(Protocol):
    """Runs node-level work (Ansible playbooks) on a set of nodes."""

    def inventory_hosts(self) -> list[str]: ...

    def run_playbook(
        self,
        request: PlaybookRequest,
        *,
        data_dir: Path,
        cancel: threading.Event | None = None,
        on_event: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> PlaybookResult: ...


# ------------------------------------------------------------------------------------------------ prober


class ProbeKind(StrEnum):
    CONTAINER = "container"  # localhost inside a pod
    POD_SAME_NODE = "pod-same-node"
    POD_CROSS_NODE = "pod-cross-node"
    SERVICE_IP = "service-ip"
    SERVICE_DNS = "service-dns"
    NODE_TO_POD = "node-to-pod"
    NODEPORT = "nodeport"  # from outside the cluster
    DNS = "dns"


class ProbeProtocol(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    DNS = "dns"


@dataclass(frozen=True)
class ProbeTarget:
    """One probe: from ``source`` (a pod key, a node name or ``outside``) to ``host:port``."""

    source: str
    dest: str
    kind: ProbeKind
    host: str
    port: int
    protocol: ProbeProtocol = ProbeProtocol.TCP
    path: str = "/"
    expect_status: int | None = 200
    expect_body: str | None = None
    timeout: float = 1.0


@dataclass(frozen=True)
class ProbeResult:
    source: str
    dest: str
    kind: ProbeKind
    ok: bool
    latency_ms: float | None
    error: str | None = None
    ts: float = 0.0


class ContinuousProbe(Protocol):
    """A running continuous probe; ``stop`` ends it and returns every result."""

    def snapshot(self) -> list[ProbeResult]: ...

    def stop(self) -> list[ProbeResult]: ...


class Prober(Protocol):
    def probe(self, targets: Sequence[ProbeTarget], *, concurrency: int = 256) -> list[ProbeResult]: ...

    def start_continuous(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousProbe: ...


# ------------------------------------------------------------------------------------------------ target


class RunLock(Protocol):
    """The lock a run holds on its target from start to end (the engine's local lock file, or one the
    target provides, e.g. a Kubernetes Lease)."""

    def acquire(self, *, force_unlock: str | None = None) -> None: ...

    def release(self) -> None: ...


@runtime_checkable
class LosableLock(RunLock, Protocol):
    """A run lock that another run can take over while this one holds it (a lease that is not renewed)."""

    def watch_lost(self, stop: Callable[[str], None]) -> None:
        """Call ``stop(reason)`` when the lock is lost."""
        ...


@dataclass
class Target:
    """Everything a run needs to reach one target, and what it offers beyond the ports.

    ``executor`` is ``None`` on a target without node access; ``no_executor`` then says why (and how to
    give one), in the error of every step that needs it. ``apiserver_endpoint`` (``ip:port``) is the
    control-plane endpoint ``fault.apiserver`` cuts by default. ``run_lock`` (run id -> lock) replaces the
    engine's local lock file; ``read_snapshot`` is a context manager a dry run enters so that its reads are
    served from one listing per resource. ``markers_dir`` is where the demo actions keep their markers
    (``None``: the run folder).
    """

    name: str
    cluster: Cluster
    executor: NodeExecutor | None = None
    prober: Prober | None = None
    inventory: Path | None = None
    no_executor: str | None = None
    apiserver_endpoint: str | None = None
    run_lock: Callable[[str], RunLock] | None = None
    read_snapshot: Callable[[], AbstractContextManager[object]] | None = None
    markers_dir: Path | None = None

    def node_executor(self, what: str) -> NodeExecutor:
        """The node executor; :class:`~migrator.errors.PermanentError` naming ``what`` needs it if none."""
        if self.executor is None:
            why = self.no_executor or "no Ansible inventory"
            raise PermanentError(f"target {self.name} has no node executor ({why}): {what}")
        return self.executor


# ----------------------------------------------------------------------------------------------- CNI ops


class CniSource(StrEnum):
    """A cluster's pod network, as detected (the source of a migration when several are present)."""

    FLANNEL = "flannel"
    CALICO = "calico"
    CANAL = "canal"
    WEAVE = "weave"
    CILIUM = "cilium"
    UNKNOWN = "unknown"


class CniAgent(StrEnum):
    """The node agents (DaemonSets) a CNI migration installs, restricts and removes."""

    FLANNEL = "flannel"
    CALICO = "calico-node"


class CalicoMode(StrEnum):
    VXLAN = "vxlan"
    BGP = "bgp"


MIGRATION_LABEL = "projectcalico.org/node-network-during-migration"
"""Node label of a live flannel -> Calico migration: ``flannel`` (flannel's DaemonSet selects the node),
``calico`` (calico-node selects it) or ``switching`` (neither: the node is between the two)."""


@dataclass(frozen=True)
class CniNodeInfo:
    """What the source CNI recorded for one node: the values Calico must keep while both run."""

    name: str
    pod_cidr: str | None = None
    vtep_ip: str | None = None
    vtep_mac: str | None = None
    public_ip: str | None = None
    cni: str | None = None
    """The network the node's kubelet uses now (``flannel``, ``calico``, ``none``...), when known."""


@dataclass(frozen=True)
class CalicoPoolInfo:
    name: str
    cidr: str
    vxlan_mode: str | None = None
    ipip_mode: str | None = None
    block_size: int | None = None
    disabled: bool = False


@dataclass(frozen=True)
class CniInfo:
    """The detected pod network of a target and the settings a wire-compatible migration needs.

    ``source`` is the migration source when several CNIs are present (``present``), for example flannel
    half-way through a migration to Calico. Flannel fields come from ``net-conf.json`` (the
    ``kube-flannel-cfg`` ConfigMap) or ``/run/flannel/subnet.env``; ``nodes`` from the node annotations
    (``flannel.alpha.coreos.com/*``) and ``spec.podCIDR``.
    """

    source: CniSource
    present: tuple[CniSource, ...] = ()
    network: str | None = None
    subnet_len: int = 24
    backend: str = "vxlan"
    vni: int = 1
    port: int = 8472
    mtu: int | None = None
    masquerade: bool = True
    direct_routing: bool = False
    nodes: Mapping[str, CniNodeInfo] = field(default_factory=dict)
    calico_pools: tuple[CalicoPoolInfo, ...] = ()
    agents: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Installed CNI agents (``CniAgent`` value) and their node selectors."""

    def migration_blockers(self) -> list[str]:
        """Why a live, wire-compatible flannel -> Calico migration cannot start (empty when it can)."""
        if self.source is not CniSource.FLANNEL:
            if self.source is CniSource.UNKNOWN:
                return ["no CNI was recognised (flannel, Calico, Canal, Weave Net or Cilium)"]
            if self.source is CniSource.CALICO:
                return ["the cluster already runs Calico: there is nothing to migrate from"]
            return [
                f"{self.source} is recognised as the source CNI, but migrating from it is not supported yet "
                "(only flannel with the VXLAN backend is)"
            ]
        problems: list[str] = []
        if self.backend.lower() != "vxlan":
            problems.append(f"flannel backend {self.backend!r} is not vxlan (only VXLAN is wire-compatible)")
        if self.direct_routing:
            problems.append("flannel DirectRouting is on (Calico cannot keep those direct routes)")
        problems.extend(self.conflicting_pools())
        return problems

    def conflicting_pools(self) -> list[str]:
        """Enabled Calico pools that overlap flannel's network but are not that network in VXLAN mode."""
        if not self.network:
            return []
        net = ipaddress.ip_network(self.network, strict=False)
        out: list[str] = []
        for pool in self.calico_pools:
            if pool.disabled:
                continue
            try:
                cidr = ipaddress.ip_network(pool.cidr, strict=False)
            except ValueError:
                continue
            if not cidr.overlaps(net):
                continue
            same = cidr == net and (pool.vxlan_mode or "").lower() in ("always", "crosssubnet")
            if not same or (pool.block_size is not None and pool.block_size != self.subnet_len):
                out.append(
                    f"Calico IPPool {pool.name} ({pool.cidr}, vxlanMode={pool.vxlan_mode}, "
                    f"blockSize={pool.block_size}) conflicts with flannel's network {self.network}/"
                    f"{self.subnet_len} in VXLAN mode"
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class CniOps(Protocol):
    """CNI operations of a live flannel -> Calico migration; a :class:`Cluster` may also implement them.

    The migration actions (``migrator.actions.cni``) use only these methods plus the :class:`Cluster` and
    :class:`NodeExecutor` ports. Every mutating method is idempotent. On a real cluster they map to:

    - ``detect_cni``: DaemonSets (all namespaces), the ``kube-flannel-cfg`` ConfigMap (``net-conf.json``),
      node annotations ``flannel.alpha.coreos.com/{backend-data,public-ip}`` and ``spec.podCIDR``,
      Calico ``IPPool`` objects (when the CRD exists). Canal, Weave Net and Cilium are recognised.
    - ``apply_cni_agent(FLANNEL, node_selector={MIGRATION_LABEL: "flannel"})``: a server-side apply patch of
      the flannel DaemonSet's ``spec.template.spec.nodeSelector`` (``None`` removes the key).
      ``apply_cni_agent(CALICO, node_selector, config)``: server-side apply of the user's Calico manifest
      (``config["manifest"]``) with the DaemonSet's node selector set, an ``IPPool`` equal to flannel's
      network (``blockSize`` = flannel's subnet length, ``vxlanMode: Always``, ``natOutgoing`` = flannel's
      masquerade), ``FelixConfiguration`` ``vxlanVNI``/``vxlanPort``/``vxlanMTU`` = flannel's, one IPAM
      block per node = its flannel pod CIDR, and the ``projectcalico.org/IPv4VXLANTunnelAddr`` /
      ``IPv4VXLANTunnelMACAddr`` node annotations = flannel's VTEP IP/MAC. ``dry_run=True`` is a
      server-side dry run; the returned lines say what would change.
    - ``delete_cni_agent``: delete the DaemonSet (the agent's node-level leftovers stay: playbooks remove
      them).
    - ``cni_agent_ready(agent, node)``: the agent's pod on the node is Ready (``wait_daemonset_pod_ready``)
      and the node's kubelet network is that CNI (``Node.cni``).
    - ``set_calico_mode(node, mode)``: BGP vs VXLAN routing for one node. On a real cluster: the node's
      ``BGPConfiguration``/``IPPool`` change is cluster-wide, so per node it means labelling the node
      ``lab.migrator.io/calico-mode`` that the user's per-node ``IPPool`` node selectors use.
    - ``resync_cni``: make the agents notice node-level changes done behind their back (the lab
      re-reconciles; a real cluster's agents watch, so it is a no-op there).
    """

    def detect_cni(self) -> CniInfo: ...

    def apply_cni_agent(
        self,
        agent: CniAgent,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Create or update the agent's DaemonSet with this node selector (``None``/empty: every node) and
        config (calico-node: ``mode`` vxlan|bgp, ``peering`` full-mesh|route-reflector, ``reflectors``,
        ``manifest``). Returns what was (or, with ``dry_run``, would be) changed, as readable lines."""
        ...

    def delete_cni_agent(self, agent: CniAgent, *, dry_run: bool = False) -> list[str]:
        """Delete the agent's DaemonSet and its pods (no-op when absent)."""
        ...

    def cni_agent_ready(self, agent: CniAgent, node: str) -> tuple[bool, str]:
        """(ready, reason): the agent's pod on ``node`` runs and is ready."""
        ...

    def set_calico_mode(self, node: str, mode: CalicoMode | None) -> None:
        """Route this node's pod traffic over VXLAN or BGP (``None``: the DaemonSet's default)."""
        ...

    def resync_cni(self) -> None:
        """Let the CNI agents re-read the nodes (after a playbook removed devices)."""
        ...
