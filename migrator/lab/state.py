"""The lab state store: one JSON file per lab, written atomically, guarded by a file lock.

Every kernel object, process and file the lab makes is recorded here *before* it is created, so that
``lab down`` can remove everything even after ``lab up`` was killed midway.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from migrator import fsutil, paths
from migrator.errors import TemporaryError, UsageError
from migrator.lab.spec import LabSpec

STATE_VERSION = 1


class LabPhase(StrEnum):
    CREATING = "creating"
    UP = "up"
    FAILED = "failed"
    DELETING = "deleting"


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    TERMINATING = "Terminating"
    FAILED = "Failed"


class ResourceKind(StrEnum):
    NETNS = "netns"
    LINK = "link"  # an interface in the host namespace
    PROCESS = "process"
    FILE = "file"
    DIR = "dir"  # a folder the lab created (removed recursively)
    EMPTY_DIR = "empty-dir"  # a host folder the lab created as a mount point (removed only if empty)


class Resource(BaseModel):
    kind: ResourceKind
    name: str  # netns/link name, file path or process label
    pid: int | None = None
    start_time: int | None = None  # /proc/<pid>/stat field 22, guards against pid reuse


class Capability(BaseModel):
    name: str
    available: bool
    detail: str = ""


class ContainerState(BaseModel):
    name: str
    argv: list[str]
    pid: int | None = None
    start_time: int | None = None
    port: int | None = None
    log: str = ""
    listens: list[str] = Field(default_factory=list)  # "80/tcp", "81/udp": every socket it must open


class ContainerPortState(BaseModel):
    """A declared container port, as a pod spec has it (``container`` is the container that declares it)."""

    port: int
    protocol: str = "TCP"  # TCP | UDP | SCTP
    name: str = ""
    container: str = ""


class NamespaceState(BaseModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)  # kubernetes.io/metadata.name always set


class PolicyState(BaseModel):
    """A NetworkPolicy as applied (``raw``: the object, for display; validated when stored)."""

    namespace: str
    name: str
    raw: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class NetpolNodeState(BaseModel):
    """What the policy agent last programmed on a node, and how long its reconciles took."""

    agent: str | None = None  # "felix" etc.; None: the node's CNI agent does not enforce policy
    engine: str | None = None  # whose hooks, chains and sets are programmed (None with some: felix's, older)
    hooked: bool = False  # the top chains are jumped from FORWARD/INPUT
    chains: list[str] = Field(default_factory=list)
    sets: list[str] = Field(default_factory=list)
    pods: dict[str, str] = Field(default_factory=dict)  # local pod IP -> digest of its programmed rules
    times_ms: list[float] = Field(default_factory=list)  # last reconciles (bounded)
    generation: int = 0


class PodTemplate(BaseModel):
    """What a pod runs: ``http`` (the pod server), ``netpol`` (the pod server on every ``container_ports``
    entry, TCP and UDP), ``dns`` (dnsmasq) or ``agent`` (a host-network node agent the lab emulates: ``app``
    is ``flannel``, ``calico-node`` or ``kube-proxy``)."""

    kind: str = "http"
    app: str
    version: str = "v1"
    port: int = 9080
    calls: list[str] = Field(default_factory=list)  # "host:port" called on every request
    sidecar_port: int | None = None  # a second container listening on localhost only
    container_ports: list[ContainerPortState] = Field(default_factory=list)  # kind "netpol": served ports
    config: dict[str, str] = Field(default_factory=dict)  # agents: e.g. calico-node {"mode": "bgp"}
    labels: dict[str, str] = Field(default_factory=dict)


class Workload(BaseModel):
    """A Deployment (``replicas``), a DaemonSet (one host-network pod per node) or a bare ``Pod`` (one pod
    named exactly like the workload; the lab recreates it under the same name on restarts and drains)."""

    name: str
    namespace: str
    kind: str = "Deployment"
    replicas: int = 1
    template: PodTemplate
    host_network: bool = False
    node_selector: dict[str, str] = Field(default_factory=dict)  # DaemonSets: nodes whose labels match

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodState(BaseModel):
    name: str
    namespace: str
    node: str
    ip: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | None = None  # "Deployment/default/details-v1" or "DaemonSet/..."
    host_network: bool = False
    ports: list[int] = Field(default_factory=list)
    container_ports: list[ContainerPortState] = Field(default_factory=list)
    phase: PodPhase = PodPhase.PENDING
    netns: str | None = None
    container_id: str | None = None
    cni_conflist: str | None = None
    cni_result: dict[str, object] | None = None
    containers: list[ContainerState] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    message: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_key(self) -> str:
        """The key (``namespace/name``) of the workload that owns the pod, in ``LabState.workloads``."""
        return f"{self.namespace}/{(self.owner or '').split('/', 1)[-1]}"


class ServicePortState(BaseModel):
    name: str = ""
    port: int
    target_port: int
    protocol: str = "TCP"
    node_port: int | None = None


class ServiceState(BaseModel):
    name: str
    namespace: str
    cluster_ip: str
    ports: list[ServicePortState]
    selector: dict[str, str]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class NodeState(BaseModel):
    name: str
    index: int
    ip: str
    netns: str
    pod_cidr: str
    vtep_ip: str
    vtep_mac: str
    roles: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    schedulable: bool = True
    cni: str = "flannel"
    dir: str
    holder_pid: int | None = None
    sshd_pid: int | None = None
    bird_pid: int | None = None  # calico-node in BGP mode
    bird_start: int | None = None
    kube_chains: list[str] = Field(default_factory=list)  # KUBE-SVC/SEP chains last applied
    netpol: NetpolNodeState = Field(default_factory=NetpolNodeState)


class LabState(BaseModel):
    version: int = STATE_VERSION
    spec: LabSpec
    prefix: str
    dir: str
    phase: LabPhase = LabPhase.CREATING
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    message: str = ""
    host_veth: str
    host_ip: str
    fabric_netns: str
    outside_netns: str
    outside_ip: str
    inventory: str
    ssh_key: str
    capabilities: list[Capability] = Field(default_factory=list)
    nodes: dict[str, NodeState] = Field(default_factory=dict)
    pods: dict[str, PodState] = Field(default_factory=dict)
    workloads: dict[str, Workload] = Field(default_factory=dict)
    services: dict[str, ServiceState] = Field(default_factory=dict)
    namespaces: dict[str, NamespaceState] = Field(default_factory=dict)
    policies: dict[str, PolicyState] = Field(default_factory=dict)  # by "namespace/name"
    resources: list[Resource] = Field(default_factory=list)
    counter: int = 0  # feeds pod-name suffixes and container ids (deterministic with the seed)
    apiserver: str | None = None  # "ip:port" of the control-plane endpoint (a listener on the control plane)

    def record(self, kind: ResourceKind, name: str, pid: int | None = None, start: int | None = None) -> None:
        for res in self.resources:
            if res.kind == kind and res.name == name:
                if pid is not None:
                    res.pid, res.start_time = pid, start
                return
        self.resources.append(Resource(kind=kind, name=name, pid=pid, start_time=start))

    def forget(self, kind: ResourceKind, name: str) -> None:
        self.resources = [r for r in self.resources if not (r.kind == kind and r.name == name)]


def lab_dir(name: str) -> Path:
    return paths.labs_dir() / name


class StateStore:
    """Load/save one lab's state; ``lock()`` serialises every mutating operation on the lab."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = lab_dir(name)
        self.path = self.dir / "state.json"
        self.lock_path = paths.labs_dir() / f".{name}.lock"

    def load(self) -> LabState | None:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return LabState.model_validate_json(raw)
        except ValueError as exc:  # pydantic.ValidationError: unreadable state (other version, corruption)
            raise UsageError(
                f"lab state {self.path} is unreadable ({exc.__class__.__name__}); `migrator lab down` "
                "still removes the lab by its name prefix"
            ) from exc

    def save(self, state: LabState) -> None:
        state.updated_at = time.time()
        fsutil.atomic_write_text(self.path, state.model_dump_json(indent=1) + "\n", mode=0o600)

    @contextmanager
    def lock(self, timeout: float = 60.0) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TemporaryError(
                            f"lab {self.name!r} is locked by another operation", 2.0
                        ) from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)
