"""The preflight of the ``fault.*`` actions (issue 7): what a fault needs, checked before any change.

Registered for every :class:`~migrator.actions.faults.FaultAction` with
:func:`~migrator.actions.base.register_preflight`, so that the engine's run-start preflight
(:mod:`migrator.engine.requirements`) and the dry run refuse a plan whose fault cannot run, before its
first stage: ``fault.delay`` (netem) on a kernel without netem fails naming the node and the feature
(:class:`~migrator.errors.UnsupportedFeature`), as does a fault whose targets do not resolve (blast radius
cap, control plane) or whose step timeout is shorter than its duration.

It resolves the targets, reads the nodes' facts (``fault-facts.yml``: kernel features, interfaces, SSH
path) and builds every node's commands, exactly as the step will: read only, nothing is installed.
"""

from __future__ import annotations

from typing import Any

from migrator.actions.base import register_preflight
from migrator.actions.context import StepContext
from migrator.actions.faults import FaultAction
from migrator.errors import StepFailed
from migrator.plan.models import FaultArgsBase

MARGIN_S = 5.0
"""A ``wait: true`` fault step needs its duration plus this before its timeout (as ``do`` checks)."""


@register_preflight(FaultAction)
def fault_preflight(action: FaultAction[Any], ctx: StepContext, args: FaultArgsBase) -> None:
    if args.wait and ctx.timeout is not None and ctx.timeout < args.duration + MARGIN_S:
        raise StepFailed(
            f"step {ctx.step!r}: its timeout ({ctx.timeout:g}s) is shorter than the fault's duration"
            f" ({args.duration:g}s) plus {MARGIN_S:g}s; raise the step's timeout"
        )
    action.plan(ctx, args)  # raises UnsupportedFeature (node, feature), PlanError, StepFailed
