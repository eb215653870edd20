"""Fault actions ``fault.*`` (issue 7): network faults on nodes that always heal.

Each step resolves its blast radius (``args.targets``, else the stage's current node), reads the nodes'
facts (kernel features, interfaces, SSH path) and builds the exact commands of the fault on every node
(:mod:`migrator.faults.spec`) *before* touching anything: a missing kernel feature (netem for
``fault.delay``) fails the step up front, naming the node, and the dry run says the same.

Then ``fault-inject.yml`` installs the fault on each node together with its dead man's switch: a record
under ``/run/migrator/faults/<id>.json`` and a detached timer that reverts at ``duration + grace`` even if
migrator is killed. The node's tc/iptables state is read back and emitted as evidence. With ``wait: true``
(default) the step holds the fault for its duration, then reverts it and reports the drift; the undo
reverts too (idempotent with the expiry timer: both take a flock on the node).

Events (``ctx.emit``) carry a ``fault`` key: ``{"id", "kind", "phase": "on"|"evidence"|"off"|"refused",
"nodes", "mechanism", ...}`` so that reports can draw the fault's on/off timeline and show the evidence:
``evidence`` events carry ``when`` = ``after-inject`` (with ``before``, the readback just before the install)
or ``after-revert``. The step result holds the same: ``before``, ``evidence`` and (``wait: true``) ``after``.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, TypeVar

from loguru import logger

from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext
from migrator.errors import StepFailed, UnsupportedFeature
from migrator.faults import nodes as fnodes
from migrator.faults.blast import check_share, resolve_targets
from migrator.faults.spec import ClusterView, FaultKind, FaultPlan, NodeFacts, build, fault_id, render
from migrator.plan.models import (
    FaultApiserverArgs,
    FaultArgsBase,
    FaultBandwidthArgs,
    FaultBlackholeArgs,
    FaultDelayArgs,
    FaultDnsArgs,
    FaultLinkFlapArgs,
    FaultLossArgs,
    FaultPartitionArgs,
    FaultPauseArgs,
)
from migrator.ports import HeartbeatSource, Node

ArgsT = TypeVar("ArgsT", bound=FaultArgsBase)

DEFAULT_LEASE_S = 5.0
"""A ``wait: true`` fault ends this long after migrator's heartbeat stops (``lease`` unset)."""


def fault_event(phase: str, fid: str, kind: FaultKind, **fields: Any) -> dict[str, Any]:
    return {
        "event": "fault",
        "fault": {"id": fid, "kind": kind.value, "phase": phase, "ts": time.time(), **fields},
    }


