"""``KubeCluster``: the :class:`migrator.ports.Cluster` port on a real cluster, with the official client.

It is composed of one object per job, each in its module (they share the :class:`KubeApi`, the read
snapshot and the node Events):

- :mod:`.nodes` (:class:`NodeOps`): list, read, label, cordon and uncordon nodes;
- :mod:`.pods` (:class:`PodOps`): list pods, wait until some are gone, restart a node's pods;
- :mod:`.services` (:class:`ServiceOps`): services with their ready endpoints;
- :mod:`.drain` (:class:`Drainer`): drain like ``kubectl drain`` (Eviction API, PDBs) and its preview;
- :mod:`.manifests` (:class:`Manifests`): server-side apply, delete, wait for any object;
- :mod:`.workloads` (:class:`Workloads`): DaemonSet scheduling, their pods, rollouts;
- :mod:`.policies` (:class:`PolicyOps`): namespaces with their labels, NetworkPolicies (parsed);
- :mod:`.snapshot` (the read snapshot of a dry run) and :mod:`.events` (Events on touched nodes).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from migrator.ports import Cluster
from migrator.targets.kube.api import FIELD_MANAGER, KubeApi, load_api_client
from migrator.targets.kube.drain import Drainer, DrainPreview, PodDisposition
from migrator.targets.kube.events import NodeEvents
from migrator.targets.kube.lock import LeaseLock
from migrator.targets.kube.manifests import ApplyAction, ApplyConflict, ApplyResult, Manifests, Propagation
from migrator.targets.kube.nodes import NodeOps
from migrator.targets.kube.pods import PodOps
from migrator.targets.kube.policies import PolicyOps
from migrator.targets.kube.services import ServiceOps
from migrator.targets.kube.snapshot import Snapshots
from migrator.targets.kube.workloads import RolloutKind, RolloutStatus, Workloads

__all__ = [  # the names callers import from here (they live in the modules of their jobs)
    "FIELD_MANAGER",
    "ApplyAction",
    "ApplyConflict",
    "ApplyResult",
    "DrainPreview",
    "KubeCluster",
    "PodDisposition",
    "Propagation",
    "RolloutKind",
    "RolloutStatus",
]


P = ParamSpec("P")
R = TypeVar("R")


class _Via(Generic[P, R]):
    """A method of :class:`KubeCluster` that is the method of the same name of one of its parts
    (``cluster.drain_node(...)`` is ``cluster.drainer.drain_node(...)``); mypy sees its signature."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.part = part
        self.name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _Via[P, R]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)


