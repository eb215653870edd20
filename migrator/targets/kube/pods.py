"""Pods: list them (by namespace, node, labels; through the read snapshot when there is one), wait by
watch until some are gone, restart a node's pods."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from migrator.errors import Interrupted, StepFailed, StepTimeout
from migrator.ports import Pod
from migrator.targets.kube import types
from migrator.targets.kube.api import KubeApi, KubeNotFound, ListResult, Obj, WatchExpired
from migrator.targets.kube.events import NodeEvents
from migrator.targets.kube.snapshot import Snapshots


class PodOps:
    def __init__(self, api: KubeApi, snapshots: Snapshots, events: NodeEvents) -> None:
        self.api = api
        self.snapshots = snapshots
        self.events = events

    def list_raw(
        self, namespace: str | None, node: str | None, label_selector: str | None = None
    ) -> ListResult:
        """The pods as the API server lists them, with the list's resourceVersion (to watch from)."""
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

    def list_pod_objects(
        self, namespace: str | None = None, node: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        return self.list_raw(namespace, node, label_selector).items

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        snap = self.snapshots.current
        if snap is not None:
            by_node = snap.pods(
                lambda: self.api.list_converted(
                    "list pods", types.to_pod, self.api.core.list_pod_for_all_namespaces
                )
            )
            pods = by_node.get(node, []) if node is not None else [p for ps in by_node.values() for p in ps]
            return [p for p in pods if namespace is None or p.namespace == namespace]
        return [types.to_pod(o) for o in self.list_pod_objects(namespace, node)]

    def wait_gone(
        self,
        node: str,
        pods: Mapping[str, Obj],
        deadline: float,
        timeout: float,
        cancel: threading.Event | None,
    ) -> None:
        """Wait (by watch) until these pods of ``node`` (by key) are gone, or raise at ``deadline``."""
        waiting = {str(p["metadata"]["uid"]): key for key, p in pods.items()}
        for _ in range(1000):
            listed = self.list_raw(None, node)
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

    def restart_pods(
        self, node: str, *, wait_timeout: float | None = None, cancel: threading.Event | None = None
    ) -> list[str]:
        """Delete the node's non-hostNetwork pods owned by a controller (they are recreated with the node's
        current CNI); return their keys. With ``wait_timeout``, wait until they are gone."""
        self.snapshots.invalidate()
        deleted: dict[str, Obj] = {}
        for pod in self.list_raw(None, node).items:
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
            self.events.record(node, "MigratorRestartPods", f"restarted {len(deleted)} pods")
        if wait_timeout is not None and deleted:
            self.wait_gone(node, deleted, time.monotonic() + wait_timeout, wait_timeout, cancel)
        return sorted(deleted)