class FaultAction(Action[ArgsT]):
    kind: ClassVar[FaultKind]

    # ----------------------------------------------------------------------------------------- planning

    def targets(self, ctx: StepContext, args: ArgsT) -> list[Node]:
        nodes = ctx.cluster.list_nodes()
        where = f"step {ctx.step!r}"
        if args.targets is not None:
            return resolve_targets(nodes, args.targets, where=where)
        if ctx.node is None:
            raise StepFailed(f"{where}: give args.targets, or use the fault in a for_each: nodes stage")
        check_share(1, len(nodes), 0.5 if len(nodes) > 1 else 1.0, where=where)
        return [ctx.node]

    def peers(self, ctx: StepContext, args: ArgsT) -> list[Node]:
        return []

    def fault_id(self, ctx: StepContext, targets: list[Node]) -> str:
        return fault_id(ctx.run_id, ctx.stage, ctx.step, self.kind.value, *sorted(n.name for n in targets))

    def plan(self, ctx: StepContext, args: ArgsT) -> tuple[str, list[Node], list[FaultPlan]]:
        """Resolve targets, read facts, build every node's commands; raises before any change."""
        targets = self.targets(ctx, args)
        peers = self.peers(ctx, args)
        overlap = {n.name for n in targets} & {n.name for n in peers}
        if overlap:
            raise StepFailed(f"step {ctx.step!r}: nodes {sorted(overlap)} are on both sides of the partition")
        facts = _facts(ctx, targets, become=args.become)
        fid = self.fault_id(ctx, targets)
        services = ctx.cluster.list_services() if isinstance(args, FaultBlackholeArgs) else []
        endpoint = ctx.target.apiserver_endpoint  # the target's control-plane endpoint
        view = ClusterView(
            nodes=ctx.cluster.list_nodes(),
            services=services,
            api_endpoints=[str(endpoint)] if isinstance(args, FaultApiserverArgs) and endpoint else [],
        )
        plans = []
        for node in targets:
            try:
                plans.append(build(self.kind, fid, args, facts[node.name], view, peers))
            except UnsupportedFeature as exc:
                ctx.emit(fault_event("refused", fid, self.kind, nodes=[node.name], error=str(exc)))
                raise
        return fid, targets, plans

    # ---------------------------------------------------------------------------------------------- do

    def do(self, ctx: StepContext, args: ArgsT) -> Any:
        if args.wait and ctx.remaining() < args.duration + 5:
            raise StepFailed(
                f"step {ctx.step!r}: the timeout leaves {ctx.remaining():.0f}s for a {args.duration:g}s fault"
                "; raise the step's timeout (nothing was changed)"
            )
        fid, targets, plans = self.plan(ctx, args)
        names = [n.name for n in targets]
        ttl = math.ceil(args.duration + args.grace)
        mechanism = sorted({p.mechanism.value for p in plans})
        ctx.emit(
            fault_event(
                "on",
                fid,
                self.kind,
                nodes=names,
                mechanism=mechanism,
                duration=args.duration,
                ttl=ttl,
                commands={p.node: [render(c) for c in p.install] for p in plans},
            )
        )
        logger.info("fault {} ({}) on {} via {}, expires in {}s", fid, self.kind.value, names, mechanism, ttl)
        executor = ctx.target.node_executor(fnodes.NEEDS_EXECUTOR)
        lease, heartbeat = self._lease(ctx, args, executor, fid, names)
        reverted = False
        try:
            outcomes = fnodes.inject(
                executor,
                plans,
                ttl,
                data_dir=ctx.artifacts() / "inject",
                cancel=ctx.cancel,
                become=args.become,
                heartbeat=heartbeat,
                lease=lease,
            )
            evidence, before = {}, {}
            for plan in plans:
                got = outcomes.get(plan.node)
                lines = fnodes.relevant(got.evidence if got else {}, plan.meta)
                evidence[plan.node] = lines
                before[plan.node] = fnodes.relevant(got.before if got else {}, plan.meta)
                if not _in_effect(plan, lines):
                    raise StepFailed(
                        f"fault {fid} is not in effect on node {plan.node}: {lines}", node=plan.node
                    )
            # ``before``: the same readback just before the install (for a before/after view)
            shown = {"when": "after-inject", "evidence": evidence, "before": before}
            ctx.emit(fault_event("evidence", fid, self.kind, nodes=names, **shown))
            result: dict[str, Any] = {
                "id": fid,
                "kind": self.kind.value,
                "nodes": names,
                "mechanism": mechanism,
                "ttl": ttl,
                "lease": lease,
                "expires_at": time.time() + ttl,
                "before": before,  # the same readback just before the install
                "evidence": evidence,  # after the install: the fault in effect
            }
            if not args.wait:
                return result
            ctx.sleep(args.duration)
            result["drift"], result["after"] = self._revert(ctx, fid, names, become=args.become, plans=plans)
            reverted = True
            return result
        finally:
            if args.wait and not reverted:  # failed or cancelled: take the fault away now
                try:
                    self._revert(ctx, fid, names, become=args.become)
                except Exception as exc:  # noqa: BLE001 - the expiry timer on the node still reverts
                    logger.warning(
                        "fault {}: revert after failure failed ({}); the node timer reverts it", fid, exc
                    )

    def _lease(
        self, ctx: StepContext, args: ArgsT, executor: object, fid: str, names: list[str]
    ) -> tuple[int, str | None]:
        """The fault's lease in seconds and the heartbeat file it hangs on (0, None: the TTL alone).
        The heartbeat runs before anything is installed: if it cannot start, nothing is changed."""
        lease = args.lease if args.lease is not None else (DEFAULT_LEASE_S if args.wait else 0.0)
        if lease <= 0:
            return 0, None
        if not isinstance(executor, HeartbeatSource):
            logger.warning("fault {}: this target's executor keeps no heartbeat; the TTL alone ends it", fid)
            ctx.emit(fault_event("lease", fid, self.kind, nodes=names, lease=0, why="no heartbeat here"))
            return 0, None
        path = executor.start_heartbeat(names, become=args.become)
        ctx.emit(fault_event("lease", fid, self.kind, nodes=names, lease=math.ceil(lease), heartbeat=path))
        return math.ceil(lease), path

    def _revert(
        self,
        ctx: StepContext,
        fid: str,
        names: list[str],
        *,
        become: bool = False,
        plans: list[FaultPlan] | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, dict[str, list[str]]]]:
        """Revert ``fid`` on ``names``; returns the drift and the readback after, per node."""
        outcomes = fnodes.revert(
            ctx.target.node_executor(fnodes.NEEDS_EXECUTOR),
            names,
            ids=[fid],
            data_dir=ctx.artifacts() / "revert",
            become=become,
        )
        drift = {node: out.drift for node, out in outcomes.items()}
        metas = {p.node: p.meta for p in plans or []}
        after = {
            node: fnodes.relevant(out.evidence, metas.get(node, {})) if node in metas else {}
            for node, out in outcomes.items()
        }
        after = {node: lines for node, lines in after.items() if lines}
        if after:
            ctx.emit(
                fault_event("evidence", fid, self.kind, nodes=names, when="after-revert", evidence=after)
            )
        ctx.emit(
            fault_event(
                "off",
                fid,
                self.kind,
                nodes=names,
                reverted={node: out.reverted for node, out in outcomes.items()},
                drift=drift,
            )
        )
        if any(drift.values()):
            raise StepFailed(f"fault {fid}: state left on the nodes after the revert: {drift}")
        return drift, after

    def undo(self, ctx: StepContext, args: ArgsT, result: Any) -> None:
        if isinstance(result, dict) and result.get("id"):
            fid, names = str(result["id"]), [str(n) for n in result.get("nodes", [])]
        else:  # do did not finish: recompute the id and nodes (the same ones do would have used)
            targets = self.targets(ctx, args)
            fid, names = self.fault_id(ctx, targets), [n.name for n in targets]
        self._revert(ctx, fid, names, become=args.become)

    # ------------------------------------------------------------------------------------------ preview

    def preview(self, ctx: StepContext, args: ArgsT) -> list[PreviewLine]:
        fid, targets, plans = self.plan(ctx, args)  # raises UnsupportedFeature like apply
        lines: list[PreviewLine] = [
            {
                "fault": self.kind.value,
                "id": fid,
                "targets": [n.name for n in targets],
                "peers": [n.name for n in self.peers(ctx, args)],
                "duration": args.duration,
                "ttl": math.ceil(args.duration + args.grace),
            }
        ]
        for plan in plans:
            for cmd in plan.install:
                lines.append({"command": render(cmd), "node": plan.node, "mechanism": plan.mechanism.value})
        return lines

    def undo_preview(self, ctx: StepContext, args: ArgsT) -> list[PreviewLine]:
        try:
            _fid, _targets, plans = self.plan(ctx, args)
        except Exception as exc:  # noqa: BLE001 - preview already reported it
            return [f"revert the fault ({exc})"]
        return [{"command": render(cmd), "node": p.node} for p in plans for cmd in p.revert]