class KubeCluster:
    """A real Kubernetes cluster behind the :class:`~migrator.ports.Cluster` port.

    ``run_id`` and ``purpose`` make every touched node get a Kubernetes Event ("cordoned by migrator run
    X for CNI migration"). ``delete_emptydir_data`` and ``force`` behave like the kubectl drain flags.
    """

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: Any = None,
        run_id: str | None = None,
        purpose: str = "CNI migration",
        delete_emptydir_data: bool = False,
        force: bool = False,
        eviction_grace_seconds: int | None = None,
        page_size: int = 500,
        request_timeout: float = 30.0,
        read_attempts: int = 3,
        watch_chunk: float = 5.0,
        event_namespace: str = "default",
    ) -> None:
        if api_client is None:
            api_client = load_api_client(kubeconfig, context)
        self.api = KubeApi(
            api_client,
            page_size=page_size,
            request_timeout=request_timeout,
            read_attempts=read_attempts,
            watch_chunk=watch_chunk,
        )
        self.snapshots = Snapshots()
        self.events = NodeEvents(self.api, run_id=run_id, purpose=purpose, namespace=event_namespace)
        self.nodes = NodeOps(self.api, self.snapshots, self.events)
        self.pods = PodOps(self.api, self.snapshots, self.events)
        self.services = ServiceOps(self.api, self.snapshots)
        self.drainer = Drainer(
            self.api,
            self.nodes,
            self.pods,
            self.events,
            delete_emptydir_data=delete_emptydir_data,
            force=force,
            eviction_grace_seconds=eviction_grace_seconds,
        )
        self.manifests = Manifests(self.api, self.snapshots)
        self.workloads = Workloads(self.api, self.snapshots, self.pods)
        self.policies = PolicyOps(self.api, self.snapshots)
        self._identity: str | None = None

    def close(self) -> None:
        self.api.client.close()

    def snapshot_memo(self, key: str, load: Callable[[], R]) -> R:
        """``load()``, computed once per :meth:`read_snapshot` under ``key`` (a read derived from several
        listings, e.g. the CNI detection of :class:`~migrator.targets.kube.cni.KubeCniOps`); outside a
        snapshot, every call loads."""
        snap = self.snapshots.current
        return snap.memo(key, load) if snap is not None else load()

    def read_snapshot(self, *, prefetch: bool = True) -> AbstractContextManager[None]:
        """Serve ``list_nodes``, ``get_node``, ``list_pods``, ``list_services``, ``list_namespaces`` and
        ``list_network_policies`` from one paginated list per resource, taken on first use, until the
        block ends (for dry runs: a per-node preview then costs no request). Any write through this
        object drops the snapshot. ``prefetch`` lists nodes and pods at once in two threads (the API
        server encodes one while we decode the other)."""
        fetch: dict[str, Callable[[], object]] = {}
        if prefetch:
            fetch = {"pods": self.list_pods, "nodes": self.list_nodes}
        return self.snapshots.session(fetch, self.api.request_timeout)

    def identity(self) -> str:
        """``<server URL>#kube-system=<uid>``: the run refuses to resume against another cluster."""
        if self._identity is None:
            ns = self.api.read("read namespace kube-system", self.api.core.read_namespace, "kube-system")
            self._identity = f"{self.api.host}#kube-system={ns['metadata']['uid']}"
        return self._identity

    # The port's methods and the others callers use, each from the part that does it (signatures there).
    list_node_objects = _Via("nodes", NodeOps.list_node_objects)
    list_nodes = _Via("nodes", NodeOps.list_nodes)
    get_node = _Via("nodes", NodeOps.get_node)
    label_node = _Via("nodes", NodeOps.label_node)
    set_schedulable = _Via("nodes", NodeOps.set_schedulable)
    record_node_event = _Via("events", NodeEvents.record)
    list_pod_objects = _Via("pods", PodOps.list_pod_objects)
    list_pods = _Via("pods", PodOps.list_pods)
    restart_pods = _Via("pods", PodOps.restart_pods)
    list_services = _Via("services", ServiceOps.list_services)
    list_namespaces = _Via("policies", PolicyOps.list_namespaces)
    list_network_policies = _Via("policies", PolicyOps.list_network_policies)
    drain_node = _Via("drainer", Drainer.drain_node)
    preview_drain = _Via("drainer", Drainer.preview_drain)
    apply = _Via("manifests", Manifests.apply)
    delete = _Via("manifests", Manifests.delete)
    list_daemonset_objects = _Via("workloads", Workloads.list_daemonset_objects)
    patch_daemonset_scheduling = _Via("workloads", Workloads.patch_daemonset_scheduling)
    wait_daemonset_pod_ready = _Via("workloads", Workloads.wait_daemonset_pod_ready)
    wait_rollout = _Via("workloads", Workloads.wait_rollout)

    # -------------------------------------------------------------------------------------- lock

    def lock(
        self,
        run_id: str,
        *,
        namespace: str = "kube-system",
        name: str = "migrator-run-lock",
        duration: float = 60.0,
        holder: str | None = None,
    ) -> LeaseLock:
        """The Lease-based run lock for this cluster (call ``acquire()`` or use it as a context manager)."""
        return LeaseLock(self.api, run_id, namespace=namespace, name=name, duration=duration, holder=holder)


def _conforms(cluster: KubeCluster) -> Cluster:
    """mypy checks here that KubeCluster implements the Cluster port."""
    return cluster
