"""Step requirements at run start: every planned step's ``Action.preflight``, before anything changes.

A step may need something of its target nodes that no plan check covers: ``fault.delay`` needs the netem
qdisc in the node's kernel, a fault needs a step timeout longer than its duration. Finding that out when the
step runs, after earlier stages changed the cluster, means a rollback for nothing. So the engine calls
:func:`step_requirements` at the start of a new run, before the gate checks (``spec.preflight``) and the
first stage, and the dry run calls :func:`dry_run_requirements`: both walk the plan as the engine would
(stages, waves resolved on the current node list, steps rendered per node) and call the preflight of every
action that has one (:meth:`migrator.actions.base.Action.preflight`; the default does nothing and is skipped
without rendering anything). A preflight reads, never changes (its context has ``dry_run`` set).

What cannot be predicted is skipped and said so (``skipped``): a stage whose waves do not resolve on the
current nodes (a label an earlier stage sets, say) is checked when it starts, as before.

The engine journals one ``preflight.requirements`` event ``{outcome: succeeded|failed, checked, failures:
[{stage, step, node, action, error, error_type}], skipped, duration}`` (its actions' own sub-events, such as
a fault's ``refused``, as ``step.event`` with ``preflight: true``) and ends a failed run as
``failed-preflight`` (exit code 1) with nothing changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions import StepContext, get_action
from migrator.engine.planio import PlanSource, render_step, runtime_context
from migrator.engine.state import step_key
from migrator.errors import MigratorError
from migrator.plan.models import Stage, StepBase
from migrator.plan.selection import stage_waves
from migrator.ports import Node, Target
from migrator.runs.events import Outcome, PreflightRequirements
from migrator.runs.journal import Scrubber

CHECK_NAME = "step-requirements"


@dataclass(frozen=True)
class RequirementFailure:
    stage: str
    step: str
    node: str | None
    action: str
    error: str
    error_type: str

    def __str__(self) -> str:
        on = f" on node {self.node}" if self.node else ""
        return f"stage {self.stage!r} step {self.step!r}{on}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "step": self.step,
            "node": self.node,
            "action": self.action,
            "error": self.error,
            "error_type": self.error_type,
        }


@dataclass
class RequirementsResult:
    checked: int = 0
    failures: list[RequirementFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def message(self) -> str:
        lines = "; ".join(str(f) for f in self.failures)
        return f"{len(self.failures)} step(s) cannot run on this target: {lines}"

    def to_event(self) -> PreflightRequirements:
        """The ``preflight.requirements`` event the engine journals."""
        return PreflightRequirements(
            outcome=Outcome.SUCCEEDED if self.ok else Outcome.FAILED,
            checked=self.checked,
            failures=tuple(f.to_dict() for f in self.failures),
            skipped=tuple(self.skipped),
            duration=round(self.duration, 3),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": "succeeded" if self.ok else "failed",
            "checked": self.checked,
            "failures": [f.to_dict() for f in self.failures],
            "skipped": list(self.skipped),
            "duration": round(self.duration, 3),
        }


def _planned(
    stages: list[Stage],
    list_nodes: Callable[[], list[Node]],
    skip: Callable[[Stage], bool],
    skipped: list[str],
) -> Iterator[tuple[int, Stage, int, StepBase, Node | None]]:
    """(stage index, stage, step index, step, node) of every step whose action has a preflight; the nodes
    are listed only when a ``for_each`` stage has such a step (a plan without one costs no API call)."""
    nodes: list[Node] | None = None
    for index, stage in enumerate(stages):
        if skip(stage):
            continue
        wanted = [
            (i, s)
            for i, s in enumerate(stage.steps)
            if get_action(str(getattr(s, "action", ""))).has_preflight
        ]
        if not wanted:
            continue
        if stage.for_each is None:
            for i, s in wanted:
                yield index, stage, i, s, None
            continue
        if nodes is None:
            nodes = list_nodes()
        try:
            chosen = stage_waves(nodes, stage, index)
        except MigratorError as exc:
            skipped.append(f"stage {stage.name!r}: its nodes are known when it starts ({exc})")
            continue
        for wave in chosen.waves:
            for name in wave:
                for i, s in wanted:
                    yield index, stage, i, s, chosen.nodes[name]


def step_requirements(
    source: PlanSource,
    target: Target,
    *,
    run_id: str,
    run_dir: Path,
    artifacts_dir: Path,
    scrub: Scrubber | None = None,
    emit: Callable[[str, Mapping[str, Any]], None] | None = None,
    skip: Callable[[Stage], bool] = lambda stage: False,
) -> RequirementsResult:
    """Call the preflight of every planned step (see the module docstring); never raises for a step."""
    started = time.monotonic()
    result = RequirementsResult()
    for index, stage, step_index, step, node in _planned(
        source.plan.spec.stages, target.cluster.list_nodes, skip, result.skipped
    ):
        key = step_key(stage.name, step.display_name, node.name if node else None)
        action_name = str(getattr(step, "action", ""))

        def emit_sub(event: Mapping[str, Any], key: str = key) -> None:
            if emit is not None:
                emit(key, event)

        try:
            rendered = render_step(step, runtime_context(run_id, node))
            action = get_action(action_name)
            ctx = StepContext(
                run_id=run_id,
                run_dir=run_dir,
                artifacts_dir=artifacts_dir / f"{index + 1:02d}.{step_index + 1:02d}",
                target=target,
                node=node,
                params=source.params,
                dry_run=True,
                emit=emit_sub,
                scrub=scrub or (lambda v: v),
                stage=stage.name,
                step=step.display_name,
                timeout=step.timeout,
            )
            result.checked += 1
            action.preflight(ctx, getattr(rendered, "args", None))
        except Exception as exc:  # noqa: BLE001 - every step is checked; all failures are reported
            if not isinstance(exc, MigratorError):
                logger.opt(exception=True).warning("preflight of step {} raised", key)
            result.failures.append(
                RequirementFailure(
                    stage=stage.name,
                    step=step.display_name,
                    node=node.name if node else None,
                    action=action_name,
                    error=str(exc) or type(exc).__name__,
                    error_type=type(exc).__name__,
                )
            )
    result.duration = time.monotonic() - started
    return result


def dry_run_requirements(
    source: PlanSource, target: Target, *, run_id: str, scratch: Path, scrub: Scrubber | None = None
) -> RequirementsResult:
    """The same walk for a dry run (no journal): the caller reports it."""
    return step_requirements(
        source, target, run_id=run_id, run_dir=scratch, artifacts_dir=scratch / "requirements", scrub=scrub
    )
