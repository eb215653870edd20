"""Entry points of the engine for the CLI (and for tests): apply, resume, rollback, dry run."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from migrator import __version__
from migrator.actions import Action, StepContext, get_action, registered_actions
from migrator.actions.context import CheckContext
from migrator.checks import get_check
from migrator.engine.engine import Engine, EngineOptions, Observer, RunControl, RunResult
from migrator.engine.lock import TargetLock
from migrator.engine.planio import (
    PlanSource,
    file_hash,
    load_plan_file,
    plan_to_data,
    runtime_context,
)
from migrator.engine.requirements import CHECK_NAME as REQUIREMENTS_CHECK
from migrator.engine.requirements import dry_run_requirements
from migrator.engine.state import SagaState
from migrator.errors import CheckFailed, Location, PlanError, Problem, UsageError
from migrator.fsutil import atomic_write_json, atomic_write_text
from migrator.plan.models import CheckBase, Plan, StepBase
from migrator.plan.selection import resolve_waves
from migrator.plan.source import read_yaml
from migrator.plan.templates import RuntimeTemplate
from migrator.ports import LosableLock, Node, RunLock, Target
from migrator.runs.events import RunStatus
from migrator.runs.journal import Scrubber, now_iso, read_journal
from migrator.runs.rundir import RunDir, find_run, new_run_id
from migrator.targets.open import open_target

ObserverFactory = Callable[[RunDir], Sequence[Observer]]


def _stop_when_lock_lost(lock: RunLock, engine: Engine) -> None:
    """A lock that can be lost while the run goes on (a target's lease) stops the run at its next safe
    point, without rolling back (another run owns the target now)."""
    if isinstance(lock, LosableLock):

        def stop(reason: str) -> None:
            engine.log.error(f"the run lock was lost ({reason}): stopping at the next safe point")
            engine.control.stop_rollback.set()
            engine.control.cancel.set()

        lock.watch_lost(stop)


def _run_lock(target: Target, lock_name: str, run_id: str) -> RunLock:
    """The target's own lock when it provides one (``Target.run_lock``, e.g. a Kubernetes Lease), else
    the local lock file."""
    if target.run_lock is not None:
        return target.run_lock(run_id)
    return TargetLock(lock_name, run_id)


# ----------------------------------------------------------------------------------- validation


def validate_for_engine(plan: Plan, path: Path | None = None) -> None:
    """Refuse a plan this build cannot run: unavailable actions/checks, node actions outside for_each.

    Problems point at the file, line and column when the plan file is given (the file is parsed again
    for their locations only when there is a problem).
    """
    found: list[tuple[str | None, tuple[str | int, ...], str]] = []  # (stage, path, message)

    def check_step(step: StepBase, stage: str | None, at: tuple[str | int, ...], in_for_each: bool) -> None:
        name = str(getattr(step, "action", ""))
        try:
            action = get_action(name)
        except PlanError as exc:
            found.append((stage, (*at, "action"), str(exc)))
            return
        if action.needs_node and not in_for_each:
            message = f"action {name!r} needs a node: use it in a for_each stage"
            found.append((stage, (*at, "action"), message))
        if step.undo is not None:
            check_step(step.undo, stage, (*at, "undo"), in_for_each)

    def check_check(check: CheckBase, stage: str | None, at: tuple[str | int, ...]) -> None:
        try:
            get_check(str(getattr(check, "type", "")))
        except PlanError as exc:
            found.append((stage, (*at, "type"), str(exc)))

    for i, check in enumerate(plan.spec.preflight):
        check_check(check, None, ("spec", "preflight", i))
    for i, check in enumerate(plan.spec.verify):
        check_check(check, None, ("spec", "verify", i))
    for s, stage in enumerate(plan.spec.stages):
        at: tuple[str | int, ...] = ("spec", "stages", s)
        for i, step in enumerate(stage.steps):
            check_step(step, stage.name, (*at, "steps", i), stage.for_each is not None)
        for i, check in enumerate(stage.verify):
            check_check(check, stage.name, (*at, "verify", i))
        for i, check in enumerate(stage.monitor):
            check_check(check, stage.name, (*at, "monitor", i))
    if not found:
        return
    locate = _locator(path)
    raw_stage = _raw_stage_indexes(path)
    problems: list[Problem] = []
    for stage_name, at, message in found:
        where = at
        if stage_name is not None:  # the stage's index in the file (disabled stages are not loaded)
            where = (*at[:2], raw_stage.get(stage_name, at[2]), *at[3:])
        problems.append(Problem(locate(where), _show(where), message))
    raise PlanError("", problems)


def _show(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path[1:] if path and path[0] == "spec" else path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _locator(path: Path | None) -> Callable[[tuple[str | int, ...]], Location]:
    if path is None or not path.is_file():
        name = str(path) if path else "<plan>"
        return lambda at: Location(name)
    try:
        _, smap = read_yaml(path.read_text(), str(path))
    except (PlanError, OSError, UnicodeDecodeError):
        return lambda at: Location(str(path))
    return smap.value


def _raw_stage_indexes(path: Path | None) -> dict[str, int]:
    """Stage name -> index in the file (disabled stages are left out of the loaded plan)."""
    if path is None or not path.is_file():
        return {}
    try:
        data, _ = read_yaml(path.read_text(), str(path))
    except (PlanError, OSError, UnicodeDecodeError):
        return {}
    stages = (data.get("spec") or {}).get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list):
        return {}
    return {str(st.get("name")): i for i, st in enumerate(stages) if isinstance(st, dict)}


# ---------------------------------------------------------------------------------------- apply


def _engine_observers(rundir: RunDir, factory: ObserverFactory | None) -> list[Observer]:
    from migrator.engine.observers import JsonLogObserver  # noqa: PLC0415 - avoid an import cycle

    observers: list[Observer] = [JsonLogObserver(rundir)]
    if factory is not None:
        observers.extend(factory(rundir))
    # reports (report.json/.md/.html, junit.xml) at every run end; errors are logged, never raised
    from migrator.report.observer import ReportObserver  # noqa: PLC0415

    observers.append(ReportObserver(rundir.path))
    return observers


def apply_plan(
    source: PlanSource,
    target: Target,
    *,
    target_spec: str | None = None,
    observers: ObserverFactory | None = None,
    control: RunControl | None = None,
    options: EngineOptions | None = None,
    force_unlock: str | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Start a new run of ``source`` against ``target``. Raises PlanError/LockHeld before any change."""
    validate_for_engine(source.plan, source.path)
    run_id = run_id or new_run_id(source.plan.metadata.name)
    lock = _run_lock(target, target.name, run_id)
    lock.acquire(force_unlock=force_unlock)
    try:
        rundir = RunDir.create(run_id)
        scrub = Scrubber(source.secret_values)
        atomic_write_text(rundir.plan_yaml, scrub.text(source.rendered_text))
        atomic_write_json(rundir.plan_json, scrub(plan_to_data(source.plan)))
        rundir.write_meta(
            scrub(
                {
                    "run_id": run_id,
                    "plan": source.plan.metadata.name,
                    "plan_path": str(source.path.resolve()) if source.path else None,
                    "plan_hash": source.source_hash,
                    "params": source.masked_params(),
                    "overrides": source.overrides,
                    "secret_params": source.secret_params,
                    "target": target_spec or target.name,
                    "lock": target.name,
                    "started": now_iso(),
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "migrator": __version__,
                    "dry_run": False,
                }
            )
        )
        engine = Engine(
            source,
            target,
            rundir,
            observers=_engine_observers(rundir, observers),
            control=control,
            options=options,
            target_spec=target_spec or target.name,
        )
        _stop_when_lock_lost(lock, engine)
        return engine.execute("apply")
    finally:
        lock.release()


# -------------------------------------------------------------------------------- resume/rollback


def _reload_source(
    rundir: RunDir, meta: dict[str, Any], *, force: bool, overrides: dict[str, str]
) -> PlanSource:
    path = Path(meta["plan_path"]) if meta.get("plan_path") else None
    recorded = meta.get("plan_hash")
    if path is not None and recorded:
        if not path.exists():
            if not force:
                raise UsageError(
                    f"the plan file {path} of run {rundir.run_id} is gone; pass --force to use the"
                    " plan recorded in the run folder"
                )
        elif file_hash(path) != recorded and not force:
            raise UsageError(
                f"the plan file {path} changed since run {rundir.run_id} started; pass --force to"
                " go on with the plan recorded in the run folder"
            )
    secret = list(meta.get("secret_params") or [])
    overridden = set(meta.get("overrides") or [])
    not_secret = sorted(set(overrides) - set(secret))
    if not_secret:
        raise UsageError(
            f"--set {', '.join(not_secret)}: a run goes on with the parameters it started with;"
            " --set here only gives secret parameters again"
        )
    if secret and (path is None or not path.exists()):
        raise UsageError(
            f"run {rundir.run_id} used secret parameters {secret} and its plan file {path} is gone;"
            " the run folder keeps them masked, so it cannot go on without the plan file"
        )
    if secret and path is not None:
        missing = [n for n in secret if n in overridden and n not in overrides]
        if missing:
            raise UsageError(
                f"run {rundir.run_id} used secret parameters {missing}: give them again with --set"
            )
        params = {k: v for k, v in (meta.get("params") or {}).items() if k in overridden and k not in secret}
        sets = {k: _as_override(v) for k, v in params.items()}
        sets.update(overrides)
        return load_plan_file(path, sets)
    try:
        data = json.loads(rundir.plan_json.read_text())
        plan = Plan.model_validate(data)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"run {rundir.run_id}: cannot read its recorded plan {rundir.plan_json}: {exc}"
        ) from None
    return PlanSource(
        plan=plan,
        path=path,
        rendered_text=rundir.plan_yaml.read_text(),
        params=dict(meta.get("params") or {}),
        source_hash=recorded,
        overrides=sorted(overridden),
    )


