"""``KubeCluster``: the :class:`migrator.ports.Cluster` port on a real cluster, with the official client.

It is composed of one object per job, each in its module (they share the :class:`KubeApi`, the read
snapshot and the node Events):

- :mod:`.nodes` (:class:`NodeOps`): list, read, label, cordon and uncordon nodes;
- :mod:`.pods` (:class:`PodOps`): list pods, wait until some are gone, restart a node's pods;
- :mod:`.services` (:class:`ServiceOps`): services with their ready endpoints;
- :mod:`.drain` (:class:`Drainer`): drain like ``kubectl drain`` (Eviction API, PDBs) and its preview;
- :mod:`.manifests` (:class:`Manifests`): server-side apply, delete, wait for any object;
- :mod:`.workloads` (:class:`Workloads`): DaemonSet scheduling, their pods, rollouts;
- :mod:`.snapshot` (the read snapshot of a dry run) and :mod:`.events` (Events on touched nodes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from migrator import ports
from migrator.ports import Cluster, DrainResult, Node, Pod, Service
from migrator.targets.kube import cniops
from migrator.targets.kube.api import FIELD_MANAGER, KubeApi, Obj, load_api_client
from migrator.targets.kube.cni import CniInfo, detect_cni
from migrator.targets.kube.drain import Drainer, DrainPreview, PodDisposition
from migrator.targets.kube.events import NodeEvents
from migrator.targets.kube.lock import LeaseLock
from migrator.targets.kube.manifests import ApplyAction, ApplyConflict, ApplyResult, Manifests, Propagation
from migrator.targets.kube.nodes import NodeOps
from migrator.targets.kube.pods import PodOps
from migrator.targets.kube.services import ServiceOps
from migrator.targets.kube.snapshot import ReadSnapshot, Snapshots
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
        self._identity: str | None = None

    def close(self) -> None:
        self.api.client.close()

    @property
    def _snapshot(self) -> ReadSnapshot | None:
        """The read snapshot in use (the CNI methods below read it)."""
        return self.snapshots.current

    def read_snapshot(self, *, prefetch: bool = True) -> AbstractContextManager[None]:
        """Serve ``list_nodes``, ``get_node``, ``list_pods`` and ``list_services`` from one paginated list
        per resource, taken on first use, until the block ends (for dry runs: a per-node preview then
        costs no request). Any write through this object drops the snapshot. ``prefetch`` lists nodes and
        pods at once in two threads (the API server encodes one while we decode the other)."""
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

    # ------------------------------------------------------------------------------ nodes, events

    def list_node_objects(self, label_selector: str | None = None) -> list[Obj]:
        return self.nodes.list_node_objects(label_selector)

    def list_nodes(self) -> list[Node]:
        return self.nodes.list_nodes()

    def get_node(self, name: str) -> Node:
        return self.nodes.get_node(name)

    def label_node(self, name: str, labels: Mapping[str, str | None], *, dry_run: bool = False) -> None:
        self.nodes.label_node(name, labels, dry_run=dry_run)

    def set_schedulable(self, name: str, schedulable: bool, *, dry_run: bool = False) -> None:
        self.nodes.set_schedulable(name, schedulable, dry_run=dry_run)

    def record_node_event(self, node: str, reason: str, action: str, *, type_: str = "Normal") -> None:
        self.events.record(node, reason, action, type_=type_)

    # ------------------------------------------------------------------------- pods and services

    def list_pod_objects(
        self, namespace: str | None = None, node: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        return self.pods.list_pod_objects(namespace, node, label_selector)

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        return self.pods.list_pods(namespace, node)

    def restart_pods(
        self, node: str, *, wait_timeout: float | None = None, cancel: threading.Event | None = None
    ) -> list[str]:
        return self.pods.restart_pods(node, wait_timeout=wait_timeout, cancel=cancel)

    def list_services(self, namespace: str | None = None) -> list[Service]:
        return self.services.list_services(namespace)

    # -------------------------------------------------------------------------------------- drain

    def drain_node(
        self,
        name: str,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
    ) -> DrainResult:
        return self.drainer.drain_node(
            name, timeout=timeout, cancel=cancel, delete_emptydir_data=delete_emptydir_data, force=force
        )

    def preview_drain(
        self,
        name: str,
        *,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
        server_dry_run: bool = True,
    ) -> DrainPreview:
        return self.drainer.preview_drain(
            name, delete_emptydir_data=delete_emptydir_data, force=force, server_dry_run=server_dry_run
        )

    # ---------------------------------------------------------------------- manifests, workloads

    def apply(
        self,
        manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        dry_run: bool = False,
        force_conflicts: bool = False,
        default_namespace: str = "default",
        crd_timeout: float = 60.0,
    ) -> list[ApplyResult]:
        return self.manifests.apply(
            manifests,
            dry_run=dry_run,
            force_conflicts=force_conflicts,
            default_namespace=default_namespace,
            crd_timeout=crd_timeout,
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Propagation = Propagation.BACKGROUND,
        dry_run: bool = False,
        wait_timeout: float | None = None,
    ) -> bool:
        return self.manifests.delete(
            api_version,
            kind,
            name,
            namespace,
            propagation=propagation,
            dry_run=dry_run,
            wait_timeout=wait_timeout,
        )

    def list_daemonset_objects(self) -> list[Obj]:
        return self.workloads.list_daemonset_objects()

    def patch_daemonset_scheduling(
        self,
        namespace: str,
        name: str,
        *,
        node_selector: Mapping[str, str | None] | None = None,
        affinity: Mapping[str, Any] | None = None,
        remove_affinity: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        return self.workloads.patch_daemonset_scheduling(
            namespace,
            name,
            node_selector=node_selector,
            affinity=affinity,
            remove_affinity=remove_affinity,
            dry_run=dry_run,
        )

    def wait_daemonset_pod_ready(
        self, namespace: str, name: str, node: str, *, timeout: float, cancel: threading.Event | None = None
    ) -> Pod:
        return self.workloads.wait_daemonset_pod_ready(namespace, name, node, timeout=timeout, cancel=cancel)

    def wait_rollout(
        self,
        kind: RolloutKind,
        namespace: str,
        name: str,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
    ) -> RolloutStatus:
        return self.workloads.wait_rollout(kind, namespace, name, timeout=timeout, cancel=cancel)

    # ------------------------------------------------------------------------------- CNI and lock

    def detect_cni_details(self) -> CniInfo:
        """The cluster's CNI (flannel, Calico, Canal, Weave Net, Cilium) and its source config, in full."""
        snap = self._snapshot
        return snap.cni(lambda: detect_cni(self)) if snap is not None else detect_cni(self)

    # --------------------------------------------------------------- the CniOps port (cniops.py)

    def detect_cni(self) -> ports.CniInfo:
        """The ``CniOps`` view of :meth:`detect_cni_details`."""
        snap = self._snapshot
        if snap is not None:
            return snap.port_cni(lambda: cniops.to_port_info(self.detect_cni_details(), self))
        return cniops.to_port_info(self.detect_cni_details(), self)

    def apply_cni_agent(
        self,
        agent: ports.CniAgent,
        *,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        return cniops.apply_cni_agent(
            self, agent, node_selector=node_selector, config=config, dry_run=dry_run
        )

    def delete_cni_agent(self, agent: ports.CniAgent, *, dry_run: bool = False) -> list[str]:
        return cniops.delete_cni_agent(self, agent, dry_run=dry_run)

    def cni_agent_ready(self, agent: ports.CniAgent, node: str) -> tuple[bool, str]:
        return cniops.cni_agent_ready(self, agent, node)

    def set_calico_mode(self, node: str, mode: ports.CalicoMode | None) -> None:
        cniops.set_calico_mode(self, node, mode)

    def resync_cni(self) -> None:
        """Nothing to do: the CNI agents of a real cluster watch the API server."""

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


def _conforms_cni(cluster: KubeCluster) -> ports.CniOps:
    """... and the CniOps port."""
    return cluster
