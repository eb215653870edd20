"""Workloads: DaemonSets (list them, patch their pod scheduling, wait for their pod on a node) and
rollouts of DaemonSets and Deployments (as ``kubectl rollout status``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from migrator.errors import Interrupted, StepFailed, StepTimeout, UsageError
from migrator.ports import Pod
from migrator.targets.kube import types
from migrator.targets.kube.api import FIELD_MANAGER, KubeApi, Obj, WatchExpired
from migrator.targets.kube.pods import PodOps
from migrator.targets.kube.snapshot import Snapshots


class RolloutKind(StrEnum):
    DAEMONSET = "DaemonSet"
    DEPLOYMENT = "Deployment"


@dataclass(frozen=True)
class RolloutStatus:
    kind: RolloutKind
    namespace: str
    name: str
    desired: int
    updated: int
    available: int
    complete: bool


def rollout_status(kind: RolloutKind, obj: Mapping[str, Any]) -> RolloutStatus:
    """Where a DaemonSet's or Deployment's rollout stands (complete as ``kubectl rollout status`` says)."""
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


class Workloads:
    def __init__(self, api: KubeApi, snapshots: Snapshots, pods: PodOps) -> None:
        self.api = api
        self.snapshots = snapshots
        self.pods = pods

    def list_daemonset_objects(self) -> list[Obj]:
        """Every DaemonSet (all namespaces), paginated."""
        snap = self.snapshots.current

        def load() -> list[Obj]:
            return self.api.list_all(
                "list daemonsets", self.api.apps.list_daemon_set_for_all_namespaces
            ).items

        return snap.daemonsets(load) if snap is not None else load()

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
            self.snapshots.invalidate()
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
            listed = self.pods.list_raw(namespace, node, selector or None)
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
            status = rollout_status(kind, obj)
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
                    status = rollout_status(kind, event_obj)
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
