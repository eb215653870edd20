"""``KubeCluster``: the :class:`migrator.ports.Cluster` port on a real cluster, with the official client."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from migrator.errors import (
    Interrupted,
    MigratorError,
    PermanentError,
    StepFailed,
    StepTimeout,
    TemporaryError,
    UsageError,
)
from migrator.ports import Cluster, DrainResult, Node, Pod, Service
from migrator.targets.kube import types
from migrator.targets.kube.api import (
    KubeApi,
    KubeConflict,
    KubeNotFound,
    ListResult,
    Obj,
    WatchExpired,
    load_api_client,
)
from migrator.targets.kube.lock import LeaseLock

FIELD_MANAGER = "migrator"
_T = TypeVar("_T")


class PodDisposition(StrEnum):
    """What a drain does with a pod."""

    EVICT = "evict"
    SKIP_DAEMONSET = "skip-daemonset"
    SKIP_MIRROR = "skip-mirror"
    SKIP_TERMINATING = "skip-terminating"
    REFUSE_EMPTYDIR = "refuse-emptydir"
    REFUSE_UNMANAGED = "refuse-unmanaged"


class ApplyAction(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


class Propagation(StrEnum):
    FOREGROUND = "Foreground"
    BACKGROUND = "Background"
    ORPHAN = "Orphan"


class RolloutKind(StrEnum):
    DAEMONSET = "DaemonSet"
    DEPLOYMENT = "Deployment"


@dataclass(frozen=True)
class ApplyResult:
    """One object of a server-side apply (or its server-side dry run)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    action: ApplyAction
    dry_run: bool
    obj: Mapping[str, Any] = field(repr=False, default_factory=dict)
    validated: bool = True  # False: a dry run could not ask the server (its CRD or namespace comes first)
    note: str = ""

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class RolloutStatus:
    kind: RolloutKind
    namespace: str
    name: str
    desired: int
    updated: int
    available: int
    complete: bool


class ApplyConflict(PermanentError):
    """Server-side apply refused: fields owned by another manager (retry with ``force_conflicts``)."""


@dataclass(frozen=True)
class DrainPreview:
    """A drain's plan: every pod of the node with its disposition, and the evictions refused now."""

    node: str
    pods: Mapping[str, PodDisposition]
    blocked: Mapping[str, str] = field(default_factory=dict)

    @property
    def to_evict(self) -> list[str]:
        return sorted(k for k, d in self.pods.items() if d is PodDisposition.EVICT)

    @property
    def refused(self) -> list[str]:
        return sorted(
            k
            for k, d in self.pods.items()
            if d in (PodDisposition.REFUSE_EMPTYDIR, PodDisposition.REFUSE_UNMANAGED)
        )