def _as_override(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _continue(
    run_ref: str,
    mode: str,
    *,
    target: Target | None,
    observers: ObserverFactory | None,
    control: RunControl | None,
    options: EngineOptions | None,
    force: bool,
    overrides: dict[str, str] | None,
) -> RunResult:
    rundir = find_run(run_ref)
    meta = rundir.meta()
    if meta.get("dry_run"):
        raise UsageError(f"run {rundir.run_id} is a dry run; there is nothing to {mode}")
    found = read_journal(rundir.journal)
    if found.torn:
        logger.warning("journal of run {}: {}", rundir.run_id, found.torn)
    state = SagaState.replay(found.events)
    if (
        mode == "resume"
        and state.phase == "finished"
        and state.status
        in (
            RunStatus.SUCCEEDED,
            RunStatus.FAILED_ROLLED_BACK,
            RunStatus.ROLLED_BACK,
            RunStatus.FAILED_PREFLIGHT,
        )
    ):
        raise UsageError(f"run {rundir.run_id} already finished ({state.status}); there is nothing to resume")
    if (
        mode == "rollback"
        and state.phase == "finished"
        and state.status in (RunStatus.FAILED_ROLLED_BACK, RunStatus.ROLLED_BACK, RunStatus.FAILED_PREFLIGHT)
        and not state.rollback_stack()
    ):
        raise UsageError(f"run {rundir.run_id} is {state.status}; there is nothing to roll back")
    source = _reload_source(rundir, meta, force=force, overrides=dict(overrides or {}))
    spec = str(meta.get("target") or state.target or "fake")
    if target is None:
        target = open_target(spec)
    recorded_identity = next((e.get("identity") for e in found.events if e.get("type") == "run.start"), None)
    if recorded_identity and not force:
        try:
            identity = target.cluster.identity()
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is a usage problem
            raise UsageError(f"cannot reach target {spec!r}: {exc}") from None
        if identity != recorded_identity:
            raise UsageError(
                f"target {spec!r} is not the cluster run {rundir.run_id} ran against"
                f" ({identity} != {recorded_identity}); pass --force to go on anyway"
            )
    lock = _run_lock(target, str(meta.get("lock") or target.name), rundir.run_id)
    lock.acquire()
    try:
        engine = Engine(
            source,
            target,
            rundir,
            observers=_engine_observers(rundir, observers),
            control=control,
            options=options,
            state=state,
            target_spec=spec,
        )
        _stop_when_lock_lost(lock, engine)
        return engine.execute(mode)
    finally:
        lock.release()


def resume_run(
    run_ref: str,
    *,
    target: Target | None = None,
    observers: ObserverFactory | None = None,
    control: RunControl | None = None,
    options: EngineOptions | None = None,
    force: bool = False,
    overrides: dict[str, str] | None = None,
) -> RunResult:
    """Continue an interrupted or crashed run from its journal (or continue its rollback)."""
    return _continue(
        run_ref,
        "resume",
        target=target,
        observers=observers,
        control=control,
        options=options,
        force=force,
        overrides=overrides,
    )


def rollback_run(
    run_ref: str,
    *,
    target: Target | None = None,
    observers: ObserverFactory | None = None,
    control: RunControl | None = None,
    options: EngineOptions | None = None,
    force: bool = False,
    overrides: dict[str, str] | None = None,
) -> RunResult:
    """Undo every completed step of a finished or interrupted run, newest first, then verify."""
    return _continue(
        run_ref,
        "rollback",
        target=target,
        observers=observers,
        control=control,
        options=options,
        force=force,
        overrides=overrides,
    )


# --------------------------------------------------------------------------------------- dry run


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
    validate_for_engine(source.plan, source.path)
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
    by_name = {n.name: n for n in nodes}
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
            waves = resolve_waves(nodes, stage.for_each, where=f"stages[{index}] ({stage.name})")
            view["for_each"] = {
                "order": str(stage.for_each.order),
                "max_unavailable": stage.for_each.max_unavailable,
            }
            view["waves"] = [
                {"wave": w, "nodes": [node_view(by_name[name], steps) for name in wave]}
                for w, wave in enumerate(waves)
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
