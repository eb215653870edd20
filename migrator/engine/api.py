"""Entry points of the engine for the CLI (and for tests): apply, resume, rollback (the dry run is in
:mod:`migrator.engine.dryrun`)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from migrator import __version__
from migrator.engine.engine import Engine, EngineOptions, Observer, RunControl, RunResult
from migrator.engine.lock import TargetLock
from migrator.engine.observers import JsonLogObserver
from migrator.engine.planio import PlanSource, file_hash, load_plan_file, plan_to_data, validate_for_engine
from migrator.engine.state import SagaState
from migrator.errors import UsageError
from migrator.fsutil import atomic_write_json, atomic_write_text
from migrator.plan.models import Plan
from migrator.ports import LosableLock, RunLock, Target
from migrator.report.observer import ReportObserver
from migrator.runs.events import RunMode, RunPhase, RunStart, RunStatus
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


# ---------------------------------------------------------------------------------------- apply


def _engine_observers(rundir: RunDir, factory: ObserverFactory | None) -> list[Observer]:
    observers: list[Observer] = [JsonLogObserver(rundir)]
    if factory is not None:
        observers.extend(factory(rundir))
    # reports (report.json/.md/.html, junit.xml) at every run end; errors are logged, never raised
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
    validate_for_engine(source)
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
        return engine.execute(RunMode.APPLY)
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
    mode: RunMode,
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
    events = found.typed()
    state = SagaState.replay(events)
    if (
        mode == RunMode.RESUME
        and state.phase == RunPhase.FINISHED
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
        mode == RunMode.ROLLBACK
        and state.phase == RunPhase.FINISHED
        and state.status in (RunStatus.FAILED_ROLLED_BACK, RunStatus.ROLLED_BACK, RunStatus.FAILED_PREFLIGHT)
        and not state.rollback_stack()
    ):
        raise UsageError(f"run {rundir.run_id} is {state.status}; there is nothing to roll back")
    source = _reload_source(rundir, meta, force=force, overrides=dict(overrides or {}))
    spec = str(meta.get("target") or state.target or "fake")
    if target is None:
        target = open_target(spec)
    recorded_identity = next((e.identity for e in events if isinstance(e, RunStart)), None)
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
        RunMode.RESUME,
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
        RunMode.ROLLBACK,
        target=target,
        observers=observers,
        control=control,
        options=options,
        force=force,
        overrides=overrides,
    )