class _EvictionsPending(Exception):
    """Some evictions were refused (PDB) or failed for a while; tenacity retries the round."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stop_on(cancel: threading.Event | None) -> Any:
    def stop(_state: RetryCallState) -> bool:
        return cancel is not None and cancel.is_set()

    return stop


def _volatile_free(obj: Mapping[str, Any]) -> Obj:
    """An object without server-managed fields, to tell whether an apply changes anything."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp")
    }
    out["metadata"] = meta
    return out


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
        self.run_id = run_id
        self.purpose = purpose
        self.delete_emptydir_data = delete_emptydir_data
        self.force = force
        self.eviction_grace_seconds = eviction_grace_seconds
        self.event_namespace = event_namespace
        self._identity: str | None = None
        self._snapshot: _ReadSnapshot | None = None

    def close(self) -> None:
        self.api.client.close()

    # ---------------------------------------------------------------------------------- snapshot

    @contextlib.contextmanager
    def read_snapshot(self, *, prefetch: bool = True) -> Iterator[None]:
        """Serve ``list_nodes``, ``get_node``, ``list_pods`` and ``list_services`` from one paginated list
        per resource, taken on first use, until the block ends (for dry runs: a per-node preview then
        costs no request). Any write through this object drops the snapshot. ``prefetch`` lists nodes and
        pods at once in two threads (the API server encodes one while we decode the other)."""
        previous = self._snapshot
        self._snapshot = _ReadSnapshot()
        threads: list[threading.Thread] = []
        if prefetch:
            for what, fetch in (("pods", self.list_pods), ("nodes", self.list_nodes)):
                thread = threading.Thread(
                    target=self._prefetch, args=(what, fetch), name=f"prefetch-{what}", daemon=True
                )
                thread.start()
                threads.append(thread)
        try:
            yield
        finally:
            for thread in threads:
                thread.join(self.api.request_timeout)
            self._snapshot = previous

    @staticmethod
    def _prefetch(what: str, fetch: Callable[[], object]) -> None:
        try:
            fetch()
        except MigratorError as exc:  # the caller's own read raises it again
            logger.debug("prefetch of {} failed: {}", what, exc)

    def _invalidate(self) -> None:
        if self._snapshot is not None:
            self._snapshot.clear()

    def snapshot_memo(self, key: str, load: Callable[[], _T]) -> _T:
        """``load()``, computed once per :meth:`read_snapshot` under ``key`` (a read derived from several
        listings, e.g. the CNI detection); outside a snapshot, every call loads."""
        snap = self._snapshot
        return snap.memo(key, load) if snap is not None else load()

    # ---------------------------------------------------------------------------------- identity

    def identity(self) -> str:
        """``<server URL>#kube-system=<uid>``: the run refuses to resume against another cluster."""
        if self._identity is None:
            ns = self.api.read("read namespace kube-system", self.api.core.read_namespace, "kube-system")
            self._identity = f"{self.api.host}#kube-system={ns['metadata']['uid']}"
        return self._identity

    # -------------------------------------------------------------------------------------- nodes

    def list_node_objects(self, label_selector: str | None = None) -> list[Obj]:
        snap = self._snapshot
        if snap is not None and label_selector is None:
            return snap.node_objects(lambda: self.api.list_all("list nodes", self.api.core.list_node).items)
        return self.api.list_all("list nodes", self.api.core.list_node, label_selector=label_selector).items

    def list_daemonset_objects(self) -> list[Obj]:
        """Every DaemonSet (all namespaces), paginated."""
        snap = self._snapshot

        def load() -> list[Obj]:
            return self.api.list_all(
                "list daemonsets", self.api.apps.list_daemon_set_for_all_namespaces
            ).items

        return snap.daemonsets(load) if snap is not None else load()

    def list_nodes(self) -> list[Node]:
        snap = self._snapshot
        if snap is not None:
            return list(snap.nodes(lambda: [types.to_node(o) for o in self.list_node_objects()]).values())
        return [types.to_node(o) for o in self.list_node_objects()]

    def get_node(self, name: str) -> Node:
        snap = self._snapshot
        if snap is not None:
            node = snap.nodes(lambda: [types.to_node(o) for o in self.list_node_objects()]).get(name)
            if node is not None:
                return node
        return types.to_node(self.api.read(f"read node {name}", self.api.core.read_node, name))

    def label_node(self, name: str, labels: Mapping[str, str | None], *, dry_run: bool = False) -> None:
        """Set labels (``None`` removes one) with a merge patch; idempotent. ``dry_run`` asks the server to
        validate the patch (existence, RBAC, admission) without storing it."""
        if not dry_run:
            self._invalidate()
        if not labels:
            return
        self.api.call(
            f"label node {name}",
            self.api.core.patch_node,
            name,
            {"metadata": {"labels": dict(labels)}},
            field_manager=FIELD_MANAGER,
            dry_run="All" if dry_run else None,
            _content_type="application/merge-patch+json",
        )
        if not dry_run:
            changes = ", ".join(f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(labels.items()))
            self.record_node_event(name, "MigratorLabel", f"labels {changes} set")

    def set_schedulable(self, name: str, schedulable: bool, *, dry_run: bool = False) -> None:
        """Cordon (``False``) or uncordon (``True``) with a patch of ``spec.unschedulable``; ``dry_run`` as
        for :meth:`label_node`."""
        if not dry_run:
            self._invalidate()
        self.api.call(
            f"{'uncordon' if schedulable else 'cordon'} node {name}",
            self.api.core.patch_node,
            name,
            {"spec": {"unschedulable": None if schedulable else True}},
            field_manager=FIELD_MANAGER,
            dry_run="All" if dry_run else None,
            _content_type="application/strategic-merge-patch+json",
        )
        if not dry_run:
            self.record_node_event(
                name,
                "MigratorUncordon" if schedulable else "MigratorCordon",
                "uncordoned" if schedulable else "cordoned",
            )

    # --------------------------------------------------------------------------------------- pods

    def list_pod_objects(
        self, namespace: str | None = None, node: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        return self._list_pods(namespace, node, label_selector).items

    def _list_pods(
        self, namespace: str | None, node: str | None, label_selector: str | None = None
    ) -> ListResult:
        field_selector = f"spec.nodeName={node}" if node else None
        if namespace:
            return self.api.list_all(
                f"list pods in {namespace}",
                self.api.core.list_namespaced_pod,
                namespace,
                field_selector=field_selector,
                label_selector=label_selector,
            )
        return self.api.list_all(
            "list pods",
            self.api.core.list_pod_for_all_namespaces,
            field_selector=field_selector,
            label_selector=label_selector,
        )

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        snap = self._snapshot
        if snap is not None:
            by_node = snap.pods(
                lambda: self.api.list_converted(
                    "list pods", types.to_pod, self.api.core.list_pod_for_all_namespaces
                )
            )
            pods = by_node.get(node, []) if node is not None else [p for ps in by_node.values() for p in ps]
            return [p for p in pods if namespace is None or p.namespace == namespace]
        return [types.to_pod(o) for o in self.list_pod_objects(namespace, node)]

    # ----------------------------------------------------------------------------------- services

    def list_services(self, namespace: str | None = None) -> list[Service]:
        snap = self._snapshot
        if snap is not None:
            return snap.services(namespace, lambda: self._list_services(namespace))
        return self._list_services(namespace)

    def _list_services(self, namespace: str | None) -> list[Service]:
        if namespace:
            services = self.api.list_all(
                f"list services in {namespace}", self.api.core.list_namespaced_service, namespace
            ).items
        else:
            services = self.api.list_all("list services", self.api.core.list_service_for_all_namespaces).items
        endpoints = self._service_endpoints(namespace)
        return [
            types.to_service(
                s, endpoints.get((s["metadata"].get("namespace", ""), s["metadata"]["name"]), [])
            )
            for s in services
        ]

    def _service_endpoints(self, namespace: str | None) -> dict[tuple[str, str], list[str]]:
        """Ready addresses per service, from EndpointSlices (else the older Endpoints)."""
        out: dict[tuple[str, str], list[str]] = {}
        try:
            if namespace:
                slices = self.api.list_all(
                    "list endpointslices", self.api.discovery_v1.list_namespaced_endpoint_slice, namespace
                ).items
            else:
                slices = self.api.list_all(
                    "list endpointslices", self.api.discovery_v1.list_endpoint_slice_for_all_namespaces
                ).items
            for sl in slices:
                meta = sl.get("metadata") or {}
                svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
                if svc:
                    out.setdefault((str(meta.get("namespace", "")), str(svc)), []).extend(
                        types.slice_addresses(sl)
                    )
            return out
        except KubeNotFound:
            logger.debug("no EndpointSlice API, falling back to Endpoints")
        if namespace:
            eps = self.api.list_all(
                "list endpoints", self.api.core.list_namespaced_endpoints, namespace
            ).items
        else:
            eps = self.api.list_all("list endpoints", self.api.core.list_endpoints_for_all_namespaces).items
        for ep in eps:
            meta = ep.get("metadata") or {}
            out[(str(meta.get("namespace", "")), str(meta["name"]))] = types.endpoints_addresses(ep)
        return out

    # -------------------------------------------------------------------------------------- drain

    def classify_pod(
        self, pod: Mapping[str, Any], *, delete_emptydir_data: bool, force: bool
    ) -> PodDisposition:
        """What ``kubectl drain`` would do with the pod."""
        if types.is_mirror(pod):
            return PodDisposition.SKIP_MIRROR
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return PodDisposition.SKIP_TERMINATING
        owner = types.controller_of(pod)
        if owner is not None and owner[0] == "DaemonSet":
            return PodDisposition.SKIP_DAEMONSET
        phase = (pod.get("status") or {}).get("phase")
        if owner is None and phase not in ("Succeeded", "Failed") and not force:
            return PodDisposition.REFUSE_UNMANAGED
        if types.has_empty_dir(pod) and not delete_emptydir_data:
            return PodDisposition.REFUSE_EMPTYDIR
        return PodDisposition.EVICT

    def drain_node(
        self,
        name: str,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
    ) -> DrainResult:
        """Cordon, then evict the node's pods through the Eviction API like ``kubectl drain``.

        DaemonSet and mirror pods are skipped. Evictions refused by a PodDisruptionBudget (429) are retried
        until ``timeout``; then :class:`StepTimeout` names the blocking pods and PDBs. Finally it waits (by
        watch) until the evicted pods are gone. ``cancel`` stops it with :class:`Interrupted`.
        """
        self._invalidate()
        deadline = time.monotonic() + timeout
        emptydir = self.delete_emptydir_data if delete_emptydir_data is None else delete_emptydir_data
        force_ = self.force if force is None else force
        self.set_schedulable(name, False)
        pods = self._list_pods(None, name).items
        to_evict: dict[str, Obj] = {}
        skipped: list[str] = []
        refused: dict[PodDisposition, list[str]] = {}
        for pod in pods:
            disposition = self.classify_pod(pod, delete_emptydir_data=emptydir, force=force_)
            key = types.pod_key(pod)
            if disposition is PodDisposition.EVICT:
                to_evict[key] = pod
            elif disposition in (PodDisposition.REFUSE_EMPTYDIR, PodDisposition.REFUSE_UNMANAGED):
                refused.setdefault(disposition, []).append(key)
            else:
                skipped.append(key)
        if refused:
            parts = []
            if refused.get(PodDisposition.REFUSE_EMPTYDIR):
                parts.append(
                    "pods with local storage (emptyDir): "
                    f"{', '.join(refused[PodDisposition.REFUSE_EMPTYDIR])}"
                    " (allow with delete_emptydir_data)"
                )
            if refused.get(PodDisposition.REFUSE_UNMANAGED):
                parts.append(
                    f"pods not managed by a controller: {', '.join(refused[PodDisposition.REFUSE_UNMANAGED])}"
                    " (allow with force)"
                )
            raise StepFailed(
                f"cannot drain node {name}: " + "; ".join(parts), node=name, detail="; ".join(parts)
            )
        evicted: list[str] = []
        blocked: dict[str, str] = {}
        pending = dict(to_evict)

        def evict_round() -> None:
            for key in list(pending):
                if cancel is not None and cancel.is_set():
                    return
                ns, pod_name = key.split("/", 1)
                try:
                    self._evict(ns, pod_name, deadline=deadline)
                except KubeNotFound:
                    pass  # already gone
                except TemporaryError as err:  # 429 (PDB), 5xx, 409: retry in the next round
                    blocked[key] = str(err)
                    continue
                evicted.append(key)
                pending.pop(key)
                blocked.pop(key, None)
            if pending:
                raise _EvictionsPending()

        retrying = Retrying(
            retry=retry_if_exception_type(_EvictionsPending),
            stop=stop_after_delay(max(deadline - time.monotonic(), 0.0)) | _stop_on(cancel),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=1.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    evict_round()
        except _EvictionsPending:
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"drain of node {name} cancelled; evicted {len(evicted)} pods") from None
            raise self._drain_timeout(name, timeout, pending, blocked) from None
        if cancel is not None and cancel.is_set():
            raise Interrupted(f"drain of node {name} cancelled; evicted {len(evicted)} pods")
        self._wait_pods_gone(name, {k: to_evict[k] for k in evicted}, deadline, timeout, cancel)
        self.record_node_event(name, "MigratorDrain", f"drained ({len(evicted)} pods evicted)")
        logger.info("drained node {}: {} evicted, {} skipped", name, len(evicted), len(skipped))
        return DrainResult(node=name, evicted=tuple(evicted), skipped=tuple(skipped))

    def preview_drain(
        self,
        name: str,
        *,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
        server_dry_run: bool = True,
    ) -> DrainPreview:
        """What :meth:`drain_node` would do, changing nothing: each pod's disposition and, with
        ``server_dry_run``, which evictions the API server refuses now (``dryRun=All`` evictions: PDBs)."""
        emptydir = self.delete_emptydir_data if delete_emptydir_data is None else delete_emptydir_data
        force_ = self.force if force is None else force
        pods: dict[str, PodDisposition] = {}
        blocked: dict[str, str] = {}
        for pod in self._list_pods(None, name).items:
            key = types.pod_key(pod)
            pods[key] = self.classify_pod(pod, delete_emptydir_data=emptydir, force=force_)
            if server_dry_run and pods[key] is PodDisposition.EVICT:
                ns, pod_name = key.split("/", 1)
                try:
                    self._evict(ns, pod_name, dry_run=True)
                except KubeNotFound:
                    continue
                except TemporaryError as err:
                    blocked[key] = str(err)
        return DrainPreview(node=name, pods=pods, blocked=blocked)

    def _evict(
        self, namespace: str, name: str, *, dry_run: bool = False, deadline: float | None = None
    ) -> None:
        body: Obj = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if self.eviction_grace_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": self.eviction_grace_seconds}
        self.api.call(
            f"evict pod {namespace}/{name}",
            self.api.core.create_namespaced_pod_eviction,
            name,
            namespace,
            k8s.V1Eviction.from_dict(body),
            dry_run="All" if dry_run else None,
            _request_timeout=self._request_budget(deadline),
        )

    def _request_budget(self, deadline: float | None) -> float:
        """A request's timeout: the configured one, cut to what is left before ``deadline`` (at least 1 s)."""
        if deadline is None:
            return self.api.request_timeout
        return max(min(self.api.request_timeout, deadline - time.monotonic()), 1.0)

    def blocking_pdbs(self, pods: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
        """PodDisruptionBudgets selecting each pod: ``{pod key: ["ns/pdb (status)", ...]}``."""
        by_ns: dict[str, list[Obj]] = {}
        out: dict[str, list[str]] = {}
        for pod in pods:
            ns = str(pod["metadata"].get("namespace", ""))
            if ns not in by_ns:
                by_ns[ns] = self.api.list_all(
                    f"list poddisruptionbudgets in {ns}",
                    self.api.policy.list_namespaced_pod_disruption_budget,
                    ns,
                ).items
            labels = pod["metadata"].get("labels") or {}
            for pdb in by_ns[ns]:
                if types.selector_matches(pdb.get("spec", {}).get("selector"), labels):
                    st = pdb.get("status") or {}
                    out.setdefault(types.pod_key(pod), []).append(
                        f"PodDisruptionBudget {ns}/{pdb['metadata']['name']} (disruptionsAllowed="
                        f"{st.get('disruptionsAllowed', '?')}, "
                        f"currentHealthy={st.get('currentHealthy', '?')}, "
                        f"desiredHealthy={st.get('desiredHealthy', '?')})"
                    )
        return out

    def _drain_timeout(
        self, name: str, timeout: float, pending: Mapping[str, Obj], blocked: Mapping[str, str]
    ) -> StepTimeout:
        try:
            pdbs = self.blocking_pdbs(pending.values())
        except MigratorError as err:
            logger.warning("cannot list PodDisruptionBudgets for the drain report: {}", err)
            pdbs = {}
        lines = []
        for key in sorted(pending):
            why = "; ".join(pdbs.get(key, [])) or blocked.get(key, "eviction not accepted")
            lines.append(f"pod {key} blocked by {why}")
        detail = "\n".join(lines)
        return StepTimeout(
            f"drain of node {name} timed out after {timeout:g}s: " + "; ".join(lines),
            node=name,
            detail=detail,
        )

    def _wait_pods_gone(
        self,
        node: str,
        evicted: Mapping[str, Obj],
        deadline: float,
        timeout: float,
        cancel: threading.Event | None,
    ) -> None:
        waiting = {str(p["metadata"]["uid"]): key for key, p in evicted.items()}
        for _ in range(1000):
            listed = self._list_pods(None, node)
            present = {str(p["metadata"]["uid"]) for p in listed.items}
            for uid in list(waiting):
                if uid not in present:
                    waiting.pop(uid)
            if not waiting:
                return
            try:
                for etype, obj in self.api.watch(
                    f"watch pods on {node}",
                    self.api.core.list_pod_for_all_namespaces,
                    resource_version=listed.resource_version,
                    deadline=deadline,
                    cancel=cancel,
                    field_selector=f"spec.nodeName={node}",
                ):
                    if etype == "DELETED":
                        waiting.pop(str(obj["metadata"].get("uid")), None)
                    if not waiting:
                        return
            except WatchExpired:
                continue
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"drain of node {node} cancelled while pods were terminating")
            if time.monotonic() >= deadline:
                raise StepTimeout(
                    f"drain of node {node} timed out after {timeout:g}s waiting for evicted pods to "
                    f"terminate: {', '.join(sorted(waiting.values()))}",
                    node=node,
                    detail=", ".join(sorted(waiting.values())),
                )
        raise StepFailed(f"drain of node {node}: the pod watch kept expiring", node=node)

    # ------------------------------------------------------------------------------ restart pods

    def restart_pods(
        self, node: str, *, wait_timeout: float | None = None, cancel: threading.Event | None = None
    ) -> list[str]:
        """Delete the node's non-hostNetwork pods owned by a controller (they are recreated with the node's
        current CNI); return their keys. With ``wait_timeout``, wait until they are gone."""
        self._invalidate()
        deleted: dict[str, Obj] = {}
        for pod in self._list_pods(None, node).items:
            spec = pod.get("spec") or {}
            if spec.get("hostNetwork") or types.is_mirror(pod) or types.controller_of(pod) is None:
                continue
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            key = types.pod_key(pod)
            ns, name = key.split("/", 1)
            try:
                self.api.call(f"delete pod {key}", self.api.core.delete_namespaced_pod, name, ns)
            except KubeNotFound:
                continue
            deleted[key] = pod
        if deleted:
            self.record_node_event(node, "MigratorRestartPods", f"restarted {len(deleted)} pods")
        if wait_timeout is not None and deleted:
            self._wait_pods_gone(node, deleted, time.monotonic() + wait_timeout, wait_timeout, cancel)
        return sorted(deleted)

    # ------------------------------------------------------------------------------------ events

    def record_node_event(self, node: str, reason: str, action: str, *, type_: str = "Normal") -> None:
        """A Kubernetes Event on a node: "<action> by migrator run X for <purpose>" (best effort)."""
        if self.run_id is None:
            return
        message = f"{action} by migrator run {self.run_id} for {self.purpose}"
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{node}.migrator.",
                "namespace": self.event_namespace,
                "labels": {"app.kubernetes.io/managed-by": "migrator"},
                "annotations": {"migrator.io/run-id": self.run_id},
            },
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node},
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "migrator", "host": socket.gethostname()},
            "reportingComponent": "migrator",
            "reportingInstance": f"{socket.gethostname()}-{os.getpid()}",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.call(
                f"record event on node {node}",
                self.api.core.create_namespaced_event,
                self.event_namespace,
                k8s.CoreV1Event.from_dict(body),
            )
        except MigratorError as err:
            logger.warning("could not record a Kubernetes Event on node {}: {}", node, err)

    # ---------------------------------------------------------------------- manifests (apply/delete)

    def apply(
        self,
        manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        dry_run: bool = False,
        force_conflicts: bool = False,
        default_namespace: str = "default",
        crd_timeout: float = 60.0,
    ) -> list[ApplyResult]:
        """Server-side apply (field manager ``migrator``) of YAML text or objects, in order.

        ``dry_run`` sends ``dryRun=All``: the server validates and answers without persisting anything. An
        object whose CRD or namespace is created earlier in the same batch cannot be checked by the server
        in a dry run: it is reported with ``validated=False``. A real apply waits (bounded by
        ``crd_timeout``) for each CRD it creates to be Established before applying the next object."""
        if not dry_run:
            self._invalidate()
        docs = _documents(manifests)
        batch_kinds = {
            (
                str((d.get("spec") or {}).get("group", "")),
                str(((d.get("spec") or {}).get("names") or {}).get("kind")),
            )
            for d in docs
            if d.get("kind") == "CustomResourceDefinition"
        }
        batch_namespaces = {
            str((d.get("metadata") or {}).get("name")) for d in docs if d.get("kind") == "Namespace"
        }
        results: list[ApplyResult] = []
        for obj in docs:
            api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
            meta = obj.get("metadata") or {}
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            try:
                result = self._apply_one(
                    obj, dry_run=dry_run, force=force_conflicts, default_namespace=default_namespace
                )
            except KubeNotFound as exc:
                namespace = meta.get("namespace")
                if dry_run and (group, kind) in batch_kinds:
                    note = f"its CustomResourceDefinition is created by this apply: {exc}"
                elif dry_run and namespace in batch_namespaces:
                    note = f"its namespace {namespace} is created by this apply: {exc}"
                else:
                    raise
                results.append(
                    ApplyResult(
                        api_version,
                        kind,
                        str(meta.get("name", "")),
                        namespace,
                        ApplyAction.CREATED,
                        True,
                        obj,
                        validated=False,
                        note=note,
                    )
                )
                logger.info("apply {} {} (dry run): not validated: {}", kind, meta.get("name"), note)
                continue
            results.append(result)
            if kind == "CustomResourceDefinition" and not dry_run:
                self.wait_crd_established(result.name, timeout=crd_timeout)
        return results

    def wait_crd_established(self, name: str, *, timeout: float) -> None:
        """Wait (by watch, bounded) until a CustomResourceDefinition is Established and served."""

        def established(crd: Mapping[str, Any] | None) -> bool:
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        if not self.wait_object(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None, established, timeout=timeout
        ):
            raise StepTimeout(f"CustomResourceDefinition {name} not Established after {timeout:g}s")

    def wait_object(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        done: Callable[[Obj | None], bool],
        *,
        timeout: float,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Wait by watch (``fieldSelector=metadata.name``, from a GET's resourceVersion) until ``done(obj)``
        (``obj`` is ``None`` once the object is gone); ``False`` at ``timeout``. Works for any kind."""
        path = self.api.object_path(api_version, kind, name, namespace)
        collection = path.rsplit("/", 1)[0]
        deadline = time.monotonic() + timeout
        what = f"watch {kind} {name}"
        for _ in range(1000):
            try:
                current: Obj | None = self.api.request(f"read {kind} {name}", "GET", path)
            except KubeNotFound:
                current = None
            if done(current):
                return True
            if current is None:  # absent and not done: wait for it to appear, from the list's version
                listed = self.api.request(
                    f"list {kind}", "GET", collection, query={"fieldSelector": f"metadata.name={name}"}
                )
                rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
            else:
                rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
            try:
                for etype, obj in self.api.watch(
                    what,
                    _raw_watch(self.api, collection),
                    resource_version=rv,
                    deadline=deadline,
                    cancel=cancel,
                    field_selector=f"metadata.name={name}",
                ):
                    if done(None if etype == "DELETED" else obj):
                        return True
            except WatchExpired:
                continue
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"wait for {kind} {name} cancelled")
            if time.monotonic() >= deadline:
                return False
        raise StepFailed(f"wait for {kind} {name}: the watch kept expiring")

    def _apply_one(
        self, obj: Mapping[str, Any], *, dry_run: bool, force: bool, default_namespace: str
    ) -> ApplyResult:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        meta = dict(obj.get("metadata") or {})
        name = str(meta.get("name") or "")
        if not api_version or not kind or not name:
            raise UsageError(f"a manifest needs apiVersion, kind and metadata.name: {dict(obj)!r:.200}")
        _, namespaced = self.api.resource_for(api_version, kind)
        namespace = str(meta.get("namespace") or default_namespace) if namespaced else None
        body = dict(obj)
        if namespace:
            body["metadata"] = {**meta, "namespace": namespace}
        path = self.api.object_path(api_version, kind, name, namespace)
        what = f"apply {kind} {namespace + '/' if namespace else ''}{name}{' (dry run)' if dry_run else ''}"
        try:
            before: Obj | None = self.api.request(f"read {kind} {name}", "GET", path)
        except KubeNotFound:
            before = None
        query = {
            "fieldManager": FIELD_MANAGER,
            "force": "true" if force else None,
            "dryRun": "All" if dry_run else None,
        }
        try:
            after = self.api.request(
                what, "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
            )
        except KubeConflict as exc:
            raise ApplyConflict(
                f"{exc}. Another field manager owns these fields: use force_conflicts to take them over"
            ) from exc
        if before is None:
            action = ApplyAction.CREATED
        elif _volatile_free(before) == _volatile_free(after):
            action = ApplyAction.UNCHANGED
        else:
            action = ApplyAction.CONFIGURED
        logger.info("{}: {}", what, action)
        return ApplyResult(api_version, kind, name, namespace, action, dry_run, after)

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
        """Delete an object with a propagation policy; ``False`` when it was already absent. With
        ``wait_timeout``, wait (by watch, bounded) until it is gone."""
        if not dry_run:
            self._invalidate()
        path = self.api.object_path(api_version, kind, name, namespace)
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": str(propagation)}
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            self.api.request(
                f"delete {kind} {name}",
                "DELETE",
                path,
                body=body,
                query={"dryRun": "All" if dry_run else None},
            )
        except KubeNotFound:
            return False
        if wait_timeout is not None and not dry_run:
            gone = self.wait_object(
                api_version, kind, name, namespace, lambda obj: obj is None, timeout=wait_timeout
            )
            if not gone:
                raise StepTimeout(f"{kind} {name} still exists {wait_timeout:g}s after its deletion")
        return True

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
        """Patch a DaemonSet's pod ``nodeSelector`` (``None`` values remove keys) and/or ``affinity``."""
        if not dry_run:
            self._invalidate()
        pod_spec: Obj = {}
        if node_selector is not None:
            pod_spec["nodeSelector"] = dict(node_selector)
        if affinity is not None:
            pod_spec["affinity"] = dict(affinity)
        elif remove_affinity:
            pod_spec["affinity"] = None
        if not pod_spec:
            raise UsageError("patch_daemonset_scheduling needs node_selector, affinity or remove_affinity")
        return self.api.call(
            f"patch DaemonSet {namespace}/{name}",
            self.api.apps.patch_namespaced_daemon_set,
            name,
            namespace,
            {"spec": {"template": {"spec": pod_spec}}},
            field_manager=FIELD_MANAGER,
            dry_run="All" if dry_run else None,
            _content_type="application/strategic-merge-patch+json",
        )

    # ---------------------------------------------------------------------------------- waiting

    def wait_daemonset_pod_ready(
        self, namespace: str, name: str, node: str, *, timeout: float, cancel: threading.Event | None = None
    ) -> Pod:
        """Wait (by watch) until the DaemonSet's pod on ``node`` is Ready; return it."""
        deadline = time.monotonic() + timeout
        ds = self.api.read(
            f"read DaemonSet {namespace}/{name}", self.api.apps.read_namespaced_daemon_set, name, namespace
        )
        uid = ds["metadata"]["uid"]
        selector = types.label_selector((ds.get("spec") or {}).get("selector", {}).get("matchLabels") or {})
        last: Obj | None = None

        def mine(pod: Obj) -> bool:
            refs = pod.get("metadata", {}).get("ownerReferences") or []
            return any(
                r.get("uid") == uid or (r.get("kind") == "DaemonSet" and r.get("name") == name) for r in refs
            )

        for _ in range(1000):
            listed = self._list_pods(namespace, node, selector or None)
            for pod in listed.items:
                if mine(pod):
                    last = pod
                    if types.is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                        return types.to_pod(pod)
            try:
                for etype, pod in self.api.watch(
                    f"watch pods of DaemonSet {namespace}/{name} on {node}",
                    self.api.core.list_namespaced_pod,
                    namespace,
                    resource_version=listed.resource_version,
                    deadline=deadline,
                    cancel=cancel,
                    field_selector=f"spec.nodeName={node}",
                    label_selector=selector or None,
                ):
                    if etype != "DELETED" and mine(pod):
                        last = pod
                        if types.is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                            return types.to_pod(pod)
            except WatchExpired:
                continue
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"wait for DaemonSet {namespace}/{name} on {node} cancelled")
            if time.monotonic() >= deadline:
                state = (
                    f"pod {types.pod_key(last)} is not Ready"
                    if last is not None
                    else "no pod is scheduled there (check the DaemonSet's nodeSelector and the node labels)"
                )
                raise StepTimeout(
                    f"DaemonSet {namespace}/{name} has no Ready pod on node {node} after "
                    f"{timeout:g}s: {state}",
                    node=node,
                    detail=state,
                )
        raise StepFailed(f"wait for DaemonSet {namespace}/{name}: the watch kept expiring", node=node)

    def rollout_status(self, kind: RolloutKind, obj: Mapping[str, Any]) -> RolloutStatus:
        meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        observed = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        if kind is RolloutKind.DAEMONSET:
            desired = int(st.get("desiredNumberScheduled") or 0)
            updated = int(st.get("updatedNumberScheduled") or 0)
            available = int(st.get("numberAvailable") or 0)
        else:
            desired = int(spec.get("replicas", 1))
            updated = int(st.get("updatedReplicas") or 0)
            available = int(st.get("availableReplicas") or 0)
        complete = observed and updated >= desired and available >= desired
        return RolloutStatus(
            kind,
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            desired,
            updated,
            available,
            complete,
        )

    def wait_rollout(
        self,
        kind: RolloutKind,
        namespace: str,
        name: str,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
    ) -> RolloutStatus:
        """Wait (by watch) until a DaemonSet or Deployment rollout is complete (as kubectl rollout status)."""
        deadline = time.monotonic() + timeout
        list_func: Callable[..., Any]
        read_func: Callable[..., Any]
        if kind is RolloutKind.DAEMONSET:
            list_func, read_func = (
                self.api.apps.list_namespaced_daemon_set,
                self.api.apps.read_namespaced_daemon_set,
            )
        else:
            list_func, read_func = (
                self.api.apps.list_namespaced_deployment,
                self.api.apps.read_namespaced_deployment,
            )
        status: RolloutStatus | None = None
        for _ in range(1000):
            obj = self.api.read(f"read {kind} {namespace}/{name}", read_func, name, namespace)
            status = self.rollout_status(kind, obj)
            if status.complete:
                return status
            try:
                for etype, event_obj in self.api.watch(
                    f"watch {kind} {namespace}/{name}",
                    list_func,
                    namespace,
                    resource_version=str(obj["metadata"]["resourceVersion"]),
                    deadline=deadline,
                    cancel=cancel,
                    field_selector=f"metadata.name={name}",
                ):
                    if etype == "DELETED":
                        raise StepFailed(f"{kind} {namespace}/{name} was deleted during its rollout")
                    status = self.rollout_status(kind, event_obj)
                    if status.complete:
                        return status
            except WatchExpired:
                continue
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"wait for the rollout of {kind} {namespace}/{name} cancelled")
            if time.monotonic() >= deadline:
                raise StepTimeout(
                    f"rollout of {kind} {namespace}/{name} not complete after {timeout:g}s: "
                    f"{status.updated}/{status.desired} updated, {status.available}/{status.desired} "
                    "available"
                )
        raise StepFailed(f"wait for the rollout of {kind} {namespace}/{name}: the watch kept expiring")

    # ---------------------------------------------------------------------------------- lock

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


