"""Node actions through the :class:`~migrator.ports.Cluster` port; used in ``for_each: nodes`` stages.

Each one records the node's prior state in ``prepare`` (journaled before the first attempt), and its
undo restores exactly that state, so that an undo after a crash or a half-done ``do`` is correct.
"""

from __future__ import annotations

from typing import Any

from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext
from migrator.plan.models import EmptyArgs, NodeDrainArgs, NodeLabelArgs


def _prior_schedulable(ctx: StepContext, result: Any) -> bool | None:
    for source in (ctx.prepared, result):
        if isinstance(source, dict) and isinstance(source.get("schedulable"), bool):
            return bool(source["schedulable"])
    return None


class _SetSchedulable(Action[EmptyArgs]):
    """Cordon or uncordon the current node; undo restores the schedulable state it had before."""

    needs_node = True
    schedulable: bool
    verb: str

    def prepare(self, ctx: StepContext, args: EmptyArgs) -> Any:
        return {"schedulable": ctx.cluster.get_node(ctx.require_node().name).schedulable}

    def do(self, ctx: StepContext, args: EmptyArgs) -> Any:
        node = ctx.require_node().name
        before = ctx.cluster.get_node(node).schedulable
        ctx.cluster.set_schedulable(node, self.schedulable)
        return {"schedulable": before}

    def undo(self, ctx: StepContext, args: EmptyArgs, result: Any) -> None:
        prior = _prior_schedulable(ctx, result)
        if prior is not None:
            ctx.cluster.set_schedulable(ctx.require_node().name, prior)

    def preview(self, ctx: StepContext, args: EmptyArgs) -> list[PreviewLine]:
        name = ctx.require_node().name
        return [{"command": f"kubectl {self.verb} {name}", "node": name}]


@register_action("node.cordon")
class Cordon(_SetSchedulable):
    schedulable = False
    verb = "cordon"

    def undo_preview(self, ctx: StepContext, args: EmptyArgs) -> list[PreviewLine]:
        return [f"restore schedulable state of {ctx.require_node().name}"]


@register_action("node.uncordon")
class Uncordon(_SetSchedulable):
    schedulable = True
    verb = "uncordon"


@register_action("node.drain")
class Drain(Action[NodeDrainArgs]):
    """Cordon and evict; undo makes the node schedulable again if it was (pods are not moved back)."""

    needs_node = True

    def prepare(self, ctx: StepContext, args: NodeDrainArgs) -> Any:
        return {"schedulable": ctx.cluster.get_node(ctx.require_node().name).schedulable}

    def do(self, ctx: StepContext, args: NodeDrainArgs) -> Any:
        node = ctx.require_node().name
        before = ctx.cluster.get_node(node).schedulable
        ctx.cluster.set_schedulable(node, False)
        result = ctx.cluster.drain_node(node, timeout=ctx.remaining(), cancel=ctx.cancel)
        return {"schedulable": before, "evicted": list(result.evicted), "skipped": list(result.skipped)}

    def undo(self, ctx: StepContext, args: NodeDrainArgs, result: Any) -> None:
        prior = _prior_schedulable(ctx, result)
        if prior is not None:
            ctx.cluster.set_schedulable(ctx.require_node().name, prior)

    def preview(self, ctx: StepContext, args: NodeDrainArgs) -> list[PreviewLine]:
        name = ctx.require_node().name
        flags = " --ignore-daemonsets"
        if args.delete_emptydir_data:
            flags += " --delete-emptydir-data"
        if args.grace_period is not None:
            flags += f" --grace-period={int(args.grace_period)}"
        pods = [p.key for p in ctx.cluster.list_pods(node=name) if not p.host_network]
        return [{"command": f"kubectl drain {name}{flags}", "node": name, "evicts": pods}]

    def undo_preview(self, ctx: StepContext, args: NodeDrainArgs) -> list[PreviewLine]:
        return [f"uncordon {ctx.require_node().name} if it was schedulable"]


@register_action("node.label")
class Label(Action[NodeLabelArgs]):
    """Set (or remove, with null) labels; undo restores the prior values."""

    needs_node = True

    def prepare(self, ctx: StepContext, args: NodeLabelArgs) -> Any:
        labels = ctx.cluster.get_node(ctx.require_node().name).labels
        return {"labels": {key: labels.get(key) for key in args.labels}}

    def do(self, ctx: StepContext, args: NodeLabelArgs) -> Any:
        node = ctx.require_node().name
        labels = ctx.cluster.get_node(node).labels
        before = {key: labels.get(key) for key in args.labels}
        ctx.cluster.label_node(node, dict(args.labels))
        return {"labels": before}

    def undo(self, ctx: StepContext, args: NodeLabelArgs, result: Any) -> None:
        prior: Any = None
        for source in (ctx.prepared, result):
            if isinstance(source, dict) and isinstance(source.get("labels"), dict):
                prior = source["labels"]
                break
        if prior is not None:
            ctx.cluster.label_node(ctx.require_node().name, dict(prior))

    def preview(self, ctx: StepContext, args: NodeLabelArgs) -> list[PreviewLine]:
        name = ctx.require_node().name
        parts = [f"{k}-" if v is None else f"{k}={v}" for k, v in args.labels.items()]
        return [{"command": f"kubectl label node {name} --overwrite {' '.join(parts)}", "node": name}]

    def undo_preview(self, ctx: StepContext, args: NodeLabelArgs) -> list[PreviewLine]:
        return [f"restore labels {sorted(args.labels)} of {ctx.require_node().name}"]


@register_action("node.restart-pods")
class RestartPods(Action[EmptyArgs]):
    """Recreate the node's pods (so that they get the node's current CNI). Nothing to undo."""

    needs_node = True

    def do(self, ctx: StepContext, args: EmptyArgs) -> Any:
        return {"restarted": ctx.cluster.restart_pods(ctx.require_node().name)}

    def undo(self, ctx: StepContext, args: EmptyArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: EmptyArgs) -> list[PreviewLine]:
        name = ctx.require_node().name
        pods = [p.key for p in ctx.cluster.list_pods(node=name) if not p.host_network]
        return [{"command": f"kubectl delete pods --field-selector spec.nodeName={name}", "pods": pods}]