_DRY_RUN_FACTS: dict[tuple[int, str, tuple[str, ...]], dict[str, NodeFacts]] = {}


def _facts(ctx: StepContext, targets: list[Node], *, become: bool = False) -> dict[str, NodeFacts]:
    """The targets' facts; a dry run reads them once for preview and undo preview."""
    key = (id(ctx.target), ctx.run_id, tuple(sorted(n.name for n in targets)))
    if ctx.dry_run and key in _DRY_RUN_FACTS:
        return _DRY_RUN_FACTS[key]
    facts = fnodes.gather_facts(
        ctx.target.node_executor(fnodes.NEEDS_EXECUTOR),
        targets,
        data_dir=ctx.artifacts() / "facts",
        cancel=ctx.cancel,
    )
    if ctx.dry_run:
        if len(_DRY_RUN_FACTS) > 64:
            _DRY_RUN_FACTS.clear()
        _DRY_RUN_FACTS[key] = facts
    return facts


def _in_effect(plan: FaultPlan, lines: dict[str, list[str]]) -> bool:
    handle = plan.meta.get("qdisc_handle")
    com = plan.meta.get("comment")
    text = "\n".join(line for group in lines.values() for line in group)
    if plan.meta.get("in_effect"):  # e.g. the link-flap loop's pid line
        return str(plan.meta["in_effect"]) in text
    if handle:
        return f" {handle} " in text
    if com:
        return str(com) in text
    return True


@register_action("fault.loss")
class FaultLoss(FaultAction[FaultLossArgs]):
    kind = FaultKind.LOSS


@register_action("fault.delay")
class FaultDelay(FaultAction[FaultDelayArgs]):
    kind = FaultKind.DELAY


@register_action("fault.bandwidth")
class FaultBandwidth(FaultAction[FaultBandwidthArgs]):
    kind = FaultKind.BANDWIDTH


@register_action("fault.partition")
class FaultPartition(FaultAction[FaultPartitionArgs]):
    kind = FaultKind.PARTITION

    def peers(self, ctx: StepContext, args: FaultPartitionArgs) -> list[Node]:
        if args.peers is None:
            return []
        return resolve_targets(
            ctx.cluster.list_nodes(), args.peers, where=f"step {ctx.step!r} peers", check_cap=False
        )


@register_action("fault.blackhole")
class FaultBlackhole(FaultAction[FaultBlackholeArgs]):
    kind = FaultKind.BLACKHOLE


@register_action("fault.dns")
class FaultDns(FaultAction[FaultDnsArgs]):
    kind = FaultKind.DNS


@register_action("fault.link-flap")
class FaultLinkFlap(FaultAction[FaultLinkFlapArgs]):
    kind = FaultKind.LINK_FLAP


@register_action("fault.apiserver")
class FaultApiserver(FaultAction[FaultApiserverArgs]):
    kind = FaultKind.APISERVER


@register_action("fault.pause")
class FaultPause(Action[FaultPauseArgs]):
    """A pause between faults (game days); interruptible by Ctrl-C, a monitor abort or the step timeout."""

    def do(self, ctx: StepContext, args: FaultPauseArgs) -> Any:
        ctx.emit({"event": "pause", "duration": args.duration, "ts": time.time()})
        ctx.sleep(args.duration)
        return {"paused": args.duration}

    def undo(self, ctx: StepContext, args: FaultPauseArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: FaultPauseArgs) -> list[PreviewLine]:
        return [f"pause {args.duration:g}s"]
