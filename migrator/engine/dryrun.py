"""The dry run: what ``apply`` would do against a target, as data; it reads the target, changes nothing."""

from __future__ import annotations

import contextlib
import gc
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.actions import Action, StepContext, get_action, registered_actions
from migrator.actions.context import CheckContext
from migrator.checks import get_check
from migrator.engine.planio import PlanSource, runtime_context, validate_for_engine
from migrator.engine.requirements import CHECK_NAME as REQUIREMENTS_CHECK
from migrator.engine.requirements import dry_run_requirements
from migrator.errors import CheckFailed
from migrator.plan.models import CheckBase, StepBase
from migrator.plan.selection import stage_waves
from migrator.plan.templates import RuntimeTemplate
from migrator.ports import Node, Target
from migrator.runs.journal import Scrubber


def dry_run(source: PlanSource, target: Target, *, target_spec: str | None = None) -> dict[str, Any]:
    """What ``apply`` would do against ``target``, as data: reads the target, changes nothing.

    Dry runs take no lock and create no run folder; previews that need a scratch folder (Ansible check
    mode) get a temporary one, removed afterwards.
    """
    snapshot = target.read_snapshot  # a target may serve the dry run's reads from one list
    with (
        _gc_paused(),
        tempfile.TemporaryDirectory(prefix="migrator-dry-run-") as scratch,
        snapshot() if snapshot is not None else contextlib.nullcontext(),
    ):
        return _dry_run(source, target, target_spec=target_spec, scratch=Path(scratch))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (then put it back as it was).

    A dry run builds large trees of new containers and frees next to nothing (the target's snapshot, e.g.
    20,000 pods, and the report, e.g. 30,000 step views): the collector would traverse them again and
    again (at 5,000 nodes, ~60% of the dry run's CPU time) to find no cycle. Memory is still freed by
    reference counting; what cycles there are get collected after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class _DryRunEnv:
    """What every preview of one dry run shares."""

    run_id: str
    scratch: Path
    target: Target
    params: dict[str, Any]
    scrub: Scrubber
    cancel: threading.Event  # a dry run is never cancelled: one event for all the step contexts


@dataclass(frozen=True)
class _RenderedStep:
    """A step rendered for a node (or for every node), with what its views take from it."""

    step: StepBase
    action_name: str
    action: Action[Any]
    args: Any
    args_json: Any
    undo: Any  # the explicit undo's view, None when the action previews its own undo


class _StepViews:
    """The dry-run views of one step, for every node of its stage.

    The step is compiled once (:class:`~migrator.plan.templates.RuntimeTemplate`). A step whose templates
    do not use ``node.*`` (most steps: ``params`` are rendered at load time) is rendered, and its args and
    explicit undo dumped, once for the stage; only a step that uses ``node.*`` is rendered for each node.
    The action's preview and undo preview are asked for every node (they read the node's state). The
    views of one step share the dumped args, retry and undo: treat the report as read-only.
    """

    def __init__(self, step: StepBase, env: _DryRunEnv) -> None:
        self.step = step
        self.env = env
        self.template = RuntimeTemplate(step)
        self.per_node = self.template.uses_node()
        self._shared: _RenderedStep | None = None
        self._retry: dict[str, Any] | None = None

    def rendered(self, node: Node | None) -> _RenderedStep:
        if self.per_node:
            return self.render(node)
        if self._shared is None:  # on first use: a stage without nodes renders nothing, as before
            self._shared = self.render(None)
        return self._shared

    def render(self, node: Node | None) -> _RenderedStep:
        rendered = self.template.render(runtime_context(self.env.run_id, node))
        action_name = str(getattr(rendered, "action", ""))
        args = getattr(rendered, "args", None)
        undo = None
        if not rendered.no_undo and rendered.undo is not None:
            undo = {
                "action": getattr(rendered.undo, "action", ""),
                "args": _dump_args(getattr(rendered.undo, "args", None)),
            }
        return _RenderedStep(
            step=rendered,
            action_name=action_name,
            action=get_action(action_name),
            args=args,
            args_json=args.model_dump(mode="json") if args is not None else None,
            undo=undo,
        )

    def view(self, node: Node | None) -> dict[str, Any]:
        step, env = self.step, self.env
        rendered = self.rendered(node)
        if self._retry is None:
            self._retry = step.retry.model_dump(mode="json")
        ctx = StepContext(
            run_id=env.run_id,
            run_dir=env.scratch,
            artifacts_dir=env.scratch,
            target=env.target,
            node=node,
            params=env.params,
            cancel=env.cancel,
            dry_run=True,
            step=step.display_name,
            scrub=env.scrub,
        )
        action, args = rendered.action, rendered.args
        view: dict[str, Any] = {
            "step": step.display_name,
            "action": rendered.action_name,
            "args": rendered.args_json,
            "timeout": step.timeout,
            "retry": self._retry,
            "preview": action.preview(ctx, args),
        }
        if step.no_undo:
            view["undo"] = "none (no_undo)"
        elif rendered.undo is not None:
            view["undo"] = rendered.undo
        else:
            view["undo"] = action.undo_preview(ctx, args) or f"{rendered.action_name} undo"
        return view


def _dry_run(source: PlanSource, target: Target, *, target_spec: str | None, scratch: Path) -> dict[str, Any]:
    validate_for_engine(source)
    plan = source.plan
    scrub = Scrubber(source.secret_values)
    env = _DryRunEnv(
        run_id="dry-run",
        scratch=scratch,
        target=target,
        params=source.params,
        scrub=scrub,
        cancel=threading.Event(),
    )
    nodes = target.cluster.list_nodes()
    requirements = dry_run_requirements(source, target, run_id=env.run_id, scratch=scratch, scrub=scrub)
    if not requirements.ok:  # as the run would fail at its start (issue 7): say it, nothing changes
        raise CheckFailed(
            f"preflight would fail, nothing would be changed: {requirements.message()}",
            check=REQUIREMENTS_CHECK,
            details=requirements.to_dict(),
        )

    def checks_view(checks: Sequence[CheckBase], phase: str) -> list[dict[str, Any]]:
        out = []
        for check in checks:
            checker = get_check(str(getattr(check, "type", "")))
            ctx = CheckContext(
                run_id=env.run_id,
                run_dir=scratch,
                artifacts_dir=scratch,
                target=target,
                phase=phase,
                params=source.params,
                dry_run=True,
            )
            out.append(
                {
                    "check": check.display_name,
                    "type": str(getattr(check, "type", "")),
                    "preview": checker.preview(ctx, check),
                }
            )
        return out

    def node_view(node: Node, steps: Sequence[_StepViews]) -> dict[str, Any]:
        return {
            "node": node.name,
            "address": node.address,
            "control_plane": node.is_control_plane,
            "steps": [s.view(node) for s in steps],
        }

    stages: list[dict[str, Any]] = []
    for index, stage in enumerate(plan.spec.stages):
        view: dict[str, Any] = {
            "stage": stage.name,
            "description": stage.description,
            "on_failure": str(stage.on_failure),
            "approval": stage.approval,
            "verify": checks_view(stage.verify, "verify"),
            "monitor": checks_view(stage.monitor, "monitor"),
        }
        steps = [_StepViews(s, env) for s in stage.steps]
        if stage.for_each is not None:
            chosen = stage_waves(nodes, stage, index)
            view["for_each"] = {
                "order": str(stage.for_each.order),
                "max_unavailable": stage.for_each.max_unavailable,
            }
            view["waves"] = [
                {"wave": w, "nodes": [node_view(chosen.nodes[name], steps) for name in wave]}
                for w, wave in enumerate(chosen.waves)
            ]
        else:
            view["steps"] = [s.view(None) for s in steps]
        stages.append(view)
    report = {
        "dry_run": True,
        "plan": plan.metadata.name,
        "plan_path": str(source.path) if source.path else None,
        "target": target_spec or target.name,
        "nodes": [
            {
                "name": n.name,
                "address": n.address,
                "control_plane": n.is_control_plane,
                "schedulable": n.schedulable,
            }
            for n in nodes
        ],
        "rollback": str(plan.spec.rollback),
        "params": source.masked_params(),
        "preflight": checks_view(plan.spec.preflight, "preflight"),
        "requirements": requirements.to_dict(),
        "stages": stages,
        "verify": checks_view(plan.spec.verify, "verify"),
        "actions_available": sorted(registered_actions()),
    }
    result: dict[str, Any] = scrub(report)
    return result


def _dump_args(args: Any) -> Any:
    return args.model_dump(mode="json") if args is not None and hasattr(args, "model_dump") else args
