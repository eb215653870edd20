"""Ports: the only way the engine, actions and checks talk to a target.

A target is a cluster (control-plane objects), a node executor (node-level work through Ansible) and a
prober (reachability). The lab, a real Kubernetes cluster and the in-memory fakes used in tests all
implement these ``Protocol``s. Data crossing a port is plain frozen dataclasses, never a third-party
object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from migrator.cni.ops import CniOps
from migrator.errors import PermanentError

# re-exported (mypy's explicit "X as X" form): the policy vocabulary crosses the port
from migrator.policy.model import ContainerPort as ContainerPort  # noqa: PLC0414
from migrator.policy.model import Namespace as Namespace  # noqa: PLC0414
from migrator.policy.model import NetworkPolicy as NetworkPolicy  # noqa: PLC0414

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
    container_ports: tuple[ContainerPort, ...] = ()  # every declared port (TCP/UDP/SCTP, named or not)

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

    def list_namespaces(self) -> list[Namespace]:
        """Every namespace with its labels (``kubernetes.io/metadata.name`` included)."""
        ...

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        """The NetworkPolicies (networking.k8s.io/v1), parsed."""
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


@runtime_checkable
class HeartbeatSource(Protocol):
    """A node executor that can keep a heartbeat file fresh on nodes while this process lives (fault
    leases; :mod:`migrator.targets.ansible.heartbeat`). Optional: an executor without it gets TTL-only
    faults."""

    def start_heartbeat(self, hosts: Sequence[str], *, become: bool = False) -> str: ...


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
    POLICY = "policy"  # pod to pod on one declared port/protocol, allowed or denied by NetworkPolicy


class ProbeProtocol(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    DNS = "dns"
    UDP = "udp"  # one datagram, a reply expected (the pod servers echo); ICMP port unreachable is "refused"


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
    """When the probe was sent (``time.time()`` of the prober)."""
    elapsed_ms: float | None = None
    """How long after ``ts`` its outcome was known, ok or not (``None``: the prober does not say)."""

    @property
    def done(self) -> float | None:
        """When the outcome was known (``ts`` + ``elapsed_ms``), ``None`` when the prober does not say."""
        return None if self.elapsed_ms is None else self.ts + self.elapsed_ms / 1000.0


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
    give one), in the error of every step that needs it. ``cni`` is the :class:`~migrator.cni.CniOps`
    port of a target that can run a CNI migration (``None``: the ``cni.*`` steps refuse it).
    ``apiserver_endpoint`` (``ip:port``) is the control-plane endpoint ``fault.apiserver`` cuts by
    default. ``run_lock`` (run id -> lock) replaces the engine's local lock file; ``read_snapshot`` is a
    context manager a dry run enters so that its reads are served from one listing per resource.
    ``markers_dir`` is where the demo actions keep their markers (``None``: the run folder).
    """

    name: str
    cluster: Cluster
    executor: NodeExecutor | None = None
    prober: Prober | None = None
    cni: CniOps | None = None
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