def _raw_watch(api: KubeApi, collection: str) -> Callable[..., Any]:
    """A watch call on a collection path for :meth:`KubeApi.watch`, for kinds without a typed client
    method (CRDs, any group): the streamed urllib3 response, its status checked."""

    def call(
        *,
        watch: bool,
        resource_version: str,
        timeout_seconds: int,
        allow_watch_bookmarks: bool,
        _preload_content: bool,
        _request_timeout: Any,
        field_selector: str | None = None,
    ) -> Any:
        query = [
            ("watch", "true" if watch else "false"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", "true" if allow_watch_bookmarks else "false"),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        method, url, headers, body, post = api.client.param_serialize(
            method="GET",
            resource_path=collection,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = api.client.call_api(
            method, url, header_params=headers, body=body, post_params=post, _request_timeout=_request_timeout
        )
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    return call


def _documents(manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(manifests, str):
        try:
            docs: list[Any] = [d for d in yaml.safe_load_all(manifests) if d]
        except yaml.YAMLError as exc:
            raise UsageError(f"the manifest is not valid YAML: {exc}") from exc
    elif isinstance(manifests, Mapping):
        docs = [manifests]
    else:
        docs = list(manifests)
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise UsageError(f"a manifest document is not an object: {doc!r:.100}")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            out.extend(_documents(doc["items"]))
        else:
            out.append(doc)
    return out


class _ReadSnapshot:
    """What :meth:`KubeCluster.read_snapshot` serves from (filled lazily, dropped on a write)."""

    def __init__(self) -> None:
        self._locks = {k: threading.Lock() for k in ("node_objs", "daemonsets", "nodes", "pods", "services")}
        self._memo_lock = threading.RLock()  # a memo's load may use another memo
        self.clear()

    def clear(self) -> None:
        self._node_objs: list[Obj] | None = None
        self._daemonsets: list[Obj] | None = None
        self._memo: dict[str, Any] = {}
        self._nodes: dict[str, Node] | None = None
        self._pods: dict[str, list[Pod]] | None = None
        self._services: dict[str | None, list[Service]] = {}

    def node_objects(self, load: Callable[[], list[Obj]]) -> list[Obj]:
        with self._locks["node_objs"]:
            if self._node_objs is None:
                self._node_objs = load()
            return self._node_objs

    def daemonsets(self, load: Callable[[], list[Obj]]) -> list[Obj]:
        with self._locks["daemonsets"]:
            if self._daemonsets is None:
                self._daemonsets = load()
            return self._daemonsets

    def memo(self, key: str, load: Callable[[], _T]) -> _T:
        with self._memo_lock:
            if key not in self._memo:
                self._memo[key] = load()
            value: _T = self._memo[key]
            return value

    def nodes(self, load: Callable[[], list[Node]]) -> dict[str, Node]:
        with self._locks["nodes"]:
            if self._nodes is None:
                self._nodes = {n.name: n for n in load()}
            return self._nodes

    def pods(self, load: Callable[[], list[Pod]]) -> dict[str, list[Pod]]:
        with self._locks["pods"]:
            if self._pods is None:
                by_node: dict[str, list[Pod]] = {}
                for pod in load():
                    by_node.setdefault(pod.node, []).append(pod)
                self._pods = by_node
            return self._pods

    def services(self, namespace: str | None, load: Callable[[], list[Service]]) -> list[Service]:
        with self._locks["services"]:
            if namespace not in self._services:
                self._services[namespace] = load()
            return list(self._services[namespace])


def _conforms(cluster: KubeCluster) -> Cluster:
    """mypy checks here that KubeCluster implements the Cluster port."""
    return cluster
