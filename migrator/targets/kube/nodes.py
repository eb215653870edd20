"""Nodes: list and read them (through the read snapshot when there is one), label, cordon and uncordon."""

from __future__ import annotations

from collections.abc import Mapping

from migrator.ports import Node
from migrator.targets.kube import types
from migrator.targets.kube.api import FIELD_MANAGER, KubeApi, Obj
from migrator.targets.kube.events import NodeEvents
from migrator.targets.kube.snapshot import Snapshots


class NodeOps:
    def __init__(self, api: KubeApi, snapshots: Snapshots, events: NodeEvents) -> None:
        self.api = api
        self.snapshots = snapshots
        self.events = events

    def list_node_objects(self, label_selector: str | None = None) -> list[Obj]:
        snap = self.snapshots.current
        if snap is not None and label_selector is None:
            return snap.node_objects(lambda: self.api.list_all("list nodes", self.api.core.list_node).items)
        return self.api.list_all("list nodes", self.api.core.list_node, label_selector=label_selector).items

    def _converted(self) -> list[Node]:
        return [types.to_node(o) for o in self.list_node_objects()]

    def list_nodes(self) -> list[Node]:
        snap = self.snapshots.current
        if snap is not None:
            return list(snap.nodes(self._converted).values())
        return self._converted()

    def get_node(self, name: str) -> Node:
        snap = self.snapshots.current
        if snap is not None:
            node = snap.nodes(self._converted).get(name)
            if node is not None:
                return node
        return types.to_node(self.api.read(f"read node {name}", self.api.core.read_node, name))

    def label_node(self, name: str, labels: Mapping[str, str | None], *, dry_run: bool = False) -> None:
        """Set labels (``None`` removes one) with a merge patch; idempotent. ``dry_run`` asks the server to
        validate the patch (existence, RBAC, admission) without storing it."""
        if not dry_run:
            self.snapshots.invalidate()
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
            self.events.record(name, "MigratorLabel", f"labels {changes} set")

    def set_schedulable(self, name: str, schedulable: bool, *, dry_run: bool = False) -> None:
        """Cordon (``False``) or uncordon (``True``) with a patch of ``spec.unschedulable``; ``dry_run`` as
        for :meth:`label_node`."""
        if not dry_run:
            self.snapshots.invalidate()
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
            self.events.record(
                name,
                "MigratorUncordon" if schedulable else "MigratorCordon",
                "uncordoned" if schedulable else "cordoned",
            )
